"""MO intake: 10,000 citizens' messages (a third multipart) pushed by the SMSC simulator
as fast as it takes them, into the real daemon's inboxes, with the reply webhook on.

Starts the simulator and the daemon (durable store, synchronous=FULL) as subprocesses on
loopback and a webhook receiver in this process, injects the MO through the simulator's
control API from `--clients` concurrent connections, then prints MO/s stored (filed in
the inbox), the p50/p99 deliver_sm → deliver_sm_resp latency the simulator measured, and
webhook pushes/s received. Not a test: figures only.

    .venv/bin/python bench/mo_inbox.py [--messages 10000] [--clients 8]
"""

import argparse
import hashlib
import http.client
import json
import sqlite3
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, wait_for, write_config  # noqa: E402

KEY = "bench-key-" + "0" * 22
BATCH = 50                      # MO per control request (POST /mo-batch)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHORT = "Baleh, dorost ast. Mamnoon."
LONG = ("پاسخ شهروند: نامه\u200cی شما درباره پرونده مالیاتی دریافت شد و مدارک خواسته شده "
        "را فردا به دفتر می\u200cآورم. ") * 2          # 3 UCS2 parts


class Receiver(BaseHTTPRequestHandler):
    times = []
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.times.append(time.perf_counter())
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def write_bench_agency(directory, receiver_port):
    path = Path(directory) / "agencies.yaml"
    path.write_text(yaml.safe_dump({"agencies": [{
        "id": "bench", "name": "سازمان آزمون", "numbers": ["40409999"],
        "keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()],
        "rate_per_s": 1_000_000, "daily_parts": 100_000_000,
        "reply_webhook": {"url": f"http://127.0.0.1:{receiver_port}/replies",
                          "secret": SECRET}}]}, allow_unicode=True))
    return path


def write_bench_routing(directory):
    path = Path(directory) / "routing.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"prefixes": ["98"], "operator": "mci"}]}))
    return path


def client(port, bodies, results, lock):
    """One keep-alive connection to the control API, one MO at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for start in range(0, len(bodies), BATCH):
            batch = b'{"messages":[' + b",".join(bodies[start:start + BATCH]) + b"]}"
            conn.request("POST", "/mo-batch", body=batch,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                results[response.status] = results.get(response.status, 0) + 1
    finally:
        conn.close()


def load(port, messages, clients):
    bodies = [json.dumps({"from": f"0912{n:07d}", "to": "40409999",
                          "text": LONG if n % 3 == 0 else SHORT}, ensure_ascii=False).encode()
              for n in range(messages)]
    results, lock = {}, threading.Lock()
    workers = [threading.Thread(target=client, args=(port, bodies[i::clients], results, lock))
               for i in range(clients)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started, results


def filed(db_path):
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
    except sqlite3.Error:
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    sim = Simulator()
    with tempfile.TemporaryDirectory() as tmp:
        config, http_port = write_config(
            tmp, sim.smpp_port, operators=("mci",), window=100, binds=2, tps=100_000,
            agencies=write_bench_agency(tmp, receiver.server_address[1]),
            routing=write_bench_routing(tmp))
        daemon = Daemon(config, http_port).start()
        try:
            started = time.perf_counter()
            elapsed, results = load(sim.control_port, args.messages, args.clients)
            wait_for(lambda: filed(daemon.db_path) >= args.messages, 300, interval=0.05,
                     what="every MO filed")
            stored_elapsed = time.perf_counter() - started
            latency = sim.stats()["mo_resp_ms"]
            wait_for(lambda: len(Receiver.times) >= args.messages, 600, interval=0.1,
                     what="every webhook push")
            pushed_elapsed = Receiver.times[-1] - started
            parts = sim.stats()["mo"]
        finally:
            code = daemon.stop()
            sim.stop()
            receiver.shutdown()

    print(f"MO: {args.messages} ({parts} deliver_sm, a third in 3 UCS2 parts)  "
          f"clients: {args.clients}  control answers: {results}")
    print(f"MO/s injected and answered:     {args.messages / elapsed:8.0f}")
    print(f"MO/s stored (filed in inbox):   {args.messages / stored_elapsed:8.0f}")
    print(f"deliver_sm → resp latency, ms:  p50 {latency.get('p50')}  p99 {latency.get('p99')}"
          f"  max {latency.get('max')}  (over the last {latency.get('count')} PDUs)")
    print(f"webhook pushes/s received:      {len(Receiver.times) / pushed_elapsed:8.0f}"
          f"   (exit code {code})")


if __name__ == "__main__":
    main()
