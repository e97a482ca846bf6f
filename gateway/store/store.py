"""The durable store: accepted messages, their parts, receipts, idempotency, audit.

Writes run on the writer thread (see writer.py) and are acknowledged only after their
group transaction has committed with synchronous=FULL, so a 202 to an agency means the
rows are on disk.  Reads run on the reactor thread with their own read-only connection;
WAL lets them proceed while the writer commits.
"""

import functools
import json
import os
import random
import logging
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.model import (
    CLAIM_ORDER, LANE_SHARES, OUTCOME_KINDS, PRIORITY_NAMES, ClaimedPart, NewBroadcast,
    NewMessage, PartOutcome)
from gateway.receipt_ids import normal_id
from gateway.store import (
    audit_trail, broadcasts, citizen_messages, correspondence, guard, national_ids, operations,
    schema)
from gateway.store import quota as store_quota
from gateway.store import receipts as store_receipts
from gateway.store import email_fallbacks
from gateway.store.interface import RENEW_LEASES_S, IdempotencyMismatch, StoreClosed
from gateway.store.operations import IDEMPOTENCY_S
from gateway.store.transaction_lock import TransactionLock
from gateway.store.writer import Writer

log = logging.getLogger("payam.store")

PENDING_RECEIPT_S = 3 * 24 * 3600
WRITER_STATEMENTS_CACHED = 256      # sqlite3's default is 128
PROBE_EVERY_S = 1.0
# How long the writer waits for a lock another process holds (an sqlite3 shell, a copy
# tool); past it, the start is refused as locked (guard.unusable).
BUSY_TIMEOUT_MS = 5000
# A claimed part is leased to the store that claimed it.  Another store takes it back
# once the lease is this old: the dispatcher renews the leases of the parts it holds
# every RENEW_LEASES_S (30 s), so only a process that stopped (or froze this long)
# loses its parts this way, however long they wait in a lane.
LEASE_S = 300.0
RECLAIM_EVERY_S = 10.0          # how often a claim first looks for expired leases
# queue_summary counts at most this many queued parts per priority: the three counts
# then cost ~15 ms of the reactor at worst (measured on 2 loaded cores), every 5 s.
QUEUE_COUNT_CAP = 10_000

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"   # Crockford, in ASCII order: ids sort by time
_SYMBOL_PAIRS = tuple(a + b for a in _BASE32 for b in _BASE32)   # 10 bits → 2 symbols


_INSERT_WITHIN_QUOTA = store_quota.within_quota(operations.insert_messages)
# The grouped accepts an HTTP worker hands to the dispatcher's writer, by name
# (store/remote_writer.py); every other write of a worker stays its own.
REMOTE_ACCEPTS = {"accept": operations.insert_messages,
                  "accept_within_quota": _INSERT_WITHIN_QUOTA}


def _refused_raised(result):
    if isinstance(result, store_quota.QuotaRefused):
        raise result
    return result


def _read(read):
    """A read on the reactor thread's own connection, answered as the interface's
    reads are (a Deferred, so that a network database can answer later): at once."""
    @functools.wraps(read)
    def answer(self, *args, **kwargs):
        if self._reader is None:
            return defer.fail(StoreClosed("the store is not open"))
        try:
            return defer.succeed(read(self, *args, **kwargs))
        except Exception:
            return defer.fail()
    return answer


# The least time between the starts of two group commits (Writer).  An idle writer
# still commits a lone write at once; a busy one adds at most this to an answer's
# latency.  Every commit costs the writer ~0.5-0.7 ms of CPU whatever it holds (~0.45
# of it in the kernel: WAL write and fsync) plus ~0.25 ms in insert_messages, and the
# reactor's answers then compete with the next transaction, so a shorter interval makes
# more, smaller commits for more CPU a message; the dispatcher's claims, outcome and
# receipt writes follow the binds' windows, not the commits (~370, ~370, ~300 per 20,000
# messages at 6 ms as at 2 ms).  Measured, bench/mt_throughput.py, 50 clients,
# alternated (load 1.3-2.3, other benchmarks running):
# - 2 ms 4,139-4,981 msg/s at 184-202 µs/msg; 3 ms 4,385-5,427 at 164-203; 4 ms
#   4,821-5,721 at 150-191 (10 pairs +1.8 % msg/s against 6 ms, inside the noise);
#   6 ms 4,331-6,173 at 139-177 (main after the reactor and writer cuts of issue 10).
# - At 200 clients a commit holds 83-89 messages and outlasts 3-6 ms alike.
# (The split daemon's dispatcher commits for every process: procs/dispatcher.py.)
COMMIT_INTERVAL_S = 0.006
# A quota day's count (quota.py) is needed while the day lasts; two days cover a day
# begun in any agency's reckoning and clocks a little apart between processes.
QUOTA_DAYS_KEPT_S = 2 * 86400.0


class Store:
    def __init__(self, path, reactor=None, commit_interval=COMMIT_INTERVAL_S, *, node=None,
                 lease_s=LEASE_S, claims=True):
        """node: this machine's name among the store's users (default: the host
        name); lease_s: how old another owner's claim lease must be to be taken
        back; claims=False: a process that only accepts and reads (an HTTP worker,
        gateway/procs) beside the one that claims: its open takes over no leases
        (they are the dispatcher's) and its close leaves the WAL checkpoint to it."""
        if reactor is None:
            from twisted.internet import reactor
        if not lease_s >= 3 * RENEW_LEASES_S:
            raise ValueError(f"lease_s must be well above the renewal every "
                             f"{RENEW_LEASES_S:g} s, not {lease_s!r}")
        self.path = str(path)
        self._reactor = reactor
        self._commit_interval = commit_interval
        self.node = node if node is not None else socket.gethostname()
        self.lease_s = lease_s
        self.claims = claims
        self.owner = None              # "node:pid:random" while open: claims' leases
        self._reclaim_at = float("-inf")
        self._claim_credit = {}        # route → the lanes' share fractions (claim_plan)
        self._writer = None
        self._accepts_to = None        # a RemoteWriter (an HTTP worker's) or None
        self._transaction_lock = None
        self._reader = None
        self._closing = None
        self._last_probe = None
        self._file = None              # (device, inode) of the database file at open
        self.store_id = None
        self._fingerprint_key = None
        self._random = random.Random(os.urandom(32))
        self._receipt_bases = store_receipts.KnownBases()
        self._audit_gate = audit_trail.AuditPurgeGate()   # only the purge opens it
        self._number_salt = None       # audit_trail.SALT_KEY, read at open
        # Writer thread only: auto operators whose receipt id base is not known yet.
        self._receipts_learning = set()

    # -- lifecycle ----------------------------------------------------------------

    def open(self, create=False):
        """Migrate, start the writer, and put back the parts this node's previous run
        left in flight (each counted as an unknown outcome: it may have been sent).

        Raises StoreUnusable (one line naming the file and what to do) for a damaged
        file, or a missing one whose marker says it existed (guard.py); `create` begins
        an empty store there instead."""
        if self._writer is not None:
            raise RuntimeError("store already open")
        now = self._reactor.seconds()
        conn = None
        try:
            if self.claims:
                guard.before_open(self.path, create)
            elif not guard.present(self.path):
                # (An HTTP worker: the dispatcher process, which checked the file
                # page by page, has it open already; a worker never creates one.)
                raise guard.StoreUnusable(self.path, "is missing",
                                          "the process that claims opens it first")
            created = not guard.present(self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            schema.migrate(self.path, now=now)
            # The batch statements are written for a few row counts each (operations.
            # padded_size: 26 per statement at most): room for them all beside the rest.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   cached_statements=WRITER_STATEMENTS_CACHED)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._audit_gate.install(conn)
            self._number_salt = audit_trail.read_salt(conn)
            self.store_id = guard.adopt(conn, self.path, created)
            self._fingerprint_key = bytes.fromhex(conn.execute(
                "SELECT value FROM meta WHERE key = 'fingerprint_key'").fetchone()[0])
            owner = f"{self.node}:{os.getpid()}:{self._random.getrandbits(32):08x}"
            recovered = self._take_over(conn, owner) if self.claims else 0
            transaction_lock = TransactionLock(self.path)
            transaction_lock.open()
        except (sqlite3.Error, OSError) as e:
            if conn is not None:
                conn.close()
            raise guard.unusable(self.path, e) from e
        except guard.StoreUnusable:
            if conn is not None:
                conn.close()
            raise
        if recovered:
            log.warning("requeued %d parts left in flight by the previous run (counted "
                        "as unknown outcomes)", recovered)
        self.owner = owner
        self._file = _file_identity(self.path)
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        self._reader = sqlite3.connect(uri, uri=True, isolation_level=None)
        self._reader.execute("PRAGMA busy_timeout=5000")
        self._writer = Writer(conn, self._reactor, self._commit_interval)
        # Processes sharing the store take turns without SQLite's sleeping busy handler.
        self._transaction_lock = transaction_lock
        self._writer.serialise = transaction_lock.held
        self._writer.start()

    def _take_over(self, conn, owner):
        """Become this node's owner of claim leases, releasing the previous run's: a
        part it left 'sending' may or may not have reached the SMSC; we cannot know,
        so it is sent again (at-least-once) as an unknown outcome, which bounds how
        often that can happen.  Leases of other nodes' owners wait for their expiry
        (claim).  The number of parts released."""
        key = f"lease_owner:{self.node}"
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            released = operations.release_leases(conn, row[0] if row else None)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (key, owner))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return released

    def close(self):
        """Commit every write already queued, stop the writer, checkpoint the WAL into
        the database file (so the .db alone is complete), close the connections."""
        if self._writer is None:
            return defer.succeed(None)
        if self._closing is None:
            self._closing = defer.Deferred()

            def stopped(_):
                self._writer.join(5)
                self._transaction_lock.close()
                # The read-only connection, closed last, cannot checkpoint on close
                # (SQLite's own end-of-use checkpoint): it goes first, then ours.
                self._reader.close()
                if self.claims:
                    self._checkpoint()
                self._closing.callback(None)

            self._writer.stop().addCallback(stopped)
        d = defer.Deferred()
        self._closing.addBoth(lambda r: (d.callback(r), r)[1])
        return d

    def _checkpoint(self):
        """Copy the WAL into the database file and truncate it.  Left to SQLite, the
        last connection to close does it, and ours was the read-only one, which cannot:
        162 of 2,000 accepted messages were once found only in the -wal after a clean
        stop (0 of 1,000 in tests/test_e2e_ops.py's case)."""
        try:
            # mode=rw: a file deleted under the running store is not created anew here.
            uri = Path(self.path).resolve().as_uri() + "?mode=rw"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout=5000")
                busy, _frames, _moved = conn.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as e:
            log.warning("store %s: WAL checkpoint at close failed (%s); the -wal file "
                        "holds the latest writes, keep it with the database", self.path, e)
            return
        if busy:
            log.warning("store %s: WAL checkpoint at close was blocked by another "
                        "connection; keep the -wal file with the database", self.path)

    @property
    def commits(self):
        """Group transactions committed since open (for tests and benchmarks)."""
        return self._writer.commits if self._writer is not None else 0

    def new_message_id(self):
        """22 URL-safe characters: 48-bit millisecond time, then 62 random bits.

        The random bits come from a generator seeded from os.urandom, not from
        `secrets` (a system call per id): ids must not collide, and reading a message
        is guarded by its owner check, not by the id being unguessable."""
        millis = int(self._reactor.seconds() * 1000) & ((1 << 48) - 1)
        random_bits = self._random.getrandbits(62)
        # The 110-bit value (millis << 62) | random_bits as 22 base32 symbols, two at a
        # time from a 1024-entry table (base64.b32encode is pure Python here and cost
        # ~3 µs per id).  Split in two machine-word halves: the top 50 bits, the low 60.
        high = (millis << 2) | (random_bits >> 60)
        low = random_bits & ((1 << 60) - 1)
        p = _SYMBOL_PAIRS
        # One join, not ten concatenations (0.74 → 0.56 µs, measured).
        return "".join((p[high >> 40], p[(high >> 30) & 1023], p[(high >> 20) & 1023],
                        p[(high >> 10) & 1023], p[high & 1023],
                        p[low >> 50], p[(low >> 40) & 1023], p[(low >> 30) & 1023],
                        p[(low >> 20) & 1023], p[(low >> 10) & 1023], p[low & 1023]))

    # -- writes -------------------------------------------------------------------

    def _write(self, operation, item=None):
        """operation(conn) on the writer thread; with `item`, operation(conn, items)
        takes every item queued for it before the commit (Writer.submit_grouped)."""
        if self._writer is None:
            return defer.fail(StoreClosed("the store is not open"))
        if item is None:
            return self._writer.submit(operation)
        if self._accepts_to is not None:
            d = self._accepts_to.submit(operation, item)
            if d is not None:
                return d
        return self._writer.submit_grouped(operation, item)

    def hand_accepts_to(self, remote):
        """Grouped accepts go to `remote.submit(operation, item)` (a Deferred of the
        result once committed elsewhere, or None: this writer's after all)."""
        self._accepts_to = remote
        remote.here = self._grouped_here

    def _grouped_here(self, operation, item, answer=None):
        """A grouped write by this process's own writer: Deferred of its result, or
        `answer` told it (Writer.submit_grouped).  An accept the remote end could not
        take after all, or one another process's Store prepared (accept_named)."""
        if self._writer is None:
            failure = Failure(StoreClosed("the store is not open"))
            if answer is None:
                return defer.fail(failure)
            answer.errback(failure)
            return answer
        return self._writer.submit_grouped(operation, item, answer)

    def commit_every(self, seconds):
        """The least time between the starts of two commits from now on (the split
        daemon's dispatcher, whose writer commits for every process, sets its own)."""
        self._commit_interval = seconds
        if self._writer is not None:
            self._writer.commit_every(seconds)

    def after_each_commit(self, hook):
        """hook(results) runs on the open store's writer thread after each commit and
        returns the results left for the reactor (Writer.after_commit); None: no hook."""
        if self._writer is None:
            raise StoreClosed("the store is not open")
        self._writer.after_commit = hook

    def accept_named(self, name, item, answer=None):
        """A grouped accept prepared by another process's Store.accept (REMOTE_ACCEPTS),
        committed by this writer; Deferred of its raw result, or `answer` told it
        (Writer.submit_grouped).  KeyError for a name not in REMOTE_ACCEPTS."""
        return self._grouped_here(REMOTE_ACCEPTS[name], item, answer)

    def accept(self, messages, idempotency=None, quota=None):
        """Store new messages (all or none); Deferred fires with their ids once durable.

        idempotency=(agency, key, response_json[, request_hash]): a key the agency
        used within 24 h fails with DuplicateIdempotencyKey carrying the first response,
        or IdempotencyMismatch when the two requests' hashes differ.
        quota=(agency, day_start, parts, daily_parts): counted in the store in the same
        transaction (store/quota.py); over it, fails with QuotaRefused, nothing stored."""
        try:
            messages = list(messages)
            if not messages:
                raise ValueError("accept needs at least one message")
        except (TypeError, ValueError) as e:
            return defer.fail(e)
        now = self._reactor.seconds()
        # One pass over the messages for every row list and check (the reactor's share
        # of an accept: bench/accept_path.py); the rare extras (opt-outs, national IDs,
        # email fallbacks) are looked for again only when a message has one.
        message_rows = []
        part_rows = []
        fingerprint_rows = []
        ids = []
        extras = False
        for m in messages:
            if not _plainly_valid(m):
                try:
                    _check_message(m)
                except (TypeError, ValueError) as e:
                    return defer.fail(e)
            parts = m.parts
            ids.append(m.id)
            message_rows.append(
                (m.id, m.agency, m.sender, m.recipient, m.text, m.priority, m.reference,
                 m.validity_s, 1 if m.receipt else 0, m.data_coding, m.esm_class,
                 len(parts), m.created_at))
            # A fresh part is eligible from its creation: claim order within a priority
            # is not_before then rowid, i.e. age.
            if len(parts) == 1:
                part_rows.append((m.id, 1, m.priority, bytes(parts[0]), m.created_at,
                                  m.route))
            else:
                part_rows.extend((m.id, seq, m.priority, bytes(payload), m.created_at,
                                  m.route) for seq, payload in enumerate(parts, 1))
            if m.fingerprint is not None:
                fingerprint_rows.append((m.fingerprint, m.recipient, m.created_at,
                                         m.agency))
            if m.error is not None or m.national_id is not None or m.fallback is not None:
                extras = True
        try:
            if idempotency is not None:
                agency, key, response, *request_hash = idempotency
                if not (isinstance(agency, str) and isinstance(key, str) and key
                        and isinstance(response, str) and len(request_hash) <= 1):
                    raise ValueError("idempotency must be (agency, non-empty key, response "
                                     "str[, request hash])")
        except (TypeError, ValueError) as e:
            return defer.fail(e)
        item = (message_rows, part_rows, ids, idempotency, now, fingerprint_rows)
        insert = operations.insert_messages
        if quota is not None:
            item, insert = item + (tuple(quota),), _INSERT_WITHIN_QUOTA
        if not extras:
            d = self._write(insert, item)
            return d if quota is None else d.addCallback(_refused_raised)
        ended = [(m.error, m.id) for m in messages if m.error is not None]
        fallback_rows = email_fallbacks.rows_of(messages, now)
        addressed = [(m.national_id, m.id) for m in messages if m.national_id is not None]
        if fallback_rows or addressed:
            # Addressed by national ID (migration 16) or with email fallbacks (17): rare,
            # so outside the grouped write, in the accept's own transaction.
            d = self._write(lambda conn: _accept_with_extras(
                conn, insert, item, ended, now, addressed, fallback_rows))
        elif ended:
            # Recorded failed at once (the part trigger ends the message), in the
            # accept's own transaction; rare (opt-outs), so outside the grouped write.
            d = self._write(lambda conn: correspondence.insert_ended(
                conn, insert, item, ended, now))
        else:
            d = self._write(insert, item)
        return d if quota is None else d.addCallback(_refused_raised)

    def claim(self, limit, now, route=None):
        """Up to `limit` queued parts of `route` (None: parts stored without one) due by
        `now`: emergency first, then high and normal by model.LANE_SHARES, each oldest
        first; they become 'sending', leased to this store's owner.
        Deferred[list[ClaimedPart]]."""
        if not isinstance(limit, int) or limit < 0:
            return defer.fail(ValueError(f"claim limit must be an int >= 0, not {limit!r}"))
        if limit == 0:
            return defer.succeed([])
        leases_before = None
        if now >= self._reclaim_at:
            # Expired leases of other owners are looked for now and then, not per claim.
            self._reclaim_at = now + RECLAIM_EVERY_S
            leases_before = now - self.lease_s
        owner = self.owner
        credit = self._claim_credit.setdefault(route, {})
        return self._write(lambda conn: [
            ClaimedPart(*row) for row in operations.claim(
                conn, limit, now, route, CLAIM_ORDER, owner, leases_before,
                LANE_SHARES, credit)])

    def renew_leases(self, now):
        """The parts this store holds ('sending', leased to its owner) are leased from
        `now` on: one UPDATE over the parts in flight.  Deferred[int] parts renewed."""
        owner = self.owner
        return self._write(lambda conn: operations.renew_leases(conn, owner, now))

    def record(self, outcomes):
        """Apply submit outcomes to parts and their messages; Deferred fires with the
        number of outcomes that changed a part.  Only parts this store still holds
        change: an outcome for a part whose lease another store took back (it sends
        the part again), or for a finished or unknown one, is dropped and logged."""
        try:
            outcomes = list(outcomes)
            for outcome in outcomes:
                _check_outcome(outcome)
        except (TypeError, ValueError) as e:
            return defer.fail(e)
        now = self._reactor.seconds()
        learning = self._receipts_learning
        owner = self.owner
        return self._write(lambda conn: operations.record(conn, outcomes, now, learning,
                                                          owner))

    def apply_receipt(self, operator, smsc_id, state, error=None, id_mode="auto"):
        """Apply one delivery receipt; Deferred[bool] whether it met a part."""
        d = self.apply_receipts([(operator, smsc_id, state, error)], {operator: id_mode})
        d.addCallback(lambda matched: matched[0])
        return d

    def apply_receipts(self, receipts, id_modes=None, learn=(), mature_s=None):
        """Apply delivery receipts [(operator, smsc_id, state, error)] in one write;
        Deferred[list[bool]], whether each met a part of its operator.

        id_modes: operator → its `receipt_ids` (raw | dec | hex | auto; absent: auto),
        how its receipts write the submit_sm_resp id.  A receipt only reaches a part
        its operator carried, under exactly that id (see receipts.py); an unmatched
        final receipt is kept and applied when a later 'submitted' outcome brings its
        id, since receipts can overtake the submit_sm_resp.  learn: auto operators
        whose kept receipts are judged now, although this batch has none of theirs;
        mature_s: operator → how old its kept receipts must be to be judged
        (receipts.mature_after its response_timeout_s; absent: receipts.MATURE_S)."""
        prepared = []
        try:
            for operator, smsc_id, state, error in receipts:
                if not isinstance(smsc_id, str) or not smsc_id.strip():
                    raise ValueError(f"receipt without a message id: {smsc_id!r}")
                if not isinstance(state, str) or not state:
                    raise ValueError(f"receipt state must be a string, not {state!r}")
                prepared.append((operator, normal_id(smsc_id), state, error))
        except ValueError as e:
            return defer.fail(e)
        # Handed to the writer thread as they are: it only looks names up in them, and
        # `known` grows only after a commit (KnownBases.take), by bases that then hold.
        modes = id_modes or {}
        known = self._receipt_bases
        now = self._reactor.seconds()
        learn = tuple(learn) if learn else ()
        learning = self._receipts_learning
        mature_s = mature_s or {}
        d = self._write(lambda conn: store_receipts.apply_receipts(
            conn, prepared, modes, known.bases, known.settled, now, learn, learning,
            mature_s))
        d.addCallback(known.take)
        return d

    def fingerprint_key(self):
        """The key of this store's text fingerprints (migration 11; memory, no read)."""
        return self._fingerprint_key

    def learned_receipt_ids(self, operator):
        """The id base learned for an `auto` operator, or None while it is learned."""
        return self._receipt_bases.bases.get(operator)

    def store_inbound(self, operator, pdu_fields, tlvs):
        """Keep a raw MO PDU; Deferred fires with its row id once durable."""
        try:
            fields_json = json.dumps({name: _jsonable(value)
                                      for name, value in pdu_fields.items()})
            tlvs_json = json.dumps({str(int(tag)): bytes(value).hex()
                                    for tag, value in tlvs.items()})
        except (TypeError, ValueError, AttributeError) as e:
            return defer.fail(ValueError(f"inbound PDU not storable: {e}"))
        now = self._reactor.seconds()
        return self._write(lambda conn: conn.execute(
            "INSERT INTO inbound (operator, received_at, fields, tlvs) VALUES (?, ?, ?, ?)",
            (operator, now, fields_json, tlvs_json)).lastrowid)

    def file_inbox(self, entries):
        """File citizens' messages into inboxes (all or none) → Deferred[list of
        (InboxMessage, new)] once durable; an entry whose source_key is filed already
        gives the message filed then (new False), not a second one."""
        ids = [self.new_message_id() for _ in entries]
        return self._write(lambda conn: operations.file_inbox(conn, entries, ids))

    def record_ussd_dialog(self, record):
        """Keep one ended USSD dialog (a model.UssdDialogRecord) → Deferred once durable;
        records queued before a commit are one statement."""
        return self._write(operations.record_ussd_dialogs, record)
    def number_hash(self, msisdn):
        """A citizen's number as audit rows keep it: salted with this install's salt
        (audit_trail.number_hash); no database read."""
        if self._number_salt is None:
            raise StoreClosed("the store is not open")
        return audit_trail.number_hash(self._number_salt, msisdn)

    def audit(self, event, agency, detail):
        if not isinstance(event, str) or not event:
            return defer.fail(ValueError(f"audit event must be a non-empty string: {event!r}"))
        try:
            detail_json = json.dumps(detail, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            return defer.fail(ValueError(f"audit detail not JSON-serialisable: {e}"))
        now = self._reactor.seconds()
        return self._write(lambda conn: conn.execute(
            "INSERT INTO audit (at, event, agency, detail) VALUES (?, ?, ?, ?)",
            (now, event, agency, detail_json)).lastrowid)

    def purge(self, older_than, *, audit_before=None, receipts_before=None,
              inbound_before=None, inbox_before=None, fingerprints_before=None,
              ussd_before=None):
        """Delete messages that ended before `older_than` (with their parts),
        idempotency keys past 24 h, unmatched receipts received before
        `receipts_before` (default: 3 days ago), and audit, raw inbound, inbox and sent
        fingerprint rows from before their cutoff (None: kept), and the daily quota counts
        of days that began more than QUOTA_DAYS_KEPT_S ago.  A message sent without
        receipts ends when it is submitted.  Deferred[dict] of rows removed per kind."""
        now = self._reactor.seconds()
        if receipts_before is None:
            receipts_before = now - PENDING_RECEIPT_S
        return self._write(lambda conn: {**operations.purge(
            conn, older_than, now - IDEMPOTENCY_S, receipts_before,
            audit_before=audit_before, inbound_before=inbound_before,
            inbox_before=inbox_before, fingerprints_before=fingerprints_before,
            ussd_before=ussd_before, audit_gate=self._audit_gate),
            **broadcasts.purge(conn, older_than),
            "quota_days": store_quota.forget_days_before(conn, now - QUOTA_DAYS_KEPT_S)})

    def expire_unreceipted(self, grace_s):
        """Parts still waiting for a receipt `grace_s` after their message's validity
        ended become 'expired' (the SMSC has given up by then, or lost the receipt).
        Deferred[int]: parts changed."""
        now = self._reactor.seconds()
        return self._write(lambda conn: operations.expire_unreceipted(conn, now, grace_s))

    def expire_unsent(self):
        """Queued parts whose message's validity has ended become 'expired' (a route
        that never binds would keep them forever).  Deferred[int]: parts changed."""
        now = self._reactor.seconds()
        return self._write(lambda conn: operations.expire_unsent(conn, now))

    # -- broadcasts (broadcasts.py) ---------------------------------------------------

    def add_broadcast_recipients(self, broadcast_id, rows):
        """rows [[number as int, route(, national ID it was addressed by)]];
        Deferred[int] of those new to the broadcast (a repeated number is kept once)
        once durable."""
        return self._write(broadcasts.add_recipients, (broadcast_id, rows))

    def open_broadcast(self, broadcast, quota=None):
        """quota: as accept's, for the whole broadcast (its recipients x parts)."""
        if not isinstance(broadcast, NewBroadcast):
            return defer.fail(TypeError("open_broadcast takes a NewBroadcast"))
        b = broadcast
        row = (b.id, b.agency, b.sender, b.text, b.priority, b.validity_s,
               int(bool(b.receipt)), b.data_coding, b.esm_class, len(b.parts),
               b.created_at, b.recipients, b.invalid)
        payloads = [bytes(p) for p in b.parts]
        if quota is None:
            return self._write(lambda conn: broadcasts.open_broadcast(
                conn, row, payloads, b.fingerprint, b.unknown_citizens))

        def open_within_quota(conn):
            store_quota.take(conn, *quota)
            return broadcasts.open_broadcast(conn, row, payloads, b.fingerprint,
                                             b.unknown_citizens)
        return self._write(open_within_quota)

    def discard_broadcast(self, broadcast_id):
        return self._write(lambda conn: broadcasts.discard(conn, broadcast_id))

    def feed_broadcast(self, broadcast_id, limit, now):
        """Up to `limit` more recipients become messages and parts, eligible from
        `now`; Deferred[(fed, routes, nothing left)]."""
        return self._write(lambda conn: broadcasts.feed(conn, broadcast_id, limit, now))

    def cancel_broadcast(self, broadcast_id):
        now = self._reactor.seconds()
        return self._write(lambda conn: broadcasts.cancel(conn, broadcast_id, now))

    @_read
    def get_broadcast(self, broadcast_id):
        found = broadcasts.progress(self._reader, broadcast_id)
        if found is not None:
            found["created_at"] = _iso(found["created_at"])
            found["done_at"] = _iso(found["done_at"])
        return found

    @_read
    def stored_ids(self, ids):
        """Which of these message ids are stored (committed), as a set."""
        found = set()
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self._reader.execute(
                f"SELECT id FROM messages WHERE id IN ({marks})", chunk))
        return found

    @_read
    def open_broadcasts(self):
        return broadcasts.open_broadcasts(self._reader)

    @_read
    def broadcast_backlog(self, broadcast_id):
        return broadcasts.backlog(self._reader, broadcast_id)

    # -- reads (reactor thread; each answers a Deferred, already fired) --------------

    @_read
    def list_inbox(self, agency, after=0, limit=100):
        """→ [InboxMessage] of `agency`'s inbox (None: the unrouted box) after the
        cursor `after` (a seq), at most `limit`, oldest first."""
        return operations.list_inbox(self._reader, agency, after, limit)

    @_read
    def citizen_messages(self, recipient, before=None, limit=100, hidden_agencies=()):
        """→ [CitizenMessage] sent to `recipient`, newest first, older than `before`
        ((created_at, id); None: from the newest), at most `limit`."""
        return citizen_messages.list_for(self._reader, recipient, before, limit,
                                         hidden_agencies)

    @_read
    def citizen_message(self, recipient, message_id, hidden_agencies=()):
        """→ CitizenMessage | None: `message_id` if it is one sent to `recipient`."""
        return citizen_messages.one_for(self._reader, recipient, message_id,
                                        hidden_agencies)

    @_read
    def find_sent(self, digests, citizen, since):
        """→ SentMatch | None: the latest message sent to `citizen` since `since` whose
        fingerprint is one of `digests`, else any one sent to someone else."""
        return operations.find_sent(self._reader, list(digests), citizen, since)

    @_read
    def get_message(self, message_id):
        """The contract's fields, "agency", and how its sending went so far: `attempts`
        (submits of its parts that met a temporary error or an unknown outcome and were
        tried again) and `last_error` (the latest such error of its most-retried part)."""
        row = self._reader.execute(
            "SELECT id, agency, sender, recipient, status, parts, priority, reference,"
            " operator, created_at, submitted_at, done_at, error, national_id,"
            " (SELECT COALESCE(SUM(attempts), 0) FROM parts WHERE message_id = m.id),"
            " (SELECT error FROM parts WHERE message_id = m.id AND error IS NOT NULL"
            "  ORDER BY attempts DESC, seq LIMIT 1)"
            " FROM messages m WHERE id = ?",
            (message_id,)).fetchone()
        if row is None:
            return None
        (id_, agency, sender, recipient, status, parts, priority, reference, operator,
         created_at, submitted_at, done_at, error, national_id, attempts, last_error) = row
        message = {
            "id": id_, "from": sender, "to": recipient, "status": status, "parts": parts,
            "priority": PRIORITY_NAMES.get(priority, str(priority)),
            "reference": reference, "operator": operator,
            "created_at": _iso(created_at), "submitted_at": _iso(submitted_at),
            "done_at": _iso(done_at), "error": error,
            "attempts": attempts, "last_error": last_error, "agency": agency,
            **_channels(self._reader, id_, status),
        }
        if national_id is not None:        # addressed by national ID (migration 17)
            message["national_id"] = national_id
        return message

    @_read
    def idempotent_response(self, agency, key, now, request_hash=None):
        row = self._reader.execute(
            "SELECT response, request_hash FROM idempotency"
            " WHERE agency = ? AND key = ? AND created_at > ?",
            (agency, key, now - IDEMPOTENCY_S)).fetchone()
        if row is None:
            return None
        if operations.different_request(row[1], request_hash):
            raise IdempotencyMismatch(agency, key)
        return row[0]

    @_read
    def parts_used(self, agency, since):
        # A broadcast counts whole from its accept: its recipients not fed yet too.
        return self._reader.execute(
            "SELECT COALESCE(SUM(parts), 0) FROM messages WHERE agency = ? AND created_at >= ?",
            (agency, since)).fetchone()[0] + broadcasts.unfed_parts(self._reader, agency, since)

    @_read
    def queued_routes(self):
        """The routes that queued parts carry (None among them for parts without).
        One index probe per route, however many parts wait."""
        reader = self._reader
        routes = set()
        if reader.execute("SELECT 1 FROM parts WHERE state = 'queued' AND route IS NULL"
                          " LIMIT 1").fetchone():
            routes.add(None)
        row = reader.execute("SELECT MIN(route) FROM parts WHERE state = 'queued'"
                             " AND route >= ''").fetchone()
        while row is not None and row[0] is not None:
            routes.add(row[0])
            row = reader.execute("SELECT MIN(route) FROM parts WHERE state = 'queued'"
                                 " AND route > ?", row).fetchone()
        return routes

    @_read
    def queue_summary(self, now):
        """{priority: (parts queued, seconds the longest-waiting due one has waited)}
        for every priority.  Per queued route and priority, one MIN probe of the partial
        claim index (route, priority, not_before) and a count over it stopped at
        QUEUE_COUNT_CAP for the priority (a count reading the cap means "at least"): a
        backlog of millions must not stall the reactor for a gauge.  Parts claimed and
        not yet taken by an SMSC ('sending': a lane's worth and the windows, read through
        the lease index) count too: they still wait, and a part the SMSC keeps
        throttling spends most of its time claimed."""
        reader = self._reader
        routes = Store.queued_routes.__wrapped__(self)
        claimed = {priority: (n, first) for priority, n, first in reader.execute(
            "SELECT priority, COUNT(*), MIN(not_before) FROM parts WHERE state = 'sending'"
            " GROUP BY priority")}
        summary = {}
        for priority in sorted(PRIORITY_NAMES):
            count, oldest = claimed.get(priority, (0, None))
            for route in routes:
                where = ("WHERE state = 'queued' AND route IS ? AND priority = ?"
                         if route is None else
                         "WHERE state = 'queued' AND route = ? AND priority = ?")
                (first,) = reader.execute(f"SELECT MIN(not_before) FROM parts {where}",
                                          (route, priority)).fetchone()
                if first is None:
                    continue
                oldest = first if oldest is None else min(oldest, first)
                if count < QUEUE_COUNT_CAP:
                    (n,) = reader.execute(
                        f"SELECT COUNT(*) FROM (SELECT 1 FROM parts {where} LIMIT ?)",
                        (route, priority, QUEUE_COUNT_CAP - count)).fetchone()
                    count += n
            summary[priority] = (count, max(0.0, now - oldest) if oldest is not None
                                 else 0.0)
        return summary

    @_read
    def status_counts(self):
        """{(agency, status): messages that reached that status since the store began}
        (kept by a trigger, migration 13: a few rows, whatever the messages table holds)."""
        return {(agency, status): n for agency, status, n in self._reader.execute(
            "SELECT agency, status, n FROM status_counts")}

    @_read
    def has_queued(self):
        return self._reader.execute(
            "SELECT 1 FROM parts WHERE state = 'queued' LIMIT 1").fetchone() is not None

    def writable(self):
        """Whether the last transaction committed and the file is still the one opened
        (Deferred[bool]); at most once a second this checks the file and sends a
        one-row write through the writer so that an idle store's answer stays fresh."""
        return defer.succeed(self._writable())

    def _writable(self):
        writer = self._writer
        if writer is None or not writer.alive():
            return False
        now = self._reactor.seconds()
        if self._last_probe is None or now - self._last_probe >= PROBE_EVERY_S:
            self._last_probe = now
            if self._file is not None and _file_identity(self.path) != self._file:
                # Writes would go on into a file no longer there, lost at the next start.
                log.error("store %s was deleted or replaced while open: stop the daemon "
                          "and restore it", self.path)
                self._file = None
            if self._file is not None:
                d = writer.submit(lambda conn: conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?)",
                    (str(now),)))
                d.addErrback(lambda f: log.error("store write probe failed: %s",
                                                 f.getErrorMessage()))
        return self._file is not None and writer.last_commit_ok


    # -- correspondence (migration 10; gateway/store/correspondence.py) ---------------

    def keep_mo_part(self, part, duplicate_since, max_open_sets):
        """Keep a citizen's SMS part → Deferred[(new, whole, overflow)] once durable
        (see correspondence.keep_mo_part)."""
        return self._write(lambda conn: correspondence.keep_mo_part(
            conn, part, duplicate_since, max_open_sets))

    def settle_mo_sets(self, set_ids):
        return self._write(lambda conn: correspondence.settle_mo_sets(conn, list(set_ids)))

    def file_mo(self, entries, set_ids):
        """file_inbox(entries) and settle_mo_sets(set_ids) in one transaction: a whole
        MO is in its inbox exactly when its parts are settled."""
        ids = [self.new_message_id() for _ in entries]

        def both(conn):
            filed = operations.file_inbox(conn, entries, ids)
            correspondence.settle_mo_sets(conn, list(set_ids))
            return filed
        return self._write(both)

    def forget_mo_parts(self, before):
        return self._write(lambda conn: correspondence.forget_mo_parts(conn, before))

    @_read
    def stale_mo_sets(self, incomplete_before, complete_before, limit, open_parts_cap):
        return correspondence.stale_mo_sets(self._reader, incomplete_before,
                                            complete_before, limit, open_parts_cap)

    def queue_pushes(self, pushes):
        now = self._reactor.seconds()
        return self._write(lambda conn: correspondence.queue_pushes(conn, list(pushes), now))

    def push_done(self, inbox_seq, state, attempts, next_at, error=None):
        return self._write(lambda conn: correspondence.push_done(
            conn, inbox_seq, state, attempts, next_at, error))

    def forget_pushes(self, before):
        return self._write(lambda conn: correspondence.forget_pushes(conn, before))

    @_read
    def due_pushes(self, agency, now, limit):
        return correspondence.due_pushes(self._reader, agency, now, limit)

    @_read
    def push_counts(self):
        return correspondence.push_counts(self._reader)

    @_read
    def unqueued_inbox(self, agencies, since, limit):
        return correspondence.unqueued_inbox(self._reader, list(agencies), since, limit)

    @_read
    def inbox_by_seq(self, seqs):
        return correspondence.inbox_by_seq(self._reader, seqs)

    def opt_out(self, agency, citizen):
        now = self._reactor.seconds()
        return self._write(lambda conn: correspondence.opt_out(conn, agency, citizen, now))

    @_read
    def opted_out(self, agency, citizens):
        return correspondence.opted_out(self._reader, agency, citizens)


    # -- the email fallback (migration 17; gateway/store/email_fallbacks.py) ----------

    def claim_email_fallbacks(self, now, limit, busy_until):
        """Due fallbacks (their SMS failed or expired), claimed until `busy_until`.
        Deferred[[(message_id, agency, address, attempt, text, created_at, sms status)]]."""
        return self._write(lambda conn: email_fallbacks.claim_due(conn, now, limit,
                                                                  busy_until))

    def settle_email_fallback(self, message_id, attempt, status, next_at=None, error=None,
                              sent_at=None):
        """An attempt's outcome: 'sent', 'failed', or 'pending' again from `next_at`.
        Deferred[bool]: False when the row is no longer that attempt's."""
        return self._write(lambda conn: email_fallbacks.settle(
            conn, message_id, attempt, status, next_at, error, sent_at))

    @_read
    def email_fallback(self, message_id):
        """The fallback's row as a dict (status, address, attempts, ...), or None."""
        return email_fallbacks.fallback_of(self._reader, message_id)


def _accept_with_extras(conn, insert, item, ended, now, addressed, fallback_rows):
    ids = national_ids.insert_addressed(conn, insert, item, ended, addressed, now)
    if fallback_rows:
        email_fallbacks.insert(conn, fallback_rows)
    return ids


def _channels(reader, message_id, sms_status):
    """{"channels": {...}} for a message that asked for a fallback, else nothing."""
    email = email_fallbacks.channel_of(reader, message_id)
    return {} if email is None else {"channels": {"sms": sms_status, "email": email}}


# -- validation -----------------------------------------------------------------------

def _plainly_valid(m):
    """True for a message of the usual shape, every rule of _check_message plainly met
    (exact types, one bytes part or more): checked in one expression, a third of
    _check_message's cost.  False means "check it fully", not "invalid"."""
    if m.__class__ is not NewMessage:
        return False
    parts = m.parts
    return (type(m.id) is str and m.id != "" and type(m.agency) is str
            and m.agency != "" and type(m.sender) is str and m.sender != ""
            and type(m.recipient) is str and m.recipient != "" and type(m.text) is str
            and m.priority in PRIORITY_NAMES
            and (m.reference is None or type(m.reference) is str)
            and type(m.validity_s) is int and m.validity_s > 0
            and type(m.data_coding) is int and 0 <= m.data_coding <= 255
            and type(m.esm_class) is int and 0 <= m.esm_class <= 255
            and type(parts) is list and len(parts) > 0
            and (type(parts[0]) is bytes if len(parts) == 1
                 else all(type(part) is bytes for part in parts))
            and type(m.created_at) in (float, int)
            and (m.route is None or type(m.route) is str)
            and (m.fingerprint is None or type(m.fingerprint) is bytes))


def _check_message(m):
    if not isinstance(m, NewMessage):
        raise TypeError(f"accept takes NewMessage objects, not {type(m).__name__}")
    # A message to an unknown citizen (no parts, failed at accept) has no number.
    may_be_empty = ("text", "recipient") if not m.parts else ("text",)
    for name in ("id", "agency", "sender", "recipient", "text"):
        if not isinstance(getattr(m, name), str) or (name not in may_be_empty
                                                     and not getattr(m, name)):
            raise ValueError(f"message {name} must be a non-empty string")
    if m.priority not in PRIORITY_NAMES:
        raise ValueError(f"message priority must be 0, 1 or 2, not {m.priority!r}")
    if m.reference is not None and not isinstance(m.reference, str):
        raise ValueError("message reference must be a string or None")
    if not isinstance(m.validity_s, int) or m.validity_s <= 0:
        raise ValueError(f"message validity_s must be a positive int, not {m.validity_s!r}")
    for name in ("data_coding", "esm_class"):
        value = getattr(m, name)
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise ValueError(f"message {name} must be an octet, not {value!r}")
    if not isinstance(m.parts, (list, tuple)) or (not m.parts and m.error is None):
        # Only a message failed at accept may have none (to an unknown citizen).
        raise ValueError("message needs at least one part")
    if not all(isinstance(p, (bytes, bytearray)) for p in m.parts):
        raise ValueError("message parts must be bytes")
    if not isinstance(m.created_at, (int, float)):
        raise ValueError("message created_at must be a timestamp")
    if m.route is not None and not isinstance(m.route, str):
        raise ValueError("message route must be an operator name or None")
    if m.fingerprint is not None and not isinstance(m.fingerprint, bytes):
        raise ValueError("message fingerprint must be bytes or None")


def _check_outcome(o):
    if not isinstance(o, PartOutcome):
        raise TypeError(f"record takes PartOutcome objects, not {type(o).__name__}")
    if o.kind not in OUTCOME_KINDS:
        raise ValueError(f"unknown outcome kind {o.kind!r}")
    if not isinstance(o.message_id, str) or not isinstance(o.seq, int):
        raise ValueError("outcome needs a message_id string and an int seq")
    if o.kind == "requeue" and o.not_before is not None \
            and not isinstance(o.not_before, (int, float)):
        raise ValueError("requeue not_before must be a timestamp")


# -- helpers ---------------------------------------------------------------------------

def _file_identity(path):
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _iso(timestamp):
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _jsonable(value):
    # bytes (short_message) become {"hex": ...}: unambiguous, since str and int never
    # decode to an object.
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (str, int)) or value is None:
        return value
    raise TypeError(f"field value of type {type(value).__name__}")
