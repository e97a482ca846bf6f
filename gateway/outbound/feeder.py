"""Drains open broadcasts into the dispatcher's queue, at each agency's rate, fairly.

A broadcast's recipients wait in the store as plain rows; every `tick_s` the feeder
turns a few of them into claimable parts (store.feed_broadcast), so that:
- an agency's broadcasts together never feed faster than its `rate_per_s` (parts per
  second, a token bucket of one second's burst): its rate bounds its drain;
- the fed parts waiting, all broadcasts together, stay under `backlog_parts`, and each
  round's room is split among the open broadcasts by weight (their agencies'
  `rate_per_s`); fed parts are eligible from the moment they are fed and the claim
  takes parts oldest first, so two broadcasts draining at once are carried in
  proportion to their weights, and a single message accepted meanwhile waits behind at
  most that backlog, never behind a whole broadcast;
- emergency and high messages keep their lanes (the claim's priorities).
"""

import logging

from twisted.internet import defer

log = logging.getLogger("payam.broadcast.feeder")

TICK_S = 0.1
# Fed parts waiting, all open broadcasts together.  A fed message stays 'queued' until
# its parts are submitted, so the dispatcher's full lane and window (~2,900 parts) count
# here too: 4,000 left a round ~1,100 parts, which capped the drain near 7,300 parts/s
# (1,100 / (0.1 s tick + ~0.05 s commit, measured mid-drain); see
# tests/test_broadcast_feed_room.py).  A single message waits behind at most this many.
BACKLOG_PARTS = 8000
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
        """One round: the room left in the shared backlog is split among the open
        broadcasts by weight (their agencies' rate_per_s), each share within its
        agency's budget, what one cannot take going to the others.  Splitting what is
        fed each round (not topping each up) keeps the shares whatever came before:
        parts are claimed oldest first, so what is carried follows what is fed.  A
        Deferred of the feeds started (for tests)."""
        now = self.clock.seconds()
        rates = {agency: self.rate_of(agency) for agency in self._buckets}
        for agency, bucket in self._buckets.items():
            if rates[agency]:
                bucket.refill(now, rates[agency])
        ready = [(broadcast_id, entry) for broadcast_id, entry in self.active.items()
                 if not entry[2] and rates.get(entry[0])]
        if not ready:
            return defer.succeed([])
        for _, entry in ready:
            entry[2] = True                     # one feed at a time per broadcast
        every = list(self.active.items())
        d = defer.gatherResults([self.store.broadcast_backlog(broadcast_id)
                                 for broadcast_id, _ in every], consumeErrors=True)
        d.addCallback(self._split, every, ready, rates, now)
        d.addErrback(self._failed, ready)
        return d

    def _split(self, backlogs, every, ready, rates, now):
        backlog = sum(count * entry[1] for count, (_, entry) in zip(backlogs, every))
        room = self.backlog_parts - backlog
        per_agency = {}
        for _, entry in ready:
            per_agency[entry[0]] = per_agency.get(entry[0], 0) + 1
        weights = {broadcast_id: rates[entry[0]] / per_agency[entry[0]]
                   for broadcast_id, entry in ready}
        shares = dict.fromkeys(weights, 0)     # parts for each
        open_ = dict(ready)
        while room >= 1 and open_:
            total = sum(weights[broadcast_id] for broadcast_id in open_)
            given = 0
            for broadcast_id, entry in list(open_.items()):
                bucket = self._buckets[entry[0]]
                want = room * weights[broadcast_id] / total
                can = min(want, bucket.tokens)
                shares[broadcast_id] += can
                bucket.tokens -= can
                given += can
                if can < want or bucket.tokens < entry[1]:
                    del open_[broadcast_id]     # its budget is spent: the rest to others
            room -= given
            if given < 1:
                break
        feeds = []
        for broadcast_id, entry in ready:
            parts = entry[1]
            count = min(int(shares[broadcast_id] // parts), self.max_feed)
            bucket = self._buckets[entry[0]]
            bucket.tokens += shares[broadcast_id] - count * parts    # unused: back
            if count <= 0:
                entry[2] = False
                continue
            d = self.store.feed_broadcast(broadcast_id, count, now)
            d.addCallbacks(self._fed, self._failed, callbackArgs=(broadcast_id, entry, count),
                           errbackArgs=([(broadcast_id, entry)],))
            feeds.append(d)
        return defer.gatherResults(feeds)

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

    def _failed(self, failure, ready):
        for broadcast_id, entry in ready:
            entry[2] = False
        log.error("feeding broadcasts failed: %s", failure.getErrorMessage())
