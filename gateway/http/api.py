"""The agency API: POST /v1/messages, GET /v1/messages/{id}, GET /v1/inbox, GET /healthz,
broadcasts (broadcasts.py), and the Kannel-compatible /cgi-bin/sendsms (kannel.py).

Checks run in a fixed order, cheapest and most telling first: an address blocked for
failed authentication (429), authentication (401), load (503), body shape (400); then the
accept path (gateway.outbound) checks sender (403, audited), numbers (400), text length
(400), idempotent replay, rate (429), quota (429), stores one message per recipient, and
the 202 goes out only after the commit. Handlers here parse, call and answer: the HTTP
framing lives in server.py, body validation in validate.py, the refusals' codes in
errors.py, the rules themselves in gateway.policy.
"""

import logging
import re

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.http import openapi
from gateway.http.broadcasts import BroadcastRoutes
from gateway.http.citizen import CitizenRoutes
from gateway.http.errors import ApiError, api_error
from gateway.http.inbox_query import encode_cursor, inbox_query
from gateway.http.kannel import PATH as KANNEL_PATH
from gateway.http.kannel import KannelSendSMS
from gateway.http.server import JSON_TYPE, PathRouter, Response, json_response
from gateway.http.validate import parse_submission, require_json
from gateway.inbox.document import inbox_document
from gateway.outbound.errors import Refusal
from gateway.outbound.recipients import show_addressed
from gateway.outbound.submission import Accepted
from gateway.policy.app_limits import AppRequestLimits
from gateway.policy.auth import UNAUTHORIZED_MESSAGE, KeyRing, Unauthorized
from gateway.policy.auth_throttle import FailedAuthThrottle

log = logging.getLogger("payam.api")

_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REPLAY_HEADERS = {"Content-Type": JSON_TYPE, "Idempotent-Replayed": "true"}
_ACCEPTED_HEADERS = {"Content-Type": JSON_TYPE}


class AgencyAPI:
    def __init__(self, outbound, store, keyring, audit, *, clock, health=None,
                 auth_throttle=None, broadcasts=None, national_inbox=None,
                 app_keyring=None, app_limits=None):
        """outbound: the accept path (gateway.outbound.accept.Outbound); store: read for
        GET /v1/messages/{id} and /healthz; health(): the operators' state for /healthz;
        auth_throttle: a FailedAuthThrottle (one on `clock` with its defaults if None);
        broadcasts: the broadcast use case (gateway.outbound.broadcast.Broadcasts);
        national_inbox: the partner apps' use case (gateway.national_inbox.desk), on
        app_keyring's keys (a KeyRing of apps, none if None) at app_limits' rates."""
        self.outbound = outbound
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self.clock = clock
        self.health = health
        self.auth_throttle = (auth_throttle if auth_throttle is not None
                              else FailedAuthThrottle(clock))
        self.router = PathRouter(clock=clock)
        self.router.add("POST", "/v1/messages", self.submit)
        self.router.add_prefix("GET", "/v1/messages/", "/v1/messages/{id}", self.get_message)
        BroadcastRoutes(broadcasts, self._authenticate).register(self.router)
        self.router.add("GET", "/v1/inbox", self.inbox)
        self.app_keyring = app_keyring if app_keyring is not None else KeyRing((), "app")
        CitizenRoutes(national_inbox, self._authenticate_app,
                      app_limits if app_limits is not None
                      else AppRequestLimits(self.app_keyring.holders, clock),
                      lambda: self.keyring.agencies).register(self.router)
        self.router.add("GET", "/healthz", self.healthz)
        self.router.add("GET", "/v1/openapi.json", openapi.serve)
        kannel = KannelSendSMS(outbound, self.authenticate_key)
        self.router.add("GET", KANNEL_PATH, kannel)
        self.router.add("POST", KANNEL_PATH, kannel)

    # -- POST /v1/messages ----------------------------------------------------------

    def submit(self, request):
        agency = self._authenticate(request)
        try:
            self.outbound.admit()         # shed load before parsing anything
            require_json(request.headers.get("content-type"), request.body)
            submission = parse_submission(request.body)
            return self.outbound.submit(agency, submission, request.peer, _answer)
        except Refusal as refusal:
            raise api_error(refusal) from None

    def _authenticate(self, request):
        return self.authenticate_key(request.peer, request.headers.get("authorization"))

    def _authenticate_app(self, request):
        return self.authenticate_key(request.peer, request.headers.get("authorization"),
                                     keyring=self.app_keyring)

    def authenticate_key(self, peer, authorization, agency_id=None, keyring=None):
        """The agency whose key `authorization` ("Bearer <key>") carries, or ApiError
        (401, or 429 while `peer` is blocked for failed authentications); with
        `agency_id`, a key of another agency is a failed authentication too (Kannel's
        username and password); `keyring`: another ring than the agencies' (the
        partner apps'), counted by the same throttle."""
        throttle = self.auth_throttle
        # The throttle stops key guessing: a request that presents no key guesses
        # nothing, so it is told what is wrong (401) and not counted.
        wait = throttle.retry_after(peer) if authorization else None
        if wait is not None:
            raise ApiError("rate_limited",
                           f"too many failed authentications from your address; "
                           f"retry after {wait} s", headers={"Retry-After": str(wait)})
        try:
            agency = (self.keyring if keyring is None else keyring).authenticate(
                authorization)
            if agency_id is not None and agency.id != agency_id:
                raise Unauthorized("the key is not the named agency's")
            return agency
        except Unauthorized as refusal:
            self.audit.unauthorized(peer, refusal.reason)
            if authorization and throttle.failed(peer):
                self.audit.auth_blocked(peer, throttle.failures, throttle.block_s)
            raise ApiError("unauthorized", UNAUTHORIZED_MESSAGE,
                           headers={"WWW-Authenticate": 'Bearer realm="payam"'}) from None

    # -- GET /v1/messages/{id} --------------------------------------------------------

    def get_message(self, request, message_id):
        agency = self._authenticate(request)
        not_found = ApiError("not_found", "no such message")
        if not _MESSAGE_ID.fullmatch(message_id):
            raise not_found
        try:
            d = self.store.get_message(message_id)
        except Exception:
            d = defer.fail()
        d.addBoth(_message_answer, agency.id, not_found)
        return d

    # -- GET /v1/inbox ------------------------------------------------------------------

    def inbox(self, request):
        """The calling agency's inbox (never another's), oldest first, from `after`."""
        agency = self._authenticate(request)
        after, limit = inbox_query(request.query)
        try:
            d = self.store.list_inbox(agency.id, after, limit)
        except Exception:
            d = defer.fail()
        d.addBoth(_inbox_answer, after)
        return d

    # -- GET /healthz -------------------------------------------------------------------

    def healthz(self, request):
        try:
            d = self.store.writable()
        except Exception:
            d = defer.fail()
        d.addBoth(self._health_answer)
        return d

    def _health_answer(self, writable):
        if isinstance(writable, Failure):
            log.error("store health check failed: %s", writable.getErrorMessage())
            writable = False
        writable = bool(writable)
        operators = {}
        if self.health is not None:
            try:
                operators = self.health()
            except Exception:
                log.exception("operator health check failed")
        # Degraded, still 200: messages are taken and wait for (or fall back from) an
        # operator that has no bound session.
        status = ("unavailable" if not writable
                  else "degraded" if any(state.get("bound", 0) < 1
                                         for state in operators.values())
                  else "ok")
        document = {"status": status,
                    "store": "ok" if writable else "not_writable",
                    "operators": operators}
        return json_response(200 if writable else 503, document)


def _message_answer(message, agency_id, not_found):
    """The store's answer to GET /v1/messages/{id} as the HTTP answer."""
    if isinstance(message, Failure):
        log.error("reading message failed: %s", message.getErrorMessage())
        raise ApiError("overloaded", "the store cannot be read right now; retry shortly",
                       headers={"Retry-After": "1"})
    # Another agency's message is indistinguishable from a missing one.
    if message is None or message.get("agency") != agency_id:
        raise not_found
    message = dict(message)
    del message["agency"]
    national_id = message.pop("national_id", None)
    if national_id is not None:
        # Addressed by national ID: the agency sees the ID it gave, the number masked.
        show_addressed(message, message["to"], national_id)
    return json_response(200, message)


def _inbox_answer(messages, after):
    if isinstance(messages, Failure):
        log.error("reading an inbox failed: %s", messages.getErrorMessage())
        raise ApiError("overloaded", "the store cannot be read right now; retry shortly",
                       headers={"Retry-After": "1"})
    # `next` always comes back: with nothing new yet it is where this page began.
    position = messages[-1].seq if messages else after
    return json_response(200, {"messages": [inbox_document(m) for m in messages],
                               "next": encode_cursor(position)})


def _answer(outcome):
    """An accept's outcome (an Accepted, or a Failure after the store was asked) as the
    HTTP answer: called inside the store's one callback, so no Deferred link is added."""
    if type(outcome) is Accepted:
        return Response(202, outcome.document.encode("utf-8"),
                        _REPLAY_HEADERS if outcome.replayed else _ACCEPTED_HEADERS)
    if isinstance(outcome, Failure) and outcome.check(Refusal):
        raise api_error(outcome.value)
    return outcome                        # the router answers internal_error
