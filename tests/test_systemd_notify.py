"""systemd's notify protocol and the admin endpoint, with the real daemon process: a
local NOTIFY_SOCKET (a path, and an abstract '@' name) hears READY=1 once the API and
metrics answer, WATCHDOG=1 at half WATCHDOG_USEC, RELOADING=1/READY=1 around SIGHUP and
`payam-gateway reload`, STOPPING=1 at SIGTERM; `payam-gateway status` shows binds and
the queue."""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest

from daemon_harness import (KEYS, PYTHON, REPO, Simulator, assert_private, free_port,
                            http_json, wait_for, write_config)

from gateway.systemd import Notifier, _watchdog_interval


@pytest.fixture
def sim():
    simulator = Simulator()
    yield simulator
    simulator.stop()


class Listener:
    """The supervisor's end of NOTIFY_SOCKET: one datagram socket, drained by a thread
    as systemd drains it (an unread socket's queue fills and drops datagrams)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages = queue.Queue()
        self.seen = []
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.put(data.decode().split("\n"))

    def next_with(self, line, within_s=30):
        """Messages until one carries `line`; that message's lines.  Fails after
        within_s even while other messages (WATCHDOG=1) keep coming."""
        deadline = time.monotonic() + within_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} within {within_s} s; heard "
                                     f"{self.seen[-5:]}")
            message = self.messages.get(timeout=left)
            self.seen.append(message)
            if line in message:
                return message

    def close(self):
        self.sock.close()


def run_cli(*args):
    return subprocess.run([PYTHON, "-m", "gateway.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def start(config, env):
    log = open(config.parent / "daemon.log", "ab")     # a pipe nobody reads would fill
    try:
        return subprocess.Popen([PYTHON, "-m", "gateway.cli", "run", "-c", str(config)],
                                cwd=REPO, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# One process and split (the supervisor speaks for its children, and the admin
# endpoint's reload reaches it from the dispatcher).
@pytest.mark.parametrize("workers", [0, 1])
def test_the_daemon_speaks_sd_notify_and_answers_status_and_reload(tmp_path, sim, workers):
    short = tempfile.mkdtemp(prefix="pn-")          # AF_UNIX paths are short (108 bytes)
    listener = Listener(os.path.join(short, "notify"))
    config, http_port = write_config(tmp_path, sim.smpp_port, workers=workers)
    import yaml
    metrics_port = int(yaml.safe_load(config.read_text())["metrics"]["listen"].rsplit(":")[1])
    proc = start(config, {"NOTIFY_SOCKET": os.path.join(short, "notify"),
                          "WATCHDOG_USEC": "400000"})
    try:
        ready = listener.next_with("READY=1")
        # READY=1 came only once both answer: no retry needed here.
        assert http_json(http_port, "GET", "/healthz")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as metrics:
            assert metrics.status == 200
        assert any(line.startswith("STATUS=") for line in ready)
        listener.next_with("WATCHDOG=1")
        listener.next_with("WATCHDOG=1")

        proc.send_signal(signal.SIGHUP)
        reloading = listener.next_with("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
        listener.next_with("READY=1")

        reloaded = run_cli("reload", "-c", str(config))
        assert reloaded.returncode == 0, reloaded.stderr
        assert "reloaded" in reloaded.stdout
        listener.next_with("RELOADING=1")
        listener.next_with("READY=1")

        wait_for(lambda: all(op["bound"] >= 1 for op in
                             http_json(http_port, "GET", "/healthz")[1]["operators"].values()),
                 30, what="every operator bound")
        sim.behave(throttle_every=1)                # throttled: the message stays queued
        code, _, _ = http_json(http_port, "POST", "/v1/messages",
                               {"from": "40401234", "to": "09121234567", "text": "x",
                                "priority": "high"}, key=KEYS["tax"])
        assert code == 202
        def queued_high():
            shown = run_cli("status", "-c", str(config), "--json")
            assert shown.returncode == 0, shown.stderr
            document = json.loads(shown.stdout)
            return document if document["queue"]["high"]["parts"] == 1 else None
        document = wait_for(queued_high, 30, interval=0.2, what="the message queued")
        assert document["queue"]["high"]["oldest_age_s"] >= 0
        assert document["pid"] == proc.pid
        assert {name: op["bound"] for name, op in document["operators"].items()} == {
            "mci": 1, "irancell": 1, "rightel": 1}
        assert set(document["queue"]) == {"normal", "high", "emergency"}
        assert document["queue"]["emergency"] == {"parts": 0, "oldest_age_s": None}
        people = run_cli("status", "-c", str(config))
        assert people.returncode == 0 and "mci" in people.stdout and "high" in people.stdout

        proc.send_signal(signal.SIGTERM)
        listener.next_with("STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        stop(proc)
        listener.close()
        shutil.rmtree(short, ignore_errors=True)
    # Nobody answers now: status says so and fails.
    gone = run_cli("status", "-c", str(config))
    assert gone.returncode == 1 and "admin.listen" in gone.stderr
    # Its own process, not the harness's Daemon: the privacy check over its log here.
    assert_private((config.parent / "daemon.log").read_text(errors="replace"))


def test_an_abstract_notify_socket_hears_ready_and_stopping(tmp_path):
    name = f"payam-test-{uuid.uuid4().hex[:12]}"
    listener = Listener("\0" + name)
    config, _ = write_config(tmp_path, free_port())    # no SMSC: READY does not wait
    proc = start(config, {"NOTIFY_SOCKET": "@" + name})
    try:
        listener.next_with("READY=1")
        proc.send_signal(signal.SIGTERM)
        listener.next_with("STOPPING=1")
        assert proc.wait(30) == 0
        # No watchdog was asked for: none was sent.
        assert not any("WATCHDOG=1" in message for message in listener.seen)
    finally:
        stop(proc)
        listener.close()


def test_without_notify_socket_nothing_is_sent_and_the_watchdog_is_for_its_pid():
    assert not Notifier({}).enabled and Notifier({}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "@x"}).address == "\0x"
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000",
                               "WATCHDOG_PID": str(os.getpid())}) == 15.0


def test_check_config_refuses_an_admin_address_off_loopback_unless_meant(tmp_path):
    import yaml
    config, _ = write_config(tmp_path, free_port())
    settings = yaml.safe_load(config.read_text())
    settings["admin"] = {"listen": "0.0.0.0:9109"}
    config.write_text(yaml.safe_dump(settings))
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 2
    assert "admin.listen" in checked.stderr and "remote: true" in checked.stderr
    settings["admin"]["remote"] = True
    config.write_text(yaml.safe_dump(settings))
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("command", ["status", "reload"])
def test_status_and_reload_with_no_daemon_say_so_in_one_line_and_exit_1(tmp_path, command):
    config, _ = write_config(tmp_path, free_port())     # nothing listens on admin.listen
    ran = run_cli(command, "-c", str(config))
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith(f"{command}: ")


def test_something_else_on_the_admin_address_is_unreachable_not_a_traceback():
    import http.server
    import threading

    from gateway.admin.client import Unreachable, ask

    class NotAdmin(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"\xffhi!\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotAdmin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(Unreachable, match="not JSON"):
            ask(server.server_address, "GET", "/status")
    finally:
        server.shutdown()
        server.server_close()
