"""Startup errors as one clear line through the real CLI: a port in use names its
setting, two daemons on one store refuse (a lock held for the daemon's life), and
check-config names a store directory that cannot be written."""

import json
import os
import socket
import subprocess

import pytest

from daemon_harness import PYTHON, REPO, Daemon, free_port, write_config


def run_cli(*args, timeout=60, **kwargs):
    return subprocess.run([PYTHON, "-m", "gateway.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def errors(stderr):
    """The ERROR events' messages: stderr is no terminal here, so its lines are JSON."""
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("level") == "ERROR":
            found.append(event["message"])
    return found


def test_an_http_port_in_use_is_one_line_naming_the_setting(tmp_path, busy_port):
    # The SMSC is not needed to get this far: its port only has to be closed.
    config, _ = write_config(tmp_path, free_port())
    text = config.read_text().replace(f"127.0.0.1:{_}", f"127.0.0.1:{busy_port}")
    config.write_text(text)
    ran = run_cli("run", "-c", str(config))
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = errors(ran.stderr)
    assert "http.listen" in line and str(config) in line
    assert f"127.0.0.1:{busy_port}" in line and "in use" in line


def test_a_metrics_port_in_use_is_one_line_naming_the_setting(tmp_path, busy_port):
    config, _ = write_config(tmp_path, free_port())
    text = config.read_text()
    metrics = text.split("metrics:", 1)[1].split("listen:", 1)[1].split()[0]
    config.write_text(text.replace(metrics, f"127.0.0.1:{busy_port}"))
    ran = run_cli("run", "-c", str(config))
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = errors(ran.stderr)
    assert "metrics.listen" in line and f"127.0.0.1:{busy_port}" in line


def test_the_demos_port_in_use_names_its_flag(tmp_path, busy_port):
    ran = run_cli("demo", "--http-port", str(busy_port), "--smsc-port", "0",
                  "--control-port", "0", "--metrics-port", "0", "--admin-port", "0",
                  "--var", str(tmp_path))
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = errors(ran.stderr)
    assert "--http-port" in line and str(busy_port) in line


def test_the_demos_smsc_port_in_use_names_its_flag(tmp_path, busy_port):
    ran = run_cli("demo", "--http-port", "0", "--smsc-port", str(busy_port),
                  "--control-port", "0", "--metrics-port", "0", "--admin-port", "0",
                  "--var", str(tmp_path))
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = errors(ran.stderr)
    assert "--smsc-port" in line and str(busy_port) in line


def test_a_second_daemon_on_the_same_store_refuses_naming_the_first(tmp_path):
    from gateway.cli import EXIT_LOCKED
    config, http_port = write_config(tmp_path, free_port())
    first = Daemon(config, http_port).start(wait_bound=False)
    try:
        # Another config file (other ports), the same store.
        other = tmp_path / "other"
        other.mkdir()
        second_config, _ = write_config(other, free_port())
        second_config.write_text(second_config.read_text().replace(
            "var/gateway.db", str(tmp_path / "var" / "gateway.db")))
        ran = run_cli("run", "-c", str(second_config))
        assert ran.returncode == EXIT_LOCKED, ran.stderr
        assert "Traceback" not in ran.stderr
        [line] = errors(ran.stderr)
        assert f"pid {first.proc.pid}" in line and "gateway.db" in line
        assert first.health()["store"] == "ok"          # the first one runs on
    finally:
        assert first.stop() == 0
    # Once the first has stopped, the lock is free again.
    again = Daemon(config, http_port).start(wait_bound=False)
    assert again.stop() == 0


def test_check_config_names_a_store_directory_it_cannot_write(tmp_path, monkeypatch):
    """The store exists but its directory is read-only: SQLite could not create its -wal
    and -shm files there. (Tests run as root, whom every directory lets in: os.access
    answers here as it does for the daemon's unprivileged user.)"""
    from gateway.store.guard import problems
    from gateway.store.schema import migrate
    db = tmp_path / "var" / "gateway.db"
    db.parent.mkdir()
    migrate(str(db))
    assert problems(db) == []
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (
        False if str(path) == str(db.parent) and mode & os.W_OK else real_access(path, mode)))
    [line] = problems(db)
    assert str(db.parent) in line and "not writable" in line
