"""ESMEProtocol against a StringTransport, every timer driven by a Clock."""

import logging
import struct

import pytest
from conftest import operator_config
from twisted.internet import defer, error
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gateway.smpp import constants as c
from gateway.smpp import esme
from gateway.smpp.esme import (BindFailed, ESMEFactory, NotReady, ResponseTimeout,
                               SessionClosed)
from gateway.smpp.pdu import PDU, Framer, decode, encode

TIMEOUT = 10.0
ENQUIRE = 30.0


class Harness:
    """One session wired to a StringTransport; records the factory callbacks."""

    def __init__(self, clock, bind_type="transceiver", window=3, inbound=None,
                 session_inbound=None):
        self.clock = clock
        self.events = []
        self.factory = ESMEFactory(
            operator_config(name="mci", system_id="payam", password="secret",
                            system_type="GOV", window=window, enquire_link_s=ENQUIRE,
                            response_timeout_s=TIMEOUT),
            bind_type=bind_type, clock=clock,
            # Most tests care about the PDU only (inbound(pdu)); session_inbound(session,
            # pdu) is the factory's own callback.
            inbound=session_inbound or (
                None if inbound is None else (lambda session, pdu: inbound(pdu))),
            session_bound=lambda s: self.events.append(("bound", s)),
            session_lost=lambda s: self.events.append(("lost", s)),
            session_ready=lambda s: self.events.append(("ready", s)))
        self.connect()

    def connect(self):
        """A new connection of the same factory (the bind's next session)."""
        self.session = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self._framer = Framer()
        self.session.makeConnection(self.transport)

    def sent(self):
        """PDUs the session wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return [decode(frame) for frame in self._framer.feed(data)]

    def receive(self, pdu):
        self.session.dataReceived(encode(pdu))

    def bind(self):
        (bind,) = self.sent()
        self.receive(bind.response(system_id="SMSC"))
        assert self.session.is_bound
        return bind

    def lose(self):
        self.session.connectionLost(Failure(error.ConnectionDone()))

    def count(self, kind):
        return sum(1 for event, _ in self.events if event == kind)


def submit_sm():
    return PDU(c.SUBMIT_SM, fields={"destination_addr": "989121234567",
                                    "short_message": b"salam"})


def results(d):
    """Collect a Deferred's outcome without leaving an unhandled failure behind."""
    out = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def h(clock):
    return Harness(clock)


# --- bind ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bind_type, command_id", [
    ("transceiver", c.BIND_TRANSCEIVER),
    ("transmitter", c.BIND_TRANSMITTER),
    ("receiver", c.BIND_RECEIVER),
])
def test_bind_sent_on_connect_with_the_configured_fields(clock, bind_type, command_id):
    h = Harness(clock, bind_type=bind_type)
    (bind,) = h.sent()
    assert bind.command_id == command_id
    assert bind.sequence >= 1
    assert bind.fields["system_id"] == "payam"
    assert bind.fields["password"] == "secret"
    assert bind.fields["system_type"] == "GOV"
    assert bind.fields["interface_version"] == 0x34


def test_bound_fires_on_rok_and_owner_is_told(h):
    got = results(h.session.bound)
    assert got == [] and not h.session.can_submit()
    h.bind()
    assert got == [h.session]
    assert h.events == [("bound", h.session)]
    assert h.session.can_submit()
    # A late observer still learns the outcome.
    assert results(h.session.bound) == [h.session]


@pytest.mark.parametrize("status", [c.ESME_RINVPASWD, c.ESME_RBINDFAIL, c.ESME_RALYBND])
def test_bind_refusal_errbacks_and_closes(h, status):
    got = results(h.session.bound)
    (bind,) = h.sent()
    h.receive(bind.response(status=status))
    assert isinstance(got[0].value, BindFailed)
    assert got[0].value.status == status
    assert h.session.bind_status == status
    assert h.transport.disconnecting
    assert not h.session.can_submit()


def test_bind_without_answer_times_out_and_closes(h, clock):
    got = results(h.session.bound)
    clock.advance(TIMEOUT - 1)
    assert got == [] and not h.transport.disconnecting
    clock.advance(2)
    assert got[0].check(ResponseTimeout)
    assert h.transport.disconnecting


def test_connection_lost_before_bind_fails_bound(h):
    got = results(h.session.bound)
    h.lose()
    assert got[0].check(SessionClosed)
    assert ("lost", h.session) in h.events


def test_submit_before_bind_is_refused(h):
    got = results(h.session.send_request(submit_sm()))
    assert got[0].check(NotReady)


def test_receiver_bind_cannot_submit(clock):
    h = Harness(clock, bind_type="receiver")
    h.bind()
    assert not h.session.can_submit()
    assert results(h.session.send_request(submit_sm()))[0].check(NotReady)


# --- window ------------------------------------------------------------------------------
def test_window_limits_outstanding_and_a_response_frees_a_slot(h):
    h.bind()
    pending = [results(h.session.send_request(submit_sm())) for _ in range(3)]
    assert not h.session.can_submit()
    assert h.session.outstanding == 3
    refused = results(h.session.send_request(submit_sm()))
    assert refused[0].check(NotReady)
    sent = h.sent()
    assert [p.command_id for p in sent] == [c.SUBMIT_SM] * 3
    assert len({p.sequence for p in sent}) == 3

    h.receive(sent[1].response(message_id="abc"))
    assert pending[1][0].fields["message_id"] == "abc"
    assert pending[0] == [] and pending[2] == []
    assert h.session.can_submit() and h.session.outstanding == 2
    assert h.count("ready") == 1


def test_a_corked_burst_leaves_in_one_write_in_order(h):
    h.bind()
    writes = []
    h.transport.write = lambda data, write=h.transport.write: (writes.append(data),
                                                               write(data))
    assert h.session.cork()
    assert not h.session.cork()                      # one cork at a time
    pending = [results(h.session.send_request(submit_sm())) for _ in range(2)]
    h.receive(PDU(c.ENQUIRE_LINK, 77))               # its answer queues behind them
    assert writes == [] and h.transport.value() == b""
    h.session.uncork()
    assert len(writes) == 1
    sent = h.sent()
    assert [p.command_id for p in sent] == [c.SUBMIT_SM, c.SUBMIT_SM, c.ENQUIRE_LINK_RESP]
    h.session.uncork()                               # nothing held: nothing written
    assert len(writes) == 1
    h.session.send_request(submit_sm())             # uncorked: written at once
    assert len(writes) == 2 and pending == [[], []]


def test_a_session_closed_while_corked_sends_what_it_held_first(h):
    h.bind()
    assert h.session.cork()
    results(h.session.send_request(submit_sm()))
    h.session._close("framing error")                # e.g. a bad frame in the same read
    assert [p.command_id for p in h.sent()] == [c.SUBMIT_SM]
    assert h.transport.disconnecting
    h.session.uncork()
    assert h.factory.corked is None


def test_a_session_lost_while_corked_writes_nothing(h):
    h.bind()
    assert h.session.cork()
    results(h.session.send_request(submit_sm()))
    h.lose()
    h.session.uncork()
    assert h.sent() == [] and h.factory.corked is None


def test_unencodable_pdu_fails_without_using_a_slot(h):
    h.bind()
    bad = PDU(c.SUBMIT_SM, fields={"no_such_field": 1})
    assert results(h.session.send_request(bad))[0].check(ValueError)
    assert h.session.outstanding == 0 and h.sent() == []


def test_error_status_response_is_delivered_not_failed(h):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.receive(sent.response(status=c.ESME_RTHROTTLED))
    assert got[0].status == c.ESME_RTHROTTLED


def test_generic_nack_for_an_outstanding_request_is_its_answer(h):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.receive(PDU(c.GENERIC_NACK, sent.sequence, c.ESME_RINVCMDLEN))
    assert got[0].command_id == c.GENERIC_NACK
    assert got[0].status == c.ESME_RINVCMDLEN
    assert h.session.outstanding == 0


def test_response_with_unknown_sequence_is_ignored(h):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.receive(PDU(c.SUBMIT_SM_RESP, sent.sequence + 100, 0, {"message_id": "x"}))
    assert got == [] and h.session.outstanding == 1
    assert not h.transport.disconnecting


@pytest.mark.parametrize("body, message_id", [
    (b"A" * 100 + b"\0", "A" * 64),                  # over 65 octets: cut to 64
    (b"ID42\0\x01\x02\x03", "ID42"),                  # stray octets after the NUL
    (b"ID42", "ID42"),                                 # no NUL at all
])
def test_malformed_ok_response_is_an_answer_with_what_can_be_read(h, caplog, body, message_id):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.session.dataReceived(struct.pack(">IIII", 16 + len(body), c.SUBMIT_SM_RESP, 0,
                                       sent.sequence) + body)
    (resp,) = got
    assert (resp.command_id, resp.status) == (c.SUBMIT_SM_RESP, c.ESME_ROK)
    assert resp.fields == {"message_id": message_id}
    assert h.session.outstanding == 0 and not h.transport.disconnecting
    assert "ALERT" in caplog.text and "malformed submit_sm_resp" in caplog.text


def test_malformed_error_response_keeps_its_status(h):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.session.dataReceived(struct.pack(">IIII", 19, c.SUBMIT_SM_RESP, c.ESME_RSYSERR,
                                       sent.sequence) + b"xyz")
    assert got[0].status == c.ESME_RSYSERR and got[0].fields == {}


def test_responses_for_unknown_sequences_are_logged_once_per_interval(h, clock, caplog):
    h.bind()
    for n in range(500):
        h.receive(PDU(c.SUBMIT_SM_RESP, 1000 + n, 0, {"message_id": "x"}))
    lines = [r for r in caplog.records if "unknown seq" in r.getMessage()]
    assert len(lines) == 1
    clock.advance(11)
    h.receive(PDU(c.SUBMIT_SM_RESP, 5000, 0, {"message_id": "x"}))
    lines = [r.getMessage() for r in caplog.records if "unknown seq" in r.getMessage()]
    assert len(lines) == 2 and "499 more like this" in lines[1]


def test_sequence_numbers_wrap_and_skip_outstanding(h):
    h.bind()
    h.session._next_sequence = esme.MAX_SEQUENCE
    first = h.session.send_request(submit_sm())
    second = h.session.send_request(submit_sm())
    seqs = [p.sequence for p in h.sent()]
    assert seqs == [esme.MAX_SEQUENCE, 1] or seqs == [esme.MAX_SEQUENCE, 2]
    for d in (first, second):
        results(d)


# --- timeouts -----------------------------------------------------------------------------
def test_response_timeout_errbacks_after_the_deadline(h, clock):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    h.sent()
    clock.advance(TIMEOUT - 1)
    assert got == []
    clock.advance(2)
    assert got[0].check(ResponseTimeout)
    assert h.session.outstanding == 0
    assert h.count("ready") == 1
    assert not h.transport.disconnecting       # one timeout is not a dead session


def test_consecutive_timeouts_drop_the_session(h, clock):
    h.bind()
    outcomes = [results(h.session.send_request(submit_sm()))
                for _ in range(esme.MAX_CONSECUTIVE_TIMEOUTS)]
    clock.advance(TIMEOUT + 1)
    assert all(o[0].check(ResponseTimeout) for o in outcomes)
    assert h.transport.disconnecting


def test_a_late_answer_between_timeouts_resets_the_count(h, clock):
    h.bind()
    results(h.session.send_request(submit_sm()))
    clock.advance(TIMEOUT / 2)
    answered = results(h.session.send_request(submit_sm()))
    results(h.session.send_request(submit_sm()))
    sent = h.sent()
    clock.advance(TIMEOUT / 2 + 1)          # the first one times out
    h.receive(sent[1].response(message_id="1"))
    assert answered[0].status == 0
    clock.advance(TIMEOUT)                  # the third times out: 1 in a row, not 2
    assert not h.transport.disconnecting


# --- keep-alive -----------------------------------------------------------------------------
def test_enquire_link_sent_when_idle_and_answer_keeps_the_session(h, clock):
    h.bind()
    clock.advance(ENQUIRE - 2)
    assert h.sent() == []
    clock.advance(3)
    (enquire,) = h.sent()
    assert enquire.command_id == c.ENQUIRE_LINK
    h.receive(enquire.response())
    clock.advance(TIMEOUT + 1)
    assert not h.transport.disconnecting


def test_unanswered_enquire_link_drops_the_session(h, clock):
    h.bind()
    clock.advance(ENQUIRE + 1)
    (enquire,) = h.sent()
    assert enquire.command_id == c.ENQUIRE_LINK
    clock.advance(TIMEOUT + 1)
    assert h.transport.disconnecting


def test_answers_to_our_requests_postpone_enquire_link(h, clock):
    h.bind()
    for _ in range(3):
        clock.advance(ENQUIRE - 5)
        got = results(h.session.send_request(submit_sm()))
        (sent,) = h.sent()
        h.receive(sent.response(message_id="1"))
        assert got[0].status == 0
    assert h.sent() == []


def test_requests_from_the_smsc_do_not_prove_it_alive(h, clock):
    """A peer flooding us with its own requests but never answering ours is dropped."""
    h.bind()
    for _ in range(int((ENQUIRE + TIMEOUT) / 5) + 2):
        clock.advance(5)
        h.receive(PDU(c.ENQUIRE_LINK, 77))          # the SMSC's own keep-alive
    assert c.ENQUIRE_LINK in [p.command_id for p in h.sent()]
    assert h.transport.disconnecting


# --- back-pressure --------------------------------------------------------------------------
def test_session_is_a_push_producer_on_its_transport(h):
    assert h.transport.producer is h.session and h.transport.streaming


def test_a_full_write_buffer_stops_reading_and_submitting_until_drained(h):
    h.bind()
    h.events.clear()
    h.session.pauseProducing()                    # the transport's buffer is full
    assert h.transport.producerState == "paused"  # we stop reading from the peer
    assert not h.session.can_submit() and h.session.free_slots == 0
    h.session.resumeProducing()
    assert h.transport.producerState == "producing"
    assert h.session.can_submit() and h.count("ready") == 1


def test_a_peer_that_does_not_read_is_dropped_after_the_stall_limit(h, clock):
    h.bind()
    h.session.pauseProducing()
    clock.advance(esme.WRITE_STALL_S - 1)
    assert not h.transport.disconnecting
    clock.advance(2)
    assert h.transport.disconnected                # aborted: the buffer cannot drain


def test_writes_piling_up_while_blocked_are_bounded(h, clock):
    h.bind()
    h.session.pauseProducing()
    # Answers to requests already read still go out; each counts against the limit.
    n = 0
    while not h.transport.disconnecting and n < 10 ** 6:
        h.session._write(PDU(c.ENQUIRE_LINK_RESP, n))
        n += 1
    assert h.transport.disconnected
    assert n * 16 <= esme.MAX_BLOCKED_WRITE_BYTES + 16


def test_smsc_enquire_link_answered_at_once(h):
    h.bind()
    h.receive(PDU(c.ENQUIRE_LINK, 4242))
    (resp,) = h.sent()
    assert resp.command_id == c.ENQUIRE_LINK_RESP
    assert resp.sequence == 4242 and resp.status == 0


# --- bad input --------------------------------------------------------------------------------
def test_unknown_command_gets_generic_nack_and_session_stays(h):
    h.bind()
    h.session.dataReceived(struct.pack(">IIII", 16, 0x00000099, 0, 31))
    (nack,) = h.sent()
    assert nack.command_id == c.GENERIC_NACK
    assert nack.status == c.ESME_RINVCMDID
    assert nack.sequence == 31
    assert not h.transport.disconnecting
    assert h.session.can_submit()


def test_request_we_do_not_serve_gets_generic_nack(h):
    h.bind()
    h.receive(PDU(c.QUERY_SM, 8, fields={"message_id": "1", "source_addr": "4040"}))
    (nack,) = h.sent()
    assert (nack.command_id, nack.status, nack.sequence) == (
        c.GENERIC_NACK, c.ESME_RINVCMDID, 8)


def test_bind_from_the_smsc_is_answered_already_bound(h):
    h.bind()
    h.receive(PDU(c.BIND_TRANSMITTER, 9, fields={"system_id": "x"}))
    (resp,) = h.sent()
    assert (resp.command_id, resp.status, resp.sequence) == (
        c.BIND_TRANSMITTER_RESP, c.ESME_RALYBND, 9)


def test_command_length_under_16_closes_the_connection(h):
    h.bind()
    h.session.dataReceived(struct.pack(">IIII", 12, c.ENQUIRE_LINK, 0, 1))
    assert h.transport.disconnecting
    assert h.sent() == []


def test_frames_split_across_reads_are_reassembled(h):
    h.bind()
    data = encode(PDU(c.ENQUIRE_LINK, 5)) + encode(PDU(c.ENQUIRE_LINK, 6))
    for i in range(len(data)):
        h.session.dataReceived(data[i:i + 1])
    assert [p.sequence for p in h.sent()] == [5, 6]


# --- inbound --------------------------------------------------------------------------------------
def deliver_sm(sequence):
    return PDU(c.DELIVER_SM, sequence, fields={
        "source_addr": "989121234567", "destination_addr": "40401234",
        "short_message": b"reply"})


def test_inbound_answered_only_after_the_handler_fires(clock):
    handled = []

    def inbound(pdu):
        d = defer.Deferred()
        handled.append((pdu, d))
        return d

    h = Harness(clock, inbound=inbound)
    h.bind()
    h.receive(deliver_sm(17))
    assert len(handled) == 1 and handled[0][0].fields["destination_addr"] == "40401234"
    assert h.sent() == []                       # not stored yet: no answer
    handled[0][1].callback(c.ESME_RX_P_APPN)
    (resp,) = h.sent()
    assert (resp.command_id, resp.sequence, resp.status) == (
        c.DELIVER_SM_RESP, 17, c.ESME_RX_P_APPN)


def test_inbound_handler_is_told_the_session_it_came_in_on(clock):
    seen = []
    h = Harness(clock, session_inbound=lambda session, pdu: (
        seen.append((session, pdu.sequence)) or c.ESME_ROK))
    h.bind()
    h.receive(deliver_sm(4))
    assert seen == [(h.session, 4)]
    (resp,) = h.sent()
    assert (resp.sequence, resp.status) == (4, c.ESME_ROK)


def test_data_sm_answered_with_data_sm_resp(clock):
    h = Harness(clock, inbound=lambda pdu: c.ESME_ROK)
    h.bind()
    h.receive(PDU(c.DATA_SM, 3, fields={"source_addr": "989121234567",
                                       "destination_addr": "40401234"}))
    (resp,) = h.sent()
    assert (resp.command_id, resp.sequence, resp.status) == (c.DATA_SM_RESP, 3, 0)


@pytest.mark.parametrize("handler", [
    lambda pdu: defer.fail(RuntimeError("disk full")),
    lambda pdu: 1 / 0,
    lambda pdu: "ok",                  # not a status
])
def test_inbound_handler_failure_answers_temporary_error(clock, handler):
    h = Harness(clock, inbound=handler)
    h.bind()
    h.receive(deliver_sm(5))
    (resp,) = h.sent()
    assert (resp.command_id, resp.sequence, resp.status) == (
        c.DELIVER_SM_RESP, 5, c.ESME_RX_T_APPN)


@pytest.mark.parametrize("command_id", [c.DELIVER_SM, c.DATA_SM])
@pytest.mark.parametrize("status", [c.ESME_ROK, c.ESME_RX_T_APPN, 0xFFFFFFFF])
def test_inbound_answer_octets_are_the_codecs(clock, command_id, status):
    h = Harness(clock, inbound=lambda pdu: status)
    h.bind()
    request = PDU(command_id, 0x7FFFFFFF, fields={"source_addr": "989121234567",
                                                   "destination_addr": "40401234"})
    h.receive(request)
    assert h.transport.value() == encode(request.response(status=status, message_id=""))


@pytest.mark.parametrize("handler", [
    lambda pdu: defer.succeed(c.ESME_RX_P_APPN),       # already fired
    lambda pdu: c.ESME_RX_P_APPN,                      # plain int
    lambda pdu: Failure(RuntimeError("x")),            # a Failure returned, not raised
])
def test_inbound_handler_result_forms(clock, handler):
    h = Harness(clock, inbound=handler)
    h.bind()
    h.receive(deliver_sm(6))
    (resp,) = h.sent()
    expected = c.ESME_RX_T_APPN if isinstance(handler(None), Failure) else c.ESME_RX_P_APPN
    assert (resp.command_id, resp.sequence, resp.status) == (c.DELIVER_SM_RESP, 6, expected)


def test_inbound_handler_coroutine_is_awaited(clock):
    waiting = defer.Deferred()

    async def inbound(pdu):
        return await waiting

    h = Harness(clock, inbound=inbound)
    h.bind()
    h.receive(deliver_sm(9))
    assert h.sent() == []
    waiting.callback(c.ESME_ROK)
    (resp,) = h.sent()
    assert (resp.sequence, resp.status) == (9, c.ESME_ROK)


def test_inbound_beyond_the_cap_answered_queue_full(clock, monkeypatch):
    monkeypatch.setattr(esme, "MAX_UNANSWERED_INBOUND", 2)
    waiting = []
    h = Harness(clock, inbound=lambda pdu: waiting.append(defer.Deferred()) or waiting[-1])
    h.bind()
    for seq in (1, 2, 3):
        h.receive(deliver_sm(seq))
    (resp,) = h.sent()
    assert (resp.sequence, resp.status) == (3, c.ESME_RMSGQFUL)
    waiting[0].callback(0)
    h.receive(deliver_sm(4))                # room again
    assert [(p.sequence, p.status) for p in h.sent()] == [(1, 0)]
    assert len(waiting) == 3


def test_inbound_on_a_transmitter_bind_is_refused(clock):
    h = Harness(clock, bind_type="transmitter", inbound=lambda pdu: 0)
    h.bind()
    h.receive(deliver_sm(8))
    (resp,) = h.sent()
    assert (resp.sequence, resp.status) == (8, c.ESME_RINVBNDSTS)


# --- unbind and loss ------------------------------------------------------------------------------
def test_unbind_from_the_smsc_is_answered_and_closes(h):
    h.bind()
    h.receive(PDU(c.UNBIND, 12))
    (resp,) = h.sent()
    assert (resp.command_id, resp.sequence, resp.status) == (c.UNBIND_RESP, 12, 0)
    assert h.transport.disconnecting
    assert not h.session.can_submit()


def test_graceful_unbind_waits_for_outstanding_then_unbinds(h, clock):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    (submit,) = h.sent()
    closed = results(h.session.unbind(5.0))
    assert not h.session.can_submit()
    assert results(h.session.send_request(submit_sm()))[0].check(SessionClosed)
    assert h.sent() == []                   # still draining
    h.receive(submit.response(message_id="9"))
    assert got[0].status == 0
    (unbind,) = h.sent()
    assert unbind.command_id == c.UNBIND
    assert not h.transport.disconnecting
    h.receive(unbind.response())
    assert h.transport.disconnecting
    assert closed == []
    h.lose()
    assert closed == [None]


def test_graceful_unbind_gives_up_draining_after_the_timeout(h, clock):
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    h.sent()
    closed = results(h.session.unbind(2.0))
    clock.advance(2.5)
    (unbind,) = h.sent()
    assert unbind.command_id == c.UNBIND
    assert not h.transport.disconnecting
    clock.advance(3)                        # no unbind_resp either: close within the budget
    assert h.transport.disconnecting
    h.lose()
    assert got[0].check(SessionClosed) and closed == [None]


def test_connection_lost_fails_outstanding_and_tells_the_owner(h):
    h.bind()
    outcomes = [results(h.session.send_request(submit_sm())) for _ in range(2)]
    h.lose()
    assert all(o[0].check(SessionClosed) for o in outcomes)
    assert h.events[-1] == ("lost", h.session)
    assert not h.session.can_submit()
    assert results(h.session.send_request(submit_sm()))[0].check(SessionClosed)
    assert h.factory.current is None


def test_factory_rejects_bad_parameters():
    with pytest.raises(ValueError, match="bind_type"):
        ESMEFactory(operator_config(name="x", system_id="a", password="b"), bind_type="both")


@pytest.mark.parametrize("status", [c.ESME_RINVBNDSTS, c.ESME_RALYBND])
def test_a_submit_answered_bind_status_closes_the_session_to_bind_again(h, status):
    h.bind()
    answered = []
    h.session.send_request(submit_sm()).addCallback(answered.append)
    (request,) = h.sent()
    h.receive(request.response(status=status, message_id=""))
    assert [resp.status for resp in answered] == [status]    # the caller hears it too
    assert not h.session.can_submit()
    (unbind,) = h.sent()                    # nothing else in flight: unbind at once
    assert unbind.command_id == c.UNBIND
    h.receive(unbind.response())
    assert h.transport.disconnecting
    assert c.status_name(status) in h.session.close_reason


def test_an_ordinary_refusal_keeps_the_session(h):
    h.bind()
    h.session.send_request(submit_sm())
    (request,) = h.sent()
    h.receive(request.response(status=c.ESME_RINVDSTADR, message_id=""))
    assert not h.transport.disconnecting and h.session.can_submit()


# --- a rebind answer does not drop what the SMSC accepted (audit 6, item 4) ------------------
def answers_in_one_read(requests, statuses):
    """One TCP read carrying a response per request, in order."""
    return b"".join(encode(request.response(status=status, message_id=f"M{n}"))
                    for n, (request, status) in enumerate(zip(requests, statuses)))


def test_answers_read_with_a_rebind_answer_still_reach_their_requests(h):
    h.bind()
    outcomes = [results(h.session.send_request(submit_sm())) for _ in range(3)]
    requests = h.sent()
    h.session.dataReceived(answers_in_one_read(
        requests, [c.ESME_RINVBNDSTS, c.ESME_ROK, c.ESME_ROK]))
    assert [o[0].status for o in outcomes] == [c.ESME_RINVBNDSTS, c.ESME_ROK, c.ESME_ROK]
    assert [o[0].fields["message_id"] for o in outcomes[1:]] == ["M1", "M2"]


def test_after_a_rebind_answer_no_request_is_taken_and_later_answers_still_count(h, clock):
    h.bind()
    outcomes = [results(h.session.send_request(submit_sm())) for _ in range(3)]
    requests = h.sent()
    h.receive(requests[0].response(status=c.ESME_RALYBND, message_id=""))
    assert not h.session.can_submit() and h.session.free_slots == 0
    assert results(h.session.send_request(submit_sm()))[0].check(SessionClosed)
    assert h.sent() == []                      # nothing new went out
    clock.advance(1)                           # the next read, a moment later
    h.session.dataReceived(answers_in_one_read(requests[1:], [c.ESME_ROK, c.ESME_ROK]))
    assert [o[0].status for o in outcomes[1:]] == [c.ESME_ROK, c.ESME_ROK]
    (unbind,) = h.sent()                       # all answered: unbind, then close
    assert unbind.command_id == c.UNBIND
    h.receive(unbind.response())
    assert h.transport.disconnecting
    assert c.status_name(c.ESME_RALYBND) in h.session.close_reason


def test_the_caller_of_a_rebind_answer_cannot_submit_from_its_callback(h):
    h.bind()
    again = []
    d = h.session.send_request(submit_sm())
    d.addCallback(lambda _resp: again.append(h.session.can_submit()))
    (request,) = h.sent()
    h.receive(request.response(status=c.ESME_RINVBNDSTS, message_id=""))
    assert again == [False]


def test_after_a_rebind_answer_the_wait_for_answers_is_bounded(h, clock):
    h.bind()
    outcomes = [results(h.session.send_request(submit_sm())) for _ in range(2)]
    first, _second = h.sent()
    h.receive(first.response(status=c.ESME_RINVBNDSTS, message_id=""))
    clock.advance(esme.REBIND_DRAIN_S + 0.5)   # the second is never answered
    (unbind,) = h.sent()
    assert unbind.command_id == c.UNBIND
    clock.advance(esme.REBIND_DRAIN_S + 0.5)   # nor the unbind
    assert h.transport.disconnecting
    h.lose()
    assert outcomes[1][0].check(SessionClosed, ResponseTimeout)    # an unknown outcome


# --- logs a peer cannot flood (audit 6, item 9) ----------------------------------------------
def test_alert_notifications_are_logged_once_per_interval_with_a_count(h, clock, caplog):
    caplog.set_level(logging.INFO, logger="payam.smpp.esme")
    h.bind()
    caplog.clear()
    alert = encode(PDU(c.ALERT_NOTIFICATION, 7, fields={"source_addr": "989121234567",
                                                         "esme_addr": "payam"}))
    for _ in range(10):                         # 10,000 PDUs over ten reads
        h.session.dataReceived(alert * 1000)
    lines = [r.getMessage() for r in caplog.records if "alert_notification" in r.getMessage()]
    assert len(lines) == 1, len(lines)
    clock.advance(11)
    h.session.dataReceived(alert)
    lines = [r.getMessage() for r in caplog.records if "alert_notification" in r.getMessage()]
    assert len(lines) == 2 and "9999 more like this" in lines[1]
    assert h.sent() == [] and h.session.is_bound          # still nothing answered


def _failing_store(pdu):
    raise RuntimeError("disk full")


@pytest.mark.parametrize("what, frame, inbound, text", [
    ("a request we do not serve",
     encode(PDU(c.QUERY_SM, 8, fields={"message_id": "1", "source_addr": "4040"})),
     None, "not served"),
    ("an undecodable request", struct.pack(">IIII", 17, c.DELIVER_SM, 0, 8) + b"\xff",
     None, "bad deliver_sm"),
    ("an inbound PDU we cannot store", encode(deliver_sm(8)), _failing_store,
     "not handled"),
])
def test_a_peer_repeating_a_fault_gets_one_line_per_interval(clock, caplog, what, frame,
                                                              inbound, text):
    """Per operator and kind, not one line per PDU (the daemon's RepeatFilter keys by
    template only, so one hostile operator would hide the others' lines)."""
    caplog.set_level(logging.INFO, logger="payam.smpp.esme")
    h = Harness(clock, inbound=inbound)
    h.bind()
    h.session.dataReceived(frame * 1000)
    assert len(h.sent()) == 1000                          # each still answered
    lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
    assert len(lines) == 1, (what, len(lines))


# --- probing after a response timeout (issue 13) ---------------------------------------------
def probe_mode(h, clock):
    """Bind, let one submit time out: the session is probing."""
    h.bind()
    got = results(h.session.send_request(submit_sm()))
    h.sent()
    clock.advance(TIMEOUT + 1)
    assert got[0].check(ResponseTimeout)


def test_after_a_timeout_one_submit_at_a_time_until_it_is_answered(h, clock):
    probe_mode(h, clock)
    assert h.factory.probing and h.session.free_slots == 1
    probe = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    assert not h.session.can_submit() and h.session.free_slots == 0
    refused = results(h.session.send_request(submit_sm()))
    assert refused[0].check(NotReady)
    assert "one submit at a time" in refused[0].getErrorMessage()
    h.receive(sent.response(status=c.ESME_RTHROTTLED))      # any answer will do
    assert probe[0].status == c.ESME_RTHROTTLED
    assert not h.factory.probing and h.session.free_slots == 3
    assert h.events[-1] == ("ready", h.session)


def test_an_enquire_link_answer_reopens_the_window(h, clock):
    probe_mode(h, clock)
    before = h.count("ready")
    clock.advance(ENQUIRE)
    (enquire,) = h.sent()
    assert enquire.command_id == c.ENQUIRE_LINK and h.session.free_slots == 1
    h.receive(enquire.response())
    assert h.session.free_slots == 3 and h.count("ready") == before + 1
    assert not h.transport.disconnecting


def test_with_a_probe_out_an_enquire_link_answer_does_not_reopen(h, clock):
    """A stalled SMSC may answer enquire_link and still hold submits: the probe decides."""
    probe_mode(h, clock)
    clock.advance(ENQUIRE - TIMEOUT - 2)
    probe = results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    clock.advance(2)
    (enquire,) = h.sent()
    assert enquire.command_id == c.ENQUIRE_LINK
    h.receive(enquire.response())
    assert h.factory.probing and h.session.free_slots == 0
    h.receive(sent.response(message_id="1"))
    assert probe[0].status == 0 and h.session.free_slots == 3


def test_a_late_answer_to_a_timed_out_submit_does_not_reopen(h, clock):
    h.bind()
    results(h.session.send_request(submit_sm()))
    (late,) = h.sent()
    clock.advance(TIMEOUT + 1)
    h.receive(late.response(message_id="1"))       # its request is gone: not an answer
    assert h.factory.probing and h.session.free_slots == 1


def test_probing_outlives_the_session_and_a_bind_answer_does_not_end_it(h, clock):
    """A stalled SMSC still answers binds: the next session of the bind probes too."""
    probe_mode(h, clock)
    h.lose()
    h.connect()
    h.bind()
    assert h.session.free_slots == 1
    results(h.session.send_request(submit_sm()))
    (sent,) = h.sent()
    h.receive(sent.response(message_id="1"))
    assert h.session.free_slots == 3


def test_an_answer_to_a_submit_still_in_flight_reopens_the_window(h, clock):
    h.bind()
    first = results(h.session.send_request(submit_sm()))
    clock.advance(TIMEOUT / 2)
    others = [results(h.session.send_request(submit_sm())) for _ in range(2)]
    sent = h.sent()
    clock.advance(TIMEOUT / 2 + 1)              # the first times out, two still out
    assert first[0].check(ResponseTimeout)
    assert h.session.outstanding == 2 and h.session.free_slots == 0
    h.receive(sent[1].response(message_id="2"))     # an answer: the full window again
    assert others[0][0].status == 0 and h.session.free_slots == 2


def test_a_window_of_one_is_never_probing(clock):
    h = Harness(clock, window=1)
    probe_mode(h, clock)
    assert not h.factory.probing and h.session.free_slots == 1


def receipts_classified(clock, applied, prefix, first_sequence, count):
    """A bound session whose inbound PDUs go to a real InboundClassifier over a store
    stand-in whose apply_receipts answers `applied`; `count` receipts received and
    their gathering time passed."""
    from gateway.inbound import InboundClassifier
    from gateway.inbound.receipts import RECEIPT_GATHER_S

    class Store:
        def apply_receipts(self, receipts, receipt_ids, mature_s=None):
            return applied

        def learned_receipt_ids(self, operator):
            return "raw"

    classifier = InboundClassifier(Store(), clock)
    h = Harness(clock, session_inbound=lambda session, pdu: classifier.received(
        "mci", session, pdu))
    h.bind()
    for n in range(count):
        receipt = PDU(c.DELIVER_SM, first_sequence + n, fields={
            "esm_class": c.ESM_CLASS_DELIVERY_RECEIPT,
            "short_message": b"id:%s%d stat:DELIVRD" % (prefix.encode(), n)})
        receipt.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, f"{prefix}{n}")
        receipt.set_tlv(c.TLV_MESSAGE_STATE, c.MESSAGE_STATE_DELIVERED)
        h.receive(receipt)
    clock.advance(RECEIPT_GATHER_S)
    return h


def test_a_batch_of_receipts_is_answered_in_one_write(clock):
    applied = defer.Deferred()
    h = receipts_classified(clock, applied, "A", 10, 3)
    assert h.sent() == []                            # answered once stored
    writes = []
    h.transport.write = lambda data, write=h.transport.write: (writes.append(data),
                                                               write(data))
    applied.callback([True, True, False])
    assert len(writes) == 1
    answers = h.sent()
    assert [(p.command_id, p.sequence, p.status) for p in answers] == [
        (c.DELIVER_SM_RESP, 10 + n, c.ESME_ROK) for n in range(3)]
    assert h.factory.corked is None


class Answer:
    """send_request's `answer`: told as a Deferred would be."""

    def __init__(self):
        self.told = []

    def callback(self, resp):
        self.told.append(("answered", resp))

    def errback(self, error):
        self.told.append(("lost", error))


def test_an_answer_object_is_told_the_response_instead_of_a_deferred(h, clock):
    h.bind()
    answered, timed_out, lost = Answer(), Answer(), Answer()
    assert h.session.send_request(submit_sm(), answered) is answered
    assert h.session.send_request(submit_sm(), timed_out) is timed_out
    first, second = h.sent()
    h.receive(first.response(message_id="abc"))
    assert [(kind, resp.fields["message_id"]) for kind, resp in answered.told] == [
        ("answered", "abc")]
    clock.advance(TIMEOUT + 1)
    assert [(kind, type(e)) for kind, e in timed_out.told] == [("lost", ResponseTimeout)]
    assert h.session.send_request(submit_sm(), lost) is lost
    h.lose()
    assert [(kind, type(e)) for kind, e in lost.told] == [("lost", SessionClosed)]


def test_a_request_refused_before_sending_fails_its_deferred_not_the_answer(h):
    answer = Answer()
    refused = results(h.session.send_request(submit_sm(), answer))   # not bound yet
    assert refused[0].check(NotReady) and answer.told == []


def test_receipts_not_stored_are_answered_with_a_temporary_error(clock):
    failed = defer.Deferred()
    h = receipts_classified(clock, failed, "B", 20, 2)
    assert h.sent() == []
    failed.errback(RuntimeError("disk full"))
    assert [(p.sequence, p.status) for p in h.sent()] == [
        (20, c.ESME_RX_T_APPN), (21, c.ESME_RX_T_APPN)]


def test_a_session_declares_itself_a_push_producer():
    # The transport pauses and resumes it as one (the bound on what a peer that stops
    # reading can pile up); a decorator moved off the class once went unnoticed.
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyClass
    from gateway.smpp.esme import ESMEProtocol
    assert verifyClass(IPushProducer, ESMEProtocol)
