"""What a child process is told by the supervisor, and how it answers.

The environment names the child's role and the descriptors it inherited: the HTTP
socket (workers), the wake-up pipe's end, and a pipe back to the supervisor on which
the child says READY once it serves.  Children never speak to systemd themselves.
"""

import ctypes
import errno
import json
import logging
import os
import signal

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log as twisted_log

log = logging.getLogger("payam.procs.child")

ENV = "PAYAM_CHILD"             # JSON: role, index, workers, run_dir, fds, config source
READY_FD = 3
LISTEN_FD = 4
WAKE_FD = 5
PR_SET_PDEATHSIG = 1


def child_settings(environ=None):
    """The supervisor's JSON for this process, or None when it is no child."""
    value = (os.environ if environ is None else environ).get(ENV)
    return json.loads(value) if value else None


def die_with_parent():
    """SIGTERM when the supervisor dies however it dies (SIGKILL too): a child left
    behind would go on writing to a store another daemon may take."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the supervisor (no prctl)")
    if os.getppid() == 1:              # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


class ChildNotifier:
    """gateway.systemd.Notifier's face for a child: READY goes to the supervisor (which
    tells systemd once every child is), the rest is the supervisor's to say."""

    enabled = True

    def __init__(self, fd=READY_FD):
        self.fd = fd
        self._said = False

    def ready(self, status=None):
        if self._said:
            return
        self._said = True
        try:
            os.write(self.fd, b"READY\n")
        except OSError as error:
            log.warning("cannot tell the supervisor this process is ready: %s", error)

    def reloading(self):
        pass

    def stopping(self):
        pass

    def start_watchdog(self, reactor):
        pass

    def stop_watchdog(self):
        pass


def poll_without_log_context(reactor):
    """The epoll reactor's doPoll, less its log context per socket event (both children:
    the HTTP workers and the dispatcher, whose binds, writer socket and wake pipe are
    its events).

    Twisted runs every read and write event inside log.callWithLogger, which copies a
    context dict to name the selectable as `log_system` of legacy log events: ~2.1 µs an
    event (measured), one or more per request in a worker, for a field our log observer
    never shows (gateway.logsetup.TwistedEvents writes the event's text and namespace
    only).
    What the event does, and how an exception in it is logged and ends the connection,
    is _doReadOrWrite's as before. Another reactor (tests) is left as it is."""
    if not isinstance(reactor, EPollReactor):
        return
    poller, selectables = reactor._poller, reactor._selectables
    event_of = reactor._doReadOrWrite

    def do_poll(timeout):
        if timeout is None:
            timeout = -1          # wait indefinitely
        try:
            events = poller.poll(timeout, len(selectables))
        except OSError as error:
            if error.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                event_of(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                twisted_log.err()
    reactor.doIteration = reactor.doPoll = do_poll
