"""A broadcast's store work alone (no HTTP, no SMPP), on the real reactor.

1. accept: N recipients written in batches of 10,000 (as the intake does, at most 4
   waiting), then the broadcast opened (its fingerprints, one INSERT ... SELECT);
2. drain: rounds as the daemon runs them: the feeder feeds 2,000 recipients (4,000
   parts), the dispatcher claims them 500 at a time, records their submit outcomes in
   batches of --outcomes (what 2 ms gather at the target rate) and the receipts come
   in batches of the same size; timed over the first --drain parts.
Prints the rate, commits and the writer thread's CPU per recipient / part, so that a
change to the store's broadcast path can be judged without the noise of the rest.

    .venv/bin/python bench/broadcast_store.py [-n 1000000] [--drain 100000]
"""

import argparse
import os
import sys
import tempfile
import time

from twisted.internet import defer, reactor

from gateway.model import NewBroadcast, PartOutcome
from gateway.receipt_ids import normal_id
from gateway.store import Store, operations
from gateway.store import broadcasts as store_broadcasts
from gateway.store import receipts as store_receipts
from gateway.store import writer as writer_module

WRITER_CPU = [0.0]
_transact = writer_module.Writer._transact


def _timed_transact(self, batch):
    started = time.thread_time()
    try:
        return _transact(self, batch)
    finally:
        WRITER_CPU[0] += time.thread_time() - started


writer_module.Writer._transact = _timed_transact
OPERATION_CPU = {}          # writer CPU seconds per store operation


def _timed(module, name, label):
    operation = getattr(module, name)

    def timed(*args, **kwargs):
        started = time.thread_time()
        try:
            return operation(*args, **kwargs)
        finally:
            OPERATION_CPU[label] = OPERATION_CPU.get(label, 0.0) + time.thread_time() - started

    setattr(module, name, timed)


_timed(store_broadcasts, "add_recipients", "add recipients")
_timed(store_broadcasts, "open_broadcast", "open")
_timed(store_broadcasts, "feed", "feed")
_timed(operations, "claim", "claim")
_timed(operations, "record", "record")
_timed(store_receipts, "apply_receipts", "receipts")
PAYLOADS = [b"\x05\x00\x03\x00\x02\x01" + "ا".encode("utf-16-be") * 67,
            b"\x05\x00\x03\x00\x02\x02" + "ب".encode("utf-16-be") * 40]


class Phase:
    def __init__(self, store):
        self.store = store
        self.started = time.perf_counter()
        self.cpu = time.process_time()
        self.writer = WRITER_CPU[0]
        self.commits = store.commits
        self.operations = dict(OPERATION_CPU)

    def report(self, name, count, unit):
        seconds = time.perf_counter() - self.started
        writer = WRITER_CPU[0] - self.writer
        rest = time.process_time() - self.cpu - writer
        commits = self.store.commits - self.commits
        print(f"{name:<8} {count:>9,} {unit} in {seconds:6.2f} s = {count / seconds:>9,.0f}"
              f"/s  {commits:>5} commits; CPU µs per {unit[:-1]}: writer "
              f"{writer / count * 1e6:6.1f}, rest {rest / count * 1e6:6.1f}", flush=True)
        print("         writer CPU µs per " + unit[:-1] + ": " + ", ".join(
            f"{label} {(seconds - self.operations.get(label, 0.0)) / count * 1e6:.1f}"
            for label, seconds in OPERATION_CPU.items()
            if seconds > self.operations.get(label, 0.0)), flush=True)


@defer.inlineCallbacks
def bench(args):
    directory = tempfile.mkdtemp(prefix="payam-bench-")
    store = Store(os.path.join(directory, "bench.db"), reactor)
    store.open(create=True)
    broadcast_id = store.new_message_id()

    phase = Phase(store)
    waiting = []
    for first in range(0, args.n, 10_000):
        rows = [[989120000000 + n, "mci"] for n in range(first, min(first + 10_000, args.n))]
        waiting.append(store.add_broadcast_recipients(broadcast_id, rows))
        if len(waiting) >= 4:
            yield waiting.pop(0)
    yield defer.gatherResults(waiting)
    now = reactor.seconds()
    yield store.open_broadcast(NewBroadcast(
        id=broadcast_id, agency="crisis", sender="40401000", text="(bench)", priority=0,
        validity_s=86400, receipt=True, data_coding=8, esm_class=0x40, parts=PAYLOADS,
        created_at=now, recipients=args.n, invalid=0, fingerprint=b"\x01" * 16))
    phase.report("accept", args.n, "recipients")

    phase = Phase(store)
    drained = 0
    smsc = 0
    while drained < args.drain:
        fed, _routes, done = yield store.feed_broadcast(broadcast_id, 2000, reactor.seconds())
        pending = []
        while True:
            parts = yield store.claim(500, reactor.seconds(), "mci")
            if not parts:
                break
            ids = []
            for start in range(0, len(parts), args.outcomes):
                outcomes = []
                for part in parts[start:start + args.outcomes]:
                    smsc += 1
                    ids.append(f"{smsc:08x}")
                    outcomes.append(PartOutcome(part.message_id, part.seq, "submitted",
                                                operator="mci", smsc_id=ids[-1]))
                pending.append(store.record(outcomes))
            for start in range(0, len(ids), args.outcomes):
                # Receipts carry the normal form of the id (as read_receipt gives it):
                # the SMSC's "0000002a" before, so no receipt met its part and each
                # was kept unmatched instead of ending one.
                pending.append(store.apply_receipts(
                    [("mci", normal_id(i), "delivered", None)
                     for i in ids[start:start + args.outcomes]], {"mci": "raw"}))
            drained += len(parts)
        yield defer.gatherResults(pending)
        if done:
            break
    phase.report("drain", drained, "parts")
    counts = (yield store.get_broadcast(broadcast_id))["counts"]
    print(f"         counts {counts}", flush=True)
    yield store.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="recipients")
    parser.add_argument("--drain", type=int, default=100_000, help="parts drained")
    parser.add_argument("--outcomes", type=int, default=25,
                        help="outcomes (and receipts) per store write")
    args = parser.parse_args()
    result = {}

    def stop(outcome):
        result["outcome"] = outcome
        reactor.stop()

    reactor.callWhenRunning(lambda: bench(args).addBoth(stop))
    reactor.run()
    if hasattr(result.get("outcome"), "printTraceback"):
        result["outcome"].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
