"""The national inbox's reads: the messages agencies sent to one citizen, newest first.

A citizen's messages are the `messages` rows to that number: single messages and a
broadcast's once the feeder made its message (a broadcast message keeps no text of its
own: the broadcast's is read, once per page row, by primary key).  Not shown: messages
that never left the gateway because the citizen had opted out (`opted_out`) or the
agency cancelled them (`cancelled`), and messages of `hidden` agencies (the platform's
own 4040 answers).  Order and cursor are (created_at, id), both fixed at accept, so a
page never shifts when new messages come; migration 16's index (recipient, created_at,
id) walks exactly the page's rows.
"""

import json

from gateway.model import CitizenMessage

# Errors recorded at accept or by the agency's cancel: the citizen was never sent these.
NOT_SENT_ERRORS = ("opted_out", "cancelled")

_SELECT = (
    "SELECT m.id, m.agency, m.sender,"
    " CASE WHEN m.broadcast_id IS NULL THEN m.text ELSE b.text END,"
    " m.created_at, m.status"
    " FROM messages m LEFT JOIN broadcasts b ON b.id = m.broadcast_id"
    " WHERE m.recipient = ?"
    " AND (m.error IS NULL OR m.error NOT IN (%s))"
    " AND (m.broadcast_id IS NULL OR b.id IS NOT NULL)"
    " AND m.agency NOT IN (SELECT value FROM json_each(?))"
    % ", ".join(f"'{error}'" for error in NOT_SENT_ERRORS))


def list_for(conn, recipient, before, limit, hidden=()):
    """At most `limit` CitizenMessages to `recipient`, newest first, older than
    `before` ((created_at, id) of the last one seen; None: from the newest)."""
    hidden = json.dumps(list(hidden))
    if before is None:
        rows = conn.execute(_SELECT + " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
                            (recipient, hidden, limit))
    else:
        created_at, message_id = before
        rows = conn.execute(_SELECT + " AND (m.created_at, m.id) < (?, ?)"
                            " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
                            (recipient, hidden, created_at, message_id, limit))
    return [CitizenMessage(*row) for row in rows]


def one_for(conn, recipient, message_id, hidden=()):
    """The CitizenMessage `message_id` if it is one `list_for(recipient)` shows, else
    None (another citizen's message is as absent as a missing one)."""
    row = conn.execute(_SELECT + " AND m.id = ?",
                       (recipient, json.dumps(list(hidden)), message_id)).fetchone()
    return CitizenMessage(*row) if row else None
