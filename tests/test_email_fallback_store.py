"""The email fallback's durable state (store migration 17): a row per message asked
with "fallback": "email", written with the accept; due when the SMS fails or expires,
not needed when it is delivered; claimed per attempt; gone with its message."""

from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)

from gateway.model import NewMessage, PartOutcome
from gateway.store.schema import MIGRATIONS

TEXT = "شهروند گرامی، اظهارنامه\u200cی مالیاتی شما ثبت نشد."


def message(store, clock, **fields):  # noqa: F811
    values = dict(id=store.new_message_id(), agency="tax", sender="40401234",
                  recipient="989121234567", text=TEXT, priority=0, reference=None,
                  validity_s=3600, receipt=True, data_coding=8, esm_class=0,
                  parts=[b"x"], created_at=clock.seconds(), fallback="email",
                  fallback_address="reza@example.ir")
    values.update(fields)
    return NewMessage(**values)


def test_migration_17_is_there():
    assert 17 in dict(MIGRATIONS)


def test_the_sms_s_end_decides_the_email(store, clock):  # noqa: F811
    failed, delivered, expired = (message(store, clock) for _ in range(3))
    without = message(store, clock, fallback=None)
    ok(clock, store.accept([failed, delivered, expired, without]))
    assert ok(clock, store.email_fallback(without.id)) is None
    assert "channels" not in ok(clock, store.get_message(without.id))
    assert ok(clock, store.get_message(failed.id))["channels"] == \
        {"sms": "queued", "email": "pending"}           # waiting shows as pending
    ok(clock, store.claim(10, clock.seconds() + 1))
    ok(clock, store.record([PartOutcome(failed.id, 1, "failed", error="ESME_RINVDSTADR"),
                            PartOutcome(delivered.id, 1, "submitted", operator="mci",
                                        smsc_id="a1"),
                            PartOutcome(expired.id, 1, "expired", error="validity")]))
    ok(clock, store.apply_receipts([("mci", "a1", "delivered", None)], {"mci": "raw"}))
    status = {m.id: ok(clock, store.email_fallback(m.id))["status"]
              for m in (failed, delivered, expired)}
    assert status == {failed.id: "pending", delivered.id: "not_needed",
                      expired.id: "pending"}
    # Claimed once per attempt: a second claim meanwhile finds nothing.
    now = clock.seconds() + 1
    rows = ok(clock, store.claim_email_fallbacks(now, 10, now + 60))
    assert sorted(r[0] for r in rows) == sorted([failed.id, expired.id])
    assert {r[2:5] for r in rows} == {("reza@example.ir", 1, TEXT)}
    assert ok(clock, store.claim_email_fallbacks(now + 59, 10, now + 120)) == []
    # Only the attempt that holds the row settles it.
    assert ok(clock, store.settle_email_fallback(failed.id, 2, "sent", sent_at=now)) is False
    assert ok(clock, store.settle_email_fallback(failed.id, 1, "sent", sent_at=now)) is True
    assert ok(clock, store.get_message(failed.id))["channels"] == \
        {"sms": "failed", "email": "sent"}
    assert ok(clock, store.claim_email_fallbacks(now + 3600, 10, now + 3660))[0][0] == \
        expired.id                                     # its claim ran out: tried again


def test_a_message_failed_at_accept_never_emails(store, clock):  # noqa: F811
    """An opted-out citizen (or an unknown one) is sent nothing: no SMS, and no email
    either, though the SMS is 'failed' from the start; no address: unavailable."""
    opted_out, plain = message(store, clock, error="opted_out"), message(store, clock)
    nowhere = message(store, clock, fallback_address=None)
    ok(clock, store.accept([opted_out, plain, nowhere]))
    rows = {m.id: ok(clock, store.email_fallback(m.id)) for m in (opted_out, plain, nowhere)}
    assert (rows[opted_out.id]["status"], rows[opted_out.id]["error"]) == \
        ("unavailable", "opted_out")
    assert (rows[nowhere.id]["status"], rows[nowhere.id]["error"]) == \
        ("unavailable", "no_address")
    assert rows[plain.id]["status"] == "waiting"
    assert ok(clock, store.get_message(opted_out.id))["channels"] == \
        {"sms": "failed", "email": "unavailable"}
    assert ok(clock, store.claim_email_fallbacks(clock.seconds() + 86400, 10,
                                                 clock.seconds() + 86500)) == []
    # A purged message takes its fallback row along.
    ok(clock, store.purge(clock.seconds() + 1))
    assert ok(clock, store.email_fallback(opted_out.id)) is None


def test_a_fallback_kept_before_migration_20_still_fires(db_path, clock):  # noqa: F811
    """Migration 20 flags the messages that have a fallback row (the trigger reads the
    flag): one accepted before it, still waiting, is made due by its SMS's failure."""
    import sqlite3

    from gateway.store import Store
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    waiting = message(first, clock)
    plain = message(first, clock, fallback=None)
    ok(clock, first.accept([waiting, plain]))
    clock.wait(first.close())
    conn = sqlite3.connect(db_path)
    with conn:          # as a store before migration 20 left it (column aside)
        conn.execute("UPDATE messages SET email_fallback = NULL")
        conn.execute("DROP TRIGGER email_fallback_flagged")
        conn.execute("DELETE FROM migrations WHERE version = 20")
    conn.close()
    again = Store(db_path, clock, commit_interval=0.0)
    again.open()
    try:
        ok(clock, again.claim(10, clock.seconds() + 1))
        ok(clock, again.record([PartOutcome(m.id, 1, "failed", error="ESME_RINVDSTADR")
                                for m in (waiting, plain)]))
        assert ok(clock, again.email_fallback(waiting.id))["status"] == "pending"
        assert ok(clock, again.email_fallback(plain.id)) is None
        later = message(again, clock)           # accepted after: flagged by the trigger
        ok(clock, again.accept([later]))
        ok(clock, again.claim(10, clock.seconds() + 1))
        ok(clock, again.record([PartOutcome(later.id, 1, "expired", error="validity")]))
        assert ok(clock, again.email_fallback(later.id))["status"] == "pending"
    finally:
        clock.wait(again.close())
