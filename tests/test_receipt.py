"""Delivery-receipt parsing and message-id match keys."""

import pytest

from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU, decode, encode
from gateway.receipt_ids import ID_BASES, normal_id, receipt_key
from gateway.smpp.receipt import Receipt, is_receipt, parse_receipt

STANDARD = ("id:1A2B sub:001 dlvrd:001 submit date:2311231230 done date:2311231232 "
            "stat:DELIVRD err:000 text:Your tax payment")


def receipt_pdu(text=b"", esm_class=c.ESM_CLASS_DELIVERY_RECEIPT, command_id=c.DELIVER_SM,
                data_coding=0, tlvs=None):
    fields = {"source_addr": "989121234567", "destination_addr": "40401234",
              "esm_class": esm_class, "data_coding": data_coding}
    if command_id == c.DELIVER_SM:
        fields["short_message"] = text.encode("latin-1") if isinstance(text, str) else text
    pdu = PDU(command_id, 3, fields=fields)
    for tag, value in (tlvs or {}).items():
        pdu.set_tlv(tag, value)
    return decode(encode(pdu))                         # parse what the wire would carry


def test_standard_receipt_text():
    receipt = parse_receipt(receipt_pdu(STANDARD))
    assert receipt == Receipt(smsc_id="1A2B", state="delivered", stat="DELIVRD", error=None,
                              submit_date="2311231230", done_date="2311231232")
    assert receipt.final


@pytest.mark.parametrize("stat, state", [
    ("DELIVRD", "delivered"), ("EXPIRED", "expired"), ("DELETED", "failed"),
    ("UNDELIV", "failed"), ("REJECTD", "failed"), ("ACCEPTD", "accepted"),
    ("ENROUTE", "enroute"), ("UNKNOWN", "unknown"), ("delivrd", "delivered"),
    ("DELIVERED", "delivered"), ("UNDELIVERABLE", "failed"), ("BOGUS", "unknown"),
])
def test_stat_mapping(stat, state):
    receipt = parse_receipt(receipt_pdu(f"id:77 sub:001 dlvrd:000 stat:{stat} err:000"))
    assert receipt.state == state
    assert receipt.stat == stat.upper()
    assert receipt.final == (state in ("delivered", "expired", "failed"))


def test_failure_carries_an_error_and_success_none():
    failed = parse_receipt(receipt_pdu("id:77 sub:001 dlvrd:000 stat:UNDELIV err:069 text:"))
    assert failed.error == "UNDELIV err:069"
    expired = parse_receipt(receipt_pdu("id:77 stat:EXPIRED err:000"))
    assert expired.error == "EXPIRED"
    enroute = parse_receipt(receipt_pdu("id:77 stat:ENROUTE err:001"))
    assert enroute.error is None


def test_network_error_code_joins_the_error():
    receipt = parse_receipt(receipt_pdu("id:77 stat:UNDELIV err:000",
                                        tlvs={c.TLV_NETWORK_ERROR_CODE: b"\x03\x00\x45"}))
    assert receipt.error == "UNDELIV network_error:030045"


@pytest.mark.parametrize("text", [
    "ID:1A2B SUB:001 DLVRD:001 SUBMIT DATE:2311231230 DONE DATE:2311231232 STAT:DELIVRD ERR:000",
    "id: 1A2B  sub: 001  dlvrd: 001  submit date: 2311231230  done date: 2311231232  stat: DELIVRD",
    "id:1A2B sub:001 dlvrd:001 submit_date:2311231230 done_date:2311231232 stat:DELIVRD err:000",
    "Id : 1A2B Submit Date : 2311231230 Done  Date : 2311231232 Stat : DELIVRD",
    "id:1A2B submitdate:2311231230 donedate:2311231232 stat:DELIVRD\x00",
    "stat:DELIVRD done date:2311231232 submit date:2311231230 id:1A2B",   # any order
])
def test_tolerant_text(text):
    receipt = parse_receipt(receipt_pdu(text))
    assert (receipt.smsc_id, receipt.state, receipt.stat) == ("1A2B", "delivered", "DELIVRD")
    assert (receipt.submit_date, receipt.done_date) == ("2311231230", "2311231232")


def test_missing_fields_are_none():
    receipt = parse_receipt(receipt_pdu("id:99 stat:DELIVRD"))
    assert (receipt.submit_date, receipt.done_date, receipt.error) == (None, None, None)


def test_text_after_text_key_is_never_parsed():
    receipt = parse_receipt(receipt_pdu("id:5 stat:DELIVRD err:000 text:id:6 stat:UNDELIV"))
    assert (receipt.smsc_id, receipt.state) == ("5", "delivered")


def test_receipt_in_message_payload():
    pdu = receipt_pdu(b"", tlvs={c.TLV_MESSAGE_PAYLOAD: STANDARD.encode()})
    assert parse_receipt(pdu).smsc_id == "1A2B"


def test_receipt_as_data_sm():
    pdu = receipt_pdu(command_id=c.DATA_SM, tlvs={c.TLV_MESSAGE_PAYLOAD: STANDARD.encode()})
    assert parse_receipt(pdu).state == "delivered"


def test_receipt_text_in_ucs2():
    pdu = receipt_pdu(STANDARD.encode("utf-16-be"), data_coding=c.DATA_CODING_UCS2)
    assert parse_receipt(pdu).smsc_id == "1A2B"


def test_tlvs_win_over_text():
    pdu = receipt_pdu("id:0000 stat:DELIVRD err:000",
                      tlvs={c.TLV_RECEIPTED_MESSAGE_ID: "ABC123",
                            c.TLV_MESSAGE_STATE: c.MESSAGE_STATE_UNDELIVERABLE})
    receipt = parse_receipt(pdu)
    assert receipt.smsc_id == "ABC123" and receipt.state == "failed"


@pytest.mark.parametrize("value, state, stat", [
    (1, "enroute", "ENROUTE"), (2, "delivered", "DELIVRD"), (3, "expired", "EXPIRED"),
    (4, "failed", "DELETED"), (5, "failed", "UNDELIV"), (6, "accepted", "ACCEPTD"),
    (7, "unknown", "UNKNOWN"), (8, "failed", "REJECTD"),
])
def test_tlv_only_receipt(value, state, stat):
    pdu = receipt_pdu(b"", tlvs={c.TLV_RECEIPTED_MESSAGE_ID: "42",
                                 c.TLV_MESSAGE_STATE: value})
    receipt = parse_receipt(pdu)
    assert (receipt.smsc_id, receipt.state, receipt.stat) == ("42", state, stat)


def test_unknown_message_state_falls_back_to_text():
    pdu = receipt_pdu("id:42 stat:DELIVRD", tlvs={c.TLV_MESSAGE_STATE: 99})
    assert parse_receipt(pdu).state == "delivered"


def test_intermediate_notification_is_a_non_final_receipt():
    pdu = receipt_pdu("id:42 stat:ENROUTE", esm_class=c.ESM_CLASS_INTERMEDIATE_NOTIFICATION)
    receipt = parse_receipt(pdu)
    assert receipt.state == "enroute" and not receipt.final


def test_receipt_bit_with_gsm_feature_bits_set():
    pdu = receipt_pdu(STANDARD, esm_class=c.ESM_CLASS_DELIVERY_RECEIPT | c.ESM_CLASS_UDHI)
    assert is_receipt(pdu) and parse_receipt(pdu).smsc_id == "1A2B"


@pytest.mark.parametrize("pdu", [
    receipt_pdu(STANDARD, esm_class=0),                         # an ordinary MO
    receipt_pdu(STANDARD, esm_class=c.ESM_CLASS_UDHI),
    PDU(c.SUBMIT_SM, 1, fields={"esm_class": 4, "short_message": STANDARD.encode()}),
])
def test_not_a_receipt(pdu):
    assert not is_receipt(pdu)
    assert parse_receipt(pdu) is None


def test_receipt_without_any_id_is_not_taken_for_a_receipt(caplog):
    assert parse_receipt(receipt_pdu("sub:001 dlvrd:001 stat:DELIVRD")) is None
    assert "without receipted_message_id" in caplog.text


# --- message ids: one base per operator -------------------------------------------------
def test_normal_id_forms():
    assert normal_id("1a2b") == "1A2B"
    assert normal_id("000123") == "123"
    assert normal_id("0") == "0" == normal_id("0000")
    assert normal_id("msg-7f") == "MSG-7F"
    assert normal_id(" abc\x00") == "ABC"


@pytest.mark.parametrize("bad", ["", "   ", "\x00", None, 123])
def test_normal_id_rejects_empty_or_non_text(bad):
    with pytest.raises(ValueError):
        normal_id(bad)


@pytest.mark.parametrize("base, submitted, receipted", [
    ("raw", "1A2B", "1a2b"),     # the same id, any case
    ("raw", "000123", "123"),    # leading zeros
    ("raw", "abc-def", "ABC-DEF"),
    ("dec", "1A2B", "6699"),     # resp in hex, receipt in decimal
    ("dec", "0A1B2C", "662316"),
    ("dec", "FF", "00255"),
    ("hex", "6699", "1a2b"),     # resp in decimal, receipt in hex
    ("hex", "660268", "a132c"),
])
def test_a_receipt_id_read_in_its_base_is_the_submitted_id(base, submitted, receipted):
    assert receipt_key(normal_id(receipted), base) == normal_id(submitted)


def test_each_base_reads_an_id_one_way_only():
    # The store looks a receipt up under exactly one key, that of its operator's base:
    # "49" is never also tried as "31" (decimal read) or "73" (hex read).
    assert {base: receipt_key("49", base) for base in ID_BASES} == {
        "raw": "49", "dec": "31", "hex": "73"}


@pytest.mark.parametrize("base, receipted", [("dec", "1A2B"), ("dec", "MSG-7F"),
                                             ("hex", "MSG-7F"), ("dec", "9" * 65)])
def test_an_id_not_written_in_the_base_has_no_key(base, receipted):
    assert receipt_key(normal_id(receipted), base) is None


def test_an_unknown_base_is_an_error():
    with pytest.raises(ValueError):
        receipt_key("49", "auto")
