"""The 4040 desk: a citizen's text to the root number 4040 is a question — did an agency
send me this? — answered from 4040 through the accept path.

`AuthenticityDesk.handle(mo)` takes a whole MobileOriginated (gateway/inbound/record.py)
and returns a Deferred that fires once the answer is stored (the deliver_sm is then
acknowledged; if it cannot be stored the Deferred fails and the operator redelivers).
Steps: the citizen's hourly allowance (limiter.py); the candidate texts
(candidates.py), fingerprinted with the store's key; one lookup (store.find_sent: a
primary-key seek per candidate, then one of the text alone); the answer (answers.py)
sent as a platform message (gateway/outbound/platform.py). Nothing of the question is
kept: not its text, and nothing in any agency's inbox; the answer is a message like
any other (kept for retention.messages), counted in payam_authenticity_checks_total
by verdict.
"""

import logging
from collections import OrderedDict

from twisted.internet import defer

from gateway import metrics
from gateway.authenticity import answers
from gateway.authenticity.candidates import candidate_texts
from gateway.authenticity.limiter import SILENT, TELL, CheckLimiter
from gateway.numbers import mask_msisdn
from gateway.outbound.errors import InvalidRecipients, TooManyParts, UnsendableText

log = logging.getLogger("payam.authenticity")

DAY_S = 86400.0
KIND = "authenticity"
REMEMBERED_SOURCES = 10_000      # MO source keys answered lately (a redelivery is not asked twice)


class AuthenticityDesk:
    def __init__(self, store, outbound, fingerprint, clock, *, agencies=tuple,
                 retention_days=30.0, checks_per_hour=10, limiter=None):
        """store: find_sent; outbound: the accept path (send_platform); fingerprint: the
        gateway.text.fingerprint.TextFingerprint agency texts were stored with;
        agencies(): the agencies configured now (their names); retention_days: how far
        back a text is looked for (the fingerprints are kept that long)."""
        self.store = store
        self.outbound = outbound
        self.fingerprint = fingerprint
        self.clock = clock
        self.agencies = agencies
        self.retention_days = retention_days
        self.limiter = limiter or CheckLimiter(checks_per_hour, clock)
        self._answered = OrderedDict()

    def handle(self, mo):
        """Answer `mo` → Deferred firing (None) once the answer is stored."""
        if mo.source_key is not None and mo.source_key in self._answered:
            return defer.succeed(None)
        allowance = self.limiter.take(mo.citizen)
        if allowance == SILENT:
            metrics.child(metrics.AUTHENTICITY_CHECKS, "silenced").inc()
            return defer.succeed(None)
        if allowance == TELL:
            return self._answer(mo, "over_limit", answers.over_limit(self.limiter.per_hour))
        if mo.partial:
            # Parts lost on the way are no sign of a forgery: ask for the whole text.
            return self._answer(mo, "incomplete", answers.incomplete())
        normals = candidate_texts(mo.text)
        if not normals:
            return self._answer(mo, "empty", answers.how_to())
        digests = [self.fingerprint.of_normal(normal) for normal in normals]
        since = self.clock.seconds() - self.retention_days * DAY_S
        d = self.store.find_sent(digests, mo.citizen, since)
        d.addCallback(self._found, mo)
        return d

    def _found(self, match, mo):
        if match is None:
            return self._answer(mo, "not_sent", answers.not_sent(self.retention_days))
        name = self._name_of(match.agency)
        if match.to_citizen:
            return self._answer(mo, "confirmed", answers.confirmed(name, match.sent_at))
        return self._answer(mo, "not_to_you", answers.not_to_you(name, match.sent_at))

    def _name_of(self, agency_id):
        for agency in self.agencies():
            if agency.id == agency_id:
                return agency.name
        return agency_id          # no longer configured: its id is still a true answer

    def _answer(self, mo, verdict, text):
        metrics.child(metrics.AUTHENTICITY_CHECKS, verdict).inc()
        try:
            d = self.outbound.send_platform(KIND, mo.citizen, text)
        except (InvalidRecipients, TooManyParts, UnsendableText) as refusal:
            # A source we cannot answer (not a mobile number): nothing to send, nothing
            # to keep; the operator is told we took it.
            log.warning("4040 check from %s cannot be answered: %s",
                        mask_msisdn(mo.citizen), refusal.message)
            return defer.succeed(None)
        d.addCallback(self._sent, mo, verdict)
        return d

    def _sent(self, message, mo, verdict):
        if mo.source_key is not None:
            self._answered[mo.source_key] = None
            if len(self._answered) > REMEMBERED_SOURCES:
                self._answered.popitem(last=False)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("4040 check from %s: %s (answer %s)", mask_msisdn(mo.citizen),
                      verdict, message.id)
        return None
