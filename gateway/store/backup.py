"""Online backup of the store: a consistent, verified copy, safe while the daemon writes.

SQLite's backup API copies the database as one read transaction: in WAL mode that is a
snapshot of every committed transaction at its start, and the daemon's writer goes on
meanwhile.  The copy is written beside the output under a temporary name, checked with
PRAGMA integrity_check, switched to a plain rollback journal (one self-contained file)
and only then linked to its name, which fails if that name exists: a backup never
overwrites anything, and a failed one leaves nothing behind.

Nothing is created beside the store either.  A read-only connection to a WAL database
makes its -wal and -shm files if they are missing (a stopped daemon leaves none), and
files made there by root would be unwritable for the daemon's own user at its next
start.  With no -wal file there is nothing to lock against: the database file alone is
the store, and it is read as immutable.
"""

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.store import guard


class BackupFailed(Exception):
    """The backup was not made; the message says why (and nothing was written)."""


@dataclass(frozen=True)
class Backup:
    path: str                 # the copy, absolute
    store_id: str | None      # the store's id (its `.<db>.payam-id` marker holds the same)
    messages: int             # messages in the copy


def backup(source, output):
    """Copy the store at `source` to the new file `output`; a Backup, or BackupFailed."""
    source, output = os.path.abspath(source), os.path.abspath(output)
    if os.path.lexists(output):
        raise BackupFailed(f"{output} already exists: name a new file")
    if not os.path.isdir(os.path.dirname(output)):
        raise BackupFailed(f"{os.path.dirname(output)} is not a directory")
    if not guard.present(source):
        raise BackupFailed(f"store {source} does not exist (or is empty)")
    temporary = f"{output}.partial-{os.getpid()}"
    try:
        _copy(source, temporary)
        result = _verify(temporary)
        _publish(temporary, output)
    except sqlite3.Error as e:
        raise BackupFailed(f"copying {source} failed: {e}") from e
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return Backup(output, *result)


def _copy(source, target):
    wal_present = os.path.exists(source + "-wal")
    # immutable=1: no locks and no -wal/-shm made, for a database nobody is writing.
    options = "mode=ro" if wal_present else "mode=ro&immutable=1"
    src = sqlite3.connect(f"{Path(source).as_uri()}?{options}", uri=True)
    try:
        src.execute("PRAGMA busy_timeout=5000")
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst)            # all pages in one step: one snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    if not wal_present and os.path.exists(source + "-wal"):
        # A daemon started during the copy: its writes may have reached the file.  Once
        # more, as an ordinary reader (the -wal now exists, so this does not recurse).
        os.unlink(target)
        _copy(source, target)


def _verify(path):
    """(store id, message count) of a copy that passes integrity_check."""
    conn = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if verdict != ["ok"]:
            raise BackupFailed(f"the copy failed its integrity check: {'; '.join(verdict[:5])}")
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "messages" not in tables:
            raise BackupFailed("the source is an SQLite database but not a Payam Gateway store")
        row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone() \
            if "meta" in tables else None
        messages = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        conn.close()
    return (row[0] if row else None), messages


def _publish(temporary, output):
    """Durably give the checked copy its name; refuse if the name was taken meanwhile."""
    with open(temporary, "rb+") as f:
        os.fsync(f.fileno())
    try:
        os.link(temporary, output)         # unlike rename, never replaces a file
    except FileExistsError:
        raise BackupFailed(f"{output} already exists: name a new file") from None
    directory = os.open(os.path.dirname(output), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
