"""The binds' state, written by the dispatcher process for the HTTP workers' /healthz.

Only the dispatcher holds binds; a worker answers /healthz from this file in the run
directory (rewritten when the state changes, checked every second; atomically, by
rename).  A missing or unreadable file is every operator unbound: degraded, never a
guess that all is well.
"""

import json
import os

from twisted.internet.task import LoopingCall

HEALTH_FILE = "health.json"
EVERY_S = 1.0


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
            return
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w") as f:
            f.write(document)
        os.replace(temporary, self.path)
        self._last = document


class HealthReader:
    def __init__(self, run_dir, operators):
        """operators: {name: binds configured}, the answer while nothing is known."""
        self.path = os.path.join(run_dir, HEALTH_FILE)
        self.operators = operators
        self._seen = (None, None)        # (mtime_ns, document)

    def __call__(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self._seen[0]:
                with open(self.path) as f:
                    self._seen = (mtime, json.load(f))
            return self._seen[1]
        except (OSError, ValueError):
            return {name: {"bound": 0, "binds": binds}
                    for name, binds in self.operators.items()}
