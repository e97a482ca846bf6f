"""One write transaction at a time across the processes sharing a store.

With `http.workers` several processes write one WAL store, each through its own writer
thread (writer.py).  SQLite lets one of them hold the write lock; the others, finding it
taken at BEGIN IMMEDIATE, go to its busy handler, which SLEEPS (1, 2, 5, 10 ... 100 ms)
and so loses whole milliseconds per transaction while the holder's commit takes ~1 ms.
Here each writer first takes an exclusive `flock` on `<dir>/.<dbname>.payam-write-lock`
(beside the store's own lock, store/lock.py): a waiting writer sleeps in the kernel and
wakes the moment the holder lets go, and it gets SQLite's lock at once.  The kernel drops
the lock of a process that dies, however it dies.  Uncontended (one process) a pair of
flock calls costs ~2 µs per transaction, not per write.
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".payam-write-lock"


def write_lock_path(store_path):
    path = Path(store_path)
    return str(path.with_name("." + path.name + SUFFIX))


class TransactionLock:
    """`held()` is the writer's hook (Writer.serialise): the lock around one
    transaction, BEGIN IMMEDIATE to COMMIT or ROLLBACK."""

    def __init__(self, store_path):
        self.path = write_lock_path(store_path)
        self._fd = None

    def open(self):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)         # closing drops a lock still held

    @contextmanager
    def held(self):
        fd = self._fd
        if fd is None:           # closed under a last transaction: SQLite's lock alone
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)   # blocks without the GIL
        try:
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:      # closed meanwhile (a close that stopped waiting): dropped
                pass
