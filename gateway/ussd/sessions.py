"""The live USSD dialogs: a bounded table keyed by (MSISDN, its session number or None),
with an idle timeout and a maximum lifetime, both below the network's timers (TCAP
idles out at ~60 s a step, sessions are capped at a few minutes).

One sweep a second ends what is due, whatever the number of dialogs: dialogs are kept in
the order they were last active (an OrderedDict moved on each step), so the idle ones are
at its front, and in a deque in the order they began, for the lifetime; each sweep pops
only what has expired. Time comes from the injected clock.
"""

from collections import OrderedDict, deque

from twisted.internet.task import LoopingCall

IDLE_S = 60.0
MAX_LIFETIME_S = 180.0
MAX_SESSIONS = 20_000
SWEEP_S = 1.0


class Live:
    """One entry: the dialog and its times."""

    __slots__ = ("key", "value", "started_at", "active_at", "busy")

    def __init__(self, key, value, now):
        self.key = key
        self.value = value
        self.started_at = now
        self.active_at = now
        self.busy = False                 # a step is being worked out (dynamic, filing)


class SessionTable:
    def __init__(self, clock, on_expired, *, idle_s=IDLE_S, max_lifetime_s=MAX_LIFETIME_S,
                 max_sessions=MAX_SESSIONS, sweep_s=SWEEP_S):
        """on_expired(live, reason) for each dialog the sweep ends: "timeout" (idle) or
        "lifetime"."""
        self.clock = clock
        self.on_expired = on_expired
        self.idle_s = idle_s
        self.max_lifetime_s = max_lifetime_s
        self.max_sessions = max_sessions
        self._by_activity = OrderedDict()
        self._by_start = deque()
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock
        self.sweep_s = sweep_s

    def __len__(self):
        return len(self._by_activity)

    def start(self):
        if not self._sweep.running:
            self._sweep.start(self.sweep_s, now=False)

    def stop(self):
        if self._sweep.running:
            self._sweep.stop()

    def get(self, key):
        return self._by_activity.get(key)

    def full(self):
        return len(self._by_activity) >= self.max_sessions

    def add(self, key, value):
        """A new live entry (replacing none: remove the old one first); None when full."""
        if self.full():
            return None
        live = Live(key, value, self.clock.seconds())
        self._by_activity[key] = live
        if len(self._by_start) >= 2 * self.max_sessions:
            # Dialogs ended early leave their place behind: keep the deque bounded.
            self._by_start = deque(entry for entry in self._by_start
                                   if self._by_activity.get(entry.key) is entry)
        self._by_start.append(live)
        return live

    def touch(self, live):
        live.active_at = self.clock.seconds()
        self._by_activity.move_to_end(live.key)

    def remove(self, live):
        if self._by_activity.get(live.key) is live:
            del self._by_activity[live.key]
        # its place in _by_start is dropped lazily by the sweep

    def live(self):
        return list(self._by_activity.values())

    def sweep(self):
        now = self.clock.seconds()
        ended = []
        while self._by_activity:
            live = next(iter(self._by_activity.values()))
            if now - live.active_at < self.idle_s:
                break
            del self._by_activity[live.key]
            ended.append((live, "timeout"))
        while self._by_start:
            live = self._by_start[0]
            if self._by_activity.get(live.key) is not live:
                self._by_start.popleft()          # ended already
                continue
            if now - live.started_at < self.max_lifetime_s:
                break
            self._by_start.popleft()
            del self._by_activity[live.key]
            ended.append((live, "lifetime"))
        for live, reason in ended:
            self.on_expired(live, reason)
