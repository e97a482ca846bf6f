"""The store's writes, run on the writer thread, each over a whole batch.

Every SQL statement costs the writer thread a GIL hand-off while the reactor thread is
busy (~100 µs measured, against ~1 µs idle), so the hot writes touch a batch of rows
with a fixed handful of statements: rows go in as one multi-row VALUES list or one JSON
array read by json_each(), and come out as one JSON array.  A message's counters and
status follow its parts through the triggers of schema.py.
"""

import json
import logging

from gateway.smpp.receipt import match_keys
from gateway.store import schema

log = logging.getLogger("payam.store")

IDEMPOTENCY_S = 24 * 3600
_FINAL = schema.FINAL_STATES

# Multi-row INSERTs are cut into chunks of power-of-two sizes: few distinct statement
# texts (the connection caches prepared statements), few bound variables per statement.
_MAX_CHUNK = 256

_MESSAGE_COLUMNS = ("id, agency, sender, recipient, text, priority, reference, validity_s,"
                    " receipt, data_coding, esm_class, parts, created_at")
_PART_COLUMNS = "message_id, seq, priority, payload, not_before, route"


def _insert_rows(conn, table, columns, rows):
    """INSERT every row (tuples of len(columns)) with as few statements as possible."""
    width = columns.count(",") + 1
    placeholder = "(" + ", ".join("?" * width) + ")"
    start = 0
    while start < len(rows):
        size = min(_MAX_CHUNK, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start:start + size]
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES "
                     + ", ".join([placeholder] * size),
                     [value for row in chunk for value in row])
        start += size


def _rows_of(conn, sql, params):
    """The rows of a query that aggregates them into one JSON array (one step)."""
    return json.loads(conn.execute(sql, params).fetchone()[0] or "[]")


# -- accept --------------------------------------------------------------------------

def insert_messages(conn, items):
    """Grouped accept: items are (message_rows, part_rows, ids, idempotency, now); one
    result per item, its ids.  A reused idempotency key raises for the whole group, and
    the writer then runs each item alone, so only that one fails."""
    message_rows = []
    part_rows = []
    for messages, parts, _ids, idempotency, now in items:
        if idempotency is not None:
            _claim_idempotency_key(conn, *idempotency, now)
        message_rows.extend(messages)
        part_rows.extend(parts)
    _insert_rows(conn, "messages", _MESSAGE_COLUMNS, message_rows)
    _insert_rows(conn, "parts", _PART_COLUMNS, part_rows)
    return [item[2] for item in items]


class DuplicateIdempotencyKey(Exception):
    """The agency already used this idempotency key within 24 h; nothing was stored."""

    def __init__(self, agency, key, response):
        super().__init__(f"idempotency key already used by agency {agency!r}")
        self.agency = agency
        self.key = key
        self.response = response


def _claim_idempotency_key(conn, agency, key, response, now):
    row = conn.execute("SELECT response, created_at FROM idempotency"
                       " WHERE agency = ? AND key = ?", (agency, key)).fetchone()
    if row is not None and row[1] > now - IDEMPOTENCY_S:
        raise DuplicateIdempotencyKey(agency, key, row[0])
    conn.execute("INSERT OR REPLACE INTO idempotency (agency, key, response, created_at)"
                 " VALUES (?, ?, ?, ?)", (agency, key, response, now))


# -- claim ---------------------------------------------------------------------------

_CLAIM_SQL = (
    "SELECT json_group_array(json_array(rowid, message_id, seq, parts, agency, sender,"
    " recipient, priority, data_coding, esm_class, payload, receipt, attempts, expires_at,"
    " unknowns))"
    " FROM (SELECT p.rowid AS rowid, p.message_id AS message_id, p.seq AS seq,"
    "  m.parts AS parts, m.agency AS agency, m.sender AS sender, m.recipient AS recipient,"
    "  m.priority AS priority, m.data_coding AS data_coding, m.esm_class AS esm_class,"
    "  hex(p.payload) AS payload, m.receipt AS receipt, p.attempts AS attempts,"
    "  m.created_at + m.validity_s AS expires_at, p.unknowns AS unknowns"
    "  FROM parts p JOIN messages m ON m.id = p.message_id"
    # state = 'queued' written literally so that the partial index applies.
    "  WHERE p.state = 'queued' AND p.route IS ? AND p.priority = ? AND p.not_before <= ?"
    "  ORDER BY p.not_before, p.rowid LIMIT ?)")
_SENDING_SQL = ("UPDATE parts SET state = 'sending'"
                " WHERE rowid IN (SELECT value FROM json_each(?))")


def claim(conn, limit, now, route, priorities):
    """Up to `limit` queued parts of `route` due by `now`, in the order of `priorities`,
    then oldest first; they become 'sending'.  Each as [message_id, seq, total, agency,
    sender, recipient, priority, data_coding, esm_class, payload, receipt, attempts,
    expires_at, unknowns]."""
    claimed = []
    rowids = []
    for priority in priorities:
        # One index range per priority: only due parts are read, however many wait.
        for row in _rows_of(conn, _CLAIM_SQL, (route, priority, now, limit - len(claimed))):
            rowids.append(row[0])
            row[10] = bytes.fromhex(row[10])
            row[11] = bool(row[11])
            claimed.append(row[1:])
        if len(claimed) >= limit:
            break
    if rowids:
        conn.execute(_SENDING_SQL, (json.dumps(rowids),))
    return claimed


# -- submit outcomes -----------------------------------------------------------------

def _batch(columns):
    """A json_each() subquery giving each element of a JSON array of arrays as a row."""
    picks = ", ".join(f"json_extract(value, '$[{index}]') AS {name}"
                      for index, name in enumerate(columns))
    return f"(SELECT {picks} FROM json_each(?))"


# Each UPDATE changes only parts in a state the change may leave: submitted / requeue
# only from queued or sending, and nothing ever leaves a final state.
_SUBMITTED_SQL = (
    "UPDATE parts SET state = 'submitted', operator = j.operator, smsc_id = j.smsc_id,"
    " receipt_key = j.receipt_key, changed_at = ?"
    f" FROM {_batch(('message_id', 'seq', 'operator', 'smsc_id', 'receipt_key'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq"
    " AND parts.state IN ('queued', 'sending')")
_REQUEUE_SQL = (
    "UPDATE parts SET state = 'queued', not_before = j.not_before,"
    " attempts = attempts + j.counted, error = COALESCE(j.error, parts.error),"
    " unknowns = unknowns + j.unknown"
    f" FROM {_batch(('message_id', 'seq', 'not_before', 'counted', 'error', 'unknown'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq"
    " AND parts.state IN ('queued', 'sending')")
_ENDED_SQL = (
    "UPDATE parts SET state = j.state,"
    " error = CASE WHEN j.state = 'delivered' THEN parts.error ELSE j.error END,"
    " operator = COALESCE(j.operator, parts.operator), changed_at = ?"
    f" FROM {_batch(('message_id', 'seq', 'state', 'error', 'operator'))} AS j"
    " WHERE parts.message_id = j.message_id AND parts.seq = j.seq"
    f" AND parts.state NOT IN {schema.FINAL_STATES_SQL}")
_PENDING_FOR_SQL = (
    "SELECT json_group_array(json_array(pr.rowid, j.message_id, j.seq, pr.state,"
    " pr.error))"
    f" FROM {_batch(('message_id', 'seq', 'key', 'operator'))} AS j"
    " JOIN pending_receipts pr ON pr.key = j.key"
    # Another operator's receipt with a colliding id is not ours; one whose operator
    # is unknown may be.
    " AND (pr.operator = j.operator OR pr.operator IS NULL OR j.operator IS NULL)")


def record(conn, outcomes, now):
    """Apply PartOutcomes in order; the number that changed a part (the others named a
    finished or unknown part)."""
    # Outcomes of distinct parts do not depend on each other's order, so each run of
    # them is applied by kind; a part named again starts the next run.
    changed = 0
    run, parts = [], set()
    for o in outcomes:
        part = (o.message_id, o.seq)
        if part in parts:
            changed += _record_run(conn, run, now)
            run, parts = [], set()
        run.append(o)
        parts.add(part)
    return changed + _record_run(conn, run, now) if run else changed


def _record_run(conn, outcomes, now):
    submitted, requeued, ended = [], [], []
    probes = []
    for o in outcomes:
        if o.kind == "submitted":
            keys = _receipt_keys(o)
            submitted.append((o.message_id, o.seq, o.operator, o.smsc_id,
                              keys[0] if keys else None))
            probes.extend((o.message_id, o.seq, key, o.operator) for key in keys or ())
        elif o.kind == "requeue":
            requeued.append((o.message_id, o.seq,
                             now if o.not_before is None else o.not_before,
                             1 if o.count_attempt else 0, o.error,
                             1 if o.unknown else 0))
        else:
            ended.append((o.message_id, o.seq, o.kind, o.error or o.kind, o.operator))
    changed = 0
    if submitted:
        changed += conn.execute(_SUBMITTED_SQL, (now, json.dumps(submitted))).rowcount
        # Receipts that overtook their submit_sm_resp (rare): applied now, in arrival
        # order, each to one part only (a hex and a decimal id may both match it).
        applied = set()
        for rowid, message_id, seq, state, error in sorted(_rows_of(
                conn, _PENDING_FOR_SQL, (json.dumps(probes),))):
            if rowid in applied:
                continue
            applied.add(rowid)
            _end_parts(conn, [(message_id, seq, state, error, None)], now)
            conn.execute("DELETE FROM pending_receipts WHERE rowid = ?", (rowid,))
    if requeued:
        changed += conn.execute(_REQUEUE_SQL, (json.dumps(requeued),)).rowcount
    if ended:
        changed += _end_parts(conn, ended, now)
    if changed < len(outcomes):
        _warn_unknown(conn, outcomes)
    return changed


def _end_parts(conn, ends, now):
    """(message_id, seq, state, error, operator) for parts reaching a final state;
    the number changed (a part already final keeps its state)."""
    return conn.execute(_ENDED_SQL, (now, json.dumps(ends))).rowcount


def _receipt_keys(o):
    """The keys a receipt for this submitted part may carry its SMSC id under."""
    if not o.smsc_id:
        return None         # the SMSC gave no id: no receipt can ever be matched
    try:
        return match_keys(o.smsc_id)
    except ValueError as e:
        # An id we cannot index must not undo the other outcomes of this batch.
        log.warning("part %s/%d: SMSC id not indexable for receipts: %s",
                    o.message_id, o.seq, e)
        return None


def _warn_unknown(conn, outcomes):
    """Some outcomes changed nothing (rare): say so for parts that do not exist."""
    pairs = json.dumps([(o.message_id, o.seq) for o in outcomes])
    known = {tuple(row) for row in _rows_of(
        conn, "SELECT json_group_array(json_array(p.message_id, p.seq))"
              f" FROM {_batch(('message_id', 'seq'))} AS j"
              " JOIN parts p ON p.message_id = j.message_id AND p.seq = j.seq", (pairs,))}
    for o in outcomes:
        if (o.message_id, o.seq) not in known:
            log.warning("outcome %s for unknown part %s/%d ignored", o.kind,
                        o.message_id, o.seq)


# -- receipts ------------------------------------------------------------------------

_CANDIDATES_SQL = (
    "SELECT json_group_array(json_array(j.receipt, j.rank, rk.rowid, rk.message_id,"
    " rk.seq, rk.operator))"
    f" FROM {_batch(('receipt', 'rank', 'key'))} AS j"
    " JOIN receipt_keys rk ON rk.key = j.key")
_PENDING_SQL = (
    "INSERT INTO pending_receipts (key, operator, state, error, received_at)"
    f" SELECT key, operator, state, error, ? FROM {_batch(('key', 'operator', 'state', 'error'))}")


def apply_receipts(conn, receipts, now):
    """Receipts [(operator, keys, state, error)] → [matched?].  A matched final state
    ends its part (a part already final keeps its state); an unmatched final one waits
    in pending_receipts for the submit outcome that brings its id."""
    probe = [(index, rank, key) for index, (_op, keys, _s, _e) in enumerate(receipts)
             for rank, key in enumerate(keys)]
    candidates = {}
    for index, rank, rowid, message_id, seq, operator in _rows_of(
            conn, _CANDIDATES_SQL, (json.dumps(probe),)):
        candidates.setdefault(index, []).append((rank, -rowid, operator, message_id, seq))
    ends, pending, matched = [], [], []
    seen = set()
    for index, (operator, keys, state, error) in enumerate(receipts):
        part = _best_part(candidates.get(index), operator)
        matched.append(part is not None)
        if state not in _FINAL:
            continue        # ENROUTE, ACCEPTD, ...: nothing final to record
        if part is None:
            pending.append((keys[0], operator, state, error))
        elif part not in seen:          # the first final receipt of a part wins
            seen.add(part)
            ends.append((*part, state, error or state, None))
    if ends:
        _end_parts(conn, ends, now)
    if pending:
        conn.execute(_PENDING_SQL, (now, json.dumps(pending)))
    return matched


def _best_part(candidates, operator):
    """(message_id, seq) of the best match: the operator's own ids before others',
    then the earliest key (raw form first), then the newest submission."""
    if not candidates:
        return None
    candidates.sort()
    for _rank, _rowid, key_operator, message_id, seq in candidates:
        if key_operator == operator:
            return message_id, seq
    return candidates[0][3], candidates[0][4]


# -- housekeeping --------------------------------------------------------------------

# Messages that ended: a final status, or 'submitted' when no receipt was asked for.
_ENDED_BEFORE = (
    "SELECT id FROM messages WHERE done_at < :older"
    f" AND status IN {schema.FINAL_STATES_SQL}"
    " UNION ALL SELECT id FROM messages WHERE status = 'submitted' AND receipt = 0"
    " AND created_at < :older AND submitted_at < :older")


# Records purged by age alone: (kind, table, time column).  The inbox table comes with
# the national inbox; until a store has one, its retention has nothing to purge.
_AGED = (("audit", "audit", "at"), ("inbound", "inbound", "received_at"),
         ("inbox", "inbox", "received_at"))


def purge(conn, older_than, idempotency_before, pending_before, audit_before=None,
          inbound_before=None, inbox_before=None):
    ended = {"older": older_than}
    removed = {}
    for table in ("receipt_keys", "parts"):
        removed[table] = conn.execute(
            f"DELETE FROM {table} WHERE message_id IN ({_ENDED_BEFORE})", ended).rowcount
    removed["messages"] = conn.execute(
        f"DELETE FROM messages WHERE id IN ({_ENDED_BEFORE})", ended).rowcount
    removed["idempotency"] = conn.execute(
        "DELETE FROM idempotency WHERE created_at < ?", (idempotency_before,)).rowcount
    removed["pending_receipts"] = conn.execute(
        "DELETE FROM pending_receipts WHERE received_at < ?", (pending_before,)).rowcount
    cutoffs = {"audit": audit_before, "inbound": inbound_before, "inbox": inbox_before}
    for kind, table, column in _AGED:
        before = cutoffs[kind]
        if before is None or not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (table,)).fetchone():
            continue
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
