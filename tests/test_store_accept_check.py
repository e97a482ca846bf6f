"""Store.accept's quick check (_plainly_valid) never lets through what the full check
(_check_message) refuses, and passes the usual messages without it."""

from dataclasses import replace

import pytest
from threaded_clock import T0

from gateway.model import NewMessage
from gateway.store.store import _check_message, _plainly_valid

GOOD = NewMessage(id="m1", agency="tax", sender="40401234", recipient="989121234567",
                  text="salam", priority=0, reference=None, validity_s=86400, receipt=True,
                  data_coding=0, esm_class=0, parts=[b"salam"], created_at=T0, route="mci",
                  fingerprint=b"f" * 16)

BAD_VALUES = {
    "id": ["", None, 1, b"m1"], "agency": ["", None], "sender": ["", None],
    "recipient": ["", None, 989121234567], "text": [None, b"salam"],
    "priority": [5, -1, None, "0"], "reference": [1, b"r"],
    "validity_s": [0, -5, 1.5, None, "60"], "data_coding": [256, -1, None, 8.0],
    "esm_class": [256, -1, None], "parts": [[], None, ["text"], [b"a", "b"], (b"a",) * 0],
    "created_at": [None, "now"], "route": [1, b"mci"], "fingerprint": ["f", 1],
}
FINE_VALUES = {
    "reference": ["ref"], "route": [None], "fingerprint": [None], "created_at": [1700000000],
    "parts": [[b"a", b"b", b"c"], (b"a",), [bytearray(b"a")]], "priority": [1, 2, True],
    "receipt": [False, 0], "text": [""], "validity_s": [True],
}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_what_the_full_check_refuses_the_quick_one_does_not_pass(field, value):
    m = replace(GOOD, **{field: value})
    with pytest.raises((TypeError, ValueError)):
        _check_message(m)
    assert not _plainly_valid(m)


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in FINE_VALUES.items() for v in vs])
def test_what_the_full_check_takes_is_taken(field, value):
    m = replace(GOOD, **{field: value})
    _check_message(m)            # the quick check may pass it or leave it to this one


def test_the_usual_messages_need_only_the_quick_check():
    assert _plainly_valid(GOOD)
    assert _plainly_valid(replace(GOOD, parts=[b"1", b"2"], data_coding=8, esm_class=0x40))
    assert not _plainly_valid("not a message")
