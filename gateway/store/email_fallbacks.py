"""The email fallback's durable state (migration 17): one row per message whose agency
asked `"fallback": "email"`, written in the accept's own transaction.

  waiting      the SMS has not ended; the trigger below moves the row on when it does
  not_needed   the SMS was delivered: no email, ever
  pending      the SMS failed or expired: due at `next_at` (the mail sender's poll)
  sent         the mail server took it (`sent_at`)
  failed       refused for good, or `attempts` reached the bound (`error` says why)
  unavailable  no address was known at accept (or the message was failed at accept)

An attempt claims its row first (attempts + 1, next_at pushed past the attempt's
timeout) in a writer transaction, so a crash mid-send leaves a pending row that is
tried again later (with the same Message-ID), never a lost one; and a row another
process claimed is not sent twice at once. The API shows `waiting` as `pending`.
"""

STATUSES = ("waiting", "not_needed", "pending", "sent", "failed", "unavailable")
API_STATUS = {"waiting": "pending"}
_COLUMNS = "(message_id, agency, address, status, error, next_at, created_at)"


def schema_sql(final_states_sql):
    return [
        "CREATE TABLE IF NOT EXISTS email_fallbacks ("
        " message_id TEXT PRIMARY KEY,"
        " agency TEXT NOT NULL,"
        " address TEXT,"
        " status TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_at REAL,"
        " error TEXT,"
        " sent_at REAL,"
        " created_at REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS email_fallbacks_due ON email_fallbacks (next_at)"
        " WHERE status = 'pending'",
        # One primary-key probe per message reaching its end: a message without a
        # fallback meets no row.
        "CREATE TRIGGER IF NOT EXISTS email_fallback_sms_ended AFTER UPDATE OF status"
        " ON messages WHEN NEW.status IN ('delivered', 'failed', 'expired')"
        f" AND OLD.status NOT IN {final_states_sql} BEGIN"
        " UPDATE email_fallbacks SET"
        "  status = CASE NEW.status WHEN 'delivered' THEN 'not_needed' ELSE 'pending' END,"
        "  next_at = CASE NEW.status WHEN 'delivered' THEN NULL"
        "   ELSE COALESCE(NEW.done_at, 0) END"
        " WHERE message_id = NEW.id AND status = 'waiting'; END",
        # A purged message takes its row along.
        "CREATE TRIGGER IF NOT EXISTS email_fallback_purged AFTER DELETE ON messages"
        " BEGIN DELETE FROM email_fallbacks WHERE message_id = OLD.id; END",
    ]


def rows_of(messages, now):
    """The rows an accept writes for its messages that asked for an email fallback."""
    rows = []
    for m in messages:
        if m.fallback != "email":
            continue
        if m.error is not None:            # never sent by SMS (opted out, unknown citizen)
            rows.append((m.id, m.agency, None, "unavailable", m.error, None, now))
        elif not m.fallback_address:
            rows.append((m.id, m.agency, None, "unavailable", "no_address", None, now))
        else:
            rows.append((m.id, m.agency, m.fallback_address, "waiting", None, None, now))
    return rows


def insert(conn, rows):
    conn.executemany(f"INSERT INTO email_fallbacks {_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)",
                     rows)


def claim_due(conn, now, limit, busy_until):
    """Up to `limit` due rows, claimed until `busy_until`: [(message_id, agency, address,
    attempt, text, message created_at, sms status)], `attempt` counting this one."""
    rows = conn.execute(
        "SELECT f.message_id, f.agency, f.address, f.attempts + 1, m.text, m.created_at,"
        " m.status FROM email_fallbacks f JOIN messages m ON m.id = f.message_id"
        " WHERE f.status = 'pending' AND f.next_at <= ? ORDER BY f.next_at LIMIT ?",
        (now, limit)).fetchall()
    if rows:
        conn.executemany("UPDATE email_fallbacks SET attempts = attempts + 1, next_at = ?"
                         " WHERE message_id = ?", [(busy_until, row[0]) for row in rows])
    return rows


def settle(conn, message_id, attempt, status, next_at, error, sent_at):
    """An attempt's outcome, only while the row is still that attempt's (a slower
    process whose claim ran out cannot undo a newer attempt). → whether it changed."""
    return conn.execute(
        "UPDATE email_fallbacks SET status = ?, next_at = ?, error = ?, sent_at = ?"
        " WHERE message_id = ? AND status = 'pending' AND attempts = ?",
        (status, next_at, error, sent_at, message_id, attempt)).rowcount == 1


def channel_of(reader, message_id):
    """The email channel's status as the API shows it, or None without a fallback."""
    row = reader.execute("SELECT status FROM email_fallbacks WHERE message_id = ?",
                         (message_id,)).fetchone()
    return None if row is None else API_STATUS.get(row[0], row[0])


def fallback_of(reader, message_id):
    """The whole row (tests, operators' questions): dict or None."""
    cursor = reader.execute("SELECT * FROM email_fallbacks WHERE message_id = ?",
                            (message_id,))
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row))
