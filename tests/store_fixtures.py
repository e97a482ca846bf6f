"""Fixtures for tests of the SQLite store itself: a store on a fresh file whose writer
thread commits at once, and a clock the test thread can wait on
(`from store_fixtures import clock, db_path, store, ok`)."""

import pytest
from threaded_clock import ThreadedClock

from gateway.store import Store


@pytest.fixture
def clock():
    return ThreadedClock()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "gateway.db"


@pytest.fixture
def store(db_path, clock):
    s = Store(db_path, clock, commit_interval=0.0)
    s.open()
    yield s
    clock.wait(s.close())


def store_before(path, version, applied_at=0.0):
    """A store file at `path` with the migrations before `version` applied, as an older
    release left it (an sqlite_utils Database, to fill before the upgrade)."""
    import sqlite_utils
    from gateway.store import schema
    old = sqlite_utils.Database(path)
    old.execute("PRAGMA journal_mode=WAL")
    for number, step in schema.MIGRATIONS:
        if number < version:
            step(old)
            old["migrations"].insert({"version": number, "applied_at": applied_at})
    return old


def ok(clock, d):
    """What `d` gave, raising what it failed with."""
    result = clock.wait(d)
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def open_store(testcase, prefix="payam-"):
    """A real store on the reactor, in a fresh directory outside the work tree (trial's
    self.mktemp() writes under the current directory), closed and removed after the
    test: (store, path of its database)."""
    import os
    import shutil
    import tempfile

    from twisted.internet import reactor

    directory = tempfile.mkdtemp(prefix=prefix)
    testcase.addCleanup(shutil.rmtree, directory, True)
    db_path = os.path.join(directory, "gateway.db")
    s = Store(db_path, reactor)
    s.open()
    testcase.addCleanup(s.close)
    return s, db_path


class WithAccept:
    """The real store, but `accept(messages, idempotency=None)` is the one given (a store
    that fails, never answers, or answers when the test says)."""

    def __init__(self, real, accept):
        self.real = real
        self.accept = accept

    def __getattr__(self, name):
        return getattr(self.real, name)


def FailingAccepts(real):   # noqa: N802 (reads as the kind of store it makes)
    """A store whose every accept fails (a full disk), otherwise the real one."""
    from twisted.internet import defer
    return WithAccept(real, lambda messages, idempotency=None:
                      defer.fail(RuntimeError("disk full")))
