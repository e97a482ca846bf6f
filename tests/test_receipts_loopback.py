"""Receipts over loopback from hostile SMSCs: early, colliding, never misattributed.

Two operators' SMSCs (our own, raw sockets) hand out the same sequential ids 1, 2, 3, ...
(one answers submit_sm in decimal, the other in hex; both write receipts in decimal).
Most receipts are sent BEFORE the submit_sm_resp: the SMSC holds the response until our
deliver_sm_resp says the receipt is stored.  The others come late, after a few more
submits.  Each receipt tells its own message apart: DELIVRD for an even recipient,
UNDELIV with `err:` = the recipient's last three digits for an odd one.  The real
dispatcher, binds, inbound classifier and store run in this process.
"""

import shutil
import sqlite3
import tempfile
from pathlib import Path

from conftest import answered, operator_config, wait_until
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from gateway.config.schema import Routing, RoutingRule
from gateway.inbound import InboundClassifier
from gateway.dispatch import Dispatcher
from gateway.dispatch.routing import OperatorRouter
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU, Framer, decode, encode
from gateway.smpp.pool import OperatorPool
from gateway.store import NewMessage, Store

PER_OPERATOR = 60
LATE_EVERY = 3          # every third receipt comes after its submit_sm_resp, late
LATE_BY = 4             # ... once this many more submits have arrived
PREFIX = {"mci": "98912", "irancell": "98935"}


class HostileSMSC(protocol.Protocol):
    def connectionMade(self):
        self.framer = Framer()
        self.sequence = 0
        self.held = {}          # deliver_sm sequence → submit_sm_resp bytes, sent on its ack

    def dataReceived(self, data):
        for frame in self.framer.feed(data):
            self.handle(decode(frame))

    def handle(self, pdu):
        smsc = self.factory
        if pdu.command_id in c.BIND_COMMANDS:
            self.transport.write(encode(pdu.response(system_id="HOSTILE")))
        elif pdu.command_id in (c.ENQUIRE_LINK, c.UNBIND):
            self.transport.write(encode(pdu.response()))
        elif pdu.command_id == c.SUBMIT_SM:
            smsc.number += 1
            number = smsc.number
            resp = encode(pdu.response(message_id=smsc.resp_id(number)))
            receipt = self.receipt(number, pdu.fields["destination_addr"])
            if number % LATE_EVERY == 0:
                self.transport.write(resp)
                smsc.late.append((number + LATE_BY, receipt))
            else:
                self.held[receipt.sequence] = resp      # the receipt overtakes it
                self.transport.write(encode(receipt))
            while smsc.late and smsc.late[0][0] <= number:
                self.transport.write(encode(smsc.late.pop(0)[1]))
        elif pdu.command_id == c.DELIVER_SM_RESP:
            smsc.acked += 1
            if pdu.sequence in self.held:
                self.transport.write(self.held.pop(pdu.sequence))

    def receipt(self, number, recipient):
        self.sequence += 1
        tail = recipient[-3:]
        stat, err = ("DELIVRD", "000") if int(tail) % 2 == 0 else ("UNDELIV", tail)
        text = (f"id:{number} sub:001 dlvrd:001 submit date:2401011200 done date:2401011200"
                f" stat:{stat} err:{err} text:x")
        return PDU(c.DELIVER_SM, self.sequence, fields={
            "source_addr": recipient, "destination_addr": "40401234", "esm_class": 0x04,
            "short_message": text.encode("ascii")})


class HostileFactory(protocol.ServerFactory):
    protocol = HostileSMSC
    noisy = False

    def __init__(self, resp_in_hex):
        self.number = 0             # every SMSC counts from 1: ids collide across them
        self.acked = 0
        self.late = []              # (release after this submit number, receipt PDU)
        self.resp_id = (lambda n: f"{n:X}") if resp_in_hex else str

    def release_late(self, connections):
        for session in connections:
            while self.late:
                session.transport.write(encode(self.late.pop(0)[1]))


class EarlyCollidingReceipts(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_every_message_ends_once_by_its_own_receipt(self):
        smscs = {"mci": HostileFactory(resp_in_hex=False),
                 "irancell": HostileFactory(resp_in_hex=True)}
        receipt_ids = {"mci": "raw", "irancell": "dec"}
        connections = {name: [] for name in smscs}
        pools = {}
        # Not self.mktemp(): that writes under the current directory.
        directory = Path(tempfile.mkdtemp(prefix="payam-receipts-"))
        self.addCleanup(shutil.rmtree, directory, True)
        store = Store(directory / "gateway.db", reactor)
        store.open()
        self.addCleanup(store.close)
        inbound = InboundClassifier(store, reactor, receipt_ids=receipt_ids)
        for name, factory in smscs.items():
            original = factory.buildProtocol

            def build(addr, original=original, name=name):
                proto = original(addr)
                connections[name].append(proto)
                return proto

            factory.buildProtocol = build
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            pools[name] = OperatorPool(operator_config(
                name=name, port=port.getHost().port, system_id=name, password="pw",
                system_type="", bind="transceiver", binds=1, window=10, tps=10_000,
                enquire_link_s=30, response_timeout_s=10, reconnect_s=(0.2, 1)),
                inbound_handler=inbound.received, reactor=reactor)
        router = OperatorRouter(Routing(rules=tuple(
            RoutingRule((prefix,), name, (), "test") for name, prefix in PREFIX.items()),
            default=None))
        dispatcher = Dispatcher(store, pools, {name: pool.config for name, pool in pools.items()},
                                router, clock=reactor)
        for pool in pools.values():
            pool.startService()
            self.addCleanup(pool.stopService)
        yield wait_until(reactor, lambda: all(p.bound_count() for p in pools.values()))

        now = reactor.seconds()
        messages = [NewMessage(
            id=store.new_message_id(), agency="tax", sender="40401234",
            recipient=f"{PREFIX[name]}{n:07d}", text="salam", priority=0, reference=None,
            validity_s=3600, receipt=True, data_coding=0, esm_class=0, parts=[b"salam"],
            created_at=now, route=name)
            for n in range(PER_OPERATOR) for name in PREFIX]
        yield store.accept(messages)
        dispatcher.start()
        self.addCleanup(dispatcher.stop_claiming)
        total = PER_OPERATOR
        yield wait_until(reactor, lambda: all(f.number == total for f in smscs.values()))
        for name, factory in smscs.items():
            factory.release_late(connections[name])
        # Every receipt stored (acknowledged) and every submit outcome recorded.
        yield wait_until(reactor, lambda: all(f.acked == total for f in smscs.values())
                         and not _queued(store, messages))

        for m in messages:
            view = answered(store.get_message(m.id))
            tail = m.recipient[-3:]
            if int(tail) % 2 == 0:
                assert (view["status"], view["error"]) == ("delivered", None), view
            else:
                assert (view["status"], view["error"]) == ("failed", f"UNDELIV err:{tail}"), view
        with sqlite3.connect(store.path) as conn:
            counts = conn.execute("SELECT SUM(parts_delivered), SUM(parts_failed)"
                                  " FROM messages").fetchone()
        assert counts == (len(messages) // 2, len(messages) // 2)


def _queued(store, messages):
    return [m for m in messages if answered(store.get_message(m.id))["status"] == "queued"]
