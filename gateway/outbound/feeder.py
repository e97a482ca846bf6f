"""Drains open broadcasts into the dispatcher's queue, at each agency's rate, fairly.

A broadcast's recipients wait in the store as plain rows; every `tick_s` the feeder
turns a few of them into claimable parts (store.feed_broadcast), so that:
- an agency's broadcasts together never feed faster than its `rate_per_s` (parts per
  second, a token bucket of one second's burst): its rate bounds its drain;
- each broadcast keeps only a bounded backlog of fed parts waiting (`backlog_parts`,
  scaled by its agency's weight), eligible from the moment they are fed: the claim takes
  parts oldest first, so two broadcasts draining at once are claimed interleaved, in
  proportion to their backlogs (their agencies' weights, their `rate_per_s`), and a
  single message accepted meanwhile waits behind at most those backlogs, never behind
  a whole broadcast;
- emergency and high messages keep their lanes (the claim's priorities).
"""

import logging

log = logging.getLogger("payam.broadcast.feeder")

TICK_S = 0.1
BACKLOG_PARTS = 4000             # fed parts a broadcast of the heaviest agency keeps waiting
MAX_FEED = 5000                  # recipients fed in one store write


class _Bucket:
    """An agency's feeding budget: rate_per_s parts per second, one second of burst."""
    __slots__ = ("tokens", "stamp")

    def __init__(self, now):
        self.tokens = 0.0
        self.stamp = now

    def refill(self, now, rate):
        self.tokens = min(rate, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now


class BroadcastFeeder:
    def __init__(self, store, *, clock, rate_of, on_fed=None, tick_s=TICK_S,
                 backlog_parts=BACKLOG_PARTS, max_feed=MAX_FEED):
        """rate_of(agency id) → its rate_per_s (None: not configured now, paused);
        on_fed(routes): parts were fed on these routes (the dispatcher's wake)."""
        self.store = store
        self.clock = clock
        self.rate_of = rate_of
        self.on_fed = on_fed
        self.tick_s = tick_s
        self.backlog_parts = backlog_parts
        self.max_feed = max_feed
        self.active = {}             # broadcast id → [agency, parts per recipient, busy]
        self._buckets = {}           # agency → _Bucket
        self._call = None
        self.running = False

    def start(self):
        """Take up the broadcasts a previous run left open, then feed."""
        self.running = True
        d = self.store.open_broadcasts()
        d.addCallback(lambda rows: [self.add(*row) for row in rows])
        d.addErrback(lambda failure: log.error("reading open broadcasts failed: %s",
                                               failure.getErrorMessage()))
        self._schedule()

    def stop(self):
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def add(self, broadcast_id, agency, parts):
        if broadcast_id not in self.active:
            self.active[broadcast_id] = [agency, parts, False]
            self._buckets.setdefault(agency, _Bucket(self.clock.seconds()))
        self._schedule()

    def forget(self, broadcast_id):
        self.active.pop(broadcast_id, None)

    def _schedule(self):
        if self.running and self._call is None and self.active:
            self._call = self.clock.callLater(self.tick_s, self._tick)

    def _tick(self):
        self._call = None
        self.tick()
        self._schedule()

    def tick(self):
        """One round: every broadcast not being fed gets what its agency's budget and
        its backlog allow.  The list of Deferreds of the feeds started (for tests)."""
        now = self.clock.seconds()
        rates = {agency: self.rate_of(agency) for agency in self._buckets}
        for agency, bucket in self._buckets.items():
            if rates[agency]:
                bucket.refill(now, rates[agency])
        heaviest = max((rate for rate in rates.values() if rate), default=0)
        started = []
        for broadcast_id, entry in list(self.active.items()):
            agency, parts, busy = entry
            rate = rates.get(agency)
            if busy or not rate:
                continue
            target = max(parts, self.backlog_parts * rate / heaviest)
            d = self.store.broadcast_backlog(broadcast_id)
            d.addCallback(self._feed, broadcast_id, entry, target, now)
            d.addErrback(self._failed, broadcast_id, entry)
            started.append(d)
        return started

    def _feed(self, backlog, broadcast_id, entry, target, now):
        agency, parts, _ = entry
        bucket = self._buckets[agency]
        count = min(int(bucket.tokens // parts), int((target - backlog * parts) // parts),
                    self.max_feed)
        if count <= 0:
            return None
        bucket.tokens -= count * parts          # taken now: other broadcasts see it
        entry[2] = True
        d = self.store.feed_broadcast(broadcast_id, count, now)
        d.addCallback(self._fed, broadcast_id, entry, count)
        return d

    def _fed(self, result, broadcast_id, entry, asked):
        fed, routes, done = result
        entry[2] = False
        if fed < asked:
            self._buckets[entry[0]].tokens += (asked - fed) * entry[1]
        if done:
            self.active.pop(broadcast_id, None)
        if fed and self.on_fed is not None:
            self.on_fed(set(routes))
        return fed

    def _failed(self, failure, broadcast_id, entry):
        entry[2] = False
        log.error("feeding broadcast %s failed: %s", broadcast_id, failure.getErrorMessage())
