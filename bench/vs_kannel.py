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
end-to-end rate is the one both can sustain.  The load is sent by wrk (C) when it is
installed (bench/vs_kannel.sh installs it), else by this script's asyncio client, which
costs more CPU a request than either gateway's HTTP side and shares the cores with them
(--client to choose).  Figures only, not a test.

    .venv/bin/python bench/vs_kannel.py [--messages 10000] [--clients 50] [--rounds 2]
                                        [--workers N|auto] [--client wrk|asyncio]
"""

import argparse
import asyncio
import json
import os
import signal
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


SLOT = "{N}"      # where a message's number goes in a request's target or body


class Requests:
    """What a round sends: message n (0..count-1) is `method target` with `headers` and
    `body`, SLOT in the target and body replaced by n in 7 digits (0912 + n: a distinct
    citizen each, as in the field)."""

    def __init__(self, method, target, headers=(), body=None):
        self.method, self.target, self.headers, self.body = method, target, headers, body

    def raw(self, n):
        """Request n as bytes (the asyncio client)."""
        number = f"{n:07d}"
        body = None if self.body is None else self.body.replace(SLOT, number).encode()
        head = [f"{self.method} {self.target.replace(SLOT, number)} HTTP/1.1", "Host: bench",
                *self.headers]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def kannel_requests(receipts=True):
    """Kannel's sendsms; with `receipts`, dlr-mask 3 (delivered or failed) asks the SMSC
    for a receipt per message, as ours does: Kannel then matches every deliver_sm
    receipt in its (RAM) DLR store, the same work ours does in its durable store."""
    extra = {"dlr-mask": "3"} if receipts else {}
    return Requests("GET", "/cgi-bin/sendsms?" + urlencode({
        "username": "bench", "password": "benchpass", "from": "40409999",
        "to": "0912" + SLOT, "text": TEXT, **extra}, safe="{}"))


def payam_sendsms_requests():
    return Requests("GET", "/cgi-bin/sendsms?" + urlencode({
        "username": "bench", "password": KEY, "from": "40409999",
        "to": "0912" + SLOT, "text": TEXT}, safe="{}"))


def payam_api_requests():
    return Requests("POST", "/v1/messages",
                    (f"Authorization: Bearer {KEY}", "Content-Type: application/json"),
                    json.dumps({"from": "40409999", "to": "0912" + SLOT, "text": TEXT}))


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


def asyncio_load(port, requests, count, clients):
    """(seconds, {status: answers}, the client's CPU seconds) of `count` requests from
    `clients` keep-alive connections, each sending its next request once the last is
    answered (Python)."""
    raw = [requests.raw(n) for n in range(count)]

    async def run():
        results = {}
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(port, raw[i::clients], results)
                               for i in range(clients)))
        return time.perf_counter() - started, results, time.process_time() - cpu
    return asyncio.run(run())


# wrk (C, epoll; one thread) sends the same requests far cheaper than the asyncio client
# (~60-86 µs of CPU a request here), which shares the 2 cores with both gateways.  Its
# connections ask request() for their next request once the last is answered; when all
# `count` are out, the connections still asking get a filler (GET of a path neither
# gateway has: a 404, not counted), and once `count` non-404 answers are in the script
# says so on stderr: wrk runs for its whole -d, so it is then stopped with SIGINT.
WRK_SCRIPT = """\
local method, target, body, total = {method}, {target}, {body}, {count}
local headers = {{{headers}}}
local issued, answered, counts, primed = 0, 0, {{}}, false
function init(args) io.stderr:write("READY\\n"); io.stderr:flush() end
function request()
  -- wrk asks once at a thread's start for a request it never sends when request() is
  -- defined: that one is a filler, so that message 0 is sent.
  if issued >= total or not primed then
    primed = true
    return wrk.format("GET", "/payam-bench-filler")
  end
  local n = issued
  issued = issued + 1
  return wrk.format(method, string.format(target, n), headers,
                    body and string.format(body, n) or nil)
end
function response(status, headers, body)
  if status == 404 then return end
  counts[status] = (counts[status] or 0) + 1
  answered = answered + 1
  if answered == total then
    local parts = {{}}
    for code, n in pairs(counts) do parts[#parts + 1] = code .. "=" .. n end
    io.stderr:write("FINISHED " .. table.concat(parts, " ") .. "\\n"); io.stderr:flush()
    wrk.thread:stop()
  end
end
"""


def _lua_string(text):
    return "nil" if text is None else json.dumps(text)   # a JSON string is a Lua string


def _lua_format(text):
    """`text` as a string.format template: SLOT becomes %07d, any other % doubled."""
    return None if text is None else text.replace("%", "%%").replace(SLOT, "%07d")


def wrk_load(port, requests, count, clients, directory):
    """asyncio_load's answer, the requests sent by wrk (one thread, `clients`
    connections)."""
    headers = ", ".join(f"[{_lua_string(name)}] = {_lua_string(value.strip())}"
                        for name, value in (h.split(":", 1) for h in requests.headers))
    script = Path(directory) / "load.lua"
    script.write_text(WRK_SCRIPT.format(
        method=_lua_string(requests.method), target=_lua_string(_lua_format(requests.target)),
        body=_lua_string(_lua_format(requests.body)), count=count, headers=headers))
    proc = subprocess.Popen(["wrk", "-t1", f"-c{clients}", "-d600s", "--timeout", "60s",
                             "-s", str(script), f"http://127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = None
    try:
        for line in proc.stderr:
            if line.startswith("READY"):
                started = time.perf_counter()
            elif line.startswith("FINISHED"):
                elapsed = time.perf_counter() - started
                results = {int(code): int(n) for code, n in
                           (item.split("=") for item in line.split()[1:])}
                return elapsed, results, cpu_seconds(proc.pid)
        raise RuntimeError(f"wrk ended without answering every request (exit {proc.wait()})")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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

    try:
        asyncio_load(kannel.http_port, kannel_requests(), 1, 1)
    except OSError:
        return False
    try:
        wait_for(lambda: sim.stats()["submits"] > base, 5, what="Kannel's first submit_sm")
    except AssertionError:
        return False
    return True


def round_of(name, port, requests, load, sim, pids):
    """(answers/s, submit_sm/s end to end) of one round; `load(port, requests)` sends
    it."""
    base = sim.stats()["submits"]
    before = sum(cpu_seconds(pid) for pid in pids)
    elapsed, results, client_cpu = load(port, requests)
    accepted = sum(n for status, n in results.items() if status in (200, 202))
    started = time.perf_counter() - elapsed
    wait_for(lambda: sim.stats()["submits"] - base >= accepted, 300, interval=0.01,
             what=f"{name}: every submit_sm at the SMSC")
    at_smsc = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    print(f"  {name:<26} {accepted / elapsed:8,.0f} accepted/s  {accepted / at_smsc:8,.0f} "
          f"submit_sm/s  CPU {cpu * 1e6 / max(accepted, 1):5.0f} µs/msg  {results}  (load "
          f"client {client_cpu * 1e6 / max(accepted, 1):.0f} µs/msg)",
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
    parser.add_argument("--client", choices=("wrk", "asyncio"), default=None,
                        help="the load generator (default: wrk when installed, which "
                             "bench/vs_kannel.sh does; asyncio: this script's own Python "
                             "client, which spends more of the 2 cores than wrk)")
    parser.add_argument("--workers", default=None,
                        help="our http.workers (0: one process; default: the daemon's "
                             "default)")
    args = parser.parse_args()
    client_name = args.client or ("wrk" if shutil.which("wrk") else "asyncio")
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
            if client_name == "wrk":
                def load(port, requests):
                    return wrk_load(port, requests, args.messages, args.clients, tmp)
            else:
                def load(port, requests):
                    return asyncio_load(port, requests, args.messages, args.clients)
            print(f"{args.messages} messages per run, {args.clients} keep-alive clients "
                  f"({client_name}), one bind (window 100) each to the same simulator; load {os.getloadavg()[0]:.1f}")
            rates = {"kannel": [], "sendsms": [], "api": []}
            for number in range(1, args.rounds + 1):
                print(f"round {number}:")
                rates["kannel"].append(round_of(
                    "Kannel /cgi-bin/sendsms", kannel.http_port,
                    kannel_requests(not args.kannel_no_receipts), load, sim,
                    kannel.pids()))
                rates["sendsms"].append(round_of(
                    "Payam /cgi-bin/sendsms", port, payam_sendsms_requests(), load, sim,
                    ours))
                rates["api"].append(round_of(
                    "Payam /v1/messages", port, payam_api_requests(), load, sim, ours))
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
