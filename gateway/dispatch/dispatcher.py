"""Moves queued parts from the store to the operators' binds and records what happened.

The store is the queue: parts are claimed in batches (atomically, priority first), routed
to an operator with a bound session, held in that operator's lane until its window and
TPS allow, and their outcomes are written back in batches (one writer op per flush).
Parts carry a route (the operator their recipient's rule prefers, fixed at accept) and
are claimed per route, as much as the lane that will carry them has room for; so a slow
or stuck operator's backlog waits in the store and every other operator keeps being fed.
"""

import logging
from collections import deque

from twisted.internet.defer import gatherResults, succeed
from twisted.python.failure import Failure

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.esme import NotReady
from gateway.smpp.pool import NoSession
from gateway.smpp.ratelog import RateLimitedLog
from gateway.smpp.status import classify_status, needs_alert, status_label
from gateway.model import (
    EMERGENCY, HIGH, LANE_SHARES, NORMAL, PRIORITY_NAMES, UNKNOWN_OUTCOME, PartOutcome)
from gateway.store.interface import RENEW_LEASES_S, StoreClosed
from gateway.dispatch.outgoing_pdu import build_submit_sm

log = logging.getLogger("payam.dispatch")

MAX_ATTEMPTS = 8          # temporary errors, then the part fails
# After ESME_RTHROTTLED / RMSGQFUL the operator rests this long (the SMSC counts per
# second) and its rate is cut (OperatorRate): the part goes back uncounted.
THROTTLE_PAUSE_S = 1.0
UNKNOWN_RETRY_S = (2.0, 300.0)        # backoff after an unknown outcome: first, cap
REBIND_RETRY_S = 1.0      # a part answered "not bound" waits this long in the store
UNROUTABLE_RETRY_S = 2.0  # no bound session for any candidate operator
RECORD_DELAY_S = 0.002    # outcomes are gathered this long into one store write
POLL_S = 0.5              # catches parts whose retry time (not_before) has come
LANE_FULL_RETRY_S = 2.0   # a part claimed for a full lane waits this long in the store
RECORD_RETRY_S = 1.0      # outcomes the store could not write are written again


# High parts a lane sends for each normal one while both wait (model.LANE_SHARES).
_HIGH_PER_NORMAL = LANE_SHARES[HIGH] // LANE_SHARES[NORMAL]


def retry_delay(attempts):
    """Exponential backoff for temporary errors: 2, 4, 8 … capped at 5 minutes."""
    return min(300.0, 2.0 ** max(1, attempts))


def unknown_retry_delay(unknowns, first=UNKNOWN_RETRY_S[0], cap=UNKNOWN_RETRY_S[1]):
    """Backoff after the n-th unknown outcome of a part: first, 2×first, … up to cap."""
    return min(cap, first * 2.0 ** max(0, unknowns - 1))


class Lane:
    """Parts waiting for one operator: emergency first (strict), then high and normal
    by LANE_SHARES (3 high to 1 normal while both wait, so normal is never starved),
    each in claim order (retries go to the front of their priority)."""

    __slots__ = ("operator", "pool", "settings", "limit", "size", "queues", "sent_counter",
                 "high_run", "results")

    def __init__(self, operator, pool, settings, limit):
        self.operator = operator
        self.pool = pool
        self.settings = settings
        self.limit = limit          # claimed parts it holds at most (retries may exceed)
        self.size = 0
        self.queues = [deque() for _ in PRIORITY_NAMES]      # index: priority
        self.sent_counter = metrics.child(metrics.SUBMIT_SM_SENT, operator)
        self.high_run = 0           # high parts sent in a row while normal ones waited
        self.results = {}           # command_status -> answers not in the metric yet

    def add(self, part, front=False):
        if front:
            self.queues[part.priority].appendleft(part)
        else:
            self.queues[part.priority].append(part)
        self.size += 1

    def add_claimed(self, part):
        """Queue a newly claimed part within the limit; the part that must wait in the
        store instead (the newest of the lowest priority below this one's, else this
        one), or None."""
        if self.size < self.limit:
            self.add(part)
            return None
        for queue in self.queues[:part.priority]:
            if queue:
                bumped = queue.pop()
                self.size -= 1
                self.add(part)
                return bumped
        return part

    def pop(self):
        queues = self.queues
        queue = queues[EMERGENCY]
        if not queue:
            queue = queues[HIGH]
            normal = queues[NORMAL]
            if not queue:
                queue = normal
            elif normal:
                if self.high_run >= _HIGH_PER_NORMAL:
                    self.high_run = 0
                    queue = normal
                else:
                    self.high_run += 1
            if not queue:
                raise IndexError("pop from an empty lane")
        self.size -= 1
        return queue.popleft()

    def take_all(self):
        parts = [part for queue in reversed(self.queues) for part in queue]
        for queue in self.queues:
            queue.clear()
        self.size = 0
        return parts

    def count_results(self):
        """Add the answers tallied since the last call to the metric, per status: once
        per pump and per outcome write, not per submit_sm_resp (hot path)."""
        results, self.results = self.results, {}
        for status, n in results.items():
            # metrics.child caches the labelled counter; the labels are bounded.
            metrics.child(metrics.SUBMIT_SM_RESULTS, self.operator,
                          status_label(status)).inc(n)


class Dispatcher:
    def __init__(self, store, pools, settings, router, *, clock,
                 batch=500, buffer_limit=5000, unknown_retry_s=UNKNOWN_RETRY_S):
        """
        pools: {operator name: OperatorPool}; settings: {operator name: OperatorConfig};
        router: gateway.dispatch.routing.OperatorRouter (replaced on SIGHUP through set_router);
        unknown_retry_s: (first, cap) of the backoff after an unknown outcome.
        """
        self.store = store
        self.unknown_retry_s = unknown_retry_s
        self.rlog = RateLimitedLog(log, clock)
        self.router = router
        self.clock = clock
        self.batch = batch
        self.buffer_limit = buffer_limit
        # Every lane full still leaves half the buffer free, so claiming goes on.
        lane_limit = max(1, buffer_limit // (2 * max(1, len(pools))))
        self.lanes = {name: Lane(name, pool, settings[name], lane_limit)
                      for name, pool in pools.items()}
        for lane in self.lanes.values():
            lane.pool.on_ready = self.kick
        self.buffered = 0           # parts claimed and not yet handed to a bind
        self.running = False
        self._claiming = False
        self._routes = set(self.lanes)   # routes claimed from; stored ones join at start
        self._routes_known = False       # whether the stored routes have been asked for
        self._has_work = set()      # routes whose queued parts may be due now
        self._pump_call = None
        self._poll_call = None
        self._outcomes = []
        self._record_call = None
        self._renew_at = clock.seconds() + RENEW_LEASES_S    # leases of parts held

    # lifecycle -----------------------------------------------------------------
    def start(self):
        self.running = True
        self._adopt_stored_routes()
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
            for part in lane.take_all():
                self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                          not_before=now, count_attempt=False))
        self.buffered = 0
        return self._flush_outcomes()

    def set_router(self, router):
        self.router = router
        if self.running:
            self._adopt_stored_routes()

    def route_of(self, msisdn):
        """The route stored with a new part to `msisdn`."""
        return self.router.preferred(msisdn)

    def _adopt_stored_routes(self):
        """Claim from every route queued parts carry, also those the configuration no
        longer names (and None, from before routes were stored): none is stranded.
        The store answers when it can (at once for SQLite); meanwhile the lanes' routes
        are claimed from, and the poll takes up the stored ones once they are known."""
        before = set(self._routes)
        self._routes_known = True

        def adopt(stored):
            # Routes woken while the store was answering stay.
            self._routes = set(self.lanes) | stored | (self._routes - before)
            self._has_work.update(self._routes)

        def failed(failure):
            self._routes_known = False          # the poll asks again
            self.rlog.error(("store", "routes"), "reading the stored routes failed: %s",
                            failure.getErrorMessage())

        self.store.queued_routes().addCallbacks(adopt, failed)

    # scheduling ----------------------------------------------------------------
    def wake(self, routes=None):
        """New work was stored (for `routes`, or any): claim soon."""
        if routes is None:
            routes = self._routes
        self._routes.update(routes)
        self._has_work.update(routes)
        self.kick()

    def kick(self):
        """Capacity may have opened: pump soon, once."""
        if self.running and self._pump_call is None:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _poll(self):
        # Parts whose retry time (not_before) has come are due again on every route.
        if not self._routes_known:
            self._adopt_stored_routes()
        self._has_work.update(self._routes)
        self._poll_call = self.clock.callLater(POLL_S, self._poll)
        self._renew_leases()
        self._pump()

    def _renew_leases(self):
        """Parts held here (in lanes, in flight) stay ours, however long an operator
        keeps them waiting: another process sharing the store takes back only the
        parts of one that stopped."""
        now = self.clock.seconds()
        if now < self._renew_at:
            return
        self._renew_at = now + RENEW_LEASES_S
        self.store.renew_leases(now).addErrback(
            lambda failure: self.rlog.error(("store", "leases"), "renewing the leases of "
                                            "parts in flight failed: %s",
                                            failure.getErrorMessage()))

    def _pump(self):
        self._pump_call = None
        self._count_results()
        if not self.running:
            return
        self._feed_lanes()
        if not self._claiming and self.buffered < self.buffer_limit // 2:
            limits = self._claim_limits()
            if limits:
                self._claim(limits)
        metrics.QUEUE_DEPTH.set(self.buffered)

    def _count_results(self):
        for lane in self.lanes.values():
            if lane.results:
                lane.count_results()

    def _claim_limits(self):
        """{route: parts to claim}: for each route with work, what the lane that would
        carry it (its operator, else the first bound fallback) has room for now.  A
        route no lane can take now is not claimed: its parts wait in the store.

        Routes that share a lane (a fallback in use, routes the configuration no longer
        names) may together claim more than it holds; the surplus goes back to the store
        (Lane.add_claimed).  Lanes hold at most half the buffer (see __init__)."""
        room = {name: lane.limit - lane.size for name, lane in self.lanes.items()
                if lane.pool.bound_count()}
        limits = {}
        for route in self._has_work:
            carriers = self.router.carriers(route) if route in self.lanes else ()
            if not carriers:
                # Each part of an orphan route is routed on its own, wherever it goes.
                carriers = tuple(room)
            target = next((name for name in carriers if room.get(name, 0) > 0), None)
            if target is not None:
                limits[route] = min(room[target], self.batch)
        return limits

    def _claim(self, limits):
        self._claiming = True
        now = self.clock.seconds()
        routes = list(limits)
        d = gatherResults([self.store.claim(limits[route], now, route) for route in routes],
                          consumeErrors=True)

        def claimed(batches):
            self._claiming = False
            for route, parts in zip(routes, batches):
                if len(parts) < limits[route]:
                    self._has_work.discard(route)   # nothing more is due there now
                self._route(parts)
            if any(batches):
                self.kick()

        def failed(failure):
            self._claiming = False
            log.error("claim failed: %s", failure.getErrorMessage())

        d.addCallbacks(claimed, failed)

    # routing -------------------------------------------------------------------
    def _route(self, parts, front=False):
        now = self.clock.seconds()
        # Which lanes are bound, asked once per batch, not per part and candidate
        # (bound_count() runs a generator: ~0.7 µs a part); nothing here binds or unbinds.
        is_bound = {name: lane.pool.bound_count() > 0
                    for name, lane in self.lanes.items()}.get
        for part in parts:
            if now >= part.expires_at:
                self._expired(part)
                continue
            operator = self.router.choose(part.recipient, is_bound)
            if operator is None:
                self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                          not_before=now + UNROUTABLE_RETRY_S,
                                          count_attempt=False))
                continue
            lane = self.lanes[operator]
            if front:
                lane.add(part, front=True)
                self.buffered += 1
                continue
            waits = lane.add_claimed(part)
            if waits is None:
                self.buffered += 1
            else:       # this part or a lower one: the lane's size is unchanged
                self._outcome(PartOutcome(waits.message_id, waits.seq, "requeue",
                                          not_before=now + LANE_FULL_RETRY_S,
                                          count_attempt=False))

    def _feed_lanes(self):
        now = self.clock.seconds()
        for lane in self.lanes.values():
            if not lane.size:
                continue
            if lane.pool.bound_count() == 0:
                # The session went away: route again (fallback) or give back.
                stranded = lane.take_all()
                self.buffered -= len(stranded)
                self._route(stranded)
                continue
            free = lane.pool.free_slots()
            if not free:
                continue
            sent = 0
            # The burst leaves each session in one write (ESMEProtocol.cork).
            corked = lane.pool.cork()
            try:
                while sent < free and lane.size:
                    part = lane.pop()
                    if now >= part.expires_at:      # held here past its validity
                        self.buffered -= 1
                        self._expired(part)
                        continue
                    if part.unknowns >= lane.settings.max_unknown_outcomes:
                        # Released by the store after a crash (an unknown outcome):
                        # one more copy would pass the duplicate bound.
                        self.buffered -= 1
                        self.rlog.warning((lane.operator, "unknown-failed"),
                                          "operator %s: part %s/%d failed after %d sends "
                                          "without an answer (restarts included)",
                                          lane.operator, part.message_id, part.seq,
                                          part.unknowns)
                        self._outcome(PartOutcome(part.message_id, part.seq, "failed",
                                                  operator=lane.operator,
                                                  error=UNKNOWN_OUTCOME))
                        continue
                    self._send(lane, part)
                    sent += 1
            finally:
                lane.pool.uncork(corked)
                if sent:
                    # One metric update per lane and turn instead of one per submit_sm.
                    lane.sent_counter.inc(sent)

    def _expired(self, part):
        self._outcome(PartOutcome(part.message_id, part.seq, "expired",
                                  error="validity period passed before submission"))

    # submitting ----------------------------------------------------------------
    def _send(self, lane, part):
        self.buffered -= 1
        pdu = build_submit_sm(part, lane.settings, self.clock.seconds())
        answer = _Answer(self, lane, part)
        d = lane.pool.submit(pdu, answer=answer)
        if d is not answer:                 # refused before it was sent
            d.addCallbacks(self._answered, self._lost,
                           callbackArgs=(lane, part), errbackArgs=(lane, part))

    def _answered(self, resp, lane, part):
        status = resp.status
        results = lane.results
        results[status] = results.get(status, 0) + 1
        kind = "ok" if status == c.ESME_ROK else classify_status(status)
        if kind == "ok":
            smsc_id = resp.fields.get("message_id", "")
            self._outcome(PartOutcome(part.message_id, part.seq, "submitted",
                                      operator=lane.operator, smsc_id=smsc_id))
        elif kind == "throttled":
            lane.pool.throttled()
            lane.pool.slow_down(THROTTLE_PAUSE_S)
            self._back_to_lane(lane, part)
        elif kind == "rebind":
            # The session closes itself on this answer (see esme.py); the part is fine
            # and waits in the store a while (binds back off), uncounted.
            self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                      not_before=self.clock.seconds() + REBIND_RETRY_S,
                                      count_attempt=False))
        elif kind == "temporary":
            self._retry_later(part, lane.operator, status)
        else:  # permanent, bind_error: this message can never go as it is
            if needs_alert(status):
                self.rlog.error((lane.operator, "alert", status_label(status)),
                                "ALERT operator %s refused a submit_sm with %s: check our "
                                "configuration", lane.operator, c.status_name(status))
            self._outcome(PartOutcome(part.message_id, part.seq, "failed",
                                      operator=lane.operator, error=c.status_name(status)))
        self.kick()

    def _lost(self, failure, lane, part):
        """No answer to read: never sent (no capacity), unsendable, or unknown."""
        if failure.check(NoSession, NotReady):
            self._resend(part)              # it never left: send it again, uncounted
        elif failure.check(ValueError):
            # The codec refused the PDU: sending it again would fail the same way.
            log.error("operator %s: submit_sm for part %s/%d not encodable: %s",
                      lane.operator, part.message_id, part.seq, failure.getErrorMessage())
            self._outcome(PartOutcome(part.message_id, part.seq, "failed",
                                      operator=lane.operator,
                                      error=f"not encodable: {failure.getErrorMessage()}"))
        else:       # SessionClosed, ResponseTimeout: the SMSC may or may not have it
            self._unknown_outcome(lane, part, failure.type.__name__)

    def _unknown_outcome(self, lane, part, why):
        """Each send whose outcome is unknown may have reached the citizen: count it,
        back off, and after max_unknown_outcomes of them fail the part (issue 6, item 4).
        A part thus goes out at most max_unknown_outcomes times without an answer."""
        unknowns = part.unknowns + 1
        limit = lane.settings.max_unknown_outcomes
        if unknowns >= limit:
            self.rlog.warning((lane.operator, "unknown-failed"),
                              "operator %s: part %s/%d failed after %d sends without an "
                              "answer (last: %s)", lane.operator, part.message_id, part.seq,
                              unknowns, why)
            self._outcome(PartOutcome(part.message_id, part.seq, "failed",
                                      operator=lane.operator, error=UNKNOWN_OUTCOME))
            return
        delay = unknown_retry_delay(unknowns, *self.unknown_retry_s)
        self.rlog.warning((lane.operator, "unknown"),
                          "operator %s: submit_sm without answer (%s); part %s/%d sent "
                          "again in %gs (%d of %d)", lane.operator, why, part.message_id,
                          part.seq, delay, unknowns, limit)
        self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                  operator=lane.operator, error=f"{UNKNOWN_OUTCOME}: {why}",
                                  not_before=self.clock.seconds() + delay, unknown=True))

    def _resend(self, part):
        """Send again soon, through whichever session can take it (no attempt counted):
        only for parts that never reached an SMSC."""
        if self.running:
            self._route([part], front=True)
            self.kick()
        else:
            self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                      not_before=self.clock.seconds(), count_attempt=False))

    def _back_to_lane(self, lane, part):
        if self.running:
            lane.add(part, front=True)
            self.buffered += 1
        else:
            self._outcome(PartOutcome(part.message_id, part.seq, "requeue",
                                      not_before=self.clock.seconds(), count_attempt=False))

    def _retry_later(self, part, operator, status):
        attempts = part.attempts + 1
        # An SMSC answering errors to everything must show in the log, once per interval.
        self.rlog.warning((operator, "temporary", status_label(status)),
                          "operator %s answered submit_sm with %s (temporary): part %s/%d %s",
                          operator, c.status_name(status), part.message_id, part.seq,
                          f"failed after {attempts} attempts" if attempts >= MAX_ATTEMPTS
                          else f"retried in {retry_delay(attempts):g}s")
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
        self._count_results()
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return succeed(None)
        d = self.store.record(outcomes)
        d.addErrback(self._record_failed, outcomes)
        return d

    def _record_failed(self, failure, outcomes):
        log.error("could not record %d outcomes: %s", len(outcomes), failure.getErrorMessage())
        if failure.check(StoreClosed):
            return      # shutting down: the parts stay 'sending', requeued at the next start
        # An outcome changes a part only from the states it expects, so writing it again
        # is safe; until then its part stays 'sending' and is not claimed twice.
        self._outcomes[:0] = outcomes
        if self._record_call is None:
            self._record_call = self.clock.callLater(RECORD_RETRY_S, self._flush_outcomes)


class _Answer:
    """What became of one sent submit_sm, told to the dispatcher as its Deferred would
    (ESMEProtocol.send_request's `answer`): a Deferred, its addCallbacks and its run
    cost ~1.2 µs per submit_sm (bench/smpp_path.py). A failing handler is logged, as
    a Deferred's unhandled error would be, never raised into the session."""

    __slots__ = ("dispatcher", "lane", "part")

    def __init__(self, dispatcher, lane, part):
        self.dispatcher = dispatcher
        self.lane = lane
        self.part = part

    def callback(self, resp):
        try:
            self.dispatcher._answered(resp, self.lane, self.part)
        except Exception:
            log.exception("handling the answer to part %s/%d failed", self.part.message_id,
                          self.part.seq)

    def errback(self, error):
        failure = error if isinstance(error, Failure) else Failure(error)
        try:
            self.dispatcher._lost(failure, self.lane, self.part)
        except Exception:
            log.exception("handling the loss of part %s/%d failed", self.part.message_id,
                          self.part.seq)
