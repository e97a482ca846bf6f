"""The epoll reactor's event loop without Twisted's log context per socket event.

Applied to the daemon's reactor in every process (gateway/cli.py): each socket event
otherwise runs inside log.callWithLogger (~2.1 µs an event, measured in the HTTP
worker: one or more per request, per submit_sm_resp and per receipt).
"""

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log as twisted_log


def poll_without_log_context(reactor):
    """The epoll reactor's doPoll, less its log context per socket event.

    Twisted runs every read and write event inside log.callWithLogger, which copies a
    context dict to name the selectable as `log_system` of legacy log events: ~2.1 µs an
    event (measured), one or more per request here, for a field our log observer never
    shows (gateway.logsetup.TwistedEvents writes the event's text and namespace only).
    What the event does, and how an exception in it is logged and ends the connection,
    is _doReadOrWrite's as before. Another reactor (tests, other platforms) is left as it
    is; tests/test_twisted_internals.py guards the internals read here."""
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
