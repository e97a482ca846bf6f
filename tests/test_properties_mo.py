"""Property test of MO reassembly over the real store (issue 13): the parts of a
concatenated SMS in any order, any of them repeated, make exactly one inbox message,
the text exactly; with parts missing, one partial message after the timeout, never
none and never two."""

import itertools
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threaded_clock import ThreadedClock
from test_mo_intake import AGENCIES, pdu

from gateway.inbound import InboundClassifier
from gateway.inbound.intake import REASSEMBLY_TIMEOUT_S
from gateway.inbound.mo_read import MISSING_PART
from gateway.inbox.filing import Inbox
from gateway.smpp import constants as c
from gateway.store import Store

_citizens = itertools.count(1_000_000)


@pytest.fixture(scope="module")
def world():
    """One store for every example (a fresh one each would cost more than the test);
    each example writes as a citizen of its own."""
    directory = tempfile.TemporaryDirectory(prefix="payam-prop-mo-")
    clock = ThreadedClock()
    store = Store(f"{directory.name}/gateway.db", clock, commit_interval=0.0)
    store.open()
    classifier = InboundClassifier(store, clock, agencies=AGENCIES, inbox=Inbox(store))
    yield clock, store, classifier
    clock.wait(store.close())
    directory.cleanup()


def _parts(text, ref, source):
    octets = text.encode("utf-16-be")
    chunks = [octets[i:i + 134] for i in range(0, len(octets), 134)]
    total = len(chunks)
    return [pdu(body=bytes((5, 0, 3, ref, total, seq)) + chunk, source=source,
                esm_class=c.ESM_CLASS_UDHI, data_coding=8)
            for seq, chunk in enumerate(chunks, 1)]


def _settle(clock, store, classifier):
    for _ in range(2):
        clock.wait(classifier.intake.sweep())
        clock.wait(store.settle_mo_sets([]))
        clock.wait(store.settle_mo_sets([]))


def _inbox_of(clock, store, citizen):
    messages = clock.wait(store.list_inbox("tax", 0, 100_000))
    return [m for m in messages if m.citizen == citizen]


WORD = st.text(st.sampled_from("سلامپرونده‌ی۰۱۲۳ abc"), min_size=1, max_size=12)
TEXTS = st.lists(WORD, min_size=12, max_size=40).map(" ".join).filter(
    lambda t: len(t.encode("utf-16-be")) > 134)


@settings(max_examples=25)
@given(TEXTS, st.integers(0, 255), st.data())
def test_parts_in_any_order_with_repeats_make_one_whole_message(world, text, ref, data):
    clock, store, classifier = world
    number = next(_citizens)
    source, citizen = f"0912{number:07d}", f"98912{number:07d}"
    parts = _parts(text, ref, source)
    indices = list(range(len(parts)))
    repeats = data.draw(st.lists(st.sampled_from(indices), max_size=4))
    missing = data.draw(st.sets(st.sampled_from(indices), max_size=len(parts) - 1))
    order = data.draw(st.permutations(
        [i for i in indices if i not in missing] + [i for i in repeats if i not in missing]))
    for index in order:
        status = clock.wait(classifier.received("mci", None, parts[index]))
        assert status == c.ESME_ROK
    _settle(clock, store, classifier)
    if not missing:
        [message] = _inbox_of(clock, store, citizen)
        assert message.text == text and not message.partial
        return
    assert _inbox_of(clock, store, citizen) == []          # waits for the rest
    clock.advance(REASSEMBLY_TIMEOUT_S + 1)
    _settle(clock, store, classifier)
    [message] = _inbox_of(clock, store, citizen)
    assert message.partial and MISSING_PART in message.text
    # What came is there, in its place: every present part's text, in order.
    pieces = [parts[i].fields["short_message"][6:].decode("utf-16-be", "replace")
              for i in indices if i not in missing]
    position = 0
    for piece in pieces:
        found = message.text.find(piece.strip(), position)
        assert found >= 0
        position = found
