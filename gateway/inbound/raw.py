"""Keeping an inbound PDU as it came: the store's raw inbound rows.

What no classifier handles yet (citizens' replies, USSD, 4040 checks, unrouted MO) is kept
durably this way, so nothing acknowledged to the operator is lost.
"""

from gateway import metrics
from gateway.smpp import constants as c


def keep_raw(store, inbound):
    """Store the PDU's fields and TLVs; Deferred[ESME_ROK] once committed."""
    metrics.child(metrics.INBOUND, inbound.operator, "mo").inc()
    pdu = inbound.pdu
    d = store.store_inbound(inbound.operator, pdu.fields, pdu.tlvs)
    d.addCallback(lambda _: c.ESME_ROK)
    return d
