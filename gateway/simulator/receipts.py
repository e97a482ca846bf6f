"""Delivery receipts the simulated SMSC sends back: the receipt text and its deliver_sm."""

import time

from gateway.smpp import constants
from gateway.smpp.pdu import PDU
from gateway.simulator.behaviour import RECEIPT_STATES
from gateway.text import decode_short_message

RECEIPT_TEXT_CHARS = 20     # how much of the original text a receipt quotes


class PendingReceipt:
    """A receipt owed for one accepted submit, until an ESME acknowledges it."""

    __slots__ = ("due", "system_id", "origin", "receipt_id", "submitted_at", "source_addr",
                 "source_addr_ton", "source_addr_npi", "destination_addr", "dest_addr_ton",
                 "dest_addr_npi", "payload", "data_coding", "esm_class", "stat", "attempts")

    def __init__(self, due, system_id, receipt_id, submitted_at, fields, payload, stat,
                 origin=None):
        self.due = due
        self.system_id = system_id
        # The session the submit came on: a transceiver gets its receipts back on it, as
        # an operator's SMSC answers on that operator's binds (several "operators" of
        # one simulator may share a system_id).
        self.origin = origin
        self.receipt_id = receipt_id
        self.submitted_at = submitted_at
        self.source_addr = fields.get("source_addr", "")
        self.source_addr_ton = fields.get("source_addr_ton", 0)
        self.source_addr_npi = fields.get("source_addr_npi", 0)
        self.destination_addr = fields.get("destination_addr", "")
        self.dest_addr_ton = fields.get("dest_addr_ton", 0)
        self.dest_addr_npi = fields.get("dest_addr_npi", 0)
        self.payload = payload
        self.data_coding = fields.get("data_coding", 0)
        self.esm_class = fields.get("esm_class", 0)
        self.stat = stat
        self.attempts = 0


def smpp_date(timestamp) -> str:
    """YYMMDDhhmm in UTC, as receipt texts carry dates."""
    return time.strftime("%y%m%d%H%M", time.gmtime(timestamp))


def quoted_text(payload, data_coding, esm_class) -> str:
    """The first characters of the original message, reduced to printable ASCII: the
    receipt text itself goes out in the SMSC default alphabet."""
    try:
        text = decode_short_message(payload, data_coding, bool(esm_class & constants.ESM_CLASS_UDHI)).text
    except ValueError:
        return ""
    quoted = text[:RECEIPT_TEXT_CHARS]
    return "".join(c if " " <= c <= "~" else "?" for c in quoted)


def receipt_text(receipt_id, submitted_at, done_at, stat, quoted) -> str:
    err = RECEIPT_STATES[stat][1]
    delivered = "001" if stat == "DELIVRD" else "000"
    return (f"id:{receipt_id} sub:001 dlvrd:{delivered} submit date:{smpp_date(submitted_at)} "
            f"done date:{smpp_date(done_at)} stat:{stat} err:{err} text:{quoted}")


def build_receipt(receipt: PendingReceipt, done_at, mode) -> PDU:
    """The deliver_sm for a receipt: from the citizen back to the original sender, with
    the text and/or the receipted_message_id + message_state TLVs as `mode` says."""
    if mode in ("both", "text"):
        short_message = receipt_text(
            receipt.receipt_id, receipt.submitted_at, done_at, receipt.stat,
            quoted_text(receipt.payload, receipt.data_coding, receipt.esm_class)
        ).encode("ascii")
    else:
        short_message = b""
    pdu = PDU(constants.DELIVER_SM, fields={
        "source_addr_ton": receipt.dest_addr_ton,
        "source_addr_npi": receipt.dest_addr_npi,
        "source_addr": receipt.destination_addr,
        "dest_addr_ton": receipt.source_addr_ton,
        "dest_addr_npi": receipt.source_addr_npi,
        "destination_addr": receipt.source_addr,
        "esm_class": constants.ESM_CLASS_DELIVERY_RECEIPT,
        "data_coding": constants.DATA_CODING_DEFAULT,
        "short_message": short_message,
    })
    if mode in ("both", "tlv"):
        pdu.set_tlv(constants.TLV_RECEIPTED_MESSAGE_ID, receipt.receipt_id)
        pdu.set_tlv(constants.TLV_MESSAGE_STATE, RECEIPT_STATES[receipt.stat][0])
    return pdu
