"""A token bucket: the operator's TPS limit, shared by all of its binds.

Tokens are computed lazily from the clock on each call (no timers), so a bucket costs
O(1) per operation; `delay_until_available` tells a caller when to look again.
"""


# Float slack so that exactly 1/rate seconds yield a whole token despite rounding.
_EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; time from an IReactorTime."""

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

    def _refill(self):
        now = self._clock.seconds()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        # A clock that steps backwards must not mint tokens later: re-anchor on it.
        self._updated = now

    def take(self, n=1):
        """Take `n` tokens if they are all there; False (and nothing taken) otherwise."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of tokens: {n!r}")
        self._refill()
        if self._tokens + _EPSILON >= n:
            self._tokens -= n
            return True
        return False

    def take_one(self):
        """Take one token: the whole tokens left afterwards (what `available` would then
        say), or None (and nothing taken) when there was none. One refill instead of the
        two of take() + available() (the pool calls this per submit)."""
        self._refill()
        tokens = self._tokens
        if tokens + _EPSILON >= 1:
            self._tokens = tokens = tokens - 1
            return int(tokens + _EPSILON)
        return None

    def available(self):
        """Whole tokens that `take` would grant now."""
        self._refill()
        return int(self._tokens + _EPSILON)

    def delay_until_available(self, n=1):
        """Seconds until `n` tokens are there (0.0 if they already are)."""
        if n > self.burst:
            raise ValueError(f"{n} tokens can never be available with burst {self.burst:g}")
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate
