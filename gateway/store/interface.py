"""What the rest of the gateway may ask of a store: `MessageStore`, and its errors.

The SQLite store (store.py) implements it; a PostgreSQL store is to implement it
too, so the accept path, the dispatcher, the inbound router, housekeeping and the
HTTP handlers see only this.  Everything that touches the database answers with a
Deferred, reads included: SQLite reads answer at once (`defer.succeed`), a network
database answers later, and callers are written for both.  Only the lifecycle
(`open`), `new_message_id`, `number_hash`, `learned_receipt_ids` and `fingerprint_key`
(memory the store keeps) answer directly.  The records are gateway/model.py's.
tests/store_contract.py holds the tests every implementation passes.
"""

from typing import Protocol, runtime_checkable

from twisted.internet.defer import Deferred

from gateway.model import InboxEntry, NewBroadcast, NewMessage, PartOutcome, UssdDialogRecord


# Parts a store claims are leased to it (its owner); another store sharing the queue
# takes a part back only once its lease is far older than this: the holder of claimed
# parts (the dispatcher) renews their leases every RENEW_LEASES_S while it runs.
RENEW_LEASES_S = 30.0


class StoreClosed(Exception):
    """A write was offered after the store began closing (or before it opened)."""


class TransactionLost(Exception):
    """The transaction failed as a whole, taking this write with it."""


class DuplicateIdempotencyKey(Exception):
    """The agency already used this idempotency key within 24 h; nothing was stored."""

    def __init__(self, agency, key, response):
        super().__init__(f"idempotency key already used by agency {agency!r}")
        self.agency = agency
        self.key = key
        self.response = response


class IdempotencyMismatch(Exception):
    """The agency used this idempotency key within 24 h for another request (its
    request hash differs); nothing was stored."""

    def __init__(self, agency, key):
        super().__init__(f"idempotency key {key!r} of agency {agency!r} was used for "
                         "another request")
        self.agency = agency
        self.key = key


class QuotaRefused(Exception):
    """An accept counted in the store (quota=...) would take the agency past its daily
    quota; nothing was stored."""

    def __init__(self, agency, used, quota):
        super().__init__(f"agency {agency!r}: daily quota of {quota} parts reached "
                         f"({used} used)")
        self.agency = agency
        self.used = used
        self.quota = quota


@runtime_checkable
class MessageStore(Protocol):
    """The durable queue and record of messages.  Writes fire once durable; a write
    offered while closed fails with StoreClosed."""

    # -- lifecycle ----------------------------------------------------------------
    def open(self, create: bool = False) -> None:
        """Make the store usable; parts this node's previous run left claimed are
        released (counted as unknown outcomes)."""

    def close(self) -> Deferred:
        """Finish the writes already offered, then release the store."""

    def new_message_id(self) -> str:
        """A fresh, URL-safe, time-ordered message id."""

    # -- the outbound queue ---------------------------------------------------------
    def accept(self, messages: list[NewMessage],
               idempotency: tuple | None = None, quota: tuple | None = None) -> Deferred:
        """Store messages, all or none → Deferred[list[str]] of their ids.
        idempotency=(agency, key, response[, request_hash]): a key used within 24 h
        fails with DuplicateIdempotencyKey carrying the first response, or with
        IdempotencyMismatch when both requests have a hash and they differ.
        quota=(agency, day_start, parts, daily_parts): the parts are counted against
        the agency's day in the same transaction, across every process sharing the
        store; past daily_parts it fails with QuotaRefused, nothing stored."""

    def claim(self, limit: int, now: float, route: str | None = None) -> Deferred:
        """→ Deferred[list[ClaimedPart]]: up to `limit` queued parts of `route` (None:
        parts stored without one) due by `now`, highest priority first, then oldest;
        each is leased to this store's owner until recorded.  Leases of other owners
        that expired are taken back first (counted as unknown outcomes)."""

    def renew_leases(self, now: float) -> Deferred:
        """The parts this store claimed and has not recorded stay leased to it from
        `now` (asked every RENEW_LEASES_S) → Deferred[int], the parts renewed."""

    def record(self, outcomes: list[PartOutcome]) -> Deferred:
        """Apply submit outcomes → Deferred[int], the outcomes that changed a part.  An
        outcome counts only while this store holds the part's lease: one for a part
        taken back by another store (which sends it again) is dropped, and logged."""

    def queued_routes(self) -> Deferred:
        """→ Deferred[set]: the routes queued parts carry (None among them for parts
        stored without one)."""

    def has_queued(self) -> Deferred:
        """→ Deferred[bool]: whether any part is queued."""

    # -- receipts and inbound -------------------------------------------------------
    def apply_receipts(self, receipts, id_modes=None, learn=(), mature_s=None) -> Deferred:
        """Receipts [(operator, smsc_id, state, error)] → Deferred[list[bool]], whether
        each met a part of its operator (see docs/architecture.md, Receipts)."""

    def learned_receipt_ids(self, operator: str) -> str | None:
        """The id base learned for an `auto` operator, None while it is learned (the
        store's memory, no database read)."""

    def store_inbound(self, operator: str, pdu_fields: dict, tlvs: dict) -> Deferred:
        """Keep a raw inbound PDU → Deferred of its row id."""

    def file_inbox(self, entries: list[InboxEntry]) -> Deferred:
        """File citizens' messages (all or none) → Deferred[list[(InboxMessage, new)]]
        once durable, with in_reply_to found; an entry whose source_key is filed
        already answers the message filed then, with new False."""

    # -- correspondence (migration 10) -----------------------------------------------
    def keep_mo_part(self, part, duplicate_since: float, max_open_sets: int) -> Deferred:
        """Keep a citizen's SMS part (model.MoPart) → Deferred[(new, whole, overflow)]:
        new False for a redelivery; whole the MoSet it completed or None; overflow the
        citizen's oldest open sets beyond max_open_sets (to release as partial)."""

    def settle_mo_sets(self, set_ids) -> Deferred:
        """The sets were handled; their parts are kept only to recognise redeliveries."""

    def file_mo(self, entries: list[InboxEntry], set_ids) -> Deferred:
        """file_inbox(entries) and settle_mo_sets(set_ids) in one transaction."""

    def stale_mo_sets(self, incomplete_before: float, complete_before: float, limit: int,
                      open_parts_cap: int) -> Deferred:
        """→ Deferred[list[MoSet]] to release now (timed out, left by a crash, over the cap)."""

    def forget_mo_parts(self, before: float) -> Deferred:
        """Settled parts received before `before` are deleted."""

    def queue_pushes(self, pushes) -> Deferred:
        """[(inbox seq, agency)] get a pending reply-webhook push each (once)."""

    def push_done(self, inbox_seq: int, state: str, attempts: int, next_at: float,
                  error=None) -> Deferred:
        """A push's state after an attempt: 'pending' (due at next_at), 'ok', 'failed'."""

    def due_pushes(self, agency: str, now: float, limit: int) -> Deferred:
        """→ Deferred[[(inbox seq, attempts, created_at)]] of pending pushes due by now."""

    def push_counts(self) -> Deferred:
        """→ Deferred[{(agency, state): count}]."""

    def unqueued_inbox(self, agencies, since: float, limit: int) -> Deferred:
        """→ Deferred[[(seq, agency)]]: inbox messages since `since` with no push row."""

    def inbox_by_seq(self, seqs) -> Deferred:
        """→ Deferred[{seq: InboxMessage}]."""

    def forget_pushes(self, before: float) -> Deferred:
        """Ended pushes last changed before `before` are deleted."""

    def opt_out(self, agency: str, citizen: str) -> Deferred:
        """Record a citizen's STOP to an agency → Deferred[bool] (new)."""

    def opted_out(self, agency: str, citizens) -> Deferred:
        """→ Deferred[set] of those citizens opted out of the agency."""

    # -- records, housekeeping ------------------------------------------------------
    def audit(self, event: str, agency: str | None, detail: dict) -> Deferred:
        """Keep an audit row → Deferred of its id.  Rows are append-only: only
        `purge` removes them, by age."""

    def number_hash(self, msisdn: str) -> str:
        """A citizen's number as audit rows hold it: a hash salted per install (the
        store's memory, no database read)."""

    def record_ussd_dialog(self, record: UssdDialogRecord) -> Deferred:
        """Keep one ended USSD dialog (its CDR-like record) → Deferred once durable."""

    def purge(self, older_than: float, *, audit_before=None, receipts_before=None,
              inbound_before=None, inbox_before=None, fingerprints_before=None,
              ussd_before=None) -> Deferred:
        """Delete what retention no longer keeps → Deferred[dict] of rows per kind."""

    def expire_unreceipted(self, grace_s: float) -> Deferred:
        """Parts whose receipt never came end 'expired' → Deferred[int] parts changed."""

    def expire_unsent(self) -> Deferred:
        """Queued parts whose validity ended end 'expired' → Deferred[int] changed."""

    # -- reads ------------------------------------------------------------------------
    def get_message(self, message_id: str) -> Deferred:
        """→ Deferred[dict | None]: the contract's fields, "agency", "attempts",
        "last_error", "national_id" when it was addressed by one, and "channels"
        {"sms", "email"} when an email fallback was asked."""

    def find_sent(self, digests: list[bytes], citizen: str, since: float) -> Deferred:
        """→ Deferred[SentMatch | None]: the latest message whose text fingerprint is one
        of `digests`, sent to `citizen` since `since`; else one sent to anyone else."""

    def fingerprint_key(self) -> bytes:
        """The key of this store's text fingerprints (made with the store; memory)."""

    def list_inbox(self, agency: str | None, after: int = 0, limit: int = 100) -> Deferred:
        """→ Deferred[list[InboxMessage]]: an agency's inbox (None: unrouted) after the
        cursor `after`, oldest first."""

    def citizen_messages(self, recipient: str, before=None, limit: int = 100,
                         hidden_agencies=()) -> Deferred:
        """→ Deferred[list[CitizenMessage]]: the messages agencies sent to `recipient`
        (not `hidden_agencies`', nor those never sent: opted out, cancelled), newest
        first by (created_at, id), those before `before` ((created_at, id) or None)."""

    def citizen_message(self, recipient: str, message_id: str,
                        hidden_agencies=()) -> Deferred:
        """→ Deferred[CitizenMessage | None]: that message, if citizen_messages shows it."""

    def idempotent_response(self, agency: str, key: str, now: float,
                            request_hash: str | None = None) -> Deferred:
        """→ Deferred[str | None]: the first response to this key within 24 h; fails
        with IdempotencyMismatch when that request's hash and `request_hash` differ."""

    def parts_used(self, agency: str, since: float) -> Deferred:
        """→ Deferred[int]: parts of the agency's messages accepted since `since`."""

    def queue_summary(self, now: float) -> Deferred:
        """→ Deferred[dict]: {priority: (parts queued, seconds the longest-waiting due
        one has waited by `now`)} for every priority; cheap enough to read every few
        seconds."""

    def status_counts(self) -> Deferred:
        """→ Deferred[dict]: {(agency, status): messages that reached that status}
        since the store began; a few rows, cheap enough to read every few seconds."""

    def writable(self) -> Deferred:
        """→ Deferred[bool]: whether writes are being committed (for /healthz)."""

    # broadcasts (gateway/store/broadcasts.py): recipients received in batches, opened
    # once all are durable, fed into messages and parts while they drain
    def add_broadcast_recipients(self, broadcast_id: str, rows: list) -> Deferred:
        """rows [[number (int, 98...), route(, the national ID it was addressed by)]]
        → Deferred[int]: how many were new."""

    def open_broadcast(self, broadcast: NewBroadcast,
                       quota: tuple | None = None) -> Deferred:
        """The broadcast and its parts stored once; its recipients become feedable.
        quota: as accept's, for the whole broadcast."""

    def discard_broadcast(self, broadcast_id: str) -> Deferred:
        """A broadcast never opened: its recipients go."""

    def feed_broadcast(self, broadcast_id: str, limit: int, now: float) -> Deferred:
        """→ Deferred[(recipients fed, their routes, nothing left to feed)]."""

    def cancel_broadcast(self, broadcast_id: str) -> Deferred:
        """→ Deferred[True cancelled now | False had ended | None unknown]."""

    def get_broadcast(self, broadcast_id: str) -> Deferred:
        """→ Deferred[dict | None]: its fields, "agency" and "counts" per status."""

    def open_broadcasts(self) -> Deferred:
        """→ Deferred[[(id, agency, parts)]] of those with recipients left to feed."""

    def broadcast_backlog(self, broadcast_id: str) -> Deferred:
        """→ Deferred[int]: its fed messages not yet wholly submitted."""

    # the email fallback (gateway/store/email_fallbacks.py, migration 17): a row per
    # message accepted with "fallback": "email", due once its SMS failed or expired
    def claim_email_fallbacks(self, now: float, limit: int, busy_until: float) -> Deferred:
        """→ Deferred[[(message_id, agency, address, attempt, text, created_at, sms
        status)]]: due rows, each claimed (attempt counted) until `busy_until`."""

    def settle_email_fallback(self, message_id: str, attempt: int, status: str,
                              next_at: float | None = None, error: str | None = None,
                              sent_at: float | None = None) -> Deferred:
        """An attempt's outcome ('sent', 'failed', 'pending' from next_at) → Deferred[bool]
        whether the row was still that attempt's."""

    def email_fallback(self, message_id: str) -> Deferred:
        """→ Deferred[dict | None]: the fallback's row."""
