"""The inbound USSD entry's answers: a bind that cannot take the answer this instant
(window full, write buffer full, TPS spent, throttled) gets it again shortly, within a
bound, instead of the page being lost; a bind that is gone is not retried."""

from twisted.internet import defer
from twisted.internet.task import Clock

from gateway.inbound.record import Inbound
from gateway.inbound.ussd import ANSWER_WITHIN_S, UssdRequests
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU
from gateway.smpp.pool import NoSession, SessionGone
from gateway.ussd.engine import Page


class Dialogs:
    def step(self, operator, kind, msisdn, key, text):
        return defer.succeed(Page("خانه", False))


class Pool:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.sent = []

    def answering(self, session):
        return session

    def submit(self, pdu, via=None):
        self.sent.append(pdu)
        self.via = via
        outcome = self.outcomes.pop(0) if self.outcomes else c.ESME_ROK
        if isinstance(outcome, Exception):
            return defer.fail(outcome)
        return defer.succeed(PDU(c.SUBMIT_SM_RESP, status=outcome))


def dial():
    pdu = PDU(c.DELIVER_SM, 1, fields={"source_addr": "989121234567",
                                       "destination_addr": "4040",
                                       "short_message": b"*4*0135#"})
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, 1)
    return pdu


def entry(pool, clock):
    ussd = UssdRequests(store=None, clock=clock)
    ussd.use(Dialogs(), {"mci": pool})
    return ussd


def test_a_busy_bind_gets_the_answer_again_shortly():
    clock = Clock()
    pool = Pool([NoSession("window full"), NoSession("TPS budget spent"),
                 c.ESME_RTHROTTLED])
    status = []
    entry(pool, clock).handle(Inbound("mci", object(), dial(), 0.0)).addCallback(
        status.append)
    assert status == [c.ESME_ROK]                  # acked at once
    assert len(pool.sent) == 1
    clock.pump([0.05] * 20)
    assert len(pool.sent) == 4                     # three refusals, then taken
    clock.advance(ANSWER_WITHIN_S)
    assert len(pool.sent) == 4


def test_retries_are_bounded_in_time_and_a_lost_bind_is_not_retried():
    clock = Clock()
    pool = Pool([NoSession("full")] * 1000)
    entry(pool, clock).handle(Inbound("mci", object(), dial(), 0.0))
    clock.pump([0.05] * 400)
    assert 10 < len(pool.sent) < ANSWER_WITHIN_S / 0.02 + 2
    gone = Pool([SessionGone("lost")])
    entry(gone, clock).handle(Inbound("mci", object(), dial(), clock.seconds()))
    clock.pump([0.05] * 100)
    assert len(gone.sent) == 1


def test_the_answer_goes_on_the_requests_session_and_a_last_refusal_is_logged(caplog):
    clock = Clock()
    pool = Pool([NoSession("full")] * 1000)
    session = object()
    with caplog.at_level("INFO", logger="payam.inbound.ussd"):
        entry(pool, clock).handle(Inbound("mci", session, dial(), 0.0))
        assert pool.via is session
        clock.pump([0.05] * 200)
    assert pool.via is session                    # every retry on the same session
    # the last retry's refusal is told (not an unhandled error in a Deferred)
    assert any("not sent on mci" in r.getMessage() for r in caplog.records)
