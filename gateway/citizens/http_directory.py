"""The production directory: a lookup service (Shahkar-style) asked over HTTP.

`GET {url}/citizens/{national_id}` → 200 `{"msisdn": "98912...", "email": "..."?}` is the
citizen (the number normalised), 404 is "not registered" (None). Anything else — another
status (a redirect is not followed: the ID goes to this service only), no answer within
`timeout_s`, a refused connection, a body over MAX_BODY, not that JSON, a number or email
that is not one — is DirectoryUnavailable: the caller answers 503, it never guesses.

Answers (found and not registered) are kept `cache_ttl_s` in a bounded cache
(cache.py); concurrent lookups of one ID share one request; at most `max_in_flight`
requests at once, beyond which a lookup fails at once (never an unbounded queue). The
national ID is checked (gateway.national_id) before it is put in a URL, and never
logged: a failure's reason is scrubbed of it.
"""

import json
import logging

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from gateway import metrics
from gateway.citizens.cache import MISSING, AnswerCache
from gateway.citizens.directory import DirectoryUnavailable
from gateway.model import Citizen
from gateway.national_id import InvalidNationalId, mask_national_id, normalize_national_id
from gateway.numbers import InvalidNumber, normalize_msisdn

log = logging.getLogger("payam.citizens.http")

MAX_BODY = 8 * 1024             # one citizen's answer is some 100 octets
MAX_IN_FLIGHT = 64              # requests to the service at once
MAX_WAITING = 256               # lookups of one ID waiting on its request
MAX_EMAIL = 254
MAX_REASON = 200
RESULTS = ("found", "unknown", "cached", "unavailable")


class HttpDirectory:
    def __init__(self, settings, reactor, *, agent=None, clock=None,
                 max_in_flight=MAX_IN_FLIGHT, max_waiting=MAX_WAITING):
        """settings: DirectorySettings with a url. agent: an IAgent (default: twisted's
        Agent with a persistent pool on `reactor`); clock: the time of the cache and the
        timeout (default `reactor`)."""
        from treq.client import HTTPClient
        self.url = settings.url
        self.timeout_s = settings.timeout_s
        self.clock = clock if clock is not None else reactor
        self.cache = AnswerCache(settings.cache_ttl_s, settings.cache_size, self.clock)
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self._pool = None
        if agent is None:
            agent = self._default_agent(reactor)
        self._http = HTTPClient(agent)
        self._waiting = {}               # national ID → [Deferred] of its request
        for result in RESULTS:           # every series on /metrics from the start
            metrics.child(metrics.DIRECTORY_LOOKUPS, result)

    def _default_agent(self, reactor):
        from twisted.web.client import Agent, HTTPConnectionPool
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        return Agent(reactor, pool=self._pool, connectTimeout=self.timeout_s)

    @property
    def in_flight(self):
        return len(self._waiting)

    def lookup(self, national_id):
        """Deferred[Citizen | None]; fails DirectoryUnavailable when the service cannot
        answer. An ID that is not one (check digit) is registered to nobody: None."""
        try:
            national_id = normalize_national_id(national_id)
        except InvalidNationalId:
            _count("unknown")
            return defer.succeed(None)
        answer = self.cache.get(national_id)
        if answer is not MISSING:
            _count("cached")
            return defer.succeed(answer)
        waiting = self._waiting.get(national_id)
        asking = waiting is None
        if asking and len(self._waiting) >= self.max_in_flight:
            return _unavailable(f"{self.max_in_flight} lookups in flight already")
        if asking:
            waiting = self._waiting[national_id] = []
        elif len(waiting) >= self.max_waiting:
            return _unavailable(f"{self.max_waiting} lookups of one ID waiting already")
        d = defer.Deferred(lambda cancelled: _forget(waiting, cancelled))
        waiting.append(d)
        if asking:                       # after the append: an answer may come at once
            self._ask(national_id)
        return d

    def close(self):
        """The kept-alive connections closed (at shutdown) → Deferred."""
        if self._pool is None:
            return defer.succeed(None)
        return self._pool.closeCachedConnections()

    # -- one request ---------------------------------------------------------------------

    def _ask(self, national_id):
        started = self.clock.seconds()
        d = self._http.get(f"{self.url}/citizens/{national_id}",
                           headers={"Accept": ["application/json"]},
                           allow_redirects=False)   # the ID goes to this service only
        d.addCallback(_read_answer)
        d.addTimeout(self.timeout_s, self.clock, onTimeoutCancel=_timed_out)
        d.addCallback(_citizen, national_id)
        d.addErrback(self._failed, national_id)
        d.addBoth(self._answered, national_id, started)

    def _failed(self, failure, national_id):
        reasons = getattr(failure.value, "reasons", None)    # the agent's ResponseFailed
        if reasons:
            failure = reasons[0]
        if failure.check(defer.TimeoutError, defer.CancelledError):
            reason = f"no answer within {self.timeout_s:g} s"
        else:
            reason = failure.getErrorMessage() or failure.type.__name__
            if not failure.check(DirectoryUnavailable):
                reason = f"{failure.type.__name__}: {reason}"
        # Whatever the error says (a URL in it), the national ID is not in the line.
        reason = reason.replace(national_id, mask_national_id(national_id))[:MAX_REASON]
        log.warning("directory lookup failed: %s", reason)
        return DirectoryUnavailable(reason)

    def _answered(self, answer, national_id, started):
        metrics.DIRECTORY_SECONDS.observe(max(0.0, self.clock.seconds() - started))
        waiting = self._waiting.pop(national_id, [])
        if isinstance(answer, DirectoryUnavailable):
            outcome = "unavailable"
        else:
            self.cache.put(national_id, answer)
            outcome = "unknown" if answer is None else "found"
        for d in waiting:
            if d.called:                 # cancelled by its caller meanwhile
                continue
            _count(outcome)
            if outcome == "unavailable":
                d.errback(DirectoryUnavailable(*answer.args))
            else:
                d.callback(answer)


# -- the answer --------------------------------------------------------------------------

def _read_answer(response):
    """(status, body) with the body capped at MAX_BODY, read whatever the status: a
    kept-alive connection is reusable, and a body left unread would be buffered whole
    (a Content-Length over the cap included: reading stops at the cap)."""
    d = _CappedBody.read(response)
    d.addCallback(lambda body: (response.code, body))
    return d


def _citizen(answer, national_id):
    status, body = answer
    if status == 404:
        return None
    if status != 200:
        raise DirectoryUnavailable(f"HTTP {status}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DirectoryUnavailable("the answer is not JSON") from None
    if not isinstance(document, dict):
        raise DirectoryUnavailable("the answer is not a JSON object")
    try:
        msisdn = normalize_msisdn(document.get("msisdn"))
    except InvalidNumber as error:
        raise DirectoryUnavailable(f"the answer's msisdn: {error.reason}") from None
    email = document.get("email")
    if email is not None and not _looks_like_email(email):
        raise DirectoryUnavailable("the answer's email is not name@domain")
    return Citizen(national_id=national_id, msisdn=msisdn, email=email)


def _looks_like_email(value):
    if not isinstance(value, str) or len(value) > MAX_EMAIL:
        return False
    local, at, domain = value.rpartition("@")
    return (bool(at) and bool(local) and "." in domain
            and not any(ch.isspace() or ch in "<>,;\"\r\n" for ch in value))


class _CappedBody(Protocol):
    """A response body, at most MAX_BODY octets; cancelling the read drops the
    connection (a server trickling its body cannot hold it past the timeout)."""

    def __init__(self):
        self.finished = defer.Deferred(lambda _: self.drop())
        self.chunks = []
        self.size = 0

    @classmethod
    def read(cls, response):
        protocol = cls()
        response.deliverBody(protocol)
        return protocol.finished

    def dataReceived(self, data):
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > MAX_BODY:
            self.drop()
            self.finished.errback(DirectoryUnavailable(f"a body over {MAX_BODY} octets"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)

    def drop(self):
        if self.transport is not None:
            self.transport.stopProducing()


def _timed_out(result, timeout):
    """The timeout cancelled the request: whatever the cancel failed with (the agent's
    ResponseNeverReceived), it is a timeout."""
    raise defer.TimeoutError(f"no answer within {timeout:g} s")


def _count(result):
    metrics.child(metrics.DIRECTORY_LOOKUPS, result).inc()


def _unavailable(reason):
    _count("unavailable")
    log.warning("directory lookup refused: %s", reason)
    return defer.fail(DirectoryUnavailable(reason))


def _forget(waiting, cancelled):
    if cancelled in waiting:
        waiting.remove(cancelled)
