"""The simulator's concatenated MO: 8/16-bit UDH or sar_* TLVs, deliver_sm or data_sm,
parts in a chosen order and repeated; read back by the gateway's own MO reader."""

import pytest

from gateway.inbound.mo_read import decode_set, read_part
from gateway.inbound.record import Inbound
from gateway.simulator.mo import build_mo
from gateway.simulator.smsc import _reorder
from gateway.smpp import constants as c

TEXT = "پاسخ شهروند به نامه\u200cی اداره، با جزئیات پرونده و شماره پیگیری ۱۲۳۴۵. " * 3


@pytest.mark.parametrize("concat, command", [
    ("udh8", "deliver_sm"), ("udh16", "deliver_sm"), ("sar", "deliver_sm"),
    ("udh8", "data_sm"), ("sar", "data_sm")])
def test_each_style_reads_back_whole(concat, command):
    pdus = build_mo("989121234567", "40401234", TEXT, ref=7, concat=concat, command=command)
    assert len(pdus) == 4
    assert {p.command_id for p in pdus} == {c.DELIVER_SM if command == "deliver_sm"
                                           else c.DATA_SM}
    parts = [read_part(Inbound("mci", None, p, 0.0)) for p in reversed(pdus)]
    assert len({p.set_key for p in parts}) == 1
    assert sorted(p.seq for p in parts) == [1, 2, 3, 4]
    assert decode_set(sorted(parts, key=lambda p: p.seq), 4) == TEXT
    if concat == "sar":
        assert all(not p.fields["esm_class"] & c.ESM_CLASS_UDHI for p in pdus)
        assert all(c.TLV_SAR_MSG_REF_NUM in p.tlvs for p in pdus)


def test_order_and_repeat():
    pdus = list(range(1, 4))
    assert _reorder(pdus, [3, 1, 2], [2]) == [3, 1, 2, 2]
    for order, repeat in (([1, 2], []), ([1, 1, 2], []), (None, [4]), (None, "1")):
        with pytest.raises(ValueError):
            _reorder(pdus, order, repeat)
    with pytest.raises(ValueError):
        build_mo("989121234567", "40401234", TEXT, ref=1, concat="udh7")
