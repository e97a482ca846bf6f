"""Operators' USSD fields read into plain records, and our answers' TLVs built: the
default mapping and Vumi's "Tata" style (always op 2, the end only by its_session_info's
bit), the dialled string in short_message or destination_addr."""

import pytest

from gateway.inbound.ussd_fields import (
    ABORT, CONTINUE, DEFAULT_USSD, END, NEW, UNKNOWN, UssdSettings, answer_tlvs,
    read_request)
from gateway.simulator.mo import build_mo
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU, decode, encode

TATA = UssdSettings(answer_style="end_bit")
DIAL_IN_DESTINATION = UssdSettings(dial_field="destination_addr")


def ussd(text, op, its=None, to="4040", source="09121234567", coding="auto"):
    # Built by the simulator and sent through the codec: what a session would hand over.
    (pdu,) = build_mo(source, to, text, ref=1, ussd_op=op, its_session_info=its,
                      coding=coding, service_type="USSD")
    pdu.sequence = 1
    return decode(encode(pdu))


def test_a_dial_starts_a_dialog_keyed_by_msisdn_and_its_session_number():
    request = read_request(ussd("*4*0135#", c.USSD_PSSR_INDICATION, its=0x0700))
    assert request.kind == NEW
    assert request.msisdn == "989121234567"
    assert request.text == "*4*0135#"
    assert request.session_key == ("989121234567", 0x07)
    assert (request.its_session_info, request.op) == (0x0700, 1)


def test_without_its_session_info_the_msisdn_alone_is_the_key():
    request = read_request(ussd("*4*0135#", c.USSD_PSSR_INDICATION))
    assert request.session_key == ("989121234567", None)
    assert request.its_session_info is None


def test_the_session_key_ignores_the_sequence_bits_that_change_each_step():
    first = read_request(ussd("*4*0135#", 1, its=0x0700))
    later = read_request(ussd("2", c.USSD_USSR_CONFIRM, its=0x0704))
    assert later.kind == CONTINUE and later.text == "2"
    assert first.session_key == later.session_key


@pytest.mark.parametrize("op,its,kind", [
    (0x81, None, ABORT),                        # user abort, a vendor value
    (c.USSD_PSSR_RESPONSE, None, END),          # the network ended it
    (c.USSD_USSR_CONFIRM, 0x0705, END),         # ... or said so by the end bit
    (0x33, None, UNKNOWN),
])
def test_abort_end_and_unknown_ops(op, its, kind):
    assert read_request(ussd("x", op, its=its)).kind == kind


def test_persian_input_in_ucs2_is_text():
    request = read_request(ussd("۰۱۲۳ سلام", c.USSD_USSR_CONFIRM, coding="ucs2"))
    assert request.text == "۰۱۲۳ سلام"


def test_data_coding_0x0f_is_gsm_text():
    pdu = PDU(c.DELIVER_SM, 1, fields={"source_addr": "989121234567",
                                       "destination_addr": "4040", "data_coding": 0x0F,
                                       "short_message": b"*4*0135#"})
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, 1)
    assert read_request(pdu).text == "*4*0135#"


def test_the_dialled_string_in_destination_addr_per_operator():
    pdu = ussd("ignored", c.USSD_PSSR_INDICATION, to="*4*0135*2#")
    assert read_request(pdu, DIAL_IN_DESTINATION).text == "*4*0135*2#"
    assert read_request(pdu).text == "ignored"          # the default reads short_message
    # Input after the dial is short_message either way.
    answer = ussd("1", c.USSD_USSR_CONFIRM, to="*4*0135*2#")
    assert read_request(answer, DIAL_IN_DESTINATION).text == "1"


def test_op_values_are_set_per_operator():
    vendor = UssdSettings(new_ops=frozenset({0x01}), continue_ops=frozenset({0x12, 0x0C}),
                          abort_ops=frozenset({0x81, 0x20}))
    assert read_request(ussd("1", 0x0C), vendor).kind == CONTINUE
    assert read_request(ussd("1", 0x0C)).kind == UNKNOWN
    assert read_request(ussd("x", 0x20), vendor).kind == ABORT


def test_default_answers_continue_with_op_2_and_end_with_op_17_and_the_end_bit():
    request = read_request(ussd("*4*0135#", 1, its=0x0702))
    assert answer_tlvs(request, end=False) == {c.TLV_USSD_SERVICE_OP: b"\x02",
                                               c.TLV_ITS_SESSION_INFO: b"\x07\x02"}
    assert answer_tlvs(request, end=True) == {c.TLV_USSD_SERVICE_OP: b"\x11",
                                              c.TLV_ITS_SESSION_INFO: b"\x07\x03"}


def test_default_answers_without_its_session_info_carry_the_op_only():
    request = read_request(ussd("*4*0135#", 1))
    assert answer_tlvs(request, end=False) == {c.TLV_USSD_SERVICE_OP: b"\x02"}
    assert answer_tlvs(request, end=True) == {c.TLV_USSD_SERVICE_OP: b"\x11"}


def test_tata_style_always_answers_op_2_and_ends_by_the_bit_alone():
    request = read_request(ussd("*4*0135#", 1, its=0x0702), TATA)
    assert answer_tlvs(request, end=False, settings=TATA) == {
        c.TLV_USSD_SERVICE_OP: b"\x02", c.TLV_ITS_SESSION_INFO: b"\x07\x02"}
    assert answer_tlvs(request, end=True, settings=TATA) == {
        c.TLV_USSD_SERVICE_OP: b"\x02", c.TLV_ITS_SESSION_INFO: b"\x07\x03"}


def test_tata_style_with_no_bit_to_set_ends_by_the_op():
    request = read_request(ussd("*4*0135#", 1), TATA)
    assert answer_tlvs(request, end=True, settings=TATA) == {c.TLV_USSD_SERVICE_OP: b"\x11"}


def test_an_answer_clears_an_end_bit_the_request_carried_when_it_goes_on():
    request = read_request(ussd("x", 0x33, its=0x0701))        # unknown op, bit set
    assert answer_tlvs(request, end=False)[c.TLV_ITS_SESSION_INFO] == b"\x07\x00"


def test_the_tlvs_go_into_a_submit_sm_through_the_codec():
    request = read_request(ussd("*4*0135#", 1, its=0x0702))
    answer = PDU(c.SUBMIT_SM, 5, fields={"destination_addr": request.msisdn,
                                         "short_message": b"menu"},
                 tlvs=answer_tlvs(request, end=True))
    again = decode(encode(answer))
    assert again.get_tlv(c.TLV_USSD_SERVICE_OP) == c.USSD_PSSR_RESPONSE
    assert again.get_tlv(c.TLV_ITS_SESSION_INFO) == 0x0703


@pytest.mark.parametrize("bad", [
    {"dial_field": "service_type"}, {"answer_style": "tata"}, {"end_op": 256},
    {"continue_ops": frozenset({1})},          # 1 already starts a dialog
])
def test_settings_refuse_what_cannot_work(bad):
    with pytest.raises(ValueError):
        UssdSettings(**bad)


def test_defaults_are_the_reference_table():
    assert DEFAULT_USSD == UssdSettings()
    assert (DEFAULT_USSD.new_ops, DEFAULT_USSD.continue_ops, DEFAULT_USSD.abort_ops) == (
        {1}, {18}, {0x81})
    assert (DEFAULT_USSD.continue_op, DEFAULT_USSD.end_op) == (2, 17)
