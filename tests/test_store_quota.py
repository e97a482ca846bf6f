"""The daily quota counted in the store, across stores sharing one file (HTTP worker
processes each have their own Store and writer thread on the same database)."""

import threading

import pytest
from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)

from gateway.model import NewMessage
from gateway.store import Store
from gateway.store.interface import QuotaRefused

DAY_START = 0.0


def message(s, agency="tax", parts=1, at=1000.0):
    return NewMessage(id=s.new_message_id(), agency=agency, sender="40401234",
                      recipient="989121234567", text="x", priority=0, reference=None,
                      validity_s=3600, receipt=False, data_coding=0, esm_class=0,
                      parts=[b"x"] * parts, created_at=at)


def quota(parts, limit=100, agency="tax"):
    return (agency, DAY_START, parts, limit)


def test_accept_within_quota_counts_and_refuses_past_it(store, clock):
    ok(clock, store.accept([message(store, parts=2)], quota=quota(2, limit=5)))
    ok(clock, store.accept([message(store, parts=3)], quota=quota(3, limit=5)))
    with pytest.raises(QuotaRefused) as refused:
        ok(clock, store.accept([message(store)], quota=quota(1, limit=5)))
    assert (refused.value.used, refused.value.quota) == (5, 5)
    assert store.parts_used("tax", DAY_START).result == 5


def test_a_day_starts_from_what_the_store_already_holds(store, clock):
    ok(clock, store.accept([message(store, parts=4)]))          # counted in memory only
    with pytest.raises(QuotaRefused):
        ok(clock, store.accept([message(store, parts=2)], quota=quota(2, limit=5)))
    ok(clock, store.accept([message(store, parts=1)], quota=quota(1, limit=5)))


def test_two_stores_on_one_file_never_overshoot(db_path, clock):
    """Two writers (two processes' stores), 150 single-part accepts between them racing
    against a quota of 100: exactly 100 stored."""
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    second = Store(db_path, clock, commit_interval=0.0, claims=False)
    second.open()
    try:
        outcomes = []
        lock = threading.Lock()

        def done(result):
            with lock:
                outcomes.append(result)

        deferreds = []
        for i in range(150):
            s = (first, second)[i % 2]
            d = s.accept([message(s)], quota=quota(1))
            d.addBoth(done)
            deferreds.append(d)
        for d in deferreds:
            clock.wait(d)
        refused = [o for o in outcomes if hasattr(o, "check") and o.check(QuotaRefused)]
        assert len(outcomes) == 150
        assert len(refused) == 50
        assert first.parts_used("tax", DAY_START).result == 100
    finally:
        clock.wait(second.close())
        clock.wait(first.close())


def test_a_store_that_does_not_claim_leaves_the_claimers_leases(db_path, clock):
    """An HTTP worker's store opening must not put the dispatcher's claimed parts back."""
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    try:
        ok(clock, first.accept([message(first)]))
        assert len(ok(clock, first.claim(10, 2000.0))) == 1
        worker = Store(db_path, clock, commit_interval=0.0, claims=False)
        worker.open()
        clock.wait(worker.close())
        assert first.queue_summary(2000.0).result[0][0] == 1      # still 'sending'
        assert ok(clock, first.claim(10, 2000.0)) == []
    finally:
        clock.wait(first.close())


def test_two_stores_racing_one_idempotency_key_store_one_message(db_path, clock):
    """Two HTTP workers given the same key at once: the store decides, one message."""
    from gateway.store.interface import DuplicateIdempotencyKey
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    second = Store(db_path, clock, commit_interval=0.0, claims=False)
    second.open()
    try:
        outcomes = []
        deferreds = []
        for s in (first, second) * 5:
            d = s.accept([message(s)], idempotency=("tax", "same-key", '{"first": 1}'),
                         quota=quota(1))
            d.addBoth(outcomes.append)
            deferreds.append(d)
        for d in deferreds:
            clock.wait(d)
        duplicates = [o for o in outcomes if hasattr(o, "check")
                      and o.check(DuplicateIdempotencyKey)]
        assert len(duplicates) == 9
        assert first.parts_used("tax", DAY_START).result == 1
    finally:
        clock.wait(second.close())
        clock.wait(first.close())


def test_a_broadcast_counts_whole_in_the_store_quota_and_one_over_it_is_refused(store, clock):
    from gateway.model import NewBroadcast

    def opened(recipients, limit):
        b = NewBroadcast(id=store.new_message_id(), agency="tax", sender="40401234",
                         text="x", priority=0, validity_s=3600, receipt=False,
                         data_coding=0, esm_class=0, parts=[b"x"], created_at=1000.0,
                         recipients=recipients, invalid=0)
        ok(clock, store.add_broadcast_recipients(
            b.id, [[989120000000 + n, "mci"] for n in range(recipients)]))
        return store.open_broadcast(b, quota=quota(recipients, limit=limit))

    ok(clock, opened(60, limit=100))
    with pytest.raises(QuotaRefused):
        ok(clock, opened(50, limit=100))              # 60 + 50 > 100: nothing opened
    assert len(store.open_broadcasts().result) == 1
    ok(clock, store.accept([message(store, parts=40)], quota=quota(40)))
    with pytest.raises(QuotaRefused):
        ok(clock, store.accept([message(store)], quota=quota(1)))
