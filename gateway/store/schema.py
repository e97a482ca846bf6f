"""The store's schema, built by numbered sqlite-utils migrations.

A later issue that needs a new table or column appends a function to MIGRATIONS;
`migrate()` applies the ones a database has not seen yet and records each version in
the `migrations` table.  Migrations are written to be re-runnable (IF NOT EXISTS), so
a crash between a migration and its version row does no harm.
"""

import logging
import os
import re
import time

import sqlite_utils

from gateway.model import FINAL_STATES

log = logging.getLogger("payam.store.schema")


def _v1_initial(db):
    db["messages"].create({
        "id": str, "agency": str, "sender": str, "recipient": str, "text": str,
        "priority": int, "reference": str, "validity_s": int, "receipt": int,
        "data_coding": int, "esm_class": int, "parts": int,
        "parts_submitted": int, "parts_delivered": int, "parts_failed": int,
        "status": str, "operator": str, "error": str,
        "created_at": float, "submitted_at": float, "done_at": float,
    }, pk="id", not_null=["agency", "sender", "recipient", "text", "priority",
                          "validity_s", "receipt", "data_coding", "esm_class", "parts",
                          "parts_submitted", "parts_delivered", "parts_failed",
                          "status", "created_at"],
        defaults={"parts_submitted": 0, "parts_delivered": 0, "parts_failed": 0,
                  "status": "queued"},
        if_not_exists=True)
    # priority is copied from the message so that the claim index covers it.
    db["parts"].create({
        "message_id": str, "seq": int, "priority": int, "payload": bytes, "state": str,
        "attempts": int, "not_before": float, "operator": str, "smsc_id": str,
        "error": str,
    }, pk=("message_id", "seq"), foreign_keys=[("message_id", "messages", "id")],
        not_null=["priority", "payload", "state", "attempts", "not_before"],
        defaults={"state": "queued", "attempts": 0}, if_not_exists=True)
    db["receipt_keys"].create({
        "key": str, "operator": str, "message_id": str, "seq": int,
    }, not_null=["key", "message_id", "seq"], if_not_exists=True)
    db["pending_receipts"].create({
        "key": str, "operator": str, "state": str, "error": str, "received_at": float,
    }, not_null=["key", "state", "received_at"], if_not_exists=True)
    db["idempotency"].create({
        "agency": str, "key": str, "response": str, "created_at": float,
    }, pk=("agency", "key"), not_null=["response", "created_at"], if_not_exists=True)
    db["inbound"].create({
        "id": int, "operator": str, "received_at": float, "fields": str, "tlvs": str,
    }, pk="id", not_null=["received_at", "fields", "tlvs"], if_not_exists=True)
    db["audit"].create({
        "id": int, "at": float, "event": str, "agency": str, "detail": str,
    }, pk="id", not_null=["at", "event", "detail"], if_not_exists=True)
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)

    # Claim scans only queued parts: a partial index stays small however many finished
    # parts the table holds, and (priority, not_before, rowid) is the claim order, so a
    # claim reads exactly the rows it takes even with 1,000,000 parts waiting.
    db.execute("CREATE INDEX IF NOT EXISTS parts_claim ON parts (priority DESC, not_before)"
               " WHERE state = 'queued'")
    db["receipt_keys"].create_index(["key"], "receipt_keys_key", if_not_exists=True)
    db["receipt_keys"].create_index(["message_id"], "receipt_keys_message",
                                    if_not_exists=True)
    db["pending_receipts"].create_index(["key"], "pending_receipts_key", if_not_exists=True)
    db["pending_receipts"].create_index(["received_at"], "pending_receipts_age",
                                        if_not_exists=True)
    # parts_used() sums parts per agency and day: covering index, no table reads.
    db["messages"].create_index(["agency", "created_at", "parts"], "messages_agency_created",
                                if_not_exists=True)
    db.execute("CREATE INDEX IF NOT EXISTS messages_done ON messages (done_at)"
               " WHERE done_at IS NOT NULL")
    db["idempotency"].create_index(["created_at"], "idempotency_age", if_not_exists=True)


FINAL_STATES_SQL = "(" + ", ".join(f"'{state}'" for state in FINAL_STATES) + ")"

# part_submitted's head and its message's counts, as every version has them (migration
# 2 then filed the part in receipt_keys too; 21 leaves that out).
_PART_SUBMITTED_COUNTED = """
        AFTER UPDATE OF state ON parts
        WHEN new.state = 'submitted' AND old.state IN ('queued', 'sending')
        BEGIN
          UPDATE messages SET parts_submitted = parts_submitted + 1,
            operator = COALESCE(new.operator, operator),
            submitted_at = CASE WHEN status = 'queued' AND parts_submitted + 1 >= parts
              THEN new.changed_at ELSE submitted_at END,
            status = CASE WHEN status = 'queued' AND parts_submitted + 1 >= parts
              THEN 'submitted' ELSE status END
          WHERE id = new.message_id;"""

# A message's counters and status follow its parts: each part state change updates its
# message inside the same statement.  The writer can then change a whole batch of parts
# with one set-based UPDATE (see operations.py) instead of two statements per part.
_PART_TRIGGERS = {
    "part_submitted": _PART_SUBMITTED_COUNTED + """
          INSERT INTO receipt_keys (key, operator, message_id, seq)
            SELECT new.receipt_key, new.operator, new.message_id, new.seq
            WHERE new.receipt_key IS NOT NULL;
        END""",
    "part_delivered": f"""
        AFTER UPDATE OF state ON parts
        WHEN new.state = 'delivered' AND old.state NOT IN {FINAL_STATES_SQL}
        BEGIN
          UPDATE messages SET parts_delivered = parts_delivered + 1,
            done_at = CASE WHEN status IN ('queued', 'submitted')
              AND parts_delivered + 1 >= parts THEN new.changed_at ELSE done_at END,
            status = CASE WHEN status IN ('queued', 'submitted')
              AND parts_delivered + 1 >= parts THEN 'delivered' ELSE status END
          WHERE id = new.message_id;
        END""",
    # A failed or expired part ends its message, unless the message already ended.
    "part_ended": f"""
        AFTER UPDATE OF state ON parts
        WHEN new.state IN ('failed', 'expired') AND old.state NOT IN {FINAL_STATES_SQL}
        BEGIN
          UPDATE messages SET parts_failed = parts_failed + 1,
            error = CASE WHEN status IN {FINAL_STATES_SQL} THEN error ELSE new.error END,
            done_at = CASE WHEN status IN {FINAL_STATES_SQL} THEN done_at ELSE new.changed_at END,
            operator = COALESCE(operator, new.operator),
            status = CASE WHEN status IN {FINAL_STATES_SQL} THEN status ELSE new.state END
          WHERE id = new.message_id;
        END""",
}


# part_submitted from migration 21 on: the part's receipt_key (set by the same UPDATE)
# is its filing for receipts, in the index parts_receipt_key.
_PART_SUBMITTED_V21 = _PART_SUBMITTED_COUNTED + """
        END"""


def _v2_part_triggers(db):
    # changed_at: when the part last changed state; receipt_key: the normalised SMSC id
    # its receipts are looked up under (the trigger files it in receipt_keys).
    columns = db["parts"].columns_dict
    for name, kind in (("changed_at", float), ("receipt_key", str)):
        if name not in columns:
            db["parts"].add_column(name, kind)
    for name, body in _PART_TRIGGERS.items():
        db.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")


def _v3_awaiting_index(db):
    # Housekeeping's sweep of messages still 'submitted' (receipts that never came,
    # messages sent without receipts) reads only those.
    db.execute("CREATE INDEX IF NOT EXISTS messages_awaiting ON messages (created_at)"
               " WHERE status = 'submitted'")


def _v4_part_routes(db):
    # route: the operator a part's recipient preferred when it was accepted.  The
    # dispatcher claims per route, as much as that operator's lane can take, so a slow
    # operator's backlog waits here without holding back anyone else's (Kannel and
    # Jasmin keep a queue per SMSC connection for the same reason).  Parts stored
    # before this migration have none (NULL) and are claimed as a route of their own.
    if "route" not in db["parts"].columns_dict:
        db["parts"].add_column("route", str)
    db.execute("CREATE INDEX IF NOT EXISTS parts_route_claim"
               " ON parts (route, priority, not_before) WHERE state = 'queued'")
    db.execute("DROP INDEX IF EXISTS parts_claim")


def _v5_unknown_outcomes(db):
    # unknowns: sends of this part whose outcome we never learnt (no response, a lost
    # session). Each may have reached the citizen, so they are capped per operator
    # (max_unknown_outcomes) apart from the attempts that temporary errors count.
    if "unknowns" not in db["parts"].columns_dict:
        db.execute("ALTER TABLE parts ADD COLUMN unknowns INTEGER NOT NULL DEFAULT 0")


def _v6_receipt_id_bases(db):
    # id_base: the base (gateway.receipt_ids.ID_BASES) under which a kept receipt's key
    # was read, i.e. its key is the submit_sm_resp id it waits for; NULL while its
    # operator's base is not known yet (the key is then the receipt's own normal id),
    # "-" when the id cannot be read in that base.  Receipts kept before this migration
    # are NULL: they are read again once their operator's base is known.
    if "id_base" not in db["pending_receipts"].columns_dict:
        db["pending_receipts"].add_column("id_base", str)
    db.execute("CREATE INDEX IF NOT EXISTS pending_receipts_unread"
               " ON pending_receipts (operator) WHERE id_base IS NULL")
    # A receipt reaches only parts of its own operator: keys filed without one take
    # the part's.
    db.execute("UPDATE receipt_keys SET operator = (SELECT p.operator FROM parts p"
               " WHERE p.message_id = receipt_keys.message_id AND p.seq = receipt_keys.seq)"
               " WHERE operator IS NULL")


def _v7_retention_indexes(db):
    # Housekeeping purges audit and raw inbound rows by age (retention:); without an
    # index each hourly round would read the whole table.
    db.execute("CREATE INDEX IF NOT EXISTS audit_at ON audit (at)")
    db.execute("CREATE INDEX IF NOT EXISTS inbound_received ON inbound (received_at)")


def _v8_claim_leases(db):
    # The lease of a part being sent ('sending'): when it was claimed (claimed_at) and
    # by which running store (owner, "host:pid:random").  A lease of another owner
    # older than the lease time is taken back by the claim, so several processes can
    # share the store; at open, the leases of this node's previous run are released
    # (meta 'lease_owner:<node>').  Parts left 'sending' before this migration have
    # neither and are released at open.  The partial index holds only parts in flight.
    columns = db["parts"].columns_dict
    for name, kind in (("claimed_at", float), ("owner", str)):
        if name not in columns:
            db["parts"].add_column(name, kind)
    db.execute("CREATE INDEX IF NOT EXISTS parts_leases ON parts (claimed_at)"
               " WHERE state = 'sending'")


def _v9_inbox(db):
    # The agencies' inboxes: citizens' replies (SMS, USSD filings, partner apps), and
    # the unrouted box (agency NULL: an MO to a 4040 number nobody owns).  `seq` orders
    # an inbox and is its paging cursor; `id` is what the API shows.  `source_key`
    # (unique when set) is what the intake that filed it knows the message by, so a
    # redelivered MO is filed once.  in_reply_to is found at filing: the latest message
    # this agency sent from that number to that citizen (index messages_recipient).
    db.execute(
        "CREATE TABLE IF NOT EXISTS inbox ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " agency TEXT,"
        " number TEXT NOT NULL,"
        " citizen TEXT NOT NULL,"
        " text TEXT NOT NULL,"
        " channel TEXT NOT NULL,"
        " operator TEXT,"
        " received_at REAL NOT NULL,"
        " in_reply_to TEXT,"
        " partial INTEGER NOT NULL DEFAULT 0,"
        " source_key TEXT UNIQUE)")
    db.execute("CREATE INDEX IF NOT EXISTS inbox_agency ON inbox (agency, seq)")
    db.execute("CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at)")
    db.execute("CREATE INDEX IF NOT EXISTS messages_recipient"
               " ON messages (recipient, created_at)")


def _v10_correspondence(db):
    # Issue 8, correspondence.
    # mo_parts: a citizen's SMS parts kept until their set is whole (answered
    # deliver_sm_resp only once committed here), then `settled` once the whole was
    # handled; settled rows stay a few minutes so a redelivered part is recognised.
    # set_id = set_key + "@" + when the set's first part came (a reference is reused).
    db.execute(
        "CREATE TABLE IF NOT EXISTS mo_parts ("
        " set_id TEXT NOT NULL,"
        " set_key TEXT NOT NULL,"
        " seq INTEGER NOT NULL,"
        " total INTEGER NOT NULL,"
        " operator TEXT NOT NULL,"
        " citizen TEXT NOT NULL,"
        " destination TEXT NOT NULL,"
        " data_coding INTEGER NOT NULL,"
        " body BLOB NOT NULL,"
        " received_at REAL NOT NULL,"
        " first_at REAL NOT NULL,"
        " settled INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (set_id, seq))")
    db.execute("CREATE INDEX IF NOT EXISTS mo_parts_key ON mo_parts (set_key, settled)")
    db.execute("CREATE INDEX IF NOT EXISTS mo_parts_citizen"
               " ON mo_parts (operator, citizen, settled)")
    db.execute("CREATE INDEX IF NOT EXISTS mo_parts_age ON mo_parts (settled, first_at)")
    # webhook_pushes: the reply webhook's delivery state per inbox message, so that
    # pushes survive a restart; state 'pending' (due at next_at), 'ok' or 'failed'.
    db.execute(
        "CREATE TABLE IF NOT EXISTS webhook_pushes ("
        " inbox_seq INTEGER PRIMARY KEY,"
        " agency TEXT NOT NULL,"
        " state TEXT NOT NULL DEFAULT 'pending',"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_at REAL NOT NULL,"
        " created_at REAL NOT NULL,"
        " last_error TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS webhook_pushes_due"
               " ON webhook_pushes (agency, next_at) WHERE state = 'pending'")
    # opt_outs: citizens who sent STOP to an agency that allows it (opt_out: true).
    db.execute(
        "CREATE TABLE IF NOT EXISTS opt_outs ("
        " agency TEXT NOT NULL,"
        " citizen TEXT NOT NULL,"
        " at REAL NOT NULL,"
        " PRIMARY KEY (agency, citizen))")


def _v14_broadcasts(db):
    # A broadcast keeps its text and encoded parts once (broadcasts, broadcast_parts);
    # per recipient only the number and its route (broadcast_recipients; the primary key
    # sends a repeated number once).  The feeder turns recipients into messages and
    # parts a batch at a time while the broadcast drains (`fed` of them so far, in
    # number order after `cursor`): a broadcast part stores no payload of its own, the
    # claim reads it from broadcast_parts (messages.broadcast_id) and writes the
    # recipient's concatenation reference into its UDH.
    db.execute(
        "CREATE TABLE IF NOT EXISTS broadcasts ("
        " id TEXT PRIMARY KEY, agency TEXT NOT NULL, sender TEXT NOT NULL,"
        " text TEXT NOT NULL, priority INTEGER NOT NULL, validity_s INTEGER NOT NULL,"
        " receipt INTEGER NOT NULL, data_coding INTEGER NOT NULL,"
        " esm_class INTEGER NOT NULL, parts INTEGER NOT NULL, created_at REAL NOT NULL,"
        " state TEXT NOT NULL, recipients INTEGER NOT NULL, invalid INTEGER NOT NULL,"
        " fed INTEGER NOT NULL DEFAULT 0, cursor INTEGER NOT NULL DEFAULT 0,"
        " cancelled INTEGER NOT NULL DEFAULT 0, cancelled_fed INTEGER NOT NULL DEFAULT 0,"
        " done_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS broadcasts_agency"
               " ON broadcasts (agency, created_at)")
    db.execute("CREATE TABLE IF NOT EXISTS broadcast_parts ("
               " broadcast_id TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
               " PRIMARY KEY (broadcast_id, seq)) WITHOUT ROWID")
    db.execute("CREATE TABLE IF NOT EXISTS broadcast_recipients ("
               " broadcast_id TEXT NOT NULL, number INTEGER NOT NULL, route TEXT,"
               " PRIMARY KEY (broadcast_id, number)) WITHOUT ROWID")
    if "broadcast_id" not in db["messages"].columns_dict:
        db["messages"].add_column("broadcast_id", str)
    # Progress counts per status read only this index.
    db.execute("CREATE INDEX IF NOT EXISTS messages_broadcast ON messages"
               " (broadcast_id, status) WHERE broadcast_id IS NOT NULL")


def _v11_sent_fingerprints(db):
    # The 4040 authenticity check keeps, per message an agency sent, only what the check
    # needs: the fingerprint of its text (gateway.text.fingerprint: a keyed hash of the
    # normal form, never the text), the recipient, the agency and when it was accepted.
    # Kept for authenticity.retention_days, apart from the messages.  The check is one
    # seek of the primary key (digest, recipient) per candidate text, then one of digest
    # alone ("sent, but to someone else").  WITHOUT ROWID: the key is the table.  The
    # key of the HMAC is made here, once per store, and kept in meta (and in backups).
    db.execute(
        "CREATE TABLE IF NOT EXISTS sent_fingerprints ("
        " digest BLOB NOT NULL,"
        " recipient TEXT NOT NULL,"
        " sent_at REAL NOT NULL,"
        " agency TEXT NOT NULL,"
        " PRIMARY KEY (digest, recipient, sent_at, agency)) WITHOUT ROWID")
    db.execute("CREATE INDEX IF NOT EXISTS sent_fingerprints_age"
               " ON sent_fingerprints (sent_at)")
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fingerprint_key', ?)",
               (os.urandom(32).hex(),))


def _v12_ussd_dialogs(db):
    # One row per USSD dialog, written when it ends, kept like a CDR (retention `ussd`).
    db.execute(
        "CREATE TABLE IF NOT EXISTS ussd_dialogs ("
        " id TEXT PRIMARY KEY,"
        " agency TEXT NOT NULL,"
        " operator TEXT,"
        " msisdn TEXT NOT NULL,"
        " code TEXT NOT NULL,"
        " started_at REAL NOT NULL,"
        " ended_at REAL NOT NULL,"
        " steps INTEGER NOT NULL,"
        " end_reason TEXT NOT NULL,"
        " last_state TEXT,"
        " tracking TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS ussd_dialogs_ended ON ussd_dialogs (ended_at)")


def _v15_idempotency_request_hash(db):
    # What the first request with a key asked for, as a short hash of its canonical
    # form: the same key with another body is refused (409), not replayed.  NULL for
    # keys stored before this column: those replay as before.
    db.execute("ALTER TABLE idempotency ADD COLUMN request_hash TEXT")


def _v13_audit_rules_and_status_counts(db):
    # The audit table becomes append-only (audit_trail.py says how the retention purge
    # alone may delete), and the per-install salt that citizens' numbers in audit rows
    # are hashed with is made once, here, never to change.
    from gateway.store.audit_trail import SALT_KEY, triggers_sql
    for statement in triggers_sql():
        db.execute(statement)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, lower(hex(randomblob(32))))",
               (SALT_KEY,))
    # How many messages of each agency reached each status since the store began, kept
    # by a trigger (one upsert of a tiny table per status change) so that the per-agency
    # metrics are read in a few rows, never by counting the messages table.
    db.execute("CREATE TABLE IF NOT EXISTS status_counts (agency TEXT NOT NULL,"
               " status TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (agency, status))")
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS message_status_counted AFTER UPDATE OF status"
        " ON messages WHEN NEW.status IS NOT OLD.status BEGIN"
        " INSERT INTO status_counts (agency, status, n) VALUES (NEW.agency, NEW.status, 1)"
        " ON CONFLICT (agency, status) DO UPDATE SET n = n + 1; END")


def _v16_national_id_recipients(db):
    # A recipient an agency addressed by national ID: the ID it gave is kept with the
    # message (GET /v1/messages/{id} shows it and only a masked number: the agency
    # asked for a citizen, not for the citizen's number), and with a broadcast's
    # recipient until it is fed; a broadcast counts the IDs the directory did not know.
    if "national_id" not in db["messages"].columns_dict:
        db.execute("ALTER TABLE messages ADD COLUMN national_id TEXT")
    if "national_id" not in db["broadcast_recipients"].columns_dict:
        db.execute("ALTER TABLE broadcast_recipients ADD COLUMN national_id TEXT")
    if "unknown_citizens" not in db["broadcasts"].columns_dict:
        db.execute("ALTER TABLE broadcasts ADD COLUMN unknown_citizens INTEGER NOT NULL"
                   " DEFAULT 0")


def _v17_email_fallbacks(db):
    # Issue 12 item 6: a message asked with "fallback": "email" has a row here from its
    # accept (store/email_fallbacks.py says what each status means); the trigger makes
    # it due when its SMS fails or expires, and not needed when it is delivered.
    from gateway.store.email_fallbacks import schema_sql
    for statement in schema_sql(FINAL_STATES_SQL):
        db.execute(statement)
def _v18_quota_used(db):
    # Parts each agency used per quota day, counted in the accept's transaction when
    # several processes accept into this store (gateway/store/quota.py).
    db.execute("CREATE TABLE IF NOT EXISTS quota_used (agency TEXT NOT NULL,"
               " day_start REAL NOT NULL, used INTEGER NOT NULL,"
               " PRIMARY KEY (agency, day_start))")


def _v19_drain_triggers(db):
    # The email fallback's trigger (migration 17) runs its UPDATE of email_fallbacks
    # for every message that ends, though only single messages accepted with
    # "fallback": "email" have a row there: a broadcast's messages (fed, never
    # accepted one by one) never do.  Skipping them first in WHEN measured 30 SQLite
    # steps and ~14 µs of writer CPU per drained broadcast part's receipt, ~13 % of the
    # writer's work per part (bench/broadcast_store.py); single messages are as before.
    from gateway.store.email_fallbacks import schema_sql
    ended = next(statement for statement in schema_sql(FINAL_STATES_SQL)
                 if "email_fallback_sms_ended" in statement)
    guarded = ended.replace(" ON messages WHEN ",
                            " ON messages WHEN NEW.broadcast_id IS NULL AND ", 1)
    assert guarded != ended, "the email fallback trigger's WHEN was not found"
    db.execute("DROP TRIGGER IF EXISTS email_fallback_sms_ended")
    db.execute(guarded)


def _v20_fallback_flag(db):
    # Migration 19's guard still left the email fallback trigger's UPDATE of
    # email_fallbacks (write cursors on the table and its indexes, a probe that meets
    # nothing) to every single message that ends, though only the few accepted with
    # "fallback": "email" have a row there.  Messages now carry a flag, set by a trigger
    # when their fallback row is inserted (the accept inserts the message first), and
    # the ending trigger's WHEN reads it.  bench/writer_mix.py (42 messages a commit):
    # receipts 16.6 -> 11.8 µs of writer CPU a message, outcomes 12.0 -> 10.3, the
    # writer's whole mix 49.3 -> 42.9 µs/msg.
    if "email_fallback" not in db["messages"].columns_dict:
        db.execute("ALTER TABLE messages ADD COLUMN email_fallback INTEGER")
    db.execute("CREATE TRIGGER IF NOT EXISTS email_fallback_flagged AFTER INSERT"
               " ON email_fallbacks BEGIN UPDATE messages SET email_fallback = 1"
               " WHERE id = NEW.message_id; END")
    db.execute("UPDATE messages SET email_fallback = 1 WHERE email_fallback IS NULL"
               " AND id IN (SELECT message_id FROM email_fallbacks)")
    from gateway.store.email_fallbacks import schema_sql
    ended = next(statement for statement in schema_sql(FINAL_STATES_SQL)
                 if "email_fallback_sms_ended" in statement)
    flagged = ended.replace(" ON messages WHEN ",
                            " ON messages WHEN NEW.email_fallback = 1 AND ", 1)
    assert flagged != ended, "the email fallback trigger's WHEN was not found"
    db.execute("DROP TRIGGER IF EXISTS email_fallback_sms_ended")
    db.execute(flagged)


def _v21_receipt_keys_on_parts(db):
    # A part is filed for its receipts under exactly one key, the normal form of its
    # submit_sm_resp id (receipts.py), which parts.receipt_key has held since migration
    # 2: the receipt_keys table (from when a part was filed under several readings of
    # its id) copied it, with the part's operator, into a table and two indexes, an
    # INSERT from part_submitted per submitted part.  A partial index of parts holds
    # the same (key, operator) → part, is written by the UPDATE that submits the part
    # and is purged with it.  bench/writer_mix.py (16 messages a commit): WAL pages a
    # commit 38.1 -> 34.6 (receipt_keys' three B-trees 6.6, the index 3.0).  Parts
    # filed before migration 2 have no receipt_key: they take
    # it (and an operator they lack) from receipt_keys, the normal form of their own
    # id among theirs if there, else the first filed.
    from gateway.receipt_ids import normal_id
    db.execute("CREATE INDEX IF NOT EXISTS parts_receipt_key ON parts (receipt_key, operator)"
               " WHERE receipt_key IS NOT NULL")
    if "receipt_keys" in db.table_names():
        filed = {}
        for message_id, seq, smsc_id, key, operator in db.execute(
                "SELECT p.message_id, p.seq, p.smsc_id, rk.key, rk.operator"
                " FROM receipt_keys rk JOIN parts p ON p.message_id = rk.message_id"
                " AND p.seq = rk.seq WHERE p.receipt_key IS NULL ORDER BY rk.rowid").fetchall():
            filed.setdefault((message_id, seq), (smsc_id, []))[1].append((key, operator))
        for (message_id, seq), (smsc_id, keys) in filed.items():
            try:
                own = normal_id(smsc_id)
            except ValueError:
                own = None
            key, operator = next((k for k in keys if k[0] == own), keys[0])
            db.execute("UPDATE parts SET receipt_key = ?, operator = COALESCE(operator, ?)"
                       " WHERE message_id = ? AND seq = ?", (key, operator, message_id, seq))
        db.execute("DROP TABLE receipt_keys")     # its two indexes go with it
    db.execute("DROP TRIGGER IF EXISTS part_submitted")
    db.execute(f"CREATE TRIGGER part_submitted {_PART_SUBMITTED_V21}")


def _v22_no_done_index(db):
    # messages_done (done_at, every ended message) served only housekeeping's purge of
    # ended messages, an index entry written each time a message ends.  A message ends
    # after it was created, so those that ended before a cutoff were created before
    # it: the purge reads them per agency in messages_agency_created (agency,
    # created_at), which the accept writes anyway (operations._ENDED_BEFORE).
    # bench/writer_mix.py (16 messages a commit): 1.9 WAL pages a commit fewer.
    db.execute("DROP INDEX IF EXISTS messages_done")


# `x IN ('delivered', 'failed', 'expired')` in a trigger: SQLite codes an IN list of more
# than two constants as a probe of an ephemeral index that it builds (opens a temporary
# B-tree, inserts the three values) each time the trigger program runs, i.e. for every
# row the triggering UPDATE changes; written as comparisons it builds nothing.
_FINAL_IN = re.compile(r"([\w.]+) (NOT )?IN " + re.escape(FINAL_STATES_SQL))


def _final_comparisons(match):
    column, negated = match.group(1), match.group(2)
    if negated:
        return "(" + " AND ".join(f"{column} <> '{state}'" for state in FINAL_STATES) + ")"
    return "(" + " OR ".join(f"{column} = '{state}'" for state in FINAL_STATES) + ")"


def _v23_triggers_without_in_lists(db):
    # The part triggers (migration 2) and the email fallback's (17, 19, 20) test a
    # state against the final ones with IN lists: each built its ephemeral index per
    # part changed (see _FINAL_IN).  The same tests, as comparisons (states are never
    # NULL).  bench/writer_mix.py (16 messages a commit): SQLite instructions in the
    # writer's statements (callgrind) 263k -> 233k a message (-11 %).
    for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                                " ORDER BY name").fetchall():
        rewritten = _FINAL_IN.sub(_final_comparisons, sql)
        if rewritten != sql:
            db.execute(f"DROP TRIGGER {name}")
            db.execute(rewritten)


# (version, function) in order; never renumber or edit one that has shipped.
MIGRATIONS = [
    (1, _v1_initial),
    (2, _v2_part_triggers),
    (3, _v3_awaiting_index),
    (4, _v4_part_routes),
    (5, _v5_unknown_outcomes),
    (6, _v6_receipt_id_bases),
    (7, _v7_retention_indexes),
    (8, _v8_claim_leases),
    (9, _v9_inbox),
    (10, _v10_correspondence),
    (11, _v11_sent_fingerprints),
    (12, _v12_ussd_dialogs),
    (13, _v13_audit_rules_and_status_counts),
    (14, _v14_broadcasts),
    (15, _v15_idempotency_request_hash),
    (16, _v16_national_id_recipients),
    (17, _v17_email_fallbacks),
    (18, _v18_quota_used),
    (19, _v19_drain_triggers),
    (20, _v20_fallback_flag),
    (21, _v21_receipt_keys_on_parts),
    (22, _v22_no_done_index),
    (23, _v23_triggers_without_in_lists),
]


def migrate(path, now=None):
    """Bring the database at `path` up to the newest version; returns that version."""
    db = sqlite_utils.Database(path)
    try:
        # WAL is a property of the file: set once here, every connection then uses it.
        db.execute("PRAGMA journal_mode=WAL")
        db["migrations"].create({"version": int, "applied_at": float}, pk="version",
                                if_not_exists=True)
        done = {row["version"] for row in db["migrations"].rows}
        version = max(done, default=0)
        for number, step in MIGRATIONS:
            if number in done:
                continue
            log.info("applying store migration %d (%s)", number, step.__name__)
            step(db)
            db["migrations"].insert({"version": number,
                                     "applied_at": time.time() if now is None else now})
            version = number
        return version
    finally:
        db.close()
