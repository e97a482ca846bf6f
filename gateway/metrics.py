"""Prometheus metrics shared by every layer; names are the operators' dashboard contract."""

import os
import threading
import weakref
from bisect import bisect_left
from functools import lru_cache

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, values

if getattr(values.ValueClass, "_multiprocess", False):
    # A split daemon's process (PROMETHEUS_MULTIPROC_DIR, gateway/procs) is started by
    # exec and never forks after this import, so its pid is read once here: the
    # library's default asks the kernel (getpid) on every inc and observe, to notice a
    # fork (~0.3 µs each, five per accepted request: 6.4 → 5.1 µs, measured).
    _PID = os.getpid()
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _PID)


@lru_cache(maxsize=4096)
def child(metric, *labels):
    """metric.labels(*labels), cached: the hot path counts per message, and
    prometheus_client's labels() validates and locks on every call (~5 µs)."""
    return metric.labels(*labels)


def adder(counter):
    """add(amount) for a Counter child, amount >= 0 by the caller's construction: the
    child's value's own inc, without Counter.inc's checks (~0.15 µs per call on the
    accept path's three counts per request). Its value object lives as long as the
    child (reset() sets it to 0 in place)."""
    value = getattr(counter, "_value", None)
    return counter.inc if value is None else value.inc

class TurnCounts:
    """Adds to counters and histograms made during one reactor turn, written to their
    metrics once, at the turn's end (clock.callLater(0)).

    In the split daemon each add is a locked write into an mmap'd file (~1.0 µs a
    counter add, ~2.0 an observe, against ~0.1 for a dict sum here, measured): the
    accept path made five a request.  Summed per series over a turn, they are written
    once per series per turn.  Bounded: one entry per series touched this turn.
    Reading this process's registry (a scrape in one process, a test) writes what is
    pending first, when it reads on the thread that counts; a scrape from another
    thread sees the values at most one turn old."""

    def __init__(self, clock):
        self._clock = clock
        self._pending = {}             # a value's inc → the amount to add
        self._call = None
        self._thread = threading.get_ident()
        _ALL_TURN_COUNTS.add(self)
        global _FLUSHED_AT_SHUTDOWN
        if not _FLUSHED_AT_SHUTDOWN and hasattr(clock, "addSystemEventTrigger"):
            # The reactor's last turn: written once the stop has answered everything.
            _FLUSHED_AT_SHUTDOWN = True
            clock.addSystemEventTrigger("after", "shutdown", _flush_all)

    def adder(self, counter):
        """add(amount) for a Counter child (amount >= 0), written at the turn's end."""
        value = getattr(counter, "_value", None)
        inc = counter.inc if value is None else value.inc
        pending = self._pending

        def add(amount):
            if not pending and self._call is None:
                self._call = self._clock.callLater(0, self.flush)
            pending[inc] = pending.get(inc, 0) + amount
        return add

    def observer(self, histogram):
        """observe(amount) for a Histogram child, written at the turn's end: the same
        bucket (the first bound >= amount) and sum as Histogram.observe."""
        bounds = getattr(histogram, "_upper_bounds", None)
        if bounds is None:
            return histogram.observe
        buckets = [bucket.inc for bucket in histogram._buckets]
        total = histogram._sum.inc
        pending = self._pending

        def observe(amount):
            if not pending and self._call is None:
                self._call = self._clock.callLater(0, self.flush)
            bucket = buckets[bisect_left(bounds, amount)]
            pending[bucket] = pending.get(bucket, 0) + 1
            pending[total] = pending.get(total, 0) + amount
        return observe

    def flush(self):
        """Write what is pending now (the turn's end, or a read of the registry)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        pending = self._pending
        while pending:
            inc, amount = pending.popitem()
            inc(amount)


_ALL_TURN_COUNTS = weakref.WeakSet()
_FLUSHED_AT_SHUTDOWN = False


def _flush_all():
    for counts in list(_ALL_TURN_COUNTS):
        counts.flush()


class _PendingFirst:
    """Registered before every metric of this module: a read of the registry on the
    thread that counts writes the TurnCounts' pending adds before the metrics are
    collected."""

    def collect(self):
        here = threading.get_ident()
        for counts in list(_ALL_TURN_COUNTS):
            if counts._thread == here:
                counts.flush()
        return ()


REGISTRY.register(_PendingFirst())


HTTP_REQUESTS = Counter(
    "payam_http_requests_total", "Agency API requests answered", ["route", "status"])
MESSAGES_ACCEPTED = Counter(
    "payam_messages_accepted_total", "Messages durably accepted", ["agency"])
PARTS_ACCEPTED = Counter(
    "payam_parts_accepted_total", "SMS parts durably accepted", ["agency"])
SENDER_REFUSALS = Counter(
    "payam_sender_refusals_total", "Submissions refused for their sender", ["reason"])
LINK_REFUSALS = Counter(
    "payam_link_refusals_total", "Submissions refused for a link outside the agency's",
    ["agency"])
PLATFORM_MESSAGES = Counter(
    "payam_platform_messages_total", "Messages the platform itself sent from 4040 (stored)",
    ["kind"])
AUTHENTICITY_CHECKS = Counter(
    "payam_authenticity_checks_total", "Texts citizens sent to 4040 to check, by verdict",
    ["verdict"])
SUBMIT_SM_SENT = Counter(
    "payam_submit_sm_total", "submit_sm PDUs sent", ["operator"])
SUBMIT_SM_RESULTS = Counter(
    "payam_submit_sm_resp_total", "submit_sm outcomes by command_status", ["operator", "status"])
RECEIPTS = Counter(
    "payam_receipts_total", "Delivery receipts received", ["operator", "state", "matched"])
INBOUND = Counter(
    "payam_inbound_pdus_total", "deliver_sm/data_sm received", ["operator", "kind"])
# Split across processes (gateway/procs: prometheus_client's multiprocess mode), a
# gauge is the sum over the live processes: only the dispatcher process sets these, so
# each reads as in one process (no pid label); ignored in one process.
LIVE = "livesum"

BOUND_SESSIONS = Gauge(
    "payam_bound_sessions", "Bound SMPP sessions", ["operator"], multiprocess_mode=LIVE)
QUEUE_DEPTH = Gauge(
    "payam_dispatch_buffer", "Parts claimed from the store and waiting for a bind",
    multiprocess_mode=LIVE)
COMMIT_SECONDS = Histogram(
    "payam_store_commit_seconds", "Group commit duration",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1))
MALFORMED_RESPONSES = Counter(
    "payam_smpp_malformed_responses_total",
    "Responses whose body could not be decoded (status and id salvaged)", ["operator"])
PROBING_BINDS = Gauge(
    "payam_smpp_probing_binds", "Binds sending one submit at a time after a response "
    "timeout, until the SMSC answers again", ["operator"], multiprocess_mode=LIVE)
USSD_STEPS = Counter(
    "payam_ussd_steps_total", "USSD dialog steps, by what each did", ["agency", "outcome"])
USSD_DIALOGS = Counter(
    "payam_ussd_dialogs_total", "USSD dialogs ended, by why", ["agency", "reason"])
USSD_SESSIONS = Gauge("payam_ussd_sessions", "Live USSD dialogs", multiprocess_mode=LIVE)

# -- issue 11 item 8: latency, window use, the store's queue, messages per agency ---------
HTTP_SECONDS = Histogram(
    "payam_http_request_seconds", "Agency API answer time, from dispatch to answer",
    ["route", "status_class"],          # the route's template; 2xx, 4xx, 5xx
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
WINDOW_IN_FLIGHT = Gauge(
    "payam_window_in_flight", "submit_sm and other requests awaiting their response, "
    "all bound sessions of the operator", ["operator"], multiprocess_mode=LIVE)
WINDOW_SIZE = Gauge(
    "payam_window_size", "Window of the operator's bound sessions together", ["operator"],
    multiprocess_mode=LIVE)
QUEUED_PARTS = Gauge(
    "payam_queued_parts", "Parts queued in the store (refreshed every few seconds)",
    ["priority"], multiprocess_mode=LIVE)
OLDEST_QUEUED = Gauge(
    "payam_oldest_queued_seconds", "How long the longest-waiting due queued part has "
    "waited (0 when none)", ["priority"], multiprocess_mode=LIVE)
MESSAGE_STATUSES = Counter(
    "payam_messages_status_total", "Messages reaching a status (submitted, delivered, "
    "failed, expired), per agency (read from the store every few seconds)",
    ["agency", "status"])
OTHER_AGENCY = "other"                  # label of an agency no longer configured
WEBHOOK_PUSHES = Counter(
    "payam_webhook_pushes_total", "Reply webhook POST outcomes (ok, retry, failed)",
    ["agency", "outcome"])
EMAIL_SENT = Counter(
    "payam_email_sent_total", "Email fallback attempts by result (sent, retry, failed)",
    ["result"])
WEBHOOK_PENDING = Gauge(
    "payam_webhook_pending", "Reply webhook pushes waiting for delivery", ["agency"],
    multiprocess_mode=LIVE)

# -- issue 12 item 2: the citizen directory's lookup service -----------------------------
DIRECTORY_LOOKUPS = Counter(
    "payam_directory_lookups_total", "National-ID lookups by how they were answered: "
    "found, unknown (not registered), cached (kept answer), unavailable (503)", ["result"])
DIRECTORY_SECONDS = Histogram(
    "payam_directory_lookup_seconds", "Lookup service requests, from asking to its answer "
    "or failure", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
