"""HTTP edges of the agency API over real loopback HTTP and the real SQLite store: HEAD
wherever GET, 415 for a body that is not JSON, 409 for an idempotency key reused with
another body, /healthz `degraded` while an operator has no bound session."""

import json

from store_fixtures import open_store
from test_api import AGENCIES, call
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.outbound.accept import Outbound
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits


class EdgeTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-edges-")
        clock = Clock()
        clock.advance(reactor.seconds())
        self.limits = AgencyLimits(AGENCIES, self.store, clock)
        self.operators = {"mci": {"bound": 1, "binds": 1}}
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        outbound = Outbound(self.store, self.limits, audit, clock=reactor,
                            agencies=lambda: keyring.agencies)
        self.api = AgencyAPI(outbound, self.store, keyring, audit, clock=reactor,
                             health=lambda: self.operators)
        self.factory = HTTPFactory(self.api.router, clock=reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    def request(self, method, path, body=None, key=None, headers=None):
        return threads.deferToThread(call, self.port, method, path, body, key, headers)

    def rows(self, sql):
        import sqlite3
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()

    # -- HEAD ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(self):
        sent = yield self.request("POST", "/v1/messages",
                                  {"from": "40401234", "to": "09121234567", "text": "x"},
                                  "tax-key", {"Content-Type": "application/json"})
        message_id = json.loads(sent[2])["messages"][0]["id"]
        for path, key in (("/healthz", None), ("/v1/openapi.json", None),
                          (f"/v1/messages/{message_id}", "tax-key")):
            got = yield self.request("GET", path, key=key)
            head = yield self.request("HEAD", path, key=key)
            self.assertEqual((head[0], head[2]), (got[0], b""), path)
            self.assertEqual(head[1]["Content-Length"], str(len(got[2])), path)
            self.assertEqual(head[1]["Content-Type"], got[1]["Content-Type"], path)
        # Refusals too: HEAD without a key is the GET's 401, without its body.
        head = yield self.request("HEAD", f"/v1/messages/{message_id}")
        self.assertEqual((head[0], head[2]), (401, b""))

    @defer.inlineCallbacks
    def test_head_is_not_allowed_where_get_is_not_and_allow_names_it_with_get(self):
        status, headers, _ = yield self.request("HEAD", "/v1/messages", key="tax-key")
        self.assertEqual((status, headers["Allow"]), (405, "POST"))
        status, headers, _ = yield self.request("DELETE", "/healthz")
        self.assertEqual((status, headers["Allow"]), (405, "GET, HEAD"))

    # -- 415 --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_body_declared_as_something_else_than_json_is_415_send_json(self):
        fields = {"from": "40401234", "to": "09121234567", "text": "x"}
        for content_type, body in (
                ("text/plain", json.dumps(fields).encode()),
                ("application/xml", b"<message/>"),
                ("application/x-www-form-urlencoded", b"from=40401234&to=0912&text=x"),
                ("multipart/form-data; boundary=x", b"--x--")):
            status, _, raw = yield self.request("POST", "/v1/messages", body, "tax-key",
                                                {"Content-Type": content_type})
            error = json.loads(raw)["error"]
            self.assertEqual((status, error["code"]), (415, "unsupported_media_type"),
                             content_type)
            self.assertIn("send JSON", error["message"])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])

    @defer.inlineCallbacks
    def test_json_is_accepted_with_or_without_its_content_type_and_from_curl_d(self):
        fields = {"from": "40401234", "to": "09121234567", "text": "x"}
        for headers in ({"Content-Type": "application/json"},
                        {"Content-Type": "application/json; charset=utf-8"},
                        {"Content-Type": "Application/JSON"},
                        {},
                        # `curl -d '{...}'` labels its JSON as a form: the body says JSON.
                        {"Content-Type": "application/x-www-form-urlencoded"}):
            status, _, raw = yield self.request("POST", "/v1/messages", fields, "tax-key",
                                                headers)
            self.assertEqual(status, 202, (headers, raw))

    # -- 409 --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_reused_idempotency_key_with_another_body_is_409_and_sends_nothing(self):
        fields = {"from": "40401234", "to": ["09121234567"], "text": "first",
                  "idempotency_key": "k-409"}
        first = yield self.request("POST", "/v1/messages", fields, "tax-key")
        self.assertEqual(first[0], 202)
        for changed in ({"text": "second"}, {"to": ["09121234568"]},
                        {"priority": "high"}, {"from": "MALIAT"}, {"validity_s": 3600}):
            status, _, raw = yield self.request("POST", "/v1/messages",
                                                {**fields, **changed}, "tax-key")
            error = json.loads(raw)["error"]
            self.assertEqual((status, error["code"]), (409, "idempotency_mismatch"), changed)
            self.assertIn("k-409", error["message"])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(1,)])
        # The same request in another spelling (key order, number form) is a replay.
        again = {"idempotency_key": "k-409", "text": "first", "to": "+989121234567",
                 "from": "40401234"}
        status, headers, raw = yield self.request("POST", "/v1/messages", again, "tax-key")
        self.assertEqual((status, raw), (202, first[2]))
        self.assertEqual(headers.get("Idempotent-Replayed"), "true")

    @defer.inlineCallbacks
    def test_concurrent_requests_with_one_key_and_different_bodies_store_one(self):
        from gateway.http.server import Request
        headers = {"authorization": "Bearer tax-key"}
        bodies = [json.dumps({"from": "40401234", "to": "09121234567", "text": text,
                              "idempotency_key": "k-race"}).encode()
                  for text in ("a", "a", "b")]
        answers = yield defer.gatherResults([
            self.api.router(Request("POST", "/v1/messages", {}, headers, body, "127.0.0.1"))
            for body in bodies])
        self.assertEqual([a.status for a in answers], [202, 202, 409])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(1,)])

    # -- /healthz ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_healthz_is_degraded_while_an_operator_has_no_bound_session(self):
        self.operators = {"mci": {"bound": 1, "binds": 1}, "irancell": {"bound": 0, "binds": 2}}
        status, _, raw = yield self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(raw)["status"]), (200, "degraded"))
        self.operators["irancell"]["bound"] = 1
        status, _, raw = yield self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(raw)["status"]), (200, "ok"))
        yield self.store.close()
        self.operators["irancell"]["bound"] = 0
        status, _, raw = yield self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(raw)["status"]), (503, "unavailable"))
