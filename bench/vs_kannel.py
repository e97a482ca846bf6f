"""Kannel against Payam Gateway, the same keep-alive HTTP load, alternating, in one run.

Run through bench/vs_kannel.sh (it installs Kannel from Debian first).  One SMSC
simulator (`payam-gateway smsc-sim`); Kannel (bearerbox + smsbox, one SMPP bind, window
100, no store: it keeps messages in RAM; receipts asked with dlr-mask 3, as ours asks
for them, unless --kannel-no-receipts) and the daemon (durable SQLite store,
synchronous=FULL, one bind, window 100, receipts on) each bind to it.  Each round sends
--messages messages from --clients keep-alive connections to Kannel's /cgi-bin/sendsms,
then to ours, then to our /v1/messages, and waits until the simulator has every
submit_sm of the round before the next.  Prints accepted/s (HTTP answers) and
submit_sm/s at the simulator per round, and two ratios: of the HTTP answer rates, and end
to end (every message's submit_sm at the SMSC).  They differ because Kannel answers once a
message is in its RAM queue and submits later (6,000-10,600 answers/s here against ~5,000
submit_sm/s), while ours answers after the commit and submits as fast as it answers: the
end-to-end rate is the one both can sustain.  Figures only, not a test.

    .venv/bin/python bench/vs_kannel.py [--messages 10000] [--clients 50] [--rounds 2]
                                        [--workers N|auto]
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, free_port, wait_for, write_config  # noqa: E402
from mt_throughput import (  # noqa: E402
    KEY, cpu_seconds, daemon_processes, set_workers, write_bench_agency,
    write_bench_routing)

TEXT = "Payam Gateway benchmark message"
KANNEL_CONF = """\
group = core
admin-port = {admin}
admin-password = bench
smsbox-port = {box}
box-allow-ip = 127.0.0.1
log-file = "{dir}/bearerbox.log"
log-level = 4

group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {smpp}
transceiver-mode = true
smsc-username = kannel
smsc-password = secret
system-type = ""
max-pending-submits = 100
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box}
sendsms-port = {http}
log-file = "{dir}/smsbox.log"
log-level = 4

group = sendsms-user
username = bench
password = benchpass
max-messages = 1
"""


def request(port, path, body=None, headers=()):
    head = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1", "Host: bench",
            *headers]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def kannel_requests(count, receipts=True):
    """Kannel's sendsms; with `receipts`, dlr-mask 3 (delivered or failed) asks the SMSC
    for a receipt per message, as ours does: Kannel then matches every deliver_sm
    receipt in its (RAM) DLR store, the same work ours does in its durable store."""
    extra = {"dlr-mask": "3"} if receipts else {}
    return [request(0, "/cgi-bin/sendsms?" + urlencode({
        "username": "bench", "password": "benchpass", "from": "40409999",
        "to": f"0912{n:07d}", "text": TEXT, **extra})) for n in range(count)]


def payam_sendsms_requests(count):
    return [request(0, "/cgi-bin/sendsms?" + urlencode({
        "username": "bench", "password": KEY, "from": "40409999",
        "to": f"0912{n:07d}", "text": TEXT})) for n in range(count)]


def payam_api_requests(count):
    return [request(0, "/v1/messages", json.dumps(
        {"from": "40409999", "to": f"0912{n:07d}", "text": TEXT}).encode(),
        (f"Authorization: Bearer {KEY}", "Content-Type: application/json"))
        for n in range(count)]


async def client(port, requests, results):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in requests:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            results[status] = results.get(status, 0) + 1
    finally:
        writer.close()


async def load(port, requests, clients):
    results = {}
    started = time.perf_counter()
    await asyncio.gather(*(client(port, requests[i::clients], results)
                           for i in range(clients)))
    return time.perf_counter() - started, results


class Kannel:
    def __init__(self, directory, smpp_port):
        self.dir = Path(directory)
        self.http_port = free_port()
        conf = self.dir / "kannel.conf"
        conf.write_text(KANNEL_CONF.format(admin=free_port(), box=free_port(),
                                           smpp=smpp_port, http=self.http_port,
                                           dir=self.dir))
        self.bearerbox = subprocess.Popen([shutil.which("bearerbox") or "/usr/sbin/bearerbox",
                                           str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
        time.sleep(1)
        self.smsbox = subprocess.Popen([shutil.which("smsbox") or "/usr/sbin/smsbox",
                                        str(conf)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    def pids(self):
        return [self.bearerbox.pid, self.smsbox.pid]

    def stop(self):
        for proc in (self.smsbox, self.bearerbox):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def kannel_ready(kannel, sim):
    """Kannel answers sendsms once its bind is up (a message then reaches the SMSC)."""
    base = sim.stats()["submits"]

    async def one():
        try:
            return await load(kannel.http_port, kannel_requests(1), 1)
        except OSError:
            return None
    if asyncio.run(one()) is None:
        return False
    try:
        wait_for(lambda: sim.stats()["submits"] > base, 5, what="Kannel's first submit_sm")
    except AssertionError:
        return False
    return True


def round_of(name, port, requests, clients, sim, pids):
    base = sim.stats()["submits"]
    before = sum(cpu_seconds(pid) for pid in pids)
    elapsed, results = asyncio.run(load(port, requests, clients))
    accepted = sum(n for status, n in results.items() if status in (200, 202))
    started = time.perf_counter() - elapsed
    wait_for(lambda: sim.stats()["submits"] - base >= accepted, 300, interval=0.01,
             what=f"{name}: every submit_sm at the SMSC")
    at_smsc = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    print(f"  {name:<26} {accepted / elapsed:8,.0f} accepted/s  {accepted / at_smsc:8,.0f} "
          f"submit_sm/s  CPU {cpu * 1e6 / max(accepted, 1):5.0f} µs/msg  {results}",
          flush=True)
    return accepted / elapsed, accepted / at_smsc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kannel-no-receipts", action="store_true",
                        help="Kannel asks for no receipts (ours always does): less work "
                             "for Kannel and the simulator than ours does")
    parser.add_argument("--workers", default=None,
                        help="our http.workers (0: one process; default: the daemon's "
                             "default)")
    args = parser.parse_args()
    sim = Simulator("--receipt-delay", "0.2")
    kannel = daemon = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            kannel = Kannel(tmp, sim.smpp_port)
            wait_for(lambda: kannel_ready(kannel, sim), 30, interval=0.5,
                     what="Kannel bound and answering")
            config, port = write_config(tmp, sim.smpp_port, operators=("mci",),
                                        window=100, binds=1, tps=100_000, receipts=True,
                                        agencies=write_bench_agency(tmp),
                                        routing=write_bench_routing(tmp))
            set_workers(config, args.workers)
            daemon = Daemon(config, port).start()
            ours = list(daemon_processes(daemon).values())
            print(f"{args.messages} messages per run, {args.clients} keep-alive clients, "
                  f"one bind (window 100) each to the same simulator; load {os.getloadavg()[0]:.1f}")
            rates = {"kannel": [], "sendsms": [], "api": []}
            for number in range(1, args.rounds + 1):
                print(f"round {number}:")
                rates["kannel"].append(round_of(
                    "Kannel /cgi-bin/sendsms", kannel.http_port,
                    kannel_requests(args.messages, not args.kannel_no_receipts),
                    args.clients, sim, kannel.pids()))
                rates["sendsms"].append(round_of(
                    "Payam /cgi-bin/sendsms", port, payam_sendsms_requests(args.messages),
                    args.clients, sim, ours))
                rates["api"].append(round_of(
                    "Payam /v1/messages", port, payam_api_requests(args.messages),
                    args.clients, sim, ours))
        finally:
            if daemon is not None:
                daemon.stop(timeout=60)
            if kannel is not None:
                kannel.stop()
            sim.stop()
    best = {name: max(answered for answered, _ in values) for name, values in rates.items()}
    ends = {name: max(end for _, end in values) for name, values in rates.items()}
    receipts = "no receipts" if args.kannel_no_receipts else "receipts asked, dlr-mask 3"
    print(f"best of {args.rounds}, HTTP answers: Kannel {best['kannel']:,.0f}/s ({receipts}; "
          f"RAM only: a message it answered is lost if it stops), Payam sendsms "
          f"{best['sendsms']:,.0f}/s ({best['sendsms'] / best['kannel']:.2f}x), Payam "
          f"/v1/messages {best['api']:,.0f}/s ({best['api'] / best['kannel']:.2f}x), durable "
          f"(synchronous=FULL) with receipts tracked")
    print(f"best of {args.rounds}, end to end (the last submit_sm at the SMSC): Kannel "
          f"{ends['kannel']:,.0f}/s, Payam sendsms {ends['sendsms']:,.0f}/s "
          f"({ends['sendsms'] / ends['kannel']:.2f}x), Payam /v1/messages "
          f"{ends['api']:,.0f}/s ({ends['api'] / ends['kannel']:.2f}x)")

if __name__ == "__main__":
    main()
