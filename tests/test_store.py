"""The durable store against real SQLite files.

The writer thread hands results back through reactor.callFromThread; the test reactor
below queues those calls and the test thread runs them while it waits, so each test
drives the real writer thread without a running reactor and without sleeping blindly.
"""

import os
import shutil
from pathlib import Path
import sqlite3
from dataclasses import replace

import pytest
from threaded_clock import T0
from store_fixtures import clock, db_path, ok, store, store_before  # noqa: F401 (fixtures)

from gateway.store import (
    DuplicateIdempotencyKey, NewMessage, PartOutcome, Store, StoreClosed)





def failure(clock, d):
    result = clock.wait(d)
    assert hasattr(result, "trap"), f"expected a failure, got {result!r}"
    return result


def message(store, recipient="989121234567", priority=0, parts=1, agency="tax",
            created_at=T0, validity_s=86400, **overrides):
    fields = dict(id=store.new_message_id(), agency=agency, sender="40401234",
                  recipient=recipient, text="salam", priority=priority,
                  reference="ref-1", validity_s=validity_s, receipt=True,
                  data_coding=8 if parts > 1 else 0, esm_class=0x40 if parts > 1 else 0,
                  parts=[f"part {i}".encode() for i in range(1, parts + 1)],
                  created_at=created_at)
    fields.update(overrides)
    return NewMessage(**fields)


def submitted(m, seq, smsc_id, operator="mci"):
    return PartOutcome(m.id, seq, "submitted", operator=operator, smsc_id=smsc_id)


def counters(db_path, message_id):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT parts_submitted, parts_delivered, parts_failed"
                            " FROM messages WHERE id = ?", (message_id,)).fetchone()


def part_states(db_path, message_id):
    with sqlite3.connect(db_path) as conn:
        return [state for (state,) in conn.execute(
            "SELECT state FROM parts WHERE message_id = ? ORDER BY seq", (message_id,))]


# -- accept and claim ------------------------------------------------------------------

def test_claim_returns_parts_by_priority_then_age(store, clock):
    normal = message(store, priority=0, parts=2, created_at=T0 - 30)
    high = message(store, priority=1, created_at=T0 - 20)
    emergency = message(store, priority=2, created_at=T0 - 10)
    older_normal = message(store, priority=0, created_at=T0 - 40)
    ok(clock, store.accept([normal, high, emergency]))
    ok(clock, store.accept([older_normal]))

    claimed = ok(clock, store.claim(10, T0))

    assert [(p.message_id, p.seq) for p in claimed] == [
        (emergency.id, 1), (high.id, 1), (older_normal.id, 1), (normal.id, 1), (normal.id, 2)]
    first = claimed[-1]
    assert (first.total, first.agency, first.sender, first.recipient) == (
        2, "tax", "40401234", "989121234567")
    assert (first.priority, first.data_coding, first.esm_class) == (0, 8, 0x40)
    assert first.payload == b"part 2" and first.receipt is True and first.attempts == 0
    assert first.expires_at == T0 - 30 + 86400


def test_claim_twice_never_returns_the_same_part(store, clock):
    messages = [message(store) for _ in range(25)]
    ok(clock, store.accept(messages))

    first = ok(clock, store.claim(10, T0))
    second = ok(clock, store.claim(10, T0))
    third = ok(clock, store.claim(10, T0))

    ids = [p.message_id for p in first + second + third]
    assert len(first) == 10 and len(second) == 10 and len(third) == 5
    assert sorted(ids) == sorted(m.id for m in messages)
    assert ok(clock, store.claim(10, T0)) == []
    assert not ok(clock, store.has_queued())


def test_claim_skips_parts_not_yet_due_and_requeue_counts_attempts(store, clock):
    m = message(store)
    ok(clock, store.accept([m]))
    [part] = ok(clock, store.claim(5, T0))
    ok(clock, store.record([PartOutcome(m.id, 1, "requeue", not_before=T0 + 60,
                                        error="ESME_RSYSERR")]))
    assert ok(clock, store.has_queued())

    assert ok(clock, store.claim(5, T0 + 59)) == []
    [again] = ok(clock, store.claim(5, T0 + 60))
    assert again.attempts == part.attempts + 1

    ok(clock, store.record([PartOutcome(m.id, 1, "requeue", not_before=T0,
                                        count_attempt=False)]))
    [third] = ok(clock, store.claim(5, T0 + 60))
    assert third.attempts == again.attempts


def test_accept_is_all_or_nothing_and_one_bad_write_fails_alone(store, clock):
    good = message(store)
    ok(clock, store.accept([good]))
    clash = message(store, id=good.id)           # primary key conflict
    fresh = message(store)
    # Queued together, they share a transaction: the bad one must not sink the other.
    d_bad = store.accept([message(store), clash])
    d_good = store.accept([fresh])

    failure(clock, d_bad).trap(sqlite3.IntegrityError)
    assert ok(clock, d_good) == [fresh.id]
    assert ok(clock, store.get_message(fresh.id))["status"] == "queued"
    assert len(ok(clock, store.claim(10, T0))) == 2   # good and fresh, nothing of d_bad


def test_bad_input_is_refused_with_a_clear_error(store, clock):
    failure(clock, store.accept([])).trap(ValueError)
    failure(clock, store.accept([message(store, priority=5)])).trap(ValueError)
    failure(clock, store.accept([replace(message(store), parts=[])])).trap(ValueError)
    failure(clock, store.accept([replace(message(store), parts=["text"])])).trap(ValueError)
    failure(clock, store.accept([replace(message(store), recipient="")])).trap(ValueError)
    failure(clock, store.accept(["not a message"])).trap(TypeError)
    failure(clock, store.record([PartOutcome("x", 1, "sent")])).trap(ValueError)
    failure(clock, store.claim(-1, T0)).trap(ValueError)
    failure(clock, store.apply_receipt("mci", "", "delivered")).trap(ValueError)
    failure(clock, store.audit("", None, {})).trap(ValueError)
    failure(clock, store.audit("x", None, {"bad": object()})).trap(ValueError)


# -- outcomes and receipts -------------------------------------------------------------

def test_three_part_message_is_submitted_then_delivered_only_when_all_parts_are(
        store, clock, db_path):
    m = message(store, parts=3, priority=1)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))

    ok(clock, store.record([submitted(m, 1, "A1"), submitted(m, 2, "A2")]))
    assert ok(clock, store.get_message(m.id))["status"] == "queued"
    clock.advance(2)
    ok(clock, store.record([submitted(m, 3, "A3")]))
    view = ok(clock, store.get_message(m.id))
    assert view["status"] == "submitted"
    assert view["submitted_at"] == "2023-11-14T22:13:22.000Z"
    assert view["operator"] == "mci"

    assert ok(clock, store.apply_receipt("mci", "A1", "delivered", id_mode="raw")) is True
    assert ok(clock, store.apply_receipt("mci", "A3", "delivered", id_mode="raw")) is True
    assert ok(clock, store.get_message(m.id))["status"] == "submitted"
    clock.advance(3)
    assert ok(clock, store.apply_receipt("mci", "A2", "delivered", id_mode="raw")) is True

    view = ok(clock, store.get_message(m.id))
    assert view == {
        "id": m.id, "from": "40401234", "to": "989121234567", "status": "delivered",
        "parts": 3, "priority": "high", "reference": "ref-1", "operator": "mci",
        "created_at": "2023-11-14T22:13:20.000Z",
        "submitted_at": "2023-11-14T22:13:22.000Z",
        "done_at": "2023-11-14T22:13:25.000Z", "error": None,
        "attempts": 0, "last_error": None, "agency": "tax"}
    assert counters(db_path, m.id) == (3, 3, 0)


def test_receipt_arriving_before_the_submit_outcome_is_applied_later(store, clock):
    m = message(store)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))

    assert ok(clock, store.apply_receipt("mci", "77ab", "delivered", id_mode="raw")) is False
    assert ok(clock, store.get_message(m.id))["status"] == "queued"
    ok(clock, store.record([submitted(m, 1, "77AB")]))

    assert ok(clock, store.get_message(m.id))["status"] == "delivered"


def test_pending_receipt_of_another_operator_is_not_applied(store, clock):
    m = message(store)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))
    assert ok(clock, store.apply_receipt("irancell", "5000", "failed", "UNDELIV",
                                         id_mode="raw")) is False
    ok(clock, store.record([submitted(m, 1, "5000", operator="mci")]))
    assert ok(clock, store.get_message(m.id))["status"] == "submitted"


@pytest.mark.parametrize("base, submit_id, receipt_id", [
    ("dec", "0A1B2C", "662316"),       # submit_sm_resp in hex, receipt in decimal
    ("hex", "660268", "a132c"),        # the reverse, lower case
    ("raw", "000660268", "660268"),    # leading zeros
])
def test_receipt_ids_match_in_the_operators_base(store, clock, base, submit_id, receipt_id):
    m = message(store)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(m, 1, submit_id)]))

    assert ok(clock, store.apply_receipt("mci", receipt_id, "delivered", id_mode=base)) is True
    assert ok(clock, store.get_message(m.id))["status"] == "delivered"


def test_receipt_prefers_the_same_operators_id(store, clock):
    mci, irancell = message(store), message(store)
    ok(clock, store.accept([mci, irancell]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(mci, 1, "123", operator="mci"),
                            submitted(irancell, 1, "123", operator="irancell")]))

    ok(clock, store.apply_receipt("mci", "123", "delivered", id_mode="raw"))

    assert ok(clock, store.get_message(mci.id))["status"] == "delivered"
    assert ok(clock, store.get_message(irancell.id))["status"] == "submitted"


def test_duplicate_receipts_do_not_count_twice(store, clock, db_path):
    m = message(store, parts=2)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(m, 1, "10"), submitted(m, 2, "11")]))

    for _ in range(3):
        assert ok(clock, store.apply_receipt("mci", "10", "delivered", id_mode="raw")) is True
    assert ok(clock, store.apply_receipt("mci", "10", "enroute", id_mode="raw")) is True

    assert ok(clock, store.get_message(m.id))["status"] == "submitted"
    assert counters(db_path, m.id) == (2, 1, 0)
    ok(clock, store.apply_receipt("mci", "11", "delivered", id_mode="raw"))
    assert ok(clock, store.get_message(m.id))["status"] == "delivered"


def test_failed_part_fails_the_message_and_final_states_never_regress(
        store, clock, db_path):
    m = message(store, parts=2)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(m, 1, "21"), submitted(m, 2, "22")]))
    ok(clock, store.apply_receipt("mci", "21", "delivered", id_mode="raw"))

    ok(clock, store.apply_receipt("mci", "22", "failed", "UNDELIV err:001", id_mode="raw"))
    view = ok(clock, store.get_message(m.id))
    assert (view["status"], view["error"]) == ("failed", "UNDELIV err:001")
    assert view["done_at"] is not None

    ok(clock, store.apply_receipt("mci", "22", "delivered", id_mode="raw"))   # too late
    ok(clock, store.apply_receipt("mci", "21", "expired", id_mode="raw"))     # regress one
    assert part_states(db_path, m.id) == ["delivered", "failed"]
    assert ok(clock, store.get_message(m.id))["status"] == "failed"
    assert counters(db_path, m.id) == (2, 1, 1)


def test_submit_failure_and_expiry_outcomes_finish_the_message(store, clock, db_path):
    failed, expired = message(store, parts=2), message(store)
    ok(clock, store.accept([failed, expired]))
    ok(clock, store.claim(10, T0))

    changed = ok(clock, store.record([
        submitted(failed, 1, "31"),
        PartOutcome(failed.id, 2, "failed", operator="mci", error="ESME_RINVDSTADR"),
        PartOutcome(expired.id, 1, "expired", error="validity period passed"),
        PartOutcome(expired.id, 1, "submitted", operator="mci", smsc_id="32"),  # too late
        PartOutcome("no-such-message", 1, "failed", error="x"),
    ]))

    assert changed == 3
    assert ok(clock, store.get_message(failed.id))["status"] == "failed"
    assert ok(clock, store.get_message(failed.id))["error"] == "ESME_RINVDSTADR"
    assert ok(clock, store.get_message(expired.id))["status"] == "expired"
    assert part_states(db_path, expired.id) == ["expired"]
    # A later receipt for the submitted part does not revive the failed message.
    ok(clock, store.apply_receipt("mci", "31", "delivered", id_mode="raw"))
    assert ok(clock, store.get_message(failed.id))["status"] == "failed"


def test_unmatched_receipts_are_kept_three_days(store, clock, db_path):
    assert ok(clock, store.apply_receipt("mci", "999", "delivered", id_mode="raw")) is False
    assert ok(clock, store.apply_receipt("mci", "998", "enroute", id_mode="raw")) is False
    clock.advance(3 * 24 * 3600 + 1)
    removed = ok(clock, store.purge(older_than=clock.seconds() - 3600))
    assert removed["pending_receipts"] == 1
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pending_receipts").fetchone()[0] == 0


# -- durability --------------------------------------------------------------------------

def test_restart_puts_parts_left_sending_back_in_the_queue(db_path, clock):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    m = message(store, parts=2)
    ok(clock, store.accept([m]))
    assert len(ok(clock, store.claim(10, T0))) == 2
    ok(clock, store.record([submitted(m, 1, "41")]))
    ok(clock, store.close())

    reopened = Store(db_path, clock, commit_interval=0.0)
    reopened.open()
    try:
        [part] = ok(clock, reopened.claim(10, T0))
        assert (part.message_id, part.seq) == (m.id, 2)
    finally:
        ok(clock, reopened.close())


def part_rows(db_path, message_id):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT seq, state, attempts, unknowns, error, owner FROM parts"
                            " WHERE message_id = ? ORDER BY seq", (message_id,)).fetchall()


def test_a_part_left_in_flight_by_the_previous_run_counts_as_an_unknown_outcome(
        db_path, clock):
    # It may have reached the SMSC before the crash: the duplicate bound
    # (max_unknown_outcomes) must count it, or every crash adds a copy to the bound.
    store = Store(db_path, clock, commit_interval=0.0, node="n1")
    store.open()
    m = message(store)
    ok(clock, store.accept([m]))
    ok(clock, store.claim(10, T0))
    [(_, state, _, _, _, owner)] = part_rows(db_path, m.id)
    assert (state, owner) == ("sending", store.owner) and owner.startswith("n1:")
    ok(clock, store.close())                  # as a crash leaves it: no outcome recorded

    for run in range(1, 3):
        again = Store(db_path, clock, commit_interval=0.0, node="n1")
        again.open()
        try:
            [part] = ok(clock, again.claim(10, T0))
            assert (part.unknowns, part.attempts) == (run, run)
        finally:
            ok(clock, again.close())
    [(_, _, _, _, error, _)] = part_rows(db_path, m.id)
    assert error.startswith("unknown_outcome")


def test_another_nodes_leases_are_taken_back_only_once_they_expire(db_path, clock):
    first = Store(db_path, clock, commit_interval=0.0, node="n1", lease_s=300)
    first.open()
    m = message(first, parts=2)
    ok(clock, first.accept([m]))
    ok(clock, first.claim(1, T0))
    other = Store(db_path, clock, commit_interval=0.0, node="n2", lease_s=300)
    other.open()                              # n1's leases are not n2's to release
    try:
        [fresh] = ok(clock, other.claim(10, T0 + 1))
        assert (fresh.seq, fresh.unknowns) == (2, 0)
        assert ok(clock, other.claim(10, T0 + 299)) == []
        # Its own part 2, claimed as long ago, stays with it: an owner never takes
        # back its own leases.
        [taken] = ok(clock, other.claim(10, T0 + 400))
        assert (taken.seq, taken.unknowns, taken.attempts) == (1, 1, 1)
        assert [row[5] for row in part_rows(db_path, m.id)] == [other.owner] * 2
    finally:
        ok(clock, other.close())
        ok(clock, first.close())


def test_outcomes_of_parts_taken_back_are_dropped_and_counted(db_path, clock, caplog):
    frozen = Store(db_path, clock, commit_interval=0.0, node="n1")
    frozen.open()
    m = message(frozen, parts=3)
    ok(clock, frozen.accept([m]))
    ok(clock, frozen.claim(3, T0))
    other = Store(db_path, clock, commit_interval=0.0, node="n2")
    other.open()
    try:
        assert len(ok(clock, other.claim(2, T0 + frozen.lease_s + 1))) == 2
        with caplog.at_level("WARNING", logger="payam.store"):
            changed = ok(clock, frozen.record([submitted(m, seq, f"{seq}A") for seq in (1, 2, 3)]))
        # All three were taken back (two claimed again, one queued to be): none is its.
        assert changed == 0
        assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
            "dropped 3 of 3 outcomes: their parts are no longer this process's (their "
            "claim lease was taken back and another process sends them again, or they "
            "had ended)"]
        assert [row[1:4] for row in part_rows(db_path, m.id)] == [
            ("sending", 1, 1), ("sending", 1, 1), ("queued", 1, 1)]
    finally:
        ok(clock, other.close())
        ok(clock, frozen.close())


def test_two_stores_sharing_a_file_never_claim_the_same_part(db_path, clock):
    one = Store(db_path, clock, commit_interval=0.0, node="n1")
    one.open()
    two = Store(db_path, clock, commit_interval=0.0, node="n2")
    two.open()
    try:
        ok(clock, one.accept([message(one) for _ in range(30)]))
        claims = [ok(clock, store.claim(7, T0)) for _ in range(3) for store in (one, two)]
        claims.append(ok(clock, two.claim(30, T0)))
        ids = [p.message_id for batch in claims for p in batch]
        assert len(ids) == 30 == len(set(ids))
    finally:
        ok(clock, two.close())
        ok(clock, one.close())


def test_committed_messages_survive_a_crash(tmp_path, db_path, clock):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    messages = [message(store) for _ in range(50)]
    ok(clock, store.accept(messages[:25]))
    ok(clock, store.accept(messages[25:]))
    ok(clock, store.claim(10, T0))
    # The process dies: the files are left as they are, no close, no checkpoint.
    crashed = tmp_path / "after-crash.db"
    for suffix in ("", "-wal"):
        shutil.copy(str(db_path) + suffix, str(crashed) + suffix)
    try:
        reopened = Store(crashed, clock, commit_interval=0.0)
        reopened.open()
        try:
            assert all(ok(clock, reopened.get_message(m.id))["status"] == "queued"
                       for m in messages)
            assert len(ok(clock, reopened.claim(100, T0))) == 50
        finally:
            ok(clock, reopened.close())
    finally:
        ok(clock, store.close())


def test_writes_after_close_fail(db_path, clock):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    pending = store.accept([message(store)])
    ok(clock, store.close())
    assert ok(clock, pending)              # queued before close: committed
    failure(clock, store.accept([message(store)])).trap(StoreClosed)


@pytest.mark.parametrize("commit_interval", [0.0, 0.002])
def test_many_accepts_issued_together_share_a_few_commits(db_path, clock, commit_interval):
    store = Store(db_path, clock, commit_interval=commit_interval)
    store.open()
    messages = [message(store) for _ in range(1000)]
    before = store.commits
    ds = [store.accept([m]) for m in messages]
    for d in ds:
        ok(clock, d)
    # Typically 2-6 here (the writer starts on the first while the rest are queued);
    # a commit per accept would be 1000.
    assert store.commits - before <= 20
    assert ok(clock, store.parts_used("tax", T0 - 1)) == 1000
    ok(clock, store.close())


# -- idempotency, quotas, housekeeping -----------------------------------------------------

def test_idempotency_key_stores_messages_once_within_a_day(store, clock, db_path):
    first = message(store)
    response = '{"messages": [{"id": "%s"}]}' % first.id
    ok(clock, store.accept([first], idempotency=("tax", "k-1", response)))
    assert ok(clock, store.idempotent_response("tax", "k-1", clock.seconds())) == response
    assert ok(clock, store.idempotent_response("health", "k-1", clock.seconds())) is None

    again = message(store)
    error = failure(clock, store.accept([again], idempotency=("tax", "k-1", "{}")))
    error.trap(DuplicateIdempotencyKey)
    assert error.value.response == response
    assert ok(clock, store.get_message(again.id)) is None

    # Another agency may use the same key.
    ok(clock, store.accept([message(store, agency="health")],
                           idempotency=("health", "k-1", "{}")))
    # After 24 h the key is free again.
    clock.advance(24 * 3600 + 1)
    assert ok(clock, store.idempotent_response("tax", "k-1", clock.seconds())) is None
    later = message(store)
    ok(clock, store.accept([later], idempotency=("tax", "k-1", "{}")))
    assert ok(clock, store.get_message(later.id))["status"] == "queued"


def test_two_accepts_with_one_key_in_the_same_batch(store, clock):
    a, b = message(store), message(store)
    d_a = store.accept([a], idempotency=("tax", "same", "first"))
    d_b = store.accept([b], idempotency=("tax", "same", "second"))
    ok(clock, d_a)
    assert failure(clock, d_b).value.response == "first"
    assert ok(clock, store.get_message(b.id)) is None


def test_parts_used_counts_an_agencys_parts_since_a_time(store, clock):
    ok(clock, store.accept([message(store, parts=3, created_at=T0 - 100),
                            message(store, parts=2, created_at=T0),
                            message(store, parts=1, created_at=T0, agency="health")]))
    assert ok(clock, store.parts_used("tax", T0 - 100)) == 5
    assert ok(clock, store.parts_used("tax", T0 - 50)) == 2
    assert ok(clock, store.parts_used("health", T0 - 100)) == 1
    assert ok(clock, store.parts_used("nobody", 0)) == 0


def test_a_days_quota_count_is_kept_while_it_may_count_then_purged(store, clock, db_path):
    """One row per agency and quota day (store/quota.py): kept two days, then gone, so
    the table does not grow for ever; a count still in use stays exact."""
    from gateway.store.store import QUOTA_DAYS_KEPT_S
    today = clock.seconds() - 100
    ok(clock, store.accept([message(store, parts=2)], quota=("tax", today, 2, 10)))
    clock.advance(QUOTA_DAYS_KEPT_S - 200)
    assert ok(clock, store.purge(older_than=0))["quota_days"] == 0
    refused = failure(clock, store.accept([message(store, parts=9)],
                                          quota=("tax", today, 9, 10)))
    assert refused.value.used == 2
    clock.advance(200)
    assert ok(clock, store.purge(older_than=0))["quota_days"] == 1
    assert _count(db_path, "quota_used") == 0


def test_purge_removes_finished_messages_and_keeps_the_rest(store, clock, db_path):
    done, waiting = message(store), message(store)
    ok(clock, store.accept([done, waiting]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(done, 1, "51"), submitted(waiting, 1, "52")]))
    ok(clock, store.apply_receipt("mci", "51", "delivered", id_mode="raw"))
    clock.advance(10)

    removed = ok(clock, store.purge(older_than=clock.seconds()))

    assert removed["messages"] == 1 and removed["parts"] == 1
    assert ok(clock, store.get_message(done.id)) is None
    assert ok(clock, store.get_message(waiting.id))["status"] == "submitted"
    assert ok(clock, store.apply_receipt("mci", "52", "delivered", id_mode="raw")) is True



def test_purge_finds_ended_messages_of_every_agency_by_when_they_ended(store, clock, db_path):
    # Migration 22: no index of done_at; the purge reads the messages created before
    # the cutoff per agency, and still goes by when each ended.
    agencies = ("health", "police", "tax")
    early = {agency: message(store, agency=agency) for agency in agencies}
    ok(clock, store.accept(list(early.values())))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(m, 1, f"{n}1") for n, m in enumerate(early.values())]))
    ok(clock, store.apply_receipt("mci", "01", "delivered", id_mode="raw"))   # health
    ok(clock, store.apply_receipt("mci", "21", "failed", id_mode="raw"))      # tax
    clock.advance(10)
    cutoff = clock.seconds()
    clock.advance(10)
    ok(clock, store.apply_receipt("mci", "11", "delivered", id_mode="raw"))   # police, later
    late = message(store, agency="health")
    ok(clock, store.accept([late]))

    removed = ok(clock, store.purge(older_than=cutoff))

    assert removed["messages"] == 2 and removed["parts"] == 2
    assert ok(clock, store.get_message(early["health"].id)) is None
    assert ok(clock, store.get_message(early["tax"].id)) is None
    assert ok(clock, store.get_message(early["police"].id))["status"] == "delivered"
    assert ok(clock, store.get_message(late.id))["status"] == "queued"
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name ="
                            " 'messages_done'").fetchone()[0] == 0

def test_inbound_and_audit_rows_are_kept(store, clock, db_path):
    inbound_id = ok(clock, store.store_inbound(
        "mci", {"source_addr": "989121234567", "short_message": b"\x00\x01", "esm_class": 0},
        {0x0501: b"\x01"}))
    audit_id = ok(clock, store.audit("sender_refused", "tax", {"sender": "FAKE"}))
    with sqlite3.connect(db_path) as conn:
        fields, tlvs = conn.execute("SELECT fields, tlvs FROM inbound WHERE id = ?",
                                    (inbound_id,)).fetchone()
        event, detail = conn.execute("SELECT event, detail FROM audit WHERE id = ?",
                                     (audit_id,)).fetchone()
    assert '"short_message": {"hex": "0001"}' in fields
    assert tlvs == '{"1281": "01"}'
    assert (event, detail) == ("sender_refused", '{"sender": "FAKE"}')


def test_message_ids_are_short_url_safe_and_time_ordered(store, clock):
    ids = []
    for _ in range(50):
        ids.append(store.new_message_id())
        clock.advance(0.002)
    assert len(set(ids)) == 50 and ids == sorted(ids)
    assert all(len(i) == 22 and i.isalnum() and i == i.lower() for i in ids)


def test_writable_reports_the_writers_health(store, clock, db_path):
    assert ok(clock, store.writable())
    clock.advance(2)
    assert ok(clock, store.writable())                 # sends a probe write
    ok(clock, store.accept([message(store)]))   # queued behind the probe
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == (
            str(clock.seconds()),)
    ok(clock, store.close())
    assert not ok(clock, store.writable())


def test_get_message_of_unknown_id(store, clock):
    assert ok(clock, store.get_message("nope")) is None


# -- the writer's transactions ---------------------------------------------------------------

from gateway.store.writer import Writer, run_each  # noqa: E402

def _writer_on(tmp_path, clock):
    conn = sqlite3.connect(tmp_path / "writer.db", isolation_level=None,
                           check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return Writer(conn, clock), conn


def test_a_failing_write_in_a_batch_is_undone_alone_and_the_rest_commit_once(
        tmp_path, clock):
    writer, conn = _writer_on(tmp_path, clock)

    def insert(*values):
        def operation(c):
            for value in values:
                c.execute("INSERT INTO t (x) VALUES (?)", (value,))
            return values
        return operation

    batch = [(run_each, insert(1, 2), "a"), (run_each, insert(3, 1), "b"),
             (run_each, insert(4), "c")]  # b clashes late
    results = writer._transact(batch)
    assert [(tag, ok_) for tag, ok_, _ in results] == [("a", True), ("b", False), ("c", True)]
    assert results[0][2] == (1, 2) and results[2][2] == (4,)
    results[1][2].trap(sqlite3.IntegrityError)
    # b's first insert (3) is rolled back with it; a and c are there exactly once.
    assert [x for x, in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 4]
    assert not conn.in_transaction and writer.commits == 1 and writer.last_commit_ok

    lone = writer._transact([(run_each, insert(5, 4), "d")])
    assert lone[0][:2] == ("d", False)
    assert [x for x, in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 4]
    assert not conn.in_transaction and writer.last_commit_ok
    conn.close()


def test_grouped_items_reach_one_call_and_a_failing_item_fails_alone(tmp_path, clock):
    writer, conn = _writer_on(tmp_path, clock)
    calls = []

    def insert_all(c, items):
        calls.append(list(items))
        c.execute("INSERT INTO t (x) VALUES " + ", ".join(["(?)"] * len(items)), items)
        return [f"row {x}" for x in items]

    batch = [(insert_all, 1, "a"), (run_each, lambda c: "plain", "p"), (insert_all, 2, "b")]
    results = writer._transact(batch)
    assert calls == [[1, 2]]                       # one call, at the first item's place
    assert [(tag, ok_, value) for tag, ok_, value in results] == [
        ("a", True, "row 1"), ("b", True, "row 2"), ("p", True, "plain")]

    calls.clear()
    results = writer._transact([(insert_all, 3, "c"), (insert_all, 1, "d"),
                                (insert_all, 4, "e")])
    assert calls == [[3, 1, 4], [3], [1], [4]]     # the group failed: each item alone
    assert [(tag, ok_) for tag, ok_, _ in results] == [("c", True), ("d", False), ("e", True)]
    assert [x for x, in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 3, 4]
    conn.close()


def test_housekeeping_runs_at_start_and_then_on_its_timer(store, clock):
    from gateway.housekeeping import housekeeping_service
    old = message(store)
    ok(clock, store.accept([old]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([PartOutcome(old.id, 1, "failed", error="x")]))
    from gateway.config.schema import Retention
    service = housekeeping_service(store, clock, Retention(messages=100 / 86400),
                                   every_s=60)
    service.startService()
    try:
        # A write queued after the timer's purge returns once that purge is done.
        clock.wait(store.purge(older_than=0))
        assert ok(clock, store.get_message(old.id)) is not None      # ended 0 s ago: kept
        clock.advance(120)                                     # the next run: 120 s > 100 s
        clock.wait(store.purge(older_than=0))
        assert ok(clock, store.get_message(old.id)) is None
    finally:
        service.stopService()


def test_parts_whose_receipt_never_came_expire_and_receiptless_messages_end(
        store, clock, db_path):
    waiting = message(store, parts=2, validity_s=3600)
    receiptless = message(store, receipt=False)
    ok(clock, store.accept([waiting, receiptless]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(waiting, 1, "71"), submitted(waiting, 2, "72"),
                            submitted(receiptless, 1, "73")]))
    ok(clock, store.apply_receipt("mci", "71", "delivered", id_mode="raw"))

    clock.advance(3600 + 500)                 # past validity, within the grace
    assert ok(clock, store.expire_unreceipted(grace_s=1000)) == 0
    clock.advance(600)
    assert ok(clock, store.expire_unreceipted(grace_s=1000)) == 1
    assert part_states(db_path, waiting.id) == ["delivered", "expired"]
    ended = ok(clock, store.get_message(waiting.id))
    assert ended["status"] == "expired" and "receipt" in ended["error"]
    assert ok(clock, store.get_message(receiptless.id))["status"] == "submitted"  # as sent

    removed = ok(clock, store.purge(older_than=clock.seconds() + 1))
    assert removed["messages"] == 2
    assert ok(clock, store.get_message(receiptless.id)) is None
    assert ok(clock, store.get_message(waiting.id)) is None


def test_housekeeping_ends_queued_parts_whose_validity_passed_before_they_were_sent(
        store, clock, db_path):
    """Audit 14: on a route that never binds, queued parts waited forever (housekeeping
    expired only submitted ones)."""
    from gateway.housekeeping import housekeeping_service
    stuck = message(store, parts=2, validity_s=3600)
    half = message(store, parts=2, validity_s=3600)
    in_flight = message(store, validity_s=3600)
    fresh = message(store, validity_s=86400)
    ok(clock, store.accept([stuck, half, fresh]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(half, 1, "81")] + [
        PartOutcome(m.id, seq, "requeue", not_before=T0 + 10**6)
        for m, seq in ((stuck, 1), (stuck, 2), (half, 2), (fresh, 1))]))
    ok(clock, store.accept([in_flight]))
    ok(clock, store.claim(10, T0))                     # 'sending': the dispatcher's
    service = housekeeping_service(store, clock, every_s=60)
    service.startService()
    try:
        clock.wait(store.purge(older_than=0))          # the round at start: all valid
        assert part_states(db_path, stuck.id) == ["queued", "queued"]
        clock.advance(3600 + 30)
        clock.advance(60)                              # a round after validity ended
        clock.wait(store.purge(older_than=0))
    finally:
        service.stopService()
    assert part_states(db_path, stuck.id) == ["expired", "expired"]
    ended = ok(clock, store.get_message(stuck.id))
    assert ended["status"] == "expired" and "before" in ended["error"]
    assert part_states(db_path, half.id) == ["submitted", "expired"]
    assert ok(clock, store.get_message(half.id))["status"] == "expired"
    assert part_states(db_path, in_flight.id) == ["sending"]
    assert part_states(db_path, fresh.id) == ["queued"]


def test_a_database_from_the_first_schema_is_migrated_and_its_parts_still_flow(
        db_path, clock):
    import sqlite_utils
    from gateway.store import schema
    old = sqlite_utils.Database(db_path)
    old.execute("PRAGMA journal_mode=WAL")
    schema._v1_initial(old)
    old["migrations"].insert({"version": 1, "applied_at": T0})
    old.execute("INSERT INTO messages (id, agency, sender, recipient, text, priority,"
                " validity_s, receipt, data_coding, esm_class, parts, created_at)"
                " VALUES ('old1', 'tax', '40401234', '989121234567', 'salam', 0, 86400,"
                " 1, 0, 0, 1, ?)", (T0,))
    old.execute("INSERT INTO parts (message_id, seq, priority, payload, not_before)"
                " VALUES ('old1', 1, 0, x'73616c616d', ?)", (T0,))
    old.conn.commit()
    old.close()

    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    try:
        assert ok(clock, store.queued_routes()) == {None}
        (claimed,) = ok(clock, store.claim(10, T0, route=None))
        assert (claimed.message_id, claimed.payload) == ("old1", b"salam")
        ok(clock, store.record([PartOutcome("old1", 1, "submitted", operator="mci",
                                            smsc_id="0A")]))
        assert ok(clock, store.apply_receipt("mci", "10", "delivered", id_mode="dec")) is True
        assert ok(clock, store.get_message("old1"))["status"] == "delivered"
    finally:
        clock.wait(store.close())
    with sqlite3.connect(db_path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM migrations ORDER BY 1")]
    assert versions == [number for number, _ in schema.MIGRATIONS]


# -- the store file's safety: damage named, deletion noticed, WAL checkpointed -----------

from gateway.store.guard import StoreUnusable, marker_path, problems  # noqa: E402


def test_a_file_that_is_not_a_database_is_refused_naming_it(db_path, clock):
    db_path.write_bytes(b"\x13" * 8192)
    store = Store(db_path, clock)
    with pytest.raises(StoreUnusable) as refused:
        store.open()
    assert refused.value.lasting
    line = str(refused.value)
    assert "\n" not in line and str(db_path) in line
    assert "damaged" in line and "backup" in line
    assert problems(db_path) == [line]


def test_a_database_with_overwritten_pages_is_refused(db_path, clock, tmp_path):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    ok(clock, store.accept([message(store) for _ in range(200)]))
    ok(clock, store.close())
    data = db_path.read_bytes()
    db_path.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))  # pages overwritten
    with pytest.raises(StoreUnusable) as refused:
        Store(db_path, clock).open()
    assert str(db_path) in str(refused.value) and refused.value.lasting


def _overwrite_root_page(db_path, table):
    with sqlite3.connect(db_path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (table,)).fetchone()[0]
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_a_damaged_page_the_start_never_reads_is_found_before_opening(db_path, clock):
    """Audit 13: the audit table's root page overwritten: open() went on, check-config
    said OK."""
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    ok(clock, store.accept([message(store) for _ in range(50)]))
    ok(clock, store.close())
    _overwrite_root_page(db_path, "audit")
    [line] = problems(db_path)
    assert str(db_path) in line and "damaged" in line and "backup" in line
    with pytest.raises(StoreUnusable) as refused:
        Store(db_path, clock).open()
    assert refused.value.lasting and str(refused.value) == line


def _used_store(db_path, clock, count=3):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    ok(clock, store.accept([message(store) for _ in range(count)]))
    ok(clock, store.close())


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_store_that_existed_is_not_silently_replaced(db_path, clock, how):
    _used_store(db_path, clock)
    if how == "deleted":
        db_path.unlink()
    else:
        db_path.write_bytes(b"")
    with pytest.raises(StoreUnusable) as refused:
        Store(db_path, clock).open()
    assert "missing" in str(refused.value) and "--create-store" in str(refused.value)
    assert not db_path.exists() or db_path.stat().st_size == 0      # nothing created
    assert problems(db_path) == [str(refused.value)]

    created = Store(db_path, clock, commit_interval=0.0)
    created.open(create=True)
    try:
        assert not ok(clock, created.has_queued())
    finally:
        ok(clock, created.close())
    again = Store(db_path, clock, commit_interval=0.0)
    again.open()                       # the new store is now the marked one
    ok(clock, again.close())


def test_clearing_the_store_with_its_glob_leaves_the_marker_and_is_refused(db_path, clock):
    """Audit 13: the marker was `<db>.id`, so `rm gateway.db*` (the usual way to clear
    the -wal and -shm files) took it too and the store began anew, silently."""
    _used_store(db_path, clock)
    for path in db_path.parent.glob(db_path.name + "*"):
        path.unlink()
    assert os.path.exists(marker_path(db_path))
    with pytest.raises(StoreUnusable) as refused:
        Store(db_path, clock).open()
    assert "missing" in str(refused.value) and marker_path(db_path) in str(refused.value)
    assert not db_path.exists()
    assert problems(db_path) == [str(refused.value)]


def test_a_marker_under_its_old_name_is_moved_to_the_new_one(db_path, clock):
    _used_store(db_path, clock)
    old = str(db_path) + ".id"
    os.replace(marker_path(db_path), old)               # as an older version left it
    db_path.unlink()
    with pytest.raises(StoreUnusable):                  # the old marker still counts
        Store(db_path, clock).open()
    assert problems(db_path) and old in problems(db_path)[0]

    _used_store(db_path.with_name("x.db"), clock)
    other = db_path.parent / "y.db"
    _used_store(other, clock)
    store_id = open(marker_path(other)).readline().strip()
    os.replace(marker_path(other), str(other) + ".id")
    reopened = Store(other, clock, commit_interval=0.0)
    reopened.open()
    ok(clock, reopened.close())
    assert not os.path.exists(str(other) + ".id")
    assert open(marker_path(other)).readline().strip() == store_id
    assert reopened.store_id == store_id


def test_the_first_start_creates_the_store_and_its_marker(db_path, clock):
    assert problems(db_path) == []
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    ok(clock, store.close())
    store_id = open(marker_path(db_path)).readline().strip()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone() \
            == (store_id,)
    assert problems(db_path) == []


def test_a_store_from_before_markers_gets_one_and_another_store_is_refused(
        db_path, clock, tmp_path):
    _used_store(db_path, clock)
    import os
    os.unlink(marker_path(db_path))                     # as an older version left it
    reopened = Store(db_path, clock, commit_interval=0.0)
    reopened.open()
    ok(clock, reopened.close())
    assert os.path.exists(marker_path(db_path))

    other = tmp_path / "other" / "gateway.db"
    _used_store(other, clock)
    shutil.copy(other, db_path)                         # a different store put in its place
    with pytest.raises(StoreUnusable) as refused:
        Store(db_path, clock).open()
    assert "delete" in str(refused.value) and marker_path(db_path) in str(refused.value)
    assert "delete" in problems(db_path)[0]


def test_check_config_problems_for_a_foreign_database_and_an_unwritable_place(
        tmp_path):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert "not a Payam Gateway store" in problems(foreign)[0]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "not a directory" in problems(blocker / "var" / "gateway.db")[0]


def test_after_a_clean_close_the_db_file_alone_holds_every_write(db_path, clock, tmp_path):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    messages = [message(store) for _ in range(300)]
    for start in range(0, 300, 30):
        ok(clock, store.accept(messages[start:start + 30]))
    # reads, as a daemon's
    assert ok(clock, store.has_queued()) and ok(clock, store.get_message(messages[0].id))
    ok(clock, store.close())
    wal = Path(str(db_path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    alone = tmp_path / "alone.db"
    shutil.copy(db_path, alone)                 # the .db without its -wal
    with sqlite3.connect(alone) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 300


# -- retention: each kind of record purged after its own days ------------------------------

DAY = 86400.0


def _count(db_path, table):
    with sqlite3.connect(db_path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_housekeeping_purges_each_kind_after_its_retention(store, clock, db_path):
    from gateway.config.schema import Retention
    from gateway.housekeeping import housekeeping_service
    ended = message(store)
    ok(clock, store.accept([ended]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([PartOutcome(ended.id, 1, "failed", error="x")]))
    ok(clock, store.audit("sender_refused", "tax", {"sender": "FAKE"}))
    ok(clock, store.store_inbound("mci", {"source_addr": "989121234567"}, {}))
    assert ok(clock, store.apply_receipt("mci", "404", "delivered")) is False
    retention = Retention(messages=2, audit=5, receipts=1, inbound=3, inbox=30)
    service = housekeeping_service(store, clock, retention, every_s=DAY / 2)
    service.startService()
    try:
        clock.wait(store.purge(older_than=0))           # the round at start is done
        kept = {"messages": 1, "audit": 1, "inbound": 1, "pending_receipts": 1}
        for day, gone in ((1.5, "pending_receipts"), (2.5, "messages"),
                          (3.5, "inbound"), (5.5, "audit")):
            clock.advance(day * DAY - (clock.seconds() - T0))
            clock.wait(store.purge(older_than=0))       # queued behind the round's purge
            kept[gone] = 0
            assert {table: _count(db_path, table) for table in kept} == kept, day
    finally:
        service.stopService()


def test_purge_without_audit_or_inbound_cutoffs_keeps_those_rows(store, clock, db_path):
    ok(clock, store.audit("sender_refused", "tax", {"sender": "FAKE"}))
    ok(clock, store.store_inbound("mci", {"source_addr": "989121234567"}, {}))
    clock.advance(1000 * DAY)
    removed = ok(clock, store.purge(older_than=clock.seconds()))
    assert removed.get("audit", 0) == 0 and removed.get("inbound", 0) == 0
    assert _count(db_path, "audit") == 1 and _count(db_path, "inbound") == 1
    removed = ok(clock, store.purge(older_than=clock.seconds(),
                                    audit_before=clock.seconds(),
                                    inbound_before=clock.seconds()))
    assert removed["audit"] == 1 and removed["inbound"] == 1


def test_a_message_retrying_shows_its_attempts_and_last_error(store, clock):
    m = message(store, parts=2)
    ok(clock, store.accept([m]))
    fresh = ok(clock, store.get_message(m.id))
    assert fresh["attempts"] == 0 and fresh["last_error"] is None
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([
        PartOutcome(m.id, 1, "requeue", error="ESME_RSYSERR (0x00000008)",
                    not_before=T0),
        submitted(m, 2, "77")]))
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([PartOutcome(m.id, 1, "requeue", not_before=T0,
                                        error="ESME_RSUBMITFAIL (0x00000045)")]))
    retrying = ok(clock, store.get_message(m.id))
    assert retrying["status"] == "queued" and retrying["attempts"] == 2
    assert retrying["last_error"] == "ESME_RSUBMITFAIL (0x00000045)"
    assert retrying["error"] is None                      # not failed: no final error
    ok(clock, store.claim(10, T0))
    ok(clock, store.record([submitted(m, 1, "78")]))
    ok(clock, store.apply_receipts([("mci", "77", "delivered", None),
                                    ("mci", "78", "delivered", None)],
                                   id_modes={"mci": "raw"}))
    done = ok(clock, store.get_message(m.id))
    assert done["status"] == "delivered" and done["attempts"] == 2
    assert done["last_error"] == "ESME_RSUBMITFAIL (0x00000045)"   # what it went through


def test_a_store_deleted_while_open_is_not_writable_and_close_does_not_recreate_it(
        db_path, clock):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    assert ok(clock, store.writable())
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    clock.advance(2)
    assert not ok(clock, store.writable())          # /healthz answers 503 instead of 200
    clock.advance(0.1)
    assert not ok(clock, store.writable())          # between file checks too
    ok(clock, store.close())
    assert not db_path.exists()          # the next start refuses (its marker remains)
    with pytest.raises(StoreUnusable):
        Store(db_path, clock).open()


# -- the audit table: append-only, purged by retention alone, numbers salted ---------------

def test_audit_rows_cannot_be_changed_or_deleted_but_by_the_retention_purge(
        store, clock, db_path):
    ok(clock, store.audit("sender_refused", "tax", {"sender": "FAKE"}))
    clock.advance(3600)
    ok(clock, store.audit("sender_refused", "tax", {"sender": "FAKE2"}))
    with sqlite3.connect(db_path) as conn:               # any other connection: sqlite3,
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):   # a script
            conn.execute("UPDATE audit SET detail = '{}'")
        with pytest.raises(sqlite3.OperationalError, match="payam_audit_purge"):
            conn.execute("DELETE FROM audit")
    # The store's own writer connection cannot delete either, outside the purge.
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        ok(clock, store._write(lambda conn: conn.execute("DELETE FROM audit")))
    # The purge removes what its cutoff names, and nothing younger.
    removed = ok(clock, store.purge(T0 - 86400, audit_before=clock.seconds() - 60))
    assert removed["audit"] == 1
    with sqlite3.connect(db_path) as conn:
        assert [d for (d,) in conn.execute("SELECT detail FROM audit")] == ['{"sender": "FAKE2"}']


def test_the_number_salt_is_made_once_per_store_and_kept(db_path, clock, tmp_path):
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    hashed = first.number_hash("989121234567")
    clock.wait(first.close())
    again = Store(db_path, clock, commit_interval=0.0)
    again.open()
    other = Store(tmp_path / "other.db", clock, commit_interval=0.0)
    other.open()
    try:
        assert again.number_hash("989121234567") == hashed       # kept in meta
        assert other.number_hash("989121234567") != hashed       # another install
    finally:
        clock.wait(again.close())
        clock.wait(other.close())


def test_reading_a_stopped_store_for_the_audit_cli_makes_no_wal_or_shm_file(db_path, clock):
    # Under systemd the CLI runs as root: a -shm it made would be root's, and the
    # daemon's user could not open its own store while it lasted.
    from gateway.store import audit_trail
    s = Store(db_path, clock, commit_interval=0.0)
    s.open()
    ok(clock, s.audit("sender_refused", "tax", {"sender": "FAKE"}))
    clock.wait(s.close())
    before = sorted(p.name for p in db_path.parent.iterdir())
    conn = audit_trail.open_read_only(db_path)
    try:
        assert len(list(audit_trail.rows(conn, agency="tax"))) == 1
        assert sorted(p.name for p in db_path.parent.iterdir()) == before
    finally:
        conn.close()


def test_migration_23_leaves_no_trigger_testing_states_with_an_in_list(tmp_path):
    # An IN list of three constants in a trigger is an ephemeral index built per row
    # the triggering UPDATE changes (schema._FINAL_IN); migration 23 writes them out.
    from gateway.store import schema
    path = str(tmp_path / "old.db")
    old = store_before(path, 23, T0)
    before = dict(old.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                              " AND sql LIKE '%IN (''delivered'', ''failed'', ''expired'')%'"))
    old.close()
    assert {"part_delivered", "part_ended", "email_fallback_sms_ended"} <= set(before)
    assert schema.migrate(path) == schema.MIGRATIONS[-1][0]
    with sqlite3.connect(path) as conn:
        after = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    assert set(before) <= set(after)
    for name in before:
        assert "IN ('delivered', 'failed', 'expired')" not in after[name], after[name]
        assert "<> 'expired'" in after[name]
