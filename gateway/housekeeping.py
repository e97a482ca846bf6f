"""Housekeeping: what the store no longer needs leaves it, on a timer.

Finished messages (with their parts and receipt keys) are kept RETENTION_S for status
queries, idempotency keys 24 h and unmatched receipts 3 days (Store.purge); without
this the tables would only grow.
"""

import logging

from twisted.application.internet import TimerService

log = logging.getLogger("payam.housekeeping")

RETENTION_S = 30 * 86400     # GET /v1/messages/{id} answers for a month after the end
PURGE_EVERY_S = 3600.0


def purge_service(store, clock, retention_s=RETENTION_S, every_s=PURGE_EVERY_S):
    """A service that purges at start and then every `every_s` seconds."""

    def purge():
        d = store.purge(older_than=clock.seconds() - retention_s)
        d.addCallbacks(_purged, lambda failure: log.error(
            "store purge failed: %s", failure.getErrorMessage()))
        return d

    service = TimerService(every_s, purge)
    service.clock = clock
    return service


def _purged(removed):
    if any(removed.values()):
        log.info("purged %s", ", ".join(f"{n} {kind}" for kind, n in removed.items() if n))
    return removed
