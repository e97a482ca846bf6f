"""The hostile HTTP client's figures against the agency API of a source tree.

    .venv/bin/python bench/http_hostile.py [--tree DIR] [scenario ...]

Runs the real HTTPFactory + AgencyAPI + SQLite store of DIR (default: this tree) in a
subprocess on loopback and points tests/hostile_http.py at it. Scenarios: pipeline,
halfclose, split, nohost, dupkey, surrogate, conns, badkeys, noread (all by default),
and openapi (--openapi-conns pipeliners of GET /v1/openapi.json that never read).
Pass `--tree` an export of an older commit (git archive) to get its figures.
"""

import argparse
import collections
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import hostile_http as h  # noqa: E402

SERVER = textwrap.dedent('''
    import os, sys, tempfile
    sys.path.insert(0, sys.argv[1])
    from twisted.internet import reactor
    from gateway.config.schema import Agency
    from gateway.http.api import AgencyAPI
    from gateway.http.server import HTTPFactory
    from gateway.policy.audit import AuditLog
    from gateway.policy.auth import KeyRing, hash_key
    from gateway.policy.limits import AgencyLimits
    from gateway.store import Store
    db = os.path.join(tempfile.mkdtemp(prefix="payam-hostile-"), "gateway.db")
    store = Store(db, reactor)
    store.open()
    agencies = [Agency(id="tax", name="tax", keys=(hash_key("tax-key"),),
                       numbers=("40401234",), masks=("MALIAT",), ussd_code=None,
                       rate_per_s=1e9, daily_parts=10**12, reply_webhook=None)]
    keyring, audit = KeyRing(agencies), AuditLog(store, reactor)
    limits = AgencyLimits(agencies, store, reactor)
    # A tree before issue 7 has no gateway/outbound (not imported: the editable
    # install's finder would bring this tree's).
    if not os.path.isdir(os.path.join(sys.argv[1], "gateway", "outbound")):
        api = AgencyAPI(store, keyring, limits, audit, clock=reactor,
                        on_accepted=lambda r: None, route_of=lambda m: "mci", health=dict)
    else:
        from gateway.outbound.accept import Outbound
        outbound = Outbound(store, limits, audit, clock=reactor,
                            agencies=lambda: keyring.agencies, on_accepted=lambda r: None,
                            route_of=lambda m: "mci")
        api = AgencyAPI(outbound, store, keyring, audit, clock=reactor, health=dict)
    port = reactor.listenTCP(0, HTTPFactory(api.router, clock=reactor),
                             interface="127.0.0.1", backlog=1024)
    print("PORT", port.getHost().port, db, flush=True)
    reactor.run()
''')
SCENARIOS = ("pipeline", "halfclose", "split", "nohost", "dupkey", "surrogate", "conns",
             "badkeys", "noread")     # openapi runs only when named
BODY = {"from": "40401234", "to": "09121234567", "text": "x"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=ROOT)
    parser.add_argument("--noread-s", type=float, default=40.0)
    parser.add_argument("--openapi-conns", type=int, default=200)
    parser.add_argument("--openapi-s", type=float, default=10.0)
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER, args.tree],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, port, db = server.stdout.readline().split()
    port = int(port)

    def count(sql):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchone()[0]

    def rss_mb():
        with open(f"/proc/{server.pid}/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status
                        if line.startswith("VmRSS"))

    try:
        for scenario in args.scenarios:
            globals()["run_" + scenario](port, count, rss_mb, args)
    finally:
        server.terminate()
        server.wait()


def run_pipeline(port, count, rss_mb, args):
    requests = [h.message("tax-key", text=f"p{i}") for i in range(2000)]
    responses, _ = h.pipeline(port, requests, timeout=60)
    print(f"pipelined 2,000 POSTs: {len(responses.items)} answered "
          f"{dict(collections.Counter(responses.statuses))}")


def run_halfclose(port, count, rss_mb, args):
    before = count("SELECT COUNT(*) FROM messages")
    responses, closed = h.half_close(port, h.message("tax-key", text="half"))
    time.sleep(0.3)
    print(f"half-close after a POST: answers {responses.statuses}, closed {closed}, "
          f"stored {count('SELECT COUNT(*) FROM messages') - before}")


def run_split(port, count, rss_mb, args):
    data = h.message("tax-key", text="split")
    last = h.request("GET", "/healthz", headers=[("Connection", "close")])
    outcomes = collections.Counter()
    for cut in range(1, len(data)):
        responses, _ = h.trickle(port, data + last, [cut])
        outcomes[tuple(responses.statuses)] += 1
    print(f"head split at each of {len(data) - 1} bytes: {dict(outcomes)}")


def run_nohost(port, count, rss_mb, args):
    responses, _ = h.exchange(port, h.post_json("/v1/messages", BODY, "tax-key", host=None),
                              want=1)
    print(f"HTTP/1.1 without Host: {responses.statuses} {responses.codes()}")


def run_dupkey(port, count, rss_mb, args):
    responses, _ = h.exchange(
        port, h.post_json("/v1/messages", h.duplicate_key_body(), "tax-key"), want=1)
    print(f"duplicate key: {responses.statuses} {responses.codes()}")


def run_surrogate(port, count, rss_mb, args):
    before = count("SELECT COUNT(*) FROM audit WHERE event = 'sender_refused'")
    for field in ("idempotency_key", "reference", "from", "text", "to"):
        responses, _ = h.exchange(
            port, h.post_json("/v1/messages", h.surrogate_body(field), "tax-key"), want=1)
        print(f"lone surrogate in {field}: {responses.statuses} {responses.codes()}")
    time.sleep(0.3)
    print("  sender_refused audit rows:",
          count("SELECT COUNT(*) FROM audit WHERE event = 'sender_refused'") - before)


def run_conns(port, count, rss_mb, args):
    results = h.many_connections(port, 1500, h.request("GET", "/healthz"), timeout=60)
    print("1,500 connections at once:",
          dict(collections.Counter(tuple(r.statuses) for r in results)))


def run_badkeys(port, count, rss_mb, args):
    flood, after = h.bad_key_flood(port, 10000, good_key="tax-key", timeout=120)
    print(f"10,000 bad keys: {dict(collections.Counter(flood.statuses))}; "
          f"a good key from the same address then: {after}")


def run_noread(port, count, rss_mb, args):
    time.sleep(0.5)
    before = rss_mb()
    started = time.monotonic()
    taken, cut_off = h.pipeline_without_reading(
        port, h.request("GET", "/healthz"), seconds=args.noread_s, burst=4096, pace=0.01)
    spent = time.monotonic() - started
    print(f"pipeliner that never reads: server RSS {before} -> {rss_mb()} MB; "
          + (f"cut off after {spent:.0f} s" if cut_off else f"not cut off in {spent:.0f} s")
          + f" ({taken / 1e6:.1f} MB of requests taken)")


def run_openapi(port, count, rss_mb, args):
    time.sleep(0.5)
    before = rss_mb()
    peak = [before]
    request = h.request("GET", "/v1/openapi.json")
    threads = [threading.Thread(target=h.pipeline_without_reading, daemon=True,
                                args=(port, request, args.openapi_s), kwargs={"burst": 65536})
               for _ in range(args.openapi_conns)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak.append(rss_mb())
        time.sleep(0.2)
    print(f"{args.openapi_conns} pipeliners of /v1/openapi.json that never read, "
          f"{args.openapi_s:g} s: server RSS {before} -> peak {max(peak)} MB "
          f"(+{max(peak) - before} MB)")


if __name__ == "__main__":
    main()
