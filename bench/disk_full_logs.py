"""Log lines written while the store's disk is full: the real daemon, its store on a small
tmpfs that is then filled, POST /v1/messages from a few keep-alive clients for 15 s.

Needs root (it mounts the tmpfs itself).  Prints the daemon's log lines per level and
the answers the clients got.  Not a test: figures only.

    .venv/bin/python bench/disk_full_logs.py [--seconds 15] [--clients 4]
"""

import argparse
import collections
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, write_config  # noqa: E402

KEY = "bench-key-" + "0" * 22


def write_agency(directory):
    path = Path(directory) / "agencies.yaml"
    path.write_text(yaml.safe_dump({"agencies": [{
        "id": "bench", "name": "bench", "numbers": ["40409999"],
        "keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()],
        "rate_per_s": 1_000_000, "daily_parts": 100_000_000}]}))
    return path


def write_routing(directory):
    path = Path(directory) / "routing.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"prefixes": ["98"], "operator": "mci"}]}))
    return path


def fill(directory):
    """Write a file until the filesystem has no room left."""
    with open(directory / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
        try:
            os.fsync(filler.fileno())
        except OSError:
            pass


def client(port, until, answers):
    body = json.dumps({"from": "40409999", "to": "09121234567", "text": "disk full?"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < until:
        try:
            conn.request("POST", "/v1/messages", body=body,
                         headers={"Authorization": f"Bearer {KEY}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            answers[response.status] += 1
        except (OSError, http.client.HTTPException):
            answers["error"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="payam-diskfull-"))
    mount = work / "store"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    sim = Simulator()
    daemon = None
    try:
        config, http_port = write_config(work, sim.smpp_port, operators=("mci",),
                                         agencies=write_agency(work),
                                         routing=write_routing(work))
        document = yaml.safe_load(config.read_text())
        document["store"] = {"path": str(mount / "gateway.db")}
        config.write_text(yaml.safe_dump(document))
        daemon = Daemon(config, http_port).start()
        fill(mount)
        before = len(daemon.output().splitlines())
        answers = collections.Counter()
        until = time.monotonic() + args.seconds
        threads = [threading.Thread(target=client, args=(http_port, until, answers))
                   for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1.5)                 # the summaries of the last interval
        lines = daemon.output().splitlines()[before:]
        levels = collections.Counter(
            word for line in lines for word in line.split()[2:3])
        print(f"{args.seconds:g} s of POSTs on a full disk: answers {dict(answers)}")
        print(f"log lines: {len(lines)} ({dict(levels)})")
        for line in lines[:60]:
            print("  " + line[:160])
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()
        subprocess.run(["umount", str(mount)], check=False)


if __name__ == "__main__":
    main()
