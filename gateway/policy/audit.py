"""Security audit trail: refused senders and links, failed authentication, partner apps'
identity mismatches, and the messages the platform itself sends from 4040.

Every sender refusal becomes a row in the store's audit table (the contract requires it)
and a WARNING on logger `payam.audit`. Sender ids (4040 numbers, masks) are not personal
data and are kept as given, except when a caller puts a citizen's mobile number in
`from`: the log line masks it like every other MSISDN, the audit row holds its salted
hash (store.number_hash), as it does for any citizen's number under NUMBER_KEYS, so the
rows about one citizen can be found (`payam-gateway audit --number`) but not read. Failed authentication is audited per
client address at most once per interval, so a key-guessing client cannot flood the
table or the log; the suppressed attempts are counted in the next record.

A record is never lost to its content: a string that is not valid Unicode (a lone
surrogate, which UTF-8 and so SQLite cannot hold) is recorded with it escaped.
"""

import logging

from gateway.numbers import InvalidNumber, mask_msisdn, normalize_msisdn

log = logging.getLogger("payam.audit")

MAX_SENDER_CHARS = 32           # audit what was sent, not an attacker's megabyte
MAX_HOST_CHARS = 253
# Detail keys that may carry a citizen's number: a value that is one is hashed.
NUMBER_KEYS = ("sender", "to", "recipient", "recipients", "citizen", "msisdn")
UNAUTHORIZED_INTERVAL_S = 10.0
MAX_TRACKED_PEERS = 10_000


def safe_sender(sender, shown=mask_msisdn):
    """The refused sender as we may record it: a citizen's number as `shown` makes it
    (masked for a log line, hashed for an audit row)."""
    if not isinstance(sender, str):
        return f"<{type(sender).__name__}>"
    text = sender[:MAX_SENDER_CHARS]
    try:
        return shown(normalize_msisdn(text))
    except InvalidNumber:
        return recordable(text)


def _as_number(value):
    try:
        return normalize_msisdn(value) if isinstance(value, str) else None
    except InvalidNumber:
        return None


def recordable(value):
    """`value` with every string made storable: lone surrogates become \\udxxx escapes.
    Dicts, lists and tuples are copied with their contents made recordable."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {recordable(k): recordable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [recordable(item) for item in value]
    return value


class AuditLog:
    def __init__(self, store, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.clock = clock
        self._unauthorized = {}         # peer -> [window start, attempts suppressed]

    def sender_refused(self, agency_id, sender, reason, peer, owner=None):
        """Write the refusal (store row + log line). Returns the store's Deferred."""
        shown = safe_sender(sender)
        peer, reason, owner = recordable(peer), recordable(reason), recordable(owner)
        detail = {"sender": sender[:MAX_SENDER_CHARS] if isinstance(sender, str) else shown,
                  "reason": reason, "peer": peer}
        if owner is not None and owner != agency_id:
            detail["owner"] = owner
        log.warning("sender refused: agency=%s sender=%r reason=%s peer=%s%s", agency_id,
                    shown, reason, peer, f" (belongs to {owner})" if owner else "")
        return self._write("sender_refused", agency_id, detail)

    def link_refused(self, agency_id, host, peer):
        """Write a refusal for a link outside the agency's `links` (the host only, never
        the text). Returns the store's Deferred."""
        host, peer = recordable(host[:MAX_HOST_CHARS]), recordable(peer)
        log.warning("link refused: agency=%s host=%r peer=%s", agency_id, host, peer)
        return self._write("link_refused", agency_id, {"host": host, "peer": peer})

    def platform_message(self, kind, recipient, message_id):
        """A message the platform sent from 4040 (an authenticity answer): what kind, to
        whom (masked in the log, hashed in the row as every number), which message.
        Returns the store's Deferred."""
        log.debug("platform message: kind=%s to=%s id=%s", kind, mask_msisdn(recipient),
                  message_id)
        return self._write("platform_message", None,
                           {"kind": kind, "to": recipient, "message": message_id})

    def identity_mismatch(self, app_id, msisdn, peer):
        """A partner app named a number the directory does not register to the national
        ID it gave: the app and the number (hashed in the row, masked in the log), never
        the national ID. Returns the store's Deferred."""
        peer = recordable(peer)
        log.warning("identity mismatch: app=%s msisdn=%s peer=%s", app_id,
                    mask_msisdn(msisdn), peer)
        return self._write("identity_mismatch", None,
                           {"app": app_id, "msisdn": msisdn, "peer": peer})

    def unauthorized(self, peer, reason):
        """Audit a failed authentication, at most once per interval per peer."""
        peer, reason = recordable(peer), recordable(reason)
        now = self.clock.seconds()
        entry = self._unauthorized.get(peer)
        if entry is not None and now - entry[0] < UNAUTHORIZED_INTERVAL_S:
            entry[1] += 1
            return None
        suppressed = entry[1] if entry is not None else 0
        if len(self._unauthorized) >= MAX_TRACKED_PEERS:
            self._unauthorized.clear()
        self._unauthorized[peer] = [now, 0]
        log.warning("unauthorized request: peer=%s reason=%s%s", peer, reason,
                    f" ({suppressed} more since the last record)" if suppressed else "")
        return self._write("unauthorized", None,
                           {"peer": peer, "reason": reason, "suppressed": suppressed})

    def auth_blocked(self, peer, failures, seconds):
        """An address starts being refused for failed authentication (once per block)."""
        log.warning("authentication blocked: peer=%s after %d failures, for %g s", peer,
                    failures, seconds)
        return self._write("auth_blocked", None,
                           {"peer": peer, "failures": failures, "seconds": seconds})

    def _hashed(self, detail):
        """`detail` with every citizen's number under NUMBER_KEYS (alone or in a list)
        replaced by its salted hash."""
        def one(value):
            number = _as_number(value)
            return self.store.number_hash(number) if number is not None else value
        return {key: ([one(v) for v in value] if isinstance(value, (list, tuple))
                      else one(value)) if key in NUMBER_KEYS else value
                for key, value in detail.items()}

    def _write(self, event, agency_id, detail):
        d = self.store.audit(event, agency_id, recordable(self._hashed(detail)))
        d.addErrback(lambda f: log.error("audit record %s lost: %s", event,
                                         f.getErrorMessage()))
        return d
