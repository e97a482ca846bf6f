"""Agency API throughput: POST /v1/messages over keep-alive loopback connections, each
202 given only after the rows are committed (real store, synchronous=FULL).

    .venv/bin/python bench/http_api.py [-n 20000] [-c 50] [--clients 1] [--recipients 1]

The server (HTTP + policy + store) runs in this process on the real reactor; the load
comes from `--clients` separate processes (asyncio, `-c` connections in total, one
request in flight per connection, like `ab -k`). On a 2-core box the clients take CPU
from the server, so the figure is a floor. Prints requests/s and mean latency.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from twisted.internet import reactor, threads  # noqa: E402

from gateway.config.schema import Agency  # noqa: E402
from gateway.http.api import AgencyAPI  # noqa: E402
from gateway.http.server import HTTPFactory  # noqa: E402
from gateway.outbound.accept import Outbound  # noqa: E402
from gateway.policy.audit import AuditLog  # noqa: E402
from gateway.policy.auth import KeyRing, hash_key  # noqa: E402
from gateway.policy.limits import AgencyLimits  # noqa: E402
from gateway.store import Store  # noqa: E402

KEY = "bench-key-000000000000000000000"


def request_bytes(recipients):
    body = json.dumps({"from": "40401234", "text": "سلام از سامانه پیام",
                       "to": ["09121234567"] * recipients}, ensure_ascii=False).encode()
    return (b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n"
            % len(body) + body)


async def _connection(port, payload, count, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        started = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
    writer.close()


def client_process(port, payload, connections, per_connection, results):
    latencies = []

    async def main():
        await asyncio.gather(*(_connection(port, payload, per_connection, latencies)
                               for _ in range(connections)))

    asyncio.run(main())
    results.put(sum(latencies) / len(latencies))


def run_load(port, args):
    payload = request_bytes(args.recipients)
    per_client = max(1, args.c // args.clients)
    per_connection = max(1, args.n // (per_client * args.clients))
    results = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client_process,
                                     args=(port, payload, per_client, per_connection, results))
             for _ in range(args.clients)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    means = [results.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    return per_connection * per_client * args.clients, elapsed, sum(means) / len(means)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000, help="requests in total")
    parser.add_argument("-c", type=int, default=50, help="concurrent connections")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--recipients", type=int, default=1, help="recipients per request")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="payam-bench-")
    store = Store(os.path.join(tmp, "gateway.db"), reactor)
    store.open()
    agencies = [Agency(id="tax", name="tax", keys=(hash_key(KEY),), numbers=("40401234",),
                       masks=(), ussd_code=None, rate_per_s=1e9, daily_parts=10**12,
                       reply_webhook=None)]
    keyring, audit = KeyRing(agencies), AuditLog(store, reactor)
    outbound = Outbound(store, AgencyLimits(agencies, store, reactor), audit, clock=reactor,
                        agencies=lambda: keyring.agencies, on_accepted=lambda routes: None,
                        route_of=lambda msisdn: "mci")
    api = AgencyAPI(outbound, store, keyring, audit, clock=reactor, health=dict)
    port = reactor.listenTCP(0, HTTPFactory(api.router, clock=reactor), interface="127.0.0.1",
                             backlog=1024).getHost().port

    def report(outcome):
        done, elapsed, mean = outcome
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = used.ru_utime + used.ru_stime - cpu_before
        print(f"{done} requests x {args.recipients} recipient(s), {args.c} connections, "
              f"{args.clients} client process(es): {done / elapsed:,.0f} req/s, "
              f"{done * args.recipients / elapsed:,.0f} messages/s, "
              f"mean latency {mean * 1000:.1f} ms, {store.commits} commits, "
              f"server CPU {cpu / done * 1e6:.0f} µs/request")

    def finish(result):
        store.close().addBoth(lambda _: reactor.stop())
        return result

    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    d = threads.deferToThread(run_load, port, args)
    d.addCallback(report)
    d.addErrback(lambda f: print("bench failed:", f.getErrorMessage()))
    d.addBoth(finish)
    reactor.run()


if __name__ == "__main__":
    main()
