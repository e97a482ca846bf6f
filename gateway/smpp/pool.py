"""An operator's binds: one ClientService per session, the operator's TPS shared by all.

The dispatcher asks `free_slots()` (window room on bound transmit sessions, capped by the
TPS bucket) and calls `submit()` that many times; `on_ready` tells it when to ask again.
"""

import logging
import random

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.esme import ESMEFactory, SessionError
from gateway.smpp.ratelimit import OperatorRate
from gateway.smpp.ratelog import RateLimitedLog

log = logging.getLogger("payam.smpp.pool")

BIND_MODES = {
    "transceiver": ("transceiver",),
    "transmitter+receiver": ("transmitter", "receiver"),
}
_SHORT_KIND = {"transceiver": "trx", "transmitter": "tx", "receiver": "rx"}

# The SMSC rejects our credentials: retrying fast only fills its logs (and may lock the
# account), so wait the longest backoff and shout.
BIND_ERRORS = frozenset({c.ESME_RBINDFAIL, c.ESME_RINVPASWD, c.ESME_RINVSYSID})
STOP_UNBIND_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10
# A session resets the reconnect backoff only once it has stayed bound this long and the
# SMSC has answered it since binding: a peer that binds and then dies (garbage, a
# framing error, a drop) must not get a bind attempt per minimum delay.
HEALTHY_AFTER_S = 30.0


class NoSession(SessionError):
    """The pool cannot take a submit now: no bound transmit session with room, the TPS
    budget is spent, or the operator asked us to slow down."""


class SessionGone(NoSession):
    """A submit `via` a session that is no longer bound (lost, unbinding, closed): it was
    not sent. Retrying through that session can never work; whether another bind may
    carry it instead is the caller's decision (a USSD answer on another bind is wrong
    for some operators)."""


class _Bind:
    """One configured session slot: its factory, its ClientService, its retry state."""

    def __init__(self, label):
        self.label = label
        self.factory = None
        self.service = None
        self.backoff_step = 0          # reconnect waits since a session was last healthy
        self.failed_attempts = 0       # connects/binds that failed since the last bind
        self.bind_refused = False      # the last failure was a credentials refusal
        self.healthy_call = None       # checks whether the bound session is healthy


class _NamedEndpoint:
    """The TCP endpoint, reporting failed connects to the pool and named in Twisted's
    own log lines by operator and address (not by object repr)."""

    def __init__(self, endpoint, name, on_failure):
        self._endpoint = endpoint
        self._name = name
        self._on_failure = on_failure

    def connect(self, factory):
        d = self._endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self._on_failure(failure)
        return failure

    def __repr__(self):
        return self._name


class OperatorPool(MultiService):
    """All binds toward one operator (see docs/architecture.md, "Session and pool")."""

    def __init__(self, config, *, inbound_handler, reactor, healthy_after_s=HEALTHY_AFTER_S):
        """config: the operator's OperatorConfig (gateway.config.schema), whose values the
        config loader has checked once; the binds' factories share it.
        inbound_handler(operator, session, pdu) -> int | Deferred[int]: each deliver_sm /
        data_sm with the session it came in on (answer through it: submit(via=session)),
        answered with that status once it fires (or esme.ANSWERED_LATER: the handler
        answers through session.answer_inbound itself)."""
        super().__init__()
        # The loader refuses it; a pool of no binds would not fail, only never bind.
        assert config.binds >= 1, f"operator {config.name}: unchecked config"
        backoff_from, backoff_to = (float(x) for x in config.reconnect_s)
        self.config = config
        self.operator = name = config.name
        self.host = config.host
        self.port = config.port
        self.on_ready = None
        self._clock = reactor
        self._inbound_handler = inbound_handler
        self._reconnect_max = backoff_to
        self._healthy_after_s = healthy_after_s
        self._rlog = RateLimitedLog(log, reactor)
        # Jitter proportional to the first delay, so binds restarted together spread out.
        self._backoff = backoffPolicy(initialDelay=backoff_from, maxDelay=backoff_to,
                                      jitter=lambda: random.random() * backoff_from * 0.5)
        # Paced in bursts of 0.1 s, never more than tps in any second, slower after
        # throttling (see ratelimit.py).
        self._bucket = OperatorRate(config.tps, reactor)
        self._sessions = []            # bound sessions, transmit-capable or not
        self._slowed_until = 0.0
        self._slow_call = None
        self._tps_call = None
        self._stopping = False
        self._binds = {}               # ESMEFactory -> _Bind
        self._partners = {}            # a receiver's factory -> its pair's transmitter's
        kinds = [kind for kind in BIND_MODES[config.bind] for _ in range(config.binds)]
        counts = {}
        by_label = {}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
            bind = _Bind(f"{name}:{_SHORT_KIND[kind]}{counts[kind]}")
            bind.factory = ESMEFactory(
                config, bind_type=kind, clock=reactor,
                inbound=self._inbound, session_bound=self._session_bound,
                session_lost=self._session_lost, session_ready=self._session_ready,
                label=bind.label)
            endpoint = _NamedEndpoint(
                TCP4ClientEndpoint(reactor, self.host, self.port, timeout=CONNECT_TIMEOUT_S),
                f"operator {name} at {self.host}:{self.port}",
                lambda failure, bind=bind: self._connect_failed(bind, failure))
            bind.service = ClientService(endpoint, bind.factory,
                                         retryPolicy=self._retry_policy(bind), clock=reactor)
            bind.service.setServiceParent(self)
            self._binds[bind.factory] = bind
            by_label[(kind, counts[kind])] = bind.factory
        for (kind, n), factory in by_label.items():
            if kind == "receiver" and ("transmitter", n) in by_label:
                self._partners[factory] = by_label[("transmitter", n)]

    # --- capacity -------------------------------------------------------------------------
    def bound_count(self):
        """Bound sessions that can transmit (receiver binds do not count)."""
        return sum(1 for s in self._sessions if s.can_transmit)

    def cork(self):
        """Cork every bound session (ESMEProtocol.cork) for a burst of submits; give the
        result to uncork() once the burst is sent."""
        return [session for session in self._sessions if session.cork()]

    @staticmethod
    def uncork(corked):
        for session in corked:
            session.uncork()

    def free_slots(self):
        """Submits the pool takes now: free window slots, capped by the TPS tokens."""
        if self._stopping or self._clock.seconds() < self._slowed_until:
            return 0
        window = sum(s.free_slots for s in self._sessions)
        if window == 0:
            return 0
        tokens = self._bucket.available()
        if tokens == 0:
            self._wake_on_tokens()
        return min(window, tokens)

    def answering(self, session):
        """The session that answers a request `session` brought (a USSD page): itself,
        or for a receiver of transmitter+receiver binds, the transmitter of its pair
        (the receiver itself while that transmitter is not bound: submit then fails
        NoSession, as for any bind that cannot take it now)."""
        partner = self._partners.get(getattr(session, "factory", None))
        if partner is None:
            return session
        for candidate in self._sessions:
            if candidate.factory is partner:
                return candidate
        return session

    def submit(self, pdu, via=None, answer=None):
        """Send through the least-loaded bound session, or through `via` (a session this
        pool handed to the inbound handler) and no other; Deferred[resp PDU], or a
        failure (NoSession, SessionGone, SessionClosed, ResponseTimeout). The TPS budget
        and the slow-down apply either way.  `answer`: as ESMEProtocol.send_request's
        (returned once sent; a failed Deferred if refused before)."""
        if self._stopping:
            return defer.fail(NoSession(f"operator {self.operator} is stopping"))
        wait = self._slowed_until - self._clock.seconds()
        if wait > 0:
            return defer.fail(NoSession(f"operator {self.operator} slowed down for "
                                        f"{wait:.1f}s more"))
        if via is None:
            # The least-loaded session that can submit, in one pass (hot path: no list,
            # no key function); ties go to the first, as min() would.
            session = None
            least = None
            for candidate in self._sessions:
                if candidate.can_submit():
                    outstanding = candidate.outstanding
                    if least is None or outstanding < least:
                        session, least = candidate, outstanding
            if session is None:
                return defer.fail(NoSession(f"operator {self.operator}: no bound session "
                                            f"with a free window slot"))
        else:
            session = via
            if session not in self._sessions or not session.is_bound:
                return defer.fail(SessionGone(f"operator {self.operator}: session "
                                              f"{session.label} is no longer bound"))
            if not session.can_submit():
                why = ("bound as receiver" if not session.can_transmit
                       else "its window is full or the SMSC is not reading")
                return defer.fail(NoSession(f"operator {self.operator}: session "
                                            f"{session.label} cannot take it now: {why}"))
        left = self._bucket.take_one()
        if left is None:
            self._wake_on_tokens()
            return defer.fail(NoSession(f"operator {self.operator}: TPS budget spent"))
        if left == 0:
            # Callers submit free_slots() times without asking again: wake them when the
            # bucket refills, or work would sit until some response happens to arrive.
            self._wake_on_tokens()
        return session.send_request(pdu, answer)

    def throttled(self):
        """The SMSC answered ESME_RTHROTTLED / ESME_RMSGQFUL: lower the operator's rate
        (see OperatorRate); it climbs back by itself while no throttle comes."""
        if self._bucket.throttled():
            self._rlog.info((self.operator, "throttled"),
                            "operator %s: throttled by the SMSC; rate now %.1f/s (tps %g)",
                            self.operator, self._bucket.rate, self._bucket.tps)

    def slow_down(self, seconds):
        """Pause this operator's submits for `seconds` (after ESME_RTHROTTLED / RMSGQFUL);
        on_ready is called when the pause ends."""
        now = self._clock.seconds()
        until = now + seconds
        if until <= self._slowed_until:
            return
        if now >= self._slowed_until:          # a pause starts (not one made longer)
            self._rlog.info((self.operator, "slow"), "operator %s: slowing down for %.1fs",
                            self.operator, seconds)
        self._slowed_until = until
        if self._slow_call is not None and self._slow_call.active():
            self._slow_call.cancel()
        self._slow_call = self._clock.callLater(seconds, self._slow_down_over)

    def _slow_down_over(self):
        self._slow_call = None
        self._ready()

    def _wake_on_tokens(self):
        # One timer at most: the dispatcher is woken when the bucket has a token again.
        if self._tps_call is None or not self._tps_call.active():
            self._tps_call = self._clock.callLater(self._bucket.delay_until_available(),
                                                   self._tokens_back)

    def _tokens_back(self):
        self._tps_call = None
        self._ready()

    def _ready(self):
        if self.on_ready is None or self._stopping:
            return
        try:
            self.on_ready()
        except Exception:
            log.exception("operator %s: on_ready failed", self.operator)

    # --- session callbacks ------------------------------------------------------------------
    def _inbound(self, session, pdu):
        return self._inbound_handler(self.operator, session, pdu)

    def _session_bound(self, session):
        bind = self._binds[session.factory]
        if bind.failed_attempts:
            log.info("%s: bound again after %d failed attempt(s)", session.label,
                     bind.failed_attempts)
        bind.failed_attempts = 0
        self._watch_health(bind, session)
        self._sessions.append(session)
        self._update_gauge()
        self._ready()

    def _watch_health(self, bind, session):
        """Reset the backoff once the session has been bound for healthy_after_s and
        the SMSC has answered it since (enquire_link or any request); look again every
        healthy_after_s until then."""
        bound_at = self._clock.seconds()

        def check():
            bind.healthy_call = None
            if session not in self._sessions:
                return
            if session.answered_at is not None and session.answered_at > bound_at:
                bind.backoff_step = 0
                return
            bind.healthy_call = self._clock.callLater(self._healthy_after_s, check)

        self._cancel_health(bind)
        bind.healthy_call = self._clock.callLater(self._healthy_after_s, check)

    @staticmethod
    def _cancel_health(bind):
        if bind.healthy_call is not None and bind.healthy_call.active():
            bind.healthy_call.cancel()
        bind.healthy_call = None

    def _connect_failed(self, bind, failure):
        bind.failed_attempts += 1
        self._rlog.warning((self.operator, "connect"),
                           "operator %s: cannot connect to %s:%s: %s (bind %s, %d failed "
                           "attempt(s) in a row)", self.operator, self.host, self.port,
                           failure.getErrorMessage(), bind.label, bind.failed_attempts)

    def _session_lost(self, session):
        bind = self._binds[session.factory]
        self._cancel_health(bind)
        if session not in self._sessions:
            bind.failed_attempts += 1          # connected, but never bound
        if session.bind_status in BIND_ERRORS:
            bind.bind_refused = True
            log.error("ALERT operator %s: bind refused with %s; check system_id and "
                      "password; next attempt in ~%gs", self.operator,
                      c.status_name(session.bind_status), self._reconnect_max)
        if session in self._sessions:
            self._sessions.remove(session)
            self._update_gauge()
            # Parts buffered for this operator may now have to go to a fallback.
            self._ready()

    def _session_ready(self, session):
        self._ready()

    def _update_gauge(self):
        metrics.child(metrics.BOUND_SESSIONS, self.operator).set(len(self._sessions))

    def in_flight(self):
        """Requests awaiting their response on the bound sessions (the window in use)."""
        return sum(s.outstanding for s in self._sessions)

    def window_size(self):
        """The window of the bound transmit sessions together."""
        return sum(s.window for s in self._sessions if s.can_transmit)

    def _retry_policy(self, bind):
        # ClientService resets its own count on every TCP connect, even when the bind
        # then fails; counting here (reset only once a session proved healthy, see
        # _watch_health) keeps the backoff growing for a peer that binds and dies.
        def delay(_client_service_attempts):
            if self._stopping:
                return self._reconnect_max
            step = bind.backoff_step
            bind.backoff_step += 1
            if bind.bind_refused:
                bind.bind_refused = False
                return self._reconnect_max
            return self._backoff(step)
        return delay

    # --- lifecycle ----------------------------------------------------------------------------
    def startService(self):
        self._stopping = False
        log.info("operator %s: starting %d bind(s) to %s:%s", self.operator,
                 len(self._binds), self.host, self.port)
        # Read at each scrape, on the reactor thread (the metrics site runs there).
        metrics.child(metrics.WINDOW_IN_FLIGHT, self.operator).set_function(self.in_flight)
        metrics.child(metrics.WINDOW_SIZE, self.operator).set_function(self.window_size)
        super().startService()

    def stopService(self):
        """Unbind every session gracefully (bounded), then stop reconnecting."""
        self._stopping = True
        for bind in self._binds.values():
            self._cancel_health(bind)
        for call in (self._slow_call, self._tps_call):
            if call is not None and call.active():
                call.cancel()
        self._slow_call = self._tps_call = None
        live = [b.factory.current for b in self._binds.values() if b.factory.current]
        log.info("operator %s: stopping, unbinding %d session(s)", self.operator, len(live))
        unbinds = [s.unbind(STOP_UNBIND_TIMEOUT_S) for s in live]
        d = defer.DeferredList(unbinds, consumeErrors=True)
        d.addCallback(lambda _: MultiService.stopService(self))
        d.addCallback(self._stopped)
        return d

    def _stopped(self, result):
        self._sessions = []
        self._update_gauge()
        return result
