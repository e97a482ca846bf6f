"""Housekeeping on a timer: messages whose receipt never came end, and what the store
no longer needs leaves it.

A part still waiting for its receipt RECEIPT_GRACE_S after its validity ended becomes
'expired'.  Ended messages (with their parts and receipt keys) are kept RETENTION_S for
status queries, idempotency keys 24 h and unmatched receipts 3 days (Store.purge);
without this the tables would only grow.
"""

import logging

from twisted.application.internet import TimerService

log = logging.getLogger("payam.housekeeping")

RETENTION_S = 30 * 86400     # GET /v1/messages/{id} answers for a month after the end
RECEIPT_GRACE_S = 86400.0    # receipts may lag; after validity + a day none will come
PURGE_EVERY_S = 3600.0


def housekeeping_service(store, clock, retention_s=RETENTION_S, grace_s=RECEIPT_GRACE_S,
                         every_s=PURGE_EVERY_S):
    """A service that does its round at start and then every `every_s` seconds."""

    def one_round():
        expired = store.expire_unreceipted(grace_s)
        expired.addCallbacks(_expired, _failed, errbackArgs=("receipt expiry",))
        purged = store.purge(older_than=clock.seconds() - retention_s)
        purged.addCallbacks(_purged, _failed, errbackArgs=("purge",))
        return purged

    service = TimerService(every_s, one_round)
    service.clock = clock
    return service


def _failed(failure, what):
    log.error("store %s failed: %s", what, failure.getErrorMessage())


def _purged(removed):
    if any(removed.values()):
        log.info("purged %s", ", ".join(f"{n} {kind}" for kind, n in removed.items() if n))
    return removed


def _expired(count):
    if count:
        log.info("%d parts expired without a delivery receipt", count)
    return count
