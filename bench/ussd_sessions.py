"""USSD benchmark: 2,000 concurrent simulated citizens walk a 4-step menu over real SMPP
on loopback (the built-in simulator's handsets ↔ the daemon in this process) →
steps/s and p50/p99 step latency (from the deliver_sm to our answer's arrival).

    .venv/bin/python bench/ussd_sessions.py [--citizens 2000] [--binds 2]

Each citizen reads a page for a while (--think, mean 1 s) before answering, as people do:
2,000 of them at once offer ~2,000 steps/s. Target (issue 9): ≥ 2,000 steps/s, p99 ≤ 20 ms
on this machine. --think 0 is a closed loop (each answers at once): the most steps/s.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MENU = """\
agency: judiciary
start: home
states:
  home:
    type: menu
    text: "قوه قضاییه"
    options:
      - {text: "خدمات", next: services}
  services:
    type: menu
    text: "خدمات"
    options:
      - {text: "استعلام", next: ask}
  ask:
    type: input
    text: "کد ملی:"
    save: national_id
    validator: national_id
    next: bye
  bye:
    type: end
    text: "ممنون، {national_id}"
"""
STEPS = ("1", "1", "0067749828")          # after the dial: 4 steps in all


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=2000)
    parser.add_argument("--binds", type=int, default=2)
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean seconds a citizen takes between pages (uniform 0..2×); "
                             "0: each answers at once (a closed loop: the most steps/s)")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="give up (and say how many citizens still wait) after this")
    args = parser.parse_args()

    from twisted.internet import defer, reactor

    from gateway.config.load import load_gateway_config
    from gateway.service import GatewayService
    from gateway.simulator.main import start_simulator

    repo = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="payam-ussd-bench-"))
    simulator = start_simulator(reactor, "127.0.0.1", 0, None)
    (tmp / "ussd").mkdir()
    (tmp / "ussd" / "judiciary.yaml").write_text(MENU, encoding="utf-8")
    shutil.copy(repo / "config" / "agencies.yaml", tmp / "agencies.yaml")
    (tmp / "routing.yaml").write_text("rules: []\ndefault: mci\n")
    config = {"http": {"listen": "127.0.0.1:1"}, "store": {"path": "var/gateway.db"},
              "agencies": "agencies.yaml", "routing_rules": "routing.yaml",
              "ussd_menus": "ussd/",
              "operators": [{"name": "mci", "host": "127.0.0.1",
                             "port": simulator.smpp_port, "system_id": "mci",
                             "password": "x", "binds": args.binds, "window": 1000,
                             "tps": 100000, "receipts": False}]}
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    conf = load_gateway_config(str(tmp / "gateway.yaml"))
    import dataclasses
    conf = dataclasses.replace(conf, http_listen=("127.0.0.1", 0))
    service = GatewayService(conf, reactor)
    ussd = simulator.factory.ussd
    latencies, finished, result = [], [], {}

    import random
    rng = random.Random(9)

    @defer.inlineCallbacks
    def citizen(n):
        msisdn = f"98912{n:07d}"
        if args.think:
            yield deferLater(rng.uniform(0, 2 * args.think))      # they do not all dial at once
        started = time.perf_counter()
        answer = yield ussd.dial(msisdn, "*4*0135#")
        latencies.append(time.perf_counter() - started)
        finished.append(time.perf_counter())
        for text in STEPS:
            if args.think:
                yield deferLater(rng.uniform(0, 2 * args.think))
            started = time.perf_counter()
            answer = yield ussd.send(msisdn, text)
            latencies.append(time.perf_counter() - started)
            finished.append(time.perf_counter())
        assert answer["end"], answer
        result["done"] = result.get("done", 0) + 1

    @defer.inlineCallbacks
    def run():
        service.startService()
        while service.pools["mci"].bound_count() < args.binds:
            yield deferLater(0.05)
        yield deferLater(0.2)
        started = time.perf_counter()
        walks = defer.gatherResults([citizen(n) for n in range(args.citizens)],
                                    consumeErrors=True)
        finished = []
        walks.addBoth(finished.append)
        while not finished and time.perf_counter() - started < args.deadline:
            yield deferLater(0.1)
        if not finished:
            print(f"after {args.deadline:g} s, {args.citizens - result.get('done', 0)} of "
                  f"{args.citizens} citizens were still waiting for a page", flush=True)
            yield service.stopService()
            yield simulator.stop()
            return
        result["elapsed"] = time.perf_counter() - started
        yield service.stopService()
        yield simulator.stop()

    def deferLater(seconds):
        from twisted.internet import task
        return task.deferLater(reactor, seconds, lambda: None)

    def done(outcome):
        if hasattr(outcome, "printTraceback"):
            outcome.printTraceback()
        reactor.stop()
    reactor.callWhenRunning(lambda: run().addBoth(done))
    reactor.run()
    shutil.rmtree(tmp, ignore_errors=True)
    if "elapsed" not in result:
        return 1
    latencies.sort()
    steps = len(latencies)
    finished.sort()
    # The steady rate: steps done between the 10th and the 90th percentile of finishing.
    low, high = finished[steps // 10], finished[steps * 9 // 10]
    steady = (steps * 8 // 10) / (high - low)
    p = lambda q: latencies[min(steps - 1, int(q * steps))] * 1000  # noqa: E731
    print(f"think {args.think:g} s: {args.citizens} citizens x 4 steps = {steps} steps in {result['elapsed']:.2f} s"
          f" ({steps / result['elapsed']:,.0f}/s overall, {steady:,.0f} steps/s steady);"
          f" step latency p50 {p(0.5):.1f} ms,"
          f" p99 {p(0.99):.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
