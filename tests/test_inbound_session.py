"""Over loopback: an inbound PDU comes with the session it arrived on, and an answer
`submit(pdu, via=session)` leaves on that same connection, not on the least-loaded one;
via a session that is gone it fails SessionGone instead of moving to another bind.

The SMSC is tests/hostile_smsc.py in its `normal` mode, which records the submits of each
connection apart.
"""

from conftest import operator_config, wait_until
from hostile_smsc import HostileFactory
from twisted.internet import defer, reactor
from twisted.trial import unittest

from gateway.inbound.ussd_fields import answer_tlvs, read_request
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU
from gateway.smpp.pool import OperatorPool, SessionGone


def ussd_dial(sequence):
    pdu = PDU(c.DELIVER_SM, sequence, fields={
        "service_type": "USSD", "source_addr": "989121234567", "destination_addr": "4040",
        "short_message": b"*4*0135#"})
    pdu.set_tlv(c.TLV_USSD_SERVICE_OP, c.USSD_PSSR_INDICATION)
    pdu.set_tlv(c.TLV_ITS_SESSION_INFO, 0x0900)
    return pdu


class SessionAwareInbound(unittest.TestCase):
    timeout = 15

    def setUp(self):
        self.smsc = HostileFactory("normal", reactor)
        port = reactor.listenTCP(0, self.smsc, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: wait_until(reactor, lambda: not self.smsc.links))
        self.inbound = []
        self.pool = OperatorPool(operator_config(
            port=port.getHost().port, bind="transceiver", binds=2, window=10, tps=1000,
            response_timeout_s=5, reconnect_s=(5, 10)),
            inbound_handler=lambda operator, session, pdu: (
                self.inbound.append((operator, session, pdu)), c.ESME_ROK)[1],
            reactor=reactor)
        self.pool.startService()
        self.addCleanup(lambda: self.pool.stopService() if self.pool.running else None)
        return wait_until(reactor, lambda: self.pool.bound_count() == 2
                          and len(self.smsc.links) == 2)

    @defer.inlineCallbacks
    def test_the_answer_goes_out_on_the_bind_the_request_came_in_on(self):
        a, b = self.smsc.links
        b.send(ussd_dial(7))
        yield wait_until(reactor, lambda: self.inbound)
        ((operator, session, pdu),) = self.inbound
        self.assertEqual(operator, "mci")
        # The session is the one whose connection is b's (its local port is b's peer).
        self.assertEqual(session.transport.getHost().port, b.transport.getPeer().port)

        request = read_request(pdu)
        answers = []
        for page in (b"menu", b"more", b"bye"):       # least-loaded would alternate a, b
            answers.append((yield self.pool.submit(PDU(c.SUBMIT_SM, fields={
                "destination_addr": request.msisdn, "short_message": page},
                tlvs=answer_tlvs(request, end=page == b"bye")), via=session)))
        self.assertEqual([r.status for r in answers], [c.ESME_ROK] * 3)
        self.assertEqual(a.submitted, [])
        self.assertEqual([p.fields["short_message"] for p in b.submitted],
                         [b"menu", b"more", b"bye"])
        last = b.submitted[-1]
        self.assertEqual((last.get_tlv(c.TLV_USSD_SERVICE_OP),
                          last.get_tlv(c.TLV_ITS_SESSION_INFO)), (17, 0x0901))

    @defer.inlineCallbacks
    def test_via_a_session_that_was_lost_fails_session_gone(self):
        a, b = self.smsc.links
        b.send(ussd_dial(8))
        yield wait_until(reactor, lambda: self.inbound)
        ((_, session, _),) = self.inbound
        b.transport.loseConnection()
        yield wait_until(reactor, lambda: self.pool.bound_count() == 1)
        failure = yield self.assertFailure(
            self.pool.submit(PDU(c.SUBMIT_SM, fields={"destination_addr": "989121234567",
                                                     "short_message": b"late"}),
                             via=session), SessionGone)
        self.assertIn("no longer bound", str(failure))
        self.assertEqual(a.submitted, [])             # not moved to the other bind
