"""A broadcast's intake is its hot path: a million recipients pass it before the 202.
Budgets of Python calls per recipient (deterministic, where CPU time on a shared machine
is not; see test_hot_path_calls.py), and the fast paths' answers equal the general ones."""

import sys

import pytest
from twisted.internet import defer

from gateway.http.broadcast_body import LineBody
from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.outbound.broadcast import Broadcasts


class Store:
    def __init__(self):
        self.rows = []

    def new_message_id(self):
        return "b1"

    def add_broadcast_recipients(self, broadcast_id, rows):
        self.rows.extend(rows)
        return defer.succeed(len(rows))


class Flow:
    def pause_body(self):
        pass

    def resume_body(self):
        pass


class Accepting:
    def admit(self):
        pass


class Agency:
    id = "crisis"


def intake(store, routes=None, batch=10_000):
    broadcasts = Broadcasts(store, None, Accepting(), clock=None, batch=batch,
                            route_of=routes or (lambda msisdn: "mci"))
    return broadcasts.begin(Agency(), Flow())


def python_calls(f, *args):
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        f(*args)
    finally:
        sys.setprofile(None)
    return calls[1:]


def ndjson(first, count):
    return "".join(f'"0912{n:07d}"\n' for n in range(first, first + count)).encode()


@pytest.mark.parametrize("kind, body", [
    ("ndjson", ndjson(0, 1000)),
    ("csv", "".join(f"0912{n:07d}\n" for n in range(1000)).encode())])
def test_a_thousand_recipients_cost_at_most_two_python_calls_each(kind, body):
    # Before the block path: _one → add → normalize_msisdn → _is_ascii_digits,
    # _national_significant → route_of: 6 calls per recipient (8 with the daemon's
    # route_of; 5.5 µs per recipient measured).  Now normalize_msisdn and route_of.
    store = Store()
    sink = intake(store)
    lines = LineBody(sink, kind)
    calls = python_calls(lines.feed, body)
    assert sink.valid == 1000 and len(sink._batch) == 1000
    assert len(calls) <= 2 * 1000 + 20, f"{len(calls)} calls: {sorted(set(calls))}"


def test_blocks_keep_every_line_number_for_the_report_and_the_same_rows():
    store = Store()
    sink = intake(store, batch=4)
    lines = LineBody(sink, "ndjson")
    for piece in (b'"09121234567"\n"0912"\n"+989121234568"\n', b'\n{"to": "00989121234569"}\n',
                  b'"9121234570"\n"989121234571"\n"09121234567"\n"0912123', b'4572"'):
        lines.feed(piece)
    lines.end()
    assert (sink.entries, sink.valid, sink.invalid) == (8, 7, 1)
    assert [r["entry"] for r in sink.reported] == ["line 2"]
    assert store.rows + sink._batch == [[989121234567 + n, "mci"] for n in (0, 1, 2, 3, 4, 0, 5)]
    assert len(store.rows) == 4
    with pytest.raises(Exception, match="line 10 is not JSON"):
        lines.feed(b'"0913", 1\n')


def test_the_batches_written_hold_exactly_batch_rows():
    store = Store()
    sink = intake(store, batch=300)
    LineBody(sink, "ndjson").feed(ndjson(0, 1000))
    assert len(store.rows) == 900 and len(sink._batch) == 100


@pytest.mark.parametrize("value", [
    "09121234567", "989121234567", "0912123456", "091212345678", "9891212345678",
    "98912123456", "08121234567", "988121234567", "00989121234567", "+989121234567",
    "9121234567", "۰۹۱۲۱۲۳۴۵۶۷", "0912123456٧", "09121234567 ", "０９１２１２３４５６７"])
def test_the_fast_forms_answer_as_the_general_parse(value):
    from gateway import numbers

    def general(text):
        try:
            digits = text.strip().translate(numbers._DIGITS)
            body = digits[1:] if digits.startswith("+") else digits
            if not numbers._is_ascii_digits(body):
                return "invalid"
            national = numbers._national_significant(digits, text)
            if len(national) != 10 or national[0] != "9":
                return "invalid"
            return "98" + national
        except InvalidNumber:
            return "invalid"

    try:
        fast = normalize_msisdn(value)
    except InvalidNumber:
        fast = "invalid"
    assert fast == general(value)
