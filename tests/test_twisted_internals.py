"""Guards for the one place we lean on Twisted internals (gateway/http/server.py
`_write_now` reads a TCP transport's `dataBuffer` and `_tempDataBuffer` to know that
nothing is buffered before a response). If a Twisted release renames or drops them, this
fails loudly here instead of the fast path silently reordering or losing bytes."""

import socket

from twisted.internet import defer, protocol, reactor, tcp
from twisted.trial import unittest

from gateway.http.server import _write_now


class _Keep(protocol.Protocol):
    def connectionMade(self):
        self.factory.made.callback(self)


class TwistedTransportInternals(unittest.TestCase):
    timeout = 10

    @defer.inlineCallbacks
    def test_a_tcp_connection_still_has_the_buffers_the_fast_write_reads(self):
        factory = protocol.Factory.forProtocol(_Keep)
        factory.made = defer.Deferred()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        self.addCleanup(client.close)
        server = yield factory.made
        transport = server.transport
        self.addCleanup(transport.abortConnection)
        self.assertIsInstance(transport, tcp.Connection)
        for name in ("dataBuffer", "_tempDataBuffer", "socket", "TLS", "disconnecting"):
            self.assertTrue(hasattr(transport, name), f"Twisted's tcp.Connection lost {name}")
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataBuffer, [])

        # Something buffered the normal way: the fast path must queue behind it.
        transport.write(b"first,")
        self.assertEqual(transport._tempDataBuffer, [b"first,"])
        _write_now(transport, b"second")
        received = b""
        client.settimeout(5)
        while len(received) < len(b"first,second"):
            yield _turn()
            try:
                chunk = client.recv(100, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            received += chunk
        self.assertEqual(received, b"first,second")


def _turn():
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


class _Reader:
    """A read descriptor for a bare EPollReactor: counts its reads, or fails them."""

    def __init__(self, sock, fail=False):
        self.sock, self.fail = sock, fail
        self.reads, self.lost = 0, []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "reader"

    def doRead(self):
        self.sock.recv(100)
        self.reads += 1
        if self.fail:
            raise RuntimeError("a failing read")

    def connectionLost(self, reason):
        self.lost.append(reason)


class PollWithoutLogContext(unittest.TestCase):
    """gateway/procs/child.py's doPoll (both children's) reads the epoll reactor's `_poller`,
    `_selectables` and `_doReadOrWrite`: if a Twisted release changes them, this fails
    here, and an event still reads or, failing, is logged and disconnected as before."""

    def test_events_are_handled_as_the_reactor_handles_them(self):
        from twisted.internet.epollreactor import EPollReactor
        from gateway.procs.child import poll_without_log_context
        poll = EPollReactor()
        self.addCleanup(poll._poller.close)
        for name in ("_poller", "_selectables", "_doReadOrWrite"):
            self.assertTrue(hasattr(poll, name), f"EPollReactor lost {name}")
        poll_without_log_context(poll)
        ours, theirs = socket.socketpair()
        failing, other = socket.socketpair()
        for s in (ours, theirs, failing, other):
            self.addCleanup(s.close)
        reader, bad = _Reader(ours), _Reader(failing, fail=True)
        poll.addReader(reader)
        poll.addReader(bad)
        theirs.send(b"x")
        other.send(b"y")
        poll.doIteration(1)
        self.assertEqual((reader.reads, reader.lost), (1, []))
        self.assertEqual(bad.reads, 1)
        self.assertEqual(len(bad.lost), 1)            # disconnected, as Twisted does
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)   # and logged
        self.assertNotIn(bad, poll.getReaders())
        poll.removeReader(reader)
