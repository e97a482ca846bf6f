"""Mobile-originated messages (citizens' replies, USSD dialogue steps) as deliver_sm PDUs."""

from gateway.smpp import constants
from gateway.smpp.pdu import PDU
from gateway.text import DATA_CODING_UCS2, ESM_CLASS_UDHI, encode_message, encode_text

UCS2_SINGLE_OCTETS = 140
UCS2_PART_OCTETS = 134        # 67 UTF-16 units after a 6-octet concatenation UDH
MAX_SHORT_MESSAGE = 254       # sm_length is one octet; SMPP caps short_message at 254
MAX_PARTS = 255


def _address_type(address):
    """(ton, npi): international digits, a short code, or an alphanumeric sender."""
    if address.isdigit():
        return (1, 1) if len(address) > 8 else (0, 1)
    return (5, 0)


def _ucs2_parts(text, ref):
    """Forced UCS2 (some operators send everything as UCS2), split like a handset would:
    never between the halves of a surrogate pair."""
    octets = text.encode("utf-16-be")
    if len(octets) <= UCS2_SINGLE_OCTETS:
        return 0, [octets]
    chunks, start = [], 0
    while start < len(octets):
        end = min(start + UCS2_PART_OCTETS, len(octets))
        if end < len(octets) and 0xD8 <= octets[end - 2] <= 0xDB:
            end -= 2
        chunks.append(octets[start:end])
        start = end
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"MO text needs {len(chunks)} parts; at most {MAX_PARTS} fit")
    total = len(chunks)
    return ESM_CLASS_UDHI, [bytes((0x05, 0x00, 0x03, ref, total, seq)) + chunk
                            for seq, chunk in enumerate(chunks, 1)]


def _encode(text, coding, ref):
    """(data_coding, esm_class, parts) for an SMS MO."""
    if coding == "ucs2":
        esm_class, parts = _ucs2_parts(text, ref)
        return DATA_CODING_UCS2, esm_class, parts
    encoded = encode_message(text, ref)
    return encoded.data_coding, encoded.esm_class, encoded.parts


CONCAT_STYLES = ("udh8", "udh16", "sar")
COMMANDS = {"deliver_sm": constants.DELIVER_SM, "data_sm": constants.DATA_SM}


def _restyle(parts, esm_class, style, ref):
    """Parts split with an 8-bit-reference UDH, as `style` would carry them:
    [(esm_class, body, tlvs)]."""
    if len(parts) == 1 or style == "udh8":
        return [(esm_class, part, {}) for part in parts]
    out = []
    wide_ref = (ref << 8) | ref
    for part in parts:
        total, seq, body = part[4], part[5], part[6:]
        if style == "udh16":
            udh = bytes((6, 8, 4, wide_ref >> 8, wide_ref & 0xFF, total, seq))
            out.append((esm_class, udh + body, {}))
        else:
            out.append((0, body, {constants.TLV_SAR_MSG_REF_NUM: wide_ref.to_bytes(2, "big"),
                                  constants.TLV_SAR_TOTAL_SEGMENTS: bytes((total,)),
                                  constants.TLV_SAR_SEGMENT_SEQNUM: bytes((seq,))}))
    return out


def build_mo(source, destination, text, *, ref, coding="auto", ussd_op=None,
             its_session_info=None, service_type="", concat="udh8",
             command="deliver_sm") -> list:
    """The deliver_sm (or data_sm) PDUs (sequence unset) carrying one MO. A USSD step is
    always one PDU (USSD has no concatenation); an SMS longer than one part is split
    with a UDH (8-bit reference; `concat` "udh16": 16-bit, "sar": sar_* TLVs). A data_sm
    carries its text in message_payload."""
    if concat not in CONCAT_STYLES:
        raise ValueError(f"concat must be one of {', '.join(CONCAT_STYLES)}, not {concat!r}")
    if command not in COMMANDS:
        raise ValueError(f"command must be deliver_sm or data_sm, not {command!r}")
    if not isinstance(source, str) or not source:
        raise ValueError("MO source address must be a non-empty string")
    if not isinstance(destination, str) or not destination:
        raise ValueError("MO destination address must be a non-empty string")
    if len(source) > 20 or len(destination) > 20:
        raise ValueError("MO addresses hold at most 20 characters")
    if not isinstance(text, str) or not text:
        raise ValueError("MO text must be a non-empty string")
    if not isinstance(service_type, str) or len(service_type) > 5:
        raise ValueError(f"service_type must be a string of at most 5 characters, "
                         f"not {service_type!r}")
    tlvs = {}
    if ussd_op is not None:
        if not isinstance(ussd_op, int) or isinstance(ussd_op, bool) or not 0 <= ussd_op <= 255:
            raise ValueError(f"ussd_op must be an int 0..255, not {ussd_op!r}")
        tlvs[constants.TLV_USSD_SERVICE_OP] = bytes((ussd_op,))
    if its_session_info is not None:
        if (not isinstance(its_session_info, int) or isinstance(its_session_info, bool)
                or not 0 <= its_session_info <= 0xFFFF):
            raise ValueError(f"its_session_info must be an int 0..65535, not {its_session_info!r}")
        tlvs[constants.TLV_ITS_SESSION_INFO] = its_session_info.to_bytes(2, "big")

    if ussd_op is not None:
        if coding == "ucs2":
            data_coding, payload = DATA_CODING_UCS2, text.encode("utf-16-be")
        else:
            data_coding, payload = encode_text(text)
        if len(payload) > MAX_SHORT_MESSAGE:
            raise ValueError(f"USSD text takes {len(payload)} octets; one PDU holds "
                             f"{MAX_SHORT_MESSAGE}")
        esm_class, parts = 0, [payload]
    else:
        data_coding, esm_class, parts = _encode(text, coding, ref)

    source_ton, source_npi = _address_type(source)
    dest_ton, dest_npi = _address_type(destination)
    pdus = []
    for part_esm_class, part, part_tlvs in _restyle(parts, esm_class, concat, ref):
        fields = {
            "service_type": service_type,
            "source_addr_ton": source_ton, "source_addr_npi": source_npi,
            "source_addr": source,
            "dest_addr_ton": dest_ton, "dest_addr_npi": dest_npi,
            "destination_addr": destination,
            "esm_class": part_esm_class,
            "data_coding": data_coding,
        }
        if command == "deliver_sm":
            fields["short_message"] = part
        pdu = PDU(COMMANDS[command], fields=fields)
        if command == "data_sm":
            pdu.set_tlv(constants.TLV_MESSAGE_PAYLOAD, part)
        for tag, value in {**tlvs, **part_tlvs}.items():
            pdu.set_tlv(tag, value)
        pdus.append(pdu)
    return pdus
