"""The store writer's steady mix, one transaction at a time, without the reactor.

Each round is one group commit as the daemon makes under bench/mt_throughput.py: `-k`
messages accepted, `-k` parts claimed, the previous round's claims recorded as
submitted, and the round before's receipts applied; then COMMIT (synchronous=FULL).
Prints the writer CPU (thread time) per message and per commit of each step, so that a
change to a trigger, an index or a statement can be measured on its own.

    .venv/bin/python bench/writer_mix.py [-k 42] [--rounds 400] [--pages]

--pages: no WAL checkpoint during the run; prints the pages each commit wrote, per
table or index (read back from the -wal file).
"""

import argparse
import collections
import os
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.model import CLAIM_ORDER, LANE_SHARES, PartOutcome  # noqa: E402
from gateway.receipt_ids import normal_id  # noqa: E402
from gateway.store import operations, receipts, schema  # noqa: E402
from gateway.store.audit_trail import AuditPurgeGate  # noqa: E402

OWNER = "bench:1:1"
TEXT = "Payam Gateway benchmark message"
DIGEST = b"D" * 16          # one text to every citizen, as in bench/mt_throughput.py


def accept_items(first, k, now):
    items = []
    for n in range(first, first + k):
        message_id = f"m{n:021d}"
        recipient = f"98912{n:07d}"
        items.append(([(message_id, "bench", "40409999", recipient, TEXT, 1, None, 86400, 1,
                        0, 0, 1, now)],
                      [(message_id, 1, 1, TEXT.encode(), now, "mci")],
                      [message_id], None, now, [(DIGEST, recipient, now, "bench")]))
    return items


def wal_pages(conn, path, last):
    """{b-tree name: pages written per commit} over the WAL's `last` commits."""
    names = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    data = Path(path + "-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    commits, frames, offset = [], [], 32
    while offset + 24 + page_size <= len(data):
        page, size_after = struct.unpack(">II", data[offset:offset + 8])
        frames.append(page)
        offset += 24 + page_size
        if size_after:
            commits.append(set(frames))
            frames = []
    counts = collections.Counter()
    for pages in commits[-last:]:
        counts.update(names.get(page, "?") for page in pages)
    return {name: n / len(commits[-last:]) for name, n in counts.most_common()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=42, help="messages per commit")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--pages", action="store_true")
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "writer_mix.db")
    schema.migrate(path, now=0.0)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if args.pages:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    AuditPurgeGate().install(conn)
    spent = collections.Counter()

    def timed(step, function, *arguments):
        started = time.thread_time()
        result = function(*arguments)
        spent[step] += time.thread_time() - started
        return result

    now, made, claimed, submitted, credit, learning = 1000.0, 0, [], [], {}, set()
    settled = set()
    for _ in range(args.rounds):
        now += 0.006
        items = accept_items(made, args.k, now)
        made += args.k
        timed("begin", conn.execute, "BEGIN IMMEDIATE")
        timed("accept", operations.insert_messages, conn, items)
        got = timed("claim", operations.claim, conn, args.k, now, "mci", CLAIM_ORDER,
                    OWNER, None, LANE_SHARES, credit)
        outcomes = [PartOutcome(part[0], part[1], "submitted", operator="mci",
                                smsc_id=f"{int(part[0][1:]):X}") for part in claimed]
        if outcomes:
            timed("record", operations.record, conn, outcomes, now, learning, OWNER)
        if submitted:
            applied = timed("receipts", receipts.apply_receipts, conn,
                            [("mci", normal_id(o.smsc_id), "delivered", None)
                             for o in submitted],
                            {"mci": "raw"}, {}, settled, now, (), learning, {})
            settled |= applied.settled          # as the Store's KnownBases keeps it
        timed("commit", conn.execute, "COMMIT")
        claimed, submitted = got, outcomes
    total = sum(spent.values())
    print(f"{args.k} messages a commit, {args.rounds} commits: writer CPU "
          f"{total * 1e6 / made:.1f} µs/msg, {total * 1e6 / args.rounds:.0f} µs/commit")
    for step, seconds in spent.items():
        print(f"  {step:9s} {seconds * 1e6 / made:6.1f} µs/msg "
              f"{seconds * 1e6 / args.rounds:7.0f} µs/commit")
    counts = dict(((status, n) for _agency, status, n in
                   conn.execute("SELECT agency, status, n FROM status_counts")))
    print(f"  status counts: {counts}")
    if args.pages:
        pages = wal_pages(conn, path, 100)
        print(f"pages written per commit (last 100): {sum(pages.values()):.1f}")
        for name, n in pages.items():
            print(f"  {n:6.2f} {name}")


if __name__ == "__main__":
    main()
