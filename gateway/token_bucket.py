"""A token bucket: `rate` tokens a second, at most `burst` saved up, computed lazily from
an injected clock (no timers).

The one implementation of it: an operator's TPS (smpp/ratelimit.py, one token per
submit_sm) and an agency's rate (policy/limits.py, one token per part, a request larger
than the bucket let through into debt) both count with it.
"""

# Float slack so that exactly 1/rate seconds yield a whole token despite rounding.
EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; time from an IReactorTime."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_updated")

    def __init__(self, rate, burst, clock):
        if not rate > 0:
            raise ValueError(f"token bucket rate must be > 0, got {rate!r}")
        if not burst >= 1:
            raise ValueError(f"token bucket burst must be >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst          # start full: a fresh bind may send at once
        self._updated = clock.seconds()

    def set_rate(self, rate, burst):
        """Change the rate (and burst); saved tokens beyond the new burst are dropped."""
        self._refill()
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self):
        now = self._clock.seconds()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        # A clock that steps backwards must not mint tokens later: re-anchor on it.
        self._updated = now

    def take_one(self):
        """Take one token: the whole tokens left afterwards (what `available` would then
        say), or None (and nothing taken) when there was none.  Per submit_sm: the
        refill is written out here rather than called."""
        now = self._clock.seconds()
        tokens = self._tokens
        elapsed = now - self._updated
        if elapsed > 0:
            tokens = tokens + elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._tokens = tokens
        self._updated = now
        if tokens + EPSILON >= 1:
            self._tokens = tokens = tokens - 1
            return int(tokens + EPSILON)
        return None

    def spend(self, n):
        """Take `n` tokens, more than there are if need be: the bucket goes into debt,
        paid off by the refill before anything is granted again (a request larger than
        the burst can pass once the bucket is full, and the average rate still holds).
        The caller asked delay_until_available() first."""
        self._refill()
        self._tokens -= n

    def give_back(self, n):
        """Return `n` tokens taken for something that did not happen (up to the burst)."""
        self._refill()
        self._tokens = min(self.burst, self._tokens + n)

    def available(self):
        """Whole tokens that could be taken now."""
        self._refill()
        return int(self._tokens + EPSILON)

    def delay_until_available(self, n=1):
        """Seconds until `n` tokens are there (0.0 if they already are)."""
        if n > self.burst:
            raise ValueError(f"{n} tokens can never be available with burst {self.burst:g}")
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= EPSILON else missing / self.rate
