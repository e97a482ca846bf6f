"""The store's writes, run on the writer thread, each over a whole batch.

Every SQL statement costs the writer thread a GIL hand-off while the reactor thread is
busy (~100 µs measured, against ~1 µs idle), so the hot writes touch a batch of rows
with a fixed handful of statements: rows go in as one multi-row VALUES list or one JSON
array read by json_each(), and come out as one JSON array.  A message's counters and
status follow its parts through the triggers of schema.py.
"""

import contextlib
import json
import logging
import zlib

from gateway.model import UNKNOWN_OUTCOME, InboxMessage, SentMatch
from gateway.receipt_ids import ID_BASES, normal_id, read_only_raw
from gateway.store import schema
from gateway.store.interface import DuplicateIdempotencyKey, IdempotencyMismatch

log = logging.getLogger("payam.store")

IDEMPOTENCY_S = 24 * 3600

# Multi-row statements (the INSERTs here, the VALUES batches of _run_values) are
# written for a few row counts only (padded_size), the rows short of it bound as NULL
# and matching nothing: few distinct texts for the connection's statement cache, and
# one statement for a group commit's rows.  Cut at every power of two instead, 42
# accepted messages were three INSERTs a table, and each statement costs this thread a
# GIL hand-off while the reactor is busy (module docstring).  Padding is kept short:
# binding a NULL (as bytes) goes through sqlite3's adapter lookup, ~0.3 µs a value
# against ~0.06 for an int (measured), so a 42-row INSERT padded to 64 cost 2.5 times
# the unpadded one.
_MAX_CHUNK = 256


def padded_size(rows):
    """The row count a statement for `rows` rows (1 to 1024) is written for: a power of
    two up to 8, then a multiple of 8 up to 64, then of 64."""
    if rows <= 8:
        return 1 << (rows - 1).bit_length()
    step = 8 if rows <= 64 else 64
    return -(-rows // step) * step


_MESSAGE_COLUMNS = ("id, agency, sender, recipient, text, priority, reference, validity_s,"
                    " receipt, data_coding, esm_class, parts, created_at")
_PART_COLUMNS = "message_id, seq, priority, payload, not_before, route"
_FINGERPRINT_COLUMNS = "digest, recipient, sent_at, agency"
_INSERT_SQL = {}            # (verb, table, columns, rows) → statement text


def _insert_rows(conn, table, columns, rows, verb="INSERT"):
    """INSERT every row (tuples of len(columns), the first value never NULL) with as few
    statements as possible, in order."""
    width = columns.count(",") + 1
    for start in range(0, len(rows), _MAX_CHUNK):
        chunk = rows[start:start + _MAX_CHUNK]
        size = padded_size(len(chunk))
        sql = _INSERT_SQL.get((verb, table, columns, size))
        if sql is None:
            row = "(" + ", ".join("?" * width) + ")"
            sql = _INSERT_SQL[verb, table, columns, size] = (
                f"{verb} INTO {table} ({columns}) SELECT * FROM (VALUES "
                + ", ".join([row] * size) + ") WHERE column1 IS NOT NULL")
        params = [value for row in chunk for value in row]
        params.extend([None] * (width * (size - len(chunk))))
        conn.execute(sql, params)


def _rows_of(conn, sql, params):
    """The rows of a query that aggregates them into one JSON array (one step)."""
    return json.loads(conn.execute(sql, params).fetchone()[0] or "[]")


# -- accept --------------------------------------------------------------------------

def insert_messages(conn, items):
    """Grouped accept: items are (message_rows, part_rows, ids, idempotency, now,
    fingerprint_rows); one result per item, its ids.  A reused idempotency key raises for the whole group, and
    the writer then runs each item alone, so only that one fails."""
    message_rows = []
    part_rows = []
    fingerprint_rows = []
    for messages, parts, _ids, idempotency, now, fingerprints in items:
        if idempotency is not None:
            agency, key, response, *request_hash = idempotency
            _claim_idempotency_key(conn, agency, key, response, now, *request_hash)
        message_rows.extend(messages)
        part_rows.extend(parts)
        fingerprint_rows.extend(fingerprints)
    _insert_rows(conn, "messages", _MESSAGE_COLUMNS, message_rows)
    _insert_rows(conn, "parts", _PART_COLUMNS, part_rows)
    if fingerprint_rows:
        # OR IGNORE: the same text to the same citizen in the same instant is one row.
        _insert_rows(conn, "sent_fingerprints", _FINGERPRINT_COLUMNS, fingerprint_rows,
                     verb="INSERT OR IGNORE")
    return [item[2] for item in items]


def _claim_idempotency_key(conn, agency, key, response, now, request_hash=None):
    row = conn.execute("SELECT response, created_at, request_hash FROM idempotency"
                       " WHERE agency = ? AND key = ?", (agency, key)).fetchone()
    if row is not None and row[1] > now - IDEMPOTENCY_S:
        if different_request(row[2], request_hash):
            raise IdempotencyMismatch(agency, key)
        raise DuplicateIdempotencyKey(agency, key, row[0])
    conn.execute("INSERT OR REPLACE INTO idempotency"
                 " (agency, key, response, created_at, request_hash) VALUES (?, ?, ?, ?, ?)",
                 (agency, key, response, now, request_hash))


def different_request(stored_hash, request_hash):
    """Whether a key's first request and this one differ; a side without a hash (a key
    stored before hashes were kept, a caller that gives none) cannot tell: replay."""
    return stored_hash is not None and request_hash is not None and stored_hash != request_hash


# -- claim ---------------------------------------------------------------------------

_CLAIM_SQL = (
    "SELECT json_group_array(json_array(rowid, message_id, seq, parts, agency, sender,"
    " recipient, priority, data_coding, esm_class, payload, receipt, attempts, expires_at,"
    " unknowns, broadcast))"
    " FROM (SELECT p.rowid AS rowid, p.message_id AS message_id, p.seq AS seq,"
    "  m.parts AS parts, m.agency AS agency, m.sender AS sender, m.recipient AS recipient,"
    "  m.priority AS priority, m.data_coding AS data_coding, m.esm_class AS esm_class,"
    # A broadcast's part stores no payload: it is its broadcast's (stored once), read
    # once per claim (claim below), not per row here.
    "  CASE WHEN m.broadcast_id IS NULL THEN hex(p.payload) END AS payload,"
    "  m.receipt AS receipt, p.attempts AS attempts,"
    "  m.created_at + m.validity_s AS expires_at, p.unknowns AS unknowns,"
    "  m.broadcast_id AS broadcast"
    "  FROM parts p JOIN messages m ON m.id = p.message_id"
    # state = 'queued' written literally so that the partial index applies.
    "  WHERE p.state = 'queued' AND p.route IS ? AND p.priority = ? AND p.not_before <= ?"
    "  ORDER BY p.not_before, p.rowid LIMIT ? OFFSET ?)")
_SENDING_SQL = ("UPDATE parts SET state = 'sending', claimed_at = ?, owner = ?"
                " WHERE rowid IN (SELECT value FROM json_each(?))")
# A part released from its lease goes back to the queue as an unknown outcome: it may
# have reached the SMSC before its owner stopped (issue 6's bound counts it).
_RELEASE = ("UPDATE parts SET state = 'queued', attempts = attempts + 1,"
            " unknowns = unknowns + 1, error = :error"
            # state = 'sending' written literally so that the partial index applies.
            " WHERE state = 'sending'")
_EXPIRED_LEASES_SQL = _RELEASE + " AND claimed_at < :before AND owner IS NOT :owner"
_OWNERS_LEASES_SQL = _RELEASE + " AND (owner IS NULL OR owner = :owner)"
RELEASED_ERROR = f"{UNKNOWN_OUTCOME}: in flight when its gateway process stopped"


def release_leases(conn, owner):
    """At open: the parts leased by `owner` (this node's previous run, None: none
    known) and those claimed before leases existed go back to the queue, each counted
    as an unknown outcome.  The number released."""
    return conn.execute(_OWNERS_LEASES_SQL, {"owner": owner, "error": RELEASED_ERROR}).rowcount


_RENEW_SQL = ("UPDATE parts SET claimed_at = ?"
              # state = 'sending' written literally so that the partial index applies.
              " WHERE state = 'sending' AND owner = ?")


def renew_leases(conn, owner, now):
    """The parts `owner` holds are leased from `now`; the number renewed."""
    return conn.execute(_RENEW_SQL, (now, owner)).rowcount


def claim_plan(limit, priorities, shares, credit=None):
    """[(priority, most to take)] of the priorities with shares ({priority: weight}),
    splitting `limit` (what the strict ones, emergency, left) by weight, lowest
    priority first (its share is what it is guaranteed), then a second
    round (most None: whatever is still free) in which a share left unused goes to the
    others.  `credit` ({priority: fraction}, kept by the caller from claim to claim)
    carries the fractions of a share, so that small claims too give each its weight
    over time."""
    weighted = [p for p in priorities if p in shares]
    total = sum(shares[p] for p in weighted) or 1
    credit = {} if credit is None else credit
    plan = []
    # The lowest first: its share is the guarantee; the higher ones then take the rest.
    for priority in reversed(weighted):
        exact = limit * shares[priority] / total + credit.get(priority, 0.0)
        most = int(exact)
        credit[priority] = min(exact - most, 1.0)
        plan.append((priority, most))
    return plan + [(priority, None) for priority in weighted]


def claim(conn, limit, now, route, priorities, owner=None, leases_before=None,
          shares=None, credit=None):
    """Up to `limit` queued parts of `route` due by `now`, in the order of `priorities`
    (with `shares` {priority: weight} and their `credit`: see claim_plan), then oldest
    first; they become
    'sending', leased to `owner` from `now`.  With
    `leases_before`, parts of other owners claimed before it are taken back first,
    each counted as an unknown outcome.  Each as [message_id, seq, total, agency,
    sender, recipient, priority, data_coding, esm_class, payload, receipt, attempts,
    expires_at, unknowns]."""
    if leases_before is not None:
        taken = conn.execute(_EXPIRED_LEASES_SQL, {
            "before": leases_before, "owner": owner, "error": RELEASED_ERROR}).rowcount
        if taken:
            log.warning("took back %d parts whose claim lease expired (their process "
                        "stopped answering); counted as unknown outcomes", taken)
    claimed = []
    rowids = []
    # Priorities with no part due read nothing (one statement asks for all of them);
    # a weighted one due alone reads its rounds at once, its share uncapped: the rounds
    # would take the same rows, oldest first, in two statements and an empty one.
    due = _due_priorities(conn, route, now, priorities)
    exhausted = set(priorities) - due   # priorities that gave less than was asked
    alone = [p for p in due if p in (shares or {})]
    alone = alone[0] if len(alone) == 1 else None
    taken = {}                          # priority → rows read so far (skipped next time)
    payloads = {}                       # (broadcast id, seq) → its stored payload
    shares = shares or {}
    strict = [(priority, None) for priority in priorities if priority not in shares]
    for priority, most in _then(strict, lambda: claim_plan(limit - len(claimed),
                                                           priorities, shares, credit)):
        want = limit - len(claimed)
        if most is not None and priority != alone:
            want = min(want, most)
        if want <= 0 or priority in exhausted:
            continue
        # One index range per priority: only due parts are read, however many wait.
        # The rows are marked 'sending' at the end: a second round of one priority reads
        # past those its first round took (OFFSET; the transaction changed nothing yet).
        rows = _rows_of(conn, _CLAIM_SQL, (route, priority, now, want, taken.get(priority, 0)))
        taken[priority] = taken.get(priority, 0) + len(rows)
        if len(rows) < want:
            exhausted.add(priority)
        for row in rows:
            rowids.append(row[0])
            row[11] = bool(row[11])
            broadcast = row.pop()
            if broadcast is None:
                row[10] = bytes.fromhex(row[10])
            else:
                payload = payloads.get((broadcast, row[2]))
                if payload is None:
                    payload = payloads[broadcast, row[2]] = _broadcast_payload(
                        conn, broadcast, row[2])
                row[10] = with_concat_ref(payload, row[1]) if row[3] > 1 else payload
            claimed.append(row[1:])
        if len(claimed) >= limit:
            break
    if rowids:
        conn.execute(_SENDING_SQL, (now, owner, json.dumps(rowids)))
    if shares:
        claimed.sort(key=lambda row: -row[6])      # highest priority first, ages kept
    return claimed


_DUE_SQL = {}               # number of priorities → statement text


def _due_priorities(conn, route, now, priorities):
    """The set of `priorities` with a part of `route` due by `now` (a probe of the
    claim index each, in one statement)."""
    sql = _DUE_SQL.get(len(priorities))
    if sql is None:
        sql = _DUE_SQL[len(priorities)] = "SELECT " + ", ".join(
            ["EXISTS (SELECT 1 FROM parts WHERE state = 'queued' AND route IS ?"
             " AND priority = ? AND not_before <= ?)"] * len(priorities))
    found = conn.execute(sql, [value for priority in priorities
                               for value in (route, priority, now)]).fetchone()
    return {priority for priority, any_due in zip(priorities, found) if any_due}


def _broadcast_payload(conn, broadcast_id, seq):
    row = conn.execute("SELECT payload FROM broadcast_parts WHERE broadcast_id = ?"
                       " AND seq = ?", (broadcast_id, seq)).fetchone()
    return bytes(row[0]) if row is not None else b""


def _then(first, later):
    """The items of `first`, then those of later() (called once `first` is spent)."""
    yield from first
    yield from later()


def with_concat_ref(payload, message_id):
    """A broadcast part's stored payload with its recipient's own concatenation
    reference (octet 3 of the 8-bit-reference UDH `05 00 03 ref total seq`): parts of
    two broadcasts to one handset must not share one.  Derived from the message id, so
    it is stored nowhere and every resend carries the same."""
    if len(payload) < 6 or payload[:3] != b"\x05\x00\x03":
        return payload
    return payload[:3] + bytes((zlib.crc32(message_id.encode()) & 0xFF,)) + payload[4:]


# -- submit outcomes -----------------------------------------------------------------

def _batch(columns):
    """A json_each() subquery giving each element of a JSON array of arrays as a row."""
    picks = ", ".join(f"json_extract(value, '$[{index}]') AS {name}"
                      for index, name in enumerate(columns))
    return f"(SELECT {picks} FROM json_each(?))"


# The drain's per-part statements (submit outcomes, receipts) take their rows as bound
# values instead: json.dumps() on the writer thread (holding the GIL the reactor needs)
# and a json_extract() per column and row in SQLite cost ~5 µs of writer CPU per part
# and statement (measured on the submitted UPDATE: 49 -> 44 µs a part, trigger work
# included).  Still one statement per batch: a VALUES list padded with NULL rows
# (which match nothing) to a padded_size, cut in chunks that bind at most ~5,000 values.
_VALUES_CHUNK = 1024
_VALUES_SQL = {}            # (template, size) → statement text


def _values(columns):
    """A template's batch subquery for rows of `columns`: filled by _run_values."""
    picks = ", ".join(f"column{index} AS {name}" for index, name in enumerate(columns, 1))
    return f"(SELECT {picks} FROM (VALUES {{values}}))"


def _run_values(conn, template, width, rows, before=(), after=()):
    """Execute `template` (its batch made by _values) over `rows` (tuples of `width`),
    a chunk at a time, between the parameters before and after it: the cursors."""
    for start in range(0, len(rows), _VALUES_CHUNK):
        chunk = rows[start:start + _VALUES_CHUNK]
        size = padded_size(len(chunk))
        sql = _VALUES_SQL.get((template, size))
        if sql is None:
            row = "(" + ", ".join("?" * width) + ")"
            sql = _VALUES_SQL[template, size] = template.replace(
                "{values}", ", ".join([row] * size))
        params = list(before)
        for item in chunk:
            params.extend(item)
        params.extend([None] * (width * (size - len(chunk))))
        params.extend(after)
        yield conn.execute(sql, params)


def _update_values(conn, template, width, rows, before=(), after=()):
    """_run_values for an UPDATE: the number of rows it changed."""
    return sum(cursor.rowcount
               for cursor in _run_values(conn, template, width, rows, before, after))


def _rows_of_values(conn, template, width, rows, before=(), after=()):
    """_run_values for a query aggregating its rows into one JSON array: the rows."""
    found = []
    for cursor in _run_values(conn, template, width, rows, before, after):
        found.extend(json.loads(cursor.fetchone()[0] or "[]"))
    return found


# An outcome changes only a part its store holds: 'sending', leased to that store's
# owner (the last parameter).  A part whose lease another store took back is that
# store's to send again and record; a late outcome of the first must not undo it.
_HELD = " AND parts.state = 'sending' AND parts.owner = ?"
_SUBMITTED_SQL = (
    "UPDATE parts SET state = 'submitted', operator = j.operator, smsc_id = j.smsc_id,"
    " receipt_key = j.receipt_key, changed_at = ?"
    f" FROM {_values(('message_id', 'seq', 'operator', 'smsc_id', 'receipt_key'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq" + _HELD)
_REQUEUE_SQL = (
    "UPDATE parts SET state = 'queued', not_before = j.not_before,"
    " attempts = attempts + j.counted, error = COALESCE(j.error, parts.error),"
    " unknowns = unknowns + j.unknown"
    f" FROM {_batch(('message_id', 'seq', 'not_before', 'counted', 'error', 'unknown'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq" + _HELD)
# Receipts end submitted parts (no lease); nothing ever leaves a final state.
_ENDED_SQL = (
    "UPDATE parts SET state = j.state,"
    " error = CASE WHEN j.state = 'delivered' THEN parts.error ELSE j.error END,"
    " operator = COALESCE(j.operator, parts.operator), changed_at = ?"
    f" FROM {_values(('message_id', 'seq', 'state', 'error', 'operator'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq"
    f" AND parts.state NOT IN {schema.FINAL_STATES_SQL}")
_OUTCOME_ENDED_SQL = _ENDED_SQL + _HELD
# An SMSC answers submit_sm when it takes the message, so a receipt overtakes its
# submit_sm_resp by the response's transit and our write delay: seconds, never this.
RECEIPT_LEAD_S = 600.0
_PENDING_FOR_SQL = (
    "SELECT json_group_array(json_array(pr.rowid, j.message_id, j.seq, pr.state,"
    " pr.error))"
    f" FROM {_values(('message_id', 'seq', 'key', 'operator', 'alone'))} AS j"
    # Exactly this key, kept by this operator's receipts read in its id base (see
    # receipts.py), or kept unread by an `auto` operator still learning when the key
    # can be read only raw (alone), and recent enough to be for this submission.
    " JOIN pending_receipts pr ON pr.key = j.key AND pr.operator = j.operator"
    " AND (pr.id_base IN (" + ", ".join(f"'{base}'" for base in ID_BASES) + ")"
    "  OR (pr.id_base IS NULL AND j.alone = 1))"
    " AND pr.received_at >= ?")


def record(conn, outcomes, now, learning=frozenset(), owner=None):
    """Apply PartOutcomes in order to the parts `owner` holds; the number that changed
    a part (the others named a part no longer held, finished, or unknown).  learning:
    the `auto` operators whose id base is not known yet (receipts.py); a receipt of
    theirs kept unread under exactly a submitted key applies too when that key can be
    read only raw (receipt_ids.read_only_raw)."""
    # Outcomes of distinct parts do not depend on each other's order, so each run of
    # them is applied by kind; a part named again starts the next run.
    changed = 0
    run, parts = [], set()
    for o in outcomes:
        part = (o.message_id, o.seq)
        if part in parts:
            changed += _record_run(conn, run, now, learning, owner)
            run, parts = [], set()
        run.append(o)
        parts.add(part)
    return changed + _record_run(conn, run, now, learning, owner) if run else changed


def _record_run(conn, outcomes, now, learning, owner):
    submitted, requeued, ended = [], [], []
    probes = []
    for o in outcomes:
        if o.kind == "submitted":
            key = _receipt_key(o)
            submitted.append((o.message_id, o.seq, o.operator, o.smsc_id, key))
            if key is not None:
                alone = o.operator in learning and read_only_raw(key)
                probes.append((o.message_id, o.seq, key, o.operator, 1 if alone else 0))
        elif o.kind == "requeue":
            requeued.append((o.message_id, o.seq,
                             now if o.not_before is None else o.not_before,
                             1 if o.count_attempt else 0, o.error,
                             1 if o.unknown else 0))
        else:
            ended.append((o.message_id, o.seq, o.kind, o.error or o.kind, o.operator))
    changed = 0
    if submitted:
        changed += _update_values(conn, _SUBMITTED_SQL, 5, submitted, (now,), (owner,))
        if probes:
            _apply_kept_receipts(conn, probes, now)
    if requeued:
        changed += conn.execute(_REQUEUE_SQL, (json.dumps(requeued), owner)).rowcount
    if ended:
        changed += _update_values(conn, _OUTCOME_ENDED_SQL, 5, ended, (now,), (owner,))
    if changed < len(outcomes):
        _warn_unapplied(conn, outcomes, changed)
    return changed


def _end_parts(conn, ends, now):
    """(message_id, seq, state, error, operator) for parts reaching a final state;
    the number changed (a part already final keeps its state)."""
    return _update_values(conn, _ENDED_SQL, 5, ends, (now,))


def _apply_kept_receipts(conn, probes, now):
    """Receipts that overtook their submit_sm_resp, kept until now: each part is ended
    by the first final one that came for it; all that came for it are used up."""
    used, ends, ended = [], [], set()
    for rowid, message_id, seq, state, error in sorted(_rows_of_values(
            conn, _PENDING_FOR_SQL, 5, probes, after=(now - RECEIPT_LEAD_S,))):
        used.append(rowid)
        if (message_id, seq) not in ended:
            ended.add((message_id, seq))
            ends.append((message_id, seq, state, error or state, None))
    if ends:
        _end_parts(conn, ends, now)
        conn.execute("DELETE FROM pending_receipts WHERE rowid IN"
                     " (SELECT value FROM json_each(?))", (json.dumps(used),))


def _receipt_key(o):
    """The key a submitted part's receipts find it under: its SMSC id, normal form."""
    if not o.smsc_id:
        return None         # the SMSC gave no id: no receipt can ever be matched
    try:
        return normal_id(o.smsc_id)
    except ValueError as e:
        # An id we cannot index must not undo the other outcomes of this batch.
        log.warning("part %s/%d: SMSC id not indexable for receipts: %s",
                    o.message_id, o.seq, e)
        return None


def _warn_unapplied(conn, outcomes, changed):
    """Some outcomes (of distinct parts) changed nothing (rare): name the parts that do
    not exist, and count the others, whose parts this store no longer held."""
    pairs = json.dumps([(o.message_id, o.seq) for o in outcomes])
    known = {tuple(row) for row in _rows_of(
        conn, "SELECT json_group_array(json_array(p.message_id, p.seq))"
              f" FROM {_batch(('message_id', 'seq'))} AS j"
              " JOIN parts p ON p.message_id = j.message_id AND p.seq = j.seq", (pairs,))}
    unknown = 0
    for o in outcomes:
        if (o.message_id, o.seq) not in known:
            unknown += 1
            log.warning("outcome %s for unknown part %s/%d ignored", o.kind,
                        o.message_id, o.seq)
    dropped = len(outcomes) - changed - unknown
    if dropped:
        log.warning("dropped %d of %d outcomes: their parts are no longer this "
                    "process's (their claim lease was taken back and another process "
                    "sends them again, or they had ended)", dropped, len(outcomes))


# -- housekeeping --------------------------------------------------------------------

# Messages that ended: a final status, or 'submitted' when no receipt was asked for.
# A message ends after it is created: one that ended before :older was created before
# it, and is found per agency in messages_agency_created (its agencies one seek each,
# the recursive `agencies`), no index of done_at kept for this (schema migration 22).
# Each round reads there the messages created before :older that have not ended yet
# too: a message ends by validity + a day (housekeeping's expiries).
_ENDED_BEFORE = (
    "WITH RECURSIVE agencies (agency) AS (SELECT min(agency) FROM messages"
    "  UNION ALL SELECT (SELECT min(agency) FROM messages WHERE agency > a.agency)"
    "  FROM agencies a WHERE a.agency IS NOT NULL)"
    " SELECT m.id FROM agencies a JOIN messages m ON m.agency = a.agency"
    " AND m.created_at < :older WHERE m.done_at < :older"
    f" AND m.status IN {schema.FINAL_STATES_SQL}"
    " UNION ALL SELECT id FROM messages WHERE status = 'submitted' AND receipt = 0"
    " AND created_at < :older AND submitted_at < :older")


# Records purged by age alone: (kind, table, time column).
_AGED = (("audit", "audit", "at"), ("inbound", "inbound", "received_at"),
         ("inbox", "inbox", "received_at"), ("fingerprints", "sent_fingerprints", "sent_at"),
         ("ussd", "ussd_dialogs", "ended_at"))


def purge(conn, older_than, idempotency_before, pending_before, audit_before=None,
          inbound_before=None, inbox_before=None, fingerprints_before=None,
          ussd_before=None, audit_gate=None):
    """audit_gate: the AuditPurgeGate of `conn`, opened for the audit DELETE only (the
    table's trigger refuses every other)."""
    ended = {"older": older_than}
    removed = {}
    removed["parts"] = conn.execute(
        f"DELETE FROM parts WHERE message_id IN ({_ENDED_BEFORE})", ended).rowcount
    removed["messages"] = conn.execute(
        f"DELETE FROM messages WHERE id IN ({_ENDED_BEFORE})", ended).rowcount
    removed["idempotency"] = conn.execute(
        "DELETE FROM idempotency WHERE created_at < ?", (idempotency_before,)).rowcount
    removed["pending_receipts"] = conn.execute(
        "DELETE FROM pending_receipts WHERE received_at < ?", (pending_before,)).rowcount
    cutoffs = {"audit": audit_before, "inbound": inbound_before, "inbox": inbox_before,
               "fingerprints": fingerprints_before, "ussd": ussd_before}
    for kind, table, column in _AGED:
        before = cutoffs[kind]
        if before is None or not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (table,)).fetchone():
            continue
        gate = audit_gate.purging(before) if kind == "audit" and audit_gate \
            else contextlib.nullcontext()
        with gate:
            removed[kind] = conn.execute(
                f"DELETE FROM {table} WHERE {column} < ?", (before,)).rowcount
    return removed


def expire_unreceipted(conn, now, grace_s):
    return conn.execute(
        "UPDATE parts SET state = 'expired', changed_at = :now,"
        " error = 'no delivery receipt by the end of the validity period'"
        " WHERE state = 'submitted' AND message_id IN ("
        "  SELECT id FROM messages WHERE status = 'submitted' AND receipt = 1"
        "  AND created_at < :now - :grace AND created_at + validity_s + :grace < :now)",
        {"now": now, "grace": grace_s}).rowcount


# The dispatcher's own words for a part it held past its validity (dispatch/dispatcher.py).
UNSENT_ERROR = "validity period passed before submission"


def expire_unsent(conn, now):
    """Queued parts whose message's validity has ended become 'expired': on a route
    that never binds nothing else would end them.  Parts being sent are left to the
    dispatcher.  Reads only queued parts (the claim's partial index)."""
    return conn.execute(
        "UPDATE parts SET state = 'expired', changed_at = :now, error = :error"
        " FROM messages m WHERE parts.state = 'queued' AND m.id = parts.message_id"
        " AND m.created_at + m.validity_s <= :now",
        {"now": now, "error": UNSENT_ERROR}).rowcount


# -- the 4040 check ----------------------------------------------------------------------

def find_sent(conn, digests, citizen, since):
    """The latest of `digests` sent to `citizen` since `since` (a primary key seek per
    digest), else one sent to anyone (a seek of the key's first column): SentMatch|None."""
    if not digests:
        return None
    marks = ", ".join("?" * len(digests))
    row = conn.execute(
        f"SELECT agency, sent_at FROM sent_fingerprints WHERE digest IN ({marks})"
        " AND recipient = ? AND sent_at >= ? ORDER BY sent_at DESC LIMIT 1",
        (*digests, citizen, since)).fetchone()
    if row is not None:
        return SentMatch(row[0], row[1], True)
    row = conn.execute(
        f"SELECT agency, sent_at FROM sent_fingerprints WHERE digest IN ({marks})"
        " AND sent_at >= ? LIMIT 1", (*digests, since)).fetchone()
    return SentMatch(row[0], row[1], False) if row is not None else None


# -- inbox -----------------------------------------------------------------------------

_INBOX_COLUMNS = ("seq, id, agency, number, citizen, text, channel, received_at,"
                  " in_reply_to, operator, partial")


def inbox_message(row):
    seq, id_, agency, number, citizen, text, channel, received_at, in_reply_to, \
        operator, partial = row
    return InboxMessage(seq, id_, agency, number, citizen, text, channel, received_at,
                        in_reply_to, operator, bool(partial))


def file_inbox(conn, entries, ids):
    """Insert inbox entries (ids: one new id each) → [(InboxMessage, new)], in order.
    An entry whose source_key is filed already is not filed again: the one filed then
    is returned, with new False.  in_reply_to: the entry's, else the latest message the agency
    sent from that number to that citizen."""
    filed = []
    for entry, new_id in zip(entries, ids):
        in_reply_to = entry.in_reply_to            # a partner app names what it answers
        if in_reply_to is None and entry.agency is not None:
            row = conn.execute(
                "SELECT id FROM messages WHERE recipient = ? AND agency = ? AND sender = ?"
                " ORDER BY created_at DESC LIMIT 1",
                (entry.citizen, entry.agency, entry.number)).fetchone()
            in_reply_to = row[0] if row else None
        cursor = conn.execute(
            "INSERT INTO inbox (id, agency, number, citizen, text, channel, operator,"
            " received_at, in_reply_to, partial, source_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_key) DO NOTHING",
            (new_id, entry.agency, entry.number, entry.citizen, entry.text, entry.channel,
             entry.operator, entry.received_at, in_reply_to, int(entry.partial),
             entry.source_key))
        if cursor.rowcount:
            where, key = "seq = ?", cursor.lastrowid
        else:
            where, key = "source_key = ?", entry.source_key
        filed.append((inbox_message(conn.execute(
            f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE {where}", (key,)).fetchone()),
            bool(cursor.rowcount)))
    return filed


def list_inbox(conn, agency, after, limit):
    """An inbox in filing order from after `after` (a seq; 0: the start); agency None
    lists the unrouted box."""
    if agency is None:
        rows = conn.execute(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE agency IS NULL"
                            " AND seq > ? ORDER BY seq LIMIT ?", (after, limit))
    else:
        rows = conn.execute(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE agency = ?"
                            " AND seq > ? ORDER BY seq LIMIT ?", (agency, after, limit))
    return [inbox_message(row) for row in rows]


def record_ussd_dialogs(conn, records):
    """One row per ended USSD dialog (a group of them, one statement)."""
    conn.executemany(
        "INSERT OR IGNORE INTO ussd_dialogs (id, agency, operator, msisdn, code,"
        " started_at, ended_at, steps, end_reason, last_state, tracking)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.id, r.agency, r.operator, r.msisdn, r.code, r.started_at, r.ended_at, r.steps,
          r.end_reason, r.last_state, r.tracking) for r in records])
    return [None] * len(records)
