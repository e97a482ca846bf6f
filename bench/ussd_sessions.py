"""USSD benchmark: 2,000 concurrent simulated citizens walk a 4-step menu over real SMPP
on loopback → steps/s and p50/p99 step latency (from the deliver_sm to our answer).

    .venv/bin/python bench/ussd_sessions.py [--citizens 2000] [--think 1] [--binds 2]

The daemon (GatewayService, its store in a temporary directory) runs in this process;
the built-in simulator and its handsets (gateway/simulator/ussd.py), which take the
times, in a child process: each side has its own reactor, as in production. Each
citizen reads a page for a while (--think, uniform 0..2× the mean, 1 s) before answering,
as people do: 2,000 of them offer ~2,000 steps/s. --think 0 is a closed loop (each
answers at once): the most steps/s, with latency set by the queue (Little's law).
Target (issue 9): ≥ 2,000 steps/s, p99 ≤ 20 ms on this machine.
"""

import argparse
import dataclasses
import multiprocessing
import random
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


def handsets(args, pipe):
    """The child: the simulator, its handsets walking the menu, the clock on them."""
    from twisted.internet import defer, reactor, task

    from gateway.simulator.main import start_simulator

    simulator = start_simulator(reactor, "127.0.0.1", 0, None)
    pipe.send(simulator.smpp_port)
    ussd = simulator.factory.ussd
    rng = random.Random(9)
    latencies, finished, done = [], [], [0]

    def later(seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def citizen(n):
        msisdn = f"98912{n:07d}"
        for text in ("*4*0135#",) + STEPS:
            if args.think:
                yield later(rng.uniform(0, 2 * args.think))
            started = time.perf_counter()
            if text.startswith("*"):
                answer = yield ussd.dial(msisdn, text)
            else:
                answer = yield ussd.send(msisdn, text)
            finished.append(time.perf_counter())
            latencies.append(finished[-1] - started)
        assert answer["end"], answer
        done[0] += 1

    @defer.inlineCallbacks
    def run():
        while len(simulator.factory.sessions) < args.binds:
            yield later(0.05)
        yield later(0.3)
        pipe.send("go")
        started = time.perf_counter()
        walks = defer.gatherResults([citizen(n) for n in range(args.citizens)],
                                    consumeErrors=True)
        outcome = []
        walks.addBoth(outcome.append)
        while not outcome and time.perf_counter() - started < args.deadline:
            yield later(0.1)
        if not outcome:
            pipe.send(f"after {args.deadline:g} s, {args.citizens - done[0]} of "
                      f"{args.citizens} citizens were still waiting for a page")
        else:
            pipe.send(report(args, latencies, finished, time.perf_counter() - started))
        yield simulator.stop()

    reactor.callWhenRunning(lambda: run().addBoth(lambda _: reactor.stop()))
    reactor.run()


def report(args, latencies, finished, elapsed):
    latencies.sort()
    finished.sort()
    steps = len(latencies)
    # The steady rate: steps done between the 10th and the 90th percentile of finishing.
    steady = (steps * 8 // 10) / (finished[steps * 9 // 10] - finished[steps // 10])

    def ms(q):
        return latencies[min(steps - 1, int(q * steps))] * 1000
    return (f"think {args.think:g} s: {args.citizens} citizens x 4 steps = {steps} steps in "
            f"{elapsed:.2f} s ({steps / elapsed:,.0f}/s overall, {steady:,.0f} steps/s "
            f"steady); step latency p50 {ms(0.5):.1f} ms, p99 {ms(0.99):.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=2000)
    parser.add_argument("--binds", type=int, default=2)
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean seconds a citizen takes between pages (uniform 0..2×); "
                             "0: each answers at once")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="give up (and say how many citizens still wait) after this")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=handsets, args=(args, theirs))
    child.start()
    smpp_port = ours.recv()

    from twisted.internet import reactor, task

    from gateway.config.load import load_gateway_config
    from gateway.service import GatewayService

    repo = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="payam-ussd-bench-"))
    (tmp / "ussd").mkdir()
    (tmp / "ussd" / "judiciary.yaml").write_text(MENU, encoding="utf-8")
    shutil.copy(repo / "config" / "agencies.yaml", tmp / "agencies.yaml")
    (tmp / "routing.yaml").write_text("rules: []\ndefault: mci\n")
    config = {"http": {"listen": "127.0.0.1:1"}, "store": {"path": "var/gateway.db"},
              "agencies": "agencies.yaml", "routing_rules": "routing.yaml",
              "ussd_menus": "ussd/",
              "operators": [{"name": "mci", "host": "127.0.0.1", "port": smpp_port,
                             "system_id": "mci", "password": "x", "binds": args.binds,
                             "window": 1000, "tps": 100000, "receipts": False}]}
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    conf = dataclasses.replace(load_gateway_config(str(tmp / "gateway.yaml")),
                               http_listen=("127.0.0.1", 0))
    service = GatewayService(conf, reactor)
    said, cpu = [], []

    def wait_for_the_child():
        if not ours.poll():
            return
        message = ours.recv()
        if message == "go":
            cpu.append(time.process_time())
            return
        cpu.append(time.process_time())
        said.append(message)
        poll.stop()
        service.stopService().addBoth(lambda _: reactor.stop())
    poll = task.LoopingCall(wait_for_the_child)
    reactor.callWhenRunning(service.startService)
    reactor.callWhenRunning(poll.start, 0.1)
    reactor.run()
    child.join(30)
    shutil.rmtree(tmp, ignore_errors=True)
    print(said[0] if said else "the handsets' process said nothing")
    if len(cpu) == 2 and "waiting" not in said[0]:
        print(f"the daemon's CPU: {(cpu[1] - cpu[0]) / (4 * args.citizens) * 1e6:.0f} µs "
              f"per step (its process, store writer thread included)")
    return 0 if said and "waiting" not in said[0] else 1


if __name__ == "__main__":
    sys.exit(main())
