"""Inbound deliver_sm / data_sm from an operator: receipts now, MO kept for the inbox.

Each handler returns a Deferred of the command_status to answer with; the session sends
the deliver_sm_resp only when it fires, i.e. after the store has committed what came in.
"""

import logging

from twisted.internet.defer import Deferred

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.receipt import parse_receipt

log = logging.getLogger("payam.deliver")

RECEIPT_GATHER_S = 0.002   # receipts arriving within this window share one store write


class InboundRouter:
    def __init__(self, store, clock):
        self.store = store
        self.clock = clock
        self._receipts = []       # [(operator, smsc_id, state, error, deferred)]
        self._flush_call = None

    def received(self, operator, pdu):
        """The inbound_handler an OperatorPool calls for each deliver_sm / data_sm."""
        receipt = parse_receipt(pdu)
        if receipt is not None:
            return self._receipt(operator, receipt)
        metrics.child(metrics.INBOUND, operator, "mo").inc()
        # Citizens' replies and USSD are later issues; until then the raw PDU is kept
        # durably so nothing acknowledged to the operator is lost.
        d = self.store.store_inbound(operator, pdu.fields, pdu.tlvs)
        d.addCallback(lambda _: c.ESME_ROK)
        return d

    def _receipt(self, operator, receipt):
        d = Deferred()
        self._receipts.append((operator, receipt.smsc_id, receipt.state, receipt.error, d))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(RECEIPT_GATHER_S, self._flush)
        return d

    def _flush(self):
        self._flush_call = None
        batch, self._receipts = self._receipts, []
        d = self.store.apply_receipts([item[:4] for item in batch])

        def applied(matched):
            # Metrics counted per label set and added once per batch (hot path).
            counts = {}
            for (operator, _id, state, _error, waiting), hit in zip(batch, matched):
                labels = (operator, state, "yes" if hit else "later")
                counts[labels] = counts.get(labels, 0) + 1
                waiting.callback(c.ESME_ROK)
            for labels, n in counts.items():
                metrics.child(metrics.RECEIPTS, *labels).inc(n)

        def failed(failure):
            # Not stored: the session answers a temporary error and the SMSC retries.
            log.error("could not store %d receipts: %s", len(batch), failure.getErrorMessage())
            for *_, waiting in batch:
                waiting.errback(failure)

        d.addCallbacks(applied, failed)
