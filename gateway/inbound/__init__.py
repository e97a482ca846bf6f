"""Inbound deliver_sm / data_sm from the operators' binds: what each one is and who takes
it (`classify.py`), receipts and their batched store writes (`receipts.py`), raw keeping
of the rest (`raw.py`), which agency owns a number (`owners.py`), and each operator's
USSD fields read into plain records and answers' TLVs built (`ussd_fields.py`).

Flow: SMSC → session (gateway/smpp) → InboundClassifier.received → store.
"""

from gateway.inbound.classify import InboundClassifier
from gateway.inbound.record import Inbound

__all__ = ["Inbound", "InboundClassifier"]
