"""Inbound deliver_sm / data_sm from an operator: receipts now, MO kept for the inbox.

Each handler returns a Deferred of the command_status to answer with; the session sends
the deliver_sm_resp only when it fires, i.e. after the store has committed what came in.
"""

import logging

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.receipt import parse_receipt

log = logging.getLogger("payam.deliver")


class InboundRouter:
    def __init__(self, store):
        self.store = store

    def received(self, operator, pdu):
        """The inbound_handler an OperatorPool calls for each deliver_sm / data_sm."""
        receipt = parse_receipt(pdu)
        if receipt is not None:
            return self._receipt(operator, receipt)
        metrics.INBOUND.labels(operator, "mo").inc()
        # Citizens' replies and USSD are later issues; until then the raw PDU is kept
        # durably so nothing acknowledged to the operator is lost.
        d = self.store.store_inbound(operator, pdu.fields, pdu.tlvs)
        d.addCallback(lambda _: c.ESME_ROK)
        return d

    def _receipt(self, operator, receipt):
        d = self.store.apply_receipt(operator, receipt.smsc_id, receipt.state, receipt.error)

        def applied(matched):
            metrics.RECEIPTS.labels(operator, receipt.state, "yes" if matched else "later").inc()
            return c.ESME_ROK

        d.addCallback(applied)
        return d
