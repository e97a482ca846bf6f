"""The reactor thread's CPU per POST /v1/messages, without sockets or the writer thread.

Each request's bytes go straight into an HTTPChannel over an in-memory transport; the
path is the daemon's (HTTP parsing, authentication, validation, sender check, limits,
fingerprint, encoding, message ids, Store.accept's rows and checks, the 202's JSON and
head), except that the store's write is answered at once instead of on the writer
thread (its CPU is bench/store.py's). Single-threaded, so the figure is steady even on
a loaded machine: the best of --rounds rounds of -n requests, in thread CPU µs.

    .venv/bin/python bench/accept_path.py [-n 20000] [--rounds 5] [--persian] [--sendsms] [--split]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from urllib.parse import urlencode

if "--split" in sys.argv:     # before prometheus_client is imported, as the supervisor does
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="accept-path-")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

from twisted.internet import defer  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from gateway.config.schema import Agency  # noqa: E402
from gateway.http.api import AgencyAPI  # noqa: E402
from gateway.http.server import HTTPFactory  # noqa: E402
from gateway.outbound.accept import Outbound  # noqa: E402
from gateway.policy.auth import KeyRing, hash_key  # noqa: E402
from gateway.policy.limits import AgencyLimits  # noqa: E402
from gateway.store import remote_writer  # noqa: E402
from gateway.store.store import REMOTE_ACCEPTS, Store  # noqa: E402
from gateway.text.fingerprint import TextFingerprint  # noqa: E402
from threaded_clock import ThreadedClock  # noqa: E402

KEY = "bench-key-" + "0" * 22


class InstantStore(Store):
    """The real Store's accept (rows, checks, ids), its write answered at once."""

    def __init__(self, clock):      # no file, no writer thread
        self._reactor = clock
        import random
        self._random = random.Random(os.urandom(16))

    def _write(self, operation, item=None):
        return defer.succeed(item[2] if item is not None else None)

    def parts_used(self, agency_id, since):
        return defer.succeed(0)


class SplitStore(InstantStore):
    """The worker's Store: every grouped accept goes to the RemoteWriter."""

    _writer = object()            # open
    _write = Store._write


class Outbox:
    """The link's FrameOutbox: what the worker wrote, for the dispatcher to read."""

    def __init__(self):
        self.sent = []
        self.kept = 0

    def send(self, data):
        self.sent.append(data)


def split_writer(clock):
    writer = remote_writer.RemoteWriter(
        "unused", clock, {operation: name for name, operation in REMOTE_ACCEPTS.items()})
    link = remote_writer._Link()
    link.factory = writer._factory
    link.transport = StringTransport()
    link.connected = 1
    link.outbox = Outbox()
    writer._connected(link)
    return writer, link


def dispatcher_answers(sent):
    """The dispatcher's side (not counted): the worker's frames read, each accept
    answered ok with its ids, all in one frame."""
    data = b"".join(sent)
    del sent[:]
    answers = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        _, _, accepts = remote_writer.loads(data[offset + 4:offset + 4 + length])
        answers.extend((seq, *remote_writer.encode_result(True, item[2]))
                       for seq, _name, item in accepts)
        offset += 4 + length
    return remote_writer.prefixed(remote_writer.dumps((None, remote_writer.ANSWERS,
                                                       answers)))


class Audit:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def request(text, n, sendsms=False):
    if sendsms:
        target = "/cgi-bin/sendsms?" + urlencode({
            "username": "bench", "password": KEY, "from": "40409999",
            "to": f"0912{n:07d}", "text": text})
        return f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    body = json.dumps({"from": "40409999", "text": text, "to": [f"0912{n:07d}"]},
                      ensure_ascii=False).encode()
    return (b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def bench_text(args):
    return ("پیام آزمایشی سامانه پیام دولت" if args.persian
            else "Payam Gateway benchmark message")


def endpoint(args):
    return "GET /cgi-bin/sendsms" if args.sendsms else "POST /v1/messages"


def http_front(store, clock, store_counts=False):
    """The agency API's HTTPFactory over `store`, one agency; `store_counts`: the daily
    quota counted in the store, as an HTTP worker counts it."""
    agencies = [Agency(id="bench", name="bench", keys=(hash_key(KEY),),
                       numbers=("40409999",), masks=(), ussd_code=None, rate_per_s=1e12,
                       daily_parts=10**15, reply_webhook=None)]
    keyring = KeyRing(agencies)
    limits = AgencyLimits(agencies, store, clock)
    if store_counts:
        limits.store_counts = True
        limits.update(agencies)
    outbound = Outbound(store, limits, Audit(), clock=clock,
                        agencies=lambda: keyring.agencies, on_accepted=lambda routes: None,
                        route_of=lambda msisdn: "mci",
                        fingerprint=TextFingerprint(b"k" * 32))
    api = AgencyAPI(outbound, store, keyring, Audit(), clock=clock, health=dict)
    return HTTPFactory(api.router, clock=clock)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--persian", action="store_true")
    parser.add_argument("--sendsms", action="store_true",
                        help="Kannel's GET /cgi-bin/sendsms instead of POST /v1/messages")
    parser.add_argument("--split", action="store_true",
                        help="the HTTP worker's path: multiprocess metrics, RemoteWriter")
    parser.add_argument("--turn", type=int, default=20,
                        help="with --split: requests (connections) per reactor turn")
    args = parser.parse_args()
    if args.split:
        return split(args)
    text = bench_text(args)
    clock = ThreadedClock()
    channel = http_front(InstantStore(clock), clock).buildProtocol(("127.0.0.1", 1))
    transport = StringTransport(peerAddress=None)
    channel.makeConnection(transport)
    payloads = [request(text, n, args.sendsms) for n in range(args.n)]
    channel.dataReceived(payloads[0])
    first = transport.value()
    if not first.startswith(b"HTTP/1.1 202"):
        raise SystemExit("not accepted: " + first.decode("utf-8", "replace")[:300])
    figures = []
    for _ in range(args.rounds):
        transport.clear()
        started = time.thread_time()
        for payload in payloads:
            channel.dataReceived(payload)
        figures.append((time.thread_time() - started) * 1e6 / args.n)
        if transport.value().count(b"HTTP/1.1 202") != args.n:
            raise SystemExit("some requests were not accepted")
    print(f"{endpoint(args)} in process ({'UCS2' if args.persian else 'GSM'}, "
          f"{args.n} requests x {args.rounds} rounds): reactor-thread CPU "
          f"{min(figures):.1f} µs/request best, rounds "
          + ", ".join(f"{f:.1f}" for f in figures))


def split(args):
    text = bench_text(args)
    clock = ThreadedClock()
    store = SplitStore(clock)
    writer, link = split_writer(clock)
    store.hand_accepts_to(writer)
    factory = http_front(store, clock, store_counts=True)
    channels = []
    for n in range(args.turn):
        channel = factory.buildProtocol(("127.0.0.1", n))
        transport = StringTransport(peerAddress=None)
        channel.makeConnection(transport)
        channels.append((channel, transport))
    payloads = [request(text, n, args.sendsms) for n in range(args.n)]
    turns = [payloads[i:i + args.turn] for i in range(0, args.n, args.turn)]

    def turn(requests):
        """One reactor turn of requests, then (a turn later) the dispatcher's answers:
        the worker's CPU in both."""
        started = time.thread_time()
        for (channel, _), payload in zip(channels, requests):
            channel.dataReceived(payload)
        clock.advance(0)                          # the turn's end: the frame written
        spent = time.thread_time() - started
        answers = dispatcher_answers(link.outbox.sent)
        started = time.thread_time()
        link.dataReceived(answers)
        return spent + time.thread_time() - started

    turn(turns[0])
    first = channels[0][1].value()
    if not first.startswith(b"HTTP/1.1 202"):
        raise SystemExit("not accepted: " + first.decode("utf-8", "replace")[:300])
    figures = []
    for _ in range(args.rounds):
        for _, transport in channels:
            transport.clear()
        spent = sum(turn(requests) for requests in turns)
        figures.append(spent * 1e6 / args.n)
        if sum(t.value().count(b"HTTP/1.1 202") for _, t in channels) != args.n:
            raise SystemExit("some requests were not accepted")
    print(f"{endpoint(args)} in process, the HTTP worker's path ({'UCS2' if args.persian else 'GSM'}, "
          f"{args.n} requests x {args.rounds} rounds, {args.turn} a turn): worker CPU "
          f"{min(figures):.1f} µs/request best, rounds "
          + ", ".join(f"{f:.1f}" for f in figures))


if __name__ == "__main__":
    main()
