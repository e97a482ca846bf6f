"""The agency API against the hostile HTTP client (tests/hostile_http.py): real
HTTPFactory, AgencyAPI and SQLite store over loopback sockets.

The client runs in a thread (threads.deferToThread); the reactor serves. Time-based
limits that matter to an assertion run on Clocks the test advances, so nothing here
depends on the machine's speed, only the trial timeout on it finishing.
"""

import collections
import json
import sqlite3

from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.outbound.accept import Outbound
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.auth_throttle import FailedAuthThrottle
from gateway.policy.limits import AgencyLimits

import hostile_http as hostile
from conftest import wait_until
from store_fixtures import open_store
from test_api import AGENCIES

KEY = "tax-key"


class HostileClientTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-hostile-")
        self.limits_clock = Clock()
        self.limits_clock.advance(reactor.seconds())
        self.throttle_clock = Clock()
        self.throttle = FailedAuthThrottle(self.throttle_clock, failures=10, window_s=60,
                                           block_s=60)
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        outbound = Outbound(self.store, AgencyLimits(AGENCIES, self.store, self.limits_clock),
                            audit, clock=reactor, agencies=lambda: keyring.agencies)
        self.api = AgencyAPI(outbound, self.store, keyring, audit, clock=reactor,
                             auth_throttle=self.throttle)
        self.channels = []

    def serve(self, **options):
        factory = HTTPFactory(self.api.router, clock=reactor, **options)
        build = factory.buildProtocol

        def keep(addr):
            channel = build(addr)
            self.channels.append(channel)
            return channel

        factory.buildProtocol = keep
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.stop)
        self.addCleanup(port.stopListening)
        self.factory = factory
        return port.getHost().port

    def rows(self, sql):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()

    def count(self, table):
        return self.rows(f"SELECT COUNT(*) FROM {table}")[0][0]

    # -- item 10: pipelining, half-close, split heads, Host, duplicate keys --------

    @defer.inlineCallbacks
    def test_pipelined_posts_are_all_answered_in_order(self):
        port = self.serve(max_head_bytes=1024)
        count = 400
        requests = [hostile.message(KEY, text=f"n{i}") for i in range(count)]
        responses, _ = yield threads.deferToThread(hostile.pipeline, port, requests)
        self.assertEqual(collections.Counter(responses.statuses), {202: count})
        ids = [json.loads(body)["messages"][0]["id"] for _, _, body in responses.items]
        stored = dict(self.rows("SELECT id, text FROM messages"))
        self.assertEqual([stored[i] for i in ids], [f"n{i}" for i in range(count)])

    @defer.inlineCallbacks
    def test_reads_that_end_inside_a_head_after_many_requests_are_no_431(self):
        # Each read holds ten requests (> 2 x the head limit), then part of a head: that
        # read's bytes were charged to the unfinished head.
        port = self.serve(max_head_bytes=512)
        requests = [hostile.message(KEY, text=f"n{i}") for i in range(40)]
        starts = [sum(map(len, requests[:i])) for i in range(len(requests))]
        data = b"".join(requests) + hostile.request("GET", "/healthz",
                                                    headers=[("Connection", "close")])
        cuts = [starts[i] + 30 for i in (10, 20, 30)]
        responses, closed = yield threads.deferToThread(hostile.trickle, port, data, cuts,
                                                        0.05)
        self.assertEqual(responses.statuses, [202] * 40 + [200])
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_a_client_that_half_closes_after_its_request_gets_the_answer(self):
        port = self.serve()
        responses, closed = yield threads.deferToThread(
            hostile.half_close, port,
            hostile.message(KEY, text="one") + hostile.message(KEY, text="two"))
        self.assertEqual(responses.statuses, [202, 202])
        self.assertEqual(responses.items[-1][1]["connection"], "close")
        self.assertTrue(closed)
        self.assertEqual(self.count("messages"), 2)

    @defer.inlineCallbacks
    def test_heads_trickled_in_pieces_are_answered(self):
        port = self.serve()
        data = hostile.message(KEY) + hostile.request("GET", "/healthz",
                                                      headers=[("Connection", "close")])
        head_end = data.index(b"\r\n\r\n")
        for cuts in ([1], [5, 17], [head_end - 1, head_end + 1, head_end + 3],
                     list(range(20, head_end, 25))):
            responses, closed = yield threads.deferToThread(hostile.trickle, port, data, cuts)
            self.assertEqual(responses.statuses, [202, 200], cuts)
            self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_http_11_without_host_is_400_and_nothing_is_stored(self):
        port = self.serve()
        data = hostile.post_json("/v1/messages", {"from": "40401234", "to": "09121234567",
                                                  "text": "x"}, KEY, host=None)
        responses, closed = yield threads.deferToThread(hostile.exchange, port, data)
        self.assertEqual((responses.statuses, responses.codes()), ([400], ["invalid_request"]))
        self.assertTrue(closed)
        self.assertEqual(self.count("messages"), 0)

    @defer.inlineCallbacks
    def test_a_json_object_with_a_duplicate_key_is_400(self):
        port = self.serve()
        for name in ("to", "from", "text"):
            body = hostile.duplicate_key_body(name, *(("40401234", "40400135")
                                                      if name == "from" else ("a", "b")))
            data = hostile.post_json("/v1/messages", body, KEY)
            responses, _ = yield threads.deferToThread(hostile.exchange, port, data, 1)
            self.assertEqual(responses.codes(), ["invalid_request"], name)
            self.assertIn(f"'{name}'", json.loads(responses.items[0][2])["error"]["message"])
        self.assertEqual(self.count("messages"), 0)

    # -- item 11: strings that are not Unicode -------------------------------------

    @defer.inlineCallbacks
    def test_a_lone_surrogate_anywhere_in_the_body_is_400_never_a_5xx(self):
        port = self.serve()
        fields = ("idempotency_key", "reference", "from", "text", "to")
        for field in fields:
            data = hostile.post_json("/v1/messages", hostile.surrogate_body(field), KEY)
            responses, _ = yield threads.deferToThread(hostile.exchange, port, data, 1)
            self.assertEqual((responses.statuses, responses.codes()),
                             ([400], ["invalid_request"]), field)
        key_body = b'{"from": "40401234", "to": "09121234567", "text": "x", "\\udfff": 1}'
        responses, _ = yield threads.deferToThread(
            hostile.exchange, port, hostile.post_json("/v1/messages", key_body, KEY), 1)
        self.assertEqual(responses.codes(), ["invalid_request"])
        self.assertEqual(self.count("messages"), 0)

    # -- item 8: connection cap, failed-authentication throttle ------------------

    @defer.inlineCallbacks
    def test_connections_beyond_the_cap_are_answered_503_overloaded(self):
        port = self.serve(max_connections=4, max_refusing=10)
        results = yield threads.deferToThread(
            hostile.many_connections, port, 10, hostile.request("GET", "/healthz"))
        statuses = [r.statuses for r in results]
        self.assertEqual(statuses, [[200]] * 4 + [[503]] * 6)
        self.assertEqual({tuple(r.codes()) for r in results[4:]}, {("overloaded",)})
        self.assertEqual({r.items[0][1]["retry-after"] for r in results[4:]}, {"1"})

    @defer.inlineCallbacks
    def test_a_bad_key_flood_is_answered_429_after_ten_failures(self):
        port = self.serve()
        flood, after = yield threads.deferToThread(hostile.bad_key_flood, port, 300, KEY)
        self.assertEqual(flood.statuses, [401] * 10 + [429] * 290)
        self.assertEqual(set(flood.codes()[10:]), {"rate_limited"})
        self.assertEqual({headers["retry-after"] for _, headers, _ in flood.items[10:]},
                         {"60"})
        self.assertEqual(after, 429)           # the address is blocked, keys unchecked
        # A request that presents no key guesses nothing: told 401, even while blocked.
        keyless, _ = yield threads.deferToThread(
            hostile.exchange, port, hostile.message(None), 1)
        self.assertEqual(keyless.statuses, [401])
        self.throttle_clock.advance(61)
        responses, _ = yield threads.deferToThread(
            hostile.exchange, port, hostile.message(KEY), 1)
        self.assertEqual(responses.statuses, [202])
        blocked = [json.loads(d) for e, d in self.rows("SELECT event, detail FROM audit")
                   if e == "auth_blocked"]
        self.assertEqual(blocked, [{"peer": "127.0.0.1", "failures": 10, "seconds": 60}])

    @defer.inlineCallbacks
    def test_requests_without_a_key_are_401_and_never_block_the_address(self):
        port = self.serve()
        keyless = [hostile.message(None) for _ in range(30)]
        responses, _ = yield threads.deferToThread(hostile.pipeline, port, keyless, 10.0)
        self.assertEqual(responses.statuses, [401] * 30)
        answer, _ = yield threads.deferToThread(
            hostile.exchange, port, hostile.message(KEY), 1)
        self.assertEqual(answer.statuses, [202])

    # -- item 7: back-pressure ----------------------------------------------------

    @defer.inlineCallbacks
    def test_a_pipeliner_that_never_reads_is_held_back_then_dropped(self):
        port = self.serve(send_timeout=0.5)
        buffered = []

        def sample():
            for channel in self.channels:
                transport = channel.transport
                if transport is not None and transport.connected:
                    buffered.append(len(transport.dataBuffer) - transport.offset
                                    + transport._tempDataLen)

        from twisted.internet.task import LoopingCall
        sampler = LoopingCall(sample)
        sampler.start(0.01)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        taken, cut_off = yield threads.deferToThread(
            hostile.pipeline_without_reading, port, hostile.request("GET", "/healthz"),
            seconds=3.0, burst=4096, pace=0.005)
        yield wait_until(reactor, lambda: self.factory.open_connections == 0)
        sampler.stop()
        self.assertTrue(cut_off)
        # Answers waiting in our memory stay under one transport buffer plus the answers
        # to one parse slice; without back-pressure they grew without end.
        self.assertLess(max(buffered), 256 * 1024)
        self.assertGreater(taken, 0)

    @defer.inlineCallbacks
    def test_a_pipeliner_of_a_large_public_answer_is_held_to_one_buffer(self):
        """Audit 7: GET /v1/openapi.json needs no key and answers 23.5 KB for 43 bytes;
        answers went on being written after the transport was full, and requests
        dispatched to the end of a 4 KiB slice (600 such peers took the demo from 49 to
        396 MB)."""
        port = self.serve(send_timeout=1.0, max_pipelined=64)
        buffered, queued = [0], [0]

        def measured(channel):
            # After every write: what the transport holds, and what waits in the queue.
            transport = channel.transport
            write = transport.write

            def write_and_measure(data):
                write(data)
                buffered.append(len(transport.dataBuffer) - transport.offset
                                + transport._tempDataLen)
                queued.append(len(channel._queue))

            transport.write = write_and_measure

        build = self.factory.buildProtocol

        def build_measured(addr):
            channel = build(addr)
            connected = channel.makeConnection
            channel.makeConnection = lambda t: (connected(t), measured(channel))
            return channel

        self.factory.buildProtocol = build_measured
        taken, cut_off = yield threads.deferToThread(
            hostile.pipeline_without_reading, port, hostile.request("GET", "/v1/openapi.json"),
            seconds=3.0, burst=65536)
        yield wait_until(reactor, lambda: self.factory.open_connections == 0)
        self.assertTrue(cut_off)
        self.assertGreater(len(buffered), 1)
        self.assertLess(max(buffered), 256 * 1024)
        self.assertLessEqual(max(queued), 64)
