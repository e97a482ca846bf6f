"""The store writer's hand-off (gateway/store/writer.py): a submit takes no lock while the
writer thread is busy, and still no item is ever left queued without being run or
failed, whether the thread is busy, about to sleep, stopping or dead.

Real writer thread, real SQLite file; results come back through ThreadedClock (the
test thread plays the reactor). Every wait is bounded.
"""

import random
import sqlite3
import threading
import time

import pytest
from threaded_clock import ThreadedClock

from gateway.store.interface import StoreClosed, TransactionLost
from gateway.store.writer import Writer


def insert_all(conn, items):
    conn.execute("INSERT INTO t (x) VALUES " + ", ".join(["(?)"] * len(items)), items)
    return items


@pytest.fixture
def clock():
    return ThreadedClock()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "handoff.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return conn, path


def rows(path):
    with sqlite3.connect(path) as conn:
        return [x for x, in conn.execute("SELECT x FROM t ORDER BY x")]


def outcomes(clock, deferreds):
    return [clock.wait(d) for d in deferreds]


def test_every_item_submitted_in_bursts_runs_once(clock, db):
    """Bursts separated by pauses of every length: the thread is found busy, asleep and
    going to sleep; every Deferred fires with its own value, every row is there once."""
    conn, path = db
    writer = Writer(conn, clock)
    writer.start()
    chance = random.Random(10)
    deferreds = []
    n = 0
    for _ in range(300):
        for _ in range(chance.randint(1, 40)):
            deferreds.append(writer.submit_grouped(insert_all, n))
            n += 1
        # 0 to ~2 ms: the thread's commit and its wait are of that order.
        time.sleep(chance.choice((0, 0, 1e-5, 1e-4, 5e-4, 2e-3)))
    assert outcomes(clock, deferreds) == list(range(n))
    writer.stop()
    writer.join(10)
    assert not writer._thread.is_alive()
    assert rows(path) == list(range(n))


class _HeldCondition:
    """A Condition whose first entry by the writer thread pauses until released: the
    thread has found the queue empty and is on its way to sleep."""

    def __init__(self):
        self._cond = threading.Condition()
        self.arrived = threading.Event()
        self.go = threading.Event()
        self._held_once = False
        self.test_thread = threading.current_thread()

    def __enter__(self):
        if threading.current_thread() is not self.test_thread and not self._held_once:
            self._held_once = True
            self.arrived.set()
            assert self.go.wait(10)
        return self._cond.__enter__()

    def __exit__(self, *exc):
        return self._cond.__exit__(*exc)

    def wait(self, timeout=None):
        return self._cond.wait(timeout)

    def notify(self):
        self._cond.notify()


def test_an_item_queued_while_the_thread_goes_to_sleep_is_still_run(clock, db):
    conn, path = db
    writer = Writer(conn, clock)
    held = writer._cond = _HeldCondition()
    writer.start()
    assert held.arrived.wait(10)            # found nothing queued, not yet asleep
    assert not writer._sleeping
    d = writer.submit_grouped(insert_all, 7)   # sees it awake: no wake-up sent
    held.go.set()
    assert clock.wait(d, timeout=10) == 7      # it looked again before it slept
    writer.stop()
    writer.join(10)
    assert rows(path) == [7]


def test_a_sleeping_thread_is_woken_by_one_submit(clock, db):
    conn, path = db
    writer = Writer(conn, clock)
    writer.start()
    deadline = time.monotonic() + 10
    while not writer._sleeping:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert clock.wait(writer.submit_grouped(insert_all, 1), timeout=10) == 1
    writer.stop()
    writer.join(10)


def test_at_stop_what_was_queued_commits_and_later_submits_fail(clock, db):
    conn, path = db
    writer = Writer(conn, clock, commit_interval=0.01)
    writer.start()
    before = [writer.submit_grouped(insert_all, x) for x in range(500)]
    stopped = writer.stop()
    after = writer.submit_grouped(insert_all, 1000)
    assert outcomes(clock, before) == list(range(500))
    assert clock.wait(after).check(StoreClosed)
    clock.wait(stopped)
    writer.join(10)
    assert rows(path) == list(range(500))


def test_stop_from_another_thread_amid_submits_leaves_no_item_unfired(clock, db):
    """stop() racing submits: each item either commits or fails StoreClosed, what
    committed is exactly what the Deferreds said, and the committed ones come first
    (what was queued before the stop is committed, never failed)."""
    conn, path = db
    writer = Writer(conn, clock)
    writer.start()
    stopper = threading.Timer(0.02, writer.stop)
    stopper.start()
    deferreds = []
    started = time.monotonic()
    x = 0
    while time.monotonic() - started < 0.2:
        deferreds.append(writer.submit_grouped(insert_all, x))
        x += 1
        if x % 50 == 0:
            time.sleep(0.0005)
    stopper.join(10)
    results = outcomes(clock, deferreds)
    committed = [r for r in results if not hasattr(r, "check")]
    refused = [r for r in results if hasattr(r, "check")]
    assert all(r.check(StoreClosed) for r in refused)
    assert refused, "the stop came after every submit: the race was not exercised"
    writer.join(10)
    assert rows(path) == committed
    assert committed == list(range(len(committed)))
    assert all(hasattr(r, "check") for r in results[len(committed):])


def test_a_dying_thread_fails_everything_still_queued(clock, db):
    conn, path = db
    writer = Writer(conn, clock, commit_interval=0.05)
    entered = threading.Event()

    def broken():
        entered.set()
        raise SystemError("a bug in the writer")
    writer._next_batch = broken
    writer.start()
    first = writer.submit_grouped(insert_all, 1)
    assert entered.wait(10)
    writer.join(10)
    late = writer.submit_grouped(insert_all, 2)
    assert clock.wait(first).check(TransactionLost)
    assert clock.wait(late).check(StoreClosed)
    assert not writer.alive()


def test_an_item_appended_after_the_threads_last_look_is_failed_by_its_submit(clock, db):
    """The window between a submit's _stopping check and its append, as the thread
    ends: the thread has set _done and taken its last look, so the submit fails its
    own item rather than leave it queued for nobody."""
    conn, path = db
    writer = Writer(conn, clock)
    writer.start()
    clock.wait(writer.stop())
    writer.join(10)
    writer._stopping = False          # as seen by a submit that checked just before
    d = writer.submit_grouped(insert_all, 3)
    assert clock.wait(d, timeout=10).check(StoreClosed)
    assert not writer._queue
