"""The dispatcher process: the whole GatewayService but the agency API.

It holds the binds, inbound, USSD, webhooks, the broadcast feeder, housekeeping and the
admin endpoint; the HTTP workers' accepts wake it over the pipe (wake.py).  The store's
lock is the supervisor's (it outlives a dispatcher restart).  Its own accepts (HELP
answers, 4040 checks, USSD filings' SMS) count the quota in the store too.
"""

import logging
import os
import signal

from twisted.internet.task import LoopingCall

from gateway import metrics

from gateway.listening import listen_tcp
from gateway.admin.endpoint import AdminAPI
from gateway.http.server import HTTPFactory
from gateway.procs.child import poll_without_log_context
from gateway.procs.health import HealthWriter
from gateway.procs.wake import WakeReader
from gateway.procs.writer_server import WriterServer
from gateway.store.remote_writer import SOCKET_NAME
from gateway.service import GatewayService

log = logging.getLogger("payam.procs.dispatcher")

WINDOWS_EVERY_S = 1.0
# The least time between two commits of this process's writer, which commits the HTTP
# workers' accepts too.  An accept here also waits for two hops beside its commit,
# and the writer has a core of its own beside the workers' HTTP work:
# bench/mt_throughput.py --workers 1 made 4,487-4,940 msg/s at one process's 6 ms and
# 5,265-6,007 at 2 ms (load ~1), for +1-13 µs/msg here.  (A commit now takes ~2 ms
# at 50 clients, so 3 ms changed neither the batch, 19 a commit, nor the rate.)
COMMIT_INTERVAL_S = 0.002


class _LockHeldBySupervisor:
    def acquire(self):
        pass

    def release(self):
        pass


class DispatcherProcess(GatewayService):
    def __init__(self, config, reactor, *, run_dir, wake_fd, notifier, create_store=False):
        super().__init__(config, reactor, notifier=notifier, create_store=create_store)
        self.store_lock = _LockHeldBySupervisor()
        self.run_dir = run_dir
        self.wake_fd = wake_fd
        self.health_file = HealthWriter(run_dir, self.health, reactor)
        poll_without_log_context(reactor)
        self._wake_reader = None
        self._windows = None
        self.writer_server = None

    def _build(self):
        self.store.commit_every(COMMIT_INTERVAL_S)
        super()._build()
        self.limits.store_counts = True

    def _listen(self):
        # No agency API here (the workers serve it) and no /metrics (the supervisor
        # serves every process's); the admin endpoint, which knows the binds.
        config, reactor = self.config, self.reactor
        if config.admin_listen:
            admin = HTTPFactory(AdminAPI(self.status, self.reload_for_admin).router,
                                clock=reactor, max_connections=16)
            host, port = config.admin_listen
            self.admin_port = listen_tcp(reactor, port, admin, host,
                                         self.listen_settings["admin"])
        self._wake_reader = WakeReader(self.wake_fd, self.dispatcher.wake,
                                       self._broadcast_opened)
        reactor.addReader(self._wake_reader)
        # The workers' accepts, committed by this process's writer (one fsync for all).
        self.writer_server = WriterServer(os.path.join(self.run_dir, SOCKET_NAME),
                                          self.store, reactor, self.dispatcher.wake)
        self.writer_server.start()
        self.health_file.start()
        self._windows = LoopingCall(self._export_windows)
        self._windows.clock = reactor
        self._windows.start(WINDOWS_EVERY_S, now=True)
        self.http_port = _NoPort()
        log.info("dispatcher process with %d operators, %d agencies", len(self.pools),
                 len(config.agencies))

    def _export_windows(self):
        """The pools' window gauges are functions read at scrape time in one process;
        /metrics is the supervisor's here, which reads only what the children wrote."""
        for name, pool in self.pools.items():
            metrics.child(metrics.WINDOW_IN_FLIGHT, name).set(pool.in_flight())
            metrics.child(metrics.WINDOW_SIZE, name).set(pool.window_size())

    def _broadcast_opened(self):
        """A worker opened a broadcast: the feeder takes up every open one it lacks."""
        d = self.store.open_broadcasts()
        d.addCallback(lambda rows: [self.feeder.add(*row) for row in rows])
        d.addErrback(lambda failure: log.error("reading open broadcasts failed: %s",
                                               failure.getErrorMessage()))

    def stopService(self):
        if self.writer_server is not None:
            self.writer_server.stop()      # the workers stopped first
        if self._wake_reader is not None:
            self.reactor.removeReader(self._wake_reader)
        self.health_file.stop()
        if self._windows is not None and self._windows.running:
            self._windows.stop()
        self.http_port = None
        self.http_factory = None
        return super().stopService()

    def daemon_pid(self):
        # The supervisor: systemd's main pid, which forwards a signal to every process.
        return os.getppid()

    def reload_for_admin(self):
        """The admin endpoint's reload: here, then (when it took) every HTTP worker,
        through the supervisor (SIGUSR1: forward SIGHUP to the workers)."""
        reloaded, problem = super().reload_for_admin()
        if reloaded:
            try:
                os.kill(os.getppid(), signal.SIGUSR1)
            except OSError as error:
                log.error("cannot ask the supervisor to reload the HTTP workers: %s",
                          error)
        return reloaded, problem


class _NoPort:
    """startService names the API's port in its READY status; the workers listen."""

    def getHost(self):
        return self

    port = "workers"

    def stopListening(self):
        return None
