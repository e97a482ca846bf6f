"""How long GET /v1/citizen/messages' store query takes over a big messages table.

Builds a throwaway store (the real migrations) with N messages (default 200,000) to
2,000 citizens, one of whom got 1 in 40 (5,000; second argument: 1 in N), and times a first page and a deep page of 100
for that citizen and for a typical one (~100 messages).  Run once: it is not a test.

    .venv/bin/python bench/citizen_messages.py [N [1-in-N to one citizen]]
"""

import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from gateway.store import citizen_messages, schema


def build(path, total, every=40):
    schema.migrate(str(path), now=0.0)
    conn = sqlite3.connect(path)
    heavy = "989120000000"
    rng = random.Random(7)
    rows = []
    for n in range(total):
        recipient = heavy if n % every == 0 else f"98912{rng.randrange(1, 2000):07d}"
        rows.append((f"m{n:08d}", rng.choice(("tax", "post", "judiciary")), "40401234",
                     recipient, "salam", 0, 86400, 1, 0, 0, 1, "delivered",
                     1_700_000_000.0 + n * 0.5))
    conn.executemany(
        "INSERT INTO messages (id, agency, sender, recipient, text, priority, validity_s,"
        " receipt, data_coding, esm_class, parts, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.execute("ANALYZE")
    return conn, heavy


def timed(conn, recipient, before, rounds=50):
    started = time.perf_counter()
    for _ in range(rounds):
        page = citizen_messages.list_for(conn, recipient, before, 100, ("@4040",))
    return (time.perf_counter() - started) / rounds * 1000, page


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    every = int(sys.argv[2]) if len(sys.argv) > 2 else 40    # 1 in `every` to the heavy one
    with tempfile.TemporaryDirectory() as directory:
        conn, heavy = build(Path(directory) / "bench.db", total, every)
        plan = conn.execute("EXPLAIN QUERY PLAN " + citizen_messages._SELECT
                            + " AND (m.created_at, m.id) < (?, ?)"
                            " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
                            (heavy, "[]", 2e9, "z", 100)).fetchall()
        print("plan:", " | ".join(row[-1] for row in plan))
        for who, recipient in ((f"heavy ({total // every:,} messages)", heavy),
                               ("typical (~100)", "989120000007")):
            ms, page = timed(conn, recipient, None)
            deep = None
            for _ in range(20):                      # 20 pages down, where there are
                if len(page) < 100:
                    break
                deep = (page[-1].created_at, page[-1].id)
                _, page = timed(conn, recipient, deep, rounds=1)
            deep_ms, _ = timed(conn, recipient, deep)
            print(f"{who}: first page {ms:.2f} ms, deep page {deep_ms:.2f} ms")


if __name__ == "__main__":
    main()
