"""Agencies' daily quotas counted in the store, in the accept's own transaction.

Several processes accept messages into one store (HTTP workers, gateway/procs): each
one's count in memory (gateway/policy/limits.py) sees only its own requests, so N
workers would together let N times the quota through.  With a quota attached, an accept
is decided on the writer thread against `quota_used` (migration 18: one row per agency
and quota day), which every process's writer updates under SQLite's write lock
(BEGIN IMMEDIATE): no two can count the same parts.  A day's row starts from what the
store already holds for that day (the messages and the unfed parts of open
broadcasts), so a restart or a switch from one process to several counts on.
Cost: one SELECT and one UPDATE per agency per group commit, not per message.
"""

from gateway.store import broadcasts
from gateway.store.interface import QuotaRefused


def used_at_start(conn, agency, day_start):
    """What the store holds for the agency since the day began (parts_used's rule)."""
    return conn.execute(
        "SELECT COALESCE(SUM(parts), 0) FROM messages WHERE agency = ? AND created_at >= ?",
        (agency, day_start)).fetchone()[0] + broadcasts.unfed_parts(conn, agency, day_start)


def _used(conn, agency, day_start):
    """The day's count: its row, or (no row yet) what the store holds for the day."""
    row = conn.execute("SELECT used FROM quota_used WHERE agency = ? AND day_start = ?",
                       (agency, day_start)).fetchone()
    return row[0] if row is not None else used_at_start(conn, agency, day_start)


def _set_used(conn, agency, day_start, used):
    conn.execute("INSERT INTO quota_used (agency, day_start, used) VALUES (?, ?, ?)"
                 " ON CONFLICT (agency, day_start) DO UPDATE SET used = excluded.used",
                 (agency, day_start, used))


def within_quota(insert):
    """The grouped accept `insert(conn, items)`, for items ending with a quota spec
    (agency, day_start, parts, daily_parts) or None: the items that fit are inserted
    and counted; one that does not fit gets a QuotaRefused as its result (not raised:
    the others in the group stay in the transaction)."""
    def insert_within_quota(conn, items):
        counts = {}                      # (agency, day_start) → parts used, this group
        kept, results = [], []
        for item in items:
            spec = item[-1]
            if spec is not None:
                agency, day_start, parts, limit = spec
                key = (agency, day_start)
                if key not in counts:
                    counts[key] = _used(conn, agency, day_start)
                if counts[key] + parts > limit:
                    results.append(QuotaRefused(agency, counts[key], limit))
                    continue
                counts[key] += parts
            results.append(None)
            kept.append(item[:-1])
        inserted = iter(insert(conn, kept) if kept else ())
        for (agency, day_start), used in counts.items():
            _set_used(conn, agency, day_start, used)
        return [next(inserted) if result is None else result for result in results]
    insert_within_quota.__name__ = f"{insert.__name__}_within_quota"
    return insert_within_quota


def take(conn, agency, day_start, parts, limit):
    """Count `parts` for the agency's day (a broadcast opened whole), or raise
    QuotaRefused counting nothing."""
    used = _used(conn, agency, day_start)
    if used + parts > limit:
        raise QuotaRefused(agency, used, limit)
    _set_used(conn, agency, day_start, used + parts)


def forget_days_before(conn, day_start):
    """Rows of quota days that ended (housekeeping's purge)."""
    return conn.execute("DELETE FROM quota_used WHERE day_start < ?", (day_start,)).rowcount
