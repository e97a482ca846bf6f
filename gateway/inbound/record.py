"""What came in: one deliver_sm / data_sm with the operator and the session it came on."""

from typing import Any, NamedTuple

from gateway.smpp.pdu import PDU


class Inbound(NamedTuple):
    """One inbound PDU as every classifier sees it (a NamedTuple: cheap to build, one
    per deliver_sm on the receipts' hot path)."""
    operator: str            # the operator's name (its OperatorPool)
    session: Any             # the ESMEProtocol it came in on: an answer that must go
                             # back on the same bind is OperatorPool.submit(pdu, via=session)
    pdu: PDU
    received_at: float       # from the injected clock


class MobileOriginated(NamedTuple):
    """A whole citizen's message (its parts reassembled and decoded), as the entries
    after the receipts' see it: replies, 4040 checks, keywords, unrouted."""
    operator: str
    session: Any             # the session of its last part (answers on the same bind)
    citizen: str             # source_addr normalised ("98912..."), as numbers.normalise
    destination: str         # destination_addr as sent ("40401234", "4040")
    text: str
    received_at: float       # when its first part came
    partial: bool = False    # released with parts missing (after the reassembly timeout)
    source_key: str | None = None   # what makes a redelivery of it the same message
