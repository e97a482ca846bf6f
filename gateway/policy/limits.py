"""Per-agency limits, counted in SMS parts: a rate (token bucket) and a daily quota.

The bucket refills at rate_per_s and holds at most rate_per_s tokens (one second of
burst). A request larger than the bucket (1,000 recipients x 2 parts) is let through when
the bucket is full and leaves it in debt, so the average rate still holds and no
request is impossible. The quota day runs midnight to midnight in Tehran (UTC+03:30; no
DST since 2022). Parts are reserved before the store write and released if it fails,
so concurrent requests cannot overshoot and failures cost the agency nothing.
"""

import math
from dataclasses import dataclass

TEHRAN_OFFSET_S = 3 * 3600 + 30 * 60
DAY_S = 86400


def tehran_day(now):
    """The Tehran calendar day containing `now`, as a day number."""
    return int((now + TEHRAN_OFFSET_S) // DAY_S)


def start_of_tehran_day(now):
    return tehran_day(now) * DAY_S - TEHRAN_OFFSET_S


class RateLimited(Exception):
    def __init__(self, retry_after):
        super().__init__(f"rate limit reached; retry after {retry_after} s")
        self.retry_after = retry_after


class QuotaExceeded(Exception):
    def __init__(self, used, quota, retry_after):
        super().__init__(f"daily quota of {quota} parts reached ({used} used today)")
        self.used = used
        self.quota = quota
        self.retry_after = retry_after      # seconds until the quota day ends


@dataclass(frozen=True)
class Reservation:
    agency: str
    parts: int
    day: int


class _AgencyState:
    __slots__ = ("rate", "quota", "tokens", "stamp", "day", "used", "day_start", "day_end")

    def __init__(self, rate, quota, now, used):
        self.rate = rate
        self.quota = quota
        self.tokens = rate
        self.stamp = now
        self._set_day(tehran_day(now))
        self.used = used

    def _set_day(self, day):
        self.day = day
        self.day_start = day * DAY_S - TEHRAN_OFFSET_S
        self.day_end = self.day_start + DAY_S

    def refill(self, now):
        if now > self.stamp:
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        # Compare with the day's bounds, not tehran_day(now) per request.
        if not self.day_start <= now < self.day_end:
            day = tehran_day(now)
            if day != self.day:
                self._set_day(day)
                self.used = 0


class AgencyLimits:
    def __init__(self, agencies, store, clock):
        self.store = store
        self.clock = clock
        self._states = {}
        self.update(agencies)

    def update(self, agencies):
        """New or changed agencies (SIGHUP): counters of known agencies carry on."""
        now = self.clock.seconds()
        states = {}
        for agency in agencies:
            state = self._states.get(agency.id)
            if state is None:
                used = self.store.parts_used(agency.id, since=start_of_tehran_day(now))
                state = _AgencyState(float(agency.rate_per_s), agency.daily_parts, now, used)
            else:
                state.refill(now)
                state.rate = float(agency.rate_per_s)
                state.tokens = min(state.tokens, state.rate)
                state.quota = agency.daily_parts
            states[agency.id] = state
        self._states = states

    def reserve(self, agency_id, parts):
        """Take `parts` from the agency's rate and quota, or raise RateLimited /
        QuotaExceeded having taken nothing."""
        if parts < 1:
            raise ValueError("a reservation needs at least one part")
        state = self._states[agency_id]
        now = self.clock.seconds()
        state.refill(now)
        needed_now = min(parts, state.rate)
        if state.tokens < needed_now:
            wait = (needed_now - state.tokens) / state.rate
            raise RateLimited(max(1, math.ceil(wait)))
        if state.used + parts > state.quota:
            until_midnight = start_of_tehran_day(now) + DAY_S - now
            raise QuotaExceeded(state.used, state.quota, max(1, math.ceil(until_midnight)))
        state.tokens -= parts
        state.used += parts
        return Reservation(agency_id, parts, state.day)

    def release(self, reservation):
        """Give back a reservation whose messages were not stored."""
        state = self._states.get(reservation.agency)
        if state is None:
            return
        state.refill(self.clock.seconds())
        state.tokens = min(state.rate, state.tokens + reservation.parts)
        if state.day == reservation.day:
            state.used = max(0, state.used - reservation.parts)

    def used_today(self, agency_id):
        state = self._states[agency_id]
        state.refill(self.clock.seconds())
        return state.used
