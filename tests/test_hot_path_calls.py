"""Budgets of Python calls on the SMPP hot path, once per message (bench/smpp_path.py):
deterministic where CPU time on a shared machine is not.  A call costs ~0.1 µs; issue
7's seams had added ~15 per message (34 → 48 µs/msg) before these budgets held them.
Clocks here are builtins, as the reactor's seconds() is."""

import itertools
import sys

from conftest import operator_config
from twisted.internet import defer

from gateway.config.schema import Routing, RoutingRule
from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.routing import OperatorRouter
from gateway.inbound import InboundClassifier
from gateway.model import ClaimedPart
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU


class BuiltinClock:
    """seconds() a builtin (no Python frame), fixed; callLater as the reactor's."""

    seconds = staticmethod(itertools.repeat(1_700_000_000.0).__next__)

    def __init__(self):
        self.later = []

    def callLater(self, delay, f, *args, **kwargs):
        self.later.append((delay, f, args, kwargs))

        class Call:
            def active(self):
                return True

            def cancel(self):
                pass
        return Call()


def python_calls(f, *args):
    """The names of the Python functions f(*args) runs (builtins not counted)."""
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        f(*args)
    finally:
        sys.setprofile(None)
    return calls[1:]                     # f itself is not counted


class NoStore:
    def apply_receipts(self, *args, **kwargs):
        return defer.succeed([])

    def learned_receipt_ids(self, operator):
        return "raw"


def test_a_receipt_is_classified_and_queued_in_a_few_calls():
    classifier = InboundClassifier(NoStore(), BuiltinClock())
    pdu = PDU(c.DELIVER_SM, fields={"esm_class": c.ESM_CLASS_DELIVERY_RECEIPT,
                                    "short_message": b"id:A1 stat:DELIVRD"})
    pdu.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, "A1")
    pdu.set_tlv(c.TLV_MESSAGE_STATE, c.MESSAGE_STATE_DELIVERED)
    classifier.received("mci", None, pdu)            # the first arms the batch's timer
    calls = python_calls(classifier.received, "mci", None, pdu)
    assert len(calls) <= 7, calls


def test_an_accepted_submit_sm_is_counted_and_queued_for_the_store_in_a_few_calls():
    class Pool:
        on_ready = None

        def bound_count(self):
            return 1

    clock = BuiltinClock()
    routing = Routing(rules=(RoutingRule(prefixes=("98",), operator="mci", fallback=(),
                                         origin="t:1"),), default="mci")
    dispatcher = Dispatcher(None, {"mci": Pool()}, {"mci": operator_config(name="mci")},
                            OperatorRouter(routing), clock=clock)
    dispatcher.running = True
    lane = dispatcher.lanes["mci"]
    part = ClaimedPart("m1", 1, 1, "tax", "40401234", "989121234567", 0, 0, 0, b"hi",
                       True, 0, 2e9)
    resp = PDU(c.SUBMIT_SM_RESP, fields={"message_id": "1A"})
    dispatcher._answered(resp, lane, part)          # arms the record and pump timers
    calls = python_calls(dispatcher._answered, resp, lane, part)
    assert len(calls) <= 3, calls
