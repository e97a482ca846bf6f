"""systemd's notify protocol (sd_notify(3)) without the systemd package: datagrams to
$NOTIFY_SOCKET.

`Type=notify` units are told READY=1 once the daemon can take messages, STOPPING=1 when
it begins to stop, RELOADING=1 … READY=1 around a reload, and WATCHDOG=1 from the
reactor at half of WATCHDOG_USEC, so that a wedged reactor is restarted by systemd.
Without NOTIFY_SOCKET (a terminal, tests, another supervisor) every call does nothing.
"""

import logging
import os
import socket
import time

from twisted.internet.task import LoopingCall

log = logging.getLogger("payam.systemd")


class Notifier:
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.address = _address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval(environ)
        self._watchdog = None
        self._failed = False

    @property
    def enabled(self):
        return self.address is not None

    def notify(self, *assignments):
        """Send "NAME=value" lines as one datagram; True when sent. A failure is logged
        once and never raised: the daemon runs on without its supervisor's ear."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # Never wait: a supervisor that reads nothing must not stall the reactor
                # (a full datagram queue blocks a blocking send).
                s.setblocking(False)
                s.connect(self.address)
                s.send(message)
            return True
        except OSError as error:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", error)
            return False

    def ready(self, status=None):
        self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def reloading(self):
        # MONOTONIC_USEC: systemd 253+ wants it with RELOADING=1 (Type=notify-reload).
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self):
        self.notify("STOPPING=1")

    def start_watchdog(self, reactor):
        """WATCHDOG=1 every half WATCHDOG_USEC, from the reactor (no thread: a stuck
        reactor must miss its pings)."""
        if self.address is None or self.watchdog_s is None or self._watchdog is not None:
            return
        self._watchdog = LoopingCall(self.notify, "WATCHDOG=1")
        self._watchdog.clock = reactor
        self._watchdog.start(self.watchdog_s, now=True)

    def stop_watchdog(self):
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None


def _address(value):
    """The socket address of NOTIFY_SOCKET: a path, or '@name' for Linux's abstract
    namespace (a leading NUL byte)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None                  # vsock and other forms: not ours to speak


def _watchdog_interval(environ):
    """Half of WATCHDOG_USEC in seconds, if the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
