"""The audit table's rules: append-only, purged only by retention, citizens' numbers
kept as salted hashes; and reading it for `payam-gateway audit`.

Append-only is the database's rule, not the code's good manners (migration 13): a
trigger refuses every UPDATE of an audit row, and a DELETE unless the SQL function
`payam_audit_purge(at)` says the row is past the cutoff of a retention purge running
now.  Only the store's writer connection defines that function (AuditPurgeGate), and
only Store.purge opens the gate, for the one DELETE, with its cutoff: any other
connection (sqlite3 on the file, a script) meets "no such function" and deletes
nothing, and the gateway's own connection can delete no row younger than retention.

Numbers: an audit row never holds a citizen's number, plain or masked, but its
HMAC-SHA256 under a salt made at the store's first open (meta `audit_salt`, migration
13), so rows about one citizen can be found (`--number`) without the table naming them.
"""

import contextlib
import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

PURGE_FUNCTION = "payam_audit_purge"
SALT_KEY = "audit_salt"
HASH_PREFIX = "h:"
HASH_HEX = 16                   # 64 bits: distinct per citizen, useless without the salt
# Events that are a refusal of what an agency asked (the `--refused` filter).
REFUSALS = ("sender_refused", "link_refused")


def number_hash(salt, msisdn):
    """'h:' + 16 hex of HMAC-SHA256(salt, number): the same for one number in one
    install, unrelated across installs."""
    digest = hmac.new(salt.encode("ascii"), msisdn.encode("utf-8"), hashlib.sha256)
    return HASH_PREFIX + digest.hexdigest()[:HASH_HEX]


def read_salt(conn):
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SALT_KEY,)).fetchone()
    return row[0] if row else None


class AuditPurgeGate:
    """The SQL function the audit DELETE trigger asks; closed (0 for every row) except
    inside `purging(before)`, on the connection it is installed on."""

    def __init__(self):
        self.before = None

    def install(self, conn):
        conn.create_function(PURGE_FUNCTION, 1, self._permits, deterministic=False)

    def _permits(self, at):
        before = self.before
        return 1 if before is not None and at is not None and at < before else 0

    @contextlib.contextmanager
    def purging(self, before):
        self.before = before
        try:
            yield
        finally:
            self.before = None


def triggers_sql():
    """The statements of migration 13's triggers."""
    return [
        "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END",
        f"CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
        f" WHEN NOT {PURGE_FUNCTION}(OLD.at)"
        " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: only the retention"
        " purge removes them'); END",
    ]


# -- reading, for the CLI ----------------------------------------------------------------

def open_read_only(path):
    """The store at `path`, read-only (safe beside the running daemon).  A stopped
    store (no -wal, no -shm beside it) is opened immutable: a read-only WAL connection
    would otherwise create them, owned by whoever runs the CLI (root), and the
    daemon's user could then not open its own store."""
    if not Path(path).exists():
        raise FileNotFoundError(f"store {path} does not exist")
    stopped = not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    uri = Path(path).resolve().as_uri() + ("?mode=ro&immutable=1" if stopped else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def rows(conn, *, since=None, agency=None, refused=False, number=None):
    """Audit rows (id, at, event, agency, detail dict), oldest first, as an iterator:
    since a timestamp, of one agency, only refusals, only those naming a number (an
    MSISDN in international form, matched by its hash)."""
    where, args = [], []
    if since is not None:
        where.append("at >= ?")
        args.append(since)
    if agency is not None:
        where.append("agency = ?")
        args.append(agency)
    if refused:
        where.append(f"event IN ({', '.join('?' for _ in REFUSALS)})")
        args.extend(REFUSALS)
    if number is not None:
        salt = read_salt(conn)
        if salt is None:
            return iter(())
        where.append("instr(detail, ?) > 0")
        args.append(number_hash(salt, number))
    sql = "SELECT id, at, event, agency, detail FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    cursor = conn.execute(sql + " ORDER BY id", args)
    return ((id_, at, event, agency, _detail(detail))
            for id_, at, event, agency, detail in cursor)


def _detail(text):
    try:
        value = json.loads(text)
    except ValueError:
        return {"detail": text}
    return value if isinstance(value, dict) else {"detail": value}
