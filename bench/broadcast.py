"""Broadcast benchmark: one big Persian broadcast, an emergency mid-drain, then two agencies.

Starts the SMSC simulator and the daemon (durable store, 4 binds) as subprocesses on
loopback and prints:
1. time to the 202 of one broadcast of N recipients (NDJSON, streamed; 2-part Persian),
2. its drain rate in parts/s at the simulator over 4 binds, the daemon's peak RSS,
3. the delay of one emergency message sent when half the broadcast has drained
   (from its POST to its status `submitted`),
4. a second daemon whose operator allows 4,000 parts/s: two agencies (rate_per_s 6,000
   and 2,000) broadcasting at once, and each one's share of what the operator carried.
Not a test: figures only.

    .venv/bin/python bench/broadcast.py [--recipients 1000000] [--window 60] [--pair 60000]
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, http_json, wait_for, write_config  # noqa: E402
from mt_throughput import (  # noqa: E402
    cpu_seconds, daemon_processes, peak_rss_mb, set_workers)
from profiling import PyinstrumentDaemon, finish_profile, start_profile  # noqa: E402

TEXT = ("شهروند گرامی، به دلیل شرایط جوی فردا مدارس استان تعطیل است. "
        "لطفاً از تردد غیرضروری خودداری فرمایید. ستاد مدیریت بحران")
AGENCIES = {"crisis": ("40401000", 1_000_000), "alpha": ("40402000", 6000),
            "beta": ("40403000", 2000), "police": ("40404000", 1000)}


def key(agency):
    return f"bench-{agency}-key-" + "0" * 20


def write_agencies(directory):
    path = Path(directory) / "agencies.yaml"
    path.write_text(yaml.safe_dump({"agencies": [
        {"id": agency, "name": agency, "numbers": [number],
         "keys": ["sha256:" + hashlib.sha256(key(agency).encode()).hexdigest()],
         "rate_per_s": rate, "daily_parts": 100_000_000}
        for agency, (number, rate) in AGENCIES.items()]}))
    return path


def write_routing(directory):
    path = Path(directory) / "routing.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"prefixes": ["98"], "operator": "mci"}]}))
    return path


def ndjson(count, first):
    """The body, made a piece at a time (never whole in this process either)."""
    for start in range(first, first + count, 10_000):
        yield "".join(f'"0912{n:07d}"\n'
                      for n in range(start, min(start + 10_000, first + count))).encode()


def post_broadcast(port, agency, count, first=0):
    """(seconds to the 202, its document)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    query = urlencode({"from": AGENCIES[agency][0], "text": TEXT})
    started = time.perf_counter()
    conn.putrequest("POST", "/v1/broadcasts?" + query)
    conn.putheader("Authorization", f"Bearer {key(agency)}")
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for piece in ndjson(count, first):
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    document = json.loads(response.read())
    elapsed = time.perf_counter() - started
    conn.close()
    assert response.status == 202, (response.status, document)
    return elapsed, document


def progress(port, agency, broadcast_id):
    status, document, _ = http_json(port, "GET", f"/v1/broadcasts/{broadcast_id}",
                                    key=key(agency), timeout=30)
    assert status == 200, (status, document)
    return document["counts"]


def emergency_delay(port, sim):
    """(seconds from its POST to the SMSC's receiving it, to its status `submitted`)."""
    last = sim.stats()["submits"]
    started = time.time()
    status, document, _ = http_json(port, "POST", "/v1/messages", {
        "from": AGENCIES["police"][0], "to": "09351234567", "priority": "emergency",
        "text": "هشدار: سیلاب در مسیر؛ فوراً به ارتفاعات بروید"}, key=key("police"))
    assert status == 202, (status, document)
    accepted = time.time() - started
    message_id = document["messages"][0]["id"]
    at_smsc = at_status = None
    deadline = time.monotonic() + 60
    while (at_smsc is None or at_status is None) and time.monotonic() < deadline:
        if at_smsc is None:
            page = sim.control("GET", f"/submits?after={last}&limit=5000")
            for record in page["submits"]:
                if record["destination_addr"] == "989351234567":
                    at_smsc = record["received_at"] - started
            last = page["last"]
        if at_status is None:
            _, message, _ = http_json(port, "GET", f"/v1/messages/{message_id}",
                                      key=key("police"))
            if message["status"] in ("submitted", "delivered"):
                at_status = time.time() - started
        time.sleep(0.01)
    return at_smsc, at_status, accepted


def commits(daemon):
    """(transactions, their seconds) the daemon's store writer committed so far."""
    found = {}
    for line in daemon.scrape_metrics().splitlines():
        for name in ("payam_store_commit_seconds_count", "payam_store_commit_seconds_sum"):
            if line.startswith(name + " "):
                found[name] = float(line.split()[1])
    return (found.get("payam_store_commit_seconds_count", 0.0),
            found.get("payam_store_commit_seconds_sum", 0.0))


def one_broadcast(tmp, recipients, window_s, profile=None, profile_out=None, workers=None):
    sim = Simulator("--receipt-delay", "1.0")
    config, port = write_config(tmp, sim.smpp_port, operators=("mci",), window=100,
                                binds=4, tps=100_000, receipts=True,
                                agencies=write_agencies(tmp), routing=write_routing(tmp))
    set_workers(config, workers)
    if profile == "pyinstrument":
        Path(profile_out).mkdir(parents=True, exist_ok=True)
        daemon = PyinstrumentDaemon(config, port, Path(profile_out)
                                    / "broadcast.pyinstrument.txt").start()
    else:
        daemon = Daemon(config, port).start()
    spy = None
    try:
        base = sim.stats()["submits"]
        # Split, an HTTP worker takes the broadcast and the dispatcher drains it.
        processes = {**daemon_processes(daemon), "simulator": sim.proc.pid}
        accepting = processes.get("http worker 1", daemon.proc.pid)
        draining = processes.get("dispatcher", daemon.proc.pid)
        spy = start_profile(profile, accepting, profile_out, "broadcast-accept")
        to_202, document = post_broadcast(port, "crisis", recipients)
        finish_profile(spy)
        spy = start_profile(profile, draining, profile_out, "broadcast-drain")
        rss_at_202 = {name: peak_rss_mb(pid) for name, pid in processes.items()
                      if name != "simulator"}
        parts = document["recipients"] * document["parts"]
        started = time.perf_counter()
        cpu = {name: cpu_seconds(pid) for name, pid in processes.items()}
        written = commits(daemon)
        if window_s:
            # A window of the drain: the emergency in its middle, then the rest cancelled.
            time.sleep(window_s / 2)
            delay = emergency_delay(port, sim)
            time.sleep(max(0.0, started + window_s - time.perf_counter()))
            carried = sim.stats()["submits"] - base - 1
            drain = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in processes.items()}
            written = [a - b for a, b in zip(commits(daemon), written)]
            cancel_started = time.perf_counter()
            status, counts, _ = http_json(port, "DELETE", f"/v1/broadcasts/{document['id']}",
                                          key=key("crisis"), timeout=60)
            cancel_s = time.perf_counter() - cancel_started
            counts = counts["counts"]
        else:
            wait_for(lambda: sim.stats()["submits"] - base >= parts // 2, 3600,
                     interval=0.05, what="half the broadcast at the SMSC")
            delay = emergency_delay(port, sim)
            wait_for(lambda: sim.stats()["submits"] - base >= parts + 1, 3600,
                     interval=0.05, what="the whole broadcast at the SMSC")
            carried = parts
            drain = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in processes.items()}
            written = [a - b for a, b in zip(commits(daemon), written)]
            counts = progress(port, "crisis", document["id"])
        rss = {name: peak_rss_mb(pid) for name, pid in processes.items()}
    finally:
        finish_profile(spy)
        code = daemon.stop(timeout=60)
        sim.stop()
    print(f"broadcast of {recipients} recipients (NDJSON, Persian, {document['parts']} "
          f"parts): 202 after {to_202:.1f} s ({recipients / to_202:,.0f} recipients/s), "
          "peak RSS by then: " + ", ".join(f"{name} {mb:.0f} MB"
                                          for name, mb in rss_at_202.items()))
    print(f"drain over 4 binds: {carried} parts in {drain:.1f} s: {carried / drain:,.0f} "
          f"parts/s (receipts on); CPU per part: " + ", ".join(
              f"{name} {seconds * 1e6 / max(carried, 1):.0f} µs ({seconds / drain:.2f} cores)"
              for name, seconds in cpu.items()))
    print(f"store writer during the drain: {written[0]:.0f} transactions, mean "
          f"{written[1] * 1000 / max(written[0], 1):.1f} ms (what each claim and feed "
          f"waits for); load average {os.getloadavg()[0]:.1f} (other work on the machine)")
    if window_s:
        print(f"then cancelled in {cancel_s * 1000:.0f} ms: counts {counts}")
    else:
        print(f"counts at the end {counts}")
    print(f"emergency message injected mid-drain: at the SMSC {delay[0] * 1000:.0f} ms "
          f"after its POST (202 after {delay[2] * 1000:.0f} ms), status submitted after "
          f"{delay[1] * 1000:.0f} ms")
    print("peak RSS: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in rss.items())
          + f" (exit code {code})")


def two_agencies(tmp, recipients, workers=None):
    sim = Simulator("--receipt-delay", "1.0")
    config, port = write_config(tmp, sim.smpp_port, operators=("mci",), window=100,
                                binds=4, tps=4000, receipts=False,
                                agencies=write_agencies(tmp), routing=write_routing(tmp))
    set_workers(config, workers)
    daemon = Daemon(config, port).start()
    try:
        ids = {}

        def send(agency, first):
            ids[agency] = post_broadcast(port, agency, recipients, first)[1]["id"]

        threads = [threading.Thread(target=send, args=(agency, first))
                   for agency, first in (("alpha", 0), ("beta", 5_000_000))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(2)                     # past the start
        before = {a: progress(port, a, i) for a, i in ids.items()}
        time.sleep(6)
        after = {a: progress(port, a, i) for a, i in ids.items()}
    finally:
        daemon.stop(timeout=60)
        sim.stop()
    def done(counts):
        return counts["submitted"] + counts["delivered"]

    carried = {a: done(after[a]) - done(before[a]) for a in ids}
    assert all(after[a]["queued"] for a in ids), "a broadcast ran out: use a larger --pair"
    total = sum(carried.values()) or 1
    print("two agencies at once over an operator of 4,000 parts/s (rate_per_s alpha "
          "6,000, beta 2,000), messages of 2 parts wholly submitted over 6 s: " + ", ".join(
              f"{a} {n} ({100 * n / total:.0f} %)" for a, n in carried.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--window", type=float, default=0,
                        help="measure the drain over this many seconds, then cancel the "
                             "rest (0: drain it all)")
    parser.add_argument("--pair", type=int, default=60_000,
                        help="recipients of each of the two agencies' broadcasts")
    parser.add_argument("--profile", choices=("py-spy", "pyinstrument"),
                        help="profile the daemon of the one broadcast (bench/profiling.py)")
    parser.add_argument("--profile-out", default="bench/profiles")
    parser.add_argument("--workers", default=None,
                        help="http.workers (0: one process; default: the daemon's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_broadcast(tmp, args.recipients, args.window, args.profile, args.profile_out,
                      args.workers)
    if args.pair:
        with tempfile.TemporaryDirectory() as tmp:
            two_agencies(tmp, args.pair, args.workers)


if __name__ == "__main__":
    main()
