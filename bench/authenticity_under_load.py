"""The 4040 check under load: how long a citizen waits for the answer while agencies
push MT traffic through the same daemon.

Starts the SMSC simulator and the daemon (as bench/mt_throughput.py does), sends a
notice to the checking citizens, then runs the MT load (`--messages` Persian messages
from 50 keep-alive clients) and meanwhile forwards `--checks` texts to 4040 through the
simulator, one every 0.2 s (half genuine, half invented), timing each from the MO's
injection to the answer's submit_sm at the simulator. Not a test: figures only.

    .venv/bin/python bench/authenticity_under_load.py [--messages 10000] [--checks 30]
"""

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, http_json, wait_for, write_config  # noqa: E402
from mt_throughput import KEY, load, write_bench_agency, write_bench_routing  # noqa: E402

NOTICE = "مؤدی گرامی، مهلت اظهارنامه شما تا ۲۰ آذر است."


class Watch:
    """Reads the simulator's new submits from a cursor on, looking for 4040's answer."""

    def __init__(self, sim):
        self.sim = sim
        self.cursor = sim.control("GET", "/submits?after=0&limit=1")["total"]

    def answered(self, citizen):
        page = self.sim.control("GET", f"/submits?after={self.cursor}&limit=100000")
        self.cursor = page["last"]
        return any(s["source_addr"] == "4040" and s["destination_addr"] == citizen
                   for s in page["submits"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=30)
    args = parser.parse_args()
    sim = Simulator("--receipt-delay", "0.2")
    with tempfile.TemporaryDirectory() as tmp:
        config, http_port = write_config(tmp, sim.smpp_port, operators=("mci",), window=100,
                                         binds=2, tps=100_000,
                                         agencies=write_bench_agency(tmp),
                                         routing=write_bench_routing(tmp))
        daemon = Daemon(config, http_port).start()
        try:
            citizens = [f"98935{n:07d}" for n in range(args.checks)]
            code, body, _ = http_json(http_port, "POST", "/v1/messages", {
                "from": "40409999", "to": citizens[::2], "text": NOTICE}, key=KEY)
            assert code == 202, body
            loader = threading.Thread(target=lambda: asyncio.run(load(
                http_port, args.messages, 50, "پیام آزمایشی سامانه پیام دولت", 1)))
            loader.start()
            waits = []
            for n, citizen in enumerate(citizens):
                time.sleep(0.2)
                watch = Watch(sim)
                text = NOTICE if n % 2 == 0 else f"پیام جعلی شماره {n}"
                started = time.perf_counter()
                sim.control("POST", "/mo", {"from": citizen, "to": "4040", "text": text})
                wait_for(lambda: watch.answered(citizen), 30, interval=0.01,
                         what="the answer")
                waits.append(time.perf_counter() - started)
            under_load = loader.is_alive()
            loader.join()
        finally:
            daemon.stop()
            sim.stop()
    waits.sort()
    print(f"checks: {len(waits)} while {args.messages} MT messages were being sent "
          f"(load still running after the last check: {under_load})")
    print(f"MO injected → answer's submit_sm at the SMSC: p50 {waits[len(waits) // 2] * 1000:.0f} ms,"
          f" p90 {waits[int(len(waits) * 0.9)] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
