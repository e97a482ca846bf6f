"""An HTTP worker's accepts, committed by the dispatcher process's writer (issue 10).

With `http.workers` every process used to commit its own accepts: each transaction
waited for SQLite's one write lock and paid its own fsync, so N processes did N times
the commits of one and the split was no faster than one process.  Here a worker hands
each grouped accept (store.REMOTE_ACCEPTS: the plain and the quota-counted insert) to
the dispatcher over a UNIX socket in the run directory; the dispatcher's writer commits
them in its own group transactions, with its own writes, and answers each after the
commit (procs/writer_server.py).  The worker's Store answers the accept only then, so a
202 still means on disk.

- Frames: a 4-byte length, then a pickle of plain data (tuples, lists, str, bytes,
  numbers, None).  The reading side refuses any class (`loads`): a frame can carry no
  code.  Requests (None, ACCEPTS, [(seq, name, item), ...]): a reactor turn's accepts
  in one frame (one pickle and one read per turn, not per accept: ~0.7 µs less an
  accept here, measured, and less at the dispatcher), a frame closed once it holds
  TURN_MESSAGES messages; answers (seq, kind, value), or (None, ANSWERS,
  [answer, ...]): every answer of one commit to this worker in one frame.
- Bounded: at most MAX_IN_FLIGHT accepts wait per worker (the rest, like every accept
  while the dispatcher is away, are committed by the worker's own writer, as before:
  slower, never wrong: quota and idempotency are counted in the store either way),
  and so are the accepts of a frame that would pass MAX_FRAME bytes (an accept of
  TURN_MESSAGES messages or more has a frame of its own).  A stopping worker waits
  (STOP_WAIT_S at most) for the answers due before it disconnects.
- The dispatcher going away (it died: its socket closes once all its threads are
  gone, so what it committed is final) settles each accept waiting on it from the
  store: its messages stored → answered as committed (the agency's 202 is true and it
  will not send again); not stored → TransactionLost (503: the agency retries, nothing
  was kept).  The worker connects again every RECONNECT_S.  (A link the dispatcher
  closed while alive, on a frame it could not read, can leave a 503'd accept committed
  later: a 503 never claims "not stored" for sure; a 202 always means stored.)
"""

import io
import logging
import pickle

from twisted.internet import defer, protocol, task
from twisted.protocols.basic import Int32StringReceiver

from gateway.store.frame_outbox import FrameOutbox
from gateway.store.interface import (
    DuplicateIdempotencyKey, IdempotencyMismatch, QuotaRefused, TransactionLost)

log = logging.getLogger("payam.store.remote_writer")

SOCKET_NAME = "writer.sock"
MAX_IN_FLIGHT = 1000      # accepts waiting per worker; the HTTP side holds fewer
MAX_FRAME = 32 << 20      # one accept of 1,000 long messages is ~2 MiB
RECONNECT_S = 0.5
STOP_WAIT_S = 5.0         # a stopping worker waits this long for answers due
ANSWERS = "answers"       # the kind of a frame of many answers
ACCEPTS = "accepts"       # the kind of a frame of many accepts
TURN_MESSAGES = 100       # messages in one frame of accepts, before it is closed (one
                          # message's row is a few KiB at most: far below MAX_FRAME)
MAX_KEPT = 8 << 20        # bytes the dispatcher has not read: the rest commit here


# -- the frames ----------------------------------------------------------------------

class _DataOnly(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"a frame carries data only, not {module}.{name}")


def dumps(value):
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data):
    return _DataOnly(io.BytesIO(data)).load()


def prefixed(data):
    """`data` as it goes on the socket: Int32StringReceiver's 4-byte length first (the
    FrameOutbox writes bytes, not strings)."""
    return len(data).to_bytes(4, "big") + data


def encode_result(ok, value):
    """The dispatcher's answer for one accept: (kind, plain value)."""
    if ok:
        if isinstance(value, QuotaRefused):      # within_quota returns it, not raises
            return "refused", (value.agency, value.used, value.quota)
        return "ok", value
    error = value.value
    if isinstance(error, DuplicateIdempotencyKey):
        return "duplicate", (error.agency, error.key, error.response)
    if isinstance(error, IdempotencyMismatch):
        return "mismatch", (error.agency, error.key)
    return "lost", value.getErrorMessage()


def decode_result(kind, value):
    """(ok, result or exception) on the worker's side."""
    if kind == "ok":
        return True, value
    if kind == "refused":
        return True, QuotaRefused(*value)
    if kind == "duplicate":
        return False, DuplicateIdempotencyKey(*value)
    if kind == "mismatch":
        return False, IdempotencyMismatch(*value)
    return False, TransactionLost(f"the dispatcher's transaction failed: {value}")


class Framed(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def lengthLimitExceeded(self, length):
        log.error("a %d-byte frame on the writer socket: closing it", length)
        self.transport.loseConnection()

    def read(self, data, what):
        """The frame's three fields, or None once an unreadable frame (not data, or not
        three fields) has closed the link: `what` names it in the log."""
        try:
            first, second, third = loads(data)
        except Exception as error:
            log.error("unreadable %s (%s): closing the link", what, error)
            self.transport.loseConnection()
            return None
        return first, second, third


# -- the worker's side ---------------------------------------------------------------

class _Link(Framed):
    def connectionMade(self):
        self.outbox = FrameOutbox(self.transport.fileno(), self.factory.owner.reactor,
                                  lambda: None)
        self.factory.owner._connected(self)

    def stringReceived(self, data):
        self.factory.owner._answered(self, data)

    def connectionLost(self, reason):
        self.outbox.close()
        self.factory.owner._lost(self)


class RemoteWriter:
    """Store.hand_accepts_to's end in a worker: `submit(operation, item)` is a Deferred
    of the dispatcher's answer, or None when this accept is for the local writer."""

    def __init__(self, path, reactor, names, stored_ids=None, max_in_flight=MAX_IN_FLIGHT):
        """names: {grouped operation: its name at the dispatcher}; stored_ids(ids) →
        Deferred of the set of those message ids committed (Store.stored_ids), to
        settle what waited on a dispatcher that died (None: all fail)."""
        self.stored_ids = stored_ids
        self.path = path
        self.reactor = reactor
        self.names = names
        self.max_in_flight = max_in_flight
        self._link = None
        self._waiting = {}                 # seq → (Deferred, the accept's message ids)
        self._seq = 0
        self._stopped = False
        self._connecting = None
        self._retry = None
        self._unsent = []                  # this reactor turn's frames, sent at its end
        self._turn = []                    # its accepts not yet in a frame:
        self._turn_messages = 0            # (seq, name, item, operation), and their messages
        self.here = None                   # here(operation, item) → Deferred: this
                                           # process's own writer (Store.hand_accepts_to)
        self._factory = protocol.ClientFactory()
        self._factory.protocol = _Link
        self._factory.owner = self
        self.remote = 0                    # accepts the dispatcher committed (tests)

    @property
    def connected(self):
        return self._link is not None

    def start(self):
        self._connect()

    def _connect(self):
        self._retry = None
        if self._stopped or self._link is not None or self._connecting is not None:
            return
        creator = protocol.ClientCreator(self.reactor, lambda: self._new_link())
        self._connecting = d = creator.connectUNIX(self.path, timeout=5)

        def failed(failure):
            self._connecting = None
            self._again()
        d.addCallbacks(lambda _: setattr(self, "_connecting", None), failed)

    def _new_link(self):
        link = _Link()
        link.factory = self._factory
        return link

    def _again(self):
        if not self._stopped and self._retry is None:
            self._retry = self.reactor.callLater(RECONNECT_S, self._connect)

    def _connected(self, link):
        if self._stopped:
            link.transport.loseConnection()
            return
        self._link = link
        log.info("accepts go to the dispatcher process's writer")

    def submit(self, operation, item):
        link = self._link
        if (link is None or len(self._waiting) >= self.max_in_flight
                or link.outbox.kept > MAX_KEPT):
            return None
        name = self.names.get(operation)
        if name is None:
            return None
        self._seq += 1
        d = defer.Deferred()
        ids = item[2]                               # insert_messages' item: ids third
        self._waiting[self._seq] = (d, ids)
        # Written at the end of this reactor turn (its delayed calls run before the
        # next poll), in one write: Twisted's transport wrote only once the next poll
        # said the socket was writable, after the HTTP requests that poll returned
        # with it (a frame reached the dispatcher ~1.9 ms after it was made).
        if not self._unsent and not self._turn:
            self.reactor.callLater(0, self._send)
        self._turn.append((self._seq, name, item, operation))
        self._turn_messages += len(ids)
        if self._turn_messages >= TURN_MESSAGES:
            self._frame()
        return d

    def _frame(self):
        """This turn's accepts so far, in one frame; those of a frame that would pass
        MAX_FRAME are committed here instead."""
        turn, self._turn, self._turn_messages = self._turn, [], 0
        frame = dumps((None, ACCEPTS, [(seq, name, item) for seq, name, item, _ in turn]))
        if len(frame) <= MAX_FRAME:
            self._unsent.append(prefixed(frame))
            return
        for seq, _, item, operation in turn:
            d, _ = self._waiting.pop(seq)
            if self.here is None:
                d.errback(TransactionLost("the accept is too large for the dispatcher's "
                                          "link and nothing commits here"))
            else:
                self.here(operation, item).chainDeferred(d)

    def _send(self):
        if self._turn:
            self._frame()
        unsent, self._unsent = self._unsent, []
        if unsent and self._link is not None:
            self._link.outbox.send(b"".join(unsent))

    def _answered(self, link, data):
        frame = link.read(data, "answer from the dispatcher")
        if frame is None:
            return
        seq, kind, value = frame
        if seq is None and kind == ANSWERS:
            try:
                for seq, kind, value in value:
                    self._answer(seq, kind, value)
            except (TypeError, ValueError) as error:
                log.error("unreadable answers from the dispatcher (%s): closing the "
                          "link", error)
                link.transport.loseConnection()
            return
        self._answer(seq, kind, value)

    def _answer(self, seq, kind, value):
        waiting = self._waiting.pop(seq, None)
        if waiting is None:
            return
        d = waiting[0]
        ok, result = decode_result(kind, value)
        if ok:
            self.remote += 1
            d.callback(result)
        else:
            d.errback(result)

    def _lost(self, link):
        if self._link is link:
            self._link = None
            self._unsent = []              # waiting: settled below, from the store
            self._turn, self._turn_messages = [], 0
        waiting, self._waiting = self._waiting, {}
        if waiting:
            self._settle(list(waiting.values()))
        if not self._stopped:
            log.warning("the dispatcher's writer is away: accepts are committed here "
                        "until it is back")
            self._again()

    def _settle(self, waiting):
        """The accepts the dispatcher took with it: committed or not, from the store."""
        def lost():
            return TransactionLost("the dispatcher process went away before committing "
                                   "this accept")
        if self.stored_ids is None:
            found = defer.succeed(set())
        else:
            found = self.stored_ids([i for _, ids in waiting for i in ids])

        def settle(stored):
            kept = 0
            for d, ids in waiting:
                if ids and all(i in stored for i in ids):
                    kept += 1
                    d.callback(ids)
                else:
                    d.errback(lost())
            log.error("the dispatcher process went away with %d accepts waiting for its "
                      "answer: %d were committed, %d not (answered as not stored)",
                      len(waiting), kept, len(waiting) - kept)

        def unreadable(failure):
            log.error("the dispatcher process went away with %d accepts waiting; the "
                      "store cannot tell which it committed (%s): answered as not stored",
                      len(waiting), failure.getErrorMessage())
            for d, _ in waiting:
                d.errback(lost())
        found.addCallbacks(settle, unreadable)

    @defer.inlineCallbacks
    def stop(self, wait_s=STOP_WAIT_S):
        """Disconnect once nothing waits for the dispatcher's answer (at most wait_s:
        what still waits then is settled from the store); Deferred."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for _ in range(int(wait_s / 0.05)):
            if not self._waiting or self._link is None:
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        if self._link is not None:
            self._link.transport.loseConnection()
