"""Store safety (issue 13 item 4): a store file that is damaged (cut short, garbage
after a valid header) or locked by another process gives one clear line and an exit
code of its own at start, never a traceback or a crash loop; and the store's size stays
bounded by retention under a week of traffic."""

import json
import sqlite3
import subprocess

import pytest
from daemon_harness import PYTHON, REPO, free_port, write_config
from threaded_clock import ThreadedClock

from gateway.store import Store, schema
from gateway.store.guard import StoreUnusable


def run_cli(*args, timeout=60):
    return subprocess.run([PYTHON, "-m", "gateway.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr):
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("level") == "ERROR":
            found.append(event["message"])
    return found


def _store_with_rows(db):
    schema.migrate(str(db))
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO audit (at, event, detail) VALUES (?, 'x', '{}')",
                         [(float(i),) for i in range(3000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")         # as a clean stop leaves it
    conn.close()


@pytest.mark.parametrize("damage", ["cut in half", "garbage after the header"])
def test_a_damaged_store_file_is_one_line_and_exit_65(tmp_path, damage):
    from gateway.cli import EXIT_STORE
    config, _ = write_config(tmp_path, free_port())
    db = tmp_path / "var" / "gateway.db"
    db.parent.mkdir()
    _store_with_rows(db)
    data = db.read_bytes()
    if damage == "cut in half":
        db.write_bytes(data[:len(data) // 2])
    else:
        db.write_bytes(data[:100] + bytes(range(256)) * ((len(data) - 100) // 256))
    ran = run_cli("run", "-c", str(config))
    assert ran.returncode == EXIT_STORE, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = error_lines(ran.stderr)
    assert str(db) in line and "damaged" in line and "backup" in line


def test_a_store_another_process_holds_locked_is_refused_as_locked(tmp_path, monkeypatch):
    """An sqlite3 shell or a copying tool holding a write lock past the busy timeout:
    the start is refused as locked (exit 75, systemd tries again after RestartSec), and
    the line says so, not 'check its permissions and free space'."""
    from gateway.store import store as store_module
    from gateway.store.lock import StoreLocked
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 50)  # the test need not wait 5 s
    db = tmp_path / "gateway.db"
    schema.migrate(str(db))
    clock = ThreadedClock()
    first = Store(db, clock)               # made once, as a first start does
    first.open()
    clock.wait(first.close())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnusable) as refused:
            Store(db, ThreadedClock()).open()
    finally:
        holder.close()
    assert isinstance(refused.value, StoreLocked) and not refused.value.lasting
    line = str(refused.value)
    assert str(db) in line and "locked by another process" in line
    assert "permissions" not in line
    # Once it lets go, the store opens.
    again = Store(db, clock)
    again.open()
    clock.wait(again.close())


def test_every_commit_is_on_disk_before_it_is_answered_synchronous_full_in_wal(tmp_path):
    """Power-loss semantics (docs/operating.md, "Power loss"): the writer's connection,
    the one every answered write goes through, runs WAL with synchronous=FULL (2), so a
    commit is fsynced before its Deferred fires; NORMAL (1) could lose the last ones."""
    clock = ThreadedClock()
    store = Store(tmp_path / "gateway.db", clock, commit_interval=0.0)
    store.open()
    try:
        pragmas = clock.wait(store._write(lambda conn: (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0])))
    finally:
        clock.wait(store.close())
    assert pragmas == ("wal", 2)


# -- a week of traffic: the store stays the size its retention allows ---------------------

DAY_S = 86400.0
HOUR_S = 3600.0
TABLES = ("messages", "parts", "pending_receipts", "idempotency",
          "inbound", "audit", "inbox", "sent_fingerprints")


def _counts(db):
    with sqlite3.connect(db) as conn:
        counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                  for table in TABLES}
        counts["pages in use"] = (conn.execute("PRAGMA page_count").fetchone()[0]
                                  - conn.execute("PRAGMA freelist_count").fetchone()[0])
        counts["pages"] = conn.execute("PRAGMA page_count").fetchone()[0]
    return counts


def simulate_week(db, *, per_hour=10, housekeeping=True, days=7):
    """`days` of traffic on `clock` with every kind of record made each hour: messages
    (with idempotency keys and fingerprints) sent and receipted or left waiting, an
    unmatched receipt, raw inbound PDUs, inbox replies, audit rows; housekeeping on
    its hourly timer with one day's retention of everything. Counts at each day's end."""
    from gateway.config.schema import Retention
    from gateway.housekeeping import housekeeping_service
    from gateway.model import InboxEntry, NewMessage, PartOutcome
    clock = ThreadedClock()
    store = Store(db, clock, commit_interval=0.0)
    store.open()
    one_day = Retention(messages=1, audit=1, receipts=1, inbound=1, inbox=1, ussd=1)
    service = housekeeping_service(store, clock, one_day, fingerprint_days=1)
    if housekeeping:
        service.startService()
    daily, serial = [], 0
    try:
        for hour in range(days * 24):
            now = clock.seconds()
            batch = []
            for _ in range(per_hour):
                serial += 1
                batch.append(NewMessage(
                    id=store.new_message_id(), agency="tax", sender="40401234",
                    recipient=f"98912{serial % 10_000_000:07d}", text="salam",
                    priority=0, reference=None, validity_s=int(DAY_S), receipt=True,
                    data_coding=0, esm_class=0, parts=[b"salam"], created_at=now,
                    fingerprint=serial.to_bytes(16, "big")))
            clock.wait(store.accept(batch, idempotency=("tax", f"key-{hour}", "{}")))
            claimed = clock.wait(store.claim(per_hour, now))
            clock.wait(store.record([
                PartOutcome(p.message_id, p.seq, "submitted", operator="mci",
                            smsc_id=f"{hour}-{i}") for i, p in enumerate(claimed)]))
            # Four in five get their receipt; the rest wait for it until they expire.
            receipts = [("mci", f"{hour}-{i}", "delivered", None)
                        for i in range(len(claimed)) if i % 5]
            receipts.append(("mci", f"nobody-{hour}", "delivered", None))
            clock.wait(store.apply_receipts(receipts, {"mci": "raw"}))
            clock.wait(store.store_inbound("mci", {"source_addr": "989121234567",
                                                   "short_message": b"x"}, {}))
            clock.wait(store.file_inbox([InboxEntry(
                agency="tax", number="40401234", citizen=f"98912{i:07d}", text="baleh",
                channel="sms", received_at=now, operator="mci",
                source_key=f"mo-{hour}-{i}") for i in range(3)]))
            clock.wait(store.audit("sender_refused", "tax", {"sender": "FAKE"}))
            clock.advance(HOUR_S)                 # the hourly housekeeping round runs
            clock.wait(store.purge(older_than=0))       # ... and is done (queued behind)
            if hour % 24 == 23:
                daily.append(_counts(db))
    finally:
        if housekeeping:
            service.stopService()
        clock.wait(store.close())
    return daily


def test_a_week_of_traffic_stays_within_what_one_days_retention_allows(tmp_path):
    """Measured (10 messages an hour): without housekeeping every table grows by a
    day's traffic each day (1,680 messages, 312 pages after the week); with it, each
    levels off by day 4 (338 messages, 113 pages on day 4 and on day 7)."""
    daily = simulate_week(tmp_path / "gateway.db")
    per_day = 10 * 24
    last = daily[-1]
    # A message ends by its receipt, or two days on (validity + receipt grace), and then
    # stays its retention day: at most ~3 days of traffic, whatever the week's length.
    assert last["messages"] <= 3 * per_day and last["parts"] <= 3 * per_day
    assert last["inbound"] <= 2 * 24 and last["inbox"] <= 2 * 3 * 24
    assert last["audit"] <= 2 * 24 and last["pending_receipts"] <= 2 * 24
    assert last["idempotency"] <= 2 * 24
    assert last["sent_fingerprints"] <= 2 * per_day
    # Level from day 4 on: no table, and not the file, grows with the days.
    for table in TABLES + ("pages",):
        assert last[table] <= daily[3][table] * 1.1 + 5, (table, [d[table] for d in daily])
