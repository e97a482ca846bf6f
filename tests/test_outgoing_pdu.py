"""The submit_sm built for a claimed part: addresses, TON/NPI, receipts, validity."""

from conftest import operator_config

from gateway.smpp import constants as c
from gateway.smpp.pdu import decode, encode
from gateway.model import ClaimedPart
from gateway.dispatch.outgoing_pdu import build_submit_sm, relative_validity


def part(sender="40401234", receipt=True, priority=0, expires_at=1000 + 86400):
    return ClaimedPart(message_id="m1", seq=1, total=1, agency="tax", sender=sender,
                       recipient="989121234567", priority=priority, data_coding=8,
                       esm_class=0x40, payload=b"\x05\x00\x03\x07\x02\x01\x06\x33",
                       receipt=receipt, attempts=0, expires_at=expires_at)


def test_short_code_goes_with_the_operators_ton_npi_and_survives_the_wire():
    pdu = decode(encode(build_submit_sm(part(), operator_config(short_code_ton=0,
                                                                short_code_npi=1), 1000)))
    f = pdu.fields
    assert pdu.command_id == c.SUBMIT_SM
    assert (f["source_addr"], f["source_addr_ton"], f["source_addr_npi"]) == ("40401234", 0, 1)
    assert (f["destination_addr"], f["dest_addr_ton"], f["dest_addr_npi"]) == \
        ("989121234567", 1, 1)
    assert f["esm_class"] == 0x40 and f["data_coding"] == 8
    assert f["short_message"] == b"\x05\x00\x03\x07\x02\x01\x06\x33"
    assert f["registered_delivery"] == 1


def test_mask_goes_alphanumeric_and_receipts_follow_both_switches():
    settings = operator_config(receipts=False)
    f = build_submit_sm(part(sender="MALIAT"), settings, 1000).fields
    assert (f["source_addr_ton"], f["source_addr_npi"]) == (5, 0)
    assert f["registered_delivery"] == 0
    f = build_submit_sm(part(receipt=False), operator_config(), 1000).fields
    assert f["registered_delivery"] == 0


def test_priority_and_remaining_validity():
    f = build_submit_sm(part(priority=2, expires_at=1000 + 3723), operator_config(),
                        1000).fields
    assert f["priority_flag"] == 3
    assert f["validity_period"] == "000000010203000R"
    assert relative_validity(86400) == "000001000000000R"
    assert relative_validity(5) == "000000000100000R"     # never less than a minute


def test_relative_validity_counts_years_and_months_of_365_and_30_days():
    assert relative_validity(86400 * 365 + 86400 * 31 + 3661) == "010101010101000R"
    assert relative_validity(59.9) == relative_validity(60) == "000000000100000R"


def test_parts_sent_in_the_same_second_share_one_validity_string():
    # The drain builds ~10,000 submit_sm a second, most with one expiry (a broadcast's):
    # the validity string is made once per whole second left, not once per part.
    import sys
    settings = operator_config()
    build_submit_sm(part(expires_at=5000.2), settings, 1000.1)
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        pdu = build_submit_sm(part(expires_at=5000.2), settings, 1000.15)
    finally:
        sys.setprofile(None)
    assert "relative_validity" not in calls, calls
    assert pdu.fields["validity_period"] == relative_validity(4000)
    assert build_submit_sm(part(expires_at=5000.2), settings, 1001.5).fields[
        "validity_period"] == relative_validity(3998)
