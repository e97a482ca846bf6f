"""Store throughput with synchronous=FULL, on the real reactor.

    .venv/bin/python bench/store.py [-n 50000] [-c 50] [--commit-interval 0.002]
                                    [--synchronous NORMAL]

--synchronous NORMAL measures what the daemon would gain by giving up durability at
power loss (docs/operating.md, "Power loss"): the store always runs FULL.

1. accept: 1-part messages issued as a stream, `-c` in flight at once like concurrent
   HTTP requests (each answered only after its commit), then the next one.
2. claim + record: claim batches of `--batch` parts and record each as submitted, as the
   dispatcher does, until the queue is empty.
3. receipts: one delivered receipt per part, `-c` in flight.
4. with --backlog N: N more messages stored in bulk, then the time of a claim of
   `--batch` parts while they wait (the claim index must keep this flat).
Prints messages/s, commits and writes per commit for each, and CPU µs per operation:
the writer thread's (inside its transactions) and the rest of the process's (mostly the
reactor thread: the Store calls, _fire, and this script's own loop).
"""

import argparse
import os
import sys
import tempfile
import time

from twisted.internet import defer, reactor

from gateway.store import NewMessage, PartOutcome, Store
from gateway.store import writer as writer_module

# CPU seconds spent by the writer thread inside _transact (thread_time), so that each
# phase can report writer µs/op and reactor-side (process minus writer) µs/op.
WRITER_CPU = [0.0]
_transact = writer_module.Writer._transact


def _timed_transact(self, batch):
    started = time.thread_time()
    try:
        return _transact(self, batch)
    finally:
        WRITER_CPU[0] += time.thread_time() - started


writer_module.Writer._transact = _timed_transact


def run_stream(make_call, total, concurrency):
    """Keep `concurrency` calls in flight until `total` have completed."""
    done = defer.Deferred()
    state = {"issued": 0, "finished": 0}

    def issue():
        index = state["issued"]
        state["issued"] += 1
        make_call(index).addCallbacks(finished, done.errback)

    def finished(_):
        state["finished"] += 1
        if state["issued"] < total:
            issue()
        elif state["finished"] == total and not done.called:
            done.callback(None)

    for _ in range(min(concurrency, total)):
        issue()
    return done


_MARK = {}


def mark():
    _MARK["cpu"] = time.process_time()
    _MARK["writer"] = WRITER_CPU[0]


def report(name, count, seconds, commits):
    writer = WRITER_CPU[0] - _MARK.get("writer", 0.0)
    other = time.process_time() - _MARK.get("cpu", 0.0) - writer
    print(f"{name:<16} {count:>8} in {seconds:6.2f} s = {count / seconds:>9,.0f}/s"
          f"   {commits:>6} commits, {count / max(commits, 1):7.1f} per commit;"
          f" CPU µs/op writer {writer / count * 1e6:5.1f}, rest {other / count * 1e6:5.1f}",
          flush=True)


@defer.inlineCallbacks
def bench(args):
    directory = tempfile.mkdtemp(prefix="payam-bench-")
    store = Store(os.path.join(directory, "bench.db"), reactor,
                  commit_interval=args.commit_interval)
    store.open()
    if args.synchronous != "FULL":
        # Before the first write, on the writer's connection (the thread waits idle).
        store._writer._conn.execute(f"PRAGMA synchronous={args.synchronous}")
    now = reactor.seconds()

    def new_message(index):
        return NewMessage(
            id=store.new_message_id(), agency="tax", sender="40401234",
            recipient=f"98912{index % 10_000_000:07d}", text="Your tax return was received.",
            priority=1 if index % 3 == 0 else 0, reference=None, validity_s=86400,
            receipt=True, data_coding=0, esm_class=0,
            parts=[b"Your tax return was received."], created_at=now)

    def accept(index):
        return store.accept([new_message(index)])

    commits = store.commits
    mark()
    started = time.perf_counter()
    yield run_stream(accept, args.n, args.concurrency)
    report("accept", args.n, time.perf_counter() - started, store.commits - commits)

    commits = store.commits
    mark()
    started = time.perf_counter()
    claimed = 0
    smsc_ids = []
    while True:
        parts = yield store.claim(args.batch, reactor.seconds())
        if not parts:
            break
        outcomes = []
        for part in parts:
            smsc_id = f"{len(smsc_ids) + 1:08X}"
            smsc_ids.append(smsc_id)
            outcomes.append(PartOutcome(part.message_id, part.seq, "submitted",
                                        operator="mci", smsc_id=smsc_id))
        yield store.record(outcomes)
        claimed += len(parts)
    report("claim+record", claimed, time.perf_counter() - started, store.commits - commits)

    commits = store.commits
    mark()
    started = time.perf_counter()
    # The SMSC answers submit_sm in hex and writes receipts in decimal: receipt_ids dec.
    yield run_stream(lambda i: store.apply_receipt("mci", str(int(smsc_ids[i], 16)),
                                                   "delivered", id_mode="dec"),
                     len(smsc_ids), args.concurrency)
    report("receipts", len(smsc_ids), time.perf_counter() - started,
           store.commits - commits)

    if args.backlog:
        commits = store.commits
        mark()
        started = time.perf_counter()
        for first in range(0, args.backlog, 5000):
            yield store.accept([new_message(i)
                                for i in range(first, min(first + 5000, args.backlog))])
        report("bulk accept", args.backlog, time.perf_counter() - started,
               store.commits - commits)
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            parts = yield store.claim(args.batch, reactor.seconds())
            timings.append(time.perf_counter() - started)
            assert len(parts) == args.batch
        timings.sort()
        print(f"claim of {args.batch} with {args.backlog:,} queued: median "
              f"{timings[10] * 1000:.1f} ms, worst {timings[-1] * 1000:.1f} ms", flush=True)
    yield store.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50000, help="messages")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500, help="parts per claim")
    parser.add_argument("--backlog", type=int, default=0,
                        help="queued messages to add before timing claims")
    parser.add_argument("--commit-interval", type=float, default=0.002)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args()
    print(f"store bench: {args.n} messages, {args.concurrency} in flight, "
          f"commit_interval {args.commit_interval * 1000:g} ms, "
          f"synchronous={args.synchronous}", flush=True)
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
