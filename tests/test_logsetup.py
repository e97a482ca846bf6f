"""Repeated warnings and errors aggregate: the first few of a kind per interval, then one
"N more like this" line, for every logger (the CLI's root handler carries the filter)."""

import io
import logging

import pytest
from twisted.internet.task import Clock

from gateway import logsetup
from gateway.logsetup import RepeatFilter


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def logged(clock):
    """A root handler with the filter, writing to a buffer; the lines it wrote."""
    stream = io.StringIO()
    repeats = logsetup.install("info", stream=stream, clock=clock)
    handler = repeats.handler
    yield repeats, lambda: stream.getvalue().splitlines()
    logging.getLogger().removeHandler(handler)


def test_a_flood_of_one_error_is_a_few_lines_and_a_count(logged, clock):
    repeats, lines = logged
    log = logging.getLogger("payam.store.writer")
    for n in range(6137):
        log.error("store transaction of %d writes failed: %s", n, "database or disk is full")
        clock.advance(15 / 6137)          # the measured flood: 6,137 lines in 15 s
    repeats.flush()
    written = lines()
    assert len(written) <= 3 * logsetup.BURST
    assert sum("more like this in 10 s" in line for line in written) == 1
    summary = next(line for line in written if "more like this" in line)
    assert "ERROR payam.store.writer:" in summary
    assert "store transaction of %d writes failed" in summary   # the template, no values
    # Every record is either written or counted in a summary.
    counted = sum(int(line.split(": ", 1)[1].split()[0]) for line in written
                  if "more like this" in line)
    assert counted + sum("more like this" not in line for line in written) <= 6137
    repeats.flush(everything=True)
    counted = sum(int(line.split(": ", 1)[1].split()[0]) for line in lines()
                  if "more like this" in line)
    assert counted + sum("more like this" not in line for line in lines()) == 6137


def test_the_summary_comes_when_the_interval_ends_even_if_nothing_else_is_logged(
        logged, clock):
    repeats, lines = logged
    log = logging.getLogger("payam.smpp.pool")
    for _ in range(logsetup.BURST + 7):
        log.warning("operator %s: submit answered %s", "mci", "ESME_RSYSERR")
    assert len(lines()) == logsetup.BURST
    clock.advance(9)
    repeats.flush()
    assert len(lines()) == logsetup.BURST          # the interval is not over yet
    clock.advance(1)
    repeats.flush()
    assert lines()[-1].endswith("7 more like this in 10 s: operator %s: submit answered %s")
    assert "WARNING payam.smpp.pool" in lines()[-1]
    # A new interval lets the first few through again.
    log.warning("operator %s: submit answered %s", "mci", "ESME_RSYSERR")
    assert len(lines()) == logsetup.BURST + 2


def test_kinds_are_counted_apart_by_logger_level_and_template(logged, clock):
    repeats, lines = logged
    for _ in range(20):
        logging.getLogger("payam.a").error("disk full")
        logging.getLogger("payam.b").error("disk full")
        logging.getLogger("payam.a").warning("disk full")
        logging.getLogger("payam.a").error("other %s", "x")
    assert len(lines()) == 4 * logsetup.BURST
    clock.advance(10)
    repeats.flush()
    assert sum("15 more like this" in line for line in lines()) == 4


def test_info_and_debug_are_never_held_back(logged, clock):
    _repeats, lines = logged
    for _ in range(50):
        logging.getLogger("payam.service").info("reloaded %d agencies", 3)
    assert len(lines()) == 50


def test_the_table_of_kinds_is_bounded(clock):
    emitted = []
    repeats = RepeatFilter(emitted.append, clock=clock, burst=1, max_kinds=8)
    for n in range(1000):
        record = logging.LogRecord("payam.x", logging.ERROR, __file__, 1, f"distinct {n}",
                                   None, None)
        assert repeats.filter(record)
    assert len(repeats._windows) <= 8
    for _ in range(3):                      # a kind still in the table is held back
        repeats.filter(logging.LogRecord("payam.x", logging.ERROR, __file__, 1,
                                         "distinct 999", None, None))
    repeats.flush(everything=True)
    assert [r.getMessage() for r in emitted][-1] == "3 more like this in 10 s: distinct 999"


def test_twisted_log_events_aggregate_by_their_format(logged, clock):
    from twisted.logger import Logger, STDLibLogObserver, globalLogPublisher
    repeats, lines = logged
    observer = STDLibLogObserver()
    globalLogPublisher.addObserver(observer)
    try:
        twisted_log = Logger(namespace="gateway.test")
        for n in range(30):
            twisted_log.error("connection to {address} lost", address=f"127.0.0.1:{n}")
    finally:
        globalLogPublisher.removeObserver(observer)
    clock.advance(10)
    repeats.flush()
    assert len(lines()) == logsetup.BURST + 1
    assert lines()[-1].endswith("25 more like this in 10 s: connection to {address} lost")


def test_the_cli_logging_setup_installs_the_filter_on_the_root_handler(monkeypatch):
    from twisted.logger import globalLogBeginner
    from gateway import cli
    begun = []
    monkeypatch.setattr(globalLogBeginner, "beginLoggingTo",
                        lambda observers, **kw: begun.append(observers))
    root = logging.getLogger()
    before = list(root.handlers)
    repeats = cli.setup_logging("info")
    try:
        assert repeats.handler in root.handlers
        assert repeats in repeats.handler.filters
        assert len(begun) == 1                  # Twisted's log events reach it too
    finally:
        root.removeHandler(repeats.handler)
        assert root.handlers == before
