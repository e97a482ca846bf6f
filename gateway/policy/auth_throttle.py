"""Failed-authentication throttle: an address that keeps presenting bad keys is refused
for a while without its keys being looked at.

After `failures` failed authentications from one address within `window_s`, every
request from it is answered 429 for `block_s` (the contract: "repeated failed
authentication from one address is answered 429 for a while"). Keys are random, so this
is not about guessing them: it stops a misconfigured or hostile client from costing us
a hash, an audit check and a 401 per request at full speed.

Only addresses that failed are tracked, so a well-behaved client costs one dict miss.
The table is bounded: when full, expired entries go first, then the oldest.
"""

import math

DEFAULT_FAILURES = 10
DEFAULT_WINDOW_S = 60.0
DEFAULT_BLOCK_S = 60.0
DEFAULT_MAX_ADDRESSES = 10_000


class _Entry:
    __slots__ = ("since", "failures", "blocked_until")

    def __init__(self, now):
        self.since = now                 # start of the counting window
        self.failures = 0
        self.blocked_until = None


class FailedAuthThrottle:
    def __init__(self, clock, *, failures=DEFAULT_FAILURES, window_s=DEFAULT_WINDOW_S,
                 block_s=DEFAULT_BLOCK_S, max_addresses=DEFAULT_MAX_ADDRESSES):
        self.clock = clock
        self.failures = failures
        self.window_s = window_s
        self.block_s = block_s
        self.max_addresses = max_addresses
        self._entries = {}               # address -> _Entry, in order of first failure

    def retry_after(self, address):
        """Whole seconds until `address` may try again, or None if it is not blocked."""
        entry = self._entries.get(address)
        if entry is None or entry.blocked_until is None:
            return None
        left = entry.blocked_until - self.clock.seconds()
        if left <= 0:
            del self._entries[address]   # served its time: counting starts afresh
            return None
        return max(1, math.ceil(left))

    def failed(self, address):
        """Count a failed authentication; True when this one starts a block."""
        now = self.clock.seconds()
        entry = self._entries.get(address)
        if entry is not None and entry.blocked_until is not None:
            if entry.blocked_until > now:
                return False             # already blocked: the block does not grow
            del self._entries[address]
            entry = None
        if entry is None:
            if len(self._entries) >= self.max_addresses:
                self._make_room(now)
            entry = self._entries[address] = _Entry(now)
        elif now - entry.since >= self.window_s:
            entry.since, entry.failures = now, 0
        entry.failures += 1
        if entry.failures >= self.failures:
            entry.blocked_until = now + self.block_s
            return True
        return False

    def __len__(self):
        return len(self._entries)

    def _make_room(self, now):
        """Drop what has expired; if that is not enough, the oldest tenth (so that a
        full table costs one sweep per many insertions, not one per insertion)."""
        entries = self._entries
        for address, entry in list(entries.items()):
            ended = (entry.blocked_until if entry.blocked_until is not None
                     else entry.since + self.window_s)
            if ended <= now:
                del entries[address]
        if len(entries) >= self.max_addresses:
            for address in list(entries)[:max(1, self.max_addresses // 10)]:
                del entries[address]
