"""The daemon's logging: one stream handler whose filter aggregates repeated warnings
and errors, so that a fault which repeats cannot bury the log.

A full disk once wrote 6,137 ERROR lines in 15 s.  Per kind of record (logger, level,
message template) the first BURST records of an interval pass; the rest are counted and,
when the interval ends, one line of the same logger and level says "N more like this in
10 s: <template>".  The filter sits on the root handler, so it covers every logger that
propagates (all of ours, and Twisted's through STDLibLogObserver).  An interval's end is
noticed by the next record of its kind or by flush(), which the CLI runs every second on
the reactor.

Each record is one line: JSON (time, level, logger, message and any structured extras,
python-json-logger) when stderr is not a terminal, so journald and log shippers get one
event per line; plain text on a terminal (continuation lines of a traceback indented).
Twisted's own events ("Starting factory", connection lost, the metrics site's access
lines) are mapped to logger `payam.twisted`: its informational chatter at DEBUG, its
warnings and errors at their level.
"""

import logging
import sys
import threading
import time

BURST = 5                   # records of one kind let through per interval
INTERVAL_S = 10.0
MAX_KINDS = 1024            # kinds tracked at once; the oldest window closes early
FLUSH_EVERY_S = 1.0
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("auto", "json", "text")         # auto: json unless the stream is a terminal
TWISTED_LOGGER = "payam.twisted"
_TEMPLATE_MAX = 200
# LogRecord's own attributes: what a record carries beyond them is a structured extra.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class _WallClock:
    @staticmethod
    def seconds():
        return time.time()


class _Window:
    __slots__ = ("started", "passed", "suppressed", "record")

    def __init__(self, started, record):
        self.started = started
        self.passed = 0
        self.suppressed = 0
        self.record = record          # the first of its kind: where the summary points


class RepeatFilter(logging.Filter):
    """Lets the first `burst` records of a kind through per `interval_s`; counts the
    rest and hands `emit` one summary record per interval that held some back.

    Records below `level` always pass.  Safe to call from any thread (the store's
    writer thread logs too); `emit` is called outside the filter's lock."""

    def __init__(self, emit, clock=None, burst=BURST, interval_s=INTERVAL_S,
                 max_kinds=MAX_KINDS, level=logging.WARNING):
        super().__init__()
        self.emit = emit
        self.clock = clock or _WallClock()
        self.burst = burst
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self.level = level
        self.handler = None
        self._windows = {}            # kind -> _Window, in the order windows opened
        self._lock = threading.Lock()

    def filter(self, record):
        if record.levelno < self.level or getattr(record, "repeat_summary", False):
            return True
        kind = (record.name, record.levelno, _template(record))
        now = self.clock.seconds()
        summaries = []
        with self._lock:
            window = self._windows.get(kind)
            if window is not None and now - window.started >= self.interval_s:
                summaries.append(self._close(kind))
                window = None
            if window is None:
                if len(self._windows) >= self.max_kinds:
                    summaries.append(self._close(next(iter(self._windows))))
                window = self._windows[kind] = _Window(now, record)
            if window.passed < self.burst:
                window.passed += 1
                passes = True
            else:
                window.suppressed += 1
                passes = False
        self._emit(summaries)
        return passes

    def flush(self, everything=False):
        """Close the windows whose interval has ended (all of them with `everything`,
        e.g. at exit), emitting their summaries."""
        now = self.clock.seconds()
        with self._lock:
            ended = [kind for kind, window in self._windows.items()
                     if everything or now - window.started >= self.interval_s]
            summaries = [self._close(kind) for kind in ended]
        self._emit(summaries)

    def _close(self, kind):
        """Drop a window; its summary record, or None if it held nothing back."""
        window = self._windows.pop(kind)
        if not window.suppressed:
            return None
        first = window.record
        summary = logging.LogRecord(
            first.name, first.levelno, first.pathname, first.lineno,
            "%d more like this in %g s: %s",
            (window.suppressed, self.interval_s, kind[2]), None, first.funcName)
        summary.repeat_summary = True
        return summary

    def _emit(self, summaries):
        for summary in summaries:
            if summary is not None:
                self.emit(summary)


def _template(record):
    """What makes records 'alike': the message before its arguments are put in."""
    msg = record.msg
    if isinstance(msg, str):
        return msg
    # Twisted's STDLibLogObserver hands over an object wrapping the event.
    event = getattr(msg, "event", None)
    if isinstance(event, dict) and isinstance(event.get("log_format"), str):
        return event["log_format"]
    return str(msg)[:_TEMPLATE_MAX]


class TextLines(logging.Formatter):
    """FORMAT, then the record's structured extras as key=value; a message's further
    lines (a traceback, a list of problems) indented, so each event starts a line."""

    def __init__(self):
        super().__init__(FORMAT)

    def format(self, record):
        text = super().format(record)
        extras = _extras(record)
        if extras:
            head, sep, rest = text.partition("\n")
            text = head + "".join(f" {k}={v}" for k, v in extras.items()) + sep + rest
        return text.replace("\n", "\n    ")


def json_formatter():
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, then
    the structured extras (event, operator, ...) and exc_info when there is one."""
    from pythonjsonlogger.json import JsonFormatter

    class JsonLines(JsonFormatter):
        def process_log_record(self, log_data):
            return {"time": log_data.pop("time", None), **log_data}

    return JsonLines("{levelname}{name}{message}", style="{", timestamp="time",
                     rename_fields={"levelname": "level", "name": "logger"},
                     json_ensure_ascii=False)


def formatter(fmt, stream):
    """The formatter for `fmt` (one of FORMATS) writing to `stream`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "text" if isatty is not None and isatty() else "json"
    return TextLines() if fmt == "text" else json_formatter()


def _extras(record):
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and k != "repeat_summary"}


def install(level="info", stream=None, clock=None, fmt="text"):
    """A stream handler on the root logger with a RepeatFilter; returns the filter
    (its `handler` attribute is the handler).  fmt: one of FORMATS."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, stream))
    repeats = RepeatFilter(handler.handle, clock=clock)
    repeats.handler = handler
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return repeats


def flush_periodically(repeats, reactor, every_s=FLUSH_EVERY_S):
    """Emit summaries on time even when no further record of their kind comes."""
    from twisted.internet.task import LoopingCall
    call = LoopingCall(repeats.flush)
    call.clock = reactor
    call.start(every_s, now=False)
    return call


_TWISTED_LEVELS = {"debug": logging.DEBUG, "info": logging.DEBUG, "warn": logging.WARNING,
                   "error": logging.ERROR, "critical": logging.CRITICAL}


class TwistedEvents:
    """A Twisted log observer handing each event to logger `payam.twisted`: its info
    chatter (factories starting and stopping, connections lost, the metrics site's
    access lines) at DEBUG, its warnings, errors and failures at their level, with the
    event's namespace as the extra `twisted_namespace`."""

    def __init__(self, name=TWISTED_LOGGER):
        self.logger = logging.getLogger(name)

    def __call__(self, event):
        from twisted.logger._stdlib import StringifiableFromEvent
        level = event.get("log_level")
        levelno = _TWISTED_LEVELS.get(getattr(level, "name", None), logging.DEBUG)
        if event.get("isError"):
            levelno = max(levelno, logging.ERROR)
        if not self.logger.isEnabledFor(levelno):
            return
        failure = event.get("log_failure")
        exc_info = None
        if failure is not None:
            exc_info = (failure.type, failure.value, failure.getTracebackObject())
        self.logger.log(levelno, StringifiableFromEvent(event), exc_info=exc_info,
                        extra={"twisted_namespace": event.get("log_namespace")})
