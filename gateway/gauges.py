"""The metrics only the store knows, read every few seconds on the reactor: parts queued
and the oldest one's wait per priority, and messages reaching each status per agency.

Two cheap reads a round (store.queue_summary: a count and a MIN per priority over the
partial claim index; store.status_counts: a few rows a trigger keeps), never a scan of
the messages table.  A round waits for the previous one (TimerService waits on its
Deferred), so a slow store never piles reads up.  The status counts are the store's
totals since it began; the counter takes their growth from the first round on, so it
starts at 0 with the process as Prometheus expects.  Agencies no longer configured are
counted under `other`: the label set is the configured agencies.
"""

import logging

from twisted.application.internet import TimerService
from twisted.internet import defer

from gateway import metrics
from gateway.model import PRIORITY_NAMES

log = logging.getLogger("payam.gauges")

REFRESH_EVERY_S = 5.0
STATUSES = ("submitted", "delivered", "failed", "expired")


class StoreGauges:
    def __init__(self, store, clock, agencies=tuple):
        """agencies(): the agency ids configured now (SIGHUP may change them)."""
        self.store = store
        self.clock = clock
        self.agencies = agencies
        self._seen = None               # {(agency, status): n} at the last round

    def refresh(self):
        queue = self.store.queue_summary(self.clock.seconds())
        queue.addCallback(self._queue_read)
        counts = self.store.status_counts()
        counts.addCallback(self._counts_read)
        both = defer.gatherResults([queue, counts], consumeErrors=True)
        both.addErrback(_failed)           # a failed round must not stop the timer
        return both

    def _queue_read(self, summary):
        for priority, (count, oldest_s) in summary.items():
            name = PRIORITY_NAMES.get(priority, str(priority))
            metrics.child(metrics.QUEUED_PARTS, name).set(count)
            metrics.child(metrics.OLDEST_QUEUED, name).set(oldest_s)

    def _counts_read(self, counts):
        counts = {key: n for key, n in counts.items() if key[1] in STATUSES}
        configured = set(self.agencies())
        if self._seen is None:
            self._seen = counts            # the store's past is not this process's rate
            for agency in configured:      # every configured agency's series, from 0
                for status in STATUSES:
                    metrics.child(metrics.MESSAGE_STATUSES, agency, status)
            return
        for (agency, status), n in counts.items():
            grown = n - self._seen.get((agency, status), 0)
            if grown > 0:
                label = agency if agency in configured else metrics.OTHER_AGENCY
                metrics.child(metrics.MESSAGE_STATUSES, label, status).inc(grown)
        self._seen = counts


def _failed(failure):
    first = getattr(failure.value, "subFailure", failure)
    log.warning("reading the store's gauges failed: %s", first.getErrorMessage())


def store_gauges_service(store, clock, agencies=tuple, every_s=REFRESH_EVERY_S):
    """A service refreshing StoreGauges at start and every `every_s` seconds."""
    gauges = StoreGauges(store, clock, agencies)
    service = TimerService(every_s, gauges.refresh)
    service.clock = clock
    service.gauges = gauges
    return service
