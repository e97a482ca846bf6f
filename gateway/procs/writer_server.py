"""The dispatcher process's end of the workers' accepts (store/remote_writer.py).

Listens on `<run dir>/writer.sock` (mode 0600, the run directory is the daemon's own);
each frame holds a worker's reactor turn of grouped accepts, each handed to this
process's Store (accept_named), so the dispatcher's writer commits the workers'
accepts and its own writes in one group transaction with one fsync.
Answers go from the writer thread right after the commit (Store.after_each_commit),
one frame per commit per worker, through the link's FrameOutbox: no turn of this
reactor (busy with the binds) and no Deferred chain, pickle and write per accept
between the commit and the worker.  Each accept is handed over with its _Accepted,
which the writer thread knows by its class; with a store that cannot answer from its
writer thread (a test's stand-in), or once stopping, the reactor answers it.  The
claim is woken once per commit.
Bounded: a link is not read while it has MAX_PENDING accepts uncommitted (until it is
down to half: the worker then commits its own), nor while its outbox keeps more than
MAX_KEPT bytes the worker has not read (until it is written); a frame of more than
TURN_MESSAGES accepts (no worker writes one) closes its link.
"""

import logging
import os

from twisted.internet import defer, protocol

from gateway.store.frame_outbox import FrameOutbox
from gateway.store.remote_writer import (
    ACCEPTS, ANSWERS, MAX_FRAME, TURN_MESSAGES, Framed, dumps, encode_result, prefixed)

log = logging.getLogger("payam.procs.writer_server")

MAX_PENDING = 2000
MAX_KEPT = 4 << 20


class _Accepts(Framed):
    def connectionMade(self):
        self.pending = 0
        self.paused = False
        self.gone = False
        self.outbox = FrameOutbox(self.transport.fileno(), self.factory.server.reactor,
                                   self.update_reading)
        self.factory.server.links.add(self)

    def stringReceived(self, data):
        frame = self.read(data, "accepts from an HTTP worker")
        if frame is None:
            return
        seq, kind, accepts = frame
        try:
            if seq is not None or kind != ACCEPTS:
                raise ValueError(f"a frame of kind {kind!r}")
            # A worker closes a frame at TURN_MESSAGES messages, each accept holding
            # one or more: a frame of more accepts is no worker's (and past
            # MAX_PENDING before the link could pause).
            if len(accepts) > TURN_MESSAGES:
                raise ValueError(f"{len(accepts)} accepts in one frame")
            for seq, name, item in accepts:
                self._accept(seq, name, item)
        except (TypeError, ValueError) as error:
            log.error("unreadable accepts from an HTTP worker (%s): closing the link",
                      error)
            self.transport.loseConnection()

    def _accept(self, seq, name, item):
        self.pending += 1
        try:
            self.factory.server.store.accept_named(name, item, _Accepted(self, seq))
        except Exception as error:          # an unknown name: a worker of another build
            self.pending -= 1
            self._answer(seq, "lost", str(error))
            return
        self.update_reading()

    def _done(self, seq, kind, value):
        self.pending -= 1
        self._answer(seq, kind, value)
        self.update_reading()

    def answered_early(self, count):
        """On the reactor: `count` accepts were answered from the writer thread."""
        self.pending -= count
        self.update_reading()

    def _answer(self, seq, kind, value):
        if not self.gone:
            self.outbox.send(prefixed(dumps((seq, kind, value))))

    def update_reading(self):
        if self.gone:
            return
        if not self.paused:
            if self.pending >= MAX_PENDING or self.outbox.kept > MAX_KEPT:
                self.paused = True
                self.transport.pauseProducing()
        elif self.pending <= MAX_PENDING // 2 and not self.outbox.kept:
            self.paused = False
            self.transport.resumeProducing()
            # `paused` is also IntNStringReceiver's: frames it had already read when
            # the link paused wait in its buffer, and would until the worker sent more
            # bytes.  Read them in a turn of their own (this may run inside a read).
            self.factory.server.reactor.callLater(0, self._read_buffered)

    def _read_buffered(self):
        if not self.gone and not self.paused:
            self.dataReceived(b"")

    def connectionLost(self, reason):
        self.gone = True
        self.outbox.close()
        self.factory.server.links.discard(self)


class _Accepted:
    """One accept's answer, told by the writer (Writer.submit_grouped's `answer`): on
    the reactor, or not at all when the writer thread answered it after the commit
    (WriterServer._answer_committed tells it by its class).  Instead of a Deferred,
    its addCallbacks and a dict entry per accept (~2 µs of ~10 an accept on the
    dispatcher's reactor)."""

    __slots__ = ("link", "seq")

    def __init__(self, link, seq):
        self.link = link
        self.seq = seq

    def callback(self, result):
        self.link._done(self.seq, *encode_result(True, result))
        self.link.factory.server.committed()

    def errback(self, failure):
        self.link._done(self.seq, *encode_result(False, failure))


class WriterServer:
    def __init__(self, path, store, reactor, on_committed):
        self.path = path
        self.store = store
        self.reactor = reactor
        self.on_committed = on_committed
        self.port = None
        self.links = set()
        # Whether the writer thread answers the accepts of each commit (not with a
        # store that has no after_each_commit, a test's stand-in).
        self.answering = False
        self._wake_due = False

    def start(self):
        try:
            os.remove(self.path)              # a previous dispatcher's, in this run
        except FileNotFoundError:
            pass
        hook = getattr(self.store, "after_each_commit", None)
        if hook is not None:
            hook(self._answer_committed)
            self.answering = True
        factory = protocol.Factory()
        factory.protocol = _Accepts
        factory.server = self
        self.port = self.reactor.listenUNIX(self.path, factory, mode=0o600)

    def _answer_committed(self, results):
        """On the writer thread, after each commit: answer the workers' accepts in it
        (one frame per worker), and leave the rest, with one result of the counts for
        the reactor's books, to the reactor."""
        left = []
        answers = {}
        for result in results:
            owner = result[0]
            if owner.__class__ is not _Accepted:
                left.append(result)
                continue
            answers.setdefault(owner.link, []).append(
                (owner.seq, *encode_result(result[1], result[2])))
        if answers:
            for link, batch in answers.items():
                for frame in _frames(batch):
                    link.outbox.send(prefixed(frame))
            books = defer.Deferred()
            books.addCallback(self._answered_early)
            left.append((books, True, {link: len(batch) for link, batch in answers.items()}))
        return left

    def _answered_early(self, counts):
        for link, count in counts.items():
            link.answered_early(count)
        self.committed()

    def committed(self):
        # Every answer of one commit fires in one reactor turn: wake the claim once.
        if not self._wake_due:
            self._wake_due = True
            self.reactor.callLater(0, self._wake)

    def _wake(self):
        self._wake_due = False
        try:
            self.on_committed()
        except Exception:
            log.exception("waking the claim after workers' accepts failed")

    def stop(self):
        """Stop listening and drop the links (a worker then commits its own accepts,
        and fails those still waiting here: not known to be stored)."""
        hook = getattr(self.store, "after_each_commit", None)
        if hook is not None and self.answering:
            self.answering = False
            try:
                hook(None)
            except Exception:                 # the store closed first: no writer left
                pass
        for link in list(self.links):
            link.transport.loseConnection()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def _frames(batch):
    """The answers of one commit to one worker, in frames of at most MAX_FRAME bytes
    (a commit can answer 2,000 accepts of 1,000 ids each)."""
    frame = dumps((None, ANSWERS, batch))
    if len(frame) <= MAX_FRAME or len(batch) == 1:
        return [frame]
    half = len(batch) // 2
    return _frames(batch[:half]) + _frames(batch[half:])
