"""The wake-up pipe between HTTP workers and the dispatcher process.

Workers write one byte per reactor turn that accepted something (b"m"), or opened a
broadcast (b"b"); the dispatcher reads whatever is there and claims at once.  The pipe
is only a hurry-up: a byte lost to a full pipe (the dispatcher is behind anyway) or to
a dispatcher restarting is made good by its periodic claim (POLL_S) and, for
broadcasts, by its reading open broadcasts at start.  Both ends stay open in the
supervisor, so a restarted dispatcher finds the same pipe.
"""

import logging
import os

log = logging.getLogger("payam.procs.wake")

MESSAGES = b"m"
BROADCAST = b"b"


class WakeSender:
    def __init__(self, fd, reactor):
        self.fd = fd
        self.reactor = reactor
        self._pending = bytearray()
        self._failed = False

    def wake(self, routes=None):
        """Messages were stored (the accept path's on_accepted)."""
        self._queue(MESSAGES)

    def broadcast_opened(self):
        self._queue(BROADCAST)

    def _queue(self, code):
        if not self._pending:
            self.reactor.callLater(0, self._flush)
        if code not in self._pending:
            self._pending += code

    def _flush(self):
        data, self._pending = bytes(self._pending), bytearray()
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            pass                      # the pipe is full: the dispatcher has work queued
        except OSError as error:
            if not self._failed:
                self._failed = True
                log.warning("cannot wake the dispatcher process (%s): it claims every "
                            "poll instead", error)


class WakeReader:
    """Reads the pipe on the dispatcher's reactor (an IReadDescriptor)."""

    def __init__(self, fd, on_messages, on_broadcast):
        self.fd = fd
        self.on_messages = on_messages
        self.on_broadcast = on_broadcast
        os.set_blocking(fd, False)

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "wake-pipe"

    def doRead(self):
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        if BROADCAST in data:
            self.on_broadcast()
        if data:
            self.on_messages()
        return None

    def connectionLost(self, reason):
        pass
