"""The one accept path: a checked submission becomes stored messages, or a refusal.

Every channel (the HTTP API today; USSD filing, answers from 4040, broadcasts,
partner-app replies, a Kannel-compatible endpoint next) authenticates its caller, parses
its own input into a `Submission` and calls `Outbound.submit`. Checks run in a fixed
order, cheapest and most telling first: load (accepts waiting for the store), sender
(audited), numbers, text length, idempotent replay, rate, quota; then one message per
recipient is stored, the dispatcher is woken with their routes, and the outcome is given
only after the commit. Refusals are the data of gateway.outbound.errors: nothing here
knows HTTP.
"""

import logging
import random
from dataclasses import fields, replace

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway import metrics
from gateway.model import NORMAL, NewMessage
from gateway.numbers import mask_msisdn
from gateway.outbound.checks import check_text_length, normalize_recipients
from gateway.outbound import platform
from gateway.outbound.fallback import check_fallback
from gateway.outbound.recipients import (
    Resolver, addressed, no_directory, read_recipients)
from gateway.outbound.errors import (
    IdempotencyConflict, LinkRefused, OverQuota, Overloaded, OverRate, SenderRefused,
    TooManyParts)
from gateway.outbound.submission import Accepted, Submission, accepted_document, request_hash
from gateway.policy.limits import QuotaExceeded, RateLimited
from gateway.policy.senders import SenderNotAllowed, check_sender, owner_of
from gateway.store.interface import DuplicateIdempotencyKey, IdempotencyMismatch, QuotaRefused
from gateway.text import TextTooLong, encode_for_submit
from gateway.text.links import outside

log = logging.getLogger("payam.outbound")

DEFAULT_MAX_PENDING = 5000           # accepts waiting for their commit before we shed load
OPTED_OUT = "opted_out"              # the error of a message to a citizen who sent STOP


_MAX_COUNTED_AGENCIES = 4096


# _build makes each NewMessage with these fields positional (0.90 → 0.32 µs a message,
# measured: matching 17 keywords costs more than the rest); the order is checked here.
_POSITIONAL = ("id", "agency", "sender", "recipient", "text", "priority", "reference",
               "validity_s", "receipt", "data_coding", "esm_class", "parts", "created_at",
               "route", "fingerprint", "error")
if tuple(f.name for f in fields(NewMessage))[:len(_POSITIONAL)] != _POSITIONAL:
    raise ImportError("gateway.model.NewMessage's fields moved: update "
                      "gateway.outbound.accept._POSITIONAL and _build")


def _as_is(outcome):
    return outcome


def _conflict(key):
    return IdempotencyConflict(f"idempotency_key {key[:128]!r} was used in the last 24 h "
                               "for another request; use a new key for a new request")


def _waiting_too_long():
    return Overloaded("too many messages waiting to be stored; retry shortly", retry_after=1)


class Outbound:
    def __init__(self, store, limits, audit, *, clock, agencies=tuple, route_of=None,
                 on_accepted=None, max_pending=DEFAULT_MAX_PENDING, fingerprint=None,
                 debug_text_agencies=(), email_fallback=None):
        """limits: a gateway.policy.limits.AgencyLimits; audit: a policy.audit.AuditLog;
        agencies(): the agencies configured now (SIGHUP replaces them), to name a refused
        sender's owner in the audit; route_of(msisdn): the route stored with a message
        (None without a router); on_accepted(routes): called once messages are stored,
        with their routes; fingerprint: a gateway.text.fingerprint.TextFingerprint, whose
        fingerprint of each agency text is stored with its messages (the 4040 check);
        None stores none; debug_text_agencies: the agencies whose message text is
        logged at DEBUG (gateway.yaml log.debug_text_agencies; nobody's otherwise);
        email_fallback: a gateway.outbound.fallback.EmailFallback when `smtp:` is
        configured (None: `"fallback": "email"` is refused)."""
        self.store = store
        self.limits = limits
        self.audit = audit
        self.clock = clock
        self.agencies = agencies
        self.route_of = route_of if route_of is not None else (lambda msisdn: None)
        self.on_accepted = on_accepted
        self.max_pending = max_pending
        self.fingerprint = fingerprint
        self.debug_text_agencies = frozenset(debug_text_agencies)
        self.email_fallback = email_fallback
        self.pending = 0                 # accepts handed to the store, not yet committed
        self.resolving = 0               # submissions waiting for the citizen directory
        self.resolver = None             # use_directory: national-ID recipients
        self._in_flight = {}             # (agency, idempotency key) -> [waiting Deferreds]
        self._random = random.Random()   # concatenation references: unpredictable enough
        # agency id → its (messages, parts) accepted counts' adds: one dict lookup per
        # accept, not two metrics.child calls (~0.3 µs); written once per reactor turn
        # (metrics.TurnCounts: two locked mmap writes were ~2 µs an accept in the split
        # daemon). Bounded as metrics.child's cache is.
        self._turn_counts = metrics.TurnCounts(clock)
        self._accepted_counters = {}

    def admit(self):
        """Overloaded while too many accepts wait for their commit. submit() checks it
        first; a channel may ask before it parses its input, to shed load cheaply."""
        if self.pending >= self.max_pending:
            raise _waiting_too_long()

    def submit(self, agency, submission, origin=None, answer=_as_is):
        """Accept `submission` (a Submission) for `agency` (a config.schema.Agency, the
        caller the channel authenticated); `origin` says who asked, for the audit (an
        HTTP client's address).

        Refusals found before the store is asked are raised. Otherwise the result is a
        Deferred firing with answer(outcome) after the commit (for a replayed
        idempotency key, after the store's lookup of it), the outcome being an Accepted
        or a Failure (a Refusal such as Overloaded or OverRate, or an unexpected error). `answer` lets a channel
        turn the outcome into its own answer inside the one callback the store's Deferred
        carries (each Deferred link costs µs per request); it may raise."""
        if self.pending >= self.max_pending:       # admit(), without a call on the hot path
            raise _waiting_too_long()
        sender = self._check_sender(agency, submission.sender, origin)
        recipients, national_ids = read_recipients(submission.recipients)
        parts = check_text_length(submission.text)
        if submission.fallback is not None:
            check_fallback(submission.fallback, self.email_fallback)
        if agency.links:
            self._check_links(agency, submission.text, origin)
        if national_ids:
            return self._resolve(agency, submission, sender, recipients, national_ids,
                                 parts, answer)
        return self._recipients_known(agency, submission, sender, recipients, parts,
                                      answer)

    def _recipients_known(self, agency, submission, sender, recipients, parts, answer):
        if getattr(agency, "opt_out", False) and submission.priority == NORMAL:
            # Citizens who sent STOP get no normal messages from this agency: the
            # opt-outs are the store's (a read, fired at once by SQLite).
            d = self.store.opted_out(agency.id, recipients)
            d.addBoth(self._opt_outs_read, agency, submission, sender, recipients, parts,
                      answer)
            return d
        return self._go(agency, submission, sender, recipients, parts, answer)

    def _go(self, agency, submission, sender, recipients, parts, answer, opted_out=()):
        if submission.idempotency_key is None:
            return self._reserve_and_store(agency, submission, sender, recipients, parts,
                                           answer, opted_out)
        return self._accept(agency, submission, sender, recipients, parts, answer,
                            opted_out)

    def _opt_outs_read(self, opted_out, agency, submission, sender, recipients, parts,
                       answer):
        try:
            if isinstance(opted_out, Failure):
                opted_out.raiseException()
            return self._go(agency, submission, sender, recipients, parts, answer,
                            frozenset(opted_out))
        except Exception:
            return answer(Failure())

    # -- recipients given by national ID (gateway.outbound.recipients) ------------------

    def use_directory(self, directory):
        """The citizen directory national-ID recipients are resolved through (None: such
        recipients are refused, there being none to ask)."""
        self.resolver = Resolver(directory) if directory is not None else None

    def _resolve(self, agency, submission, sender, numbers, national_ids, parts, answer):
        """Ask the directory once per distinct ID, then go on with the numbers it gave;
        if it cannot answer, nothing is stored (503)."""
        if self.resolver is None:
            raise no_directory()
        if self.resolving >= self.max_pending:
            raise _waiting_too_long()
        self.resolving += 1
        d = self.resolver.lookup_all(set(national_ids.values()))
        d.addBoth(self._resolved, agency, submission, sender, numbers, national_ids, parts,
                  answer)
        return d

    def _resolved(self, citizens, agency, submission, sender, numbers, national_ids, parts,
                  answer):
        self.resolving -= 1
        try:
            if isinstance(citizens, Failure):
                citizens.raiseException()
            recipients, addressing = addressed(numbers, national_ids, citizens)
            submission = replace(submission, addressing=addressing)
            return self._recipients_known(agency, submission, sender, recipients, parts,
                                          answer)
        except Exception:
            return answer(Failure())

    def _check_sender(self, agency, sender, origin):
        try:
            _kind, address = check_sender(agency, sender)
        except SenderNotAllowed as refusal:
            metrics.child(metrics.SENDER_REFUSALS, refusal.reason).inc()
            self.audit.sender_refused(agency.id, sender, refusal.reason, origin,
                                      owner=owner_of(self.agencies(), sender))
            raise SenderRefused(refusal.reason, str(refusal)) from None
        return address

    # A channel that knows its sender before the rest of its input (a broadcast's
    # query) checks it up front, audited the same way.
    check_sender = _check_sender

    def _check_links(self, agency, text, origin):
        """A government text never carries a link outside its agency's own hosts: a
        leaked key then cannot send a phishing link (gateway.text.links says what a
        link is)."""
        host = outside(text, agency.links)
        if host is None:
            return
        metrics.child(metrics.LINK_REFUSALS, agency.id).inc()
        self.audit.link_refused(agency.id, host, origin)
        raise LinkRefused(host, f"the text links to {host!r}, which is not one of your "
                                f"agency's links ({', '.join(agency.links)})")

    # Every channel with a text of its own checks it the same way (a broadcast's text
    # too: a leaked key must not reach a million phones with a phishing link).
    def check_links(self, agency, text, origin=None):
        if agency.links:
            self._check_links(agency, text, origin)

    # -- idempotency ----------------------------------------------------------------

    def _accept(self, agency, submission, sender, recipients, parts, answer, opted_out=()):
        """A submission with an idempotency key, from the lookup on; re-entered by one
        that waited for a concurrent one with the same key.  The lookup of the key's
        first answer (24 h) is the accept path's one store read, a Deferred (fired at
        once by SQLite): what follows it answers through `answer`, refusals included."""
        d = self.store.idempotent_response(
            agency.id, submission.idempotency_key, self.clock.seconds(),
            request_hash=request_hash(submission, sender, recipients))
        d.addBoth(self._looked_up, agency, submission, sender, recipients, parts, answer,
                  opted_out)
        return d

    def _looked_up(self, stored, agency, submission, sender, recipients, parts, answer,
                   opted_out=()):
        try:
            if isinstance(stored, Failure):
                if stored.check(IdempotencyMismatch):
                    raise _conflict(submission.idempotency_key)
                stored.raiseException()
            return self._after_lookup(stored, agency, submission, sender, recipients,
                                      parts, answer, opted_out)
        except Exception:
            return answer(Failure())

    def _after_lookup(self, stored, agency, submission, sender, recipients, parts, answer,
                      opted_out=()):
        if stored is not None:
            return answer(Accepted(None, stored, replayed=True))
        waiting = self._in_flight.get((agency.id, submission.idempotency_key))
        if waiting is not None:
            # The same key is being stored right now: answer as that submission is answered.
            d = defer.Deferred()
            d.addCallback(self._waited, agency, submission, sender, recipients, parts, answer,
                          opted_out)
            waiting.append(d)
            return d
        return self._reserve_and_store(agency, submission, sender, recipients, parts, answer,
                                       opted_out)

    def _waited(self, _, agency, submission, sender, recipients, parts, answer,
                opted_out=()):
        try:
            return self._accept(agency, submission, sender, recipients, parts, answer,
                                opted_out)
        except Exception:
            return answer(Failure())

    # -- limits and the store ----------------------------------------------------------

    def _reserve_and_store(self, agency, submission, sender, recipients, parts, answer,
                           opted_out=()):
        key = submission.idempotency_key
        needed = parts * len(recipients)
        if submission.addressing is not None:    # unknown citizens are sent nothing
            needed -= parts * submission.addressing.unknown
        try:
            # Unknown citizens only: nothing to send, nothing to reserve.
            reservation = self.limits.reserve(agency.id, needed) if needed > 0 else None
        except RateLimited as limit:
            raise OverRate(f"more than {agency.rate_per_s:g} parts per second; "
                           f"retry after {limit.retry_after} s",
                           retry_after=limit.retry_after) from None
        except QuotaExceeded as quota:
            raise OverQuota(f"daily quota of {quota.quota} parts reached ({quota.used} used, "
                            f"this request needs {needed}); it resets at midnight Tehran "
                            "time", retry_after=quota.retry_after) from None

        try:
            messages = self._build(agency, submission, sender, recipients, opted_out)
        except Exception:
            if reservation is not None:
                self.limits.release(reservation)
            raise
        document = accepted_document(messages)
        idempotency = ((agency.id, key, document,
                        request_hash(submission, sender, recipients))
                       if key is not None else None)

        self.pending += 1
        if key is not None:
            self._in_flight[(agency.id, key)] = []
        # store.accept returns a Deferred: no maybeDeferred, and one callback for the
        # whole outcome (each Deferred link costs µs per request).
        quota = self.limits.store_quota(reservation)
        try:
            d = self._store_accept(messages, idempotency, quota)
        except Exception:
            d = defer.fail()
        d.addBoth(self._stored, agency, messages, document, reservation, key, answer)
        return d

    def _store_accept(self, messages, idempotency, quota):
        """quota: counted in the store's transaction (several processes accept into
        one store: policy.limits.store_quota), or None."""
        if messages[0].fallback is not None and self.email_fallback is not None:
            # The email addresses are found first (the directory's answers, fired at
            # once by the file), then stored with the messages in one transaction.
            return self.email_fallback.find_addresses(messages).addCallback(
                lambda _: self._accept_now(messages, idempotency, quota))
        return self._accept_now(messages, idempotency, quota)     # no closure made

    def _accept_now(self, messages, idempotency, quota):
        if quota is None:
            return self.store.accept(messages, idempotency=idempotency)
        return self.store.accept(messages, idempotency=idempotency, quota=quota)

    def _build(self, agency, submission, sender, recipients, opted_out=(),
               fingerprinted=True):
        now = self.clock.seconds()
        text = submission.text
        # One fingerprint per submission (~9 µs for a 2-part Persian text), one row per
        # recipient in the same transaction as the messages.
        digest = (self.fingerprint.of(text)
                  if fingerprinted and self.fingerprint is not None else None)
        try:
            shared = encode_for_submit(text, self._random.getrandbits(8))
        except TextTooLong as error:
            raise TooManyParts(str(error)) from None
        messages = []
        addressing = submission.addressing
        # Looked up once, not per recipient (a request may name 1,000).
        new_id, route_of, agency_id = self.store.new_message_id, self.route_of, agency.id
        priority, reference = submission.priority, submission.reference
        validity_s, receipt, fallback = (submission.validity_s, submission.receipt,
                                         submission.fallback)
        for recipient in recipients:
            # Parts of different messages to one handset must not share a reference.
            encoded = (shared if len(shared.parts) == 1 or not messages
                       else encode_for_submit(text, self._random.getrandbits(8)))
            opted = recipient in opted_out
            messages.append(NewMessage(       # in _POSITIONAL's order
                new_id(), agency_id, sender, recipient, text, priority, reference,
                validity_s, receipt, encoded.data_coding, encoded.esm_class,
                list(encoded.parts), now, route_of(recipient),
                # An opted-out citizen is sent nothing: no fingerprint to confirm.
                None if opted else digest,             # fingerprint
                OPTED_OUT if opted else None,          # error
                fallback=fallback))
            if addressing is not None:
                addressing.address(messages[-1], len(messages) - 1)
        return messages

    def _stored(self, result, agency, messages, document, reservation, key, answer):
        """The store's outcome → the caller's answer; then the submission is settled."""
        try:
            if isinstance(result, Failure):
                outcome = self._not_stored(result, reservation)
            else:
                outcome = self._committed(agency, messages, document)
        except Exception:
            outcome = Failure()
        self._settled(agency.id, key)
        return answer(outcome)

    def _committed(self, agency, messages, document):
        # Single-recipient requests are the common case: no generator for them.
        parts = (len(messages[0].parts) if len(messages) == 1
                 else sum(len(m.parts) for m in messages))
        counters = self._accepted_counters.get(agency.id)
        if counters is None:
            counters = self._counters_of(agency.id)
        counters[0](len(messages))
        counters[1](parts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("accepted %d message(s), %d part(s) for %s, first to %s", len(messages),
                      parts, agency.id, mask_msisdn(messages[0].recipient))
            if agency.id in self.debug_text_agencies:
                for m in messages:
                    log.debug("message %s to %s: text %r", m.id, mask_msisdn(m.recipient),
                              m.text, extra={"event": "message_text", "agency": agency.id})
        if self.on_accepted is not None:
            try:
                self.on_accepted({messages[0].route} if len(messages) == 1
                                 else {m.route for m in messages})
            except Exception:
                log.exception("dispatcher wake-up failed (messages are stored)")
        return Accepted(messages, document)

    def _counters_of(self, agency_id):
        turn = self._turn_counts
        counters = (turn.adder(metrics.child(metrics.MESSAGES_ACCEPTED, agency_id)),
                    turn.adder(metrics.child(metrics.PARTS_ACCEPTED, agency_id)))
        if len(self._accepted_counters) < _MAX_COUNTED_AGENCIES:
            self._accepted_counters[agency_id] = counters
        return counters

    def _not_stored(self, failure, reservation):
        if reservation is not None:
            self.limits.release(reservation)
        if failure.check(DuplicateIdempotencyKey):
            return Accepted(None, failure.value.response, replayed=True)
        if failure.check(IdempotencyMismatch):
            raise _conflict(failure.value.key)
        if failure.check(QuotaRefused):
            refused = failure.value
            self.limits.refused_by_store(reservation, refused.used)
            raise OverQuota(f"daily quota of {refused.quota} parts reached ({refused.used} "
                            f"used, this request needs {reservation.parts}); it resets at "
                            "midnight Tehran time",
                            retry_after=self.limits.seconds_to_midnight())
        log.error("store refused an accept: %s", failure.getErrorMessage())
        raise Overloaded("messages could not be stored; retry shortly", retry_after=1)

    # -- the platform's own messages (gateway.outbound.platform) ------------------------

    def send_platform(self, kind, recipient, text):
        """A message from 4040 to one citizen (kind: one of platform.KINDS), stored as
        every message is, without agency limits or fingerprint; audited and counted.
        Refusals (load, a recipient or text that cannot be sent) are raised; otherwise
        Deferred[NewMessage] once stored (failing Overloaded if it could not be)."""
        if self.pending >= self.max_pending:
            raise _waiting_too_long()
        recipients = normalize_recipients([recipient])
        check_text_length(text)
        submission = Submission(
            sender=platform.ROOT_NUMBER, recipients=recipients, text=text,
            priority=platform.PRIORITY, reference=kind, idempotency_key=None,
            validity_s=platform.VALIDITY_S, receipt=True)
        [message] = self._build(platform.PLATFORM, submission, platform.ROOT_NUMBER,
                                recipients, fingerprinted=False)
        self.pending += 1
        try:
            d = self.store.accept([message])
        except Exception:
            d = defer.fail()
        d.addBoth(self._platform_stored, kind, message)
        return d

    def _platform_stored(self, result, kind, message):
        self.pending -= 1
        if isinstance(result, Failure):
            log.error("store refused a platform message: %s", result.getErrorMessage())
            raise Overloaded("the message could not be stored; retry shortly",
                             retry_after=1)
        metrics.child(metrics.PLATFORM_MESSAGES, kind).inc()
        self.audit.platform_message(kind, message.recipient, message.id)
        if self.on_accepted is not None:
            try:
                self.on_accepted({message.route})
            except Exception:
                log.exception("dispatcher wake-up failed (the message is stored)")
        return message

    def _settled(self, agency_id, key):
        self.pending -= 1
        if key is not None:
            for waiter in self._in_flight.pop((agency_id, key), ()):
                waiter.callback(None)
