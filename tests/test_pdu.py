"""The SMPP codec: round trips, smpplib as an independent oracle, strictness, framing."""

import random
import struct

import pytest
import smpplib.smpp

from gateway.smpp import constants as c
from gateway.numbers import mask_msisdn
from gateway.smpp.pdu import MAX_PDU, PDU, Framer, FramingError, PDUError, decode, encode

UDH = bytes.fromhex("050003A70201")                     # concatenation: ref A7, part 1 of 2
PERSIAN = "سلام\u200cعلیکم، مالیات شما پرداخت شد"       # with a ZWNJ
UCS2_PART = UDH + PERSIAN.encode("utf-16-be")

SUBMIT_FIELDS = {
    "service_type": "", "source_addr_ton": 3, "source_addr_npi": 0,
    "source_addr": "40401234", "dest_addr_ton": 1, "dest_addr_npi": 1,
    "destination_addr": "989121234567", "esm_class": 0x40, "protocol_id": 0,
    "priority_flag": 1, "schedule_delivery_time": "", "validity_period": "000001000000000R",
    "registered_delivery": 1, "replace_if_present_flag": 0, "data_coding": 8,
    "sm_default_msg_id": 0, "short_message": UCS2_PART,
}
DELIVER_FIELDS = dict(SUBMIT_FIELDS, service_type="USSD", source_addr_ton=1,
                      source_addr_npi=1, source_addr="989121234567", dest_addr_ton=0,
                      destination_addr="*4*123#", esm_class=0, priority_flag=0,
                      validity_period="", registered_delivery=0, data_coding=0,
                      short_message=b"*4*123#")
BIND_FIELDS = {"system_id": "payam", "password": "secret", "system_type": "GOV",
               "interface_version": 0x34, "addr_ton": 0, "addr_npi": 0, "address_range": ""}

# One sample per command we code: (command_id, fields, tlvs).
SAMPLES = [
    (c.BIND_TRANSMITTER, BIND_FIELDS, {}),
    (c.BIND_RECEIVER, dict(BIND_FIELDS, address_range="^4040"), {}),
    (c.BIND_TRANSCEIVER, BIND_FIELDS, {}),
    (c.BIND_TRANSMITTER_RESP, {"system_id": "SMSC"}, {c.TLV_SC_INTERFACE_VERSION: b"\x34"}),
    (c.BIND_RECEIVER_RESP, {"system_id": "SMSC"}, {}),
    (c.BIND_TRANSCEIVER_RESP, {"system_id": "SMSC"}, {c.TLV_SC_INTERFACE_VERSION: b"\x34"}),
    (c.OUTBIND, {"system_id": "SMSC", "password": "pw"}, {}),
    (c.UNBIND, {}, {}),
    (c.UNBIND_RESP, {}, {}),
    (c.ENQUIRE_LINK, {}, {}),
    (c.ENQUIRE_LINK_RESP, {}, {}),
    (c.GENERIC_NACK, {}, {}),
    (c.SUBMIT_SM, SUBMIT_FIELDS, {c.TLV_USER_MESSAGE_REFERENCE: b"\x01\x02"}),
    (c.SUBMIT_SM_RESP, {"message_id": "1A2B3C"}, {}),
    (c.DELIVER_SM, DELIVER_FIELDS, {c.TLV_USSD_SERVICE_OP: b"\x01",
                                    c.TLV_ITS_SESSION_INFO: b"\x12\x00"}),
    (c.DELIVER_SM_RESP, {"message_id": ""}, {}),
    (c.DATA_SM, {"service_type": "", "source_addr_ton": 1, "source_addr_npi": 1,
                 "source_addr": "989121234567", "dest_addr_ton": 3, "dest_addr_npi": 0,
                 "destination_addr": "40401234", "esm_class": 0, "registered_delivery": 0,
                 "data_coding": 8}, {c.TLV_MESSAGE_PAYLOAD: PERSIAN.encode("utf-16-be")}),
    (c.DATA_SM_RESP, {"message_id": "77"}, {}),
    (c.QUERY_SM, {"message_id": "77", "source_addr_ton": 3, "source_addr_npi": 0,
                  "source_addr": "40401234"}, {}),
    (c.QUERY_SM_RESP, {"message_id": "77", "final_date": "231123123000000+",
                       "message_state": 2, "error_code": 0}, {}),
    (c.CANCEL_SM, {"service_type": "", "message_id": "77", "source_addr_ton": 3,
                   "source_addr_npi": 0, "source_addr": "40401234", "dest_addr_ton": 1,
                   "dest_addr_npi": 1, "destination_addr": "989121234567"}, {}),
    (c.CANCEL_SM_RESP, {}, {}),
    (c.REPLACE_SM, {"message_id": "77", "source_addr_ton": 3, "source_addr_npi": 0,
                    "source_addr": "40401234", "schedule_delivery_time": "",
                    "validity_period": "", "registered_delivery": 1,
                    "sm_default_msg_id": 0, "short_message": b"new text"}, {}),
    (c.REPLACE_SM_RESP, {}, {}),
    (c.ALERT_NOTIFICATION, {"source_addr_ton": 1, "source_addr_npi": 1,
                            "source_addr": "989121234567", "esme_addr_ton": 3,
                            "esme_addr_npi": 0, "esme_addr": "40401234"},
     {c.TLV_MS_AVAILABILITY_STATUS: b"\x00"}),
]


def header(length, command_id, status=0, sequence=1):
    return struct.pack(">IIII", length, command_id, status, sequence)


def frame(command_id, body, status=0, sequence=1):
    return header(16 + len(body), command_id, status, sequence) + body


# --- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("command_id, fields, tlvs", SAMPLES,
                         ids=[c.COMMAND_NAMES[s[0]] for s in SAMPLES])
def test_every_command_round_trips(command_id, fields, tlvs):
    pdu = PDU(command_id, sequence=0x7FFFFFFF, fields=dict(fields), tlvs=dict(tlvs))
    data = encode(pdu)
    assert struct.unpack(">I", data[:4])[0] == len(data)
    back = decode(data)
    assert back == pdu
    assert back.name == c.COMMAND_NAMES[command_id]
    assert list(back.tlvs) == list(tlvs)                 # arrival order kept
    assert encode(back) == data


def test_missing_fields_encode_as_zero_values():
    data = encode(PDU(c.SUBMIT_SM, 3, fields={"destination_addr": "989121234567"}))
    back = decode(data)
    assert back.fields["destination_addr"] == "989121234567"
    assert back.fields["source_addr"] == "" and back.fields["esm_class"] == 0
    assert back.fields["short_message"] == b""
    # 17 mandatory parameters: 6 C-strings (5 empty NULs + 13 octets), 10 integers, sm_length
    assert len(data) == 16 + 5 + 13 + 10 + 1


def test_header_fields_are_kept():
    pdu = decode(encode(PDU(c.SUBMIT_SM_RESP, sequence=42, status=c.ESME_RTHROTTLED,
                            fields={"message_id": "9"})))
    assert (pdu.sequence, pdu.status, pdu.fields) == (42, c.ESME_RTHROTTLED, {"message_id": "9"})


def test_latin1_strings_and_binary_short_message_survive():
    fields = dict(SUBMIT_FIELDS, source_addr="Café", short_message=bytes(range(254)))
    back = decode(encode(PDU(c.SUBMIT_SM, 1, fields=fields)))
    assert back.fields["source_addr"] == "Café"
    assert back.fields["short_message"] == bytes(range(254))


# --- responses -----------------------------------------------------------------------------
def test_response_matches_request():
    submit = PDU(c.SUBMIT_SM, sequence=99, fields=dict(SUBMIT_FIELDS))
    resp = submit.response(message_id="abc")
    assert resp.command_id == c.SUBMIT_SM_RESP and resp.sequence == 99
    assert resp.is_response and not submit.is_response
    assert decode(encode(resp)).fields == {"message_id": "abc"}

    bind = PDU(c.BIND_TRANSCEIVER, sequence=1, fields=dict(BIND_FIELDS))
    bind_resp = bind.response(c.ESME_ROK, system_id="SMSC")
    assert (bind_resp.command_id, bind_resp.fields) == (c.BIND_TRANSCEIVER_RESP,
                                                        {"system_id": "SMSC"})
    assert PDU(c.ENQUIRE_LINK, 5).response().command_id == c.ENQUIRE_LINK_RESP
    assert PDU(c.DATA_SM, 5).response().command_id == c.DATA_SM_RESP


def test_error_response_has_no_body_and_decodes():
    data = encode(PDU(c.SUBMIT_SM, 8).response(c.ESME_RTHROTTLED))
    assert data == header(16, c.SUBMIT_SM_RESP, c.ESME_RTHROTTLED, 8)
    resp = decode(data)
    assert resp.status == c.ESME_RTHROTTLED and resp.fields == {}


@pytest.mark.parametrize("command_id", [c.SUBMIT_SM_RESP, c.DELIVER_SM_RESP,
                                        c.DATA_SM_RESP, c.BIND_TRANSCEIVER_RESP])
def test_empty_response_body_with_status_ok_is_accepted(command_id):
    resp = decode(header(16, command_id, 0, 4))
    assert resp.command_id == command_id and resp.fields == {} and resp.status == 0


def test_responses_and_nacks_cannot_be_answered():
    with pytest.raises(ValueError):
        PDU(c.SUBMIT_SM_RESP, 1).response()
    with pytest.raises(ValueError):
        PDU(c.GENERIC_NACK, 1).response()
    with pytest.raises(ValueError, match="no response"):
        PDU(c.OUTBIND, 1).response()


def test_generic_nack_has_no_body():
    nack = PDU(c.GENERIC_NACK, sequence=12, status=c.ESME_RINVCMDID)
    assert encode(nack) == header(16, c.GENERIC_NACK, c.ESME_RINVCMDID, 12)
    assert nack.is_response


# --- TLVs ----------------------------------------------------------------------------------
def test_typed_tlvs():
    pdu = PDU(c.DELIVER_SM, 1)
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, 1)
    pdu.set_tlv(c.TLV_ITS_SESSION_INFO, 0x1201)
    pdu.set_tlv(c.TLV_SAR_MSG_REF_NUM, 0xBEEF)
    pdu.set_tlv(c.TLV_SAR_TOTAL_SEGMENTS, 3)
    pdu.set_tlv(c.TLV_SAR_SEGMENT_SEQNUM, 2)
    pdu.set_tlv(c.TLV_USER_MESSAGE_REFERENCE, 513)
    pdu.set_tlv(c.TLV_MESSAGE_STATE, c.MESSAGE_STATE_DELIVERED)
    pdu.set_tlv(c.TLV_QOS_TIME_TO_LIVE, 86400)
    pdu.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, "1A2B")
    pdu.set_tlv(c.TLV_NETWORK_ERROR_CODE, b"\x03\x00\x45")
    pdu.set_tlv(c.TLV_MESSAGE_PAYLOAD, b"\x00" * 60000)
    pdu.set_tlv(0x1402, b"vendor")                      # unknown tag: raw bytes
    assert pdu.tlvs[c.TLV_ITS_SESSION_INFO] == b"\x12\x01"
    assert pdu.tlvs[c.TLV_RECEIPTED_MESSAGE_ID] == b"1A2B\x00"
    assert pdu.tlvs[c.TLV_QOS_TIME_TO_LIVE] == (86400).to_bytes(4, "big")

    back = decode(encode(pdu))
    assert back.get_tlv(c.TLV_USSD_SERVICE_OP) == 1
    assert back.get_tlv(c.TLV_ITS_SESSION_INFO) == 0x1201
    assert back.get_tlv(c.TLV_SAR_MSG_REF_NUM) == 0xBEEF
    assert back.get_tlv(c.TLV_SAR_TOTAL_SEGMENTS) == 3
    assert back.get_tlv(c.TLV_SAR_SEGMENT_SEQNUM) == 2
    assert back.get_tlv(c.TLV_USER_MESSAGE_REFERENCE) == 513
    assert back.get_tlv(c.TLV_MESSAGE_STATE) == 2
    assert back.get_tlv(c.TLV_QOS_TIME_TO_LIVE) == 86400
    assert back.get_tlv(c.TLV_RECEIPTED_MESSAGE_ID) == "1A2B"
    assert back.get_tlv(c.TLV_NETWORK_ERROR_CODE) == b"\x03\x00\x45"
    assert back.get_tlv(c.TLV_MESSAGE_PAYLOAD) == b"\x00" * 60000
    assert back.get_tlv(0x1402) == b"vendor"
    assert back.get_tlv(c.TLV_CALLBACK_NUM) is None


def test_receipted_message_id_without_nul_is_tolerated():
    pdu = PDU(c.DELIVER_SM, 1, tlvs={c.TLV_RECEIPTED_MESSAGE_ID: b"abc"})
    assert pdu.get_tlv(c.TLV_RECEIPTED_MESSAGE_ID) == "abc"


def test_integer_tlv_of_unexpected_width_is_read_at_its_width():
    pdu = PDU(c.DELIVER_SM, 1, tlvs={c.TLV_ITS_SESSION_INFO: b"\x07"})
    assert pdu.get_tlv(c.TLV_ITS_SESSION_INFO) == 7


@pytest.mark.parametrize("tag, value", [
    (c.TLV_USSD_SERVICE_OP, 256),
    (c.TLV_ITS_SESSION_INFO, -1),
    (c.TLV_ITS_SESSION_INFO, "12"),
    (c.TLV_MESSAGE_PAYLOAD, "text"),
    (c.TLV_RECEIPTED_MESSAGE_ID, 5),
    (c.TLV_USSD_SERVICE_OP, True),
    (0x10000, b"x"),
    (c.TLV_MESSAGE_PAYLOAD, b"x" * 65536),
])
def test_set_tlv_rejects_bad_values(tag, value):
    with pytest.raises(ValueError):
        PDU(c.SUBMIT_SM, 1).set_tlv(tag, value)


def test_unknown_tlvs_are_kept_raw_in_order():
    body = (encode(PDU(c.DELIVER_SM, 1, fields=dict(DELIVER_FIELDS)))[16:]
            + struct.pack(">HH", 0x1501, 2) + b"\xAB\xCD"
            + struct.pack(">HH", c.TLV_USSD_SERVICE_OP, 1) + b"\x12"
            + struct.pack(">HH", 0x3000, 0))
    pdu = decode(frame(c.DELIVER_SM, body))
    assert list(pdu.tlvs.items()) == [(0x1501, b"\xAB\xCD"),
                                      (c.TLV_USSD_SERVICE_OP, b"\x12"), (0x3000, b"")]


# --- smpplib as an independent oracle --------------------------------------------------------
class _OracleClient:
    """smpplib asks its client for sequence numbers; we set them ourselves."""
    sequence = 0

    def next_sequence(self):
        return 0


def smpplib_parse(data):
    return smpplib.smpp.parse_pdu(data, client=_OracleClient())


def smpplib_make(command_name, sequence, **params):
    pdu = smpplib.smpp.make_pdu(command_name, client=_OracleClient(), **params)
    pdu.sequence = sequence
    return pdu


def same(theirs, ours):
    """smpplib hands C-Octet strings back as bytes; we use str."""
    if isinstance(ours, str) and isinstance(theirs, bytes):
        theirs = theirs.decode("latin-1")
    return theirs == ours


ORACLE_CASES = [
    ("bind_transceiver", c.BIND_TRANSCEIVER,
     dict(BIND_FIELDS, interface_version=0x34), {}),
    ("submit_sm", c.SUBMIT_SM, SUBMIT_FIELDS, {"sar_msg_ref_num": c.TLV_SAR_MSG_REF_NUM}),
    ("deliver_sm", c.DELIVER_SM, dict(DELIVER_FIELDS, service_type="", esm_class=0x04,
                                      short_message=b"id:1A2B sub:001 dlvrd:001 stat:DELIVRD"),
     {"receipted_message_id": c.TLV_RECEIPTED_MESSAGE_ID, "message_state": c.TLV_MESSAGE_STATE}),
    ("enquire_link", c.ENQUIRE_LINK, {}, {}),
    ("unbind", c.UNBIND, {}, {}),
    ("submit_sm_resp", c.SUBMIT_SM_RESP, {"message_id": "0A1B2C"}, {}),
]
ORACLE_TLV_VALUES = {"sar_msg_ref_num": 0xA7, "receipted_message_id": "1A2B",
                     "message_state": 2}


@pytest.mark.parametrize("name, command_id, fields, tlvs", ORACLE_CASES,
                         ids=[case[0] for case in ORACLE_CASES])
def test_our_bytes_parse_in_smpplib(name, command_id, fields, tlvs):
    pdu = PDU(command_id, sequence=31337, fields=dict(fields))
    for tlv_name, tag in tlvs.items():
        pdu.set_tlv(tag, ORACLE_TLV_VALUES[tlv_name])
    theirs = smpplib_parse(encode(pdu))
    assert theirs.command == name
    assert theirs.sequence == 31337 and theirs.status == 0
    for field, value in fields.items():
        assert same(getattr(theirs, field), value), field
    for tlv_name in tlvs:
        assert same(getattr(theirs, tlv_name), ORACLE_TLV_VALUES[tlv_name]), tlv_name


@pytest.mark.parametrize("name, command_id, fields, tlvs", ORACLE_CASES,
                         ids=[case[0] for case in ORACLE_CASES])
def test_smpplib_bytes_parse_in_ours(name, command_id, fields, tlvs):
    params = dict(fields)
    params.update({tlv_name: ORACLE_TLV_VALUES[tlv_name] for tlv_name in tlvs})
    theirs = smpplib_make(name, 4242, **params).generate()
    ours = decode(theirs)
    assert ours.command_id == command_id and ours.sequence == 4242
    assert ours.fields == fields
    for tlv_name, tag in tlvs.items():
        assert ours.get_tlv(tag) == ORACLE_TLV_VALUES[tlv_name], tlv_name
    assert encode(ours) == theirs                       # and we write the same octets


def test_generic_nack_agrees_with_smpplib():
    ours = encode(PDU(c.GENERIC_NACK, sequence=7, status=c.ESME_RINVCMDID))
    theirs = smpplib_make("generic_nack", 7, status=c.ESME_RINVCMDID).generate()
    assert ours == theirs
    parsed = smpplib_parse(ours)
    assert (parsed.command, parsed.status, parsed.sequence) == ("generic_nack", 3, 7)
    back = decode(theirs)
    assert (back.command_id, back.status, back.sequence) == (c.GENERIC_NACK, 3, 7)


def test_ussd_deliver_sm_decodes_where_smpplib_chokes():
    pdu = PDU(c.DELIVER_SM, 5, fields=dict(DELIVER_FIELDS))
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, c.USSD_PSSR_INDICATION)
    pdu.set_tlv(c.TLV_ITS_SESSION_INFO, 0x3400)
    data = encode(pdu)

    back = decode(data)
    assert back.get_tlv(c.TLV_USSD_SERVICE_OP) == 1
    assert back.get_tlv(c.TLV_ITS_SESSION_INFO) == 0x3400
    assert back.fields["short_message"] == b"*4*123#"

    # smpplib 2.2 knows ussd_service_op only for submit_sm: its deliver_sm parser
    # fails on the TLV (smpplib issue #104) — the reason we keep unknown TLVs raw.
    with pytest.raises(KeyError, match="ussd_service_op"):
        smpplib_parse(data)


# --- strictness ----------------------------------------------------------------------------
def submit_body():
    return encode(PDU(c.SUBMIT_SM, 1, fields=dict(SUBMIT_FIELDS)))[16:]


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x10", header(16, c.ENQUIRE_LINK)[:15]])
def test_frame_shorter_than_a_header_is_a_framing_error(data):
    with pytest.raises(FramingError):
        decode(data)


@pytest.mark.parametrize("length", [0, 15, MAX_PDU + 1, 0xFFFFFFFF])
def test_command_length_out_of_bounds_is_a_framing_error(length):
    with pytest.raises(FramingError):
        decode(header(length, c.ENQUIRE_LINK) + b"\x00" * 8)


def test_command_length_mismatch():
    data = encode(PDU(c.SUBMIT_SM, 9, fields=dict(SUBMIT_FIELDS)))
    for bad in (data + b"\x00", data[:-1]):
        with pytest.raises(PDUError) as err:
            decode(bad)
        assert err.value.status == c.ESME_RINVCMDLEN
        assert (err.value.sequence, err.value.command_id) == (9, c.SUBMIT_SM)


def test_unknown_command_id():
    with pytest.raises(PDUError) as err:
        decode(header(16, 0x00000099, 0, 77))
    assert (err.value.status, err.value.sequence) == (c.ESME_RINVCMDID, 77)
    with pytest.raises(PDUError) as err:
        decode(header(16, c.SUBMIT_MULTI, 0, 78))          # named, not coded
    assert err.value.status == c.ESME_RINVCMDID


def test_missing_nul_at_end_of_body():
    body = b"payam\x00secret\x00GOV\x00\x34\x00\x00" + b"^4040"     # address_range unterminated
    with pytest.raises(PDUError) as err:
        decode(frame(c.BIND_TRANSCEIVER, body, sequence=3))
    assert err.value.status == c.ESME_RINVCMDLEN and err.value.sequence == 3


@pytest.mark.parametrize("field, body, status", [
    ("system_id", b"A" * 16 + b"\x00secret\x00\x00\x34\x00\x00\x00", c.ESME_RINVSYSID),
    ("password", b"payam\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00", c.ESME_RINVPASWD),
    ("system_type", b"payam\x00pw\x00" + b"t" * 13 + b"\x00\x34\x00\x00\x00",
     c.ESME_RINVSYSTYP),
    ("address_range", b"payam\x00pw\x00\x00\x34\x00\x00" + b"9" * 41 + b"\x00",
     c.ESME_RINVPARLEN),
])
def test_overlong_c_string_in_bind(field, body, status):
    with pytest.raises(PDUError, match=field) as err:
        decode(frame(c.BIND_TRANSMITTER, body))
    assert err.value.status == status


def test_overlong_addresses_in_submit_sm():
    fields = dict(SUBMIT_FIELDS, destination_addr="9" * 20)
    data = bytearray(encode(PDU(c.SUBMIT_SM, 1, fields=fields)))
    nul = data.index(b"9" * 20) + 20
    data[nul] = ord("9")                               # 21 digits, NUL one further on
    data[nul + 1:nul + 1] = b"\x00"
    data[0:4] = struct.pack(">I", len(data))
    with pytest.raises(PDUError, match="destination_addr") as err:
        decode(bytes(data))
    assert err.value.status == c.ESME_RINVDSTADR


def test_sm_length_must_fit():
    body = bytearray(submit_body())
    sm_length_at = len(body) - len(UCS2_PART) - 1
    assert body[sm_length_at] == len(UCS2_PART)
    body[sm_length_at] = len(UCS2_PART) + 1
    with pytest.raises(PDUError) as err:
        decode(frame(c.SUBMIT_SM, bytes(body)))
    assert err.value.status == c.ESME_RINVMSGLEN


def test_sm_length_over_254_is_invalid():
    body = bytearray(encode(PDU(c.SUBMIT_SM, 1, fields={"short_message": b""}))[16:])
    body[-1] = 255
    with pytest.raises(PDUError) as err:
        decode(frame(c.SUBMIT_SM, bytes(body) + b"x" * 255))
    assert err.value.status == c.ESME_RINVMSGLEN


def test_body_ending_inside_the_integers():
    with pytest.raises(PDUError) as err:
        decode(frame(c.BIND_TRANSCEIVER, b"payam\x00pw\x00\x00\x34"))
    assert err.value.status == c.ESME_RINVCMDLEN


def test_request_without_body():
    with pytest.raises(PDUError) as err:
        decode(header(16, c.SUBMIT_SM, 0, 5))
    assert err.value.status == c.ESME_RINVCMDLEN


@pytest.mark.parametrize("tail", [
    b"\x05",                                            # not even a TLV header
    b"\x05\x01\x00",
    struct.pack(">HH", c.TLV_USSD_SERVICE_OP, 2) + b"\x01",      # value cut short
    struct.pack(">HH", c.TLV_MESSAGE_PAYLOAD, 400) + b"x" * 10,
])
def test_truncated_tlv(tail):
    with pytest.raises(PDUError) as err:
        decode(frame(c.DELIVER_SM, submit_body() + tail, sequence=6))
    assert err.value.status == c.ESME_RINVOPTPARSTREAM == c.ESME_RINVTLVSTREAM
    assert err.value.sequence == 6


# --- encoding our own mistakes -----------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    {"source_addr": "4" * 21},                          # 21 + NUL > 21
    {"system_id": "x"},                                 # not a submit_sm field
    {"destination_addr": "۰۹۱۲"},                       # not latin-1
    {"destination_addr": b"98912"},                     # bytes where a str belongs
    {"destination_addr": "989\x0012"},
    {"esm_class": 256},
    {"data_coding": -1},
    {"short_message": "text"},
    {"short_message": b"x" * 255},
])
def test_encode_rejects_bad_fields(fields):
    with pytest.raises(ValueError):
        encode(PDU(c.SUBMIT_SM, 1, fields=fields))


def test_encode_rejects_oversized_pdu_and_unknown_command():
    with pytest.raises(ValueError):
        encode(PDU(c.DATA_SM, 1, tlvs={c.TLV_MESSAGE_PAYLOAD: b"x" * 65535,
                                       0x1400: b"y" * 10000}))
    with pytest.raises(ValueError):
        encode(PDU(0x00000099, 1))


def test_bytearray_short_message_is_accepted():
    back = decode(encode(PDU(c.SUBMIT_SM, 1, fields={"short_message": bytearray(b"hi")})))
    assert back.fields["short_message"] == b"hi"


# --- logs --------------------------------------------------------------------------------------
def test_repr_hides_text_and_numbers():
    pdu = PDU(c.DELIVER_SM, 17, fields=dict(DELIVER_FIELDS, short_message=b"my secret PIN 4711",
                                            source_addr="989121234567"))
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, 1)
    text = repr(pdu)
    assert "deliver_sm" in text and "seq=17" in text and "ussd_service_op" in text
    assert "4711" not in text and "secret" not in text
    assert "989121234567" not in text and "98912" in text
    assert "sm_length=18" in text


def test_repr_never_shows_the_password():
    assert "secret" not in repr(PDU(c.BIND_TRANSCEIVER, 1, fields=dict(BIND_FIELDS)))


def test_repr_masks_numbers_as_every_log_line_does():
    pdu = PDU(c.SUBMIT_SM, 1, fields=dict(SUBMIT_FIELDS, destination_addr="989121234567"))
    assert "dst=" + mask_msisdn("989121234567") in repr(pdu)
    assert "989121234567" not in repr(pdu)


def test_generated_codec_code_shows_in_tracebacks():
    import linecache
    from gateway.smpp.pdu import _LAYOUTS
    code = _LAYOUTS[c.SUBMIT_SM].decode.__code__
    assert code.co_filename == "<payam-codec submit_sm>"
    assert linecache.getline(code.co_filename, code.co_firstlineno).startswith("def decode")


# --- framing -----------------------------------------------------------------------------------
def test_framer_byte_by_byte():
    pdus = [PDU(c.SUBMIT_SM, 1, fields=dict(SUBMIT_FIELDS)), PDU(c.ENQUIRE_LINK, 2),
            PDU(c.DELIVER_SM_RESP, 3, fields={"message_id": ""})]
    stream = b"".join(encode(p) for p in pdus)
    framer = Framer()
    frames = []
    for i in range(len(stream)):
        frames.extend(framer.feed(stream[i:i + 1]))
    assert [decode(f) for f in frames] == pdus
    assert framer.pending == 0


def test_framer_several_pdus_in_one_chunk_and_a_partial_tail():
    first, second = encode(PDU(c.ENQUIRE_LINK, 1)), encode(PDU(c.SUBMIT_SM, 2))
    framer = Framer()
    assert framer.feed(first + second + first[:5]) == [first, second]
    assert framer.pending == 5
    assert framer.feed(first[5:]) == [first]
    assert framer.pending == 0


def test_framer_any_chunking_gives_the_same_frames_as_bytes():
    rng = random.Random(7)
    pdus = [PDU(c.SUBMIT_SM, n, fields=dict(SUBMIT_FIELDS)) if n % 3 else
            PDU(c.DELIVER_SM_RESP, n, fields={"message_id": ""}) for n in range(1, 60)]
    stream = b"".join(encode(p) for p in pdus)
    for kind in (bytes, bytearray, memoryview):
        framer = Framer()
        frames, pos = [], 0
        while pos < len(stream):
            step = rng.randint(1, 300)
            frames.extend(framer.feed(kind(stream[pos:pos + step])))
            pos += step
        assert all(type(f) is bytes for f in frames)
        assert [decode(f) for f in frames] == pdus
        assert framer.pending == 0


def test_framer_rejects_impossible_lengths_as_soon_as_they_arrive():
    with pytest.raises(FramingError):
        Framer().feed(struct.pack(">I", 15))
    with pytest.raises(FramingError):
        Framer().feed(encode(PDU(c.ENQUIRE_LINK, 1)) + struct.pack(">I", MAX_PDU + 1))
    with pytest.raises(FramingError):
        Framer(max_length=1000).feed(struct.pack(">I", 1001))


def test_framer_passes_a_max_size_pdu():
    big = encode(PDU(c.DATA_SM, 1, tlvs={c.TLV_MESSAGE_PAYLOAD: b"x" * 65535}))
    framer = Framer()
    assert framer.feed(big[:30000]) == []
    assert framer.feed(big[30000:]) == [big]


# --- robustness --------------------------------------------------------------------------------
def test_mangled_frames_raise_only_codec_errors():
    """Whatever octets arrive, decode answers a PDU or a PDUError / FramingError (which
    the session turns into generic_nack or a close), never another exception."""
    rng = random.Random(20231123)
    valid = [encode(PDU(command_id, 1, fields=dict(fields), tlvs=dict(tlvs)))
             for command_id, fields, tlvs in SAMPLES]
    outcomes = set()
    for _ in range(5000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            at = rng.randrange(len(data))
            if action < 0.6:
                data[at] = rng.randrange(256)
            elif action < 0.8:
                del data[at:at + rng.randint(1, 8)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        if rng.random() < 0.7 and len(data) >= 4:
            data[0:4] = struct.pack(">I", len(data))        # keep the length honest, mostly
        try:
            decode(bytes(data))
            outcomes.add("pdu")
        except PDUError as e:
            assert e.status in c.STATUS_NAMES
            outcomes.add("pdu_error")
        except FramingError:
            outcomes.add("framing_error")
    assert outcomes == {"pdu", "pdu_error", "framing_error"}


@pytest.mark.parametrize("command_id", [c.DELIVER_SM, c.DATA_SM])
@pytest.mark.parametrize("status", [c.ESME_ROK, c.ESME_RX_T_APPN])
def test_empty_id_response_is_the_codecs_response(command_id, status):
    from gateway.smpp.pdu import encode_empty_id_response
    request = PDU(command_id, 0x7FFFFFFE)
    assert encode_empty_id_response(request, status) == encode(
        request.response(status=status, message_id=""))
