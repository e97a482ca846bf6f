"""The SMSC side of SMPP 3.4: a real server over TCP that our daemon, tests and benchmark bind to.

`SMSCProtocol` is one ESME connection (bytes in, PDUs out); `SMSCFactory` holds what all
connections share: the behaviour, counters, message ids, recorded submits, receipts owed,
and the one periodic tick that sends held responses and due receipts in batches.
Nothing is logged per PDU: the simulator sits in the benchmark's path.
"""

import logging
from collections import deque

from twisted.internet import defer, protocol
from twisted.internet.task import LoopingCall

from gateway.simulator.behaviour import Behaviour
from gateway.simulator.malformed import KINDS as MALFORMED_KINDS, malformed_resp
from gateway.simulator.mo import build_mo
from gateway.simulator.receipts import PendingReceipt, build_receipt
from gateway.simulator.records import SubmitRecords
from gateway.simulator.ussd import UssdSide
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU, Framer, FramingError, PDUError, decode, encode

log = logging.getLogger("payam.simulator")

BIND_MODES = {
    c.BIND_TRANSMITTER: "transmitter",
    c.BIND_RECEIVER: "receiver",
    c.BIND_TRANSCEIVER: "transceiver",
}
MAX_SEQUENCE = 0x7FFFFFFF
RESPONSE_BIT = c.RESPONSE_BIT
RECEIPT_RETRY_S = 1.0         # an ESME refused a receipt: offer it again this much later
RECEIPT_MAX_ATTEMPTS = 5
MO_LATENCIES_KEPT = 100_000   # MO answer times kept for /stats (the last ones)
_DROP = object()              # decision: close the connection instead of answering

COUNTERS = ("binds", "bind_failures", "unbinds", "submits", "throttled", "failed", "drops",
            "receipts", "receipt_errors", "receipts_abandoned", "mo", "generic_nacks",
            "enquire_links", "malformed")


class NoReceiver(Exception):
    """No bound receiver/transceiver session can take a deliver_sm."""


class SessionGone(Exception):
    """The session closed before the ESME answered."""


class SMSCProtocol(protocol.Protocol):
    """One ESME connection."""

    def __init__(self):
        self.framer = Framer()
        self.mode = None            # "transmitter" | "receiver" | "transceiver" once bound
        self.system_id = None
        self.peer = "?"
        self.closing = False
        self._sequence = 0
        # sequence → PendingReceipt (a receipt in flight) or Deferred (MO / raw inject)
        self.awaiting = {}

    # -- connection ---------------------------------------------------------------------

    def connectionMade(self):
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass                    # not a TCP transport (tests' in-memory transports)
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def connectionLost(self, reason=protocol.connectionDone):
        self.closing = True
        awaiting, self.awaiting = self.awaiting, {}
        self.factory.session_lost(self, awaiting.values())

    @property
    def can_receive(self):
        return self.mode in ("receiver", "transceiver") and not self.closing

    @property
    def can_transmit(self):
        return self.mode in ("transmitter", "transceiver")

    # -- inbound ------------------------------------------------------------------------

    def dataReceived(self, data):
        if self.closing:
            return
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            log.warning("closing %s (%s): unframeable data: %s", self.peer, self.system_id, exc)
            self.closing = True
            self.transport.abortConnection()
            return
        out = []
        for frame in frames:
            if self._handle(frame, out):
                break                   # unbound or dropped: nothing more is read
        if out:
            self.transport.write(b"".join(out))
        if self.closing:
            # An unbind or a simulated drop: what was answered so far still goes out.
            self.transport.loseConnection()

    def _handle(self, frame, out):
        """Answer one frame into `out`; True when the connection is to close after it."""
        try:
            pdu = decode(frame)
        except PDUError as exc:
            self._reject(exc, out)
            return False
        command_id = pdu.command_id
        if command_id == c.SUBMIT_SM or command_id == c.DATA_SM:
            return self._on_submit(pdu, frame, out)
        if command_id & RESPONSE_BIT or command_id == c.GENERIC_NACK:
            self._on_response(pdu)
        elif command_id == c.ENQUIRE_LINK:
            self.factory.counters["enquire_links"] += 1
            out.append(encode(pdu.response(c.ESME_ROK)))
        elif command_id in BIND_MODES:
            out.append(encode(self._on_bind(pdu)))
        elif command_id == c.UNBIND:
            out.append(encode(pdu.response(c.ESME_ROK)))
            self.factory.counters["unbinds"] += 1
            self.closing = True
            return True
        else:
            # Requests we do not serve (query_sm, submit_multi, ...).
            self.factory.counters["generic_nacks"] += 1
            out.append(encode(PDU(c.GENERIC_NACK, pdu.sequence, c.ESME_RINVCMDID)))
        return False

    def _reject(self, exc, out):
        """A PDU we could not decode: its own *_resp when the command is a request we know
        (so the ESME's window frees), else generic_nack."""
        command_id = getattr(exc, "command_id", None) or 0
        sequence = getattr(exc, "sequence", None) or 0
        status = getattr(exc, "status", None) or c.ESME_RINVCMDLEN
        if command_id & RESPONSE_BIT and command_id != c.GENERIC_NACK:
            # A garbled answer still answers: free the slot, as a failure.
            self._on_response(PDU(command_id, sequence, status))
            return
        if command_id in (c.SUBMIT_SM, c.DATA_SM, c.ENQUIRE_LINK, c.UNBIND, *BIND_MODES):
            out.append(encode(PDU(command_id | RESPONSE_BIT, sequence, status)))
        else:
            self.factory.counters["generic_nacks"] += 1
            out.append(encode(PDU(c.GENERIC_NACK, sequence, status)))

    def _on_bind(self, pdu):
        if self.mode is not None:
            return pdu.response(c.ESME_RALYBND)
        system_id = pdu.fields.get("system_id", "")
        status = self.factory.check_credentials(system_id, pdu.fields.get("password", ""))
        if status != c.ESME_ROK:
            self.factory.counters["bind_failures"] += 1
            log.info("refused bind from %s as %r: status 0x%08X", self.peer, system_id, status)
            return pdu.response(status)
        self.mode = BIND_MODES[pdu.command_id]
        self.system_id = system_id
        self.factory.session_bound(self)
        log.info("bound %s from %s as %r", self.mode, self.peer, system_id)
        response = pdu.response(c.ESME_ROK, system_id=self.factory.smsc_system_id)
        response.set_tlv(c.TLV_SC_INTERFACE_VERSION, b"\x34")
        return response

    def _on_submit(self, pdu, frame, out):
        if not self.can_transmit:
            response = encode(pdu.response(c.ESME_RINVBNDSTS))
        else:
            decision = self.factory.decide_submit(self, pdu, frame)
            if decision is _DROP:
                log.info("simulated drop: closing %s (%s) without answering sequence %d",
                         self.peer, self.system_id, pdu.sequence)
                self.closing = True
                return True
            status, message_id = decision
            if status == c.ESME_ROK:
                kind = (self.factory.malformed_turn()
                        if self.factory.behaviour.malformed_every else None)
                if kind is None:
                    response = encode(pdu.response(c.ESME_ROK, message_id=message_id))
                else:
                    response = malformed_resp(kind, pdu.sequence, message_id,
                                              pdu.command_id | RESPONSE_BIT)
                if c.TLV_USSD_SERVICE_OP in pdu.tlvs:
                    self.factory.ussd.answered(pdu)
            else:
                response = encode(pdu.response(status))
        if not self.factory.hold_response(self, response):
            out.append(response)
        return False

    def _on_response(self, pdu):
        entry = self.awaiting.pop(pdu.sequence, None)
        if entry is None:
            return                  # an answer to nothing we sent: nothing to do
        if isinstance(entry, defer.Deferred):
            if not entry.called:        # a waiter that timed out was cancelled already
                entry.callback(pdu)
        else:
            self.factory.receipt_answered(entry, pdu.status)

    # -- outbound -----------------------------------------------------------------------

    def next_sequence(self):
        self._sequence = self._sequence + 1 if self._sequence < MAX_SEQUENCE else 1
        return self._sequence

    def frame_request(self, pdu, waiter):
        """Give `pdu` a sequence, remember who waits for its answer, return its bytes."""
        pdu.sequence = self.next_sequence()
        self.awaiting[pdu.sequence] = waiter
        return encode(pdu)

    def send_request(self, pdu) -> defer.Deferred:
        """Send a request to the ESME; fires with its response PDU (any status), errback
        SessionGone if the connection closes first."""
        waiter = defer.Deferred()
        self.transport.write(self.frame_request(pdu, waiter))
        return waiter


class SMSCFactory(protocol.ServerFactory):
    """Shared state of the simulated SMSC."""

    protocol = SMSCProtocol
    noisy = False                 # no "starting factory" lines: the READY line says it

    def __init__(self, behaviour=None, *, reactor=None, system_id=None, password=None,
                 smsc_system_id="PAYAMSIM", record_capacity=100_000, tick_s=0.01,
                 deliver_window=1000, orphan_capacity=100_000, first_message_id=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.behaviour.validate()
        self.required_system_id = system_id
        self.required_password = password
        self.smsc_system_id = smsc_system_id
        self.deliver_window = deliver_window          # deliver_sm in flight per session
        self.orphan_capacity = orphan_capacity        # receipts kept per unbound system_id
        self.records = SubmitRecords(record_capacity)
        self.counters = dict.fromkeys(COUNTERS, 0)
        # Seconds from each MO PDU written to its deliver_sm_resp (the last ones only).
        self.mo_latencies = deque(maxlen=MO_LATENCIES_KEPT)
        self.sessions = []                  # bound sessions, in bind order
        self._receivers = {}                # system_id → [sessions able to receive]
        self._turn = {}                     # system_id → round-robin position
        self._receipts = deque()            # PendingReceipt, roughly by due time
        self._retries = deque()             # refused receipts, due RECEIPT_RETRY_S later
        self._orphans = {}                  # system_id → receipts waiting for a receiver
        self._held = deque()                # (due, session, bytes): delayed submit_sm_resp
        # Ids start from the clock so a restarted simulator does not reuse them.
        self._next_id = (first_message_id if first_message_id is not None
                         else int(reactor.seconds() * 1000) << 12)
        self._submits_seen = 0
        self._since_drop = 0
        self._rate_window = (0.0, 0)        # (window start, accepted in it)
        self._undeliverable_debt = 0.0
        self._mo_ref = 0
        self.ussd = UssdSide(self)              # the handsets' side of USSD dialogs
        self._tick = LoopingCall(self.tick)
        self._tick.clock = reactor
        self.tick_s = tick_s

    # -- lifecycle ----------------------------------------------------------------------

    def startFactory(self):
        if not self._tick.running:
            self._tick.start(self.tick_s, now=False)

    def stopFactory(self):
        if self._tick.running:
            self._tick.stop()

    # -- sessions -----------------------------------------------------------------------

    def check_credentials(self, system_id, password):
        if self.required_system_id is not None and system_id != self.required_system_id:
            return c.ESME_RINVSYSID
        if self.required_password is not None and password != self.required_password:
            return c.ESME_RINVPASWD
        return c.ESME_ROK

    def session_bound(self, session):
        self.counters["binds"] += 1
        self.sessions.append(session)
        if session.can_receive:
            self._receivers.setdefault(session.system_id, []).append(session)
            orphans = self._orphans.pop(session.system_id, None)
            if orphans:
                self._receipts.extendleft(reversed(orphans))

    def session_lost(self, session, awaiting):
        if session in self.sessions:
            self.sessions.remove(session)
            receivers = self._receivers.get(session.system_id, [])
            if session in receivers:
                receivers.remove(session)
        lost_receipts = []
        for entry in awaiting:
            if isinstance(entry, defer.Deferred):
                if not entry.called:
                    entry.errback(SessionGone(f"session {session.system_id!r} closed first"))
            else:
                lost_receipts.append(entry)
        # A receipt the ESME never acknowledged is owed still: offer it again.
        self._receipts.extendleft(reversed(lost_receipts))
        if session.mode is not None:
            log.info("session %s (%s) closed", session.peer, session.system_id)

    def _receiver(self, system_id, want_room=True):
        """A bound receiver/transceiver of `system_id` (any if None), round robin; with
        want_room, only one with space in its deliver_sm window."""
        if system_id is None:
            candidates = [s for s in self.sessions if s.can_receive]
        else:
            candidates = self._receivers.get(system_id)
        if not candidates:
            return None
        turn = self._turn.get(system_id, 0)
        for offset in range(len(candidates)):
            session = candidates[(turn + offset) % len(candidates)]
            if session.can_receive and (not want_room
                                        or len(session.awaiting) < self.deliver_window):
                self._turn[system_id] = turn + offset + 1
                return session
        return None

    # -- submit_sm ----------------------------------------------------------------------

    def decide_submit(self, session, pdu, frame):
        """(status, message_id) for one submit_sm / data_sm, or _DROP. Records and
        schedules the receipt of the ones accepted."""
        behaviour = self.behaviour
        self._submits_seen += 1
        seen = self._submits_seen
        if behaviour.drop_after:
            self._since_drop += 1
            if self._since_drop >= behaviour.drop_after:
                self._since_drop = 0
                if not behaviour.drop_repeat:
                    behaviour.drop_after = 0
                self.counters["drops"] += 1
                return _DROP
        if behaviour.throttle_every and seen % behaviour.throttle_every == 0:
            self.counters["throttled"] += 1
            return c.ESME_RTHROTTLED, None
        now = self.reactor.seconds()
        if behaviour.throttle_rate:
            start, accepted = self._rate_window
            if now - start >= 1.0:
                start, accepted = now, 0
            if accepted >= behaviour.throttle_rate:
                self._rate_window = (start, accepted)
                self.counters["throttled"] += 1
                return c.ESME_RTHROTTLED, None
            self._rate_window = (start, accepted + 1)
        if behaviour.fail_every and seen % behaviour.fail_every == 0:
            self.counters["failed"] += 1
            return behaviour.fail_status, None

        number = self._next_id
        self._next_id += 1
        if behaviour.id_format == "decimal":
            message_id = receipt_id = str(number)
        else:
            message_id = f"{number:X}"
            receipt_id = str(number) if behaviour.id_format == "mixed" else message_id
        self.counters["submits"] += 1
        self.records.add(frame, session.system_id, session.system_id, message_id, now)
        fields = pdu.fields
        wanted = fields.get("registered_delivery", 0) & 0x03
        if wanted and behaviour.receipts != "none":
            stat = self._receipt_stat()
            # 1: a receipt whatever the outcome; 2: only when delivery failed.
            if wanted == 1 or stat != "DELIVRD":
                payload = fields.get("short_message") or pdu.tlvs.get(
                    c.TLV_MESSAGE_PAYLOAD, b"")
                self._receipts.append(PendingReceipt(
                    now + behaviour.receipt_delay_s, session.system_id, receipt_id, now,
                    fields, payload, stat, origin=session))
        return c.ESME_ROK, message_id

    def malformed_turn(self):
        """The malformed kind this accepted submit_sm is answered with, or None."""
        every = self.behaviour.malformed_every
        if not every:
            return None
        self._since_malformed += 1
        if self._since_malformed < every:
            return None
        self._since_malformed = 0
        kind = MALFORMED_KINDS[self.counters["malformed"] % len(MALFORMED_KINDS)]
        self.counters["malformed"] += 1
        return kind

    def _receipt_stat(self):
        fraction = self.behaviour.undeliverable_fraction
        if fraction:
            # Error diffusion: exactly this share, evenly spread, no randomness.
            self._undeliverable_debt += fraction
            if self._undeliverable_debt >= 1.0:
                self._undeliverable_debt -= 1.0
                return "UNDELIV"
        return self.behaviour.receipt_stat

    def hold_response(self, session, data):
        """Queue a submit_sm_resp for later when ack_delay_s says so; False to send now."""
        delay = self.behaviour.ack_delay_s
        if not delay:
            return False
        self._held.append((self.reactor.seconds() + delay, session, data))
        return True

    # -- the tick: held responses and receipts, batched per session -----------------------

    def tick(self):
        now = self.reactor.seconds()
        batches = {}
        held = self._held
        while held and held[0][0] <= now:
            _, session, data = held.popleft()
            if not session.closing:
                batches.setdefault(session, []).append(data)
        self._send_due_receipts(self._receipts, now, batches)
        self._send_due_receipts(self._retries, now, batches)
        for session, chunks in batches.items():
            session.transport.write(b"".join(chunks))

    def _send_due_receipts(self, pending, now, batches):
        if not pending or pending[0].due > now:
            return
        mode = self.behaviour.receipts
        waiting = []                         # due, but every receiver's window is full
        while pending and pending[0].due <= now:
            receipt = pending.popleft()
            if mode == "none":
                continue                     # switched off after the submit: not owed
            session = receipt.origin
            if (session is None or not session.can_receive
                    or len(session.awaiting) >= self.deliver_window):
                session = self._receiver(receipt.system_id)
            if session is None:
                if self._receiver(receipt.system_id, want_room=False) is None:
                    # Nobody of this system_id is bound to receive: keep it until one binds.
                    self._keep_orphan(receipt)
                else:
                    waiting.append(receipt)
                continue
            receipt.attempts += 1
            data = session.frame_request(build_receipt(receipt, now, mode), receipt)
            batches.setdefault(session, []).append(data)
            self.counters["receipts"] += 1
        pending.extendleft(reversed(waiting))

    def _keep_orphan(self, receipt):
        orphans = self._orphans.get(receipt.system_id)
        if orphans is None:
            orphans = self._orphans[receipt.system_id] = deque(maxlen=self.orphan_capacity)
        if len(orphans) == orphans.maxlen:
            self.counters["receipts_abandoned"] += 1     # the oldest falls out
        orphans.append(receipt)

    def receipt_answered(self, receipt, status):
        if status == c.ESME_ROK:
            return
        self.counters["receipt_errors"] += 1
        if receipt.attempts >= RECEIPT_MAX_ATTEMPTS:
            self.counters["receipts_abandoned"] += 1
            return
        receipt.due = self.reactor.seconds() + RECEIPT_RETRY_S
        self._retries.append(receipt)

    # -- injection ----------------------------------------------------------------------

    def inject_mo(self, source, destination, text, *, ussd_op=None, its_session_info=None,
                  service_type="", system_id=None, concat="udh8", command="deliver_sm",
                  order=None, repeat=()) -> defer.Deferred:
        """Send a citizen's message (split with UDH when long) or a USSD step to a bound
        receiver of `system_id` (any when None). Fires with the deliver_sm_resp statuses,
        one per PDU sent; errback NoReceiver / SessionGone. ValueError for bad input.
        concat: "udh8" | "udh16" | "sar"; command: "deliver_sm" | "data_sm"; order: the
        part numbers (1-based) in the order to send them (default 1..n); repeat: part
        numbers sent a second time, at the end (a redelivery)."""
        self._mo_ref = (self._mo_ref + 1) & 0xFF
        pdus = build_mo(source, destination, text, ref=self._mo_ref,
                        coding=self.behaviour.mo_coding, ussd_op=ussd_op,
                        its_session_info=its_session_info, service_type=service_type,
                        concat=concat, command=command)
        pdus = _reorder(pdus, order, repeat)
        session = self._receiver(system_id, want_room=False)
        if session is None:
            return defer.fail(NoReceiver(
                "no receiver or transceiver session is bound"
                + ("" if system_id is None else f" as {system_id!r}")))
        waiters = [defer.Deferred() for _ in pdus]
        sent_at = self.reactor.seconds()
        for waiter in waiters:
            waiter.addCallback(self._mo_answered, sent_at)
        session.transport.write(b"".join(
            session.frame_request(pdu, waiter) for pdu, waiter in zip(pdus, waiters)))
        self.counters["mo"] += len(pdus)
        answered = defer.gatherResults(waiters, consumeErrors=True)
        answered.addCallback(lambda responses: [r.status for r in responses])
        answered.addErrback(lambda failure: failure.value.subFailure)
        return answered

    def _mo_answered(self, response, sent_at):
        self.mo_latencies.append(self.reactor.seconds() - sent_at)
        return response

    def mo_latency_ms(self) -> dict:
        """p50 / p99 / max of the MO PDUs' deliver_sm → deliver_sm_resp times kept."""
        times = sorted(self.mo_latencies)
        if not times:
            return {"count": 0}
        def at(q):
            return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 2)
        return {"count": len(times), "p50": at(0.5), "p99": at(0.99),
                "max": round(times[-1] * 1000, 2)}

    def inject_pdu(self, pdu, system_id=None) -> defer.Deferred:
        """Send any request PDU (its sequence is set here) to a bound receiver; fires with
        the ESME's response PDU. For tests of odd inbound traffic."""
        session = self._receiver(system_id, want_room=False)
        if session is None:
            return defer.fail(NoReceiver("no receiver or transceiver session is bound"))
        return session.send_request(pdu)

    # -- control ------------------------------------------------------------------------

    def apply_behaviour(self, changes):
        """Merge settings (BehaviourError on bad ones); a new drop_after counts afresh."""
        self.behaviour.merge(changes)
        if "drop_after" in changes:
            self._since_drop = 0
        if "malformed_every" in changes:
            self._since_malformed = 0

    def stats(self) -> dict:
        stats = dict(self.counters)
        stats["records"] = len(self.records)
        stats["recorded_total"] = self.records.total
        stats["receipts_pending"] = len(self._receipts) + len(self._retries) + sum(
            len(q) for q in self._orphans.values()) + sum(
            1 for s in self.sessions for e in s.awaiting.values()
            if isinstance(e, PendingReceipt))
        stats["bound"] = len(self.sessions)
        stats["mo_resp_ms"] = self.mo_latency_ms()
        stats["sessions"] = [
            {"system_id": s.system_id, "mode": s.mode, "peer": s.peer,
             "awaiting": len(s.awaiting)} for s in self.sessions]
        return stats

    def reset(self):
        """Forget recorded submits and zero the counters (receipts owed are still sent)."""
        self.records.clear()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.mo_latencies.clear()
        self._submits_seen = 0
        self._since_drop = 0
        self._since_malformed = 0
        self._rate_window = (0.0, 0)
        self._undeliverable_debt = 0.0


def _reorder(pdus, order, repeat):
    """The PDUs in `order` (1-based part numbers, each once), then `repeat`'s again."""
    numbers = list(range(1, len(pdus) + 1))
    if order is not None:
        if (not isinstance(order, (list, tuple)) or sorted(order) != numbers):
            raise ValueError(f"order must list the part numbers 1..{len(pdus)} once each")
        numbers = list(order)
    if not isinstance(repeat, (list, tuple)) or any(
            not isinstance(n, int) or not 1 <= n <= len(pdus) for n in repeat):
        raise ValueError(f"repeat must list part numbers within 1..{len(pdus)}")
    if len(repeat) > 255:
        raise ValueError("repeat: at most 255 parts")
    return [pdus[n - 1] for n in [*numbers, *repeat]]
