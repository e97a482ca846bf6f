"""Frames on one link of the writer socket (store/frame_outbox.py): written whole
and in order from any thread, what the socket cannot take kept and written by the
reactor."""

import socket
import threading

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from gateway.store.frame_outbox import FrameOutbox


class Outbox(unittest.TestCase):
    def setUp(self):
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.addCleanup(self.theirs.close)
        self.addCleanup(self.ours.close)
        self.drained = []
        self.outbox = FrameOutbox(self.ours.fileno(), reactor,
                                   lambda: self.drained.append(1))
        self.addCleanup(self.outbox.close)

    @defer.inlineCallbacks
    def test_frames_from_a_thread_arrive_whole_and_in_order_past_a_full_socket(self):
        frames = [bytes([n]) * 50_000 for n in range(20)]      # ~1 MB, the socket ~8 KB
        sender = threading.Thread(target=lambda: [self.outbox.send(f) for f in frames])
        sender.start()
        sender.join()
        assert self.outbox.kept > 0                   # the socket could not take it all
        received = bytearray()
        self.theirs.setblocking(False)
        for _ in range(500):
            try:
                received += self.theirs.recv(1 << 20)
            except BlockingIOError:
                pass
            if len(received) == len(frames) * 50_000:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert bytes(received) == b"".join(frames)
        assert self.outbox.kept == 0 and self.drained

    def test_after_close_frames_are_dropped(self):
        self.outbox.close()
        self.outbox.send(b"late")                     # no error, nothing written
        self.theirs.setblocking(False)
        with self.assertRaises(BlockingIOError):
            self.theirs.recv(10)
