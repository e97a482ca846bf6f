"""One daemon per store: an exclusive lock on a file beside the database, held for the
daemon's life.

Two daemons on one SQLite file would both claim and send the same queue.  The lock is
`flock` on `<dir>/.<dbname>.payam-lock` (outside the `<db>*` glob, like the marker): the
kernel drops it when the process dies, however it dies, so a crash leaves no stale lock
to clear by hand.  The holder writes its pid into the file, for the refusal to name.
"""

import fcntl
import os
from pathlib import Path

from gateway.store.guard import StoreUnusable

LOCK_SUFFIX = ".payam-lock"


class StoreLocked(StoreUnusable):
    """Another process holds the store's lock (it may be stopping: not lasting)."""


def lock_path(path):
    path = Path(path)
    return str(path.with_name("." + path.name + LOCK_SUFFIX))


class StoreLock:
    def __init__(self, store_path):
        self.store_path = str(store_path)
        self.path = lock_path(store_path)
        self._fd = None

    def acquire(self):
        """Take the lock, or raise StoreLocked naming the holder's pid."""
        if self._fd is not None:
            return
        # The store makes its directory at its first start; the lock comes before it.
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                self.store_path,
                f"is in use by another payam-gateway (pid {holder}; lock {self.path})",
                "stop that daemon first, or give this one another store.path",
                lasting=False) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self):
        """Let go (the file stays: removing it would race with a daemon taking it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
