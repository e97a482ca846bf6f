"""An HTTP worker process: the agency API and the accept path, nothing else.

It serves on the socket the supervisor bound (inherited, adopted: the kernel hands
each connection to one of the workers), writes to the same WAL store through its own
writer (a Store that claims nothing: the dispatcher's leases are not its to take
over), and wakes the dispatcher process over the pipe.  Limits across workers: the
daily quota is counted in the store in each accept's transaction (exact, whatever
the number of workers); the rate is split, each worker spending rate_per_s / N.
"""

import logging
import os
import socket

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks

from gateway.citizens.http_directory import HttpDirectory
from gateway.config.load import load_agencies, load_apps, load_directory_file, load_routing
from gateway.dispatch.routing import OperatorRouter
from gateway.outbound.broadcast import Broadcasts
from gateway.procs.child import poll_without_log_context
from gateway.procs.health import HealthReader
from gateway.procs.wake import WakeSender
from gateway.outbound.fallback import EmailFallback
from gateway.service import (
    HTTP_DRAIN_S, bounded, build_api, build_directory, build_http, build_inbox,
    build_national_inbox, build_outbound, build_policy, build_webhooks)
from gateway.store.remote_writer import SOCKET_NAME, RemoteWriter
from gateway.store.store import REMOTE_ACCEPTS, Store

log = logging.getLogger("payam.procs.worker")


class _Routes:
    """The dispatcher's face the accept path needs here: the route stored with each
    message (the routing rules, reloaded on SIGHUP) and the wake-up."""

    def __init__(self, router, wake, remote_writer):
        self.router = router
        self._wake = wake
        self._remote_writer = remote_writer

    def wake(self, routes=None):
        # Accepts the dispatcher's writer committed woke its claim there already: the
        # pipe is for those committed here (its writer away), saving each process a
        # system call per reactor turn.
        if not self._remote_writer.connected:
            self._wake.wake(routes)

    def route_of(self, msisdn):
        return self.router.preferred(msisdn)


class _FeedNotice:
    """The broadcast feeder's face: a broadcast opened here is fed by the dispatcher
    process, told over the pipe."""

    def __init__(self, wake):
        self.wake = wake

    def add(self, broadcast_id, agency, parts):
        self.wake.broadcast_opened()

    def forget(self, broadcast_id):
        pass                     # the feeder finds the broadcast cancelled in the store


class HTTPWorker(MultiService):
    def __init__(self, config, reactor, *, index, workers, run_dir, listen_fd, wake_fd,
                 notifier):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.index = index
        self.workers = workers
        self.run_dir = run_dir
        self.listen_fd = listen_fd
        self.notifier = notifier
        self.wake = WakeSender(wake_fd, reactor)
        poll_without_log_context(reactor)
        self.store = None
        self.remote_writer = None
        self.http_port = None
        self.http_factory = None

    def startService(self):
        super().startService()
        config, reactor = self.config, self.reactor
        _wait_for_the_store()
        self.store = store = Store(config.store_path, reactor, claims=False)
        store.open()
        # Accepts are committed by the dispatcher process's writer while it is there.
        self.remote_writer = RemoteWriter(
            os.path.join(self.run_dir, SOCKET_NAME), reactor,
            {operation: name for name, operation in REMOTE_ACCEPTS.items()},
            stored_ids=store.stored_ids)
        store.hand_accepts_to(self.remote_writer)
        self.remote_writer.start()
        self.keyring, self.limits, audit = build_policy(config, store, reactor)
        self.limits.rate_share = 1.0 / self.workers
        self.limits.store_counts = True
        self.limits.update(config.agencies)       # rates now at this worker's share
        self.routes = _Routes(OperatorRouter(config.routing), self.wake,
                              self.remote_writer)
        self.directory = build_directory(config, reactor)
        self.outbound = build_outbound(store, self.keyring, self.limits, audit,
                                       self.routes, reactor,
                                       config.log.debug_text_agencies,
                                       email_fallback=(EmailFallback(self.directory)
                                                       if config.smtp is not None else None))
        self.outbound.use_directory(self.directory)     # national-ID recipients
        # Partner apps' replies are filed here; their webhook rows are queued here and
        # POSTed by the dispatcher process's pusher (its poller finds due rows).
        self.inbox = build_inbox(config, store)
        self.webhooks = build_webhooks(config, store, self.inbox, reactor)
        self.webhooks.delivers = False
        self.app_keyring, self.app_limits, national_inbox = build_national_inbox(
            config, store, self.inbox, self.directory, audit, reactor)
        self.broadcasts = Broadcasts(store, self.limits, self.outbound, clock=reactor,
                                     route_of=self.routes.route_of,
                                     feeder=_FeedNotice(self.wake))
        self.health = HealthReader(self.run_dir,
                                   {op.name: op.binds for op in config.operators})
        self.api = build_api(self.outbound, store, self.keyring, audit, self.health,
                             reactor, self.broadcasts, national_inbox, self.app_keyring,
                             self.app_limits)
        self.http_factory = build_http(config, self.api, reactor)
        self.http_port = reactor.adoptStreamPort(
            self.listen_fd, _family(config.http_listen[0]), self.http_factory)
        log.info("HTTP worker %d of %d serving", self.index + 1, self.workers)
        self.notifier.ready()

    @inlineCallbacks
    def stopService(self):
        # Stop taking connections, answer what was received (its messages stored),
        # then close the store: the dispatcher goes on sending it.
        if self.http_port is not None:
            yield self.http_port.stopListening()
        if self.http_factory is not None:
            yield bounded(self.reactor, self.http_factory.stop(), HTTP_DRAIN_S)
        if isinstance(self.directory, HttpDirectory):
            yield self.directory.close()   # its kept-alive connections
        if self.remote_writer is not None:
            yield self.remote_writer.stop()    # (the HTTP side drained: none waits)
        if self.store is not None:
            yield self.store.close()
        yield super().stopService()
        log.info("HTTP worker %d stopped cleanly", self.index + 1)

    def reload(self):
        """SIGHUP: agencies (keys, limits), routing rules, partner apps and the directory
        file anew, as the dispatcher process does; on an error keep
        the old ones (the dispatcher process says why, too)."""
        config = self.config
        try:
            agencies = load_agencies(config.agencies_path)
            routing = load_routing(config.routing_rules_path,
                                   {op.name for op in config.operators})
            apps = load_apps(config.apps_path, agencies) if config.apps_path else ()
            citizens = (load_directory_file(config.directory.path)
                        if config.directory is not None and config.directory.path else None)
        except Exception as error:
            log.error("reload refused, keeping the running configuration:\n%s", error)
            return False
        self.keyring.update(agencies)
        self.limits.update(agencies)
        self.routes.router = OperatorRouter(routing)
        self.webhooks.update_agencies(agencies)
        self.app_keyring.update(apps)
        self.app_limits.update(apps)
        if citizens is not None:
            self.directory.update(citizens)
        log.info("HTTP worker %d reloaded %d agencies", self.index + 1, len(agencies))
        return True


def _wait_for_the_store(fd=0):
    """Until the supervisor says (a line on stdin) that the dispatcher process has the
    store checked, migrated and open; nothing else is ours to do meanwhile."""
    while True:
        data = os.read(fd, 64)
        if not data:
            raise RuntimeError("the supervisor went away before the store was open")
        if b"\n" in data:
            return


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET
