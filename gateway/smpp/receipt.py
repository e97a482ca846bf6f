"""Delivery receipts: recognising and parsing them (their ids: gateway/receipt_ids.py).

A receipt is a deliver_sm (or data_sm) whose esm_class says so. Its message id comes
from the receipted_message_id TLV when present, else from the `id:` of the de-facto
standard text (SMPP 3.4 appendix B):

    id:X sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 text:...

SMSCs vary the case, the spacing and the key spelling (`submit_date`), drop fields, or
put the text in message_payload: parsing is tolerant of all of that. The message_state
TLV, when present, wins over the text's `stat:`.
"""

import logging
import re
from typing import NamedTuple

from gateway import model
from gateway.smpp import constants as c

log = logging.getLogger("payam.smpp.receipt")

# Final states are what the store records; the others only say the SMSC still tries.
DELIVERED = "delivered"
EXPIRED = "expired"
FAILED = "failed"
ACCEPTED = "accepted"
ENROUTE = "enroute"
UNKNOWN = "unknown"
FINAL_STATES = frozenset(model.FINAL_STATES)     # the store's final states, one list

# esm_class message types that carry a receipt: the SMSC's delivery receipt, the SME's
# delivery acknowledgement, and an intermediate delivery notification (non-final).
RECEIPT_MESSAGE_TYPES = frozenset({
    c.ESM_CLASS_DELIVERY_RECEIPT, c.ESM_CLASS_SME_DELIVERY_ACK,
    c.ESM_CLASS_INTERMEDIATE_NOTIFICATION,
})

# The text's stat: → our state. Full spellings seen in the wild map too.
_STAT_STATES = {
    "DELIVRD": DELIVERED, "DELIVERED": DELIVERED,
    "EXPIRED": EXPIRED,
    "DELETED": FAILED,
    "UNDELIV": FAILED, "UNDELIVERABLE": FAILED,
    "REJECTD": FAILED, "REJECTED": FAILED,
    "FAILED": FAILED,
    "ACCEPTD": ACCEPTED, "ACCEPTED": ACCEPTED,
    "ENROUTE": ENROUTE,
    "UNKNOWN": UNKNOWN,
}

# message_state TLV value → (our state, the stat word the text would carry).
_MESSAGE_STATES = {
    c.MESSAGE_STATE_ENROUTE: (ENROUTE, "ENROUTE"),
    c.MESSAGE_STATE_DELIVERED: (DELIVERED, "DELIVRD"),
    c.MESSAGE_STATE_EXPIRED: (EXPIRED, "EXPIRED"),
    c.MESSAGE_STATE_DELETED: (FAILED, "DELETED"),
    c.MESSAGE_STATE_UNDELIVERABLE: (FAILED, "UNDELIV"),
    c.MESSAGE_STATE_ACCEPTED: (ACCEPTED, "ACCEPTD"),
    c.MESSAGE_STATE_UNKNOWN: (UNKNOWN, "UNKNOWN"),
    c.MESSAGE_STATE_REJECTED: (FAILED, "REJECTD"),
}

# One key of the receipt text, e.g. "id:", "Submit Date :", "done_date:".
_KEY = re.compile(r"(?<![0-9A-Za-z_])(id|sub|dlvrd|submit[ _]*date|done[ _]*date|stat|err)"
                  r"\s*:", re.IGNORECASE)
_KEY_NAMES = {"id": "id", "sub": "sub", "dlvrd": "dlvrd", "submitdate": "submit date",
              "donedate": "done date", "stat": "stat", "err": "err"}
_TEXT_KEY = re.compile(r"(?<![0-9A-Za-z_])text\s*:", re.IGNORECASE)


class Receipt(NamedTuple):
    """A parsed delivery receipt (a NamedTuple: immutable and cheap to build, one per
    receipt on the hot path)."""
    smsc_id: str                 # the SMSC's message id, as the SMSC wrote it
    state: str                   # delivered | expired | failed | accepted | enroute | unknown
    stat: str                    # the SMSC's word: DELIVRD, UNDELIV, ... ("" if none)
    error: str | None            # for failed/expired: "UNDELIV err:069" and the like
    submit_date: str | None      # as written, YYMMDDhhmm[ss], SMSC-local time
    done_date: str | None

    @property
    def final(self):
        return self.state in FINAL_STATES


_new_tuple = tuple.__new__


def is_receipt(pdu):
    """True for a deliver_sm / data_sm whose esm_class marks a receipt."""
    if pdu.command_id not in (c.DELIVER_SM, c.DATA_SM):
        return False
    message_type = pdu.fields.get("esm_class", 0) & c.ESM_CLASS_MESSAGE_TYPE_MASK
    return message_type in RECEIPT_MESSAGE_TYPES


def parse_receipt(pdu):
    """The Receipt in a deliver_sm / data_sm, or None when the PDU is not a receipt.

    A PDU marked as a receipt that carries no message id anywhere is logged and also
    answers None: the caller then keeps it as an ordinary inbound PDU, so nothing the
    SMSC sent is lost."""
    if not is_receipt(pdu):
        return None
    return read_receipt(pdu)


def read_receipt(pdu):
    """parse_receipt for a PDU is_receipt() already said is one (the inbound
    classifier asks that first)."""
    smsc_id = (pdu.get_tlv(c.TLV_RECEIPTED_MESSAGE_ID) or "").strip()
    message_state = pdu.get_tlv(c.TLV_MESSAGE_STATE)
    if smsc_id and message_state == c.MESSAGE_STATE_DELIVERED:
        # The common case says all in its TLVs: the text is not parsed (hot path; built
        # as the tuple it is, without the NamedTuple's own __new__ call).
        return _new_tuple(Receipt, (smsc_id, DELIVERED, "DELIVRD", None, None, None))
    keys = _text_fields(_receipt_text(pdu))
    if not smsc_id:
        smsc_id = keys.get("id", "")
    if not smsc_id:
        log.warning("receipt (esm_class 0x%02X) without receipted_message_id or id:",
                    pdu.fields.get("esm_class", 0))
        return None

    stat = keys.get("stat", "").upper()
    state = _STAT_STATES.get(stat, UNKNOWN)
    if message_state in _MESSAGE_STATES:
        state, tlv_stat = _MESSAGE_STATES[message_state]
        stat = stat or tlv_stat
    elif message_state is not None:
        log.warning("receipt for %s: unknown message_state %d", smsc_id, message_state)

    return Receipt(
        smsc_id=smsc_id, state=state, stat=stat,
        error=_error(state, stat, keys.get("err"), pdu.get_tlv(c.TLV_NETWORK_ERROR_CODE)),
        submit_date=keys.get("submit date"), done_date=keys.get("done date"))


def _receipt_text(pdu):
    raw = pdu.fields.get("short_message") or pdu.get_tlv(c.TLV_MESSAGE_PAYLOAD) or b""
    if pdu.fields.get("data_coding") == c.DATA_CODING_UCS2:
        # A few SMSCs send the receipt text in UCS2.
        return raw.decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


def _text_fields(text):
    """{"id": ..., "stat": ..., "submit date": ...} from a receipt text; keys it lacks
    are absent. Everything after "text:" is the message's beginning, never parsed."""
    cut = _TEXT_KEY.search(text)
    if cut is not None:
        text = text[:cut.start()]
    found = {}
    matches = list(_KEY.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        words = text[match.end():end].split()
        key = _KEY_NAMES.get(match.group(1).lower().replace(" ", "").replace("_", ""))
        if words and key not in found:
            found[key] = words[0].strip("\0")
    return found


def _error(state, stat, err, network_error_code):
    """A short reason for a failed/expired receipt; None for the others."""
    if state not in (FAILED, EXPIRED):
        return None
    parts = [stat] if stat else []
    if err and err.strip("0"):
        parts.append(f"err:{err}")
    if network_error_code:
        parts.append(f"network_error:{network_error_code.hex()}")
    return " ".join(parts) or state
