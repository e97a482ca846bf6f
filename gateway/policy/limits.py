"""Per-agency limits, counted in SMS parts: a rate (token bucket) and a daily quota.

The bucket (gateway/token_bucket.py) refills at rate_per_s and holds rate_per_s tokens
(one second of burst; one token at least, which lets the same parts through as a bucket
of a rate below 1/s would). A request larger than the bucket (1,000 recipients x 2
parts) is let through when the bucket is full and leaves it in debt, so the average
rate still holds and no request is impossible. The quota day runs midnight to midnight in Tehran (UTC+03:30; no
DST since 2022). Parts are reserved before the store write and released if it fails,
so concurrent requests cannot overshoot and failures cost the agency nothing.

The count is kept here, in memory; the store is asked once per agency, when it first
appears (start, SIGHUP), for the parts it accepted so far today.  The store answers
with a Deferred (at once for SQLite): until that answer the agency's requests are
refused for a second (QuotaUnknown), never let through against a count that lacks
what was sent earlier today.
"""

import logging
import math
from dataclasses import dataclass

from twisted.internet import defer

from gateway.token_bucket import TokenBucket

log = logging.getLogger("payam.policy.limits")

TEHRAN_OFFSET_S = 3 * 3600 + 30 * 60
DAY_S = 86400
READ_RETRY_S = 1.0          # a failed read of the parts used today is asked again after


def tehran_day(now):
    """The Tehran calendar day containing `now`, as a day number."""
    return int((now + TEHRAN_OFFSET_S) // DAY_S)


def start_of_day(day):
    """When the Tehran day numbered `day` begins (epoch seconds)."""
    return day * DAY_S - TEHRAN_OFFSET_S


def start_of_tehran_day(now):
    return start_of_day(tehran_day(now))


class RateLimited(Exception):
    def __init__(self, retry_after):
        super().__init__(f"rate limit reached; retry after {retry_after} s")
        self.retry_after = retry_after


class QuotaUnknown(RateLimited):
    """The agency's parts used today are still being read from the store."""

    def __init__(self):
        Exception.__init__(self, "today's count of parts is being read; retry after 1 s")
        self.retry_after = 1


class QuotaExceeded(Exception):
    def __init__(self, used, quota, retry_after):
        super().__init__(f"daily quota of {quota} parts reached ({used} used today)")
        self.used = used
        self.quota = quota
        self.retry_after = retry_after      # seconds until the quota day ends


# Not frozen: one per request, and a frozen dataclass's __init__ sets each field
# through object.__setattr__ (~0.4 µs more, measured). Nothing changes one once made.
@dataclass(slots=True)
class Reservation:
    agency: str
    parts: int
    day: int
    rate_spent: bool = True         # False: quota alone (reserve_quota), no tokens to return


def _burst(rate):
    # One second of rate, and at least the one token a TokenBucket needs: a request
    # passes only on a full bucket either way, and pays the same debt.
    return max(1.0, rate)


class _AgencyState:
    __slots__ = ("bucket", "quota", "day", "used", "day_start", "day_end", "reading",
                 "read_after")

    def __init__(self, rate, quota, clock):
        now = clock.seconds()
        self.bucket = TokenBucket(rate, _burst(rate), clock)
        self.quota = quota
        self._set_day(tehran_day(now))
        self.used = None            # parts used today; None until the store has said
        self.reading = False        # the store is being asked
        self.read_after = now       # after a failed read: when to ask again

    def _set_day(self, day):
        self.day = day
        self.day_start = start_of_day(day)
        self.day_end = self.day_start + DAY_S

    def set_rate(self, rate):
        self.bucket.set_rate(rate, _burst(rate))

    def roll_day(self, now):
        """A new quota day starts at 0 parts."""
        # Compare with the day's bounds, not tehran_day(now) per request.
        if not self.day_start <= now < self.day_end:
            day = tehran_day(now)
            if day != self.day:
                self._set_day(day)
                if self.used is not None:   # one still being read is read for the new day
                    self.used = 0


def seconds_to_midnight(now):
    """Whole seconds (at least 1) until the quota day ends."""
    return max(1, math.ceil(start_of_tehran_day(now) + DAY_S - now))


def _check_quota(state, parts, now):
    if state.used + parts > state.quota:
        raise QuotaExceeded(state.used, state.quota, seconds_to_midnight(now))


class AgencyLimits:
    def __init__(self, agencies, store, clock, *, rate_share=1.0, store_counts=False):
        """rate_share: the part of each agency's rate this process may spend (one of N
        HTTP workers: 1/N, the rate split between them); store_counts: the store counts
        the quota in each accept's transaction too (several processes accept: this
        count sees only this one's), see store_quota."""
        self.store = store
        self.clock = clock
        self.rate_share = rate_share
        self.store_counts = store_counts
        self._states = {}
        self.loaded = self.update(agencies)

    def update(self, agencies):
        """New or changed agencies (SIGHUP): counters of known agencies carry on; new
        ones are read from the store.  Deferred that fires once they are."""
        now = self.clock.seconds()
        states = {}
        reads = []
        for agency in agencies:
            state = self._states.get(agency.id)
            if state is None:
                state = _AgencyState(float(agency.rate_per_s) * self.rate_share,
                                     agency.daily_parts, self.clock)
                reads.append((agency.id, state))
            else:
                state.roll_day(now)
                state.set_rate(float(agency.rate_per_s) * self.rate_share)
                state.quota = agency.daily_parts
            states[agency.id] = state
        self._states = states
        return defer.gatherResults([self._read_used(agency_id, state)
                                    for agency_id, state in reads])

    def _read_used(self, agency_id, state):
        """Ask the store for the parts the agency used today; the answer counts only
        for the day it was asked for (a new day starts at 0 anyway)."""
        state.reading = True
        day = state.day
        d = self.store.parts_used(agency_id, since=state.day_start)

        def read(used):
            state.reading = False
            if state.used is None and state.day == day:
                state.used = used

        def failed(failure):
            # Asked again by the agency's next request, after READ_RETRY_S.
            state.reading = False
            state.read_after = self.clock.seconds() + READ_RETRY_S
            log.error("reading agency %s's parts used today failed: %s", agency_id,
                      failure.getErrorMessage())

        d.addCallbacks(read, failed)
        return d

    def reserve(self, agency_id, parts):
        """Take `parts` from the agency's rate and quota, or raise RateLimited /
        QuotaExceeded having taken nothing."""
        if parts < 1:
            raise ValueError("a reservation needs at least one part")
        state, now = self._known_state(agency_id)
        bucket = state.bucket
        wait = bucket.delay_until_available(min(parts, bucket.burst))
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))
        if state.used + parts > state.quota:           # _check_quota, written out
            raise QuotaExceeded(state.used, state.quota, seconds_to_midnight(now))
        bucket.spend(parts)
        state.used += parts
        return Reservation(agency_id, parts, state.day)

    def reserve_quota(self, agency_id, parts):
        """Take `parts` from the agency's daily quota alone (a broadcast, whose drain
        the agency's rate paces instead), or raise QuotaUnknown / QuotaExceeded."""
        state, now = self._known_state(agency_id)
        _check_quota(state, parts, now)
        state.used += parts
        return Reservation(agency_id, parts, state.day, rate_spent=False)

    def _known_state(self, agency_id):
        """The agency's state on today's quota day, once the store has said what it used
        (the read is started here, and QuotaUnknown raised, until then)."""
        state = self._states[agency_id]
        now = self.clock.seconds()
        state.roll_day(now)
        if state.used is None:
            if not state.reading and now >= state.read_after:
                self._read_used(agency_id, state)
            if state.used is None:
                raise QuotaUnknown()
        return state, now

    def quota_left(self, agency_id):
        """Parts the agency may still use today, or None until the store has said."""
        used = self.used_today(agency_id)
        return None if used is None else self._states[agency_id].quota - used

    def store_quota(self, reservation):
        """The store's accept(quota=...) for a reservation when the store counts the
        quota across processes, else None.  This process's count still refuses early
        what it alone already knows to be over."""
        if not self.store_counts or reservation is None:   # None: nothing reserved
            return None
        state = self._states.get(reservation.agency)
        if state is None:
            return None
        return (reservation.agency, start_of_day(reservation.day),
                reservation.parts, state.quota)

    def seconds_to_midnight(self):
        return seconds_to_midnight(self.clock.seconds())

    def refused_by_store(self, reservation, used):
        """The store refused the reservation's parts: other processes used `used` parts
        today; this count learns it (the reservation was released)."""
        state = self._states.get(reservation.agency)
        if state is not None and state.day == reservation.day and state.used is not None:
            state.used = max(state.used, used)

    def release(self, reservation):
        """Give back a reservation whose messages were not stored."""
        state = self._states.get(reservation.agency)
        if state is None:
            return
        state.roll_day(self.clock.seconds())
        if reservation.rate_spent:
            state.bucket.give_back(reservation.parts)
        if state.day == reservation.day and state.used is not None:
            state.used = max(0, state.used - reservation.parts)

    def used_today(self, agency_id):
        state = self._states[agency_id]
        state.roll_day(self.clock.seconds())
        return state.used
