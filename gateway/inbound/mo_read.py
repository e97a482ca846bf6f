"""Reading a citizen's SMS PDU (deliver_sm or data_sm) into a part to keep: who sent it,
to which number, its payload after any UDH and which set it belongs to.

The payload is kept undecoded: a UCS2 surrogate pair may straddle two parts, so parts
are joined before decoding (`decode_set`). A PDU that cannot be read (a UDH longer
than the message, a part number outside its count, an oversized part) raises
Unreadable: the caller keeps it raw rather than losing it.
"""

import hashlib

from gateway.model import MoPart
from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.smpp import constants as c
from gateway.text.decode import ConcatInfo, decode_payload, split_udh

MAX_PARTS = 255                  # the count is one octet, in the UDH and in sar_*
MAX_PART_OCTETS = 1024           # a concatenated part: short_message holds 254
MAX_SINGLE_OCTETS = 65535        # a whole message in message_payload
MISSING_PART = "…"               # where a part never came, in a partial message


class Unreadable(ValueError):
    """Not a readable citizen's SMS: kept raw (store_inbound)."""


def citizen_of(source_addr):
    """The citizen's number in international form when it is an Iranian mobile, else
    the address as sent (an alphanumeric or foreign sender: kept, never answered)."""
    try:
        return normalize_msisdn(source_addr)
    except (InvalidNumber, TypeError, ValueError):
        return str(source_addr)


def _payload(pdu):
    payload = pdu.tlvs.get(c.TLV_MESSAGE_PAYLOAD)
    if pdu.command_id == c.DATA_SM or (payload is not None
                                       and not pdu.fields.get("short_message")):
        return bytes(payload or b"")
    return bytes(pdu.fields.get("short_message") or b"")


def _sar(pdu):
    """ConcatInfo from the sar_* TLVs, None when absent; Unreadable when inconsistent."""
    tags = (c.TLV_SAR_MSG_REF_NUM, c.TLV_SAR_TOTAL_SEGMENTS, c.TLV_SAR_SEGMENT_SEQNUM)
    values = [pdu.tlvs.get(tag) for tag in tags]
    if all(value is None for value in values):
        return None
    if any(value is None for value in values) or [len(v) for v in values] != [2, 1, 1]:
        raise Unreadable("sar_* TLVs incomplete or of the wrong size")
    ref, total, seq = int.from_bytes(values[0], "big"), values[1][0], values[2][0]
    if total == 0 or not 1 <= seq <= total:
        raise Unreadable(f"sar segment {seq} of {total}")
    return ConcatInfo(ref, total, seq)


def read_part(inbound):
    """The MoPart of one inbound PDU (deliver_sm or data_sm)."""
    pdu = inbound.pdu
    fields = pdu.fields
    data_coding = fields.get("data_coding", 0) or 0
    udhi = bool((fields.get("esm_class", 0) or 0) & c.ESM_CLASS_UDHI)
    payload = _payload(pdu)
    try:
        concat, body = split_udh(payload, udhi)
    except ValueError as error:
        raise Unreadable(str(error)) from None
    kind = "u"
    if concat is None:
        concat, kind = _sar(pdu), "s"
    elif udhi and payload[1:2] == b"\x08":
        kind = "w"                                 # 16-bit reference
    source = fields.get("source_addr", "")
    destination = fields.get("destination_addr", "")
    citizen = citizen_of(source)
    if concat is None or concat.total == 1:
        if len(body) > MAX_SINGLE_OCTETS:
            raise Unreadable(f"message of {len(body)} octets")
        # A set of one, known by its content: a redelivery of it is the same set.
        digest = hashlib.blake2b(bytes((data_coding,)) + body, digest_size=12).hexdigest()
        set_key = f"{inbound.operator}|{citizen}|{destination}|1|{digest}"
        seq, total = 1, 1
    else:
        if len(body) > MAX_PART_OCTETS:
            raise Unreadable(f"part of {len(body)} octets")
        set_key = (f"{inbound.operator}|{citizen}|{destination}|{concat.total}"
                   f"|{kind}{concat.ref}")
        seq, total = concat.seq, concat.total
    return MoPart(set_key, seq, total, inbound.operator, citizen, destination, data_coding,
                  body, inbound.received_at)


def decode_set(parts, total):
    """The text of a set's parts (in seq order): runs of parts in one data_coding are
    joined before decoding; a missing part shows as MISSING_PART."""
    pieces, run, run_coding, expected = [], b"", None, 1
    for part in parts:
        gap = part.seq != expected
        if run and (gap or part.data_coding != run_coding):
            pieces.append(decode_payload(run, run_coding))
            run = b""
        if gap:
            pieces.append(MISSING_PART)
        run += part.body
        run_coding = part.data_coding
        expected = part.seq + 1
    if run:
        pieces.append(decode_payload(run, run_coding))
    if expected <= total:
        pieces.append(MISSING_PART)
    return "".join(pieces)
