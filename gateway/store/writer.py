"""The writer thread: every write to the store, grouped into few transactions.

Callers (on the reactor thread) hand `submit()` an operation, a function taking the
write connection, and get a Deferred.  The thread takes everything queued since its
last commit, runs it in one transaction, commits once, and only then fires each
Deferred on the reactor thread.  One fsync thus covers thousands of writes (group
commit), and an operation that raises is rolled back alone: the batch is then run again
with a SAVEPOINT around each operation (see _transact).

`submit_grouped(operation, item)` queues one item for an operation that takes a list:
items queued for the same operation before a commit reach it in one call (a plain
`submit` is an item of `run_each`).  Each SQL
statement costs this thread a GIL hand-off while the reactor thread is busy (~100 µs
measured, against ~1 µs idle), so one statement for many rows beats one per row.

The hand-off takes no lock on the reactor's side while the thread is busy: an item is
appended to a deque (atomic under the GIL) and the thread is woken, under the
Condition, only when it said it is going to sleep (`_sleeping`).  With the Condition
held on every submit the reactor waited for the writer thread, which held it while
waiting for a CPU (bench/PROFILE.md); why no item is ever left unseen is told in
submit_grouped and _next_batch.
"""

import collections
import contextlib
import logging
import sqlite3
import threading
import time

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway import metrics
from gateway.store.interface import StoreClosed, TransactionLost

log = logging.getLogger("payam.store.writer")


def run_each(conn, operations):
    """The grouped operation behind a plain submit(): each item is a function of the
    connection, run in order."""
    return [operation(conn) for operation in operations]


class Writer:
    def __init__(self, conn, reactor, commit_interval=0.0):
        """`conn` is an autocommit (isolation_level=None) connection used only by the
        thread.  `commit_interval`: the least time between the starts of two commits.
        An idle writer commits a lone write at once; a busy one gathers what arrives
        while it waits (and while the previous commit's fsync runs)."""
        self._conn = conn
        self._reactor = reactor
        self._commit_interval = commit_interval
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._sleeping = False    # set, under _cond, by the thread just before it waits
        self._stopping = False
        self._done = False        # the thread takes nothing more from the queue
        self._stopped = defer.Deferred()
        self._thread = threading.Thread(target=self._run, name="payam-store-writer",
                                        daemon=True)
        # Read by other threads; written only by the writer thread.
        self.commits = 0          # transactions committed (tests count group commits)
        # Around each transaction: a cross-process lock (store/transaction_lock.py).
        self.serialise = contextlib.nullcontext
        self.last_commit_ok = True
        # after_commit(results) → the results left for the reactor: run on this thread
        # after each transaction, it may answer some itself a reactor hop sooner
        # (procs/writer_server.py: the HTTP workers' accepts).  None: all go there.
        self.after_commit = None

    def start(self):
        self._thread.start()

    def commit_every(self, seconds):
        """The least time between the starts of two commits from the next one on (the
        thread reads it before each commit; a float's assignment is atomic)."""
        self._commit_interval = seconds

    def alive(self):
        return self._thread.is_alive() and not self._stopping

    def submit(self, operation):
        """Queue `operation(conn) -> result`; Deferred fires after its commit."""
        return self.submit_grouped(run_each, operation)

    def submit_grouped(self, operation, item, answer=None):
        """Queue `item` for `operation(conn, items) -> [result per item]`, called once
        per transaction with every item queued for it; Deferred of this item's result.
        `answer`: an object with callback(result) and errback(failure), told on the
        reactor thread instead of a new Deferred (returned; a refusal is told at once):
        the writer socket's ~20 accepts a turn each saved a Deferred, its addCallbacks
        and a dict entry (procs/writer_server.py)."""
        if self._stopping:
            if answer is not None:
                answer.errback(Failure(StoreClosed("the store is closed")))
                return answer
            return defer.fail(StoreClosed("the store is closed"))
        d = defer.Deferred() if answer is None else answer
        self._queue.append((operation, item, d))
        # The thread sets _sleeping under _cond and then looks at the queue once more
        # before it waits: either it sees this item, or we see _sleeping and wake it
        # (the notify waits for its wait() to release _cond).
        if self._sleeping:
            with self._cond:
                # One wake-up is enough: the submits that follow before the thread runs
                # need none (it looks at the queue when it wakes).
                self._sleeping = False
                self._cond.notify()
        if self._done:
            # The thread ended (stopped, or died) between the check above and the
            # append: it set _done before its last look at the queue, so what it did
            # not take is failed here (see _run).
            self._fail_queued(StoreClosed("the store is closed"))
        return d

    def _fail_queued(self, error):
        """Fail every item still queued (each is taken by one popleft: by the thread's
        batch or by this, never both)."""
        failure = Failure(error)
        failed = []
        while True:
            try:
                _, _, d = self._queue.popleft()
            except IndexError:
                break
            failed.append((d, False, failure))
        if failed:
            self._reactor.callFromThread(_fire, failed)

    def stop(self):
        """Commit what is queued, then end the thread; Deferred fires once it has."""
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self._cond.notify()
        return self._stopped

    def join(self, timeout=None):
        self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------

    def _run(self):
        last_start = 0.0
        left = StoreClosed("the store is closed")
        try:
            while True:
                if not self._wait_for_work():
                    break
                wait = last_start + self._commit_interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                batch = self._next_batch()
                last_start = time.monotonic()
                with self.serialise():
                    results = self._transact(batch)
                if self.after_commit is not None:
                    results = self._after_commit(results)
                self._reactor.callFromThread(_fire, results)
        except BaseException:
            # A bug here must not strand callers: fail whatever is still queued.
            log.exception("store writer thread died")
            self.last_commit_ok = False
            self._stopping = True
            left = TransactionLost("the store writer stopped")
        finally:
            try:
                # _done before the last look: a submit that appends after this look
                # sees _done and fails its item itself (submit_grouped).
                self._done = True
                self._fail_queued(left)
            finally:
                try:
                    self._conn.close()
                finally:
                    self._reactor.callFromThread(self._stopped.callback, None)

    def _after_commit(self, results):
        try:
            return self.after_commit(results)
        except Exception:
            # Whatever it answered is answered again from the reactor: a repeated
            # answer is one its reader no longer waits for (remote_writer.py).
            log.exception("the after-commit hook failed: the reactor fires every result")
            return results

    def _wait_for_work(self):
        """Block until something is queued (True) or the writer stops with nothing
        queued (False)."""
        queue = self._queue
        if queue:
            return True
        with self._cond:
            try:
                # Looked at after _sleeping is set: an item appended before a submitter
                # saw _sleeping false is seen here (see submit_grouped).
                self._sleeping = True
                while not queue and not self._stopping:
                    self._cond.wait()
                    self._sleeping = True
            finally:
                self._sleeping = False
        return bool(queue)

    def _next_batch(self):
        """Everything queued now, oldest first.  Items are popped one by one, never by
        swapping the deque: a submitter may hold a reference to it mid-append."""
        queue = self._queue
        popleft = queue.popleft
        return [popleft() for _ in range(len(queue))]

    def _transact(self, batch):
        """Run `batch` in one transaction; [(deferred, ok, result_or_failure)]."""
        conn = self._conn
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = self._run_optimistic(batch)
            if results is None:
                # An operation failed and the transaction was rolled back: run the batch
                # again, each operation in its own SAVEPOINT so the failure is undone
                # alone.  Operations are functions of the connection (no state of their
                # own), so a second run gives what the first would have.
                conn.execute("BEGIN IMMEDIATE")
                results = self._run_isolated(batch)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except Exception as e:
            log.error("store transaction of %d writes failed: %s", len(batch), e)
            self.last_commit_ok = False
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback after a failed transaction failed")
            lost = Failure(TransactionLost(f"store transaction failed: {e}"))
            return [(d, False, lost) for _, _, d in batch]
        self.commits += 1
        self.last_commit_ok = True
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        return results

    def _run_optimistic(self, batch):
        """Run every operation with no SAVEPOINT of its own (two statements fewer per
        write; almost no write fails), all its items in one call.  On the
        first failure, roll the transaction back and return None, or, for a batch of
        one, return that failure (nothing else was in the transaction, which is left
        rolled back)."""
        conn = self._conn
        results = []
        for operation, items, deferreds in _groups(batch):
            try:
                outcome = operation(conn, items)
                if len(outcome) != len(items):
                    raise RuntimeError(f"{operation.__name__} gave {len(outcome)} "
                                       f"results for {len(items)} items")
            except Exception:
                failure = Failure()
                if not conn.in_transaction:
                    # SQLite rolled back the whole transaction (I/O error, disk full):
                    # nothing of this batch survives.
                    raise
                conn.execute("ROLLBACK")
                if len(batch) == 1:
                    return [(batch[0][2], False, failure)]
                return None
            results.extend((d, True, result) for d, result in zip(deferreds, outcome))
        return results

    def _run_isolated(self, batch):
        """Run every item alone in a SAVEPOINT; one that raises is rolled back alone."""
        conn = self._conn
        results = []
        for operation, item, d in batch:
            conn.execute("SAVEPOINT op")
            try:
                result, = operation(conn, [item])
            except Exception:
                failure = Failure()
                if not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((d, False, failure))
            else:
                conn.execute("RELEASE op")
                results.append((d, True, result))
        return results


def _groups(batch):
    """(operation, items, deferreds) per operation, in the order each first appears."""
    groups = {}
    for operation, item, d in batch:
        group = groups.get(operation)
        if group is None:
            group = groups[operation] = (operation, [], [])
        group[1].append(item)
        group[2].append(d)
    return list(groups.values())


def _fire(results):
    """On the reactor thread: hand each write its result."""
    for d, ok, value in results:
        if ok:
            d.callback(value)
        else:
            d.errback(value)
