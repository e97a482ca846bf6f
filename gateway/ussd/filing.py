"""A file state: the values a citizen entered go into the agency's inbox (channel "ussd",
the same store and webhook as SMS replies) under a tracking number the page shows, and,
when the state says `sms:`, the same number by SMS from the agency's 4040 number: the
USSD page vanishes, the SMS stays.

The tracking number is ten digits (a citizen types it back on a keypad): random, drawn
before filing so that the filed text carries it; the inbox entry is keyed by the dialog
(source_key), so a retried filing is one entry.
"""

import json
import logging
import os
import random

from twisted.python.failure import Failure

from gateway.model import InboxEntry
from gateway.numbers import mask_msisdn
from gateway.outbound.submission import Submission
from gateway.ussd.engine import render

log = logging.getLogger("payam.ussd.filing")

SMS_VALIDITY_S = 86400


class Filing:
    def __init__(self, inbox, outbound, clock, agencies=()):
        """inbox: gateway.inbox.filing.Inbox; outbound: the accept path (None: no SMS);
        agencies: the Agency records (their 4040 numbers)."""
        self.inbox = inbox
        self.outbound = outbound
        self.clock = clock
        self.agencies = {agency.id: agency for agency in agencies}
        self._random = random.Random(os.urandom(16))

    def update_agencies(self, agencies):
        self.agencies = {agency.id: agency for agency in agencies}

    def tracking_number(self):
        return str(self._random.randrange(10**9, 10**10))

    def file(self, state, dialog, *, dialog_id, msisdn, operator):
        """→ Deferred[tracking number] once the inbox entry is durable."""
        agency = self.agencies.get(dialog.menu.agency)
        number = agency.numbers[0] if agency is not None and agency.numbers else ""
        tracking = self.tracking_number()
        names = state.fields or tuple(dialog.values)
        document = {"tracking": tracking, "code": dialog.menu.code, "state": state.name,
                    "values": {name: dialog.values.get(name) for name in names
                               if name != "tracking"}}
        entry = InboxEntry(
            agency=dialog.menu.agency, number=number, citizen=msisdn,
            text=json.dumps(document, ensure_ascii=False), channel="ussd",
            received_at=self.clock.seconds(), operator=operator,
            source_key=f"ussd:{dialog_id}:{state.name}")
        d = self.inbox.file(entry)

        def filed(message):
            kept = json.loads(message.text).get("tracking", tracking)
            if state.sms is not None:
                self._send_sms(agency, number, msisdn, state, dialog, kept)
            return kept
        d.addCallback(filed)
        return d

    def _send_sms(self, agency, number, msisdn, state, dialog, tracking):
        if self.outbound is None or agency is None or not number:
            log.warning("USSD filing for %s: no SMS (no accept path or 4040 number)",
                        mask_msisdn(msisdn))
            return
        values = dict(dialog.values, tracking=tracking)
        submission = Submission(
            sender=number, recipients=[msisdn],
            text=render(state.sms.get(dialog.language), values), priority=0,
            reference=f"ussd:{tracking}", idempotency_key=None, validity_s=SMS_VALIDITY_S,
            receipt=True)
        def outcome(result):
            if isinstance(result, Failure):
                log.warning("USSD filing's SMS to %s not accepted: %s", mask_msisdn(msisdn),
                            result.getErrorMessage())
            return result
        try:
            d = self.outbound.submit(agency, submission, origin="ussd", answer=outcome)
        except Exception as refusal:          # a Refusal: over rate, overloaded, ...
            log.warning("USSD filing's SMS to %s refused: %s", mask_msisdn(msisdn),
                        refusal)
            return
        d.addErrback(lambda failure: outcome(failure) and None)
