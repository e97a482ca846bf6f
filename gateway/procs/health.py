"""The binds' state, written by the dispatcher process for the HTTP workers' /healthz.

Only the dispatcher holds binds; a worker answers /healthz from this file in the run
directory (rewritten when the state changes, checked every second; atomically, by
rename; touched when unchanged).  A missing or unreadable file is every operator
unbound: degraded, never a guess that all is well; so is a file not touched for
STALE_AFTER_S (a dispatcher hung or gone: its last word is no longer the binds' state).
"""

import json
import os
import time

from twisted.internet.task import LoopingCall

HEALTH_FILE = "health.json"
EVERY_S = 1.0
STALE_AFTER_S = 5 * EVERY_S


class HealthWriter:
    def __init__(self, run_dir, health, reactor):
        self.path = os.path.join(run_dir, HEALTH_FILE)
        self.health = health
        self._last = None
        self._loop = LoopingCall(self.write)
        self._loop.clock = reactor

    def start(self):
        self._loop.start(EVERY_S, now=True)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def write(self):
        document = json.dumps(self.health(), sort_keys=True)
        if document == self._last:
            try:
                os.utime(self.path)          # still this dispatcher's word, now
                return
            except OSError:
                pass                         # gone from the run directory: written anew
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w") as f:
            f.write(document)
        os.replace(temporary, self.path)
        self._last = document


class HealthReader:
    def __init__(self, run_dir, operators, wall_clock=time.time):
        """operators: {name: binds configured}, the answer while nothing is known;
        wall_clock: seconds since the epoch, as file times are."""
        self.path = os.path.join(run_dir, HEALTH_FILE)
        self.operators = operators
        self._wall_clock = wall_clock
        self._seen = (None, None)        # (mtime_ns, document)

    def __call__(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if self._wall_clock() - mtime / 1e9 > STALE_AFTER_S:
                return self._unbound()       # the dispatcher's word is old
            if mtime != self._seen[0]:
                with open(self.path) as f:
                    self._seen = (mtime, json.load(f))
            return self._seen[1]
        except (OSError, ValueError):
            return self._unbound()

    def _unbound(self):
        return {name: {"bound": 0, "binds": binds} for name, binds in self.operators.items()}
