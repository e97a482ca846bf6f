"""The cross-process write lock (gateway/store/transaction_lock.py): every store
writer takes it around each transaction, so writers of one file in several processes
take turns in the kernel instead of sleeping in SQLite's busy handler."""

import fcntl
import os

from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)

from gateway.store.transaction_lock import TransactionLock, write_lock_path


def _free(path):
    """Whether another descriptor (another process's, for flock) can take the lock."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)             # drops it if taken
    return True


def test_the_lock_excludes_other_holders_only_while_held(tmp_path):
    lock = TransactionLock(tmp_path / "gateway.db")
    lock.open()
    assert lock.path == str(tmp_path / ".gateway.db.payam-write-lock")
    assert _free(lock.path)
    with lock.held():
        assert not _free(lock.path)
    assert _free(lock.path)
    lock.close()
    with lock.held():            # closed: no lock, SQLite's own alone
        pass


def test_the_store_writer_holds_it_through_each_transaction(store, clock, db_path):
    path = write_lock_path(db_path)
    seen = ok(clock, store._write(lambda conn: (conn.in_transaction, _free(path))))
    assert seen == (True, False)
    assert _free(path)           # let go after the commit


def test_a_failed_transaction_lets_it_go(store, clock, db_path):
    def boom(conn):
        raise RuntimeError("boom")
    result = clock.wait(store._write(boom))
    assert hasattr(result, "trap")
    assert _free(write_lock_path(db_path))
    assert ok(clock, store._write(lambda conn: 1)) == 1
