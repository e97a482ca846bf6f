"""Chaos harness (issue 13 item 1): steady HTTP submissions, MO and USSD sessions while a
fault is applied, case by case, to the real daemon and the SMSC simulator (subprocesses,
loopback only, bounded time); then a table of what was accepted, what reached the SMSC,
what was lost and duplicated, MO stored, webhooks delivered, USSD sessions started /
completed / broken, time to recover and peak RSS. Exits 1 when any case lost a message,
sent a part more than its bound, or got a USSD session wrong (see Row.failures).

    .venv/bin/python bench/chaos.py [--case drop ...] [--duration 8] [--down 30]
                                    [--webhook-down 60] [--rate 20] [--drain 60]

Cases: drop (the SMSC closes the session unanswered about every second), throttle
(ESME_RTHROTTLED to every second submit), stall (answers held past the response
timeout), malformed (every 5th accepted submit_sm answered with a malformed
submit_sm_resp: lying command_length, truncated body, garbage message_id, wrong
command_id in turn), down (the SMSC's port closed for --down s), sigkill / sigkill_split (every
process of the daemon SIGKILLed and restarted, one process / http.workers: 1),
disk_full (the store on a tmpfs the harness mounts, as root, filled then freed; skipped
with a note where mounting is not allowed), webhook_down (the agency's reply webhook
gone for --webhook-down s; the drain is then at least --webhook-down + 30 s, for the
backed-off retries).

Counting: every submission carries a unique text (`chaos <case> <n>`), so "arrived" is
the distinct texts the simulator accepted (it records only the submit_sm it answered
ESME_ROK or held for a late answer), "duplicated" the accepted submits beyond one per
text, "lost" the accepted messages that never arrived and are not still queued in the
store once the backlog had `drain` seconds to go out. The duplicate bound is per part:
no text reaches the SMSC more than MAX_UNKNOWN_OUTCOMES times (the operators'
`max_unknown_outcomes`, the most sends of a part without an answer); the total of
copies is shown, bounded by about a window per fault event. Recovery: seconds from the
end of the fault until everything accepted so far has arrived (and, with a webhook,
every MO taken was pushed).

USSD: one session a second, each a citizen (own MSISDN, own national ID) dialling the
judiciary's menu (*4*0135#, config/ussd/judiciary.yaml) and filing a request in four
steps through the simulator's handset API. A session is done when its last page ends
with a tracking number, broken when a step fails or the dialog ends early (the fault's
doing, counted, allowed). Wrong, never allowed: a handset answered more often than it
asked, a filing for a national ID under another MSISDN, two filings of one session, a
tracking number that is not the filing's, a done session without its filing. After the
drain, USSD_PROBES sessions more must all complete (the service recovered).
"""

import argparse
import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import (KEYS, REPO, Daemon, Simulator, free_port, http_json,  # noqa: E402
                            write_config)

KEY = KEYS["tax"]
WINDOW = 10                    # the operator's window: duplicates must stay within it
RESPONSE_TIMEOUT_S = 1.0       # short, so that the stall case times out within seconds
STILL_QUEUED = ("queued", "sending", "retry")
MAX_UNKNOWN_OUTCOMES = 3       # operators' max_unknown_outcomes: the per-part copy bound
MALFORMED_EVERY = 5            # the malformed case: every Nth accepted submit_sm
USSD_MENU = REPO / "config" / "ussd" / "judiciary.yaml"
USSD_CODE = "*4*0135#"         # the judiciary's (config/agencies.yaml)
USSD_EVERY_S = 1.0             # one session started a second
USSD_STEP_TIMEOUT_S = 3.0      # a step unanswered this long: the session is broken
USSD_PROBES = 2                # sessions after the drain, all of which must complete


@dataclass
class Row:
    case: str
    accepted: int = 0
    refused: int = 0
    arrived: int = 0
    parts_at_smsc: int = 0
    lost: int = 0
    duplicated: int = 0
    max_copies: int = 0
    binds: int = 0                 # binds the SMSC took: more than the operators' = rebinds
    still_queued: int = 0
    failed: int = 0
    mo_sent: int = 0
    mo_stored: int = 0
    webhooks: int | None = None
    ussd_started: int = 0
    ussd_done: int = 0
    ussd_broken: int = 0
    ussd_wrong: int = 0
    ussd_after: str = "-"          # probes completed / run, after the drain
    recover_s: float | None = None
    peak_rss_mb: float = 0.0
    note: str = ""
    lost_texts: list = field(default_factory=list)
    ussd_problems: list = field(default_factory=list)
    probes_failed: int = 0

    def failures(self):
        """Why this case fails the harness (empty: it passed)."""
        if self.note.startswith("skipped"):
            return []
        reasons = []
        if self.lost:
            reasons.append(f"{self.lost} accepted message(s) lost: {self.lost_texts}")
        if self.max_copies > MAX_UNKNOWN_OUTCOMES:
            reasons.append(f"a part reached the SMSC {self.max_copies} times "
                           f"(bound {MAX_UNKNOWN_OUTCOMES})")
        if self.webhooks is not None and self.webhooks < self.mo_stored:
            reasons.append(f"{self.mo_stored - self.webhooks} stored MO never reached the "
                           f"agency's webhook")
        if self.ussd_wrong:
            reasons.append(f"{self.ussd_wrong} USSD session(s) wrong: {self.ussd_problems[:5]}")
        if self.probes_failed:
            reasons.append(f"{self.probes_failed} USSD session(s) after recovery broken: "
                           f"{self.ussd_problems[-self.probes_failed:]}")
        return reasons


@dataclass
class UssdSession:
    """One citizen's USSD filing, as the harness saw it."""
    n: int
    msisdn: str
    national_id: str
    probe: bool = False             # started after the drain
    steps: int = 0                  # steps the handset sent
    answers: int = 0                # answers it got back to them
    tracking: str | None = None     # the last page's tracking number: done
    broken: str | None = None       # which step failed and how


def national_id(n):
    """A valid, distinct 10-digit national ID per n (mod-11 check digit, as
    gateway/national_id.py; computed here so the harness imports nothing of the code
    under test)."""
    first = f"{(n * 7919 + 123_456_789) % 10 ** 9:09d}"
    total = sum(int(d) * (10 - i) for i, d in enumerate(first)) % 11
    return first + str(total if total < 2 else 11 - total)


class PortedSimulator(Simulator):
    """The simulator on a fixed SMPP port, so it can be stopped and started again where
    the daemon reconnects (argparse keeps the last --port)."""

    def __init__(self, port):
        self.fixed_port = port
        super().__init__("--port", str(port), "--receipt-delay", "0.05")


class Run:
    """One case: a simulator, a daemon, a submitter thread; the counts of both sides."""

    def __init__(self, case, workdir, *, workers=0, rate=20.0, disk_mb=None,
                 webhook=False):
        self.case = case
        self.workdir = Path(workdir)
        self.webhook = WebhookSink(free_port()) if webhook else None
        self.disk = None            # a tmpfs of disk_mb holding the store, when asked
        if disk_mb:
            self.disk = mount_tmpfs(self.workdir / "disk", disk_mb)
        self.rate = rate
        self.sim_port = free_port()
        self.sim = PortedSimulator(self.sim_port)
        config, http_port = write_config(self.workdir, self.sim_port,
                                         agencies=self._agencies(),
                                         window=WINDOW)
        settings = yaml.safe_load(config.read_text())
        settings["http"]["workers"] = workers
        for operator in settings["operators"]:
            operator["response_timeout_s"] = RESPONSE_TIMEOUT_S
            operator["max_unknown_outcomes"] = MAX_UNKNOWN_OUTCOMES
        menus = self.workdir / "ussd"
        menus.mkdir(exist_ok=True)
        (menus / USSD_MENU.name).write_text(USSD_MENU.read_text(encoding="utf-8"),
                                            encoding="utf-8")
        settings["ussd_menus"] = str(menus)
        if self.disk is not None:
            settings["store"]["path"] = str(self.disk / "gateway.db")
        config.write_text(yaml.safe_dump(settings))
        self.daemon = Daemon(config, http_port)
        self.db_path = self.disk / "gateway.db" if self.disk else self.daemon.db_path
        self.accepted = {}          # message id → text
        self.refused = 0
        self.mo_sent = 0            # MO the daemon took (ESME_ROK to each part)
        self.mo_refused = 0
        self.submits_seen = []      # texts the simulators accepted (earlier instances too)
        self.prefix = f"chaos {case} "
        self.ussd_sessions = []
        self.ussd_strays = {}       # msisdn → answers nobody waited for (all simulators)
        self.peak_rss_kb = 0
        self.fault_counts = {}      # the simulators' drops / throttled, summed
        self.binds = 0              # binds the simulators took, summed
        self._stop = threading.Event()
        self._threads = []

    def _agencies(self):
        """The sample agencies, tax's replies pushed to our webhook sink when asked."""
        if self.webhook is None:
            return None
        agencies = yaml.safe_load((REPO / "config" / "agencies.yaml").read_text())
        agencies["agencies"][0]["reply_webhook"] = {
            "url": f"http://127.0.0.1:{self.webhook.port}/replies",
            "secret": "whsec_" + base64.b64encode(b"chaos-webhook-secret-0123456789").decode()}
        path = self.workdir / "agencies.yaml"
        path.write_text(yaml.safe_dump(agencies, allow_unicode=True))
        return path

    # --- load ------------------------------------------------------------------------------
    def start(self):
        self.daemon.start()
        for target in (self._submit_loop, self._mo_loop, self._ussd_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _submit_loop(self):
        n = 0
        while not self._stop.wait(1.0 / self.rate):
            n += 1
            text = f"chaos {self.case} {n:06d}"
            number = f"0912{n % 10_000_000:07d}"
            try:
                code, body, _ = http_json(self.daemon.http_port, "POST", "/v1/messages",
                                          {"from": "40401234", "to": number, "text": text},
                                          key=KEY, timeout=5)
            except OSError:
                self.refused += 1
                continue
            if code == 202:
                for message in body["messages"]:
                    self.accepted[message["id"]] = text
            else:
                self.refused += 1

    def _mo_loop(self):
        n = 0
        while not self._stop.wait(1.0):
            n += 1
            try:
                status, answer, _ = http_json(self.sim.control_port, "POST", "/mo", {
                    "from": f"0935{n:07d}", "to": "40401234",
                    "text": f"chaos-mo {self.case} {n:05d}"}, timeout=5)
            except OSError:
                continue
            # Taken: every part's deliver_sm_resp said ESME_ROK (else the SMSC keeps it).
            if status == 200 and not any(answer.get("statuses") or [1]):
                self.mo_sent += 1
            else:
                self.mo_refused += 1

    def _ussd_loop(self):
        n = 0
        while not self._stop.wait(USSD_EVERY_S):
            n += 1
            self.ussd_session(n)

    def ussd_session(self, n, probe=False):
        """One citizen files a request: dial, "1" (file a request), "1" (appointment),
        the national ID; the last page ends with the tracking number."""
        session = UssdSession(n, f"98936{n:07d}", national_id(n), probe=probe)
        self.ussd_sessions.append(session)
        steps = [("dial", {"code": USSD_CODE}), ("send", {"text": "1"}),
                 ("send", {"text": "1"}), ("send", {"text": session.national_id})]
        for number, (action, body) in enumerate(steps, 1):
            session.steps += 1
            try:
                status, answer, _ = http_json(self.sim.control_port, "POST", f"/ussd/{action}",
                                              {"from": session.msisdn, **body},
                                              timeout=USSD_STEP_TIMEOUT_S)
            except OSError as exc:
                session.broken = f"step {number}: {type(exc).__name__}"
                return session
            if status != 200:
                session.broken = f"step {number}: HTTP {status}"
                return session
            session.answers += 1
            last = number == len(steps)
            if bool(answer.get("end")) != last:
                session.broken = f"step {number}: " + ("ended early" if not last
                                                       else "no end on the last page")
                return session
        words = (answer.get("text") or "").split()
        if words and words[-1].isdigit() and len(words[-1]) == 10:
            session.tracking = words[-1]
        else:
            session.broken = "last page without a tracking number"
        return session

    def probe_ussd(self, count):
        """`count` sessions once the fault is over and the backlog drained; how many
        completed."""
        wait_until(self._bound, 15, 0.2)
        base = len(self.ussd_sessions) + 1_000_000
        return sum(1 for i in range(count)
                   if self.ussd_session(base + i, probe=True).tracking is not None)

    def _bound(self):
        try:
            return self.daemon.all_bound()
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def collect_ussd_strays(self):
        """Answers the simulator's handsets got that no step waited for (before that
        simulator goes away)."""
        for session in self.ussd_sessions:
            try:
                status, body, _ = http_json(self.sim.control_port, "GET",
                                            f"/ussd/last?msisdn={session.msisdn}", timeout=5)
            except OSError:
                return
            if status == 200 and body["answers"]:
                self.ussd_strays[session.msisdn] = (
                    self.ussd_strays.get(session.msisdn, 0) + len(body["answers"]))

    def stop_load(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    # --- the two sides' counts --------------------------------------------------------------
    def sim_texts(self):
        """The texts of this case's submissions the simulator accepted (not the USSD
        pages nor the filings' SMS)."""
        prefix = self.prefix
        try:
            return [s["text"] for s in self.sim.submits()
                    if (s["text"] or "").startswith(prefix)]
        except (OSError, AssertionError):
            return []

    def arrived(self):
        return set(self.submits_seen) | set(self.sim_texts())

    def all_arrived(self):
        if self.webhook is not None and self.webhook.delivered() < self.mo_sent:
            return False
        return set(self.accepted.values()) <= self.arrived()

    def settled(self):
        """No accepted message is still queued in the store (each went out or ended)."""
        try:
            statuses = self.statuses()[0]
        except sqlite3.Error:
            return False
        return not any(status in STILL_QUEUED for status in statuses.values())

    def sample_rss(self):
        total = 0
        try:
            pids = self.daemon.processes().values()
        except (OSError, AttributeError):
            return
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        self.peak_rss_kb = max(self.peak_rss_kb, total)

    # --- faults' tools ---------------------------------------------------------------------
    def count_faults(self):
        try:
            counters = self.sim.stats()
        except (OSError, AssertionError):
            return
        counters = counters.get("counters", counters)
        for name in ("drops", "throttled", "failed", "malformed"):
            if counters.get(name):
                self.fault_counts[name] = self.fault_counts.get(name, 0) + counters[name]
        self.binds += counters.get("binds", 0)

    def stop_sim(self):
        self.submits_seen += self.sim_texts()
        self.collect_ussd_strays()
        self.count_faults()
        self.sim.stop()

    def start_sim(self):
        self.sim = PortedSimulator(self.sim_port)

    def kill_daemon(self):
        """SIGKILL every process of the daemon (children first, then the supervisor)."""
        self.sample_rss()
        processes = self.daemon.processes()
        for (role, _), pid in sorted(processes.items(), key=lambda kv: kv[0][0] == "supervisor"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.daemon.proc.wait(10)
        self.daemon.log.close()
        self.fault_counts["kills"] = self.fault_counts.get("kills", 0) + 1

    def statuses(self):
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            ids = list(self.accepted)
            found = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found.update(db.execute(
                    f"SELECT id, status FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall())
            mo = db.execute("SELECT count(*) FROM inbox WHERE text LIKE ?",
                            (f"chaos-mo {self.case} %",)).fetchone()[0]
            filings = db.execute(
                "SELECT citizen, text FROM inbox WHERE channel = 'ussd'").fetchall()
            return found, mo, filings
        finally:
            db.close()

    def close(self):
        self.stop_load()
        try:
            self.daemon.stop()
        finally:
            self.sim.stop()
            if self.disk is not None:
                subprocess.run(["umount", str(self.disk)], check=False)
            if self.webhook is not None:
                self.webhook.stop()


class WebhookSink:
    """An agency's reply webhook on a fixed loopback port that can go down and come back
    (answers 204; remembers the MO texts pushed, across restarts)."""

    def __init__(self, port):
        self.port = port
        self.bodies = []
        self._server = None
        self.start()

    def start(self):
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self):
        """Distinct MO texts pushed."""
        return len({m for body in self.bodies
                    for m in re.findall(rb"chaos-mo [a-z_]+ [0-9]+", body)})


class CannotMount(Exception):
    """No tmpfs for the disk-full case (not root, or mounting is not allowed here)."""


def mount_tmpfs(path, size_mb):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotMount(done.stderr.strip() or f"mount exited {done.returncode}")
    return path


def wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- the cases: each applies its fault for `duration` seconds, then lifts it ----------------
def fault_drop(run, duration, **_):
    """The SMSC closes the session, unanswered, every few submits (a drop every ~second at
    the load's rate)."""
    run.sim.behave(drop_after=max(2, int(run.rate)), drop_repeat=True)
    time.sleep(duration)
    run.sim.behave(drop_after=0, drop_repeat=False)


def fault_throttle(run, duration, **_):
    """ESME_RTHROTTLED to every second submit (half of them)."""
    run.sim.behave(throttle_every=2)
    time.sleep(duration)
    run.sim.behave(throttle_every=0)


def fault_stall(run, duration, **_):
    """The SMSC stops answering: every submit_sm_resp held far beyond the response
    timeout (the window fills, the requests time out); the held answers come late."""
    run.sim.behave(ack_delay_s=duration)
    time.sleep(duration)
    run.sim.behave(ack_delay_s=0)


def fault_malformed(run, duration, every=MALFORMED_EVERY, **_):
    """Every `every`th accepted submit_sm answered with a malformed submit_sm_resp, the
    kinds in turn (gateway/simulator/malformed.py): the lying length desynchronises the
    stream (the session closes, the answers behind it are lost: unknown outcomes, sent
    again), the others are read for their status."""
    run.sim.behave(malformed_every=every)
    time.sleep(duration)
    run.sim.behave(malformed_every=0)


def fault_down(run, duration, down=None, **_):
    """The SMSC is gone (its port closed) for `down` seconds, then back."""
    run.stop_sim()
    time.sleep(down if down is not None else duration)
    run.start_sim()


def fault_sigkill(run, duration, kills=3, **_):
    """Every process of the daemon SIGKILLed and the daemon started again, `kills` times."""
    pause = max(1.0, duration / kills)
    for _ in range(kills):
        time.sleep(pause)
        run.kill_daemon()
        run.daemon.start()


def fault_disk_full(run, duration, **_):
    """The store's disk fills up (a file takes every free block of the tmpfs), stays
    full for `duration` seconds, then frees again."""
    filler = run.disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    run.fault_counts["disk_full"] = 1
    time.sleep(duration)
    filler.unlink()


def fault_webhook_down(run, duration, webhook_down=None, **_):
    """The agency's webhook receiver is gone (port closed) for `webhook_down` seconds."""
    run.webhook.stop()
    run.fault_counts["webhook_down"] = 1
    time.sleep(webhook_down if webhook_down is not None else duration)
    run.webhook.start()


CASES = {
    "drop": (fault_drop, {}),
    "throttle": (fault_throttle, {}),
    "stall": (fault_stall, {}),
    "malformed": (fault_malformed, {}),
    "down": (fault_down, {}),
    "sigkill": (fault_sigkill, {"workers": 0}),
    "sigkill_split": (fault_sigkill, {"workers": 1}),
    "disk_full": (fault_disk_full, {"disk_mb": 32}),
    "webhook_down": (fault_webhook_down, {"webhook": True}),
}
# A case's least drain, from its options: the webhook's retries back off ×2 from 5 s
# (jittered 0.5–1×), so the first one after an outage of D seconds comes within ~D + 5 s
# of its end, and the pusher looks for due retries every 5 s.
MIN_DRAIN = {
    "webhook_down": lambda options: options.get("webhook_down", 60.0) + 30.0,
}


def run_case(name, workdir, *, duration=6.0, warmup=1.0, drain=30.0, rate=20.0,
             probes=USSD_PROBES, **options):
    fault, settings = CASES[name]
    if name in MIN_DRAIN:
        drain = max(drain, MIN_DRAIN[name](options))
    row = Row(name)
    try:
        run = Run(name, workdir, rate=rate, **settings)
    except CannotMount as exc:
        row.note = f"skipped: cannot mount a tmpfs ({exc})"
        return row
    try:
        run.start()
        time.sleep(warmup)
        fault(run, duration, **options)
        lifted = time.monotonic()
        time.sleep(warmup)              # the load goes on a moment after the fault
        run.stop_load()
        drain_end = time.monotonic() + drain
        if wait_until(run.all_arrived, drain, 0.2):
            row.recover_s = round(time.monotonic() - lifted, 2)
        # Arrived is not the end: a part whose answer was lost arrived once and is sent
        # again after its backoff; copies are counted once nothing accepted is queued.
        wait_until(run.settled, max(0.0, drain_end - time.monotonic()), 0.5)
        run.sample_rss()
        probed = run.probe_ussd(probes) if probes else 0
        texts_at_smsc = list(run.submits_seen) + run.sim_texts()
        run.collect_ussd_strays()
        statuses, row.mo_stored, filings = run.statuses()
        run.count_faults()
        row.note = " ".join(f"{k}={v}" for k, v in sorted(run.fault_counts.items()))
    finally:
        run.close()
    account(row, run.accepted, texts_at_smsc, statuses)
    account_ussd(row, run.ussd_sessions, run.ussd_strays, filings)
    if probes:
        row.ussd_after = f"{probed}/{probes}"
        row.probes_failed = probes - probed
    row.mo_sent = run.mo_sent
    row.binds = run.binds
    row.refused = run.refused
    row.webhooks = run.webhook.delivered() if run.webhook else None
    row.peak_rss_mb = round(run.peak_rss_kb / 1024, 1)
    return row


def account(row, accepted, texts_at_smsc, statuses):
    """The SMS columns from both sides' records. accepted: {message id: text} (202
    answers); texts_at_smsc: the texts of every submit the simulators accepted, copies
    included; statuses: {message id: status} from the store after the drain."""
    arrived = set(texts_at_smsc)
    copies = {}
    for text in texts_at_smsc:
        copies[text] = copies.get(text, 0) + 1
    row.accepted = len(accepted)
    row.arrived = len(arrived & set(accepted.values()))
    row.parts_at_smsc = len(texts_at_smsc)
    row.duplicated = len(texts_at_smsc) - len(arrived)
    row.max_copies = max(copies.values(), default=0)
    missing = {mid: text for mid, text in accepted.items() if text not in arrived}
    row.still_queued = sum(1 for mid in missing if statuses.get(mid) in STILL_QUEUED)
    row.failed = sum(1 for status in statuses.values() if status in ("failed", "expired"))
    row.lost = len(missing) - row.still_queued
    row.lost_texts = sorted(missing.values())[:5]
    return row


def account_ussd(row, sessions, strays, filings):
    """The USSD columns. sessions: UssdSession (probes included); strays: {msisdn:
    answers no step waited for}; filings: (citizen, inbox text) of the store's USSD
    filings. Wrong (row.ussd_problems says how): answered more often than asked, a
    filing under another MSISDN or of an unknown national ID, two filings of one
    session, a tracking number not the filing's, a done session without its filing."""
    by_id = {s.national_id: s for s in sessions}
    filed = {}                      # national ID → tracking numbers filed
    problems = []
    for citizen, text in filings:
        try:
            document = json.loads(text)
            nid = document["values"]["national_id"]
            tracking = document.get("tracking")
        except (ValueError, KeyError, TypeError):
            problems.append("a USSD filing the harness cannot read")
            continue
        session = by_id.get(nid)
        if session is None:
            problems.append("a filing of a national ID no session typed")
            continue
        filed.setdefault(nid, []).append(tracking)
        if citizen[-10:] != session.msisdn[-10:]:
            problems.append(f"session {session.n}: filed under another MSISDN")
    for session in sessions:
        trackings = filed.get(session.national_id, [])
        if len(trackings) > 1:
            problems.append(f"session {session.n}: filed {len(trackings)} times")
        if session.answers + strays.get(session.msisdn, 0) > session.steps:
            problems.append(f"session {session.n}: answered "
                            f"{session.answers + strays[session.msisdn]} times to "
                            f"{session.steps} steps")
        if session.tracking is not None and trackings != [session.tracking]:
            problems.append(f"session {session.n}: done, but its filing's tracking is "
                            f"{trackings or 'missing'}")
    row.ussd_started = sum(1 for s in sessions if not s.probe)
    row.ussd_done = sum(1 for s in sessions if not s.probe and s.tracking is not None)
    row.ussd_broken = row.ussd_started - row.ussd_done
    row.ussd_wrong = len(problems)
    row.ussd_problems = problems + [f"probe {s.n}: {s.broken}" for s in sessions
                                    if s.probe and s.broken]
    return row


COLUMNS = ("case", "accepted", "refused", "arrived", "parts_at_smsc", "lost", "duplicated",
           "max_copies", "binds", "still_queued", "failed", "mo_sent", "mo_stored", "webhooks",
           "ussd_started", "ussd_done", "ussd_broken", "ussd_wrong", "ussd_after",
           "recover_s", "peak_rss_mb", "note")


def table(rows):
    cells = [COLUMNS] + [tuple("-" if getattr(r, c) is None else str(getattr(r, c))
                               for c in COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of fault")
    parser.add_argument("--down", type=float, default=30.0,
                        help="seconds the SMSC is down (the down case)")
    parser.add_argument("--webhook-down", type=float, default=60.0,
                        help="seconds the webhook receiver is down (the webhook_down case)")
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds the backlog has to go out after the fault (the "
                             "webhook_down case: at least --webhook-down + 30)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = []
    for name in args.case or list(CASES):
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as workdir:
            row = run_case(name, workdir, duration=args.duration, rate=args.rate,
                           drain=args.drain, down=args.down,
                           webhook_down=args.webhook_down)
        rows.append(row)
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(table(rows))
    failed = [(r.case, reason) for r in rows for reason in r.failures()]
    for case, reason in failed:
        print(f"FAILED {case}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
