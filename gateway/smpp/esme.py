"""One SMPP session toward an SMSC: bind, a window of outstanding requests, keep-alive,
inbound deliver_sm / data_sm, and a graceful unbind.

`ESMEProtocol` knows one TCP connection; `ESMEFactory` holds the bind parameters and the
owner's callbacks (the operator pool). Time comes from the factory's clock, so tests drive
every timer with `twisted.internet.task.Clock`. Logs carry command names, sequence numbers
and statuses only: never message text or whole phone numbers.
"""

import logging

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway import metrics
from gateway.smpp import constants as c
from gateway.smpp.pdu import (
    PDU, Framer, FramingError, PDUError, decode, encode, encode_empty_id_response)
from gateway.smpp.ratelog import RateLimitedLog
from gateway.smpp.salvage import salvage_response
from gateway.smpp.status import REBIND, classify_status

log = logging.getLogger("payam.smpp.esme")

MAX_SEQUENCE = 0x7FFFFFFF
# Several requests in a row left unanswered: the SMSC is wedged, a new bind is cheaper.
MAX_CONSECUTIVE_TIMEOUTS = 3
# Inbound PDUs handed to the owner and not yet answered. Past this the SMSC is sending
# faster than we store; ESME_RMSGQFUL tells it to hold off and redeliver later (SMSCs
# treat it as temporary), instead of letting memory grow without bound.
MAX_UNANSWERED_INBOUND = 1000
# One sweep over the window per interval replaces a callLater per PDU.
SWEEP_INTERVAL_S = 1.0
# After loseConnection, a peer that never reads would keep the socket open forever.
CLOSE_GRACE_S = 5.0
# After a "not bound" answer (ESME_RINVBNDSTS / RALYBND) the session takes no new request
# but waits this long at most for the answers to those in flight: one the SMSC accepted
# must be recorded submitted, not resent as an unknown outcome (audit 6, item 4).
REBIND_DRAIN_S = 5.0
# Back-pressure (issue 6, item 7): once the transport's write buffer is full we stop
# reading from the SMSC (and take no submits); a peer that still has not read after
# WRITE_STALL_S, or while we owe it more than MAX_BLOCKED_WRITE_BYTES, is dropped.
WRITE_STALL_S = 30.0
MAX_BLOCKED_WRITE_BYTES = 1024 * 1024

BIND_TYPES = {
    "transmitter": c.BIND_TRANSMITTER,
    "receiver": c.BIND_RECEIVER,
    "transceiver": c.BIND_TRANSCEIVER,
}

CONNECTING, BINDING, BOUND, UNBINDING, CLOSING, CLOSED = (
    "connecting", "binding", "bound", "unbinding", "closing", "closed")


class SessionError(Exception):
    """Base of the failures a session's requests can end with."""


class SessionClosed(SessionError):
    """The connection is gone (or going): the request's outcome is unknown."""


class ResponseTimeout(SessionError):
    """No response within response_timeout_s: the request's outcome is unknown."""


class NotReady(SessionError):
    """The session cannot take this request now (not bound, receiver-only, window full)."""


class BindFailed(SessionError):
    """The SMSC refused the bind with `status`."""

    def __init__(self, status):
        super().__init__(f"bind refused: {c.status_name(status)}")
        self.status = status


class _Pending:
    """A request waiting for its response."""

    __slots__ = ("deferred", "deadline", "command_id", "in_window")

    def __init__(self, deferred, deadline, command_id, in_window):
        self.deferred = deferred
        self.deadline = deadline
        self.command_id = command_id
        self.in_window = in_window


def _as_is(result):
    return result


# What an inbound handler may return instead of a status or a Deferred: it answers the
# PDU itself, once, by session.answer_inbound(pdu, status) or
# session.inbound_failed(pdu, failure) (the receipts' batches: no Deferred per receipt).
ANSWERED_LATER = type("AnsweredLater", (), {"__repr__": lambda self: "ANSWERED_LATER"})()


@implementer(IPushProducer)
class ESMEProtocol(protocol.Protocol):
    """One bind. Made by ESMEFactory.buildProtocol; see the module docstring.

    It is the streaming producer of its own transport: the transport pauses it when
    its write buffer is full (pauseProducing), and it then stops reading from the SMSC,
    whose requests are what we would have to answer."""

    def __init__(self, factory, number):
        self.factory = factory
        self.number = number
        self.label = f"{factory.label}#{number}"
        self.bind_status = None            # command_status of a refused bind
        self.close_reason = None
        self._clock = factory.clock
        self._state = CONNECTING
        self._was_bound = False             # for the log line when the connection goes
        self._bind_result = None           # True, or the exception the bind ended with
        self._bound_waiters = []
        self._closed_waiters = []
        self._framer = Framer()
        self._pending = {}
        self._in_window = 0
        self._next_sequence = 1
        self._last_answer = 0.0             # when the SMSC last answered one of ours
        self.answered_at = None             # when the SMSC last answered us since bind
        self._blocked_since = None          # our write buffer is full since then
        self._blocked_bytes = 0             # written since then
        self._consecutive_timeouts = 0
        self._enquiring = False
        self._unanswered_inbound = 0
        self._sweeper = None
        self._abort_call = None
        self._drain_call = None
        self._unbind_sent = False
        self._unbind_timeout = None
        self._unbind_reason = "unbound"     # the close_reason once the unbind is done

    # --- what the owner sees ----------------------------------------------------------
    @property
    def bound(self):
        """A Deferred firing with this session once bound (BindFailed / ResponseTimeout /
        SessionClosed otherwise). Each access returns a fresh Deferred, so a bind failure
        nobody asked about never turns into an 'Unhandled error in Deferred'."""
        d = defer.Deferred()
        if self._bind_result is None:
            self._bound_waiters.append(d)
        elif self._bind_result is True:
            d.callback(self)
        else:
            d.errback(Failure(self._bind_result))
        return d

    @property
    def is_bound(self):
        return self._state == BOUND

    @property
    def can_transmit(self):
        return self.factory.bind_type != "receiver"

    @property
    def can_receive(self):
        return self.factory.bind_type != "transmitter"

    @property
    def window(self):
        """The configured window (while probing, can_submit honours 1: see ESMEFactory)."""
        return self.factory.config.window

    @property
    def outstanding(self):
        """Requests sent through send_request and not answered yet."""
        return self._in_window

    @property
    def free_slots(self):
        return self.factory.window - self._in_window if self.can_submit() else 0

    def can_submit(self):
        return (self._state == BOUND and self.factory.bind_type != "receiver"
                and self._in_window < self.factory.window and self._blocked_since is None)

    def send_request(self, pdu, answer=None):
        """Send a request (submit_sm, data_sm, query_sm...) in the window.

        Sets pdu.sequence. The Deferred fires with the response PDU whatever its status
        (a generic_nack included; a response whose body is malformed comes with its
        header's status and what could be read of its message_id, see salvage.py); it
        fails with SessionClosed, ResponseTimeout, or NotReady when can_submit() was
        False.  `answer`: an object with the Deferred's callback(resp) and
        errback(error), told instead of a Deferred once the request is sent (it is then
        what is returned; a request refused before sending still gets a failed
        Deferred): the dispatcher's submits, one Deferred less each."""
        if pdu.command_id & c.RESPONSE_BIT:
            raise ValueError(f"send_request takes a request, not {pdu.name}")
        if self._state in (CLOSING, CLOSED):
            return defer.fail(SessionClosed(f"session {self.label} is closed"))
        if self._state == UNBINDING:
            return defer.fail(SessionClosed(f"session {self.label} is unbinding"))
        if not self.can_submit():
            if self._state != BOUND:
                why = "not bound"
            elif not self.can_transmit:
                why = "bound as receiver"
            elif self._blocked_since is not None:
                why = "the SMSC is not reading"
            elif self.factory.probing:
                why = "one submit at a time until the SMSC answers again"
            else:
                why = f"window of {self.factory.window} is full"
            return defer.fail(NotReady(f"session {self.label}: {why}"))
        try:
            return self._send(pdu, in_window=True, answer=answer)
        except ValueError as e:          # the codec refused the PDU: the caller's bug
            return defer.fail(e)

    def unbind(self, timeout):
        """Stop taking requests, wait up to `timeout` s for the outstanding ones, send
        unbind, wait for unbind_resp (bounded), close. Fires once the connection is closed."""
        if self._state == CLOSED or self.transport is None:
            return defer.succeed(None)
        closed = defer.Deferred()
        self._closed_waiters.append(closed)
        if self._state in (UNBINDING, CLOSING):
            return closed
        if self._state != BOUND:
            self._close("closed before the bind completed")
            return closed
        self._start_unbind(timeout)
        return closed

    def _start_unbind(self, timeout, reason=None):
        self._state = UNBINDING
        if reason is not None:
            self._unbind_reason = reason
        log.info("%s: unbinding (%d outstanding)", self.label, self._in_window)
        self._unbind_timeout = max(timeout, 0.0)
        if self._in_window == 0:
            self._send_unbind()
        else:
            self._drain_call = self._clock.callLater(self._unbind_timeout, self._send_unbind)

    # --- connection lifecycle ----------------------------------------------------------
    def connectionMade(self):
        self._state = BINDING
        # Nagle would hold each small PDU ~40 ms waiting for the previous one's ACK.
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._last_answer = self._clock.seconds()
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self._clock
        self._sweeper.start(self.factory.sweep_interval, now=False)
        verb = "reconnected" if self.number > 1 else "connected"
        log.info("%s: %s to %s, binding as %s", self.label, verb, _peer(self.transport),
                 self.factory.bind_type)
        factory, config = self.factory, self.factory.config
        bind = PDU(BIND_TYPES[factory.bind_type], fields={
            "system_id": config.system_id,
            "password": config.password,
            "system_type": config.system_type,
            "interface_version": c.INTERFACE_VERSION_34,
            "addr_ton": c.TON_UNKNOWN,
            "addr_npi": c.NPI_UNKNOWN,
            "address_range": factory.address_range,
        })
        self._send(bind, in_window=False).addCallbacks(self._bind_answered,
                                                       self._bind_unanswered)

    def connectionLost(self, reason=protocol.connectionDone):
        was_bound = self._was_bound
        self._state = CLOSED
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        for call in (self._abort_call, self._drain_call):
            if call is not None and call.active():
                call.cancel()
        why = self.close_reason or reason.getErrorMessage()
        log.info("%s: session lost (%s)%s", self.label, why,
                 "" if was_bound else " before bind")
        pending, self._pending = self._pending, {}
        self._in_window = 0
        if self._bind_result is None:
            self._bind_done(SessionClosed(f"connection lost before bind: {why}"))
        # The owner first, so it no longer counts this session when callers react below.
        self.factory.session_lost(self)
        for entry in pending.values():
            entry.deferred.errback(SessionClosed(f"session {self.label} lost: {why}"))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def _close(self, reason):
        """Close politely (buffered bytes still go out), then by force after a grace."""
        if self._state in (CLOSING, CLOSED):
            return
        if self.factory.corked is not None and self.factory.current is self:
            self.uncork()                  # what was sent before the close goes first
        self._state = CLOSING
        self.close_reason = reason
        if self._blocked_since is not None and hasattr(self.transport, "abortConnection"):
            # What we buffered cannot drain to a peer that does not read.
            self.transport.abortConnection()
            return
        # A registered producer would hold loseConnection until it is unregistered.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        if hasattr(self.transport, "abortConnection"):
            self._abort_call = self._clock.callLater(CLOSE_GRACE_S, self._abort)

    def _abort(self):
        log.warning("%s: peer did not close within %gs; aborting", self.label, CLOSE_GRACE_S)
        self.transport.abortConnection()

    # --- back-pressure (IPushProducer, called by the transport) ---------------------------
    def pauseProducing(self):
        """Our write buffer is full: stop reading the SMSC's requests, take no submits."""
        if self._blocked_since is not None or self._state in (CLOSING, CLOSED):
            return
        self._blocked_since = self._clock.seconds()
        self._blocked_bytes = 0
        self.factory.rlog.warning((self.factory.operator, "blocked"),
                                  "%s: the SMSC is not reading what we send; reading from "
                                  "it paused", self.label)
        self.transport.pauseProducing()

    def resumeProducing(self):
        """The buffer drained: read again and take submits."""
        if self._blocked_since is None:
            return
        self._blocked_since = None
        if self._state in (CLOSING, CLOSED):
            return
        self.transport.resumeProducing()
        if self.can_submit():
            self.factory.session_ready(self)

    def stopProducing(self):
        """The connection is going; connectionLost does the rest."""

    # --- bytes in -----------------------------------------------------------------------
    def dataReceived(self, data):
        try:
            frames = self._framer.feed(data)
        except FramingError as e:
            # The stream has lost sync: nothing after this can be trusted.
            log.warning("%s: framing error (%s); closing", self.label, e)
            self._close(f"framing error: {e}")
            return
        for frame in frames:
            if self._state in (CLOSING, CLOSED):
                return
            self._frame_received(frame)

    def _frame_received(self, frame):
        try:
            pdu = decode(frame)
        except FramingError as e:
            log.warning("%s: framing error (%s); closing", self.label, e)
            self._close(f"framing error: {e}")
            return
        except PDUError as e:
            self._undecodable(e, frame)
            return
        if pdu.command_id & c.RESPONSE_BIT:
            self._response_received(pdu)
        else:
            self._request_received(pdu)

    def _undecodable(self, error, frame):
        command_id = error.command_id or 0
        if command_id & c.RESPONSE_BIT:
            entry = self._pending.pop(error.sequence, None)
            if entry is None:
                self.factory.rlog.warning(
                    (self.factory.operator, "unknown-seq"),
                    "%s: undecodable %s for unknown seq %d ignored (%s)",
                    self.label, c.command_name(command_id), error.sequence, error)
                return
            # Its header still says whether the SMSC took the request: a status-0
            # answer resent would reach the citizen twice (issue 6, item 3).
            resp, truncated = salvage_response(frame)
            metrics.child(metrics.MALFORMED_RESPONSES, self.factory.operator).inc()
            self.factory.rlog.warning(
                (self.factory.operator, "malformed-resp"),
                "ALERT %s: malformed %s seq %d (%s) with %s; taken as that answer%s",
                self.label, c.command_name(command_id), error.sequence, error,
                c.status_name(resp.status),
                f", message_id {resp.fields['message_id']!r}"
                + (" (cut to 64 octets)" if truncated else "")
                if "message_id" in resp.fields else "")
            self._answered(entry, resp)
            return
        self.factory.rlog.warning((self.factory.operator, "bad-request"),
                                  "%s: bad %s seq %d: %s; answering %s", self.label,
                                  c.command_name(command_id), error.sequence, error,
                                  c.status_name(error.status))
        self._write(_error_answer(command_id, error.sequence, error.status))

    # --- responses ----------------------------------------------------------------------
    def _response_received(self, pdu):
        entry = self._pending.pop(pdu.sequence, None)
        if entry is None:
            # A peer answering foreign sequences may do so for every request: say it
            # once per interval; the request itself times out (an unknown outcome).
            self.factory.rlog.warning((self.factory.operator, "unknown-seq"),
                                      "%s: %s for unknown seq %d ignored", self.label,
                                      pdu.name, pdu.sequence)
            return
        self._answered(entry, pdu)

    def _answered(self, entry, pdu):
        self._consecutive_timeouts = 0
        reopened = False
        if self.factory.probing and (entry.in_window or (
                entry.command_id == c.ENQUIRE_LINK and self._in_window == 0)):
            # With a probe out, its answer decides: a stalled SMSC may still answer
            # enquire_link, and reopening on that would send a window into the stall
            # every enquire_link_s (every other timeout at the defaults).
            reopened = self.factory.smsc_answered(self)
        # Only answers to our own requests show the SMSC alive: a peer can flood us
        # with requests while ignoring ours.
        self._last_answer = self._clock.seconds()
        if self._state == BOUND:
            self.answered_at = self._last_answer
        expected = entry.command_id | c.RESPONSE_BIT
        if pdu.command_id not in (expected, c.GENERIC_NACK):
            self.factory.rlog.warning((self.factory.operator, "wrong-answer"),
                                      "%s: %s answers seq %d, which was a %s", self.label,
                                      pdu.name, pdu.sequence,
                                      c.command_name(entry.command_id))
        if pdu.status and self._state == BOUND and classify_status(pdu.status) == REBIND:
            # The SMSC no longer takes this bind as bound: a new bind is the cure. No new
            # request from now on (before the caller hears this answer, which may try to
            # send again), but the answers to those in flight, the rest of this read
            # included, are still read; then unbind and close (bounded).
            log.warning("%s: SMSC answered %s: unbinding to bind again", self.label,
                        c.status_name(pdu.status))
            self._start_unbind(min(self.factory.response_timeout_s, REBIND_DRAIN_S),
                               f"SMSC answered {c.status_name(pdu.status)}")
        self._finish(entry, result=pdu)
        if reopened and not entry.in_window and self.can_submit():
            self.factory.session_ready(self)    # an enquire_link_resp reopened the window

    def _finish(self, entry, result=None, failure=None):
        if entry.in_window:
            self._in_window -= 1
        if failure is None:
            entry.deferred.callback(result)
        else:
            entry.deferred.errback(failure)
        if entry.in_window:
            self._slot_freed()

    def _slot_freed(self):
        if self._state == UNBINDING and self._in_window == 0 and not self._unbind_sent:
            self._send_unbind()
        elif self.can_submit():
            self.factory.session_ready(self)

    # --- requests from the SMSC -----------------------------------------------------------
    def _request_received(self, pdu):
        command_id = pdu.command_id
        if command_id == c.ENQUIRE_LINK:
            self._write(pdu.response())
        elif command_id in (c.DELIVER_SM, c.DATA_SM):
            self._inbound(pdu)
        elif command_id == c.UNBIND:
            log.info("%s: SMSC asked to unbind", self.label)
            self._write(pdu.response())
            self._close("unbind from the SMSC")
        elif command_id in c.BIND_COMMANDS:
            self._write(pdu.response(status=c.ESME_RALYBND))
        elif command_id == c.ALERT_NOTIFICATION:
            self.factory.rlog.info((self.factory.operator, "alert_notification"),
                                   "%s: alert_notification ignored (no response in SMPP)",
                                   self.label)
        else:
            self.factory.rlog.warning((self.factory.operator, "not-served"),
                                      "%s: %s seq %d not served; generic_nack", self.label,
                                      pdu.name, pdu.sequence)
            self._write(PDU(c.GENERIC_NACK, pdu.sequence, c.ESME_RINVCMDID))

    def _inbound(self, pdu):
        if self._state not in (BOUND, UNBINDING) or not self.can_receive:
            self._write(pdu.response(status=c.ESME_RINVBNDSTS))
            return
        if self._unanswered_inbound >= MAX_UNANSWERED_INBOUND:
            self.factory.rlog.warning((self.factory.operator, "inbound-full"),
                                      "%s: %d inbound PDUs unanswered; %s seq %d refused "
                                      "with ESME_RMSGQFUL", self.label,
                                      self._unanswered_inbound, pdu.name, pdu.sequence)
            self._write(pdu.response(status=c.ESME_RMSGQFUL))
            return
        self._unanswered_inbound += 1
        # maybeDeferred for what is not a Deferred already (a receipt's is): ~0.5 µs a
        # deliver_sm less.
        try:
            result = self.factory.inbound(self, pdu)
        except Exception:
            result = defer.fail()
        if result is ANSWERED_LATER:
            return
        if not isinstance(result, defer.Deferred):     # a status, Failure or coroutine
            result = defer.maybeDeferred(_as_is, result)
        result.addCallbacks(self._inbound_handled, self._inbound_failed,
                            callbackArgs=(pdu,), errbackArgs=(pdu,))

    def _inbound_handled(self, status, pdu):
        if isinstance(status, bool) or not isinstance(status, int) \
                or not 0 <= status <= 0xFFFFFFFF:
            self.factory.rlog.error((self.factory.operator, "inbound-status"),
                                    "%s: inbound handler returned %r for %s seq %d; "
                                    "answering ESME_RX_T_APPN", self.label, status,
                                    pdu.name, pdu.sequence)
            status = c.ESME_RX_T_APPN
        self._answer_inbound(pdu, int(status))

    def answer_inbound(self, pdu, status):
        """The answer to an inbound PDU whose handler returned ANSWERED_LATER."""
        self._inbound_handled(status, pdu)

    def inbound_failed(self, pdu, failure):
        """An inbound PDU whose handler returned ANSWERED_LATER could not be handled."""
        self._inbound_failed(failure, pdu)

    def _inbound_failed(self, failure, pdu):
        # Not stored: a temporary error makes the SMSC deliver it again later.
        self.factory.rlog.error((self.factory.operator, "inbound-failed"),
                                "%s: inbound %s seq %d not handled (%s); answering "
                                "ESME_RX_T_APPN", self.label, pdu.name, pdu.sequence,
                                failure.getErrorMessage())
        self._answer_inbound(pdu, c.ESME_RX_T_APPN)

    def _answer_inbound(self, pdu, status):
        self._unanswered_inbound -= 1
        if self._state in (BOUND, UNBINDING):
            if self._blocked_since is None and self.factory.corked is None:
                # hot path: _out's checks, written out
                self.transport.write(encode_empty_id_response(pdu, status))
            else:
                self._out(encode_empty_id_response(pdu, status))
        # Otherwise the connection went first: the SMSC redelivers the unanswered PDU.

    # --- bytes out ------------------------------------------------------------------------
    def _send(self, pdu, in_window, timeout=None, answer=None):
        sequence = self._take_sequence()
        pdu.sequence = sequence
        frame = encode(pdu)               # ValueError for a malformed PDU: caller's bug
        d = defer.Deferred() if answer is None else answer
        if timeout is None:
            timeout = self.factory.response_timeout_s
        self._pending[sequence] = _Pending(d, self._clock.seconds() + timeout,
                                           pdu.command_id, in_window)
        if in_window:
            self._in_window += 1
        if self._blocked_since is None:             # hot path: _out's check, written out
            corked = self.factory.corked
            if corked is not None:
                corked.append(frame)
            else:
                self.transport.write(frame)
        else:
            self._out(frame)
        return d

    def _take_sequence(self):
        sequence = self._next_sequence
        while sequence in self._pending:        # only after a wrap around 2**31
            sequence = sequence % MAX_SEQUENCE + 1
        self._next_sequence = sequence % MAX_SEQUENCE + 1
        return sequence

    def _write(self, pdu):
        if self._state not in (CLOSING, CLOSED):
            self._out(encode(pdu))

    def _out(self, frame):
        """Every frame goes out here: what piles up while the peer does not read is
        bounded."""
        corked = self.factory.corked
        if corked is not None:                       # after those held back before it
            corked.append(frame)
            return
        if self._blocked_since is not None:
            self._blocked_bytes += len(frame)
            if self._blocked_bytes > MAX_BLOCKED_WRITE_BYTES:
                self._drop(f"{self._blocked_bytes} octets owed to a peer that does not "
                           "read")
                return
        self.transport.write(frame)

    def cork(self):
        """Hold back the frames sent from now on until uncork(), which writes them in one
        transport.write: a burst of submit_sm then costs one write, not one per PDU
        (~0.8 µs each: Twisted's write, its producer check and addWriter). Only a bound
        session whose peer reads is corked; True if this one now is."""
        factory = self.factory
        if (factory.corked is not None or self._state != BOUND
                or self._blocked_since is not None or factory.current is not self):
            return False
        factory.corked = []
        return True

    def uncork(self):
        """Write what cork() held back (nothing once the connection is gone, as
        Twisted would not either)."""
        factory = self.factory
        frames, factory.corked = factory.corked, None
        if frames and self._state != CLOSED and self.transport is not None:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _drop(self, reason):
        log.warning("%s: %s; dropping the session", self.label, reason)
        self._close(reason)

    # --- bind / keep-alive / unbind ----------------------------------------------------------
    def _bind_answered(self, resp):
        if self._state != BINDING:
            return
        if resp.status == c.ESME_ROK and resp.command_id != c.GENERIC_NACK:
            self._state = BOUND
            self._was_bound = True
            log.info("%s: bound (%s, SMSC system_id %r)", self.label, self.factory.bind_type,
                     resp.fields.get("system_id", ""))
            self.factory.session_bound(self)
            self._bind_done(True)
            return
        self.bind_status = resp.status or c.ESME_RBINDFAIL
        log.warning("%s: bind refused with %s", self.label, c.status_name(self.bind_status))
        self._close(f"bind refused: {c.status_name(self.bind_status)}")
        self._bind_done(BindFailed(self.bind_status))

    def _bind_unanswered(self, failure):
        failure.trap(SessionError)
        if failure.check(SessionClosed):
            return              # connectionLost has already reported the bind as failed
        log.warning("%s: no usable bind_resp (%s)", self.label, failure.getErrorMessage())
        self._close(f"bind failed: {failure.getErrorMessage()}")
        self._bind_done(failure.value)

    def _bind_done(self, result):
        self._bind_result = result
        waiters, self._bound_waiters = self._bound_waiters, []
        for d in waiters:
            if result is True:
                d.callback(self)
            else:
                d.errback(Failure(result))

    def _enquire(self):
        self._enquiring = True
        d = self._send(PDU(c.ENQUIRE_LINK), in_window=False)
        d.addCallbacks(self._enquire_answered, self._enquire_unanswered)

    def _enquire_answered(self, resp):
        self._enquiring = False

    def _enquire_unanswered(self, failure):
        failure.trap(SessionError)
        self._enquiring = False
        if failure.check(ResponseTimeout):
            log.warning("%s: enquire_link unanswered within %gs; dropping the session",
                        self.label, self.factory.response_timeout_s)
            self._close("enquire_link unanswered")

    def _send_unbind(self):
        if self._state != UNBINDING or self._unbind_sent:
            return
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        if self._in_window:
            log.warning("%s: unbinding with %d requests still unanswered", self.label,
                        self._in_window)
        self._unbind_sent = True
        wait = min(self.factory.response_timeout_s, max(self._unbind_timeout, SWEEP_INTERVAL_S))
        d = self._send(PDU(c.UNBIND), in_window=False, timeout=wait)
        d.addBoth(self._unbind_answered)

    def _unbind_answered(self, result):
        if isinstance(result, Failure):
            result.trap(SessionError)
            if result.check(SessionClosed):
                return
            self._close(f"{self._unbind_reason}; unbind_resp timeout")
        else:
            self._close(self._unbind_reason)

    def _sweep(self):
        """Expire overdue requests and keep an idle session alive; runs every interval."""
        now = self._clock.seconds()
        expired = [seq for seq, entry in self._pending.items() if entry.deadline <= now]
        freed = False
        unanswered = False
        for seq in expired:
            entry = self._pending.pop(seq, None)
            if entry is None:       # answered or failed by an earlier errback in this loop
                continue
            if entry.in_window or entry.command_id == c.ENQUIRE_LINK:
                unanswered = True
            if entry.in_window:
                self._consecutive_timeouts += 1
                freed = True
                self.factory.rlog.warning((self.factory.operator, "timeout"),
                                          "%s: no response to %s seq %d within %gs",
                                          self.label, c.command_name(entry.command_id),
                                          seq, self.factory.response_timeout_s)
                self._in_window -= 1
            entry.deferred.errback(ResponseTimeout(
                f"{c.command_name(entry.command_id)} seq {seq} unanswered"))
        if unanswered:
            # Before the freed slots are offered: the next submit is a lone probe.
            self.factory.request_unanswered(self)
        if self._state in (CLOSING, CLOSED):
            return
        if self._blocked_since is not None and now - self._blocked_since >= WRITE_STALL_S:
            self._drop(f"the SMSC has not read for {now - self._blocked_since:.0f}s")
            return
        if self._consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
            log.warning("%s: %d requests in a row unanswered; dropping the session",
                        self.label, self._consecutive_timeouts)
            self._close(f"{self._consecutive_timeouts} response timeouts in a row")
            return
        if freed:
            self._slot_freed()
        if (self._state == BOUND and not self._enquiring
                and now - self._last_answer >= self.factory.enquire_link_s):
            self._enquire()


def _error_answer(command_id, sequence, status):
    """The answer to a request we could not decode: its own *_resp when SMPP defines one
    and the fault is in a field, generic_nack when the command or its length is wrong."""
    if (command_id in c.COMMAND_NAMES and status not in (c.ESME_RINVCMDID, c.ESME_RINVCMDLEN)
            and command_id | c.RESPONSE_BIT in c.COMMAND_NAMES):
        return PDU(command_id | c.RESPONSE_BIT, sequence, status)
    return PDU(c.GENERIC_NACK, sequence, status)


def _peer(transport):
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


class ESMEFactory(protocol.Factory):
    """Bind parameters and the owner's callbacks; makes one ESMEProtocol per connection.

    Callbacks (all optional): inbound(session, pdu) -> int | Deferred[int] (the
    deliver_sm_resp / data_sm_resp status, fired once the PDU is stored; `session` the
    one it came in on, so an answer can go back on the same bind), or ANSWERED_LATER
    (the handler calls session.answer_inbound / inbound_failed); session_bound(session);
    session_lost(session) (every connection, bound or not: see session.bind_status);
    session_ready(session) (a window slot is free)."""

    noisy = False

    def __init__(self, config, *, bind_type, clock=None, inbound=None, session_bound=None,
                 session_lost=None, session_ready=None, label=None, address_range=""):
        """config: the operator's OperatorConfig (gateway.config.schema), whose values the
        config loader has checked; bind_type: this session's kind (BIND_TYPES)."""
        if bind_type not in BIND_TYPES:
            raise ValueError(f"bind_type must be one of {sorted(BIND_TYPES)}, "
                             f"not {bind_type!r}")
        # The loader refuses these; a caller that skipped it would get no error, only a
        # session that never submits (window 0) or sweeps without pause (0 s).
        assert config.window >= 1 and config.enquire_link_s > 0 \
            and config.response_timeout_s > 0, f"operator {config.name}: unchecked config"
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config
        self.operator = config.name
        self.label = label or config.name
        self.bind_type = bind_type
        self.address_range = address_range
        # What can_submit honours, read per submit (one lookup less): the configured
        # window, or 1 while probing (below).
        self.window = config.window
        self.probing = False
        self.enquire_link_s = float(config.enquire_link_s)
        self.response_timeout_s = float(config.response_timeout_s)
        self.sweep_interval = min(SWEEP_INTERVAL_S, self.response_timeout_s / 4,
                                  self.enquire_link_s / 4)
        self.clock = clock
        self._on_inbound = inbound
        self._on_bound = session_bound
        self._on_lost = session_lost
        self._on_ready = session_ready
        # One per operator's bind: what a hostile peer can repeat is said once per
        # interval (see ratelog.py).
        self.rlog = RateLimitedLog(log, clock)
        self.connections = 0
        self.current = None                 # the live session, if any
        # Frames the current session holds back while corked (ESMEProtocol.cork): kept
        # here, as the session has no attribute to spare (CPython's fast layout, 30).
        self.corked = None

    # --- probing: one submit at a time after a response timeout --------------------------
    # An SMSC that stalls longer than response_timeout_s would otherwise get each timed-out
    # window resent on the next bind (its copies all unknown outcomes, each a possible
    # duplicate): 30-53 duplicates for a 5 s stall at a 1 s timeout and window 10, 96
    # for 10 s (bench/chaos.py --case stall, two operators' binds); probing, 21-22 and
    # 28. A stall of any length costs the window in flight when it began plus one
    # submit per timeout. It lives on the factory, the bind's slot, not on the session:
    # the session drops itself after MAX_CONSECUTIVE_TIMEOUTS and a stalled SMSC still
    # answers the next bind, which must not reopen a full window.
    def request_unanswered(self, session):
        """A submit (or enquire_link) of `session` went unanswered within the timeout."""
        if self.probing or self.config.window == 1:
            return
        self.probing = True
        self.window = 1
        metrics.child(metrics.PROBING_BINDS, self.operator).inc()
        self.rlog.warning((self.label, "probing"),
                          "%s: a request went unanswered within %gs; one submit at a time "
                          "until the SMSC answers again", session.label,
                          self.response_timeout_s)

    def smsc_answered(self, session):
        """`session` had an answer to a submit (or to an enquire_link, no submit out):
        reopen the full window. True if it was closed to one."""
        if not self.probing:
            return False
        self.probing = False
        self.window = self.config.window
        metrics.child(metrics.PROBING_BINDS, self.operator).dec()
        self.rlog.info((self.label, "reopened"), "%s: the SMSC answers again; window of %d "
                       "reopened", session.label, self.window)
        return True

    def buildProtocol(self, addr):
        self.connections += 1
        session = ESMEProtocol(self, self.connections)
        self.current = session
        return session

    def inbound(self, session, pdu):
        if self._on_inbound is None:
            self.rlog.error((self.operator, "no-handler"),
                            "%s: %s received but no inbound handler is set", self.label,
                            pdu.name)
            return c.ESME_RX_T_APPN
        return self._on_inbound(session, pdu)

    def session_bound(self, session):
        _notify(self._on_bound, session)

    def session_lost(self, session):
        if self.current is session:
            self.current = None
        _notify(self._on_lost, session)

    def session_ready(self, session):
        _notify(self._on_ready, session)


def _notify(callback, session):
    # An owner's bug must not tear down the session's own bookkeeping.
    if callback is None:
        return
    try:
        callback(session)
    except Exception:
        log.exception("%s: session callback %r failed", session.label, callback)
