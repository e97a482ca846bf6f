"""The dispatcher process's end of the workers' accepts (store/remote_writer.py).

Listens on `<run dir>/writer.sock` (mode 0600, the run directory is the daemon's own);
each frame is one grouped accept, handed to this process's Store (accept_named), so the
dispatcher's writer commits the workers' accepts and its own writes in one group
transaction with one fsync.  Each is answered after its commit, and the claim is woken
at once (the worker's byte on the wake pipe is then only a spare).
Bounded: a connection with MAX_PENDING accepts uncommitted is not read until it is
down to half (the worker then commits its own).
"""

import logging
import os

from twisted.internet import protocol

from gateway.store.remote_writer import Framed, dumps, encode_result

log = logging.getLogger("payam.procs.writer_server")

MAX_PENDING = 2000


class _Accepts(Framed):
    def connectionMade(self):
        self.pending = 0
        self.paused = False
        self.gone = False
        self.factory.server.links.add(self)

    def stringReceived(self, data):
        frame = self.read(data, "accept from an HTTP worker")
        if frame is None:
            return
        seq, name, item = frame
        server = self.factory.server
        try:
            d = server.store.accept_named(name, item)
        except Exception as error:          # an unknown name: a worker of another build
            self._answer(seq, "lost", str(error))
            return
        self.pending += 1
        if self.pending >= MAX_PENDING and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        d.addCallbacks(self._committed, self._failed, callbackArgs=(seq,),
                       errbackArgs=(seq,))

    def _committed(self, result, seq):
        self._done(seq, "ok", result)
        self.factory.server.committed()

    def _failed(self, failure, seq):
        kind, value = encode_result(False, failure)
        self._done(seq, kind, value)

    def _done(self, seq, kind, value):
        self.pending -= 1
        if kind == "ok":
            kind, value = encode_result(True, value)
        self._answer(seq, kind, value)
        if self.paused and self.pending <= MAX_PENDING // 2:
            self.paused = False
            self.transport.resumeProducing()

    def _answer(self, seq, kind, value):
        if not self.gone:
            self.sendString(dumps((seq, kind, value)))

    def connectionLost(self, reason):
        self.gone = True
        self.factory.server.links.discard(self)


class WriterServer:
    def __init__(self, path, store, reactor, on_committed):
        self.path = path
        self.store = store
        self.reactor = reactor
        self.on_committed = on_committed
        self.port = None
        self.links = set()
        self._wake_due = False

    def start(self):
        try:
            os.remove(self.path)              # a previous dispatcher's, in this run
        except FileNotFoundError:
            pass
        factory = protocol.Factory()
        factory.protocol = _Accepts
        factory.server = self
        self.port = self.reactor.listenUNIX(self.path, factory, mode=0o600)

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
        for link in list(self.links):
            link.transport.loseConnection()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
