"""The identity check before any citizen data is read or written: does the directory
(Shahkar) register this mobile number to this national ID?

A no, an unknown national ID included (an app must not learn which IDs exist), is
IdentityMismatch and an audit row naming the app and the number's salted hash, never
the national ID.  A directory that cannot answer, or none configured, is DirectoryDown:
the caller answers 503, it never guesses.
"""

import logging

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.citizens.directory import DirectoryUnavailable, confirms
from gateway.national_inbox.errors import DirectoryDown, IdentityMismatch

log = logging.getLogger("payam.national_inbox")

RETRY_UNAVAILABLE_S = 5          # a lookup service that failed: its timeout, a retry
RETRY_UNCONFIGURED_S = 300       # no directory in gateway.yaml: an operator must add one


class IdentityCheck:
    def __init__(self, directory, audit):
        """directory: the citizens' directory (gateway.citizens) or None; audit: the
        AuditLog (identity_mismatch)."""
        self.directory = directory
        self.audit = audit

    def confirm(self, app, national_id, msisdn, peer):
        """Deferred[None] once the pair is confirmed; fails with IdentityMismatch or
        DirectoryDown."""
        if self.directory is None:
            return defer.fail(DirectoryDown("no citizen directory is configured",
                                         RETRY_UNCONFIGURED_S))
        try:
            d = confirms(self.directory, msisdn, national_id)
        except Exception:
            d = defer.fail()
        d.addBoth(self._judged, app, msisdn, peer)
        return d

    def _judged(self, confirmed, app, msisdn, peer):
        if isinstance(confirmed, Failure):
            if not confirmed.check(DirectoryUnavailable):
                # The type only: an adapter's message may carry the ID or number asked.
                log.error("directory lookup failed: %s", confirmed.type.__name__)
            raise DirectoryDown("the citizen directory cannot answer right now; retry "
                                "shortly", RETRY_UNAVAILABLE_S)
        if not confirmed:
            self.audit.identity_mismatch(app.id, msisdn, peer)
            raise IdentityMismatch("the directory does not register this mobile number "
                                   "to this national ID")

