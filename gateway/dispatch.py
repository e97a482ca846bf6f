"""Moves queued parts from the store to the operators' binds and records what happened.

The store is the queue: parts are claimed in batches (atomically, priority first), routed
to an operator with a bound session, held in that operator's lane until its window and
TPS allow, and their outcomes are written back in batches (one writer op per flush).
"""

import logging
from collections import deque

from twisted.internet.defer import succeed

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.status import classify_status, needs_alert
from gateway.store.store import PartOutcome
from gateway.submit_sm import build_submit_sm

log = logging.getLogger("payam.dispatch")

MAX_ATTEMPTS = 8          # temporary errors, then the part fails
THROTTLE_PAUSE_S = 1.0    # how long an operator rests after ESME_RTHROTTLED / RMSGQFUL
UNROUTABLE_RETRY_S = 2.0  # no bound session for any candidate operator
RECORD_DELAY_S = 0.002    # outcomes are gathered this long into one store write
POLL_S = 0.5              # catches parts whose retry time (not_before) has come


def retry_delay(attempts):
    """Exponential backoff for temporary errors: 2, 4, 8 … capped at 5 minutes."""
    return min(300.0, 2.0 ** max(1, attempts))


class Lane:
    """Parts waiting for one operator, in claim order (retries go to the front)."""

    __slots__ = ("operator", "pool", "settings", "parts", "sent_counter", "result_counters")

    def __init__(self, operator, pool, settings):
        self.operator = operator
        self.pool = pool
        self.settings = settings
        self.parts = deque()
        # Metric children looked up once (per status for results), not per submit.
        self.sent_counter = metrics.child(metrics.SUBMIT_SM_SENT, operator)
        self.result_counters = {}

    def count_result(self, status):
        counter = self.result_counters.get(status)
        if counter is None:
            counter = self.result_counters[status] = metrics.child(
                metrics.SUBMIT_SM_RESULTS, self.operator, c.status_name(status))
        counter.inc()


class Dispatcher:
    def __init__(self, store, pools, settings, router, *, clock,
                 batch=500, buffer_limit=5000):
        """
        pools: {operator name: OperatorPool}; settings: {operator name: SubmitSettings};
        router: gateway.routing.Router (replaced on SIGHUP through set_router).
        """
        self.store = store
        self.router = router
        self.clock = clock
        self.batch = batch
        self.buffer_limit = buffer_limit
        self.lanes = {name: Lane(name, pool, settings[name]) for name, pool in pools.items()}
        for lane in self.lanes.values():
            lane.pool.on_ready = self.wake
        self.buffered = 0           # parts claimed and not yet handed to a bind
        self.in_flight = 0          # submit_sm sent, response pending
        self.running = False
        self._claiming = False
        self._store_maybe_has_work = True
        self._pump_call = None
        self._poll_call = None
        self._outcomes = []
        self._record_call = None
        self._pending_records = []

    # lifecycle -----------------------------------------------------------------
    def start(self):
        self.running = True
        self._store_maybe_has_work = True
        self._poll()

    def stop_claiming(self):
        """Stop taking new work; what is in flight finishes through the pools."""
        self.running = False
        for call in (self._poll_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        self._poll_call = self._pump_call = None

    def release_and_flush(self):
        """Give buffered parts back to the store (nothing lost) and write all outcomes."""
        now = self.clock.seconds()
        for lane in self.lanes.values():
            while lane.parts:
                part = lane.parts.popleft()
                self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                          not_before=now, count_attempt=False))
        self.buffered = 0
        return self._flush_outcomes()

    def set_router(self, router):
        self.router = router

    # scheduling ----------------------------------------------------------------
    def wake(self):
        """New work was stored or a bind has capacity: pump soon, once."""
        self._store_maybe_has_work = True
        if self.running and self._pump_call is None:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _poll(self):
        self._store_maybe_has_work = True
        self._poll_call = self.clock.callLater(POLL_S, self._poll)
        self._pump()

    def _pump(self):
        self._pump_call = None
        if not self.running:
            return
        self._feed_lanes()
        if (not self._claiming and self._store_maybe_has_work
                and self.buffered < self.buffer_limit // 2):
            self._claim()
        metrics.QUEUE_DEPTH.set(self.buffered)

    def _claim(self):
        self._claiming = True
        limit = min(self.batch, self.buffer_limit - self.buffered)
        d = self.store.claim(limit, self.clock.seconds())

        def claimed(parts):
            self._claiming = False
            self._store_maybe_has_work = len(parts) == limit
            self._route(parts)
            if parts:
                self.wake()

        def failed(failure):
            self._claiming = False
            log.error("claim failed: %s", failure.getErrorMessage())

        d.addCallbacks(claimed, failed)

    # routing -------------------------------------------------------------------
    def _is_bound(self, operator):
        lane = self.lanes.get(operator)
        return lane is not None and lane.pool.bound_count() > 0

    def _route(self, parts, front=False):
        now = self.clock.seconds()
        for part in parts:
            if now >= part.expires_at:
                self._outcome(PartOutcome(part.message_id, part.seq, "expired",
                                          error="validity period passed before submission"))
                continue
            operator = self.router.choose(part.recipient, self._is_bound)
            if operator is None:
                self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                          not_before=now + UNROUTABLE_RETRY_S,
                                          count_attempt=False))
                continue
            lane = self.lanes[operator]
            if front:
                lane.parts.appendleft(part)
            else:
                lane.parts.append(part)
            self.buffered += 1

    def _feed_lanes(self):
        for lane in self.lanes.values():
            if not lane.parts:
                continue
            if lane.pool.bound_count() == 0:
                # The session went away: route again (fallback) or give back.
                stranded = list(lane.parts)
                lane.parts.clear()
                self.buffered -= len(stranded)
                self._route(stranded)
                continue
            free = lane.pool.free_slots()
            parts = lane.parts
            sent = 0
            try:
                while sent < free and parts:
                    self._send(lane, parts.popleft())
                    sent += 1
            finally:
                if sent:
                    # One metric update per lane and turn instead of one per submit_sm.
                    lane.sent_counter.inc(sent)

    # submitting ----------------------------------------------------------------
    def _send(self, lane, part):
        self.buffered -= 1
        pdu = build_submit_sm(part, lane.settings, self.clock.seconds())
        self.in_flight += 1
        d = lane.pool.submit(pdu)
        d.addCallbacks(self._answered, self._lost,
                       callbackArgs=(lane, part), errbackArgs=(lane, part))

    def _answered(self, resp, lane, part):
        self.in_flight -= 1
        status = resp.status
        lane.count_result(status)
        kind = "ok" if status == c.ESME_ROK else classify_status(status)
        if kind == "ok":
            smsc_id = resp.fields.get("message_id", "")
            self._outcome(PartOutcome(part.message_id, part.seq, "submitted",
                                      operator=lane.operator, smsc_id=smsc_id))
        elif kind == "throttled":
            lane.pool.slow_down(THROTTLE_PAUSE_S)
            self._back_to_lane(lane, part)
        elif kind in ("temporary", "rebind"):
            self._retry_later(part, lane.operator, status)
        else:  # permanent, bind_error: this message can never go as it is
            if needs_alert(status):
                log.error("operator %s refused a submit_sm with %s: check our configuration",
                          lane.operator, c.status_name(status))
            self._outcome(PartOutcome(part.message_id, part.seq, "failed",
                                      operator=lane.operator, error=c.status_name(status)))
        self.wake()

    def _lost(self, failure, lane, part):
        """Session closed or the response never came: send again (at-least-once)."""
        self.in_flight -= 1
        log.info("operator %s: submit_sm without answer (%s); requeued",
                 lane.operator, failure.type.__name__)
        if self.running:
            self._route([part], front=True)
            self.wake()
        else:
            self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                      not_before=self.clock.seconds(), count_attempt=False))

    def _back_to_lane(self, lane, part):
        if self.running:
            lane.parts.appendleft(part)
            self.buffered += 1
        else:
            self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                      not_before=self.clock.seconds(), count_attempt=False))

    def _retry_later(self, part, operator, status):
        attempts = part.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            self._outcome(PartOutcome(part.message_id, part.seq, "failed", operator=operator,
                                      error=f"{c.status_name(status)} after {attempts} attempts"))
            return
        self._outcome(PartOutcome(part.message_id, part.seq, "requeue", operator=operator,
                                  error=c.status_name(status),
                                  not_before=self.clock.seconds() + retry_delay(attempts)))

    # recording -----------------------------------------------------------------
    def _outcome(self, outcome):
        self._outcomes.append(outcome)
        if self._record_call is None:
            self._record_call = self.clock.callLater(RECORD_DELAY_S, self._flush_outcomes)

    def _flush_outcomes(self):
        if self._record_call is not None and self._record_call.active():
            self._record_call.cancel()
        self._record_call = None
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return succeed(None)
        d = self.store.record(outcomes)
        d.addErrback(self._record_failed, outcomes)
        return d

    def _record_failed(self, failure, outcomes):
        # The parts stay 'sending' in the store and are requeued at the next start.
        log.error("could not record %d outcomes: %s", len(outcomes), failure.getErrorMessage())
