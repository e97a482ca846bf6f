"""The 4040 check's cost: how long one check takes with a full table of fingerprints.

Opens a real store in a temporary directory, fills sent_fingerprints with `--texts`
texts each sent to `--recipients` citizens (broadcast-like: the "sent to someone else"
lookup then meets many rows of one text), and times the desk's whole check (candidates,
fingerprints, the lookup, the choice of answer; the answer's SMS stubbed) for citizens
who were sent the text, who were not, and for invented texts. Not a test: figures only.

    .venv/bin/python bench/authenticity_check.py [--texts 1000] [--recipients 300]
"""

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from threaded_clock import ThreadedClock  # noqa: E402
from gateway.authenticity.desk import AuthenticityDesk  # noqa: E402
from gateway.inbound.record import MobileOriginated  # noqa: E402
from gateway.store import Store  # noqa: E402
from gateway.text.fingerprint import TextFingerprint  # noqa: E402

TEMPLATE = ("شهروند گرامی، اظهارنامه\u200cی مالیاتی شماره {n} شما تا پایان آبان ثبت نشده است؛"
            " لطفاً پیش از سررسید اقدام فرمایید.")


class StubOutbound:
    def send_platform(self, kind, recipient, text):
        return defer.succeed(None)


def fill(path, fingerprint, texts, recipients, now):
    db = sqlite3.connect(path)
    with db:
        for n in range(texts):
            digest = fingerprint.of(TEMPLATE.format(n=n))
            db.executemany("INSERT INTO sent_fingerprints VALUES (?, ?, ?, 'tax')",
                           ((digest, f"98912{n % 97:02d}{r:05d}", now - r) for r in
                            range(recipients)))
    db.close()


def timed(desk, checks):
    times = []
    for mo in checks:
        started = time.perf_counter()
        desk.handle(mo)                  # SQLite reads answer at once
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=300)
    parser.add_argument("--checks", type=int, default=2000)
    args = parser.parse_args()
    clock = ThreadedClock()
    clock.advance(time.time() - clock.seconds())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "gateway.db")
        store = Store(path, clock)
        store.open()
        fingerprint = TextFingerprint(store.fingerprint_key())
        fill(path, fingerprint, args.texts, args.recipients, clock.seconds())
        rows = args.texts * args.recipients
        desk = AuthenticityDesk(store, StubOutbound(), fingerprint, clock,
                                checks_per_hour=10 ** 9)
        mine, others, invented = [], [], []
        for i in range(args.checks):
            n = i % args.texts
            r = i % args.recipients
            text = TEMPLATE.format(n=n)
            mine.append(MobileOriginated("mci", None, f"98912{n % 97:02d}{r:05d}", "4040",
                                         "Fwd: " + text, 0))
            others.append(MobileOriginated("mci", None, "989350000000", "4040", text, 0))
            invented.append(MobileOriginated("mci", None, f"98912{n % 97:02d}{r:05d}",
                                             "4040", text + " جعلی", 0))
        print(f"fingerprints in the table: {rows:,}  "
              f"(file {os.path.getsize(path) / 1e6:.0f} MB with the WAL checkpointed later)")
        for name, checks in (("sent to this citizen", mine), ("sent to someone else", others),
                             ("invented", invented)):
            p50, p99 = timed(desk, checks)
            print(f"check, {name:21s}: p50 {p50:7.0f} µs   p99 {p99:7.0f} µs")
        clock.wait(store.close())


if __name__ == "__main__":
    main()
