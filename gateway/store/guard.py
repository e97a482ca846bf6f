"""The store file's safety: a damaged file is named, a deleted one is never silently
replaced by an empty one.

Beside the database lives a marker, `.<dbname>.payam-id` in the same directory,
holding the store's id; the store's `meta` table holds the same id.  A first start
creates both.  Later starts refuse a database that is missing (or empty) while its
marker says one existed — 2,000 queued messages once vanished that way, with /healthz
answering 200 — unless told to begin an empty store (`payam-gateway run
--create-store`), and refuse a database whose id is not the marker's.  The marker's name
is outside the `<db>*` glob people clear the -wal and -shm files with: the first marker,
`<db>.id`, went with them (`rm gateway.db*`) and the store began anew; a marker under
that old name is still read, and moved to the new name at the next open.

Before opening, a present database is checked page by page (PRAGMA quick_check): a
damaged page the start-up never reads (a table's root overwritten) would otherwise go
unnoticed until a write met it.  Nothing here needs a running store: check-config uses
problems().
"""

import logging
import os
import sqlite3
import uuid
from pathlib import Path

log = logging.getLogger("payam.store")

SQLITE_HEADER = b"SQLite format 3\x00"
MARKER_SUFFIX = ".payam-id"
OLD_MARKER_SUFFIX = ".id"          # `<db>.id`, until it was found inside `rm <db>*`
_MARKER_NOTE = ("# The Payam Gateway store beside this file has the id above. Keep this "
                "file: without its store the daemon refuses to start (see README).\n")


class StoreUnusable(Exception):
    """The store cannot be opened as it is.  `lasting`: a person must act (restore,
    move aside, create anew); otherwise the cause may pass (disk full, locked)."""

    def __init__(self, path, problem, remedy, lasting=True):
        super().__init__(path, problem, remedy)
        self.path, self.problem, self.remedy, self.lasting = path, problem, remedy, lasting

    def __str__(self):
        return f"store {self.path} {self.problem}: {self.remedy}"


def marker_path(path):
    """`<dir>/.<dbname>.payam-id`: a name `rm <db>*` does not match."""
    path = Path(path)
    return str(path.with_name("." + path.name + MARKER_SUFFIX))


def old_marker_path(path):
    return str(path) + OLD_MARKER_SUFFIX


def found_marker(path):
    """(marker file, store id) of the marker beside `path` — under its name, else under
    the old one — or (marker_path, None) without one."""
    for marker in (marker_path(path), old_marker_path(path)):
        try:
            text = Path(marker).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        lines = text.splitlines()
        if lines and lines[0].strip():
            return marker, lines[0].strip()
    return marker_path(path), None


def present(path):
    """Whether a database file with content is there (SQLite treats an empty file as a
    new, empty database: for us that is a missing store)."""
    try:
        return os.path.getsize(path) > 0
    except (FileNotFoundError, NotADirectoryError):
        return False


def before_open(path, create=False):
    """Raise StoreUnusable if the file at `path` must not be opened or created."""
    marker_file, marker = found_marker(path)
    if not present(path):
        if marker is not None and not create:
            raise StoreUnusable(
                path, f"is missing, but {marker_file} shows that store {marker} "
                      "existed there",
                "restore it from a backup (with its -wal file, if any), or start with "
                "--create-store to begin an empty store")
        return
    problem = _header_problem(path) or _page_problem(path, writable=True)
    if problem:
        raise damaged(path, problem)


def adopt(conn, path, created):
    """After migration, on the write connection: the store's id, recorded in `meta`
    and in the marker.  Raises StoreUnusable if the database is another store."""
    marker_file, marker = found_marker(path)
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    store_id = row[0] if row else None
    if store_id is not None and marker is not None and store_id != marker:
        raise StoreUnusable(
            path, f"is store {store_id}, but {marker_file} says store {marker} "
                  "lives here",
            f"put that store back, or delete {marker_file} if this one is meant "
            "to replace it")
    if store_id is None:
        # A new store gets a new id; one from before markers existed keeps the id its
        # marker gives, if any.
        store_id = uuid.uuid4().hex if created or marker is None else marker
        if created and marker is not None:
            log.warning("began an empty store %s in place of store %s (--create-store)",
                        path, marker)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('store_id', ?)",
                     (store_id,))
    if marker != store_id or marker_file != marker_path(path):
        _write_marker(path, store_id)
    if os.path.exists(old_marker_path(path)):
        os.unlink(old_marker_path(path))       # moved to its new name
    return store_id


def damaged(path, error):
    return StoreUnusable(
        path, f"is damaged ({error})",
        "restore it from a backup or move it aside (with its -wal and -shm files); "
        "the daemon does not start on it")


def unusable(path, error):
    """StoreUnusable for an error met while opening the store at `path`."""
    if isinstance(error, sqlite3.DatabaseError) \
            and not isinstance(error, sqlite3.OperationalError):
        return damaged(path, error)     # not a database, malformed
    if getattr(error, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        # Another process (an sqlite3 shell, a copy tool) holds a lock past the busy
        # timeout: name that, and exit as locked (systemd tries again after RestartSec).
        from gateway.store.lock import StoreLocked      # (lock.py imports this module)
        return StoreLocked(path, f"is locked by another process ({error})",
                           f"find it with `fuser {path}` and let it finish or end it",
                           lasting=False)
    return StoreUnusable(path, f"cannot be opened ({error})",
                         "check its directory's permissions and free space",
                         lasting=False)


def problems(path):
    """What stops the store at `path` from opening, for check-config; reads only."""
    path = str(path)
    marker_file, marker = found_marker(path)
    if not present(path):
        if marker is not None:
            try:
                before_open(path)
            except StoreUnusable as e:
                return [str(e)]
        directory = _nearest_existing(Path(path).parent)
        if not directory.is_dir():
            return [f"store {path}: {directory} is not a directory"]
        if not os.access(directory, os.W_OK | os.X_OK):
            return [f"store {path}: directory {directory} is not writable"]
        return []
    problem = _header_problem(path) or _page_problem(path)
    if problem:
        return [str(damaged(path, problem))]
    try:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = {name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone() \
                if "meta" in tables else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return [str(unusable(path, e))]
    if "migrations" not in tables:
        return [f"store {path} is an SQLite database but not a Payam Gateway store: "
                "name another store.path"]
    if row is not None and marker is not None and row[0] != marker:
        return [f"store {path} is store {row[0]}, but {marker_file} says store "
                f"{marker} lives here: put that store back, or delete the marker if this "
                "one is meant to replace it"]
    if not os.access(path, os.W_OK):
        return [f"store {path}: the file is not writable"]
    directory = Path(path).parent
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates the -wal and -shm files beside the store.
        return [f"store {path}: directory {directory} is not writable (the store's -wal "
                "and -shm files are made there)"]
    return []


def _header_problem(path):
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if header != SQLITE_HEADER:
        return "file is not an SQLite database"
    return None


def _page_problem(path, writable=False):
    """What PRAGMA quick_check finds wrong with the database at `path`, or None.  It
    reads every page: ~1 s per 1,000,000 messages (700 MB) from the page cache,
    measured; see docs/operating.md.  `writable`: at start, where a -wal left by a
    crash must be applied (read-only, SQLite cannot without its -shm)."""
    try:
        uri = Path(path).resolve().as_uri() + ("?mode=rw" if writable else "?mode=ro")
        conn = sqlite3.connect(uri, uri=True)
        try:
            findings = conn.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None          # cannot be read now (locked, a -wal without -shm): opening says
    except sqlite3.DatabaseError as e:
        return str(e)
    if findings == [("ok",)]:
        return None
    finding = " ".join(" ".join(str(row[0]) for row in findings).split())   # one line
    return "integrity check: " + finding.replace("*** in database main *** ", "")[:200]


def _nearest_existing(directory):
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def _write_marker(path, store_id):
    """Replace the marker atomically: a crash leaves the old one or the new one."""
    marker = marker_path(path)
    temporary = marker + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(f"{store_id}\n{_MARKER_NOTE}")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, marker)
    directory = os.open(os.path.dirname(os.path.abspath(marker)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
