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


def ok(clock, d):
    """What `d` gave, raising what it failed with."""
    result = clock.wait(d)
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result
