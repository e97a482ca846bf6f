"""The `run` process of the split daemon: starts, watches and stops the others.

Start: the store's lock (held for the daemon's life, across child restarts), the HTTP
socket bound once (a port in use is ListenFailed, as in one process), the wake-up pipe,
a private run directory (metrics files, the binds' state); then the dispatcher and the
HTTP workers at once; a worker opens the store only when told on its stdin, once the
dispatcher is READY (the store checked, migrated and open); once every child is READY,
systemd hears READY=1.
A child that exits while the daemon runs is started again after a short pause, at
most RESTARTS times within RESTART_WINDOW_S per slot; past that the daemon stops with
exit 1 (systemd's Restart= takes over).
SIGHUP is forwarded to every child (each reloads); SIGUSR1 (from the dispatcher, after
an admin reload) to the HTTP workers.  SIGTERM: the workers stop first (they answer
what they took and close their store), then the dispatcher drains its binds and
unbinds; exit 0 when every child exited 0.
"""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol

from gateway.listening import ListenFailed
from gateway.procs import stats
from gateway.procs.child import ENV, LISTEN_FD, READY_FD, WAKE_FD
from gateway.store.lock import StoreLock
from gateway.systemd import Notifier

log = logging.getLogger("payam.procs.supervisor")

RESTARTS = 5
RESTART_WINDOW_S = 60.0
RESTART_PAUSE_S = 0.5
# Together within systemd's TimeoutStopSec (30 s in systemd/payam-gateway.service).
WORKERS_STOP_S = 10.0        # HTTP workers answer what they took within HTTP_DRAIN_S
DISPATCHER_STOP_S = 18.0     # binds drain their windows (bounded) and unbind
BACKLOG = 1024
LASTING_EXITS = (65, 75)     # cli.EXIT_STORE, cli.EXIT_LOCKED: said once, not retried


def workers_for(setting, cpus=None):
    """`http.workers`: a number, or "auto": one per CPU but the dispatcher's; on a
    single CPU none (one process: a split there only adds its hand-offs)."""
    if setting == "auto":
        cpus = cpus or os.cpu_count() or 1
        return cpus - 1
    return int(setting)


def bind_listener(host, port, setting):
    """The agency API's socket, bound and listening, inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        why = ("address already in use" if error.errno == errno.EADDRINUSE
               else (error.strerror or str(error)).lower())
        raise ListenFailed(setting, host, port, why) from None
    sock.setblocking(False)
    return sock


class _Child(ProcessProtocol):
    def __init__(self, supervisor, role, index):
        self.supervisor = supervisor
        self.role = role
        self.index = index
        self.ready = False
        self.told = False            # a worker: told the store is open
        self.unstarted_kill = False  # killed at stop before it was told: no failure
        self.ended = defer.Deferred()
        self.pid = None

    def connectionMade(self):
        self.pid = self.transport.pid

    def childDataReceived(self, fd, data):
        if fd == READY_FD and b"READY" in data and not self.ready:
            self.ready = True
            self.supervisor.child_ready(self)

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        signal_ = getattr(reason.value, "signal", None)
        self.supervisor.child_ended(self, code, signal_)
        self.ended.callback(code)

    @property
    def name(self):
        return "dispatcher" if self.role == "dispatcher" else f"http worker {self.index + 1}"


class Supervisor(Service):
    def __init__(self, config, reactor, *, workers, source, log_args=(), notifier=None,
                 listen_setting=None, embedded=None):
        """source: how a child makes the same configuration ({"kind": "run", "path":
        ...} or the demo's), passed in its environment; log_args: the run's logging
        options, handed on; embedded: a MultiService of the supervisor's own (the
        demo's simulator)."""
        self.config = config
        self.reactor = reactor
        self.workers = workers
        self.source = source
        self.log_args = list(log_args)
        self.notifier = notifier if notifier is not None else Notifier()
        self.listen_setting = listen_setting or f"http.listen in {config.path}"
        self.store_lock = StoreLock(config.store_path)
        self.children = {}           # (role, index) → _Child
        self.starts = {}             # (role, index) → start times within the window
        self.stopping = False
        self.exit_code = 0
        self.ready_said = False
        self.store_ready = False     # the dispatcher was READY once: store migrated
        self.listener = None
        self.wake = None
        self.run_dir = None
        self.metrics_port = None

    # lifecycle -------------------------------------------------------------------
    def startService(self):
        super().startService()
        self.store_lock.acquire()
        try:
            host, port = self.config.http_listen
            self.listener = bind_listener(host, port, self.listen_setting)
            self.wake = os.pipe()
            os.set_blocking(self.wake[1], False)
            self.run_dir = tempfile.mkdtemp(prefix="payam-run-")
            self._listen_metrics()
        except BaseException:
            self._clean_up()
            raise
        signal.signal(signal.SIGUSR1,
                      lambda *_: self.reactor.callFromThread(self.reload_workers))
        log.info("supervisor: agency API on http://%s:%d/ served by %d HTTP workers, "
                 "a dispatcher process holding %d operators' binds", host,
                 self.listener.getsockname()[1], self.workers, len(self.config.operators))
        self._spawn("dispatcher", 0)
        for index in range(self.workers):
            self._spawn("http", index)

    def _listen_metrics(self):
        if not self.config.metrics_listen:
            return
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.wsgi import WSGIResource
        from prometheus_client.exposition import make_wsgi_app
        from gateway.listening import listen_tcp

        registry = stats.registry(self.run_dir, self.processes)
        root = Resource()
        root.putChild(b"metrics", WSGIResource(self.reactor, self.reactor.getThreadPool(),
                                               make_wsgi_app(registry)))
        host, port = self.config.metrics_listen
        self.metrics_port = listen_tcp(self.reactor, port, Site(root), host,
                                       f"metrics.listen in {self.config.path}")

    def processes(self):
        found = [("supervisor", 0, os.getpid())]
        found += [(child.role, child.index, child.pid)
                  for child in list(self.children.values()) if child.pid]
        return found

    def _spawn(self, role, index):
        slot = (role, index)
        now = self.reactor.seconds()
        starts = [t for t in self.starts.get(slot, []) if t > now - RESTART_WINDOW_S]
        starts.append(now)
        self.starts[slot] = starts
        child = _Child(self, role, index)
        self.children[slot] = child
        settings = {"role": role, "index": index, "workers": self.workers,
                    "run_dir": self.run_dir, "source": self.source}
        env = {name: value for name, value in os.environ.items()
               if name not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env[ENV] = json.dumps(settings)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.run_dir
        fds = {0: "w", 1: 1, 2: 2, READY_FD: "r",
               WAKE_FD: self.wake[0] if role == "dispatcher" else self.wake[1]}
        if role == "http":
            fds[LISTEN_FD] = self.listener.fileno()
        argv = [sys.executable, "-m", "gateway.cli", "run", *self.log_args]
        self.reactor.spawnProcess(child, sys.executable, argv, env=env, childFDs=fds)
        log.info("started the %s (pid %s)", child.name, child.pid)
        if role == "http" and self.store_ready:
            self._go(child)

    def _go(self, worker):
        """Tell a worker (on its stdin) that the store is open for it."""
        try:
            worker.told = True
            worker.transport.writeToChild(0, b"go\n")
        except Exception:          # it has just died: its restart is told anew
            pass

    def child_ready(self, child):
        log.info("the %s is ready", child.name)
        if child.role == "dispatcher" and not self.store_ready:
            # The store is migrated and open: the workers, started meanwhile (their
            # imports and configuration in parallel), may open it now.
            self.store_ready = True
            for (role, _), worker in list(self.children.items()):
                if role == "http":
                    self._go(worker)
        if not self.ready_said and len(self.children) == self.workers + 1 \
                and all(c.ready for c in self.children.values()):
            self.ready_said = True
            host, _ = self.config.http_listen
            self.notifier.ready(f"agency API on {host}:{self.listener.getsockname()[1]}, "
                                f"{self.workers} HTTP workers")
            self.notifier.start_watchdog(self.reactor)

    def child_ended(self, child, code, signal_):
        if self.run_dir is not None and child.pid:
            stats.forget_gauges(self.run_dir, child.pid)
        slot = (child.role, child.index)
        if self.children.get(slot) is child:
            del self.children[slot]
        if self.stopping:
            if code != 0 and not child.unstarted_kill:
                log.error("the %s exited with %s while stopping", child.name,
                          code if code is not None else f"signal {signal_}")
                self.exit_code = self.exit_code or 1   # a lasting exit's code stays
            return
        how = f"exit code {code}" if code is not None else f"signal {signal_}"
        if code in LASTING_EXITS:
            # The store needs a person, or another daemon has it: no restart helps.
            log.info("the %s ended (%s): stopping the daemon", child.name, how)
            self.exit_code = code
            self.reactor.callLater(0, self.reactor.stop)
            return
        recent = [t for t in self.starts.get(slot, [])
                  if t > self.reactor.seconds() - RESTART_WINDOW_S]
        if len(recent) >= RESTARTS:
            log.error("the %s ended (%s) %d times within %d s: stopping the daemon",
                      child.name, how, len(recent), RESTART_WINDOW_S)
            self.exit_code = 1
            self.reactor.callLater(0, self.reactor.stop)
            return
        log.error("the %s ended (%s): starting it again", child.name, how)
        self.reactor.callLater(RESTART_PAUSE_S, self._restart, child.role, child.index)

    def _restart(self, role, index):
        if not self.stopping and (role, index) not in self.children:
            self._spawn(role, index)

    @defer.inlineCallbacks
    def stopService(self):
        self.stopping = True
        super().stopService()
        self.notifier.stopping()
        log.info("stopping: HTTP workers first, then the dispatcher")
        workers = [c for (role, _), c in list(self.children.items()) if role == "http"]
        for worker in workers:
            if not worker.told:
                # Still waiting to open the store (its stdin is read in a blocking
                # call the reactor cannot interrupt): it has taken nothing, kill it.
                worker.unstarted_kill = True
                self._signal(worker, signal.SIGKILL)
        yield self._stop(workers, WORKERS_STOP_S)
        dispatcher = [c for (role, _), c in list(self.children.items())
                      if role == "dispatcher"]
        yield self._stop(dispatcher, DISPATCHER_STOP_S)
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        self._clean_up()
        self.notifier.stop_watchdog()
        log.info("stopped cleanly" if self.exit_code == 0 else "stopped")

    def _stop(self, children, seconds):
        """SIGTERM, then SIGKILL past `seconds`; fires once all have ended."""
        ended = []
        for child in children:
            self._signal(child, signal.SIGTERM)
            ended.append(child.ended)

        def late():
            for child in children:
                if not child.ended.called:
                    log.error("the %s did not stop within %d s: killed", child.name,
                              seconds)
                    self._signal(child, signal.SIGKILL)
        timer = self.reactor.callLater(seconds, late)
        d = defer.DeferredList(ended)
        d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return d

    def _signal(self, child, sig):
        try:
            child.transport.signalProcess(sig)
        except Exception:          # already gone: ProcessExitedAlready
            pass

    def _clean_up(self):
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.wake is not None:
            for fd in self.wake:
                os.close(fd)
            self.wake = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        self.store_lock.release()

    # reload ----------------------------------------------------------------------
    def reload(self):
        """SIGHUP: every child reloads its configuration."""
        self.notifier.reloading()
        for child in list(self.children.values()):
            self._signal(child, signal.SIGHUP)
        self.notifier.ready()
        return True

    def reload_workers(self):
        """SIGUSR1: the dispatcher reloaded for the admin endpoint (`payam-gateway
        reload`); the workers follow, and systemd hears RELOADING=1 … READY=1 around
        it, as from one process (only this process may speak to NOTIFY_SOCKET)."""
        self.notifier.reloading()
        for (role, _), child in list(self.children.items()):
            if role == "http":
                self._signal(child, signal.SIGHUP)
        self.notifier.ready()
