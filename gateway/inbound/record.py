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
