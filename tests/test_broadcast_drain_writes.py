"""What a drained broadcast part costs the store's writer (issue 10 item 4): counted
in SQLite VM steps, deterministic where time is not; and that the cheaper path leaves
single messages' answers as they were."""

import sqlite3

from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)
from test_broadcast_store import received
from threaded_clock import T0

from gateway.model import CLAIM_ORDER, LANE_SHARES, NewMessage, PartOutcome
from gateway.store import operations, receipts
from gateway.store.schema import MIGRATIONS


def _steps(db, work):
    steps = [0]

    def step():
        steps[0] += 1

    db.set_progress_handler(step, 1)
    try:
        result = work()
    finally:
        db.set_progress_handler(None, 1)
    return result, steps[0]


def submitted_broadcast(store, clock, db_path, recipients, prefix):
    """A 2-part broadcast to `recipients` numbers, fed, claimed and every part submitted
    with SMSC id prefix+hex: (connection, SMSC ids, parts recorded)."""
    b = received(clock, store, range(989120000001, 989120000001 + recipients))
    ok(clock, store.feed_broadcast(b.id, 2 * recipients, T0))
    db = sqlite3.connect(db_path, isolation_level=None)
    parts = operations.claim(db, 4 * recipients, T0, "mci", CLAIM_ORDER, "o", None,
                             LANE_SHARES, {})
    ids = [f"{prefix}{n:X}" for n in range(len(parts))]
    recorded = operations.record(db, [PartOutcome(p[0], p[1], "submitted", operator="mci",
                                                  smsc_id=i) for p, i in zip(parts, ids)],
                                 T0, owner="o")
    return db, ids, recorded


def test_migration_19_is_there():
    assert 19 in dict(MIGRATIONS)


def test_a_broadcast_part_s_receipt_costs_few_sqlite_steps(store, clock, db_path):  # noqa: F811
    # Each receipt ending a broadcast part ran the email fallback trigger's UPDATE of
    # email_fallbacks when its message ended, though broadcast messages never have a
    # fallback: 388 steps a part before migration 19 (schema.py), 355 after.
    db, ids, recorded = submitted_broadcast(store, clock, db_path, 250, "A")
    assert len(ids) == 500 and recorded == 500
    applied, steps = _steps(db, lambda: receipts.apply_receipts(
        db, [("mci", i, "delivered", None) for i in ids], {"mci": "raw"}, {}, set(), T0))
    assert applied.matched == [True] * 500
    assert db.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall() \
        == [("delivered", 250)]
    assert steps <= 365 * 500, steps / 500


def test_a_single_message_s_email_fallback_still_follows_its_sms(store, clock):  # noqa: F811
    def message(**fields):
        values = dict(id=store.new_message_id(), agency="tax", sender="40401234",
                      recipient="989121234567", text="اظهارنامه", priority=0,
                      reference=None, validity_s=3600, receipt=True, data_coding=8,
                      esm_class=0, parts=[b"x"], created_at=clock.seconds(),
                      fallback="email", fallback_address="reza@example.ir")
        values.update(fields)
        return NewMessage(**values)

    failed, delivered = message(), message()
    ok(clock, store.accept([failed, delivered]))
    ok(clock, store.claim(10, clock.seconds() + 1))
    ok(clock, store.record([PartOutcome(failed.id, 1, "failed", error="ESME_RINVDSTADR"),
                            PartOutcome(delivered.id, 1, "submitted", operator="mci",
                                        smsc_id="b1")]))
    ok(clock, store.apply_receipts([("mci", "B1", "delivered", None)], {"mci": "raw"}))
    assert ok(clock, store.email_fallback(failed.id))["status"] == "pending"
    assert ok(clock, store.email_fallback(delivered.id))["status"] == "not_needed"


def test_outcomes_and_receipts_of_more_parts_than_one_statement_binds_all_apply(
        store, clock, db_path):  # noqa: F811
    # The submit outcomes and receipts go to SQLite as bound VALUES lists of at most
    # 1,024 rows, padded with NULL rows (operations._run_values): 2,200 parts in one
    # write are three statements each, and every part is reached exactly once.
    db, ids, recorded = submitted_broadcast(store, clock, db_path, 1100, "C")
    assert len(ids) == 2200 and recorded == 2200
    applied = receipts.apply_receipts(db, [("mci", i, "delivered", None) for i in ids],
                                      {"mci": "raw"}, {}, set(), T0)
    assert applied.matched == [True] * 2200
    assert db.execute("SELECT state, count(*) FROM parts GROUP BY state").fetchall() == \
        [("delivered", 2200)]
    assert db.execute("SELECT status, count(*), sum(parts_submitted), sum(parts_delivered)"
                      " FROM messages GROUP BY status").fetchall() == \
        [("delivered", 1100, 2200, 2200)]
    assert db.execute("SELECT count(*) FROM pending_receipts").fetchone() == (0,)
