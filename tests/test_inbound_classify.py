"""The inbound table: which entry takes a deliver_sm, and what each one does today.

Receipts are batched into the store's apply_receipts; USSD is kept raw (store_inbound)
until the USSD issue gives it behaviour; a citizen's SMS (4040, an agency's number,
unrouted) goes through the intake (tests/test_mo_intake.py).
"""

import pytest
from twisted.internet import defer

from gateway import metrics
from gateway.config.schema import Agency
from gateway.inbound import Inbound, InboundClassifier
from gateway.inbound.owners import NumberOwners
from gateway.inbound.receipts import RECEIPT_GATHER_S
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU


class FakeStore:
    def __init__(self):
        self.raw = []
        self.receipts = []

    def store_inbound(self, operator, fields, tlvs):
        self.raw.append((operator, dict(fields), dict(tlvs)))
        return defer.succeed(len(self.raw))

    def keep_mo_part(self, part, duplicate_since, max_open_sets):
        return defer.succeed((True, None, []))

    def apply_receipts(self, receipts, id_modes=None, learn=(), mature_s=None):
        self.receipts.extend(receipts)
        return defer.succeed([True] * len(receipts))

    def learned_receipt_ids(self, operator):
        return "raw"


def agency(id_, *numbers):
    return Agency(id=id_, name=id_, keys=(), numbers=numbers, masks=(), ussd_code=None,
                  rate_per_s=10.0, daily_parts=1000, reply_webhook=None)


AGENCIES = (agency("tax", "40401234"), agency("court", "404012345", "40409"))


def deliver_sm(to, esm_class=0, text=b"salam", **tlvs):
    pdu = PDU(c.DELIVER_SM, 1, fields={"source_addr": "989121234567",
                                       "destination_addr": to, "esm_class": esm_class,
                                       "short_message": text})
    for tag, value in tlvs.items():
        pdu.set_tlv(getattr(c, f"TLV_{tag.upper()}"), value)
    return pdu


def receipt(to="4040", smsc_id="A1"):
    return deliver_sm(to, esm_class=c.ESM_CLASS_DELIVERY_RECEIPT, text=b"",
                      receipted_message_id=smsc_id, message_state=c.MESSAGE_STATE_DELIVERED)


@pytest.fixture
def classifier(clock):
    return InboundClassifier(FakeStore(), clock, agencies=AGENCIES)


def kind(classifier, pdu):
    return classifier.classify(Inbound("mci", None, pdu, 0.0))


@pytest.mark.parametrize("pdu,expected", [
    (receipt("4040"), "receipt"),                        # a receipt to 4040 is a receipt
    (receipt("40401234"), "receipt"),
    (deliver_sm("*4*0135#", ussd_service_op=c.USSD_PSSR_INDICATION), "ussd"),
    (deliver_sm("4040", ussd_service_op=c.USSD_USSR_CONFIRM), "ussd"),
    (deliver_sm("4040"), "authenticity"),
    (deliver_sm("40401234"), "agency"),
    (deliver_sm("4040123456"), "agency"),                # under court's 404012345
    (deliver_sm("404099"), "agency"),                    # under court's 40409
    (deliver_sm("40405"), "unrouted"),                   # a 4040 number nobody owns
    (deliver_sm("989121111111"), "unrouted"),
    # Marked as a receipt: the receipt entry takes it even without an id (kept raw).
    (deliver_sm("40401234", esm_class=c.ESM_CLASS_DELIVERY_RECEIPT, text=b"stat:DELIVRD"),
     "receipt"),
])
def test_the_first_entry_that_matches_takes_it(classifier, pdu, expected):
    assert kind(classifier, pdu) == expected


def test_the_table_is_in_the_documented_order(classifier):
    assert [entry.name for entry in classifier.table] == [
        "receipt", "ussd", "authenticity", "agency", "unrouted"]


def test_a_number_owned_exactly_wins_over_a_shorter_owner():
    owners = NumberOwners(AGENCIES)
    assert owners.owner("40401234") == "tax"
    assert owners.owner("404012345") == "court"        # not tax's, though under 40401234
    assert owners.owner("4040123456") == "court"
    assert owners.owner("404012349") == "tax"
    assert owners.owner("4040") is None and owners.owner("") is None


def test_receipts_share_one_store_write_and_are_answered_after_it(classifier, clock):
    store = classifier.receipts.store
    answers = [classifier.received("mci", None, receipt(smsc_id=f"A{n}")) for n in range(3)]
    assert not any(d.called for d in answers) and store.receipts == []
    clock.advance(RECEIPT_GATHER_S)
    assert [r[1] for r in store.receipts] == ["A0", "A1", "A2"]
    assert [d.result for d in answers] == [c.ESME_ROK] * 3
    assert store.raw == []


@pytest.mark.parametrize("pdu", [
    deliver_sm("*4*0135#", ussd_service_op=c.USSD_PSSR_INDICATION),
    deliver_sm("40401234", esm_class=c.ESM_CLASS_DELIVERY_RECEIPT, text=b"stat:DELIVRD"),
])
def test_ussd_and_unreadable_receipts_are_kept_raw_as_today(classifier, pdu):
    # A citizen's SMS (4040, an agency's number, unrouted) goes through the intake
    # instead: tests/test_mo_intake.py.
    store = classifier.receipts.store
    before = metrics.child(metrics.INBOUND, "mci", "mo")._value.get()
    d = classifier.received("mci", None, pdu)
    assert d.result == c.ESME_ROK
    assert store.raw == [("mci", pdu.fields, pdu.tlvs)] and store.receipts == []
    assert metrics.child(metrics.INBOUND, "mci", "mo")._value.get() == before + 1


def test_each_entry_sees_the_operator_session_and_arrival_time(classifier, clock):
    seen = []

    class Spy:
        name = "spy"

        def matches(self, inbound):
            seen.append(inbound)
            return False

    classifier.table = (Spy(), *classifier.table)
    session = object()
    clock.advance(42)
    pdu = deliver_sm("4040")
    classifier.received("irancell", session, pdu)
    assert seen == [Inbound("irancell", session, pdu, 42.0)]


def test_a_reload_changes_whose_numbers_are_whose(classifier):
    assert kind(classifier, deliver_sm("40405555")) == "unrouted"
    classifier.update_agencies(AGENCIES + (agency("post", "40405555"),))
    assert kind(classifier, deliver_sm("40405555")) == "agency"
    classifier.update_agencies(())
    assert kind(classifier, deliver_sm("40401234")) == "unrouted"
