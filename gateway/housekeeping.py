"""Housekeeping on a timer: messages whose receipt never came end, and what the store
no longer needs leaves it.

A part still waiting for its receipt RECEIPT_GRACE_S after its validity ended becomes
'expired', and so does a part still queued when its validity ended (its route never
bound: the dispatcher, which expires what it claims, never saw it).  Each kind of record is kept for its `retention:` days (gateway.yaml, see
gateway.config.schema.Retention): ended messages (with their parts)
for status queries, audit rows, unmatched receipts, raw inbound PDUs, inbox messages;
sent texts' fingerprints for the 4040 check's `authenticity.retention_days`;
idempotency keys for 24 h, agencies' daily quota counts for two days (Store.purge).
Without this the tables would only grow.
"""

import logging

from twisted.application.internet import TimerService

from gateway.config.schema import Retention

log = logging.getLogger("payam.housekeeping")

DAY_S = 86400.0
RECEIPT_GRACE_S = 86400.0    # receipts may lag; after validity + a day none will come
PURGE_EVERY_S = 3600.0


def housekeeping_service(store, clock, retention=None, grace_s=RECEIPT_GRACE_S,
                         every_s=PURGE_EVERY_S, fingerprint_days=None):
    """A service that does its round at start and then every `every_s` seconds;
    `retention` is a Retention (days per kind of record), its defaults when None;
    fingerprint_days: how long sent texts' fingerprints are kept (None: for ever)."""
    retention = retention or Retention()

    def one_round():
        expired = store.expire_unreceipted(grace_s)
        expired.addCallbacks(_expired, _failed, errbackArgs=("receipt expiry",))
        unsent = store.expire_unsent()
        unsent.addCallbacks(_expired_unsent, _failed, errbackArgs=("expiry of unsent parts",))
        now = clock.seconds()
        purged = store.purge(
            older_than=now - retention.messages * DAY_S,
            audit_before=now - retention.audit * DAY_S,
            receipts_before=now - retention.receipts * DAY_S,
            inbound_before=now - retention.inbound * DAY_S,
            inbox_before=now - retention.inbox * DAY_S,
            fingerprints_before=(None if fingerprint_days is None
                                 else now - fingerprint_days * DAY_S),
            ussd_before=now - retention.ussd * DAY_S)
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


def _expired_unsent(count):
    if count:
        log.info("%d queued parts expired: their validity ended before they could be sent",
                 count)
    return count


def _expired(count):
    if count:
        log.info("%d parts expired without a delivery receipt", count)
    return count
