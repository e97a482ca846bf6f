"""The SMSC simulator as a subprocess, driven by an independent blocking client (smpplib)
and raw sockets over loopback, plus its JSON control API."""

import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gateway.simulator.smsc import SMSCFactory
from gateway.smpp.pdu import PDU, Framer, PDUError, decode, encode

REPO = Path(__file__).resolve().parent.parent
PERSIAN = "شهروند گرامی، اظهارنامه\u200cی مالیاتی شما ثبت شد."
# 100 UTF-16 units: more than one UCS2 SMS (70), less than two parts (134).
LONG_PERSIAN = ("پیام شما درباره\u200cی پرونده\u200cی مالیاتی دریافت شد و به زودی بررسی می\u200cشود؛ "
                * 2)[:100]
DEFAULTS = {"throttle_every": 0, "throttle_rate": 0.0, "fail_every": 0, "fail_status": 0x45,
            "drop_after": 0, "drop_repeat": False, "id_format": "hex", "receipts": "both",
            "receipt_delay_s": 0.05, "receipt_stat": "DELIVRD",
            "undeliverable_fraction": 0.0, "ack_delay_s": 0.0, "malformed_every": 0,
            "mo_coding": "auto"}
GENERIC_NACK = 0x80000000
ENQUIRE_LINK = 0x00000015
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSMITTER = 0x00000002
BIND_RECEIVER = 0x00000001
DELIVER_SM = 0x00000005


class SimProcess:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from gateway.simulator.main import run_simulator; "
             "sys.exit(run_simulator(sys.argv[1:]))",
             "--port", "0", "--control-port", "0", "--receipt-delay", "0.05", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = [None]
        reader = threading.Thread(target=lambda: ready.__setitem__(0, self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(15)
        line = ready[0] or ""
        if not line.startswith("SMSC_SIM_READY"):
            self.stop()
            raise AssertionError(f"simulator did not start: {line!r}")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.port = int(fields["smpp"].rsplit(":", 1)[1])
        self.control_port = int(fields["control"].rsplit(":", 1)[1])

    def http(self, method, path, body=None, timeout=5):
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode())
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def control(self, method, path, body=None):
        status, data = self.http(method, path, body)
        assert status == 200, (status, data)
        return data

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def simulator():
    process = SimProcess()
    yield process
    process.stop()


@pytest.fixture
def sim(simulator):
    """The shared simulator with default behaviour and nothing recorded."""
    simulator.control("POST", "/behaviour", DEFAULTS)
    simulator.control("POST", "/reset")
    return simulator


class Client:
    """smpplib with every PDU it reads kept, deliver_sm answered, error PDUs not raised."""

    def __init__(self, port, mode="transceiver", system_id="mci", password="secret"):
        self.smpp = smpplib.client.Client("127.0.0.1", port, timeout=0.5,
                                          allow_unknown_opt_params=True)
        self.received = []            # deliver_sm
        self.responses = []           # submit_sm_resp, any status
        self.smpp.set_message_received_handler(lambda pdu: self.received.append(pdu))
        self.smpp.set_message_sent_handler(lambda pdu: self.responses.append(pdu))
        self.smpp.set_error_pdu_handler(self._error)
        self.smpp.connect()
        try:
            getattr(self.smpp, f"bind_{mode}")(system_id=system_id, password=password)
        except Exception:
            self.smpp.disconnect()
            raise

    def _error(self, pdu):
        # smpplib hands an error submit_sm_resp to the sent handler as well: keep it there.
        if pdu.command != "submit_sm_resp":
            raise AssertionError(f"unexpected error PDU {pdu.command} status {pdu.status}")

    def submit(self, text=b"Hello citizen", destination="989121234567", **fields):
        fields.setdefault("data_coding", 0)
        return self.smpp.send_message(
            source_addr_ton=3, source_addr_npi=0, source_addr="40401234",
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=destination,
            short_message=text, **fields)

    def read_until(self, done, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for PDUs from the simulator")
            self.smpp.read_once()

    def close(self):
        try:
            self.smpp.unbind()
        finally:
            self.smpp.disconnect()


@pytest.fixture
def clients(sim):
    opened = []

    def open_client(**kwargs):
        client = Client(sim.port, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        if client.smpp._socket is not None:
            client.smpp.disconnect()


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def test_submit_gets_an_id_and_a_delivery_receipt_carrying_it(sim, clients):
    client = clients()
    client.submit(registered_delivery=1)
    client.read_until(lambda: client.responses and client.received)

    [resp] = client.responses
    message_id = _text(resp.message_id)
    assert resp.status == 0 and message_id
    int(message_id, 16)                                   # hex by default
    [receipt] = client.received
    assert receipt.esm_class == 0x04
    text = _text(receipt.short_message)
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 ")
    assert "stat:DELIVRD err:000 text:Hello citizen" in text
    assert _text(receipt.receipted_message_id) == message_id
    assert receipt.message_state == 2
    assert _text(receipt.source_addr) == "989121234567"     # from the citizen, back to us
    assert _text(receipt.destination_addr) == "40401234"
    stats = sim.control("GET", "/stats")
    assert stats["submits"] == 1 and stats["receipts"] == 1
    assert [s["system_id"] for s in stats["sessions"]] == ["mci"]


def test_mixed_ids_put_the_decimal_form_in_receipts(sim, clients):
    sim.control("POST", "/behaviour", {"id_format": "mixed", "receipts": "text",
                                       "undeliverable_fraction": 1.0})
    client = clients()
    client.submit(registered_delivery=1)
    client.read_until(lambda: client.responses and client.received)
    hex_id = _text(client.responses[0].message_id)
    text = _text(client.received[0].short_message)
    assert text.startswith(f"id:{int(hex_id, 16)} ") and "stat:UNDELIV" in text
    assert getattr(client.received[0], "receipted_message_id", None) in (None, "", b"")


def test_throttle_every_second_submit(sim, clients):
    sim.control("POST", "/behaviour", {"throttle_every": 2})
    client = clients()
    for n in range(6):
        client.submit(destination=f"98912000000{n}")
    client.read_until(lambda: len(client.responses) == 6)
    statuses = {r.sequence: r.status for r in client.responses}
    assert [statuses[seq] for seq in sorted(statuses)] == [0, 0x58] * 3
    stats = sim.control("GET", "/stats")
    assert (stats["submits"], stats["throttled"]) == (3, 3)
    recorded = [s["destination_addr"] for s in sim.control("GET", "/submits")["submits"]]
    assert recorded == ["989120000000", "989120000002", "989120000004"]


def test_fail_every_uses_the_configured_status(sim, clients):
    sim.control("POST", "/behaviour", {"fail_every": 3, "fail_status": 0x0B})
    client = clients()
    for _ in range(3):
        client.submit()
    client.read_until(lambda: len(client.responses) == 3)
    assert sorted(r.status for r in client.responses) == [0, 0, 0x0B]
    assert sim.control("GET", "/stats")["failed"] == 1


def test_control_api_shows_a_ucs2_persian_submit_decoded(sim, clients):
    client = clients()
    client.submit(PERSIAN.encode("utf-16-be"), destination="989351234567", data_coding=8)
    # Two concatenated parts of one message, 8-bit reference 0x2A.
    halves = [PERSIAN[:20], PERSIAN[20:]]
    for seq, half in enumerate(halves, 1):
        client.submit(bytes((5, 0, 3, 0x2A, 2, seq)) + half.encode("utf-16-be"),
                      destination="989351234568", data_coding=8, esm_class=0x40)
    client.read_until(lambda: len(client.responses) == 3)

    listing = sim.control("GET", "/submits?after=0&limit=10")
    single, first, second = listing["submits"]
    assert [s["index"] for s in listing["submits"]] == [1, 2, 3]
    assert single["destination_addr"] == "989351234567" and single["data_coding"] == 8
    assert single["text"] == PERSIAN and single["concat"] is None
    assert single["short_message"] == PERSIAN.encode("utf-16-be").hex()
    assert (single["source_addr"], single["source_addr_ton"]) == ("40401234", 3)
    assert single["message_id"] == _text(min(client.responses, key=lambda r: r.sequence).message_id)
    assert first["concat"] == {"ref": 0x2A, "total": 2, "seq": 1}
    assert first["text"] + second["text"] == PERSIAN
    # `after` pages on the running index.
    assert [s["index"] for s in sim.control("GET", "/submits?after=2")["submits"]] == [3]


def test_injected_mo_reaches_the_client(sim, clients):
    client = clients()
    answers = {}

    def post(name, body):
        answers[name] = sim.http("POST", "/mo", body)

    poster = threading.Thread(target=post, args=("sms", {
        "from": "989121234567", "to": "40401234", "text": LONG_PERSIAN}))
    poster.start()
    client.read_until(lambda: len(client.received) == 2)
    poster.join(5)
    assert answers["sms"] == (200, {"statuses": [0, 0], "parts": 2})
    first, second = client.received
    assert first.data_coding == 8 and first.esm_class & 0x40
    udh_len = first.short_message[0] + 1
    body = first.short_message[udh_len:] + second.short_message[second.short_message[0] + 1:]
    assert body.decode("utf-16-be") == LONG_PERSIAN
    assert _text(first.source_addr) == "989121234567"

    assert sim.control("GET", "/stats")["mo"] == 2


def test_injected_ussd_step_carries_its_tlvs(sim):
    # smpplib cannot parse a deliver_sm with ussd_service_op (its #104): a raw socket can.
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(_raw_pdu(BIND_TRANSCEIVER, 1, b"mci\0secret\0\0\x34\0\0\0"))
        assert _read_pdu(sock)[:3] == (BIND_TRANSCEIVER | 0x80000000, 0, 1)
        answer = {}
        poster = threading.Thread(target=lambda: answer.update(result=sim.http("POST", "/mo", {
            "from": "989121234567", "to": "*4*0135#", "text": "*4*0135#",
            "ussd_op": 1, "its_session_info": 0x1200, "service_type": "USSD"})))
        poster.start()
        command_id, _, sequence, body = _read_pdu(sock)
        assert command_id == DELIVER_SM
        sock.sendall(_raw_pdu(DELIVER_SM | 0x80000000, sequence, b"\0"))
        poster.join(5)
    assert answer["result"] == (200, {"statuses": [0], "parts": 1})
    fields, tlvs = _parse_sm_body(body)
    assert fields["service_type"] == b"USSD" and fields["short_message"] == b"*4*0135#"
    assert fields["source_addr"] == b"989121234567" and fields["data_coding"] == 0
    assert tlvs == {0x0501: b"\x01", 0x1383: b"\x12\x00"}


def test_mo_without_a_receiver_and_bad_control_requests_are_refused(sim):
    status, body = sim.http("POST", "/mo", {"from": "989121234567", "to": "4040", "text": "hi"})
    assert status == 409 and "no receiver" in body["error"]
    status, body = sim.http("POST", "/mo", {"from": "989121234567", "text": "hi"})
    assert status == 400 and "to" in body["error"]
    status, body = sim.http("POST", "/behaviour", {"throttle_evry": 2})
    assert status == 400 and "throttle_evry" in body["error"]
    status, body = sim.http("POST", "/behaviour", {"id_format": "octal"})
    assert status == 400 and "id_format" in body["error"]
    assert sim.control("GET", "/behaviour")["id_format"] == "hex"


def test_receipt_waits_for_a_receiver_of_the_same_system_id(sim, clients):
    transmitter = clients(mode="transmitter", system_id="irancell")
    transmitter.submit(registered_delivery=1)
    transmitter.read_until(lambda: transmitter.responses)
    time.sleep(0.2)                       # past the receipt delay, with nobody to receive
    assert sim.control("GET", "/stats")["receipts_pending"] == 1
    receiver = clients(mode="receiver", system_id="irancell")
    receiver.read_until(lambda: receiver.received)
    assert _text(receiver.received[0].receipted_message_id) == _text(
        transmitter.responses[0].message_id)


def test_drop_after_closes_without_answering_then_serves_again(sim, clients):
    sim.control("POST", "/behaviour", {"drop_after": 3})
    client = clients()
    for _ in range(3):
        client.submit()
    with pytest.raises(smpplib.exceptions.ConnectionError):
        client.read_until(lambda: False)
    assert len(client.responses) == 2
    assert sim.control("GET", "/stats")["drops"] == 1
    again = clients()
    for _ in range(3):
        again.submit()
    again.read_until(lambda: len(again.responses) == 3)   # dropped once, not again
    assert all(r.status == 0 for r in again.responses)


def _raw_pdu(command_id, sequence, body=b""):
    return struct.pack(">IIII", 16 + len(body), command_id, 0, sequence) + body


def _parse_sm_body(body):
    """The fields a test looks at in a deliver_sm body, and its TLVs by tag."""
    fields, pos = {}, 0

    def cstring(name):
        nonlocal pos
        end = body.index(b"\0", pos)
        fields[name], pos = body[pos:end], end + 1

    def octets(*names):
        nonlocal pos
        for name in names:
            fields[name], pos = body[pos], pos + 1

    cstring("service_type")
    octets("source_addr_ton", "source_addr_npi")
    cstring("source_addr")
    octets("dest_addr_ton", "dest_addr_npi")
    cstring("destination_addr")
    octets("esm_class", "protocol_id", "priority_flag")
    cstring("schedule_delivery_time")
    cstring("validity_period")
    octets("registered_delivery", "replace_if_present_flag", "data_coding",
           "sm_default_msg_id", "sm_length")
    fields["short_message"], pos = body[pos:pos + fields["sm_length"]], pos + fields["sm_length"]
    tlvs = {}
    while pos < len(body):
        tag, length = struct.unpack(">HH", body[pos:pos + 4])
        tlvs[tag], pos = body[pos + 4:pos + 4 + length], pos + 4 + length
    return fields, tlvs


def _read_pdu(sock):
    """(command_id, status, sequence, body), or None once the peer closed (FIN or RST)."""
    header = b""
    while len(header) < 16:
        try:
            chunk = sock.recv(16 - len(header))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        header += chunk
    length, command_id, status, sequence = struct.unpack(">IIII", header)
    body = b""
    while len(body) < length - 16:
        body += sock.recv(length - 16 - len(body))
    return command_id, status, sequence, body


def test_garbage_gets_generic_nack_and_the_session_lives_on(sim):
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(_raw_pdu(0x00000999, 7) + _raw_pdu(ENQUIRE_LINK, 8))
        assert _read_pdu(sock)[:3] == (GENERIC_NACK, smpplib.consts.SMPP_ESME_RINVCMDID, 7)
        assert _read_pdu(sock)[:3] == (ENQUIRE_LINK | 0x80000000, 0, 8)
        # A command_length below the header size cannot be framed: the session is closed.
        sock.sendall(struct.pack(">IIII", 8, ENQUIRE_LINK, 0, 9))
        assert _read_pdu(sock) is None


def test_required_credentials_are_checked(tmp_path):
    process = SimProcess("--system-id", "mci", "--password", "secret")
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            Client(process.port, password="wrong")
        assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RINVPASWD
        good = Client(process.port)
        good.close()
        stats = process.control("GET", "/stats")
        assert (stats["binds"], stats["bind_failures"], stats["unbinds"]) == (1, 1, 1)
    finally:
        process.stop()


# --- in process, on a Clock: the timed behaviours ------------------------------------------

class _Wire:
    """One SMSCProtocol on an in-memory transport, driven with our own codec."""

    def __init__(self, factory):
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.framer = Framer()
        self.sequence = 0

    def send(self, command_id, **fields):
        self.sequence += 1
        self.protocol.dataReceived(encode(PDU(command_id, self.sequence, fields=fields)))
        return self.sequence

    def read(self):
        data = self.transport.value()
        self.transport.clear()
        return [decode(frame) for frame in self.framer.feed(data)]


@pytest.fixture
def clocked():
    clock = Clock()
    clock.advance(1_000_000)
    factory = SMSCFactory(reactor=clock, tick_s=0.01)
    factory.doStart()
    yield clock, factory
    factory.doStop()


def test_ack_delay_holds_responses_until_due(clocked):
    clock, factory = clocked
    factory.apply_behaviour({"ack_delay_s": 0.5, "receipts": "none"})
    wire = _Wire(factory)
    wire.send(BIND_TRANSCEIVER, system_id="mci", password="x")
    assert [p.status for p in wire.read()] == [0]
    first, second = wire.send(4, destination_addr="1"), wire.send(4, destination_addr="2")
    clock.advance(0.3)
    assert wire.read() == []
    clock.advance(0.3)
    assert [(p.sequence, p.status) for p in wire.read()] == [(first, 0), (second, 0)]


def test_malformed_every_answers_accepted_submits_with_each_broken_kind_in_turn(clocked):
    clock, factory = clocked
    factory.apply_behaviour({"malformed_every": 2, "receipts": "none"})
    wire = _Wire(factory)
    wire.send(BIND_TRANSCEIVER, system_id="mci", password="x")
    wire.read()
    answers = []
    for n in range(8):
        sequence = wire.send(4, destination_addr=str(n))
        answers.append((sequence, wire.transport.value()))
        wire.transport.clear()
    good = [decode(raw) for _, raw in answers[0::2]]
    assert [(p.command_id, p.status) for p in good] == [(0x80000004, 0)] * 4
    (s2, lying), (s4, truncated), (s6, garbage), (s8, wrong) = answers[1::2]
    length, command_id, status, sequence = struct.unpack(">IIII", lying[:16])
    assert (length, command_id, status, sequence) == (len(lying) + 4, 0x80000004, 0, s2)
    for sequence, raw in ((s4, truncated), (s6, garbage)):
        assert struct.unpack(">IIII", raw[:16])[1:] == (0x80000004, 0, sequence)
        with pytest.raises(PDUError):
            decode(raw)
    assert b"\0" not in truncated[16:]
    assert garbage[16:].split(b"\0")[1]            # stray octets after the id's NUL
    answered = decode(wrong)
    assert (answered.command_id, answered.sequence, answered.status) == (0x80000005, s8, 0)
    # Accepted all the same: recorded, counted.
    assert len(factory.records) == 8
    assert (factory.counters["submits"], factory.counters["malformed"]) == (8, 4)
    factory.apply_behaviour({"malformed_every": 0})
    sequence = wire.send(4, destination_addr="9")
    assert decode(wire.transport.value()).sequence == sequence


def test_throttle_rate_refuses_above_the_rate_within_each_second(clocked):
    clock, factory = clocked
    factory.apply_behaviour({"throttle_rate": 3, "receipts": "none"})
    wire = _Wire(factory)
    wire.send(BIND_TRANSMITTER, system_id="mci")
    wire.read()
    for _ in range(5):
        wire.send(4, destination_addr="989121234567")
    assert [p.status for p in wire.read()] == [0, 0, 0, 0x58, 0x58]
    clock.advance(1.0)
    wire.send(4, destination_addr="989121234567")
    assert [p.status for p in wire.read()] == [0]


def test_unanswered_receipt_is_offered_again_after_the_session_is_lost(clocked):
    clock, factory = clocked
    first = _Wire(factory)
    first.send(BIND_TRANSCEIVER, system_id="mci")
    first.send(4, destination_addr="989121234567", registered_delivery=1,
               short_message=b"hello")
    [_, resp] = first.read()
    clock.advance(0.25)
    [receipt] = first.read()
    assert receipt.command_id == DELIVER_SM and receipt.fields["esm_class"] == 0x04
    assert receipt.get_tlv(0x001E) == resp.fields["message_id"]
    first.protocol.connectionLost(Failure(ConnectionLost()))     # never answered
    second = _Wire(factory)
    second.send(BIND_RECEIVER, system_id="mci")
    second.read()
    clock.advance(0.02)
    [again] = second.read()
    assert again.get_tlv(0x001E) == resp.fields["message_id"]
    assert b"stat:DELIVRD" in again.fields["short_message"]


def test_refused_receipt_is_retried_and_data_sm_is_recorded(clocked):
    clock, factory = clocked
    wire = _Wire(factory)
    wire.send(BIND_TRANSCEIVER, system_id="mci")
    wire.read()
    data_sm = PDU(0x00000103, 50, fields={"source_addr": "40401234",
                                          "destination_addr": "989121234567",
                                          "registered_delivery": 1, "data_coding": 8})
    data_sm.set_tlv(0x0424, PERSIAN.encode("utf-16-be"))
    wire.protocol.dataReceived(encode(data_sm))
    [resp] = wire.read()
    assert (resp.command_id, resp.sequence, resp.status) == (0x80000103, 50, 0)
    [record] = factory.records.after(0, 10)
    assert record["command"] == "data_sm" and record["text"] == PERSIAN
    assert record["message_id"] == resp.fields["message_id"]

    clock.advance(0.25)
    [receipt] = wire.read()
    wire.protocol.dataReceived(encode(receipt.response(0x64)))   # ESME_RX_T_APPN
    clock.advance(0.5)
    assert wire.read() == []
    clock.advance(0.6)
    [again] = wire.read()
    assert again.get_tlv(0x001E) == resp.fields["message_id"]
    wire.protocol.dataReceived(encode(again.response(0)))
    stats = factory.stats()
    assert (stats["receipts"], stats["receipt_errors"], stats["receipts_pending"]) == (2, 1, 0)


def test_a_transceiver_gets_the_receipts_of_its_own_submits(sim, clients):
    # Two "operators" of one simulator may bind with one system_id (the demo's three did):
    # each receipt must come back on the bind that carried its message, as an operator's
    # SMSC answers on that operator's binds, never round robin onto the other's.
    first, second = clients(system_id="payam"), clients(system_id="payam")
    for _ in range(4):
        first.submit(registered_delivery=1)
    first.read_until(lambda: len(first.responses) == 4)
    first.read_until(lambda: len(first.received) == 4)
    ids = {_text(r.message_id) for r in first.responses}
    assert {_text(d.receipted_message_id) for d in first.received} == ids
