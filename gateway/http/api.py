"""The agency API: POST /v1/messages, GET /v1/messages/{id}, GET /healthz.

Checks run in a fixed order, cheapest and most telling first: an address blocked for
failed authentication (429), authentication (401), body shape (400), sender (403, audited), numbers (400), text length (400), idempotent
replay, rate (429), quota (429); then one message per recipient is stored and the 202
goes out only after the commit. The HTTP framing lives in server.py, body validation in
validate.py, the rules themselves in gateway.policy.
"""

import json
import logging
import random
import re

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway import metrics
from gateway.http import openapi
from gateway.http.errors import ApiError
from gateway.http.server import JSON_TYPE, Response, Router, json_response
from gateway.http.validate import check_text_length, normalize_recipients, parse_submission
from gateway.numbers import mask_msisdn
from gateway.policy.auth import UNAUTHORIZED_MESSAGE, Unauthorized
from gateway.policy.auth_throttle import FailedAuthThrottle
from gateway.policy.limits import QuotaExceeded, RateLimited
from gateway.policy.senders import SenderNotAllowed, check_sender, owner_of
from gateway.store import DuplicateIdempotencyKey, NewMessage
from gateway.text import TextTooLong, encode_for_submit

log = logging.getLogger("payam.api")

DEFAULT_MAX_PENDING = 5000           # accepts waiting for their commit before we shed load
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REPLAY_HEADERS = {"Content-Type": JSON_TYPE, "Idempotent-Replayed": "true"}
_ACCEPTED_HEADERS = {"Content-Type": JSON_TYPE}


class AgencyAPI:
    def __init__(self, store, keyring, limits, audit, *, clock, on_accepted=None,
                 route_of=None, health=None, max_pending=DEFAULT_MAX_PENDING,
                 auth_throttle=None):
        """on_accepted(routes): called once messages are stored, with their routes;
        route_of(msisdn): the route stored with a message (None without a router);
        auth_throttle: a FailedAuthThrottle (one on `clock` with its defaults if None)."""
        self.store = store
        self.keyring = keyring
        self.limits = limits
        self.audit = audit
        self.clock = clock
        self.on_accepted = on_accepted
        self.route_of = route_of if route_of is not None else (lambda msisdn: None)
        self.health = health
        self.max_pending = max_pending
        self.auth_throttle = (auth_throttle if auth_throttle is not None
                              else FailedAuthThrottle(clock))
        self.pending = 0                 # accepts handed to the store, not yet committed
        self._in_flight = {}             # (agency, idempotency key) -> [waiting Deferreds]
        self._random = random.Random()   # concatenation references: unpredictable enough
        self.router = Router()
        self.router.add("POST", "/v1/messages", self.submit)
        self.router.add_prefix("GET", "/v1/messages/", "/v1/messages/{id}", self.get_message)
        self.router.add("GET", "/healthz", self.healthz)
        self.router.add("GET", "/v1/openapi.json", openapi.serve)

    # -- POST /v1/messages ----------------------------------------------------------

    def submit(self, request):
        agency = self._authenticate(request)
        if self.pending >= self.max_pending:
            raise ApiError("overloaded", "too many messages waiting to be stored; retry shortly",
                           headers={"Retry-After": "1"})
        submission = parse_submission(request.body)
        sender = self._check_sender(agency, submission.sender, request.peer)
        recipients = normalize_recipients(submission.recipients)
        parts = check_text_length(submission.text)
        return self._accept(agency, submission, sender, recipients, parts)

    def _authenticate(self, request):
        throttle = self.auth_throttle
        peer = request.peer
        authorization = request.headers.get("authorization")
        # The throttle stops key guessing: a request that presents no key guesses
        # nothing, so it is told what is wrong (401) and not counted.
        wait = throttle.retry_after(peer) if authorization else None
        if wait is not None:
            raise ApiError("rate_limited",
                           f"too many failed authentications from your address; "
                           f"retry after {wait} s", headers={"Retry-After": str(wait)})
        try:
            return self.keyring.authenticate(authorization)
        except Unauthorized as refusal:
            self.audit.unauthorized(peer, refusal.reason)
            if authorization and throttle.failed(peer):
                self.audit.auth_blocked(peer, throttle.failures, throttle.block_s)
            raise ApiError("unauthorized", UNAUTHORIZED_MESSAGE,
                           headers={"WWW-Authenticate": 'Bearer realm="payam"'}) from None

    def _check_sender(self, agency, sender, peer):
        try:
            _kind, address = check_sender(agency, sender)
        except SenderNotAllowed as refusal:
            metrics.child(metrics.SENDER_REFUSALS, refusal.reason).inc()
            self.audit.sender_refused(agency.id, sender, refusal.reason, peer,
                                      owner=owner_of(self.keyring.agencies, sender))
            raise ApiError("sender_not_allowed", str(refusal)) from None
        return address

    def _accept(self, agency, submission, sender, recipients, parts):
        """From the idempotency check on; re-entered by a request that waited for a
        concurrent one with the same key."""
        key = submission.idempotency_key
        if key is not None:
            stored = self.store.idempotent_response(agency.id, key, self.clock.seconds())
            if stored is not None:
                return _replay(stored)
            waiting = self._in_flight.get((agency.id, key))
            if waiting is not None:
                # The same key is being stored right now: answer as that request is answered.
                d = defer.Deferred()
                d.addCallback(lambda _: self._accept(agency, submission, sender,
                                                     recipients, parts))
                waiting.append(d)
                return d

        try:
            reservation = self.limits.reserve(agency.id, parts * len(recipients))
        except RateLimited as limit:
            raise ApiError("rate_limited",
                           f"more than {agency.rate_per_s:g} parts per second; "
                           f"retry after {limit.retry_after} s",
                           headers={"Retry-After": str(limit.retry_after)}) from None
        except QuotaExceeded as quota:
            raise ApiError("quota_exceeded",
                           f"daily quota of {quota.quota} parts reached ({quota.used} used, "
                           f"this request needs {parts * len(recipients)}); it resets at "
                           "midnight Tehran time",
                           headers={"Retry-After": str(quota.retry_after)}) from None

        try:
            messages = self._build(agency, submission, sender, recipients)
        except Exception:
            self.limits.release(reservation)
            raise
        body = _accepted_body(messages)
        idempotency = (agency.id, key, body) if key is not None else None

        self.pending += 1
        if key is not None:
            self._in_flight[(agency.id, key)] = []
        # store.accept returns a Deferred: no maybeDeferred, and one callback for the
        # whole outcome (each Deferred link costs µs per request).
        try:
            d = self.store.accept(messages, idempotency=idempotency)
        except Exception:
            d = defer.fail()
        d.addBoth(self._stored, agency, messages, body, reservation, key)
        return d

    def _stored(self, result, agency, messages, body, reservation, key):
        """The store's outcome → the answer; then the request is settled."""
        try:
            if isinstance(result, Failure):
                result = self._not_stored(result, reservation)
            else:
                result = self._committed(result, agency, messages, body)
        except Exception:
            result = Failure()
        return self._settled(result, agency.id, key)

    def _build(self, agency, submission, sender, recipients):
        now = self.clock.seconds()
        text = submission.text
        try:
            shared = encode_for_submit(text, self._random.getrandbits(8))
        except TextTooLong as error:
            raise ApiError("text_too_long", str(error)) from None
        messages = []
        for recipient in recipients:
            # Parts of different messages to one handset must not share a reference.
            encoded = (shared if len(shared.parts) == 1 or not messages
                       else encode_for_submit(text, self._random.getrandbits(8)))
            messages.append(NewMessage(
                id=self.store.new_message_id(), agency=agency.id, sender=sender,
                recipient=recipient, text=text, priority=submission.priority,
                reference=submission.reference, validity_s=submission.validity_s,
                receipt=submission.receipt, data_coding=encoded.data_coding,
                esm_class=encoded.esm_class, parts=list(encoded.parts), created_at=now,
                route=self.route_of(recipient)))
        return messages

    def _committed(self, _ids, agency, messages, body):
        parts = sum(len(m.parts) for m in messages)
        metrics.child(metrics.MESSAGES_ACCEPTED, agency.id).inc(len(messages))
        metrics.child(metrics.PARTS_ACCEPTED, agency.id).inc(parts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("accepted %d message(s), %d part(s) for %s, first to %s", len(messages),
                      parts, agency.id, mask_msisdn(messages[0].recipient))
        if self.on_accepted is not None:
            try:
                self.on_accepted({m.route for m in messages})
            except Exception:
                log.exception("dispatcher wake-up failed (messages are stored)")
        return Response(202, body.encode("utf-8"), _ACCEPTED_HEADERS)

    def _not_stored(self, failure, reservation):
        self.limits.release(reservation)
        if failure.check(DuplicateIdempotencyKey):
            return _replay(failure.value.response)
        log.error("store refused an accept: %s", failure.getErrorMessage())
        raise ApiError("overloaded", "messages could not be stored; retry shortly",
                       headers={"Retry-After": "1"})

    def _settled(self, result, agency_id, key):
        self.pending -= 1
        if key is not None:
            for waiter in self._in_flight.pop((agency_id, key), ()):
                waiter.callback(None)
        return result

    # -- GET /v1/messages/{id} --------------------------------------------------------

    def get_message(self, request, message_id):
        agency = self._authenticate(request)
        not_found = ApiError("not_found", "no such message")
        if not _MESSAGE_ID.fullmatch(message_id):
            raise not_found
        try:
            message = self.store.get_message(message_id)
        except Exception:
            log.exception("reading message failed")
            raise ApiError("overloaded", "the store cannot be read right now; retry shortly",
                           headers={"Retry-After": "1"}) from None
        # Another agency's message is indistinguishable from a missing one.
        if message is None or message.get("agency") != agency.id:
            raise not_found
        message = dict(message)
        del message["agency"]
        return json_response(200, message)

    # -- GET /healthz -------------------------------------------------------------------

    def healthz(self, request):
        try:
            writable = bool(self.store.writable())
        except Exception:
            log.exception("store health check failed")
            writable = False
        operators = {}
        if self.health is not None:
            try:
                operators = self.health()
            except Exception:
                log.exception("operator health check failed")
        document = {"status": "ok" if writable else "unavailable",
                    "store": "ok" if writable else "not_writable",
                    "operators": operators}
        return json_response(200 if writable else 503, document)


def _accepted_body(messages):
    """The 202 document, byte for byte what json.dumps(..., ensure_ascii=False,
    separators=(",", ":")) gives. Built by hand when every id and number is plain
    alphanumeric (always, for ids from the store and normalised numbers): nothing to
    escape, and json.dumps costs several µs per request."""
    entries = []
    for m in messages:
        plain = m.id + m.recipient
        if not (plain.isalnum() and plain.isascii()):
            break
        entries.append('{"id":"%s","to":"%s","parts":%d,"status":"queued"}'
                       % (m.id, m.recipient, len(m.parts)))
    else:
        return '{"messages":[' + ",".join(entries) + "]}"
    return json.dumps(
        {"messages": [{"id": m.id, "to": m.recipient, "parts": len(m.parts),
                       "status": "queued"} for m in messages]},
        ensure_ascii=False, separators=(",", ":"))


def _replay(stored):
    """The first answer to an idempotency key, byte for byte."""
    return Response(202, stored.encode("utf-8"), _REPLAY_HEADERS)
