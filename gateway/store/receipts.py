"""Delivery receipts on the writer thread: which part each one reaches, per batch.

A receipt reaches a part only when
- the part was carried by the receipt's operator (SMSCs hand out sequential ids, so
  ids collide across operators);
- the receipt's id, read in the operator's id base (`receipt_ids`: raw, dec or hex, see
  gateway.receipt_ids), is exactly the normal form of the part's submit_sm_resp id:
  one key per receipt, never a guess among bases;
- the part is still 'submitted': a final part keeps its state, and a receipt that meets
  only final parts is kept, since it may be the early receipt of a part that reuses
  the id;
- the times fit: the receipt came at most RECEIPT_LAG_S after its message's validity
  ended, and at most RECEIPT_LEAD_S before the part's submit outcome.
A final receipt that reaches no part is kept (pending_receipts) under the key it
waits for; recording the submit outcome that brings that key applies it
(operations.record).

`auto` operators, until their base is known:
- A receipt whose id is not a decimal number of at most 64 digits (it has a letter or
  another non-digit: the built-in simulator's hex ids, UUIDs, ...) is applied at once,
  as itself (raw): only raw can name a part filed under that id (no `dec` receipt
  writes it, and a resp id that is not decimal rules out `hex` for the operator; see
  gateway.receipt_ids.read_only_raw).  All the rules above still hold; if it ends
  no part now it is kept under its own id (id_base NULL), and the submitted outcome
  that brings exactly that id applies it (operations.record, for operators in the
  writer's `learning` set only).  Each one that ends a part is a vote for raw at once.
- Any other receipt (all decimal digits: raw, dec and hex may all read it) reaches
  nothing and is kept under its own id (id_base NULL).  It is judged once its
  operator's response_timeout_s and MATURE_MARGIN_S old (MATURE_S, 60 s, by default),
  when the submit outcome it may have overtaken is surely recorded (judged at once, an
  early receipt whose own part is not filed yet would meet only the older part that
  its translation names): meeting a part under exactly one base, and under no other
  (final parts count), it is a vote for that base.
LEARN_VOTES votes for one base, with at most one stray vote in STRAY_SHARE for the
others, fix it: it is written to meta (`receipt_ids:<operator>`, kept across restarts)
and the receipts kept meanwhile are read under it.  The base is judged from receipts
only, never from the operator's resp ids alone: one malformed resp id (salvaged, issue
6 item 3) must not decide how every decimal receipt is read.

Each batch costs a fixed handful of statements (see operations.py for why).
"""

import json
import logging
from typing import NamedTuple

from gateway.receipt_ids import ID_BASES, read_only_raw, receipt_key
from gateway.store import schema
# The batch helpers, the part-ending UPDATE and the lead bound (also applied when a
# submit outcome meets its kept receipts) are shared with the other writes.
from gateway.store.operations import (RECEIPT_LEAD_S, _batch, _end_parts, _rows_of,
                                      _rows_of_values, _values)

log = logging.getLogger("payam.store.receipts")

# An SMSC stops trying at the validity's end; its receipt may lag (housekeeping gives
# receipts the same day before a part expires).
RECEIPT_LAG_S = 86400.0
# A receipt overtakes its submit_sm_resp by less than the operator's response_timeout_s
# (a later response is not taken): once older than that and a margin (the session's
# sweep, the dispatcher's batching of outcomes), its own part is filed if it ever is.
# The outcome is then queued to the writer before the judging, which the writer runs
# in order.  MATURE_S: for an operator whose timeout is not given (the default 30 s).
MATURE_MARGIN_S = 30.0
MATURE_S = 30.0 + MATURE_MARGIN_S
LEARN_VOTES = 10
STRAY_SHARE = 10
UNDECIDED_VOTES = 200       # votes after which an undecided operator is reported
# Kept receipts judged per operator: in a batch of receipts, and in the inbound
# router's round after an operator's last receipt (bounded work per transaction).
JUDGED_PER_BATCH = 500
JUDGED_PER_ROUND = 20_000

_FINAL = frozenset(schema.FINAL_STATES)
_UNREADABLE = "-"           # id_base of a receipt whose id cannot be read in its base


def mature_after(response_timeout_s):
    """How old an operator's kept receipt must be to be judged (see MATURE_MARGIN_S)."""
    return float(response_timeout_s) + MATURE_MARGIN_S


def _base_key(operator):
    return f"receipt_ids:{operator}"


def _votes_key(operator):
    return f"receipt_ids_votes:{operator}"


class Applied(NamedTuple):
    """What apply_receipts did, for the reactor thread to take in after the commit."""
    matched: list      # per receipt: whether it met a part of its operator
    bases: dict        # auto operator → base found in meta or learned now
    learned: dict      # operator → (base, votes) learned in this transaction
    settled: set       # operators whose kept unread receipts have been read
    undecided: dict    # auto operator → votes, still undecided after UNDECIDED_VOTES
    unreadable: dict   # operator → one receipt id its base cannot read (a config error?)


class KnownBases:
    """The reactor thread's memory of each operator's receipt ids: bases learned (so
    that meta is read once), operators settled this run (their receipts kept unread
    have been read), and the warnings already given."""

    def __init__(self):
        self.bases = {}
        self.settled = set()
        self._warned = set()

    def take(self, applied):
        """After the commit of `applied`: remember, say what was learned; its matches."""
        if (applied.bases or applied.settled or applied.learned or applied.undecided
                or applied.unreadable):
            self._remember(applied)
        return applied.matched

    def _remember(self, applied):
        self.bases.update(applied.bases)
        self.settled.update(applied.settled)
        for operator, (base, votes) in applied.learned.items():
            log.info("operator %s: receipt ids learned: %s (unambiguous matches %s);"
                     " fixed from now on (receipt_ids in its configuration overrides)",
                     operator, base, _votes_text(votes))
        for operator, receipt_id in applied.unreadable.items():
            if (operator, "unreadable") not in self._warned:
                self._warned.add((operator, "unreadable"))
                log.warning("operator %s: receipt id %r cannot be read in its receipt_ids"
                            " base; such receipts are kept unmatched (is receipt_ids"
                            " right for it?)", operator, receipt_id)
        for operator, votes in applied.undecided.items():
            if operator not in self._warned:
                self._warned.add(operator)
                log.warning("operator %s: receipt id base still not learned (unambiguous"
                            " matches %s): its receipts wait; set receipt_ids for it",
                            operator, _votes_text(votes))


def _votes_text(votes):
    return ", ".join(f"{base} {votes.get(base, 0)}" for base in ID_BASES)


_CANDIDATES_SQL = (
    "SELECT json_group_array(json_array(j.n, p.message_id, p.seq, p.state,"
    " COALESCE(p.changed_at, m.created_at), p.rowid))"
    f" FROM {_values(('n', 'key', 'operator', 'at'))} AS j"
    # parts_receipt_key (schema migration 21): the parts filed under the key.
    " JOIN parts p ON p.receipt_key = j.key AND p.operator = j.operator"
    " JOIN messages m ON m.id = p.message_id"
    " WHERE j.at <= m.created_at + m.validity_s + ?"
    # changed_at of a 'submitted' part: its submit outcome.
    " AND (p.state <> 'submitted' OR j.at >= COALESCE(p.changed_at, m.created_at) - ?)")


def _candidates(conn, probe):
    """The parts each of `probe` [(n, key, operator, received_at)] may be the receipt
    of: [n, message_id, seq, state, submitted at, part rowid] rows."""
    return _rows_of_values(conn, _CANDIDATES_SQL, 4, probe,
                           after=(RECEIPT_LAG_S, RECEIPT_LEAD_S))


_KEEP_SQL = (
    "INSERT INTO pending_receipts (key, operator, state, error, received_at, id_base)"
    " SELECT key, operator, state, error, at, id_base"
    f" FROM {_batch(('key', 'operator', 'state', 'error', 'at', 'id_base'))}")
_MATURE_SQL = (
    "SELECT json_group_array(json_array(rowid, key, received_at))"
    " FROM (SELECT rowid, key, received_at FROM pending_receipts"
    "  WHERE operator = ? AND id_base IS NULL AND rowid > ? AND received_at <= ?"
    "  ORDER BY rowid LIMIT ?)")
_UNREAD_SQL = (
    "SELECT json_group_array(json_array(rowid, key, state, error, received_at))"
    " FROM (SELECT rowid, key, state, error, received_at FROM pending_receipts"
    "  WHERE operator = ? AND id_base IS NULL ORDER BY rowid)")


def apply_receipts(conn, receipts, modes, known, settled, now, learn=(), learning=None,
                   mature_s=None):
    """Receipts [(operator, normal id, state, error)] → Applied.

    modes: operator → configured receipt_ids (absent: auto); known: auto operator →
    base already learned; settled: operators whose unread receipts have been read;
    learn: auto operators whose kept receipts are to be judged although none of
    theirs is in this batch; learning: the writer thread's set of auto operators
    whose base is not known yet (kept up to date here, read by operations.record);
    mature_s: operator → how old its kept receipts must be to be judged (absent:
    MATURE_S)."""
    bases = {}                  # operator → its base, None while it is learned
    for receipt in receipts:
        if receipt[0] not in bases:
            bases[receipt[0]] = _base(receipt[0], modes, known)
    for operator in learn:
        if operator not in bases:
            bases[operator] = _base(operator, modes, known)
    operators = list(bases)
    applied = Applied([False] * len(receipts), {}, {}, set(), {}, {})
    votes = {}
    unknown = [operator for operator in operators if bases[operator] is None]
    if unknown:
        stored, votes = _read_meta(conn, unknown)
        bases.update(stored)
        applied.bases.update(stored)

    # Read: the receipts kept before the operator's base was known, then this batch.
    readable, unread, alone = [], [], []
    for operator in operators:
        if bases[operator] is not None and operator not in settled:
            readable.extend(_take_unread(conn, operator, bases[operator]))
            applied.settled.add(operator)
    for index, (operator, receipt_id, state, error) in enumerate(receipts):
        base = bases[operator]
        if base is not None:
            readable.append((index, operator, receipt_id, receipt_key(receipt_id, base),
                             base, state, error, now))
        elif read_only_raw(receipt_id):
            # Only raw can name a part filed under this id (see read_only_raw): taken
            # as it is, or kept unread (base None) if it ends no part now.
            alone.append((index, operator, receipt_id, receipt_id, None, state, error, now))
        elif state in _FINAL:
            unread.append((receipt_id, operator, state, error, now, None))
    if unread:
        conn.execute(_KEEP_SQL, (json.dumps(unread),))
    undecided = [operator for operator in operators if bases[operator] is None]
    voted = set()
    if alone:
        # Each one that ended a part is a vote for raw, at once: there was no other
        # reading to confuse it with.
        for item, ended in zip(alone, _apply_read(conn, alone, applied, now)):
            if ended:
                votes.setdefault(item[1], _no_votes())["raw"] += 1
                voted.add(item[1])
    if undecided:
        limit = JUDGED_PER_BATCH if receipts else JUDGED_PER_ROUND
        for operator, base in _judge(conn, undecided, votes, applied, now, limit,
                                     voted, mature_s or {}).items():
            readable.extend(_take_unread(conn, operator, base))
            applied.settled.add(operator)
    if learning is not None:
        for operator in operators:
            if bases[operator] is None and operator not in applied.learned:
                learning.add(operator)
            else:
                learning.discard(operator)
    _apply_read(conn, readable, applied, now)
    return applied


def _base(operator, modes, known):
    mode = modes.get(operator, "auto")
    return known.get(operator) if mode == "auto" else mode


def _apply_read(conn, items, applied, now):
    """items (index or None, operator, receipt id, key or None, base, state, error,
    received_at): each ends the newest live part it meets; a final one that meets no
    live part is kept (unread when base is None).  Per item, whether it ended a part."""
    matched = applied.matched
    probe = [(n, item[3], item[1], item[7]) for n, item in enumerate(items)
             if item[3] is not None]
    found = {}
    if probe:
        for n, message_id, seq, state, submitted_at, rowid in _candidates(conn, probe):
            found.setdefault(n, []).append((state == "submitted", submitted_at, rowid,
                                            message_id, seq))
    ends, keep, ended, results = [], [], set(), [False] * len(items)
    for n, (index, operator, receipt_id, key, base, state, error, at) in enumerate(items):
        candidates = found.get(n)
        if index is not None:
            matched[index] = bool(candidates)
            if key is None:
                applied.unreadable.setdefault(operator, receipt_id)
        if state not in _FINAL:
            continue            # ENROUTE, ACCEPTD, ...: nothing final to record
        live, _at, _rowid, message_id, seq = max(candidates) if candidates else (False,) * 5
        if not live:
            keep.append((receipt_id, operator, state, error, at, _UNREADABLE)
                        if key is None else (key, operator, state, error, at, base))
        elif (message_id, seq) not in ended:        # the first final receipt wins
            ended.add((message_id, seq))
            ends.append((message_id, seq, state, error or state, None))
            results[n] = True
    if ends:
        _end_parts(conn, ends, now)
    if keep:
        conn.execute(_KEEP_SQL, (json.dumps(keep),))
    return results


def _judge(conn, operators, votes, applied, now, limit, voted, mature_s):
    """Count the votes of the operators' kept receipts (up to `limit` each) that have
    come of age since the last judgement, and fix the bases now decided (voted: those
    with votes counted already in this batch); {operator: base} of those."""
    probe, meaning, judged = [], [], {}
    for operator in operators:
        counts = votes.setdefault(operator, _no_votes())
        for rowid, receipt_id, at in _rows_of(conn, _MATURE_SQL, (
                operator, counts["after"], now - mature_s.get(operator, MATURE_S),
                limit)):
            judged[operator] = rowid
            for base in ID_BASES:
                key = receipt_key(receipt_id, base)
                if key is not None:
                    probe.append((len(meaning), key, operator, at))
                    meaning.append((operator, rowid, base))
    if not judged and not voted:
        return {}
    met = {}
    if probe:
        for n, *_ in _candidates(conn, probe):
            operator, rowid, base = meaning[n]
            met.setdefault((operator, rowid), set()).add(base)
    for (operator, _rowid), bases in met.items():
        if len(bases) == 1:                 # two bases meeting parts: no evidence
            votes[operator][bases.pop()] += 1

    decided, writes = {}, []
    for operator in [op for op in operators if op in judged or op in voted]:
        counts = votes[operator]
        if operator in judged:
            counts["after"] = judged[operator]
        base = max(ID_BASES, key=counts.get)
        stray = sum(counts[b] for b in ID_BASES) - counts[base]
        if counts[base] >= LEARN_VOTES and stray * STRAY_SHARE <= counts[base]:
            decided[operator] = base
            applied.bases[operator] = base
            applied.learned[operator] = (base, counts)
            writes.append((_base_key(operator), base))
        else:
            writes.append((_votes_key(operator), json.dumps(counts)))
            if sum(counts[b] for b in ID_BASES) >= UNDECIDED_VOTES:
                applied.undecided[operator] = counts
    conn.execute("INSERT OR REPLACE INTO meta (key, value) SELECT"
                 " json_extract(value, '$[0]'), json_extract(value, '$[1]')"
                 " FROM json_each(?)", (json.dumps(writes),))
    if decided:
        conn.execute("DELETE FROM meta WHERE key IN (SELECT value FROM json_each(?))",
                     (json.dumps([_votes_key(operator) for operator in decided]),))
    return decided


def _no_votes():
    # Votes per base, and the last kept receipt (rowid) judged.
    return {**dict.fromkeys(ID_BASES, 0), "after": 0}


def _read_meta(conn, operators):
    """({operator: learned base}, {operator: votes so far}) from meta."""
    wanted = {}
    for operator in operators:
        wanted[_base_key(operator)] = ("base", operator)
        wanted[_votes_key(operator)] = ("votes", operator)
    bases, votes = {}, {}
    for key, value in conn.execute("SELECT key, value FROM meta WHERE key IN"
                                   " (SELECT value FROM json_each(?))",
                                   (json.dumps(list(wanted)),)):
        kind, operator = wanted[key]
        if kind == "base" and value in ID_BASES:
            bases[operator] = value
        elif kind == "votes":
            stored = json.loads(value)
            votes[operator] = {name: int(stored.get(name, 0)) for name in _no_votes()}
    return bases, votes


def _take_unread(conn, operator, base):
    """The operator's receipts kept unread (its base was not known), out of the table
    and read under `base`, oldest first, as _apply_read items."""
    rows = _rows_of(conn, _UNREAD_SQL, (operator,))
    if not rows:
        return []
    conn.execute("DELETE FROM pending_receipts WHERE rowid IN"
                 " (SELECT value FROM json_each(?))", (json.dumps([r[0] for r in rows]),))
    return [(None, operator, receipt_id, receipt_key(receipt_id, base), base, state,
             error, received_at)
            for _rowid, receipt_id, state, error, received_at in rows]
