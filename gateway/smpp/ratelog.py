"""Lines a faulty peer can make us repeat thousands of times a second, said once per key
and interval (issue 6, items 3, 9 and 12). The daemon's RepeatFilter (logsetup.py) only
aggregates WARNING and above; INFO lines fed by a peer come through here too.

The first line for a key goes out at once; the ones after it within `interval_s` are only
counted, and the next line for that key that goes out carries the count ("41 more like
this in the last 10s"). No timers: a count is told when its key speaks again. Keys are
few and bounded (operator × kind); past `max_keys` the oldest is forgotten.
"""

import logging

INTERVAL_S = 10.0
MAX_KEYS = 1024


class RateLimitedLog:
    def __init__(self, logger, clock, interval_s=INTERVAL_S, max_keys=MAX_KEYS):
        self._logger = logger
        self._clock = clock
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._keys = {}                # key -> [time of the last line, lines held back]

    def log(self, level, key, message, *args):
        """Log message % args now, or count it; True when it was logged."""
        now = self._clock.seconds()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return False
        if entry is not None:
            del self._keys[key]        # re-inserted below: newest last
            if entry[1]:
                message += " (%d more like this in the last %.0fs)"
                args += (entry[1], now - entry[0])
        elif len(self._keys) >= self._max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = [now, 0]
        self._logger.log(level, message, *args)
        return True

    def info(self, key, message, *args):
        return self.log(logging.INFO, key, message, *args)

    def warning(self, key, message, *args):
        return self.log(logging.WARNING, key, message, *args)

    def error(self, key, message, *args):
        return self.log(logging.ERROR, key, message, *args)
