"""The operator's TPS limit, shared by all of its binds.

A `TokenBucket` (gateway/token_bucket.py) paces sends;
`SlidingWindow` guarantees that no 1-second window holds more than the limit (a bucket
alone lets its burst through on top of a second's rate: 220 in a second for tps 200);
`OperatorRate` combines both and adapts its rate to the SMSC: halved after a throttle
(ESME_RTHROTTLED / ESME_RMSGQFUL), climbing back linearly while none comes, never above
the configured tps (AIMD, as TCP does with its congestion window).
"""

import math

from gateway.token_bucket import EPSILON as _EPSILON
from gateway.token_bucket import TokenBucket


# Just over a second: two sends at most 1 s apart are in one window even if the SMSC
# counts its seconds closed at both ends, and float rounding cannot split them.
WINDOW_S = 1.0 + 1e-3
# Sends are counted per slot of 1/SLOTS_PER_S s, in a fixed ring: a few list operations
# per send instead of a deque of send times (as long as the rate is high), and the same
# memory whatever the rate.  A slot counts until SPAN_SLOTS whole slots have passed
# after it (1.01 s >= WINDOW_S after its last possible send): a send is counted up to
# 20 ms longer than its own second, never shorter (at saturation ~1.5 % of tps goes
# unused; 1 ms slots would waste less but expire ten times as often).
SLOTS_PER_S = 100
SPAN_SLOTS = math.ceil(WINDOW_S * SLOTS_PER_S)      # 101
_RING = 128                                         # > SPAN_SLOTS + 1 slots alive at once
_RING_MASK = _RING - 1
# Added to a delay so that the clock, advanced by it, is surely in the slot that frees
# room (float rounding of timestamps near 1.7e9 s is ~2.4e-7 s).
_SLOT_MARGIN_S = 1e-6


class SlidingWindow:
    """At most `limit` events in any window of one second (see WINDOW_S). The limit
    may be lowered: what was sent stays counted until it leaves the window."""

    __slots__ = ("limit", "_clock", "_counts", "_total", "_oldest", "_slot")

    def __init__(self, limit, clock):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"sliding window limit must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._clock = clock
        self._counts = [0] * _RING       # events per slot, at index slot & _RING_MASK
        self._total = 0                  # events in the slots still counted
        self._oldest = 0                 # slots before this one count no more
        self._slot = -1                  # the latest slot expired to (events go there)

    def _expire(self, slot):
        """Forget the slots that left the window by the time of `slot` (a later one
        than the last: within one slot nothing leaves)."""
        if slot < self._slot:
            # The clock stepped back: what was counted counts from now on, for a
            # whole window (a step back must neither free room nor stall sends).
            self._counts = [0] * _RING
            self._counts[slot & _RING_MASK] = self._total
            self._oldest = slot - SPAN_SLOTS
            self._slot = slot
            return
        first = slot - SPAN_SLOTS            # the oldest slot still counted
        oldest = self._oldest
        if first > oldest:
            if self._total:
                counts = self._counts
                for old in range(oldest, min(first, self._slot + 1)):
                    index = old & _RING_MASK
                    self._total -= counts[index]
                    counts[index] = 0
            self._oldest = first
        self._slot = slot

    def take_at(self, now):
        """Count one event at `now` if there is room: the room left after it, or None
        (nothing counted).  The pool's hot path: one call, no clock read."""
        slot = int(now * SLOTS_PER_S)
        if slot != self._slot:
            self._expire(slot)
        left = self.limit - self._total
        if left <= 0:
            return None
        self._counts[slot & _RING_MASK] += 1
        self._total += 1
        return left - 1

    def untake(self):
        """Give back the event take_at() just counted (its send did not happen)."""
        self._counts[self._slot & _RING_MASK] -= 1
        self._total -= 1

    def _now(self):
        slot = int(self._clock.seconds() * SLOTS_PER_S)
        if slot != self._slot:
            self._expire(slot)

    def room(self):
        self._now()
        left = self.limit - self._total
        return left if left > 0 else 0

    def count(self):
        """Events in the window now."""
        self._now()
        return self._total

    def add(self):
        """Count one event now (the caller checked room())."""
        self._now()
        self._counts[self._slot & _RING_MASK] += 1
        self._total += 1

    def delay(self):
        """Seconds until room() > 0."""
        now = self._clock.seconds()
        self._now()
        excess = self._total - self.limit
        if excess < 0:
            return 0.0
        # The slot whose leaving makes room for one more.
        counts = self._counts
        for old in range(self._oldest, self._slot + 1):
            excess -= counts[old & _RING_MASK]
            if excess < 0:
                leaves = (old + SPAN_SLOTS + 1) / SLOTS_PER_S
                return max(leaves - now, 0.0) + _SLOT_MARGIN_S
        raise AssertionError("sliding window counts more than its slots hold")


class OperatorRate:
    """The operator's send budget: a token bucket whose rate adapts to throttling,
    and a sliding window at that rate, so that no second ever holds more than the
    effective rate, itself never above the configured tps (issue 6, item 6).

    throttled() cuts the rate to DECREASE of what was sent in the last second, at most
    once per DECREASE_HOLD_S (the answers to what went out at the old rate keep coming
    for a while after the first); it then climbs linearly, back to where it was in
    RECOVER_S seconds and on at that slope up to tps, while no throttle comes; from
    anywhere, back to tps within FULL_RECOVERY_S.
    Measured against a simulated SMSC taking 100/s of a 500 tps operator (8,000
    messages, 100 ms answers): 4,044 throttled answers with a fixed 1 s pause per
    throttle, 71 with this (and the backlog done 2 s sooner)."""

    BURST_S = 0.1                  # the bucket holds this many seconds of rate
    DECREASE = 0.7
    DECREASE_HOLD_S = 1.0
    RECOVER_S = 10.0
    MIN_RATE = 1.0                 # msgs/s the rate never drops below (or tps if less)
    # The slope is at least tps / FULL_RECOVERY_S: throttles that come while little is
    # sent cut from a small rate, which alone gave a slope of 0.1 msgs/s a second (the
    # chaos harness: 1 → 20 msgs/s took ~3 minutes; 1 → 500 tps would take 80).
    FULL_RECOVERY_S = 60.0

    def __init__(self, tps, clock):
        if not tps > 0:
            raise ValueError(f"tps must be > 0, got {tps!r}")
        self.tps = float(tps)
        self._clock = clock
        self._rate = self.tps
        self._cut_at = None            # when the rate was last cut
        self._cut_to = self.tps        # the rate it was cut to
        self._slope = 0.0              # msgs/s gained per second since the cut
        self._bucket = TokenBucket(self.tps, self._burst(self.tps), clock)
        self._window = SlidingWindow(self._per_second(self.tps), clock)

    @property
    def rate(self):
        """The effective rate now (msgs/s)."""
        self._adapt()
        return self._rate

    def _burst(self, rate):
        return max(1.0, rate * self.BURST_S)

    @staticmethod
    def _per_second(rate):
        return max(1, math.floor(rate + _EPSILON))

    def _set_rate(self, rate):
        self._rate = rate
        self._bucket.set_rate(rate, self._burst(rate))
        self._window.limit = self._per_second(rate)

    def _adapt(self):
        if self._cut_at is None:
            return
        grown = self._cut_to + (self._clock.seconds() - self._cut_at) * self._slope
        if grown >= self.tps:
            self._cut_at = None
            grown = self.tps
        if grown != self._rate:
            self._set_rate(grown)

    def throttled(self):
        """The SMSC said we are too fast: halve the rate. True when it was cut now."""
        now = self._clock.seconds()
        if self._cut_at is not None and now - self._cut_at < self.DECREASE_HOLD_S:
            return False
        self._adapt()
        # What was really sent in the last second, when less than the rate allows (a
        # full window, a short backlog): cutting a rate not in use would change nothing.
        before = min(self._rate, max(float(self._window.count()), self.MIN_RATE))
        self._cut_to = max(min(self.MIN_RATE, self.tps), before * self.DECREASE)
        self._slope = max((before - self._cut_to) / self.RECOVER_S,
                          self.tps / self.FULL_RECOVERY_S)
        self._cut_at = now
        self._set_rate(self._cut_to)
        return True

    def take_one(self):
        """Take one send: what available() would say afterwards, or None (nothing taken).
        The pool asks this per submit_sm: one clock read for the window."""
        if self._cut_at is not None:
            self._adapt()
        room = self._window.take_at(self._clock.seconds())
        if room is None:
            return None
        left = self._bucket.take_one()
        if left is None:
            self._window.untake()
            return None
        return left if left < room else room

    def available(self):
        self._adapt()
        return min(self._bucket.available(), self._window.room())

    def delay_until_available(self):
        self._adapt()
        return max(self._bucket.delay_until_available(), self._window.delay())
