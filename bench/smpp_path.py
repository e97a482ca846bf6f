"""SMPP path micro-benchmark: CPU per message on our side of the binds.

Dispatcher → pool.submit → submit_sm on the wire → submit_sm_resp handled → receipt
(deliver_sm) classified and parsed by the InboundClassifier and answered with
deliver_sm_resp; the store is a stub that answers at once, the SMSC simulator runs as
its own process (receipts on), so the CPU figure is this process only: the
reactor-thread cost of the SMPP side.

    .venv/bin/python bench/smpp_path.py [--messages 20000] [--profile out.prof]
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from twisted.internet import defer, reactor  # noqa: E402

from daemon_harness import Simulator  # noqa: E402
from gateway.config.schema import OperatorConfig, Routing, RoutingRule  # noqa: E402
from gateway.inbound import InboundClassifier  # noqa: E402
from gateway.dispatch import Dispatcher  # noqa: E402
from gateway.dispatch.routing import OperatorRouter  # noqa: E402
from gateway.smpp.pool import OperatorPool  # noqa: E402
from gateway.model import ClaimedPart  # noqa: E402


class StubStore:
    def __init__(self, parts, on_receipts):
        self.parts = parts
        self.on_receipts = on_receipts
        self.recorded = 0
        self.claimed = []

    def queued_routes(self):
        return defer.succeed({"mci"})

    def claim(self, limit, now, route=None):
        if route != "mci":                  # every part here is routed to mci
            return defer.succeed([])
        batch, self.parts = self.parts[:limit], self.parts[limit:]
        self.claimed.extend(batch)
        return defer.succeed(batch)

    def renew_leases(self, now):
        return defer.succeed(0)

    def record(self, outcomes):
        self.recorded += len(outcomes)
        # A requeued part (a full lane, a lost session) comes back like the store's would.
        requeued = {(o.message_id, o.seq) for o in outcomes if o.kind == "requeue"}
        if requeued:
            self.parts.extend(p for p in self.claimed if (p.message_id, p.seq) in requeued)
        return defer.succeed(None)

    def apply_receipts(self, items, id_modes=None, learn=(), mature_s=None):
        self.on_receipts(len(items))
        return defer.succeed([True] * len(items))

    def learned_receipt_ids(self, operator):
        return "raw"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--profile", help="write cProfile stats here")
    args = parser.parse_args()

    sim = Simulator()
    now = time.time()
    parts = [ClaimedPart(f"m{n:08d}", 1, 1, "bench", "40409999", f"98912{n % 10_000_000:07d}",
                         0, 0, 0, "سلام، آزمون شماره {}".format(n).encode("utf-16-be"),
                         True, 0, now + 86400)
             for n in range(args.messages)]
    state = {"receipts": 0, "started": None}

    def on_receipts(n):
        state["receipts"] += n
        if state["receipts"] >= args.messages:
            reactor.callLater(0.05, reactor.stop)

    store = StubStore(parts, on_receipts)
    inbound = InboundClassifier(store, reactor)
    operator = OperatorConfig(name="mci", host="127.0.0.1", port=sim.smpp_port,
                              system_id="payam", password="secret", system_type="",
                              bind="transceiver", binds=2, window=100, tps=100_000,
                              enquire_link_s=30, response_timeout_s=10, reconnect_s=(0.2, 1))
    pool = OperatorPool(operator, inbound_handler=inbound.received, reactor=reactor)
    router = OperatorRouter(Routing(rules=(RoutingRule(("98",), "mci", (), "bench"),), default=None))
    dispatcher = Dispatcher(store, {"mci": pool}, {"mci": operator}, router,
                            clock=reactor)
    profiler = None

    def go():
        if pool.bound_count() < 2:
            reactor.callLater(0.05, go)
            return
        nonlocal profiler
        if args.profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        state["cpu"] = time.process_time()
        state["started"] = time.perf_counter()
        dispatcher.start()

    pool.startService()
    reactor.callLater(0.1, go)
    try:
        reactor.run()
    finally:
        sim.stop()
    cpu = time.process_time() - state["cpu"]
    wall = time.perf_counter() - state["started"]
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    n = args.messages
    print(f"{n} messages (submit_sm + resp + receipt) in {wall:.2f}s wall: "
          f"{n / wall:,.0f} msg/s; CPU {cpu * 1e6 / n:.1f} µs/msg in this process "
          f"(outcomes recorded {store.recorded}, receipts {state['receipts']})")
    os._exit(0)


if __name__ == "__main__":
    main()
