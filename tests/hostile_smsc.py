"""A hostile SMSC for loopback tests: our own Twisted protocol on raw sockets, one mode
per misbehaviour seen in the field (issue 6). Binds are always accepted; what follows
depends on the factory's `mode`:

  normal             answers every request properly
  malformed_ok_resp  submit_sm_resp status 0 with a message_id of 100 octets and trailing
                     bytes after its NUL (`malformed` picks another body, see _MALFORMED)
  never_answer       answers the bind, then nothing at all
  foreign_sequence   answers each submit_sm with ESME_ROK under a sequence it never had
  drop_after_bind    closes the connection right after the bind_resp
  garbage_after_bind sends bytes that cannot be framed right after the bind_resp
  throttle_above_rate accepts at most `rate` submit_sm in any 1 s, ESME_RTHROTTLED beyond
                     (answers after `latency` seconds, so a window's worth is in flight)
  flood_never_read   stops reading after the bind and floods enquire_link, as fast as its
                     own socket takes them (its buffer stays bounded, ours must too)
  error_status       answers every submit_sm with `status` (e.g. ESME_RSYSERR)
  rebind_in_batch    holds the first `batch` submit_sm, then answers them in one write:
                     ESME_RINVBNDSTS for the first, ESME_ROK for the others; normal after
  stall              while the factory's `stalled` is set, holds every submit_sm_resp
                     (sent when it is cleared, on the connections still open; binds and
                     enquire_link are answered at once); otherwise answers each after
                     `latency`, recording the most submits unanswered at once per
                     connection (`peak_in_flight`)

The factory records what happened (binds and their times, submits, throttled answers,
accepted submit times), and each connection its own submits, so a test can count. Time
comes from the reactor it is given.
"""

import struct

from twisted.internet import protocol
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU, Framer, decode, encode

MODES = ("normal", "malformed_ok_resp", "never_answer", "foreign_sequence",
         "drop_after_bind", "garbage_after_bind", "throttle_above_rate",
         "flood_never_read", "error_status", "rebind_in_batch", "stall")

# Bodies of a status-0 submit_sm_resp that our codec refuses to decode.
_MALFORMED = {
    "long_id": b"A" * 100 + b"\0",                  # message_id over 65 octets
    "trailing": b"ID42\0\x01\x02\x03",               # 3 stray octets after the NUL
    "no_nul": b"ID42",                               # the C-Octet string never ends
    "long_and_trailing": b"B" * 100 + b"\0\x07\x07",
}
_FLOOD_CHUNK = encode(PDU(c.ENQUIRE_LINK, 1)) * 4096     # 64 KiB per write


@implementer(IPushProducer)
class HostileSMSC(protocol.Protocol):
    def connectionMade(self):
        self.framer = Framer()
        self.bound = False
        self._flooding = False
        self._flood_paused = False
        self.submitted = []         # the submit_sm PDUs that came on this connection
        self.unanswered = 0         # stall: submits not answered yet on this connection
        self.factory.links.append(self)

    def connectionLost(self, reason):
        self._flooding = False
        if self in self.factory.links:
            self.factory.links.remove(self)
        self.factory.closed += 1

    def dataReceived(self, data):
        try:
            frames = self.framer.feed(data)
        except Exception:
            self.transport.loseConnection()
            return
        for frame in frames:
            self.pdu_received(decode(frame))

    def send(self, pdu):
        self.transport.write(encode(pdu))

    def send_later(self, pdu):
        """Answer after the factory's latency (an SMSC's processing time)."""
        if not self.factory.latency:
            self.send(pdu)
            return
        def send():
            if self.transport.connected:
                self.send(pdu)
        self.factory.clock.callLater(self.factory.latency, send)

    # --- requests from the ESME -----------------------------------------------------------
    def pdu_received(self, pdu):
        factory = self.factory
        mode = factory.mode
        factory.received.append(pdu.name)
        if pdu.command_id in c.BIND_COMMANDS:
            factory.binds += 1
            factory.bind_times.append(factory.clock.seconds())
            self.send(pdu.response(system_id="HOSTILE"))
            self.bound = True
            self._after_bind()
        elif pdu.command_id == c.SUBMIT_SM:
            factory.submits += 1
            factory.submit_times.append(factory.clock.seconds())
            self.submitted.append(pdu)
            if mode != "never_answer":
                self.submit_received(pdu)
        elif mode == "never_answer":
            return
        elif pdu.command_id == c.ENQUIRE_LINK:
            self.send(pdu.response())
        elif pdu.command_id == c.UNBIND:
            self.send(pdu.response())
            self.transport.loseConnection()
        elif not pdu.is_response:
            self.send(PDU(c.GENERIC_NACK, pdu.sequence, c.ESME_RINVCMDID))

    def _after_bind(self):
        mode = self.factory.mode
        if mode == "drop_after_bind":
            self.transport.loseConnection()
        elif mode == "garbage_after_bind":
            # command_length 5: no PDU is that short, the stream cannot be framed. A
            # moment later, so that the bind_resp is read (and the bind done) first.
            self.factory.clock.callLater(0.02, self._garbage)
        elif mode == "flood_never_read":
            self.transport.pauseProducing()          # never read again
            self.transport.registerProducer(self, True)
            self._flooding = True
            self.factory.clock.callLater(0, self._flood)

    def _garbage(self):
        if self.transport.connected:
            self.transport.write(struct.pack(">I", 5) + b"garbage!")

    def submit_received(self, pdu):
        factory = self.factory
        mode = factory.mode
        if mode == "malformed_ok_resp":
            body = _MALFORMED[factory.malformed]
            self.transport.write(struct.pack(">IIII", 16 + len(body), c.SUBMIT_SM_RESP,
                                             c.ESME_ROK, pdu.sequence) + body)
        elif mode == "foreign_sequence":
            self.send(PDU(c.SUBMIT_SM_RESP, (pdu.sequence + 1_000_000) % 0x7FFFFFFF,
                          fields={"message_id": "F00"}))
        elif mode == "throttle_above_rate":
            now = factory.clock.seconds()
            window = factory.accepted_times
            recent = sum(1 for t in window[-factory.rate:] if now - t < 1.0)
            if recent >= factory.rate:
                factory.throttled += 1
                factory.throttle_times.append(now)
                self.send_later(pdu.response(status=c.ESME_RTHROTTLED))
            else:
                window.append(now)
                self.send_later(pdu.response(message_id=f"{len(window):X}"))
        elif mode == "stall":
            self._stall_submit(pdu)
        elif mode == "error_status":
            self.send(pdu.response(status=factory.status))
        elif mode == "rebind_in_batch" and factory.held is not None:
            factory.held.append(pdu)
            if len(factory.held) == factory.batch:
                first, *others = factory.held
                factory.held = None
                factory.accepted_times.extend(factory.clock.seconds() for _ in others)
                self.transport.write(
                    encode(first.response(status=c.ESME_RINVBNDSTS))
                    + b"".join(encode(p.response(message_id=f"B{n}"))
                               for n, p in enumerate(others, 1)))
        else:
            factory.accepted_times.append(factory.clock.seconds())
            self.send(pdu.response(message_id=f"{factory.submits:X}"))

    def _stall_submit(self, pdu):
        factory = self.factory
        self.unanswered += 1
        factory.peak_in_flight = max(factory.peak_in_flight, self.unanswered)
        response = pdu.response(message_id=f"{factory.submits:X}")
        if factory.stalled:
            factory.stall_submits.append(pdu)
            factory.stall_held.append((self, response))
            return

        def answer():
            if self.transport.connected:
                self.unanswered -= 1
                factory.accepted_times.append(factory.clock.seconds())
                self.send(response)
        factory.clock.callLater(factory.latency, answer)

    # --- flood_never_read: a push producer on its own socket ---------------------------------
    def _flood(self):
        while self._flooding and not self._flood_paused and self.transport.connected:
            self.factory.flooded += len(_FLOOD_CHUNK)
            self.transport.write(_FLOOD_CHUNK)      # may call pauseProducing at once
        if self._flooding and not self._flood_paused and self.transport.connected:
            self.factory.clock.callLater(0, self._flood)

    def pauseProducing(self):
        self._flood_paused = True

    def resumeProducing(self):
        if self._flood_paused:
            self._flood_paused = False
            if self._flooding:
                self.factory.clock.callLater(0, self._flood)

    def stopProducing(self):
        self._flooding = False


class HostileFactory(protocol.ServerFactory):
    protocol = HostileSMSC

    def __init__(self, mode, clock, *, rate=100, malformed="long_and_trailing",
                 status=c.ESME_RSYSERR, latency=0.0, batch=3):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.clock = clock
        self.rate = rate
        self.malformed = malformed
        self.status = status
        self.latency = latency      # throttle_above_rate: seconds before each answer
        self.batch = batch          # rebind_in_batch: submits answered in one write
        self.held = []              # rebind_in_batch: those held until then
        self.links = []
        self.received = []          # names of every PDU the ESME sent
        self.binds = 0
        self.bind_times = []
        self.submits = 0
        self.submit_times = []
        self.throttled = 0
        self.throttle_times = []
        self.accepted_times = []
        self.flooded = 0            # octets written by flood_never_read
        self.closed = 0
        self._stalled = False       # stall: see the stalled property
        self.stall_submits = []     # stall: the submit_sm PDUs that came while stalled
        self.stall_held = []        # stall: (connection, its held submit_sm_resp)
        self.peak_in_flight = 0     # stall: most submits unanswered at once on a link

    @property
    def stalled(self):
        return self._stalled

    @stalled.setter
    def stalled(self, value):
        """stall mode: set, submit_sm_resp are held; cleared, the held ones go out."""
        self._stalled = bool(value)
        if self._stalled:
            return
        held, self.stall_held = self.stall_held, []
        for link, response in held:
            if link.transport.connected:
                link.unanswered -= 1
                self.accepted_times.append(self.clock.seconds())
                link.send(response)

    def max_per_second(self, times=None):
        """The most accepted submit_sm in any 1 s window (closed at both ends)."""
        times = sorted(self.accepted_times if times is None else times)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] > 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best
