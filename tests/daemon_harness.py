"""Runs the real daemon and the SMSC simulator as subprocesses on loopback for end-to-end tests.

Everything here talks to them only through their external interfaces: the CLI, YAML files,
the agency HTTP API and the simulator's control API.
"""

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEST_WORKERS = (lambda value: value if value == "auto" else int(value))(
    os.environ.get("PAYAM_TEST_WORKERS", "0"))

# Demo keys of the sample agencies (config/agencies.yaml documents them).
KEYS = {
    "tax": "demo-tax-key-0000000000000000",
    "judiciary": "demo-judiciary-key-000000000000",
    "post": "demo-post-key-00000000000000000",
}


# What must never reach a log line or /metrics: a citizen's whole number, in the
# international or the national form (masked ones, 98912****567, do not match), and the
# national IDs the daemon knows (its directory file's, those sent as recipients).
FULL_NUMBER = re.compile(r"(?<![0-9])(?:98[0-9]{10}|09[0-9]{9})(?![0-9])")
MIN_TEXT_CHECKED = 12           # shorter texts ("retried") may be words of any line
_ASCII_DIGITS = str.maketrans({**{0x06F0 + i: str(i) for i in range(10)},
                               **{0x0660 + i: str(i) for i in range(10)}})


def privacy_leaks(output, texts=(), national_ids=()):
    """The lines of `output` that carry a full phone number, one of the message `texts`
    sent or one of the `national_ids` (ASCII or Persian digits; a JSON line is also read
    decoded, so escaped text is found)."""
    texts = [t for t in texts if isinstance(t, str) and len(t.strip()) >= MIN_TEXT_CHECKED]
    texts += _id_forms(national_ids)
    leaks = []
    for line in output.splitlines():
        seen = line
        if line.startswith("{"):
            try:
                seen = line + " " + " ".join(map(str, json.loads(line).values()))
            except ValueError:
                pass
        if FULL_NUMBER.search(seen) or any(t in seen for t in texts):
            leaks.append(line)
    return leaks


def _id_forms(national_ids):
    """Each national ID as written, in ASCII digits and in Persian digits."""
    forms = set()
    for value in national_ids:
        if isinstance(value, int):
            value = f"{value:010d}"
        if isinstance(value, str) and len(value.strip()) >= 8:
            ascii_form = value.strip().translate(_ASCII_DIGITS)
            forms.update((value.strip(), ascii_form,
                          "".join(chr(0x06F0 + int(d)) if d.isdigit() else d
                                  for d in ascii_form)))
    return sorted(forms)


def assert_private(output, texts=(), what="daemon output", national_ids=()):
    leaks = privacy_leaks(output, texts, national_ids)
    hidden = _id_forms(national_ids)

    def shown(line):
        line = FULL_NUMBER.sub(lambda m: m.group()[:5] + "…", line)
        for national_id in hidden:
            line = line.replace(national_id, "<national ID>")
        return line[:300]
    assert not leaks, (f"{len(leaks)} line(s) of the {what} carry a full phone number, "
                       f"a national ID or a message text:\n"
                       + "\n".join(map(shown, leaks[:5])))


def directory_national_ids(config_path):
    """The national IDs of the directory file gateway.yaml names (`directory: {path}`),
    as written there; none for a lookup service or no directory."""
    config_path = Path(config_path)
    try:
        setting = (yaml.safe_load(config_path.read_text()) or {}).get("directory")
        if not isinstance(setting, dict) or not isinstance(setting.get("path"), str):
            return set()
        entries = yaml.safe_load((config_path.parent / setting["path"]).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return {entry["national_id"] for entry in entries or ()
            if isinstance(entry, dict) and isinstance(entry.get("national_id"), (str, int))}


_HANDED_OUT = set()     # free_port's, this process


def free_port():
    """A port free now, below the kernel's ephemeral range (32768-60999 on Linux): a port
    the kernel hands out for `bind(0)` may go to any outgoing connection (the daemon's
    own SMPP binds) before the daemon listens on it.  Not the same port twice in a run
    (until half the range is handed out): a port handed out but not yet listened on
    looks free, so two settings of one config could get the same one."""
    if len(_HANDED_OUT) > 6000:
        _HANDED_OUT.clear()
    while True:
        port = random.randrange(20000, 32768)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_json(port, method, path, body=None, key=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        data = json.loads(raw) if raw else None
        return resp.status, data, dict(resp.getheaders())
    finally:
        conn.close()


class Simulator:
    """`payam-gateway smsc-sim` on ephemeral ports."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gateway.cli", "smsc-sim", "--port", "0", "--control-port", "0",
             *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self._ready_line()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.smpp_port = int(fields["smpp"].rsplit(":", 1)[1])
        self.control_port = int(fields["control"].rsplit(":", 1)[1])

    def _ready_line(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("SMSC_SIM_READY"):
                return line
        self.stop()
        raise AssertionError("simulator did not start")

    def control(self, method, path, body=None):
        status, data, _ = http_json(self.control_port, method, path, body)
        assert status == 200, (status, data)
        return data

    def submits(self):
        return self.control("GET", "/submits?after=0&limit=100000")["submits"]

    def stats(self):
        return self.control("GET", "/stats")

    def behave(self, **settings):
        return self.control("POST", "/behaviour", settings)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def sample_agencies(webhook=None, **changes):
    """config/agencies.yaml's document, with `webhook` (agency id, receiver port, secret)
    given a reply webhook and `changes` {agency id: {key: value}} applied."""
    agencies = yaml.safe_load((REPO / "config" / "agencies.yaml").read_text())
    for agency in agencies["agencies"]:
        if webhook is not None and agency["id"] == webhook[0]:
            agency["reply_webhook"] = {"url": f"http://127.0.0.1:{webhook[1]}/replies",
                                       "secret": webhook[2]}
        agency.update(changes.get(agency["id"], {}))
    return agencies


def write_sample_agencies(directory, webhook=None, **changes):
    """sample_agencies() written to `directory`/agencies.yaml; its path."""
    path = Path(directory) / "agencies.yaml"
    path.write_text(yaml.safe_dump(sample_agencies(webhook, **changes), allow_unicode=True))
    return path


def write_config(directory, smpp_port, *, operators=("mci", "irancell", "rightel"),
                 window=10, binds=1, tps=1000, receipts=True, agencies=None, routing=None,
                 receipt_ids="raw", citizens=None, workers=None):
    """gateway.yaml + the sample agencies and routing rules, pointed at the simulator
    (whose receipts carry the submit_sm_resp id as it is unless told otherwise:
    receipt_ids raw, so that a single receipt is matched without learning; None leaves
    the key out, i.e. the default `auto`). citizens: gateway.yaml's `directory:` value
    ({"path": ...} or {"url": ...}); none by default. workers: http.workers (default
    PAYAM_TEST_WORKERS, else 0)."""
    directory = Path(directory)
    http_port = free_port()
    config = {
        # One process unless the test asks for the split (tests/test_e2e_procs.py);
        # PAYAM_TEST_WORKERS runs every daemon test split (e.g. "auto").
        "http": {"listen": f"127.0.0.1:{http_port}", "workers": TEST_WORKERS if workers is None else workers},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "store": {"path": "var/gateway.db"},
        "agencies": str(agencies or REPO / "config" / "agencies.yaml"),
        "routing_rules": str(routing or REPO / "routing_rules"),
        "operators": [
            {"name": name, "host": "127.0.0.1", "port": smpp_port, "system_id": name,
             "password": "secret", "bind": "transceiver", "binds": binds, "window": window,
             "tps": tps, "enquire_link_s": 30, "reconnect_s": [0.2, 1],
             "receipts": receipts, "receipt_ids": receipt_ids}
            for name in operators
        ],
    }
    if receipt_ids is None:
        for operator in config["operators"]:
            del operator["receipt_ids"]
    if citizens is not None:
        config["directory"] = citizens
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path, http_port


class Daemon:
    """`payam-gateway run -c …` as a subprocess.

    When it stops, its whole output and a last scrape of /metrics are checked for full
    phone numbers, for the texts sent through `send` and for national IDs (those of its
    directory file, at start and at stop, and those `send` addressed) (assert_private):
    every end-to-end test using it asserts the daemon's privacy.  `check_privacy = False` for a
    test that turns on log.debug_text_agencies."""

    def __init__(self, config_path, http_port):
        self.config_path = Path(config_path)
        self.http_port = http_port
        self.log_path = self.config_path.parent / "daemon.log"
        self.proc = None
        self.check_privacy = True
        self.texts = set()              # message texts sent through send()
        self.national_ids = set()       # the directory file's, and recipients' of send()
        self.metrics_seen = ""
        self.signalled = False          # a test's own signal: stop() then scrapes nothing

    def start(self, wait_bound=True, extra=()):
        self.national_ids |= directory_national_ids(self.config_path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gateway.cli", "run", "-c", str(self.config_path), *extra],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 30, what="daemon /healthz")
        if wait_bound:
            wait_for(self.all_bound, 30, what="every operator bound")
        return self

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
        try:
            status, body, _ = http_json(self.http_port, "GET", "/healthz", timeout=2)
        except OSError:
            return None
        return body if status == 200 else None

    def health(self):
        return http_json(self.http_port, "GET", "/healthz")[1]

    def all_bound(self):
        operators = self.health()["operators"]
        return all(op["bound"] >= 1 for op in operators.values())

    def send(self, key, **body):
        self.texts.add(body.get("text"))
        recipients = body.get("to")
        for recipient in recipients if isinstance(recipients, list) else [recipients]:
            if isinstance(recipient, dict):
                self.national_ids.add(recipient.get("national_id"))
        return http_json(self.http_port, "POST", "/v1/messages", body, key=key)

    def status(self, key, message_id):
        return http_json(self.http_port, "GET", f"/v1/messages/{message_id}", key=key)

    def wait_status(self, key, message_id, wanted, timeout=20):
        def reached():
            code, body, _ = self.status(key, message_id)
            return body if code == 200 and body["status"] == wanted else None
        return wait_for(reached, timeout, what=f"message {message_id} {wanted}")

    def send_signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if not self.signalled:          # (a stopping daemon no longer serves /metrics)
            self.metrics_seen += self.scrape_metrics()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("daemon did not stop within the bound")
        finally:
            self.log.close()
        self.assert_private()
        return code

    def kill(self):
        self.metrics_seen += self.scrape_metrics()
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()
        self.assert_private()

    def metrics_port(self):
        listen = (yaml.safe_load(self.config_path.read_text()).get("metrics") or {}).get("listen")
        return int(listen.rsplit(":", 1)[1]) if listen else None

    def scrape_metrics(self):
        """/metrics as text ("" when not served or not answering)."""
        port = self.metrics_port()
        if port is None:
            return ""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode("utf-8", "replace")
        except OSError:
            return ""
        finally:
            conn.close()

    def assert_private(self):
        if self.check_privacy:
            self.national_ids |= directory_national_ids(self.config_path)
            assert_private(self.output(), self.texts, national_ids=self.national_ids)
            assert_private(self.metrics_seen, self.texts, what="/metrics output",
                           national_ids=self.national_ids)

    def output(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def processes(self):
        """{(role, index): pid} of the daemon's processes: ("supervisor", 0) and, when
        it runs split (http.workers), ("dispatcher", 0) and ("http", i), read from
        /proc (the children's PAYAM_CHILD environment)."""
        found = {("supervisor", 0): self.proc.pid}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.proc.pid:
                    continue
                with open(f"/proc/{name}/environ", "rb") as f:
                    environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0")
                                   if b"=" in item)
            except (OSError, ValueError):
                continue
            if b"PAYAM_CHILD" in environ:
                settings = json.loads(environ[b"PAYAM_CHILD"])
                found[(settings["role"], settings["index"])] = int(name)
        return found

    @property
    def db_path(self):
        return self.config_path.parent / "var" / "gateway.db"
