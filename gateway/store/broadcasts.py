"""A broadcast's rows: its text and parts once, its recipients, their feeding and counts.

Writes run on the writer thread, each a fixed handful of statements per batch (see
operations.py).  A broadcast is received in batches of recipients (`add_recipients`,
the primary key keeping a repeated number once), opened once all are durable (`open`),
or dropped (`discard`).  While it is open the feeder turns its recipients into messages
and parts a batch at a time (`feed`), in number order: a fed part stores no payload (the
claim reads its broadcast's, see operations.claim), so the text and its parts are kept
once however many citizens receive them.

States: open (recipients left to feed) → fed (every recipient a message) | cancelled |
expired (its validity ended before every recipient was fed).  A fed recipient's row is
deleted (its message has its number and route); an ended broadcast goes with the
housekeeping purge once its messages have all ended (`purge`).
"""

import json

from gateway.model import NORMAL, PRIORITY_NAMES

CANCELLED_ERROR = "cancelled"
# What the counts of a broadcast are made of (GET /v1/broadcasts/{id}).
COUNTED = ("queued", "submitted", "delivered", "failed", "expired", "cancelled")


def add_recipients(conn, items):
    """Grouped: items (broadcast_id, [[number, route(, national ID)], ...]); each gives
    how many of its numbers were new to its broadcast (the others were already there:
    sent once). A number also given by national ID is shown as addressed by it (masked),
    whichever came first."""
    added = []
    for broadcast_id, rows in items:
        if any(len(row) > 2 and row[2] is not None for row in rows):
            added.append(_add_addressed(conn, broadcast_id, rows))
            continue
        # One INSERT per route of the batch (a few operators), reading plain numbers:
        # json_extract() of [number, route] pairs took 1.4 µs a recipient, this 0.6.
        by_route = {}
        for row in rows:
            numbers = by_route.get(row[1])
            if numbers is None:
                numbers = by_route[row[1]] = []
            numbers.append(row[0])
        added.append(sum(conn.execute(
            "INSERT OR IGNORE INTO broadcast_recipients (broadcast_id, number, route)"
            " SELECT ?, value, ? FROM json_each(?)",
            (broadcast_id, route, json.dumps(numbers))).rowcount
            for route, numbers in by_route.items()))
    return added


def _add_addressed(conn, broadcast_id, rows):
    """A batch with recipients given by national ID (rarer): [number, route, ID] rows."""
    batch = json.dumps(rows)
    added = conn.execute(
        "INSERT OR IGNORE INTO broadcast_recipients (broadcast_id, number, route,"
        " national_id) SELECT ?, json_extract(value, '$[0]'),"
        " json_extract(value, '$[1]'), json_extract(value, '$[2]')"
        " FROM json_each(?)", (broadcast_id, batch)).rowcount
    conn.execute(
        "UPDATE broadcast_recipients SET national_id = json_extract(j.value, '$[2]')"
        " FROM json_each(?) AS j WHERE broadcast_id = ?"
        " AND number = json_extract(j.value, '$[0]') AND national_id IS NULL"
        " AND json_extract(j.value, '$[2]') IS NOT NULL", (batch, broadcast_id))
    return added


def open_broadcast(conn, row, payloads, fingerprint=None, unknown_citizens=0):
    """row: (id, agency, sender, text, priority, validity_s, receipt, data_coding,
    esm_class, parts, created_at, recipients, invalid); the broadcast becomes
    feedable.  fingerprint: its text's (gateway.text.fingerprint), kept per recipient
    in sent_fingerprints as an accepted message's is, so that 4040 confirms a
    broadcast's text to the citizens it went to (one INSERT ... SELECT of the
    recipients, in this transaction)."""
    if fingerprint is not None:
        # Not for citizens a normal broadcast will not reach (opted out, see feed).
        conn.execute(
            "INSERT OR IGNORE INTO sent_fingerprints (digest, recipient, sent_at, agency)"
            " SELECT ?, CAST(number AS TEXT), ?, ? FROM broadcast_recipients"
            " WHERE broadcast_id = ? AND (? != 0 OR CAST(number AS TEXT) NOT IN"
            " (SELECT citizen FROM opt_outs WHERE agency = ?))",
            (fingerprint, row[10], row[1], row[0], row[4], row[1]))
    conn.execute(
        "INSERT INTO broadcasts (id, agency, sender, text, priority, validity_s, receipt,"
        " data_coding, esm_class, parts, created_at, recipients, invalid, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')", row)
    if unknown_citizens:
        # National IDs the directory did not know (migration 17): counted failed.
        conn.execute("UPDATE broadcasts SET unknown_citizens = ? WHERE id = ?",
                     (unknown_citizens, row[0]))
    conn.executemany("INSERT INTO broadcast_parts (broadcast_id, seq, payload)"
                     " VALUES (?, ?, ?)",
                     [(row[0], seq, payload) for seq, payload in enumerate(payloads, 1)])
    return row[0]


def discard(conn, broadcast_id):
    """A broadcast refused or abandoned while it was received: its recipients go."""
    return conn.execute("DELETE FROM broadcast_recipients WHERE broadcast_id = ?",
                        (broadcast_id,)).rowcount


_FEED_STATE = ("SELECT agency, sender, priority, validity_s, receipt, data_coding,"
               " esm_class, parts, created_at, state, fed, cursor, recipients"
               " FROM broadcasts WHERE id = ?")


def feed(conn, broadcast_id, limit, now):
    """Make messages and parts of up to `limit` more recipients (eligible from `now`,
    so broadcasts fed at once are claimed interleaved).  → (recipients fed, their
    routes, whether nothing is left to feed)."""
    row = conn.execute(_FEED_STATE, (broadcast_id,)).fetchone()
    if row is None:
        return 0, [], True
    (agency, sender, priority, validity_s, receipt, data_coding, esm_class, parts,
     created_at, state, fed, cursor, recipients) = row
    if state != "open":
        return 0, [], True
    if now >= created_at + validity_s:
        conn.execute("UPDATE broadcasts SET state = 'expired', done_at = ? WHERE id = ?",
                     (now, broadcast_id))
        return 0, [], True
    numbers = conn.execute(
        "SELECT number, route, national_id FROM broadcast_recipients WHERE broadcast_id = ?"
        " AND number > ? ORDER BY number LIMIT ?", (broadcast_id, cursor, limit)).fetchall()
    if numbers:
        batch = json.dumps([[fed + index, str(number), route, national_id]
                            for index, (number, route, national_id) in enumerate(numbers, 1)])
        # A message per recipient with no text of its own (the broadcast's is kept once);
        # one addressed by national ID keeps it (its number is shown masked).
        conn.execute(
            "INSERT INTO messages (id, agency, sender, recipient, text, priority,"
            " validity_s, receipt, data_coding, esm_class, parts, created_at, broadcast_id,"
            " national_id)"
            " SELECT ? || '-' || json_extract(value, '$[0]'), ?, ?,"
            " json_extract(value, '$[1]'), '', ?, ?, ?, ?, ?, ?, ?, ?,"
            " json_extract(value, '$[3]') FROM json_each(?)",
            (broadcast_id, agency, sender, priority, validity_s, receipt, data_coding,
             esm_class, parts, created_at, broadcast_id, batch))
        conn.execute(
            "INSERT INTO parts (message_id, seq, priority, payload, not_before, route)"
            " SELECT ? || '-' || json_extract(j.value, '$[0]'), s.value, ?, X'', ?,"
            " json_extract(j.value, '$[2]') FROM json_each(?) AS j, json_each(?) AS s",
            (broadcast_id, priority, now, batch, json.dumps(list(range(1, parts + 1)))))
        if priority == NORMAL:
            # A citizen who opted out of this agency (STOP, where its config allowed
            # it) gets no normal message from it: failed `opted_out` at once, as the
            # accept path records a single message (the part trigger ends the message).
            conn.execute(
                "UPDATE parts SET state = 'failed', error = 'opted_out', changed_at = ?"
                " WHERE message_id IN (SELECT ? || '-' || json_extract(value, '$[0]')"
                " FROM json_each(?) WHERE json_extract(value, '$[1]') IN"
                " (SELECT citizen FROM opt_outs WHERE agency = ?))",
                (now, broadcast_id, batch, agency))
        # A fed recipient lives on as its message: its row is not needed any more.
        conn.execute("DELETE FROM broadcast_recipients WHERE broadcast_id = ?"
                     " AND number <= ?", (broadcast_id, numbers[-1][0]))
    fed += len(numbers)
    done = len(numbers) < limit or fed >= recipients
    conn.execute("UPDATE broadcasts SET fed = ?, cursor = ?, state = ? WHERE id = ?",
                 (fed, numbers[-1][0] if numbers else cursor, "fed" if done else "open",
                  broadcast_id))
    return len(numbers), sorted({route for _, route, _ in numbers}, key=str), done


def cancel(conn, broadcast_id, now):
    """What is not submitted yet ends: recipients not fed are counted cancelled, fed
    parts still queued fail with error `cancelled` (parts already handed to a bind go
    on).  → True if it was cancelled now, False if it had ended, None if unknown."""
    row = conn.execute("SELECT state, recipients, fed FROM broadcasts WHERE id = ?",
                       (broadcast_id,)).fetchone()
    if row is None:
        return None
    state, recipients, fed = row
    if state not in ("open", "fed"):
        return False
    failed_before = _count(conn, broadcast_id, "failed")
    conn.execute(
        "UPDATE parts SET state = 'failed', error = ?, changed_at = ?"
        " WHERE state = 'queued' AND message_id IN (SELECT id FROM messages"
        "  WHERE broadcast_id = ? AND status = 'queued')",
        (CANCELLED_ERROR, now, broadcast_id))
    ended = _count(conn, broadcast_id, "failed") - failed_before
    conn.execute("UPDATE broadcasts SET state = 'cancelled', cancelled = ?,"
                 " cancelled_fed = ?, done_at = ? WHERE id = ?",
                 (recipients - fed + ended, ended, now, broadcast_id))
    return True


def purge(conn, older_than):
    """Broadcasts created before `older_than` that have ended (fed, cancelled or
    expired) and whose messages have all ended go, with their parts and the recipients
    never fed (the messages are purged by age on their own)."""
    ended = [row[0] for row in conn.execute(
        "SELECT id FROM broadcasts b WHERE created_at < ? AND state != 'open'"
        " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.broadcast_id = b.id"
        "  AND m.status IN ('queued', 'submitted'))", (older_than,))]
    removed = {"broadcasts": 0, "broadcast_recipients": 0}
    for broadcast_id in ended:
        removed["broadcast_recipients"] += conn.execute(
            "DELETE FROM broadcast_recipients WHERE broadcast_id = ?",
            (broadcast_id,)).rowcount
        conn.execute("DELETE FROM broadcast_parts WHERE broadcast_id = ?", (broadcast_id,))
        removed["broadcasts"] += conn.execute("DELETE FROM broadcasts WHERE id = ?",
                                              (broadcast_id,)).rowcount
    return removed


def _count(conn, broadcast_id, status):
    return conn.execute("SELECT count(*) FROM messages WHERE broadcast_id = ?"
                        " AND status = ?", (broadcast_id, status)).fetchone()[0]


# -- reads (the reactor thread's connection) ---------------------------------------------

def progress(reader, broadcast_id):
    """The broadcast's fields and its recipients' counts per status, or None."""
    row = reader.execute(
        "SELECT id, agency, sender, priority, parts, created_at, state, recipients,"
        " invalid, fed, cancelled, cancelled_fed, done_at, unknown_citizens"
        " FROM broadcasts WHERE id = ?", (broadcast_id,)).fetchone()
    if row is None:
        return None
    (id_, agency, sender, priority, parts, created_at, state, recipients, invalid, fed,
     cancelled, cancelled_fed, done_at, unknown_citizens) = row
    counts = dict.fromkeys(COUNTED, 0)
    for status, count in reader.execute(
            "SELECT status, count(*) FROM messages WHERE broadcast_id = ?"
            " GROUP BY status", (broadcast_id,)):
        counts[status] = count
    counts["failed"] += unknown_citizens - cancelled_fed
    counts["cancelled"] = cancelled
    unfed = recipients - fed
    if state == "open":
        counts["queued"] += unfed
    elif state == "expired":
        counts["expired"] += unfed
    return {"id": id_, "agency": agency, "from": sender,
            "priority": PRIORITY_NAMES.get(priority, str(priority)), "parts": parts,
            "state": state, "recipients": recipients, "invalid": invalid,
            "unknown_citizens": unknown_citizens, "created_at": created_at, "done_at": done_at, "counts": counts}


def open_broadcasts(reader):
    """[(id, agency, parts)] of the broadcasts with recipients left to feed."""
    return reader.execute("SELECT id, agency, parts FROM broadcasts WHERE state = 'open'"
                          " ORDER BY created_at").fetchall()


def backlog(reader, broadcast_id):
    """Its fed messages not yet wholly submitted: what waits for the dispatcher."""
    return reader.execute("SELECT count(*) FROM messages WHERE broadcast_id = ?"
                          " AND status = 'queued'", (broadcast_id,)).fetchone()[0]


def unfed_parts(reader, agency, since):
    """Parts of the agency's open broadcasts created since `since` not fed yet: the
    quota counts a broadcast whole from its accept (fed ones are messages)."""
    return reader.execute(
        "SELECT COALESCE(SUM((recipients - fed) * parts), 0) FROM broadcasts"
        " WHERE agency = ? AND created_at >= ? AND state = 'open'",
        (agency, since)).fetchone()[0]
