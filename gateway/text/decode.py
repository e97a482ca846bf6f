"""Inbound text: split off the UDH, read concatenation info, decode per data_coding.

Used for citizens' replies (MO deliver_sm) and USSD. Decoding is tolerant, since the
text comes from handsets and SMSCs we do not control: undecodable bytes become
replacement characters rather than errors. A UDH that claims more octets than the
message holds is a broken PDU, though, and raises ValueError.
"""

from dataclasses import dataclass

from gateway.text.gsm import gsm_decode

IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    ref: int        # 0..255 (8-bit IE) or 0..65535 (16-bit IE)
    total: int      # parts in the whole message, 1..255
    seq: int        # this part, 1..total


@dataclass(frozen=True, slots=True)
class DecodedText:
    text: str
    concat: "ConcatInfo | None"


def udh_length(data: bytes) -> int:
    """Octets taken by the UDH including its own length octet. ValueError when the
    header is missing or claims more octets than the message holds."""
    if not data:
        raise ValueError("UDHI is set but the short message is empty")
    length = 1 + data[0]
    if length > len(data):
        raise ValueError(
            f"UDH claims {data[0]} octets but only {len(data) - 1} follow its length octet")
    return length


def _concat_from(iei: int, value: bytes) -> "ConcatInfo | None":
    if iei == IEI_CONCAT_8BIT and len(value) == 3:
        ref, total, seq = value
    elif iei == IEI_CONCAT_16BIT and len(value) == 4:
        ref, total, seq = (value[0] << 8) | value[1], value[2], value[3]
    else:
        return None
    # TS 23.040: a zero count or an out-of-range sequence number means ignore the IE.
    if total == 0 or not 1 <= seq <= total:
        return None
    return ConcatInfo(ref, total, seq)


def parse_udh(header: bytes) -> "ConcatInfo | None":
    """Concatenation info from a UDH (length octet included); other IEs are skipped.
    ValueError when an IE runs past the end of the header."""
    concat = None
    position, end = 1, len(header)
    while position < end:
        if position + 2 > end:
            raise ValueError(f"UDH information element at octet {position} is truncated")
        iei, iel = header[position], header[position + 1]
        value_start = position + 2
        if value_start + iel > end:
            raise ValueError(
                f"UDH information element 0x{iei:02X} claims {iel} octets "
                f"past the end of the header")
        found = _concat_from(iei, header[value_start:value_start + iel])
        if found is not None:
            concat = found  # the last one wins if a sender repeats it
        position = value_start + iel
    return concat


def split_udh(data: bytes, udhi: bool) -> tuple:
    """(ConcatInfo | None, body) — body is the payload after the UDH, for reassembly of
    raw parts before decoding (a surrogate pair may straddle two parts)."""
    data = bytes(data)
    if not udhi:
        return None, data
    length = udh_length(data)
    return parse_udh(data[:length]), data[length:]


# SMPP 3.4 data_coding 0x00-0x0E (table 5-3) -> Python codec. "gsm" and "binary" are ours.
_SMPP_CODECS = {
    0x00: "gsm",          # SMSC default alphabet: GSM 03.38, unpacked
    0x01: "ascii",        # IA5
    0x02: "binary",       # octet unspecified (8-bit binary)
    0x03: "latin-1",
    0x04: "binary",       # octet unspecified (8-bit binary)
    0x05: "shift_jis",    # JIS X 0208, as SMSCs send it
    0x06: "iso8859_5",    # Cyrillic
    0x07: "iso8859_8",    # Latin/Hebrew
    0x08: "utf-16-be",    # UCS2
    0x09: "binary",       # pictogram encoding: no text codec
    0x0A: "iso2022_jp",   # music codes
    0x0D: "binary",       # extended Kanji JIS X 0212: no dependable codec
    0x0E: "euc_kr",       # KS C 5601
    0x0F: "gsm",          # USSD's "GSM 7-bit, language unspecified"
}


def codec_for(data_coding: int) -> str:
    """The codec used for a data_coding value: an SMPP value, else the GSM 03.38 data
    coding scheme groups (TS 23.038 §4) read from its bits."""
    if not isinstance(data_coding, int) or not 0 <= data_coding <= 0xFF:
        raise ValueError(f"data_coding must be an int 0..255, not {data_coding!r}")
    codec = _SMPP_CODECS.get(data_coding)
    if codec is not None:
        return codec
    group = data_coding >> 4
    if group <= 0x7:
        # General data coding (00xx) / automatic deletion (01xx): bit 5 = compressed,
        # bits 3-2 = alphabet.
        if data_coding & 0x20:
            return "binary"
        return ("gsm", "binary", "utf-16-be", "binary")[(data_coding >> 2) & 0x03]
    if group in (0xC, 0xD):
        return "gsm"          # message waiting indication, GSM 7-bit
    if group == 0xE:
        return "utf-16-be"    # message waiting indication, UCS2
    if group == 0xF:
        return "binary" if data_coding & 0x04 else "gsm"
    return "binary"           # reserved groups 0x8-0xB


def decode_payload(body: bytes, data_coding: int) -> str:
    """Text of a payload without UDH. Never fails on the bytes themselves."""
    codec = codec_for(data_coding)
    body = bytes(body)
    if codec == "gsm":
        return gsm_decode(body)
    if codec == "binary":
        return body.decode("latin-1")
    return body.decode(codec, "replace")


def decode_short_message(data: bytes, data_coding: int, udhi: bool) -> DecodedText:
    """Text and concatenation info of one inbound short_message (or message_payload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"short message must be bytes, not {type(data).__name__}")
    concat, body = split_udh(data, udhi)
    return DecodedText(decode_payload(body, data_coding), concat)
