"""Log lines: one event per line, JSON off a terminal (time, level, logger, message,
structured extras), text on one; Twisted's chatter as payam.twisted at DEBUG; the
`log:` section of gateway.yaml (issue 11 item 5)."""

import io
import json
import logging

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher

from gateway import logsetup
from gateway.config import check_config, load_gateway_config
from test_config import GATEWAY, make_config


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def installed():
    """install(...) on a buffer; yields (install, lines); removes what it added."""
    added = []

    def install(stream, **kwargs):
        repeats = logsetup.install("debug", stream=stream, clock=Clock(), **kwargs)
        added.append(repeats.handler)
        return repeats

    root = logging.getLogger()
    level = root.level
    yield install
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(level)


def test_off_a_terminal_each_event_is_one_json_object_on_one_line(installed):
    stream = io.StringIO()
    installed(stream, fmt="auto")
    log = logging.getLogger("payam.smpp.pool")
    log.warning("operator %s: reload refused:\nfile.yaml:3: bad\nfile.yaml:9: worse", "mci",
                extra={"event": "reload_refused", "operator": "mci"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed for سلام")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "WARNING" and first["logger"] == "payam.smpp.pool"
    assert first["message"].endswith("file.yaml:9: worse")
    assert first["event"] == "reload_refused" and first["operator"] == "mci"
    assert first["time"].endswith("+00:00")
    assert second["message"] == "handler failed for سلام"      # UTF-8, not \u escapes
    assert "ValueError: boom" in second["exc_info"]
    assert "سلام" in lines[1]


def test_on_a_terminal_it_is_text_with_extras_and_indented_continuations(installed):
    stream = Terminal()
    installed(stream, fmt="auto")
    logging.getLogger("payam.service").info("reload refused:\nfile.yaml:3: bad",
                                            extra={"event": "reload_refused"})
    lines = stream.getvalue().splitlines()
    assert " INFO payam.service: reload refused: event=reload_refused" in lines[0]
    assert lines[1] == "    file.yaml:3: bad"


def test_a_forced_format_wins_over_the_terminal_test(installed):
    stream = Terminal()
    installed(stream, fmt="json")
    logging.getLogger("payam.x").info("hello")
    assert json.loads(stream.getvalue())["message"] == "hello"
    with pytest.raises(ValueError):
        logsetup.formatter("yaml", stream)


def test_repeated_warnings_still_aggregate_as_json(installed):
    stream = io.StringIO()
    repeats = installed(stream, fmt="json")
    log = logging.getLogger("payam.store.writer")
    for n in range(logsetup.BURST + 20):
        log.error("store transaction of %d writes failed", n)
    repeats.flush(everything=True)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == logsetup.BURST + 1
    assert records[-1]["message"] == (
        "20 more like this in 10 s: store transaction of %d writes failed")
    assert records[-1]["level"] == "ERROR" and records[-1]["logger"] == "payam.store.writer"


def test_twisted_chatter_is_debug_under_payam_twisted_and_its_errors_stay_errors(installed):
    stream = io.StringIO()
    repeats = installed(stream, fmt="json")
    publisher = LogPublisher(logsetup.TwistedEvents())
    twisted_log = Logger(namespace="twisted.internet.protocol.Factory", observer=publisher)
    twisted_log.info("Starting factory {factory!r}", factory="<ESMEFactory>")
    try:
        1 / 0
    except ZeroDivisionError:
        twisted_log.failure("Unhandled error in Deferred:")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("payam.twisted", "DEBUG"), ("payam.twisted", "CRITICAL")]
    assert records[0]["message"] == "Starting factory '<ESMEFactory>'"
    assert records[0]["twisted_namespace"] == "twisted.internet.protocol.Factory"
    assert "ZeroDivisionError" in records[1]["exc_info"]

    # At the daemon's default level INFO the chatter is not written at all.
    logging.getLogger().setLevel(logging.INFO)
    twisted_log.info("Stopping factory {factory!r}", factory="<ESMEFactory>")
    assert len(stream.getvalue().splitlines()) == 2
    assert repeats is not None


# -- gateway.yaml log: ----------------------------------------------------------------

def test_the_log_section_is_read(tmp_path):
    gateway = GATEWAY + "log: {format: json, debug_text_agencies: [tax]}\n"
    config = load_gateway_config(make_config(tmp_path, gateway))
    assert config.log.format == "json"
    assert config.log.debug_text_agencies == ("tax",)
    assert load_gateway_config(make_config(tmp_path / "plain")).log.format == "auto"


@pytest.mark.parametrize("section, problem", [
    ("log: {format: yaml}", "log.format: one of auto, json, text, not 'yaml'"),
    ("log: {level: debug}", "level"),
    ("log: {debug_text_agencies: [customs]}",
     "log.debug_text_agencies: no agency 'customs' in the agencies file"),
    ("log: {debug_text_agencies: tax}", "log.debug_text_agencies"),
])
def test_a_wrong_log_section_is_a_file_line_error(tmp_path, section, problem):
    path = make_config(tmp_path, GATEWAY + section + "\n")
    problems = check_config(path)
    line = GATEWAY.count("\n") + 1
    assert any(p.startswith(f"{path}:{line}:") and problem in p for p in problems), problems
