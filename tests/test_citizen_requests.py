"""Hostile input to the partner apps' request readers (gateway/http/citizen_requests.py):
cursors forged, oversized or not ASCII; reply bodies with repeated, wrong-typed or
oversized fields. Each is a 400 with its code, never a 500."""

import base64
import json

import pytest

from gateway.http.citizen_requests import (
    MAX_REPLY_CHARS, decode_cursor, encode_cursor, messages_query, reply_body)
from gateway.http.errors import ApiError

NID = "0013542419"
NUMBER = "09121234567"


def _b64(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_round_trips():
    cursor = encode_cursor(1700000000.25, "m-1")
    assert decode_cursor(cursor) == (1700000000.25, "m-1")


@pytest.mark.parametrize("cursor", [
    "",                                   # empty
    "A" * 161,                            # over the cap
    "x" * 100_000,                        # far over it
    "abc=",                               # padding given
    "ab+/",                               # not base64url
    "ЖЖЖЖ",                               # not ASCII
    _b64("c1:1:m-1") + "A",               # a cursor with a tail
    _b64("c2:1.5:m-1"),                   # another version
    _b64("c1:-1:m-1"),                    # a negative time
    _b64("c1:1.50:m-1"),                  # not the form this API writes
    _b64("c1:1e9:m-1"),                   # an exponent
    _b64("c1:1.5:m 1"),                   # an id that is not one
    _b64("c1:1.5:" + "m" * 65),           # an id over 64
    base64.urlsafe_b64encode(b"\xff\xfe:1:m").decode().rstrip("="),   # not ASCII inside
])
def test_a_cursor_this_api_did_not_make_is_invalid_request(cursor):
    with pytest.raises(ApiError) as refused:
        decode_cursor(cursor)
    assert refused.value.code == "invalid_request"


@pytest.mark.parametrize("limit", ["0", "101", "-1", "1.5", "١٠", "0010", "9" * 50, ""])
def test_a_limit_out_of_range_or_not_a_number_is_invalid_request(limit):
    with pytest.raises(ApiError) as refused:
        messages_query({"national_id": NID, "msisdn": NUMBER, "limit": limit})
    assert refused.value.code == "invalid_request"


def _reply(**fields):
    document = {"national_id": NID, "msisdn": NUMBER, "in_reply_to": "m-1", "text": "hi"}
    document.update(fields)
    return json.dumps(document).encode()


def test_a_reply_body_is_read():
    assert reply_body(_reply()) == (NID, "989121234567", "m-1", "hi", None)


@pytest.mark.parametrize("body, code", [
    (b"", "invalid_request"),
    (b"[]", "invalid_request"),
    (b"{", "invalid_request"),
    (b"\xff", "invalid_request"),
    (_reply()[:-1] + b', "text": "again"}', "invalid_request"),        # a name twice
    (_reply(extra=1), "invalid_request"),
    (_reply(**{"x" * 10_000: 1}), "invalid_request"),
    (_reply(text=""), "invalid_request"),
    (_reply(text="   "), "invalid_request"),
    (_reply(text=["hi"]), "invalid_request"),
    (_reply(text="x" * (MAX_REPLY_CHARS + 1)), "invalid_request"),
    (_reply(in_reply_to=""), "invalid_request"),
    (_reply(in_reply_to="m" * 65), "invalid_request"),
    (_reply(in_reply_to=7), "invalid_request"),
    (_reply(idempotency_key=""), "invalid_request"),
    (_reply(idempotency_key="k" * 129), "invalid_request"),
    (_reply(idempotency_key=5), "invalid_request"),
    (_reply(national_id=13542419), "invalid_national_id"),
    (_reply(national_id="0" * 10_000), "invalid_national_id"),
    (_reply(national_id="0013542418"), "invalid_national_id"),
    (_reply(msisdn=9121234567), "invalid_number"),
    (_reply(msisdn="9" * 10_000), "invalid_number"),
])
def test_a_hostile_reply_body_is_refused_with_its_code(body, code):
    with pytest.raises(ApiError) as refused:
        reply_body(body)
    assert refused.value.code == code
