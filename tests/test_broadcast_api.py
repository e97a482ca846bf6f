"""POST /v1/broadcasts, GET and DELETE /v1/broadcasts/{id} over real loopback HTTP,
against the real SQLite store: streamed bodies past the buffered cap, numbers
normalised, invalid ones reported, repeats once, quota for the whole broadcast, owner
only.  The feeder runs on its own Clock, advanced by the test."""

import http.client
import json
import sqlite3
from urllib.parse import urlencode

from store_fixtures import open_store
from test_api import AGENCIES, PERSIAN_2_PARTS
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.outbound.accept import Outbound
from gateway.outbound.broadcast import Broadcasts
from gateway.outbound.feeder import BroadcastFeeder
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits


def post(port, path, body, key, content_type):
    """(status, document) of one POST whose body is sent in 64 KiB pieces."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {key}")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for start in range(0, len(body), 65536):
            try:
                conn.send(body[start:start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break                    # refused before the whole body went
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def call(port, method, path, key):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def numbers(count, start=0):
    return [f"0912{n:07d}" for n in range(start, start + count)]


class BroadcastAPITests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-bcast-")
        self.limits_clock = Clock()
        self.limits_clock.advance(reactor.seconds())
        self.limits = AgencyLimits(AGENCIES, self.store, self.limits_clock)
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        outbound = Outbound(self.store, self.limits, audit, clock=reactor,
                            agencies=lambda: keyring.agencies)
        self.feeder_clock = Clock()
        self.feeder_clock.advance(reactor.seconds())
        self.woken = []
        self.feeder = BroadcastFeeder(self.store, clock=self.feeder_clock,
                                      rate_of=lambda agency: 1000,
                                      on_fed=self.woken.append)
        self.broadcasts = Broadcasts(self.store, self.limits, outbound, clock=reactor,
                                     route_of=lambda msisdn: "mci", feeder=self.feeder,
                                     max_recipients=100_000, batch=2000)
        api = AgencyAPI(outbound, self.store, keyring, audit, clock=reactor,
                        broadcasts=self.broadcasts)
        self.factory = HTTPFactory(api.router, clock=reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    def send(self, body, content_type="application/x-ndjson", key="tax-key", **query):
        path = "/v1/broadcasts" + ("?" + urlencode(query) if query else "")
        if not isinstance(body, bytes):
            body = json.dumps(body, ensure_ascii=False).encode()
        return threads.deferToThread(post, self.port, path, body, key, content_type)

    def call(self, method, path, key="tax-key"):
        return threads.deferToThread(call, self.port, method, path, key)

    def rows(self, sql, *args):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql, args).fetchall()

    @defer.inlineCallbacks
    def test_an_ndjson_body_far_past_the_buffered_cap_is_stored_before_the_202(self):
        entries = numbers(40_000)
        entries[10:10] = ["09121", "not a number"]            # reported, by line
        entries += numbers(500)                               # repeats: sent once
        body = "".join(json.dumps(e) + "\n" for e in entries).encode()
        assert len(body) > 2 * 256 * 1024
        status, document = yield self.send(body, **{"from": "40401234",
                                                    "text": PERSIAN_2_PARTS})
        self.assertEqual(status, 202)
        self.assertEqual((document["recipients"], document["duplicates"], document["parts"],
                          document["invalid_count"]), (40_000, 500, 2, 2))
        self.assertEqual(document["invalid"], [
            {"entry": "line 11", "reason": "wrong length"},
            {"entry": "line 12",
             "reason": "may contain only digits, after an optional leading +"}])
        # Durable at the answer: every recipient once, the text and its parts once.
        self.assertEqual(self.rows("SELECT count(*), min(number) FROM broadcast_recipients"
                                   " WHERE broadcast_id = ?", document["id"]),
                         [(40_000, 989120000000)])
        self.assertEqual(self.rows("SELECT count(*) FROM broadcast_parts"), [(2,)])
        self.assertEqual(self.rows("SELECT state, recipients, text FROM broadcasts"),
                         [("open", 40_000, PERSIAN_2_PARTS)])
        self.assertEqual(self.limits.used_today("tax"), 80_000)
        self.assertEqual(list(self.feeder.active), [document["id"]])

    @defer.inlineCallbacks
    def test_invalid_entries_are_named_up_to_the_first_hundred_and_all_counted(self):
        entries = []
        for at, number in enumerate(numbers(150)):  # lines 1, 3, ...: valid; 2, 4, ...: not
            entries += [number, f"0912{at}"]
        body = "".join(json.dumps(e) + "\n" for e in entries).encode()
        status, document = yield self.send(body, **{"from": "40401234", "text": "hi"})
        self.assertEqual(status, 202)
        self.assertEqual((document["recipients"], document["invalid_count"]), (150, 150))
        self.assertEqual(len(document["invalid"]), 100)
        self.assertEqual([e["entry"] for e in document["invalid"]],
                         [f"line {2 + 2 * at}" for at in range(100)])

    @defer.inlineCallbacks
    def test_csv_with_a_header_and_json_with_its_fields_after_the_numbers(self):
        csv = ("msisdn,name\n" + "\n".join(f"{n},x" for n in numbers(5)) + "\n").encode()
        status, document = yield self.send(csv, "text/csv", **{"from": "MALIAT",
                                                              "text": "Hello"})
        self.assertEqual((status, document["recipients"], document["parts"]), (202, 5, 1))
        status, document = yield self.send(
            b'{"to": ["+989121234567", "\xdb\xb0\xdb\xb9\xdb\xb1\xdb\xb2\xdb\xb1\xdb\xb2'
            b'\xdb\xb3\xdb\xb4\xdb\xb5\xdb\xb6\xdb\xb8"], "priority": "high",'
            b' "text": "Hi", "from": "40401234"}', "application/json")
        self.assertEqual((status, document["recipients"]), (202, 2))
        self.assertEqual(self.rows("SELECT number FROM broadcast_recipients"
                                   " WHERE broadcast_id = ? ORDER BY number",
                                   document["id"]),
                         [(989121234567,), (989121234568,)])
        self.assertEqual(self.rows("SELECT priority FROM broadcasts WHERE id = ?",
                                   document["id"]), [(1,)])

    @defer.inlineCallbacks
    def test_a_broadcast_over_the_quota_is_refused_whole_and_nothing_stays(self):
        status, document = yield self.send(
            {"from": "40408888", "text": PERSIAN_2_PARTS, "to": numbers(2)},
            "application/json", key="small-key")           # 4 parts, 3 a day
        self.assertEqual((status, document["error"]["code"]), (429, "quota_exceeded"))
        yield threads.deferToThread(lambda: None)
        self.assertEqual(self.rows("SELECT count(*) FROM broadcasts"), [(0,)])
        for _ in range(100):
            if self.rows("SELECT count(*) FROM broadcast_recipients") == [(0,)]:
                break
            yield threads.deferToThread(lambda: None)
        self.assertEqual(self.rows("SELECT count(*) FROM broadcast_recipients"), [(0,)])
        self.assertEqual(self.limits.used_today("small"), 0)

    @defer.inlineCallbacks
    def test_refusals_before_the_body_and_over_the_recipient_cap(self):
        status, document = yield self.send(b'"09121234567"\n', **{"from": "ADLIRAN",
                                                                  "text": "x"})
        self.assertEqual((status, document["error"]["code"]), (403, "sender_not_allowed"))
        status, document = yield self.send(b"0912", "text/plain")
        self.assertEqual((status, document["error"]["code"]), (415, "unsupported_media_type"))
        status, document = yield self.send(b'"0912"\n', **{"text": "x"})
        self.assertEqual((status, document["error"]["code"]), (400, "invalid_request"))
        body = "".join(json.dumps(n) + "\n" for n in numbers(100_001)).encode()
        status, document = yield self.send(body, **{"from": "40401234", "text": "x"})
        self.assertEqual((status, document["error"]["code"]), (413, "payload_too_large"))

    @defer.inlineCallbacks
    def test_a_body_of_invalid_entries_is_cut_off_at_twice_the_recipient_cap(self):
        # Invalid entries cost no memory (the report keeps 100), but without a cap on
        # entries a peer could stream them for ever.
        body = b'"0912"\n' * 200_001
        status, document = yield self.send(body, **{"from": "40401234", "text": "x"})
        self.assertEqual((status, document["error"]["code"]), (413, "payload_too_large"))
        self.assertIn("200000 entries", document["error"]["message"])

    @defer.inlineCallbacks
    def test_progress_is_the_owners_only_and_cancel_ends_what_was_not_submitted(self):
        status, document = yield self.send(
            {"from": "40401234", "text": "Hello", "to": numbers(10)}, "application/json")
        broadcast_id = document["id"]
        yield self.feeder.tick()           # nothing: no budget yet
        self.feeder_clock.advance(0.0045)                       # 4.5 parts of budget
        yield self.feeder.tick()
        self.assertEqual(self.woken, [{"mci"}])
        claimed = yield self.store.claim(100, reactor.seconds() + 1, "mci")
        self.assertEqual(len(claimed), 4)
        status, other = yield self.call("GET", f"/v1/broadcasts/{broadcast_id}",
                                        key="judiciary-key")
        self.assertEqual((status, other["error"]["code"]), (404, "not_found"))
        status, other = yield self.call("DELETE", f"/v1/broadcasts/{broadcast_id}",
                                        key="judiciary-key")
        self.assertEqual(status, 404)
        status, progress = yield self.call("GET", f"/v1/broadcasts/{broadcast_id}")
        self.assertEqual((status, progress["state"], progress["counts"]["queued"]),
                         (200, "open", 10))
        status, progress = yield self.call("DELETE", f"/v1/broadcasts/{broadcast_id}")
        self.assertEqual((status, progress["state"]), (200, "cancelled"))
        # The 4 being sent go on; the 6 never fed are cancelled.
        self.assertEqual(progress["counts"], {"queued": 4, "submitted": 0, "delivered": 0,
                                              "failed": 0, "expired": 0, "cancelled": 6})
        self.assertEqual(list(self.feeder.active), [])


class BroadcastFingerprintTests(BroadcastAPITests):
    """Issue 8 item 5's seam: a broadcast's text is kept as a fingerprint per recipient
    like an accepted message's, so 4040 confirms a genuine broadcast (and says "not to
    you" to others) instead of warning that no agency sent it."""

    def setUp(self):
        super().setUp()
        from gateway.text.fingerprint import TextFingerprint
        self.broadcasts.outbound.fingerprint = TextFingerprint(self.store.fingerprint_key())

    @defer.inlineCallbacks
    def test_a_broadcasts_text_is_found_by_the_4040_lookup(self):
        status, document = yield self.send(
            {"from": "40401234", "text": PERSIAN_2_PARTS, "to": numbers(3)},
            "application/json")
        self.assertEqual(status, 202)
        digest = self.broadcasts.outbound.fingerprint.of(PERSIAN_2_PARTS)
        mine = yield self.store.find_sent([digest], "989120000001", 0)
        self.assertEqual((mine.agency, mine.to_citizen), ("tax", True))
        other = yield self.store.find_sent([digest], "989129999999", 0)
        self.assertEqual((other.agency, other.to_citizen), ("tax", False))
