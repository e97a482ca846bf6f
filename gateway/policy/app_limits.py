"""Per-app request rate: a partner app asks at most `rate_per_s` citizen requests a
second (apps.yaml, default 50), so that no app can walk the directory or scrape
citizens' inboxes faster than a real user base would read them.

One token bucket per app (gateway/token_bucket.py), holding one second of requests;
refused requests are answered 429 with the seconds until a token is back.  Buckets live
in memory and are kept across SIGHUP for apps that stay (a reload cannot reset a rate).
"""

import math

from gateway.policy.limits import RateLimited
from gateway.token_bucket import TokenBucket


class AppRequestLimits:
    def __init__(self, apps, clock):
        self.clock = clock
        self._buckets = {}
        self.update(apps)

    def update(self, apps):
        """SIGHUP: apps anew; a known app keeps its bucket (at its new rate)."""
        buckets = {}
        for app in apps:
            rate = float(app.rate_per_s)
            bucket = self._buckets.get(app.id)
            if bucket is None:
                bucket = TokenBucket(rate, max(1.0, rate), self.clock)
            elif bucket.rate != rate:
                bucket.set_rate(rate, max(1.0, rate))
            buckets[app.id] = bucket
        self._buckets = buckets

    def admit(self, app):
        """Count one request of `app`, or RateLimited(whole seconds to wait)."""
        bucket = self._buckets.get(app.id)
        if bucket is None:               # removed by a reload while its request ran
            raise RateLimited(1)
        if bucket.take_one() is None:
            raise RateLimited(max(1, math.ceil(bucket.delay_until_available())))
