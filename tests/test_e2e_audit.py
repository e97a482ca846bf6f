"""`payam-gateway audit` beside the running daemon: the trail of refusals, by agency, age,
kind and citizen, with citizens' numbers hashed (issue 11 item 6)."""

import json
import sqlite3
import subprocess

import pytest

from daemon_harness import KEYS, PYTHON, REPO, Daemon, Simulator, http_json, write_config

TAX = KEYS["tax"]


def audit_cli(config, *args):
    return subprocess.run([PYTHON, "-m", "gateway.cli", "audit", "-c", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.fixture
def simulator():
    sim = Simulator()
    yield sim
    sim.stop()


def test_audit_prints_the_trail_while_the_daemon_runs(tmp_path, simulator):
    config, http_port = write_config(tmp_path, simulator.smpp_port)
    daemon = Daemon(config, http_port).start()
    try:
        refusals = [("40400135", "owned"), ("09127778899", "citizen"), ("NOTOURS", "mask")]
        for sender, _why in refusals:
            code, _body, _ = daemon.send(TAX, **{"from": sender, "to": "09121234567",
                                                 "text": "x"})
            assert code == 403
        assert http_json(http_port, "POST", "/v1/messages", {"from": "40401234",
                         "to": "09121234567", "text": "x"}, key="wrong-key")[0] == 401

        every = audit_cli(config)
        assert every.returncode == 0, every.stderr
        lines = every.stdout.splitlines()
        assert len(lines) == 4 and "4 audit record(s)" in every.stderr
        assert sum("unauthorized" in line for line in lines) == 1

        tax = audit_cli(config, "--agency", "tax", "--since", "1h", "--refused")
        lines = tax.stdout.splitlines()
        assert len(lines) == 3, tax.stdout
        assert all("  sender_refused  agency=tax  sender=" in line for line in lines)
        assert "sender=40400135" in lines[0] and "owner=judiciary" in lines[0]
        assert "sender=NOTOURS" in lines[2]
        # The citizen's number is neither shown nor masked: hashed, and findable.
        assert "7778899" not in tax.stdout and "sender=h:" in lines[1]
        found = audit_cli(config, "--number", "+989127778899", "--json")
        [record] = [json.loads(line) for line in found.stdout.splitlines()]
        assert record["event"] == "sender_refused" and record["agency"] == "tax"
        assert record["detail"]["sender"].startswith("h:")

        assert audit_cli(config, "--since", "2099-01-01").stdout == ""
        assert audit_cli(config, "--agency", "post").stdout == ""
        wrong = audit_cli(config, "--since", "yesterday")
        assert wrong.returncode == 2 and "--since" in wrong.stderr

        # Append-only, also for whoever opens the file beside the daemon.
        with sqlite3.connect(daemon.db_path) as conn:
            with pytest.raises(sqlite3.DatabaseError):
                conn.execute("DELETE FROM audit")
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("UPDATE audit SET agency = 'post'")
        assert len(audit_cli(config, "--agency", "tax").stdout.splitlines()) == 3
    finally:
        assert daemon.stop() == 0
    assert len(audit_cli(config, "--agency", "tax").stdout.splitlines()) == 3   # stopped
