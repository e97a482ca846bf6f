"""Reactor-thread CPU of the HTTP front: bytes of a POST /v1/messages in → 202 written.

    .venv/bin/python bench/http_front.py [-n 20000] [--batch 50] [--profile]

No sockets, no SQLite: one HTTPChannel on a StringTransport, the real router, API and
policy, and a store stand-in whose accept() Deferreds fire in batches of `--batch` (as a
group commit does). Message ids come from the real Store.new_message_id. Prints µs per
request; --profile prints a cProfile of the run instead.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

from twisted.internet import defer  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from gateway.config.schema import Agency  # noqa: E402
from gateway.http.api import AgencyAPI  # noqa: E402
from gateway.http.server import HTTPFactory  # noqa: E402
from gateway.outbound.accept import Outbound  # noqa: E402
from gateway.policy.audit import AuditLog  # noqa: E402
from gateway.policy.auth import KeyRing, hash_key  # noqa: E402
from gateway.policy.limits import AgencyLimits  # noqa: E402
from gateway.store.store import Store  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_api import KEY, request_bytes  # noqa: E402


class FakeStore:
    def __init__(self, clock):
        self._ids = Store(":memory:", clock)
        self.pending = []

    def new_message_id(self):
        return self._ids.new_message_id()

    def accept(self, messages, idempotency=None):
        d = defer.Deferred()
        self.pending.append((d, [m.id for m in messages]))
        return d

    def commit(self):
        pending, self.pending = self.pending, []
        for d, ids in pending:
            d.callback(ids)

    def parts_used(self, agency, since):
        return defer.succeed(0)

    def idempotent_response(self, agency, key, now):
        return defer.succeed(None)


def build():
    clock = Clock()
    clock.advance(1_800_000_000)
    store = FakeStore(clock)
    agencies = [Agency(id="tax", name="tax", keys=(hash_key(KEY),), numbers=("40401234",),
                       masks=(), ussd_code=None, rate_per_s=1e9, daily_parts=10**12,
                       reply_webhook=None)]
    keyring, audit = KeyRing(agencies), AuditLog(store, clock)
    outbound = Outbound(store, AgencyLimits(agencies, store, clock), audit, clock=clock,
                        agencies=lambda: keyring.agencies, on_accepted=lambda routes: None,
                        route_of=lambda msisdn: "mci")
    api = AgencyAPI(outbound, store, keyring, audit, clock=clock)
    factory = HTTPFactory(api.router, clock=clock)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    channel = factory.buildProtocol(None)
    channel.makeConnection(transport)
    return store, channel, transport


def run(n, batch, store, channel, transport):
    payload = request_bytes(1)
    for i in range(n):
        channel.dataReceived(payload)
        if (i + 1) % batch == 0:
            store.commit()
            transport.clear()
    store.commit()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    store, channel, transport = build()
    # Sanity: one request answered 202.
    channel.dataReceived(request_bytes(1))
    store.commit()
    assert transport.value().startswith(b"HTTP/1.1 202"), transport.value()[:200]
    transport.clear()
    run(1000, args.batch, store, channel, transport)        # warm up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.n, args.batch, store, channel, transport)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(45)
        return
    best = None
    for _ in range(5):
        started = time.process_time()
        run(args.n, args.batch, store, channel, transport)
        spent = (time.process_time() - started) / args.n * 1e6
        best = spent if best is None else min(best, spent)
    print(f"{best:.1f} µs per POST /v1/messages (best of 5 x {args.n}, "
          f"commits of {args.batch})")


if __name__ == "__main__":
    main()
