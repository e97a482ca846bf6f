"""Frames on one link of the writer socket (remote_writer.py), written from any
thread, whole and in order.

The dispatcher answers a worker's accepts from its writer thread right after their
commit (procs/writer_server.py), and a few from its reactor; a worker sends a reactor
turn's accepts at the turn's end (RemoteWriter.submit).  Each writes here, under one
lock, on a duplicate of the link's descriptor: Twisted's transport of the link only
reads.  A frame the socket cannot take at once is kept (bounded by each side:
writer_server.py, remote_writer.py) and written by the reactor when the socket can
take more: the duplicate is its own descriptor there.
"""

import logging
import os
import threading

log = logging.getLogger("payam.store.frame_outbox")


class FrameOutbox:
    """An IWriteDescriptor while it keeps bytes the socket did not take."""

    def __init__(self, fd, reactor, on_drained):
        """fd: the link's socket, duplicated here (closed by close()); on_drained():
        on the reactor once what was kept is written."""
        self.fd = os.dup(fd)              # shares the socket's O_NONBLOCK
        self.reactor = reactor
        self.on_drained = on_drained
        self._lock = threading.Lock()
        self._kept = bytearray()
        self._watched = False             # added to the reactor as a writer
        self._closed = False

    @property
    def kept(self):
        return len(self._kept)

    def send(self, frame):
        """Write `frame` (bytes) after what is kept; from any thread."""
        with self._lock:
            if self._closed:
                return
            if not self._kept:
                try:
                    sent = os.write(self.fd, frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    return                # the link is gone: its reader sees it close
                if sent == len(frame):
                    return
                frame = memoryview(frame)[sent:]
            self._kept += frame
            if not self._watched:
                self._watched = True
                self.reactor.callFromThread(self._watch)

    def _watch(self):
        with self._lock:
            if self._closed or not self._kept:
                self._watched = False
                return
        self.reactor.addWriter(self)

    # -- IWriteDescriptor, on the reactor -------------------------------------------

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "writer-answers"

    def doWrite(self):
        with self._lock:
            if self._closed:
                return None
            try:
                sent = os.write(self.fd, self._kept)
            except BlockingIOError:
                return None
            except OSError:
                sent = len(self._kept)    # gone: the link's reader sees it close
            del self._kept[:sent]
            if self._kept:
                return None
            self._watched = False
        self.reactor.removeWriter(self)
        self.on_drained()
        return None

    def connectionLost(self, reason):
        self.close()

    def close(self):
        """On the reactor: drop what is kept; later frames are dropped too."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._kept.clear()
            watched, self._watched = self._watched, False
        if watched:
            self.reactor.removeWriter(self)
        os.close(self.fd)
