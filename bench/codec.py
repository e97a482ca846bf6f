"""Per-PDU cost of the SMPP codec against smpplib: µs per encode / decode. Figures only.

    .venv/bin/python bench/codec.py [--number 20000]

Cases: a UCS2 submit_sm part with a concatenation UDH and registered_delivery, and a
delivery-receipt deliver_sm with receipted_message_id + message_state TLVs. Both codecs
build from field values and parse the same octets; the script checks they agree first.
"""

import argparse
import sys
import timeit
from pathlib import Path

import smpplib.smpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.smpp import constants as c  # noqa: E402
from gateway.smpp.pdu import PDU, decode, encode  # noqa: E402

PART = bytes.fromhex("050003A70201") + ("مؤدی گرامی، مهلت تسلیم اظهارنامه‌ی مالیاتی "
                                        "عملکرد سال ۱۴۰۲ تا ۳۱").encode("utf-16-be")
SUBMIT = {
    "service_type": "", "source_addr_ton": 3, "source_addr_npi": 0,
    "source_addr": "40401234", "dest_addr_ton": 1, "dest_addr_npi": 1,
    "destination_addr": "989121234567", "esm_class": 0x40, "protocol_id": 0,
    "priority_flag": 0, "schedule_delivery_time": "", "validity_period": "000001000000000R",
    "registered_delivery": 1, "replace_if_present_flag": 0, "data_coding": 8,
    "sm_default_msg_id": 0, "short_message": PART,
}
DELIVER = dict(SUBMIT, source_addr_ton=1, source_addr_npi=1, source_addr="989121234567",
               dest_addr_ton=3, dest_addr_npi=0, destination_addr="40401234", esm_class=4,
               validity_period="", registered_delivery=0, data_coding=0,
               short_message=b"id:0A1B2C3D sub:001 dlvrd:001 submit date:2311231230 "
                             b"done date:2311231232 stat:DELIVRD err:000 text:")
RECEIPT_TLVS = {"receipted_message_id": "0A1B2C3D", "message_state": 2}


class _Client:
    """smpplib takes sequence numbers from its client."""
    sequence = 0

    def next_sequence(self):
        return 0


def ours(command_id, fields, tlvs):
    tags = {"receipted_message_id": c.TLV_RECEIPTED_MESSAGE_ID,
            "message_state": c.TLV_MESSAGE_STATE}

    def build():
        pdu = PDU(command_id, 1234, fields=dict(fields))
        for name, value in tlvs.items():
            pdu.set_tlv(tags[name], value)
        return encode(pdu)

    return build, decode


def theirs(command_name, fields, tlvs):
    client = _Client()

    def build():
        pdu = smpplib.smpp.make_pdu(command_name, client=client, **fields, **tlvs)
        pdu.sequence = 1234
        return pdu.generate()

    return build, lambda data: smpplib.smpp.parse_pdu(data, client=client)


def per_call_us(statement, number):
    # Best of 5 runs: the machine is shared and noisy; the minimum is the honest cost.
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per run")
    number = parser.parse_args().number

    cases = [("submit_sm (UCS2 + UDH)", c.SUBMIT_SM, "submit_sm", SUBMIT, {}),
             ("deliver_sm (receipt + TLVs)", c.DELIVER_SM, "deliver_sm", DELIVER, RECEIPT_TLVS)]
    print(f"{'case':30} {'op':7} {'payam µs':>9} {'smpplib µs':>11} {'ratio':>7}")
    for label, command_id, command_name, fields, tlvs in cases:
        our_build, our_parse = ours(command_id, fields, tlvs)
        their_build, their_parse = theirs(command_name, fields, tlvs)
        data = our_build()
        # Same PDU (TLV order may differ: smpplib writes them in its own order).
        assert decode(data) == decode(their_build()), f"{label}: the codecs disagree"
        assert decode(data).fields == fields
        for op, our_call, their_call in (
                ("encode", our_build, their_build),
                ("decode", lambda: our_parse(data), lambda: their_parse(data))):
            our_us = per_call_us(our_call, number)
            their_us = per_call_us(their_call, max(number // 10, 100))
            print(f"{label:30} {op:7} {our_us:9.2f} {their_us:11.2f} "
                  f"{their_us / our_us:6.1f}×")


if __name__ == "__main__":
    main()
