"""The agency API over real loopback HTTP, against the real SQLite store.

trial TestCases on the global reactor (see conftest.py); the HTTP client runs in a
thread. The limits get their own frozen Clock so rate-limit answers do not depend on how
fast this machine is.
"""

import http.client
import json
import sqlite3

from store_fixtures import FailingAccepts, WithAccept, open_store
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway import metrics
from gateway.config.schema import Agency
from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory, Request
from gateway.outbound.accept import Outbound
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing, hash_key
from gateway.policy.limits import AgencyLimits

PERSIAN_2_PARTS = ("شهروند گرامی، اظهارنامه\u200cی مالیاتی شما تا پایان آبان ثبت نشده است؛ "
                   "لطفاً پیش از سررسید اقدام فرمایید.")
assert 70 < len(PERSIAN_2_PARTS) <= 134


def agency(id_, numbers, masks, rate=1000, daily=100_000):
    return Agency(id=id_, name=id_, keys=(hash_key(f"{id_}-key"),), numbers=tuple(numbers),
                  masks=tuple(masks), ussd_code=None, rate_per_s=rate, daily_parts=daily,
                  reply_webhook=None)


AGENCIES = [
    agency("tax", ["40401234"], ["MALIAT"]),
    agency("judiciary", ["40400135"], ["ADLIRAN"]),
    agency("tiny", ["40407777"], [], rate=2),
    agency("small", ["40408888"], [], daily=3),
]


def call(port, method, path, body=None, key=None, headers=None):
    """(status, headers, raw body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    payload = body if isinstance(body, (bytes, type(None))) else \
        json.dumps(body, ensure_ascii=False).encode()
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


class APITests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-api-")
        self.limits_clock = Clock()
        self.limits_clock.advance(reactor.seconds())
        self.limits = AgencyLimits(AGENCIES, self.store, self.limits_clock)
        self.wakeups = 0
        self.api = self.make_api(self.store)
        self.factory = HTTPFactory(self.api.router, clock=reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    def make_api(self, store, **options):
        def woken(routes):
            self.wakeups += 1
            self.woken_routes = routes

        keyring, audit = KeyRing(AGENCIES), AuditLog(store, reactor)
        outbound = Outbound(store, self.limits, audit, clock=reactor,
                            agencies=lambda: keyring.agencies, on_accepted=woken,
                            route_of=lambda msisdn: "mci" if msisdn.startswith("98912")
                            else "irancell", **options)
        return AgencyAPI(outbound, store, keyring, audit, clock=reactor,
                         health=lambda: {"mci": {"bound": 1, "binds": 2}})

    def request(self, method, path, body=None, key=None, headers=None):
        return threads.deferToThread(call, self.port, method, path, body, key, headers)

    @defer.inlineCallbacks
    def send(self, key="tax-key", **fields):
        status, headers, raw = yield self.request("POST", "/v1/messages", fields, key)
        return status, headers, json.loads(raw)

    def rows(self, sql, *args):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql, args).fetchall()

    @defer.inlineCallbacks
    def audit_rows(self, count):
        # Audit rows are written beside the answer, not before it: a write offered now
        # commits after them (the writer keeps order), whatever the machine's load.
        yield self.store._write(lambda conn: None)
        rows = self.rows("SELECT event, agency, detail FROM audit ORDER BY rowid")
        if len(rows) < count:
            self.fail(f"expected {count} audit rows, found {len(rows)}")
        return [(e, a, json.loads(d)) for e, a, d in rows]

    # -- accepted --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_persian_text_is_accepted_as_two_parts_after_it_is_stored(self):
        status, headers, body = yield self.send(**{
            "from": "MALIAT", "to": "09121234567", "text": PERSIAN_2_PARTS,
            "priority": "high", "reference": "case-17"})
        self.assertEqual(status, 202)
        self.assertTrue(headers["Content-Type"].startswith("application/json"))
        [message] = body["messages"]
        self.assertEqual((message["to"], message["parts"], message["status"]),
                         ("989121234567", 2, "queued"))
        [(agency_id, sender, recipient, priority, reference, parts, text)] = self.rows(
            "SELECT agency, sender, recipient, priority, reference, parts, text"
            " FROM messages WHERE id = ?", message["id"])
        self.assertEqual((agency_id, sender, recipient, priority, reference, parts, text),
                         ("tax", "MALIAT", "989121234567", 1, "case-17", 2, PERSIAN_2_PARTS))
        payloads = [p for (p,) in self.rows(
            "SELECT payload FROM parts WHERE message_id = ? ORDER BY seq", message["id"])]
        self.assertEqual(len(payloads), 2)
        self.assertEqual([p[:3] for p in payloads], [b"\x05\x00\x03"] * 2)   # concat UDH
        self.assertEqual(payloads[0][3], payloads[1][3])                    # one reference
        self.assertEqual(self.wakeups, 1)
        self.assertEqual(self.limits.used_today("tax"), 2)

    @defer.inlineCallbacks
    def test_every_recipient_is_a_message_and_digits_in_any_script_are_accepted(self):
        status, _, body = yield self.send(**{
            "from": "۴۰۴۰۱۲۳۴", "text": "Hello",
            "to": ["۰۹۱۲۱۲۳۴۵۶۷", "+989351234567", "٠٩٠١١٢٣٤٥٦٧", "09121234567"]})
        self.assertEqual(status, 202)
        self.assertEqual([m["to"] for m in body["messages"]],
                         ["989121234567", "989351234567", "989011234567", "989121234567"])
        self.assertEqual(len({m["id"] for m in body["messages"]}), 4)
        self.assertEqual(self.rows("SELECT DISTINCT sender FROM messages"), [("40401234",)])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM parts"), [(4,)])

    # -- refusals ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_spoofed_senders_are_refused_and_every_refusal_is_audited(self):
        cases = [("40400135", "number_not_assigned", "judiciary"),   # another agency's
                 ("40409999", "number_not_assigned", None),          # unassigned 4040
                 ("BANKMELLI", "mask_not_registered", None),         # unknown mask
                 ("ADLIRAN", "mask_not_registered", "judiciary"),    # another agency's mask
                 ("02188776655", "not_a_government_number", None)]  # not a 4040 number
        before = metrics.SENDER_REFUSALS.labels("number_not_assigned")._value.get()
        for sender, _, _ in cases:
            status, _, body = yield self.send(**{"from": sender, "to": "09121234567",
                                                 "text": "x"})
            self.assertEqual((status, body["error"]["code"]), (403, "sender_not_allowed"))
        rows = yield self.audit_rows(len(cases))
        self.assertEqual([(e, a, d["sender"], d["reason"], d.get("owner"))
                          for e, a, d in rows],
                         [("sender_refused", "tax", s, r, o) for s, r, o in cases])
        self.assertEqual({d["peer"] for _, _, d in rows}, {"127.0.0.1"})
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])
        self.assertEqual(
            metrics.SENDER_REFUSALS.labels("number_not_assigned")._value.get() - before, 2)

    @defer.inlineCallbacks
    def test_missing_or_unknown_keys_are_401_with_the_same_message(self):
        answers = []
        for key, headers in [(None, None), ("wrong-key", None), (None, {"Authorization":
                                                                          "Basic eDp5"})]:
            status, headers, raw = yield self.request(
                "POST", "/v1/messages", {"from": "40401234", "to": "09121234567",
                                         "text": "x"}, key, headers)
            self.assertEqual(status, 401)
            self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="payam"')
            answers.append(json.loads(raw))
        self.assertEqual(answers[0]["error"]["code"], "unauthorized")
        self.assertTrue(answers[0] == answers[1] == answers[2])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])
        rows = yield self.audit_rows(1)
        self.assertEqual(rows[0][:2], ("unauthorized", None))

    @defer.inlineCallbacks
    def test_each_part_is_stored_with_its_route_and_the_dispatcher_hears_which(self):
        status, _, body = yield self.send(**{"from": "40401234", "text": "x",
                                             "to": ["09121234567", "09351234567"]})
        self.assertEqual(status, 202)
        self.assertEqual(self.woken_routes, {"mci", "irancell"})
        self.assertEqual(sorted(self.rows("SELECT m.recipient, p.route FROM parts p"
                                          " JOIN messages m ON m.id = p.message_id")),
                         [("989121234567", "mci"), ("989351234567", "irancell")])

    @defer.inlineCallbacks
    def test_recipients_that_are_not_strings_are_invalid_numbers(self):
        for to, where in ((9121234567, "to[0]"), (["09121234567", 9351234567], "to[1]"),
                          ([None], "to[0]"), (True, "to[0]")):
            status, _, body = yield self.send(**{"from": "40401234", "text": "x", "to": to})
            self.assertEqual((status, body["error"]["code"]), (400, "invalid_number"), to)
            self.assertIn(where, body["error"]["message"])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])

    @defer.inlineCallbacks
    def test_bad_numbers_are_named_by_index_without_echoing_them(self):
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x",
            "to": ["09121234567", "02188776655", "0912", "۰۹۳۵۱۲۳۴۵۶۷"]})
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_number"))
        message = body["error"]["message"]
        self.assertIn("to[1]", message)
        self.assertIn("to[2]", message)
        self.assertNotIn("to[0]", message)
        self.assertNotIn("02188776655", message)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])

    @defer.inlineCallbacks
    def test_eleven_parts_are_text_too_long_and_ten_are_accepted(self):
        status, _, body = yield self.send(**{"from": "40401234", "to": "09121234567",
                                             "text": "س" * (67 * 11)})
        self.assertEqual((status, body["error"]["code"]), (400, "text_too_long"))
        self.assertIn("11", body["error"]["message"])
        status, _, body = yield self.send(**{"from": "40401234", "to": "09121234567",
                                             "text": "س" * (67 * 10)})
        self.assertEqual((status, body["messages"][0]["parts"]), (202, 10))

    @defer.inlineCallbacks
    def test_malformed_bodies_are_invalid_request_naming_the_problem(self):
        base = {"from": "40401234", "to": "09121234567", "text": "x"}
        cases = [
            (b"not json", "not valid JSON"),
            (b"[1, 2]", "JSON object"),
            (b"", "empty"),
            ({**base, "callback": "http://x", "colour": 1}, "'callback', 'colour'"),
            ({"from": "40401234", "text": "x"}, "'to' is required"),
            ({**base, "to": []}, "1 to 1000"),
            ({**base, "to": ["09121234567"] * 1001}, "1 to 1000"),
            ({**base, "text": ""}, "'text'"),
            ({**base, "priority": "urgent"}, "'priority'"),
            ({**base, "priority": ["high"]}, "'priority'"),
            ({**base, "validity_s": 10}, "'validity_s'"),
            ({**base, "validity_s": True}, "'validity_s'"),
            ({**base, "receipt": "yes"}, "'receipt'"),
            ({**base, "reference": "r" * 129}, "'reference'"),
            ({**base, "idempotency_key": 5}, "'idempotency_key'"),
            ({**base, "text": "\ud83d"}, "surrogate"),
            ({**base, "reference": "r\udc00"}, "not valid Unicode"),
            (b'{"from": "40401234", "to": "09121234567", "text": "x", "to": "0935"}',
             "'to' more than once"),
            (b'{"from": "40401234", "to": [{"n": 1, "n": 2}], "text": "a:b"}',
             "'n' more than once"),
        ]
        for body, expected in cases:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            status, _, answer = yield self.request("POST", "/v1/messages", raw, "tax-key")
            answer = json.loads(answer)
            self.assertEqual((status, answer["error"]["code"]), (400, "invalid_request"),
                             (body if isinstance(body, bytes) else str(body)[:80]))
            self.assertIn(expected, answer["error"]["message"])

    # -- idempotency ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_same_idempotency_key_gets_the_same_answer_and_stores_once(self):
        fields = {"from": "40401234", "to": ["09121234567", "09351234567"], "text": "x",
                  "idempotency_key": "batch-2024-001"}
        first = yield self.request("POST", "/v1/messages", fields, "tax-key")
        again = yield self.request("POST", "/v1/messages", fields, "tax-key")
        self.assertEqual((first[0], again[0]), (202, 202))
        self.assertEqual(first[2], again[2])                  # byte for byte
        self.assertEqual(again[1].get("Idempotent-Replayed"), "true")
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(2,)])
        self.assertEqual(self.limits.used_today("tax"), 2)    # the replay took nothing
        # Another agency's identical key is its own.
        other = yield self.request("POST", "/v1/messages",
                                   {**fields, "from": "40400135"}, "judiciary-key")
        self.assertEqual(other[0], 202)
        self.assertNotEqual(other[2], first[2])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(4,)])

    @defer.inlineCallbacks
    def test_concurrent_duplicates_wait_for_the_first_and_get_its_answer(self):
        body = json.dumps({"from": "40401234", "to": "09121234567", "text": "x",
                           "idempotency_key": "k1"}).encode()
        headers = {"authorization": "Bearer tax-key"}
        answers = [self.api.router(Request("POST", "/v1/messages", {}, headers, body,
                                           "127.0.0.1")) for _ in range(3)]
        self.assertTrue(all(isinstance(a, defer.Deferred) for a in answers))
        responses = yield defer.gatherResults(answers)
        self.assertEqual({r.status for r in responses}, {202})
        self.assertEqual(len({r.body for r in responses}), 1)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(1,)])
        self.assertEqual(self.api.outbound.pending, 0)

    # -- limits ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_rate_limit_answers_429_with_retry_after(self):
        fields = {"from": "40407777", "to": ["09121234567", "09121234568"], "text": "x"}
        status, _, _ = yield self.send("tiny-key", **fields)
        self.assertEqual(status, 202)
        status, headers, body = yield self.send("tiny-key", **fields)
        self.assertEqual((status, body["error"]["code"]), (429, "rate_limited"))
        self.assertEqual(headers["Retry-After"], "1")
        self.limits_clock.advance(1)
        status, _, _ = yield self.send("tiny-key", **fields)
        self.assertEqual(status, 202)

    @defer.inlineCallbacks
    def test_daily_quota_in_parts_answers_429_quota_exceeded(self):
        fields = {"from": "40408888", "to": "09121234567", "text": PERSIAN_2_PARTS}
        status, _, _ = yield self.send("small-key", **fields)
        self.assertEqual(status, 202)
        status, headers, body = yield self.send("small-key", **fields)
        self.assertEqual((status, body["error"]["code"]), (429, "quota_exceeded"))
        self.assertGreaterEqual(int(headers["Retry-After"]), 1)
        status, _, _ = yield self.send("small-key", **{**fields, "text": "one part"})
        self.assertEqual(status, 202)

    @defer.inlineCallbacks
    def test_store_failure_is_503_overloaded_and_gives_the_parts_back(self):
        api = self.make_api(FailingAccepts(self.store))
        body = json.dumps({"from": "40401234", "to": "09121234567", "text": "x"}).encode()
        response = yield api.router(Request("POST", "/v1/messages", {},
                                            {"authorization": "Bearer tax-key"}, body, "::1"))
        self.assertEqual(response.status, 503)
        self.assertEqual(json.loads(response.body)["error"]["code"], "overloaded")
        self.assertEqual(self.limits.used_today("tax"), 0)
        self.assertEqual((api.outbound.pending, self.wakeups), (0, 0))

    @defer.inlineCallbacks
    def test_too_many_accepts_waiting_for_the_store_are_shed_at_once(self):
        held = []

        def accept(messages, idempotency=None):
            d = defer.Deferred()
            held.append((d, messages, idempotency))
            return d

        api = self.make_api(WithAccept(self.store, accept), max_pending=1)
        body = json.dumps({"from": "40401234", "to": "09121234567", "text": "x"}).encode()

        def post():
            return api.router(Request("POST", "/v1/messages", {},
                                      {"authorization": "Bearer tax-key"}, body, "::1"))

        first = post()
        shed = post()
        self.assertEqual(shed.status, 503)
        self.assertEqual(json.loads(shed.body)["error"]["code"], "overloaded")
        d, messages, idempotency = held[0]
        self.store.accept(messages, idempotency).chainDeferred(d)
        response = yield first
        self.assertEqual(response.status, 202)
        self.assertEqual(api.outbound.pending, 0)

    # -- reading -----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_only_the_owner_reads_a_message(self):
        _, _, body = yield self.send(**{"from": "MALIAT", "to": "09121234567",
                                        "text": PERSIAN_2_PARTS, "reference": "r-9"})
        message_id = body["messages"][0]["id"]
        status, _, raw = yield self.request("GET", f"/v1/messages/{message_id}",
                                            key="tax-key")
        self.assertEqual(status, 200)
        message = json.loads(raw)
        self.assertEqual(set(message), {"id", "from", "to", "status", "parts", "priority",
                                        "reference", "operator", "created_at",
                                        "submitted_at", "done_at", "error",
                                        "attempts", "last_error"})
        self.assertEqual((message["id"], message["from"], message["to"], message["status"],
                          message["parts"], message["priority"], message["reference"]),
                         (message_id, "MALIAT", "989121234567", "queued", 2, "normal", "r-9"))
        for path, key, expected in [(f"/v1/messages/{message_id}", "judiciary-key", 404),
                                    ("/v1/messages/nosuchid", "tax-key", 404),
                                    ("/v1/messages/%2E%2E", "tax-key", 404),
                                    (f"/v1/messages/{message_id}", None, 401)]:
            status, _, raw = yield self.request("GET", path, key=key)
            self.assertEqual(status, expected, path)
        status, _, raw = yield self.request("GET", f"/v1/messages/{message_id}",
                                            key="judiciary-key")
        self.assertEqual(json.loads(raw)["error"]["code"], "not_found")

    @defer.inlineCallbacks
    def test_healthz_needs_no_key_and_reports_store_and_operators(self):
        status, _, raw = yield self.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(raw), {"status": "ok", "store": "ok",
                                           "operators": {"mci": {"bound": 1, "binds": 2}}})
        yield self.store.close()
        status, _, raw = yield self.request("GET", "/healthz")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(raw)["store"], "not_writable")


class LateReads:
    """The real store with its reads answered only when told, as a network database
    answers: the interface's reads are Deferreds."""

    def __init__(self, store):
        self._store = store
        self.waiting = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _later(self, d):
        late = defer.Deferred()
        self.waiting.append((d, late))
        return late

    def get_message(self, message_id):
        return self._later(self._store.get_message(message_id))

    def writable(self):
        return self._later(self._store.writable())

    def idempotent_response(self, agency, key, now, request_hash=None):
        return self._later(self._store.idempotent_response(agency, key, now, request_hash))

    def answer(self):
        waiting, self.waiting = self.waiting, []
        for d, late in waiting:
            d.chainDeferred(late)


class LateReadTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, _path = open_store(self, "payam-api-")
        self.late = LateReads(self.store)
        clock = Clock()
        clock.advance(reactor.seconds())
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        outbound = Outbound(self.late, AgencyLimits(AGENCIES, self.store, clock), audit,
                            clock=reactor, agencies=lambda: keyring.agencies)
        self.api = AgencyAPI(outbound, self.late, keyring, audit, clock=reactor)

    def route(self, method, path, body=b"", key="tax-key"):
        return self.api.router(Request(method, path, {}, {"authorization": f"Bearer {key}"},
                                       body, "127.0.0.1"))

    @defer.inlineCallbacks
    def test_reads_answered_later_are_answered_when_they_come(self):
        body = json.dumps({"from": "40401234", "to": "09121234567", "text": "x",
                           "idempotency_key": "k1"}).encode()
        first = self.route("POST", "/v1/messages", body)
        self.assertFalse(first.called)                    # the key's lookup is out
        self.late.answer()
        accepted = yield first
        [message] = json.loads(accepted.body)["messages"]
        again = self.route("POST", "/v1/messages", body)
        shown = self.route("GET", f"/v1/messages/{message['id']}")
        other = self.route("GET", f"/v1/messages/{message['id']}", key="judiciary-key")
        health = self.route("GET", "/healthz")
        self.assertFalse(any(d.called for d in (again, shown, other, health)))
        self.late.answer()
        replayed, shown, other, health = yield defer.gatherResults(
            [again, shown, other, health])
        self.assertEqual((replayed.status, replayed.body), (202, accepted.body))
        self.assertEqual(replayed.headers.get("Idempotent-Replayed"), "true")
        self.assertEqual((shown.status, json.loads(shown.body)["status"]), (200, "queued"))
        self.assertEqual(other.status, 404)
        self.assertEqual(health.status, 200)

    @defer.inlineCallbacks
    def test_a_read_that_fails_is_answered_503(self):
        self.late.get_message = lambda message_id: defer.fail(OSError("disk I/O error"))
        self.late.writable = lambda: defer.fail(OSError("disk I/O error"))
        shown = yield self.route("GET", "/v1/messages/abc")
        health = yield self.route("GET", "/healthz")
        self.assertEqual((shown.status, json.loads(shown.body)["error"]["code"]),
                         (503, "overloaded"))
        self.assertEqual((health.status, json.loads(health.body)["store"]),
                         (503, "not_writable"))


def test_accepted_body_matches_json_dumps():
    """The hand-built 202 document is byte for byte json.dumps's, and falls back to it
    for anything that would need escaping."""
    import json as _json
    from types import SimpleNamespace

    from gateway.outbound.submission import accepted_document as _accepted_body

    def expected(messages):
        return _json.dumps(
            {"messages": [{"id": m.id, "to": m.recipient, "parts": len(m.parts),
                           "status": "queued"} for m in messages]},
            ensure_ascii=False, separators=(",", ":"))

    cases = [
        [SimpleNamespace(id="01HABCDEF0123456789XYZ", recipient="989121234567", parts=[b"a"])],
        [SimpleNamespace(id="A1", recipient="989121234567", parts=[b"a", b"b"]),
         SimpleNamespace(id="B2", recipient="989351234567", parts=[b"c"])],
        [SimpleNamespace(id='we"ird', recipient="98912\\1234567", parts=[b"a"])],
        [SimpleNamespace(id="id-1_x", recipient="۹۸۹۱۲", parts=[b"a"])],
    ]
    for messages in cases:
        assert _accepted_body(messages) == expected(messages)
