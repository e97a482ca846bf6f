"""The broadcast bodies parsed as they arrive (gateway/http/broadcast_body.py): the same
entries and fields however the body is cut into pieces, and malformed ones refused."""

import json

import pytest

from gateway.http.broadcast_body import BodyError, JsonBody, LineBody


class Sink:
    def __init__(self):
        self.entries = []

    def add(self, entry, where):
        self.entries.append((entry, where))


def parse(body_class, data, piece, *args):
    sink = Sink()
    body = body_class(sink, *args)
    for start in range(0, len(data), piece):
        body.feed(data[start:start + piece])
    return sink.entries, body.end()


DOCUMENT = {"to": ["09121234567", "۰۹۱۲۱۲۳۴۵۶۸", {"to": "+989121234569"}, 12],
            "text": "سلام \"دنیا\"", "from": "40401234", "priority": "high",
            "validity_s": 3600, "receipt": False}


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 10_000])
def test_json_members_and_numbers_are_the_same_however_the_body_is_cut(piece):
    data = json.dumps(DOCUMENT, ensure_ascii=False, indent=1).encode()
    entries, fields = parse(JsonBody, data, piece)
    assert entries == [("09121234567", "to[0]"), ("۰۹۱۲۱۲۳۴۵۶۸", "to[1]"),
                       ("+989121234569", "to[2]"), (12, "to[3]")]
    assert fields == {k: v for k, v in DOCUMENT.items() if k != "to"}


@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_ndjson_and_csv_lines_however_the_body_is_cut(piece):
    entries, _ = parse(LineBody, b'"0912"\r\n\n{"to": "0913"}\n"0914"', piece, "ndjson")
    assert entries == [("0912", "line 1"), ("0913", "line 3"), ("0914", "line 4")]
    entries, _ = parse(LineBody, b'"msisdn","name"\n09121234567,"a"\n"0935",b\n', piece,
                       "csv")
    assert entries == [("09121234567", "line 2"), ("0935", "line 3")]


@pytest.mark.parametrize("data", [
    b'["0912"]', b'{"to": "0912"}', b'{"to": ["0912",]}', b'{"to": [] "text": "x"}',
    b'{"text": "a", "text": "b"}', b'{"to": []} x', b'{"to": ["0912"', b'{"to": [0912]}',
    b'{"to": ["\xff"]}'])
def test_malformed_json_bodies_are_refused(data):
    with pytest.raises(BodyError):
        parse(JsonBody, data, 3)


def test_a_line_that_never_ends_is_refused_before_it_grows_without_bound():
    body = LineBody(Sink(), "ndjson")
    with pytest.raises(BodyError):
        for _ in range(100):
            body.feed(b"9" * 4096)


def test_members_beyond_the_known_ones_are_refused_as_they_come_not_held_to_the_end():
    # A streamed body has no size limit: before, every unknown member was kept in
    # `fields` until the object ended (then refused), so a body of many large unknown
    # members grew without bound.
    body = JsonBody(Sink(), members={"from", "text", "to"})
    body.feed(b'{"from": "40401234", ')
    with pytest.raises(BodyError, match="unknown fields: x0"):
        for n in range(100):
            body.feed(b'"x%d": "' % n + b"a" * 60_000 + b'",')
    assert len(body.fields) <= 2


def test_without_a_member_list_every_member_is_handed_over():
    entries, fields = parse(JsonBody, b'{"to": [], "extra": 1}', 4)
    assert fields == {"extra": 1}
