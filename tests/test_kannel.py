"""Kannel-compatible /cgi-bin/sendsms over real loopback HTTP and the real SQLite store,
with the request shapes of Kannel's user guide (GET with CGI parameters, `+` or `%20`
between receivers, percent-encoded text in a charset, form-encoded POST)."""

import json
import sqlite3
from urllib.parse import quote, urlencode

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

PERSIAN = "شهروند گرامی، پرونده\u200cی شما ثبت شد"
TAX = {"username": "tax", "password": "tax-key"}


class KannelTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-kannel-")
        clock = Clock()
        clock.advance(reactor.seconds())
        limits = AgencyLimits(AGENCIES, self.store, clock)
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        outbound = Outbound(self.store, limits, audit, clock=reactor,
                            agencies=lambda: keyring.agencies)
        self.api = AgencyAPI(outbound, self.store, keyring, audit, clock=reactor)
        factory = HTTPFactory(self.api.router, clock=reactor)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    def get(self, query):
        """GET /cgi-bin/sendsms?query (a str, sent as is, or a dict to encode)."""
        if isinstance(query, dict):
            query = urlencode(query)
        return threads.deferToThread(call, self.port, "GET", f"/cgi-bin/sendsms?{query}")

    def post(self, body, content_type="application/x-www-form-urlencoded"):
        return threads.deferToThread(call, self.port, "POST", "/cgi-bin/sendsms",
                                     body, None, {"Content-Type": content_type})

    def rows(self, sql, *args):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql, args).fetchall()

    def message(self, message_id):
        return self.rows("SELECT agency, sender, recipient, text, priority, validity_s,"
                         " receipt FROM messages WHERE id = ?", message_id)[0]

    def accepted(self, answer, count=1):
        status, headers, body = answer
        self.assertEqual((status, body), (202, b"0: Accepted for delivery"), body)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        ids = headers["X-Payam-Message-Ids"].split(",")
        self.assertEqual(len(ids), count)
        return ids

    # -- accepted ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_the_user_guides_get_is_accepted_and_stored_through_the_accept_path(self):
        answer = yield self.get("username=tax&password=tax-key&from=40401234"
                                "&to=09121234567&text=Hello+world")
        [message_id] = self.accepted(answer)
        self.assertEqual(self.message(message_id),
                         ("tax", "40401234", "989121234567", "Hello world", 0, 86400, 1))

    @defer.inlineCallbacks
    def test_a_query_read_on_bytes_keeps_odd_escapes_takes_the_first_repeat_drops_a_fragment(
            self):
        """The query string as the server cut it from the target (raw bytes, no
        fragment): a broken percent-escape stays as typed, an empty field is skipped, a
        repeated parameter counts once (its first value), a fragment is no text."""
        answer = yield self.get("username=tax&&password=tax-key&from=40401234"
                                "&to=09121234567&text=100%25+%zz+ok&text=second"
                                "#text=from-the-fragment")
        [message_id] = self.accepted(answer)
        self.assertEqual(self.message(message_id)[3], "100% %zz ok")

    @defer.inlineCallbacks
    def test_receivers_are_space_separated_as_plus_or_percent_20(self):
        for to in ("09121234567+09351234567", "09121234567%2009351234567"):
            answer = yield self.get(f"username=tax&password=tax-key&from=MALIAT&to={to}"
                                    "&text=x")
            ids = self.accepted(answer, 2)
            self.assertEqual([self.message(i)[2] for i in ids],
                             ["989121234567", "989351234567"])

    @defer.inlineCallbacks
    def test_text_is_utf8_by_default_and_decoded_in_the_charset_named(self):
        cases = [({}, PERSIAN.encode("utf-8")),
                 ({"coding": "2"}, PERSIAN.encode("utf-16-be")),       # UCS-2's default
                 ({"charset": "UTF-16BE", "coding": "2"}, PERSIAN.encode("utf-16-be")),
                 ({"charset": "windows-1256"}, "سلام از سامانه".encode("cp1256")),
                 ({"charset": "ISO-8859-1"}, "Grüße".encode("latin-1"))]
        for extra, raw in cases:
            query = urlencode({**TAX, "from": "40401234", "to": "09121234567", **extra})
            answer = yield self.get(f"{query}&text={quote(raw)}")
            [message_id] = self.accepted(answer)
            self.assertEqual(self.message(message_id)[3], raw.decode(
                extra.get("charset", "utf-16-be" if extra.get("coding") else "utf-8")),
                extra)

    @defer.inlineCallbacks
    def test_a_form_encoded_post_is_accepted_like_a_get(self):
        body = urlencode({**TAX, "from": "40401234", "to": "09121234567 09351234567",
                          "text": PERSIAN, "priority": "3", "validity": "60",
                          "dlr-mask": "31", "dlr-url": "http://agency.example/dlr?id=%d"})
        answer = yield self.post(body.encode())
        ids = self.accepted(answer, 2)
        self.assertEqual(self.message(ids[0]),
                         ("tax", "40401234", "989121234567", PERSIAN, 2, 3600, 1))

    @defer.inlineCallbacks
    def test_a_dlr_mask_without_final_states_asks_no_receipt(self):
        answer = yield self.get({**TAX, "from": "40401234", "to": "09121234567",
                                 "text": "x", "dlr-mask": "24"})
        [message_id] = self.accepted(answer)
        self.assertEqual(self.message(message_id)[6], 0)

    # -- refused ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_refused_sender_is_a_403_never_rewritten_and_audited(self):
        status, _, body = yield self.get({**TAX, "from": "ADLIRAN", "to": "09121234567",
                                          "text": "x"})
        self.assertEqual(status, 403)
        self.assertTrue(body.decode().startswith("Sender not allowed"), body)
        self.assertTrue(body.endswith(b", rejected"))
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])
        for _ in range(200):
            audited = self.rows("SELECT event, agency FROM audit")
            if audited:
                break
            yield threads.deferToThread(lambda: None)
        self.assertIn(("sender_refused", "tax"), audited)

    @defer.inlineCallbacks
    def test_wrong_credentials_are_kannels_403_and_count_toward_the_apis_block(self):
        for credentials in ({"username": "tax", "password": "wrong-key-000"},
                            {"username": "tax", "password": "judiciary-key"},
                            {"username": "judiciary", "password": "tax-key"},
                            {"password": "tax-key"}):
            status, _, body = yield self.get({**credentials, "from": "40401234",
                                              "to": "09121234567", "text": "x"})
            self.assertEqual((status, body), (403, b"Authorization failed for sendsms"))
        for _ in range(10):
            yield self.get({"username": "tax", "password": "guess", "from": "40401234",
                            "to": "09121234567", "text": "x"})
        status, headers, _ = yield self.get({**TAX, "from": "40401234",
                                             "to": "09121234567", "text": "x"})
        self.assertEqual(status, 429)
        self.assertIn("Retry-After", headers)
        # The same block holds for the JSON API from that address.
        status, _, raw = yield threads.deferToThread(
            call, self.port, "POST", "/v1/messages",
            {"from": "40401234", "to": "09121234567", "text": "x"}, "tax-key")
        self.assertEqual((status, json.loads(raw)["error"]["code"]), (429, "rate_limited"))
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])

    @defer.inlineCallbacks
    def test_malformed_requests_are_rejected_in_kannels_words(self):
        base = {**TAX, "from": "40401234", "to": "09121234567", "text": "x"}
        cases = [
            ({"to": None}, 400, "Missing receiver number, rejected"),
            ({"to": " "}, 400, "Empty receiver number not allowed, rejected"),
            ({"to": "0912"}, 400, "Invalid receiver number"),
            ({"from": None}, 400, "Sender missing and no global set, rejected"),
            ({"text": None}, 400, "Empty text not allowed, rejected"),
            ({"priority": "7"}, 400, "Priority field misformed, rejected"),
            ({"validity": "x"}, 400, "Validity field misformed, rejected"),
            ({"dlr-mask": "99"}, 400, "DLR-Mask field misformed, rejected"),
            ({"dlr-url": "ftp://x"}, 400, "DLR-URL field misformed, rejected"),
            ({"charset": "no-such-charset"}, 400, "Charset or body misformed, rejected"),
            ({"coding": "1"}, 400, "not supported"),
            ({"udh": "%06%05%04"}, 400, "UDH not supported"),
            ({"text": "x" * 1700}, 400, "Text too long"),
        ]
        for change, want_status, want_text in cases:
            query = {k: v for k, v in {**base, **change}.items() if v is not None}
            status, headers, body = yield self.get(query)
            self.assertEqual(status, want_status, change)
            self.assertIn(want_text, body.decode(), change)
            self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        without_text = {k: v for k, v in base.items() if k != "text"}
        status, _, body = yield self.get(urlencode(without_text) + "&text=%FF%FE")  # not UTF-8
        self.assertEqual((status, body), (400, b"Charset or body misformed, rejected"))
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])

    @defer.inlineCallbacks
    def test_a_post_body_that_is_not_a_form_is_415_and_head_sends_nothing(self):
        status, _, body = yield self.post(b"username=tax", "text/plain")
        self.assertEqual(status, 415)
        self.assertIn(b"Unsupported content-type", body)
        query = urlencode({**TAX, "from": "40401234", "to": "09121234567", "text": "x"})
        status, _, _ = yield threads.deferToThread(call, self.port, "HEAD",
                                                   f"/cgi-bin/sendsms?{query}")
        self.assertEqual(status, 405)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM messages"), [(0,)])
