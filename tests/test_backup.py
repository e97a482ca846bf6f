"""`payam-gateway backup`: a verified copy of the store, taken while the daemon writes,
that restores as docs/operating.md says."""

import os
import shutil
import sqlite3
import subprocess
import threading

import pytest

from daemon_harness import KEYS, PYTHON, REPO, Daemon, Simulator, write_config
from gateway.store import schema
from gateway.store.backup import BackupFailed, backup
from gateway.store.guard import marker_path

TAX = KEYS["tax"]
MESSAGE = {"from": "40401234", "to": "09121234567", "text": "backup me"}


def run_cli(*args):
    return subprocess.run([PYTHON, "-m", "gateway.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def ids_in(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM messages")}
    finally:
        conn.close()


class Sender(threading.Thread):
    """Posts messages one after another until told to stop (bounded), keeping the ids."""

    def __init__(self, daemon, limit=2000):
        super().__init__(daemon=True)
        self.target, self.limit = daemon, limit
        self.ids, self.stopping = [], threading.Event()

    def run(self):
        while not self.stopping.is_set() and len(self.ids) < self.limit:
            code, body, _ = self.target.send(TAX, **MESSAGE)
            if code == 202:
                self.ids.append(body["messages"][0]["id"])


@pytest.fixture
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


def test_backup_while_the_daemon_writes_holds_every_committed_message_and_restores(
        tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start()
    copy = tmp_path / "backup.db"
    try:
        before = [daemon.send(TAX, **MESSAGE)[1]["messages"][0]["id"] for _ in range(30)]
        sender = Sender(daemon)
        sender.start()
        try:
            while len(sender.ids) < 10:         # the writer is busy while we copy
                sender.join(0.01)
            made = run_cli("backup", "-c", str(config), str(copy))
            during = list(sender.ids)
        finally:
            sender.stopping.set()
            sender.join(10)
        assert made.returncode == 0, made.stderr
        assert "integrity check ok" in made.stdout
        copied = ids_in(copy)
        # Every message answered 202 before the backup began is in it; nothing else is.
        assert set(before) | set(during[:10]) <= copied
        assert copied <= set(before) | set(sender.ids)
        with open(copy, "rb") as f:
            header = f.read(20)
        assert header[18:20] == b"\x01\x01"     # a rollback-journal file: self-contained
        assert not os.path.exists(f"{copy}-wal")
    finally:
        assert daemon.stop() == 0

    # Restore, as docs/operating.md says: stop, put the copy in place (no old -wal or
    # -shm beside it), keep the `.payam-id` marker, start.
    store = daemon.db_path
    for suffix in ("", "-wal", "-shm"):
        path = store.with_name(store.name + suffix)
        if path.exists():
            path.unlink()
    shutil.copy(copy, store)
    assert os.path.exists(marker_path(store))
    restored = Daemon(config, http_port).start()
    try:
        code, body, _ = restored.status(TAX, before[0])
        assert code == 200 and body["id"] == before[0]
        assert len(ids_in(store)) == len(copied)
    finally:
        assert restored.stop() == 0


def test_backup_never_overwrites_a_file(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start(wait_bound=False)
    try:
        existing = tmp_path / "monday.db"
        existing.write_bytes(b"last week's backup")
        refused = run_cli("backup", "-c", str(config), str(existing))
        assert refused.returncode == 1
        assert "already exists" in refused.stderr and str(existing) in refused.stderr
        assert existing.read_bytes() == b"last week's backup"
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["daemon.log", "gateway.yaml", "monday.db", "var"])     # no partial copy left
    finally:
        assert daemon.stop() == 0


def _stopped_store(directory):
    """A store as a cleanly stopped daemon leaves it: the .db alone (WAL mode, no -wal)."""
    path = directory / "gateway.db"
    schema.migrate(str(path))
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO messages (id, agency, sender, recipient, text, priority,"
                 " validity_s, receipt, data_coding, esm_class, parts, created_at)"
                 " VALUES ('m1', 'tax', '40401234', '989121234567', 'x', 0, 60, 1, 0, 0,"
                 " 1, 0)")
    conn.commit()
    conn.close()
    assert sorted(os.listdir(directory)) == ["gateway.db"]
    return path


def test_backup_of_a_stopped_store_makes_nothing_beside_it(tmp_path):
    # Files made beside the store by root (who runs backups) would be unwritable for
    # the daemon's own user at its next start.
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = _stopped_store(store_dir)
    made = backup(store, tmp_path / "copy.db")
    assert made.messages == 1 and ids_in(made.path) == {"m1"}
    assert sorted(os.listdir(store_dir)) == ["gateway.db"]


def test_backup_of_a_file_that_is_not_a_store_fails_and_leaves_nothing(tmp_path):
    damaged = tmp_path / "gateway.db"
    damaged.write_bytes(b"not a database\n" * 100)
    with pytest.raises(BackupFailed, match="copying"):
        backup(damaged, tmp_path / "copy.db")
    with pytest.raises(BackupFailed, match="does not exist"):
        backup(tmp_path / "missing.db", tmp_path / "copy.db")
    assert sorted(os.listdir(tmp_path)) == ["gateway.db"]
