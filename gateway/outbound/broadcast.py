"""Broadcasts: one text to up to millions of recipients, received as a stream.

A channel (the HTTP API) authenticates the agency, then `Broadcasts.begin` gives it a
`BroadcastIntake` to hand each recipient entry to as its body is parsed.  Numbers are
normalised here (as every accept does, gateway.outbound.checks), invalid ones counted
and the first few reported, and valid ones written in batches through the store's writer
(a repeated number is kept once by the store).  The intake tells the channel to hold its
body back while too many batches wait for their commit, so memory stays bounded however
long the body is.  `finish` checks the sender and text (if the body carried them),
counts the whole broadcast against the daily quota in parts, encodes the text once and
opens the broadcast; only then is it answered, every recipient being durable.  The
feeder (feeder.py) then drains it at the agency's rate.
"""

import logging
from dataclasses import dataclass

from twisted.internet import defer

from gateway import metrics
from gateway.model import NewBroadcast
from gateway.national_id import InvalidNationalId, normalize_national_id
from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.outbound.checks import check_text_length
from gateway.outbound.errors import (
    InvalidBroadcast, InvalidRecipients, OverQuota, Overloaded, Refusal, TooManyParts,
    TooManyRecipients)
from gateway.outbound.recipients import ByNationalId, no_directory
from gateway.policy.limits import QuotaExceeded, QuotaUnknown
from gateway.store.interface import QuotaRefused
from gateway.text import TextTooLong, encode_for_submit

log = logging.getLogger("payam.broadcast")

MAX_RECIPIENTS = 2_000_000         # valid entries of one broadcast (413 beyond)
BATCH = 10_000                     # recipients per store write
MAX_WRITES = 4                     # batches waiting for their commit (or chunks of IDs
                                   # for the directory) before we hold back
MAX_REPORTED = 100                 # invalid entries named in the answer
MAX_ENTRIES_PER_RECIPIENT = 2       # entries (valid or not) a body may hold, per recipient
ID_CHUNK = 1000                    # national IDs handed to the directory together


@dataclass(frozen=True)
class BroadcastText:
    """What a broadcast says besides its recipients, shape-checked by its channel."""
    sender: object
    text: str
    priority: int
    validity_s: int
    receipt: bool


class Broadcasts:
    def __init__(self, store, limits, outbound, *, clock, route_of=None, feeder=None,
                 max_recipients=MAX_RECIPIENTS, batch=BATCH):
        """outbound: the accept path, whose sender check (audited) a broadcast shares;
        route_of(msisdn): the route stored per recipient; feeder: told of each opened
        broadcast (feeder.BroadcastFeeder)."""
        self.store = store
        self.limits = limits
        self.outbound = outbound
        self.clock = clock
        self.route_of = route_of if route_of is not None else (lambda msisdn: None)
        self.feeder = feeder
        self.max_recipients = max_recipients
        self.batch = batch

    def begin(self, agency, flow, text=None, origin=None):
        """An intake for one broadcast of `agency`; `text` (a BroadcastText) when the
        channel knows it before the recipients (checked now, so a refused sender costs
        no body).  flow: pause_body() / resume_body() of the channel."""
        self.outbound.admit()
        intake = BroadcastIntake(self, agency, flow, origin)
        if text is not None:
            intake.set_text(text)
        return intake

    def get(self, agency, broadcast_id):
        """Deferred[dict | None]: the broadcast's progress, None unless it is the
        agency's (another agency's broadcast is as missing as an unknown one)."""
        d = self.store.get_broadcast(broadcast_id)
        d.addCallback(_owned_by, agency.id)
        return d

    def cancel(self, agency, broadcast_id):
        """Deferred[dict | None]: what is not submitted yet is cancelled; its progress
        after, None unless it is the agency's."""
        d = self.get(agency, broadcast_id)

        def owned(found):
            if found is None:
                return None
            done = self.store.cancel_broadcast(broadcast_id)
            done.addCallback(lambda _: self.get(agency, broadcast_id))
            if self.feeder is not None:
                done.addCallback(self._forget, broadcast_id)
            return done

        d.addCallback(owned)
        return d

    def _forget(self, found, broadcast_id):
        self.feeder.forget(broadcast_id)
        return found


def _owned_by(found, agency_id):
    if found is None or found.pop("agency") != agency_id:
        return None
    return found


class BroadcastIntake:
    """One broadcast being received: entries in, batches out, one answer at the end."""

    def __init__(self, broadcasts, agency, flow, origin):
        self.broadcasts = broadcasts
        self.store = broadcasts.store
        self.agency = agency
        self.flow = flow
        self.origin = origin
        self.id = self.store.new_message_id()
        self.text = None
        self.sender = None
        self.parts = None            # parts of the text, once known
        self.entries = 0
        self.valid = 0               # valid entries, repeats included
        self.added = 0               # distinct numbers stored
        self.invalid = 0
        self.reported = []
        self._batch = []
        self._writes = 0             # batches handed to the store, not yet committed
        self._held = False
        self._failed = None          # the first failed write (or directory lookup)
        self._written = []           # Deferreds of the batches not yet committed
        self._ended = False
        self._aborted = False
        self.unknown_citizens = 0    # national IDs the directory does not know
        self._ids = []               # national IDs not yet asked for
        self._resolving = []         # Deferreds of the chunks the directory is asked

    # -- what the channel calls --

    def set_text(self, text):
        """Check the sender (audited) and the text now: a refusal stops the body."""
        self.sender = self.broadcasts.outbound.check_sender(self.agency, text.sender,
                                                             self.origin)
        self.parts = check_text_length(text.text)
        self.broadcasts.outbound.check_links(self.agency, text.text, self.origin)
        self.text = text
        self._check_quota(self.valid)

    def add(self, entry, where):
        """One recipient entry (as the body gave it; `where` names it in a report)."""
        if type(entry) is ByNationalId:
            self.entries += 1
            if self._add_national_id(entry, where):
                self.valid += 1
        else:
            self.add_all((entry,), lambda index: where)
            return
        self._check_size()

    def add_all(self, entries, where_of):
        """Numbers (strings) in body order; where_of(i) names the i-th in a report
        (asked only for invalid ones).  One call per block of the body: per entry only
        normalize_msisdn and route_of run (see tests/test_broadcast_hot_path.py)."""
        route_of = self.broadcasts.route_of
        batch = self._batch
        invalid = self.invalid
        for index, entry in enumerate(entries):
            try:
                if entry.__class__ is not str:      # IDs come one by one, to add()
                    raise InvalidNumber(entry, "not a string")
                number = normalize_msisdn(entry)
            except InvalidNumber as error:
                self.invalid += 1
                if len(self.reported) < MAX_REPORTED:
                    self.reported.append({"entry": where_of(index), "reason": error.reason})
                continue
            batch.append([int(number), route_of(number)])
        self.entries += len(entries)
        self.valid += len(entries) - (self.invalid - invalid)
        self._check_size()
        size = self.broadcasts.batch
        while len(self._batch) >= size:
            self._write_batch(size)

    def _check_size(self):
        """At most max_recipients valid recipients, and at most twice as many entries:
        a body of invalid lines costs no memory (the report is capped) but would
        otherwise be read for ever."""
        cap = self.broadcasts.max_recipients
        if self.valid > cap:
            raise TooManyRecipients(f"a broadcast takes at most {cap} recipients")
        if self.entries > MAX_ENTRIES_PER_RECIPIENT * cap:
            raise TooManyRecipients(f"a broadcast body takes at most "
                                    f"{MAX_ENTRIES_PER_RECIPIENT * cap} entries")

    def finish(self):
        """The body is complete: Deferred of the answer document, once every recipient
        is durable and the broadcast open (or a Refusal)."""
        if self._failed is not None:
            self.abort()
            return defer.fail(self._failed)
        if self.text is None:
            raise InvalidBroadcast("a broadcast needs 'from' and 'text'")
        self._ended = True
        if self._ids:
            self._resolve_ids()
        d = defer.gatherResults(self._resolving, consumeErrors=True)
        d.addCallback(lambda _: self._write_rest())
        d.addErrback(self._not_stored)
        return d

    def _write_rest(self):
        if self._failed is not None:
            raise self._failed
        if self._batch:
            self._write_batch()
        d = defer.gatherResults(self._written, consumeErrors=True)
        d.addCallback(lambda _: self._open())
        return d

    def abort(self):
        """The body ended unfinished or was refused: what was stored goes."""
        if self._ended:
            return
        self._ended = True
        self._aborted = True
        d = defer.gatherResults(self._resolving + self._written, consumeErrors=True)
        d.addBoth(lambda _: self.store.discard_broadcast(self.id))
        d.addErrback(lambda failure: log.error("broadcast %s: discarding its recipients "
                                               "failed: %s", self.id,
                                               failure.getErrorMessage()))

    # -- inside --

    def _check_quota(self, recipients):
        """Refuse as soon as the broadcast cannot fit today's quota (before the rest of
        its body is read); the exact count is checked at the end."""
        left = self.broadcasts.limits.quota_left(self.agency.id)
        if left is not None and self.parts is not None and recipients * self.parts > left:
            raise OverQuota(f"this broadcast needs more than the {max(0, left)} parts "
                            "left of today's quota; it resets at midnight Tehran time")

    # -- recipients by national ID (gateway.outbound.recipients) --

    def _add_national_id(self, entry, where):
        """Checked now (reported by `where`, never the ID; False, counted invalid);
        asked of the directory a chunk at a time, while the body goes on arriving."""
        try:
            national_id = normalize_national_id(entry.value)
        except InvalidNationalId as error:
            self.invalid += 1
            if len(self.reported) < MAX_REPORTED:
                self.reported.append({"entry": where, "reason": f"national ID: {error.reason}"})
            return False
        if getattr(self.broadcasts.outbound, "resolver", None) is None:
            raise no_directory()
        self._ids.append(national_id)
        if len(self._ids) >= ID_CHUNK:
            self._resolve_ids()
        return True

    def _resolve_ids(self):
        national_ids, self._ids = self._ids, []
        if self._failed is not None:         # refused already: ask nothing more
            return
        d = self.broadcasts.outbound.resolver.lookup_all(set(national_ids))
        d.addCallback(self._resolved, national_ids)
        d.addErrback(self._not_resolved)
        self._resolving.append(d)
        d.addBoth(self._done_resolving, d)
        if self._pending_writes() >= MAX_WRITES and not self._held:
            self._held = True
            self.flow.pause_body()

    def _resolved(self, citizens, national_ids):
        if self._aborted or self._failed is not None:
            return
        route_of = self.broadcasts.route_of
        for national_id in national_ids:
            citizen = citizens[national_id]
            if citizen is None:
                self.unknown_citizens += 1
                continue
            self._batch.append([int(citizen.msisdn), route_of(citizen.msisdn), national_id])
            if len(self._batch) >= self.broadcasts.batch:
                self._write_batch()

    def _not_resolved(self, failure):
        """A chunk not resolved (directory down: 503, or over quota), or a bug: the
        broadcast is refused when it finishes; nothing of it stays."""
        if self._failed is None:
            if not failure.check(Refusal):
                log.error("broadcast %s: resolving national IDs failed: %s", self.id,
                          failure.type.__name__)      # its message may hold an ID
            self._failed = failure.value if failure.check(Refusal) else Overloaded(
                "the citizen directory could not be asked; retry shortly", retry_after=1)

    def _done_resolving(self, _, d):
        self._resolving.remove(d)
        self._wrote(counted=False)

    def _pending_writes(self):
        return self._writes + len(self._resolving)

    def _write_batch(self, size=None):
        """Write the first `size` rows held (None: all)."""
        if size is None or size >= len(self._batch):
            rows, self._batch = self._batch, []
        else:
            rows, self._batch = self._batch[:size], self._batch[size:]
        if self.parts is not None:
            self._check_quota(self.added + self._writes * self.broadcasts.batch + len(rows))
        self._writes += 1
        d = self.store.add_broadcast_recipients(self.id, rows)
        d.addCallbacks(self._batch_written, self._batch_failed)
        self._written.append(d)
        if self._pending_writes() >= MAX_WRITES and not self._held:
            self._held = True
            self.flow.pause_body()

    def _batch_written(self, added):
        self.added += added
        self._wrote()
        return added

    def _batch_failed(self, failure):
        if self._failed is None:
            log.error("broadcast %s: storing recipients failed: %s", self.id,
                      failure.getErrorMessage())
            self._failed = Overloaded("recipients could not be stored; retry shortly",
                                      retry_after=1)
        self._wrote()
        return failure

    def _wrote(self, counted=True):
        if counted:
            self._writes -= 1
        if self._held and self._pending_writes() < MAX_WRITES:
            self._held = False
            self.flow.resume_body()

    def _open(self):
        if self.added == 0:
            raise InvalidRecipients(f"no valid recipient among {self.entries} entries")
        text = self.text
        needed = self.added * self.parts
        try:
            reservation = self.broadcasts.limits.reserve_quota(self.agency.id, needed)
        except QuotaUnknown as unknown:
            raise Overloaded(str(unknown), retry_after=unknown.retry_after) from None
        except QuotaExceeded as quota:
            raise OverQuota(f"daily quota of {quota.quota} parts reached ({quota.used} "
                            f"used, this broadcast needs {needed}); it resets at midnight "
                            "Tehran time", retry_after=quota.retry_after) from None
        try:
            # Encoded once; each recipient's concatenation reference is written into
            # its parts' UDH as they are claimed (store/operations.with_concat_ref).
            encoded = encode_for_submit(text.text, 0)
        except TextTooLong as error:
            self.broadcasts.limits.release(reservation)
            raise TooManyParts(str(error)) from None
        broadcast = NewBroadcast(
            id=self.id, agency=self.agency.id, sender=self.sender, text=text.text,
            priority=text.priority, validity_s=text.validity_s, receipt=text.receipt,
            data_coding=encoded.data_coding, esm_class=encoded.esm_class,
            parts=list(encoded.parts), created_at=self.broadcasts.clock.seconds(),
            recipients=self.added, invalid=self.invalid,
            fingerprint=self._fingerprint(text.text),
            unknown_citizens=self.unknown_citizens)
        limits = self.broadcasts.limits
        quota = limits.store_quota(reservation)
        d = (self.store.open_broadcast(broadcast) if quota is None
             else self.store.open_broadcast(broadcast, quota=quota))

        def opened(_):
            metrics.child(metrics.MESSAGES_ACCEPTED, self.agency.id).inc(self.added)
            metrics.child(metrics.PARTS_ACCEPTED, self.agency.id).inc(needed)
            log.info("broadcast %s of %s opened: %d recipients, %d parts each, %d "
                     "invalid, %d repeated, %d unknown citizens", self.id, self.agency.id,
                     self.added, self.parts, self.invalid,
                     self.valid - self.added - self.unknown_citizens, self.unknown_citizens)
            if self.broadcasts.feeder is not None:
                self.broadcasts.feeder.add(self.id, self.agency.id, self.parts)
            return {"id": self.id, "recipients": self.added,
                    "duplicates": self.valid - self.added - self.unknown_citizens,
                    "parts": self.parts, "invalid": self.reported,
                    "invalid_count": self.invalid,
                    "unknown_citizens": self.unknown_citizens}

        def failed(failure):
            self.broadcasts.limits.release(reservation)
            if failure.check(QuotaRefused):
                # Other HTTP workers used the rest of today's quota (the store counts).
                refused = failure.value
                limits.refused_by_store(reservation, refused.used)
                raise OverQuota(f"daily quota of {refused.quota} parts reached "
                                f"({refused.used} used, this broadcast needs {needed}); "
                                "it resets at midnight Tehran time",
                                retry_after=limits.seconds_to_midnight())
            return failure

        d.addCallbacks(opened, failed)
        return d

    def _fingerprint(self, text):
        """The text's fingerprint for the 4040 check (the accept path's key), or None."""
        fingerprint = getattr(self.broadcasts.outbound, "fingerprint", None)
        return fingerprint.of(text) if fingerprint is not None else None

    def _not_stored(self, failure):
        """A refusal or a failed write: nothing of this broadcast stays."""
        self._ended = False
        self.abort()
        if failure.check(defer.FirstError):
            failure = failure.value.subFailure
        if failure.check(Refusal):
            return failure
        log.error("broadcast %s not stored: %s", self.id, failure.getErrorMessage())
        raise Overloaded("the broadcast could not be stored; retry shortly", retry_after=1)
