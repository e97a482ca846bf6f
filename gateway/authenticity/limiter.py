"""How often one citizen may ask 4040: `per_hour` checks in an hour from their first.

Over it, one polite answer says so; after that the citizen's texts to 4040 get no
answer until the hour is over (each answer is an SMS we pay for and that a script could
aim at someone else's phone). Kept in memory, at most `max_tracked` citizens: when full,
citizens whose hour is over are forgotten first, then the longest-tracked ones. A
restart forgets every count (an hour's worth of checks, at worst, twice).
"""

ALLOWED, TELL, SILENT = "allowed", "tell", "silent"
WINDOW_S = 3600.0
MAX_TRACKED = 100_000


class CheckLimiter:
    def __init__(self, per_hour, clock, max_tracked=MAX_TRACKED):
        if per_hour < 1:
            raise ValueError("checks_per_hour must be at least 1")
        self.per_hour = per_hour
        self.clock = clock
        self.max_tracked = max_tracked
        self._windows = {}        # citizen -> [window start, checks, told]; insertion order

    def take(self, citizen):
        """ALLOWED (counted), TELL (just over: answer that the limit is reached) or
        SILENT (over, and told already)."""
        now = self.clock.seconds()
        window = self._windows.get(citizen)
        if window is None or now - window[0] >= WINDOW_S:
            if window is not None:
                del self._windows[citizen]
            elif len(self._windows) >= self.max_tracked:
                self._make_room(now)
            self._windows[citizen] = [now, 1, False]
            return ALLOWED
        if window[1] < self.per_hour:
            window[1] += 1
            return ALLOWED
        if not window[2]:
            window[2] = True
            return TELL
        return SILENT

    def retry_after(self, citizen):
        """Seconds until `citizen` may check again (0: now)."""
        window = self._windows.get(citizen)
        if window is None:
            return 0.0
        return max(0.0, window[0] + WINDOW_S - self.clock.seconds())

    def _make_room(self, now):
        windows = self._windows
        for citizen in [c for c, w in windows.items() if now - w[0] >= WINDOW_S]:
            del windows[citizen]
        while len(windows) >= self.max_tracked:
            del windows[next(iter(windows))]
