"""Messages an agency addressed by national ID (migration 16), as the accept writes them.

The ID it gave is kept with the message: its answers show the ID and a masked number,
never the citizen's whole number.  A national ID the directory does not know is a
message to nobody: stored failed at once (error `unknown_citizen`) with no number and no
parts, so it costs no quota and GET /v1/messages/{id} still answers it.
"""

from gateway.store import correspondence


def insert_addressed(conn, insert_messages, item, ended, addressed, now):
    """An accept (operations.insert_messages' item) with messages failed at once
    (`ended` [(error, message id)]) and messages addressed by national ID
    (`addressed` [(national ID, message id)]), in one transaction."""
    ids = correspondence.insert_ended(conn, insert_messages, item, ended, now)
    if addressed:
        conn.executemany("UPDATE messages SET national_id = ? WHERE id = ?", addressed)
    if ended:
        # A message without parts has no part trigger to end it: it ends here.
        conn.executemany("UPDATE messages SET status = 'failed', error = ?, done_at = ?"
                         " WHERE id = ? AND parts = 0",
                         [(error, now, message_id) for error, message_id in ended])
    return ids
