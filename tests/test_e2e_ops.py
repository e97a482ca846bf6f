"""End to end, the operator's side: check-config, SIGHUP reload, demo, fallback, SMSC errors."""

import hashlib
import json
import shutil
import signal
import subprocess

import pytest
import yaml

from daemon_harness import (KEYS, PYTHON, REPO, Daemon, Simulator, assert_private, free_port,
                            http_json, wait_for, write_config)

from gateway.demo.run import DEMO_APP_KEY
from gateway.procs.supervisor import workers_for

TAX = KEYS["tax"]


@pytest.fixture
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


def run_cli(*args):
    return subprocess.run([PYTHON, "-m", "gateway.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_check_config_accepts_the_samples_and_names_file_and_line_of_each_error(tmp_path):
    ok = run_cli("check-config", "-c", "config/gateway.yaml")
    assert ok.returncode == 0, ok.stderr

    shutil.copy(REPO / "config" / "agencies.yaml", tmp_path / "agencies.yaml")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("rules:\n  - prefixes: ['98912']\n"
                                               "    operator: nobody\n")
    (tmp_path / "gateway.yaml").write_text(
        "http: {listen: '127.0.0.1:8080'}\n"
        "agencies: agencies.yaml\n"
        "routing_rules: rules/\n"
        "operators:\n"
        "  - name: mci\n"
        "    host: 127.0.0.1\n"
        "    port: 2775\n"
        "    system_id: payam\n"
        "    password: secret\n"
        "    windw: 10\n")
    bad = run_cli("check-config", "-c", str(tmp_path / "gateway.yaml"))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert any("gateway.yaml:10:" in line and "windw" in line for line in lines), lines
    assert any("a.yaml:3:" in line and "nobody" in line for line in lines), lines


def test_sighup_reloads_agencies_and_keeps_the_old_ones_when_the_file_is_bad(tmp_path, sim):
    agencies = tmp_path / "agencies.yaml"
    shutil.copy(REPO / "config" / "agencies.yaml", agencies)
    config, http_port = write_config(tmp_path, sim.smpp_port, agencies=agencies)
    daemon = Daemon(config, http_port).start()
    try:
        health_key = "health-ministry-key-0123456789abcdef"
        body = {"from": "40405555", "to": "09121234567", "text": "Vaccination reminder"}
        assert daemon.send(health_key, **body)[0] == 401

        document = yaml.safe_load(agencies.read_text())
        document["agencies"].append({
            "id": "health", "name": "وزارت بهداشت", "numbers": ["40405555"],
            "keys": ["sha256:" + hashlib.sha256(health_key.encode()).hexdigest()]})
        agencies.write_text(yaml.safe_dump(document, allow_unicode=True))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.send(health_key, **body)[0] == 202, 10, what="reload")

        agencies.write_text("agencies:\n  - id: BROKEN ID\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.output(), 10, what="refusal logged")
        assert daemon.send(health_key, **body)[0] == 202     # the old config stays
        assert daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                   "text": "still here"})[0] == 202
    finally:
        assert daemon.stop() == 0


def test_sighup_reloads_routing_rules_and_keeps_the_old_ones_when_a_file_is_bad(
        tmp_path, sim):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules = rules_dir / "10-rules.yaml"
    rules.write_text('rules:\n  - prefixes: ["98912"]\n    operator: mci\ndefault: mci\n')
    config, http_port = write_config(tmp_path, sim.smpp_port, routing=rules_dir)
    daemon = Daemon(config, http_port).start()

    def carried_by():
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                          "text": "routing check"})
        assert code == 202, body
        message_id = body["messages"][0]["id"]
        return daemon.wait_status(TAX, message_id, "delivered")["operator"]

    try:
        assert carried_by() == "mci"
        rules.write_text('rules:\n  - prefixes: ["98912"]\n    operator: rightel\n'
                         'default: mci\n')
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in daemon.output(), 10, what="reload")
        assert carried_by() == "rightel"

        (rules_dir / "20-broken.yaml").write_text("rules:\n  - prefixes: [\"98912\"]\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.output(), 10, what="refusal logged")
        assert "20-broken.yaml:2" in daemon.output()
        assert carried_by() == "rightel"                   # the running rules stay
    finally:
        assert daemon.stop() == 0


def test_demo_runs_on_embedded_defaults_and_delivers(tmp_path):
    http_port, smsc_port = free_port(), free_port()
    with open(tmp_path / "demo.log", "wb") as log:     # the child keeps its own copy
        demo = subprocess.Popen(
            [PYTHON, "-m", "gateway.cli", "demo", "--http-port", str(http_port),
             "--smsc-port", str(smsc_port), "--control-port", "0", "--metrics-port", "0",
             "--admin-port", "0", "--var", str(tmp_path / "var")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        banner = []
        for line in demo.stdout:
            banner.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(banner)
        assert f"http://127.0.0.1:{http_port}" in text and "curl" in text
        # The default configuration is the split one wherever there is a CPU to spare.
        workers = workers_for("auto")
        if workers:
            assert (f"1 dispatcher (the binds), {workers} HTTP worker(s)") in text, text
        else:
            assert "processes:         one" in text, text
        wait_for(lambda: all(op["bound"] for op in
                             http_json(http_port, "GET", "/healthz")[1]["operators"].values()),
                 what="demo binds")
        # Several citizens of each operator: every receipt must come back through the
        # operator that carried its message (the demo's three share one simulator).
        code, body, _ = http_json(http_port, "POST", "/v1/messages",
                                  {"from": "40401234",
                                   "to": [f"0{prefix}12345{n}" for prefix in ("912", "935", "920")
                                          for n in range(10, 14)],
                                   "text": "سلام از سامانه پیام"}, key=TAX)
        assert code == 202
        for message in body["messages"]:
            wait_for(lambda: http_json(http_port, "GET", f"/v1/messages/{message['id']}",
                                       key=TAX)[1]["status"] == "delivered", what="delivery")
        # The banner's national inbox line works as printed (sample app, directory).
        assert DEMO_APP_KEY in text and "/v1/citizen/messages?" in text
        code, inbox, _ = http_json(
            http_port, "GET",
            "/v1/citizen/messages?national_id=0012345679&msisdn=09121234567",
            key=DEMO_APP_KEY)
        assert code == 200 and inbox["messages"] == [], inbox
        assert (tmp_path / "var" / "demo.db").exists()
        assert (tmp_path / "var" / ".demo.db.payam-id").exists()  # a fresh machine: both made
    finally:
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(20) == 0
    log_text = (tmp_path / "demo.log").read_text(errors="replace")
    ready = [line for line in log_text.splitlines() if " is ready" in line]
    if workers:
        assert any("the dispatcher is ready" in line for line in ready), ready
        assert all(any(f"the http worker {n} is ready" in line for line in ready)
                   for n in range(1, workers + 1)), ready
    # Its log (the embedded simulator's too) carries no citizen's number in full.
    assert_private(log_text)


def test_fallback_operator_carries_traffic_while_the_preferred_one_is_down(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    document = yaml.safe_load(config.read_text())
    for operator in document["operators"]:
        if operator["name"] == "irancell":
            operator["port"] = free_port()          # nothing listens there
    config.write_text(yaml.safe_dump(document))
    daemon = Daemon(config, http_port).start(wait_bound=False)
    try:
        wait_for(lambda: daemon.health()["operators"]["mci"]["bound"] >= 1, what="mci bound")
        assert daemon.health()["operators"]["irancell"]["bound"] == 0
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09351234567",
                                          "text": "fallback"})
        assert code == 202
        final = daemon.wait_status(TAX, body["messages"][0]["id"], "delivered")
        assert final["operator"] == "mci"                 # irancell's rule falls back to mci
    finally:
        daemon.stop()


def test_permanent_smsc_error_fails_the_message_and_temporary_ones_are_retried(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start()
    try:
        sim.behave(fail_every=1, fail_status=0x0B)        # ESME_RINVDSTADR: permanent
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                          "text": "bad destination"})
        assert code == 202
        failed = daemon.wait_status(TAX, body["messages"][0]["id"], "failed")
        assert "ESME_RINVDSTADR" in failed["error"] and failed["done_at"]

        sim.behave(fail_every=2, fail_status=0x45)        # ESME_RSUBMITFAIL: temporary
        code, body, _ = daemon.send(TAX, **{"from": "40401234",
                                          "to": ["09121110001", "09121110002"],
                                          "text": "retried"})
        finals = [daemon.wait_status(TAX, message["id"], "delivered", timeout=30)
                  for message in body["messages"]]
        assert sim.stats()["failed"] >= 2
        # The retried one shows what it went through; the other went at the first try.
        retried = [m for m in finals if m["attempts"]]
        assert retried and all("ESME_RSUBMITFAIL" in m["last_error"] for m in retried)
        assert all(m["last_error"] is None for m in finals if not m["attempts"])
    finally:
        daemon.stop()


def test_a_slow_operators_backlog_does_not_hold_back_another_operators_message(
        tmp_path, sim):
    agencies = yaml.safe_load((REPO / "config" / "agencies.yaml").read_text())
    for agency in agencies["agencies"]:
        agency["rate_per_s"] = 100_000             # the agency's own limit is not tested
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump(agencies, allow_unicode=True))
    config, http_port = write_config(tmp_path, sim.smpp_port,
                                     agencies=tmp_path / "agencies.yaml")
    document = yaml.safe_load(config.read_text())
    for operator in document["operators"]:
        if operator["name"] == "irancell":
            operator["tps"] = 2                      # 3,000 parts take 25 minutes
    config.write_text(yaml.safe_dump(document))
    daemon = Daemon(config, http_port).start()
    try:
        for first in range(0, 3000, 1000):          # more than the dispatcher buffers
            backlog = [f"0935{n:07d}" for n in range(first, first + 1000)]
            code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": backlog,
                                              "text": "slow lane"})
            assert code == 202 and len(body["messages"]) == 1000
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                          "text": "fast lane", "priority": "normal"})
        assert code == 202
        final = daemon.wait_status(TAX, body["messages"][0]["id"], "delivered", timeout=10)
        assert final["operator"] == "mci"
    finally:
        assert daemon.stop() == 0


# -- the store file: damage named, deletion refused, WAL checkpointed at a clean stop -----

def test_a_damaged_store_is_one_line_naming_it_and_an_exit_systemd_does_not_restart_on(
        tmp_path):
    from gateway.cli import EXIT_STORE
    config, _http_port = write_config(tmp_path, free_port())
    db = tmp_path / "var" / "gateway.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database, a log file written over it\n" * 200)

    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 2
    assert str(db) in checked.stderr and "damaged" in checked.stderr

    ran = run_cli("run", "-c", str(config))
    assert ran.returncode == EXIT_STORE
    assert "Traceback" not in ran.stderr
    named = [line for line in ran.stderr.splitlines() if str(db) in line]
    assert len(named) == 1 and "backup" in named[0], ran.stderr
    assert [line for line in ran.stderr.splitlines()
            if json.loads(line)["level"] == "ERROR"] == named     # not a terminal: JSON


def test_a_store_with_a_damaged_page_is_named_by_check_config_and_refused_by_run(tmp_path):
    """Audit 13: a page the start-up never reads (the audit table's root) overwritten:
    check-config said OK and the daemon started on it."""
    import sqlite3
    from gateway.cli import EXIT_STORE
    from gateway.store import schema
    config, _http_port = write_config(tmp_path, free_port())
    db = tmp_path / "var" / "gateway.db"
    db.parent.mkdir()
    schema.migrate(str(db))
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO audit (at, event, detail) VALUES (?, 'x', '{}')",
                         [(float(i),) for i in range(500)])
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit'"
                        ).fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")        # as a clean stop leaves it
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * 4096)
        f.write(b"\xa5" * 4096)

    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 2
    [line] = [line for line in checked.stderr.splitlines() if str(db) in line]
    assert "damaged" in line and "backup" in line

    ran = run_cli("run", "-c", str(config))
    assert ran.returncode == EXIT_STORE
    assert "Traceback" not in ran.stderr
    named = [line for line in ran.stderr.splitlines() if str(db) in line]
    assert len(named) == 1 and "damaged" in named[0], ran.stderr


def test_a_deleted_store_is_refused_until_told_to_create_one(tmp_path, sim):
    from gateway.cli import EXIT_STORE
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start()
    try:
        code, _body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                           "text": "kept"})
        assert code == 202
        # Deleted under the running daemon as people clear a store: `rm gateway.db*`
        # (which took the marker too when it was gateway.db.id).
        for path in daemon.db_path.parent.glob(daemon.db_path.name + "*"):
            path.unlink()
        wait_for(lambda: http_json(http_port, "GET", "/healthz")[0] == 503, 10,
                 what="/healthz 503")
    finally:
        assert daemon.stop() == 0

    refused = run_cli("run", "-c", str(config))
    assert refused.returncode == EXIT_STORE
    assert str(daemon.db_path) in refused.stderr and "--create-store" in refused.stderr
    assert not daemon.db_path.exists()                  # no empty store put in its place
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 2
    assert str(daemon.db_path) in checked.stderr and "missing" in checked.stderr

    daemon = Daemon(config, http_port).start(extra=("--create-store",))
    try:
        assert daemon.health()["status"] == "ok"
    finally:
        assert daemon.stop() == 0
    again = Daemon(config, http_port).start()          # the new store is the marked one
    assert again.stop() == 0


def test_a_clean_stop_leaves_every_accepted_message_in_the_db_file_alone(tmp_path, sim):
    import sqlite3
    agencies = yaml.safe_load((REPO / "config" / "agencies.yaml").read_text())
    for agency in agencies["agencies"]:
        agency["rate_per_s"] = 100_000             # the agency's own limit is not tested
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump(agencies, allow_unicode=True))
    config, http_port = write_config(tmp_path, sim.smpp_port, tps=50,
                                     agencies=tmp_path / "agencies.yaml")
    daemon = Daemon(config, http_port).start()
    accepted = 0
    try:
        for batch in range(10):
            numbers = [f"0912{batch:03d}{n:04d}" for n in range(100)]
            code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": numbers,
                                              "text": "checkpoint"})
            assert code == 202
            accepted += len(body["messages"])
    finally:
        assert daemon.stop() == 0
    alone = tmp_path / "alone.db"
    shutil.copy(daemon.db_path, alone)                   # without its -wal
    with sqlite3.connect(alone) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == accepted
