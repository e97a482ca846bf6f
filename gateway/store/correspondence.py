"""Writer- and reader-side operations of the correspondence tables (migration 10):
citizens' SMS parts until their set is whole (`mo_parts`), the reply webhook's delivery
state (`webhook_pushes`) and opt-outs (`opt_outs`).  Plain functions over a connection,
as operations.py: the Store runs writes on its writer thread, reads on its reader."""

from gateway.model import MoPart, MoSet

_PART_COLUMNS = ("set_key, seq, total, operator, citizen, destination, data_coding, body,"
                 " received_at")


def _part(row):
    return MoPart(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bytes(row[7]),
                  row[8])


def set_parts(conn, set_id):
    rows = conn.execute(f"SELECT {_PART_COLUMNS} FROM mo_parts WHERE set_id = ?"
                        " ORDER BY seq", (set_id,)).fetchall()
    return [_part(row) for row in rows]


def keep_mo_part(conn, part, duplicate_since, max_open_sets):
    """Keep one part → (new, whole, overflow): `new` False for a part kept already (a
    redelivery: of a part of an open set, or of one settled since `duplicate_since`
    with the same body); `whole` the MoSet this part completed, else None; `overflow`
    sets to release now, as they are (partial): the citizen's oldest open sets beyond
    `max_open_sets`, and an open set whose reference this part reuses (the same part
    number with another body: the handset began a new message)."""
    if part.total == 1:
        return _keep_single(conn, part, duplicate_since)
    row = conn.execute("SELECT set_id, first_at FROM mo_parts WHERE set_key = ?"
                       " AND settled = 0 ORDER BY first_at DESC LIMIT 1",
                       (part.set_key,)).fetchone()
    overflow = []
    if row is None:
        again = conn.execute(
            "SELECT 1 FROM mo_parts WHERE set_key = ? AND settled = 1 AND seq = ?"
            " AND body = ? AND received_at >= ? LIMIT 1",
            (part.set_key, part.seq, part.body, duplicate_since)).fetchone()
        if again is not None:
            return False, None, []
        set_id, first_at = None, part.received_at
    else:
        set_id, first_at = row
        kept = conn.execute("SELECT body FROM mo_parts WHERE set_id = ? AND seq = ?",
                            (set_id, part.seq)).fetchone()
        if kept is not None:
            if bytes(kept[0]) == part.body:
                return False, None, []
            parts = set_parts(conn, set_id)
            overflow.append(MoSet(set_id, parts, len(parts) >= part.total))
            set_id = None
    if set_id is None:
        set_id, first_at = _new_set_id(conn, part), part.received_at
    conn.execute(
        "INSERT INTO mo_parts (set_id, set_key, seq, total, operator, citizen, destination,"
        " data_coding, body, received_at, first_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (set_id, part.set_key, part.seq, part.total, part.operator, part.citizen,
         part.destination, part.data_coding, part.body, part.received_at, first_at))
    whole = None
    count = conn.execute("SELECT COUNT(*) FROM mo_parts WHERE set_id = ?",
                         (set_id,)).fetchone()[0]
    if count >= part.total:
        whole = MoSet(set_id, set_parts(conn, set_id), True)
    if part.total > 1:
        released = {mo_set.set_id for mo_set in overflow}
        open_sets = [row for row in conn.execute(
            "SELECT set_id, MIN(first_at) AS first FROM mo_parts"
            " WHERE operator = ? AND citizen = ? AND settled = 0 AND set_id != ?"
            " GROUP BY set_id ORDER BY first", (part.operator, part.citizen, set_id))
            if row[0] not in released]
        # This set counts too: at most max_open_sets open, the oldest go first.
        for other, _ in open_sets[:max(0, len(open_sets) + 1 - max_open_sets)]:
            overflow.append(MoSet(other, set_parts(conn, other), False))
    return True, whole, overflow


def _keep_single(conn, part, duplicate_since):
    """A single-part message: its set key is its content, so any set of that key still
    open or settled since `duplicate_since` is this message again. Two statements (the
    hot path: most MO are one part)."""
    if conn.execute("SELECT 1 FROM mo_parts WHERE set_key = ? AND (settled = 0"
                    " OR received_at >= ?) LIMIT 1",
                    (part.set_key, duplicate_since)).fetchone() is not None:
        return False, None, []
    set_id = f"{part.set_key}@{part.received_at:.6f}"
    if not conn.execute(
            "INSERT INTO mo_parts (set_id, set_key, seq, total, operator, citizen,"
            " destination, data_coding, body, received_at, first_at)"
            " VALUES (?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (set_id, seq) DO NOTHING",
            (set_id, part.set_key, part.operator, part.citizen, part.destination,
             part.data_coding, part.body, part.received_at, part.received_at)).rowcount:
        return False, None, []
    return True, MoSet(set_id, [part], True), []


def _new_set_id(conn, part):
    """set_key @ the first part's arrival; unique even for two sets begun at one instant."""
    base = f"{part.set_key}@{part.received_at:.6f}"
    set_id, n = base, 0
    while conn.execute("SELECT 1 FROM mo_parts WHERE set_id = ? LIMIT 1",
                       (set_id,)).fetchone() is not None:
        n += 1
        set_id = f"{base}+{n}"
    return set_id


def settle_mo_sets(conn, set_ids):
    """The sets were handled (filed, answered, passed on): kept only to recognise a
    redelivery from now on."""
    conn.executemany("UPDATE mo_parts SET settled = 1 WHERE set_id = ?",
                     [(set_id,) for set_id in set_ids])


def forget_mo_parts(conn, before):
    """Settled sets begun before `before` are gone (redeliveries come sooner). By
    first_at: the (settled, first_at) index, not a scan of every settled part."""
    return conn.execute("DELETE FROM mo_parts WHERE settled = 1 AND first_at < ?",
                        (before,)).rowcount


def stale_mo_sets(conn, incomplete_before, complete_before, limit, open_parts_cap):
    """Open sets to release now, oldest first: incomplete ones whose first part came
    before `incomplete_before` (the reassembly timeout), complete ones left unsettled
    since before `complete_before` (a crash between keeping and handling them), and the
    oldest beyond `open_parts_cap` parts held in all."""
    rows = conn.execute(
        "SELECT set_id, MIN(first_at) AS first, COUNT(*), MAX(total), SUM(LENGTH(body))"
        " FROM mo_parts WHERE settled = 0 GROUP BY set_id ORDER BY first").fetchall()
    held = sum(row[2] for row in rows)
    stale = []
    for set_id, first, count, total, _ in rows:
        complete = count >= total
        due = (first < (complete_before if complete else incomplete_before)
               or held > open_parts_cap)
        if due:
            stale.append(MoSet(set_id, set_parts(conn, set_id), complete))
            held -= count
            if len(stale) >= limit:
                break
    return stale


def open_mo_parts(conn):
    return conn.execute("SELECT COUNT(*) FROM mo_parts WHERE settled = 0").fetchone()[0]


# -- the reply webhook's pushes ------------------------------------------------------

def queue_pushes(conn, pushes, now):
    """pushes: [(inbox_seq, agency)] → how many were new (one per inbox message)."""
    cursor = conn.executemany(
        "INSERT INTO webhook_pushes (inbox_seq, agency, next_at, created_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (inbox_seq) DO NOTHING",
        [(seq, agency, now, now) for seq, agency in pushes])
    return cursor.rowcount


def push_done(conn, inbox_seq, state, attempts, next_at, error):
    conn.execute("UPDATE webhook_pushes SET state = ?, attempts = ?, next_at = ?,"
                 " last_error = ? WHERE inbox_seq = ?",
                 (state, attempts, next_at, error, inbox_seq))


def due_pushes(conn, agency, now, limit):
    """[(inbox_seq, attempts, created_at)] of the agency's pending pushes due by now."""
    return conn.execute(
        "SELECT inbox_seq, attempts, created_at FROM webhook_pushes"
        " WHERE agency = ? AND state = 'pending' AND next_at <= ?"
        " ORDER BY next_at LIMIT ?", (agency, now, limit)).fetchall()


def push_counts(conn):
    """{(agency, state): count}."""
    return {(agency, state): count for agency, state, count in conn.execute(
        "SELECT agency, state, COUNT(*) FROM webhook_pushes GROUP BY agency, state")}


def unqueued_inbox(conn, agencies, since, limit):
    """[(seq, agency)] of inbox messages of these agencies filed since `since` with no
    push row (filed just before a crash, the push not yet queued)."""
    if not agencies:
        return []
    marks = ", ".join("?" for _ in agencies)
    return conn.execute(
        f"SELECT i.seq, i.agency FROM inbox i LEFT JOIN webhook_pushes p"
        f" ON p.inbox_seq = i.seq WHERE i.agency IN ({marks}) AND i.received_at >= ?"
        f" AND p.inbox_seq IS NULL ORDER BY i.seq LIMIT ?",
        (*agencies, since, limit)).fetchall()


# -- opt-outs ------------------------------------------------------------------------

def opt_out(conn, agency, citizen, now):
    """→ True when the citizen was not opted out of the agency before."""
    return bool(conn.execute("INSERT INTO opt_outs (agency, citizen, at) VALUES (?, ?, ?)"
                             " ON CONFLICT DO NOTHING", (agency, citizen, now)).rowcount)


def opted_out(conn, agency, citizens):
    """The citizens among `citizens` opted out of the agency."""
    found = set()
    citizens = list(citizens)
    for start in range(0, len(citizens), 500):
        chunk = citizens[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(row[0] for row in conn.execute(
            f"SELECT citizen FROM opt_outs WHERE agency = ? AND citizen IN ({marks})",
            (agency, *chunk)))
    return found


def inbox_by_seq(conn, seqs):
    """{seq: InboxMessage} of those still kept."""
    from gateway.store.operations import _INBOX_COLUMNS, inbox_message
    found = {}
    seqs = list(seqs)
    for start in range(0, len(seqs), 500):
        chunk = seqs[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in conn.execute(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE seq IN ({marks})",
                                chunk):
            found[row[0]] = inbox_message(row)
    return found


def insert_ended(conn, insert_messages, item, ended, now):
    """An accept (operations.insert_messages' item) whose messages in `ended`
    [(error, message id)] are recorded failed with that error, never to be sent."""
    ids = insert_messages(conn, [item])[0]
    conn.executemany("UPDATE parts SET state = 'failed', error = ?, changed_at = ?"
                     " WHERE message_id = ?", [(error, now, mid) for error, mid in ended])
    return ids


def forget_pushes(conn, before):
    """Ended pushes (ok, failed) last changed before `before` are gone."""
    return conn.execute("DELETE FROM webhook_pushes WHERE state != 'pending' AND next_at < ?",
                        (before,)).rowcount
