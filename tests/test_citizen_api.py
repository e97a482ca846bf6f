"""The partner apps' API (national inbox) over real loopback HTTP with the real SQLite
store: reading a citizen's messages (every agency, newest first, paged, nothing of
another citizen's), the directory's identity check (403 audited, 503), key separation
between apps and agencies, the per-app rate, and replies filed into the agency's inbox."""

import json
import sqlite3
from urllib.parse import quote

import pytest
from store_fixtures import open_store
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from test_api import AGENCIES, call

from gateway.citizens.directory import DirectoryUnavailable, FileDirectory
from gateway.config.schema import App
from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.inbox.filing import Inbox
from gateway.model import Citizen
from gateway.national_inbox.desk import NationalInbox
from gateway.national_inbox.identity import IdentityCheck
from gateway.outbound.accept import Outbound
from gateway.policy.app_limits import AppRequestLimits
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing, hash_key
from gateway.policy.auth_throttle import FailedAuthThrottle
from gateway.policy.limits import AgencyLimits, RateLimited

APPS = [App(id="dolat", name="دولت همراه", keys=(hash_key("dolat-app-key"),)),
        App(id="slow", name="slow", keys=(hash_key("slow-app-key"),), rate_per_s=2)]
CITIZENS = [Citizen("0012345679", "989121234567"), Citizen("1234567891", "989351234567")]
NID, NUMBER = "0012345679", "09121234567"
OTHER_NID, OTHER_NUMBER = "1234567891", "09351234567"
APP = "dolat-app-key"


def messages_path(nid=NID, msisdn=NUMBER, **extra):
    query = "&".join(f"{k}={quote(str(v))}" for k, v in {"national_id": nid, "msisdn": msisdn,
                                               **extra}.items())
    return "/v1/citizen/messages?" + query


class DownDirectory:
    def lookup(self, national_id):
        return defer.fail(DirectoryUnavailable("lookup service timed out"))


class CitizenAPI(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-citizen-")
        self.frozen = Clock()                 # the rates: independent of this machine's speed
        self.frozen.advance(reactor.seconds())
        self.keyring, self.audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        self.outbound = Outbound(self.store, AgencyLimits(AGENCIES, self.store, self.frozen),
                                 self.audit, clock=reactor,
                                 agencies=lambda: self.keyring.agencies)
        self.inbox = Inbox(self.store)
        self.heard = []
        self.inbox.listen(self.heard.append)  # the reply webhook listens here
        self.identity = IdentityCheck(FileDirectory(CITIZENS), self.audit)
        national_inbox = NationalInbox(self.store, self.inbox, self.identity, clock=reactor,
                                       hidden_agencies=("@4040",))
        self.app_keyring = KeyRing(APPS, kind="app")
        api = AgencyAPI(self.outbound, self.store, self.keyring, self.audit, clock=reactor,
                        auth_throttle=FailedAuthThrottle(self.frozen),
                        national_inbox=national_inbox, app_keyring=self.app_keyring,
                        app_limits=AppRequestLimits(APPS, self.frozen))
        self.factory = HTTPFactory(api.router, clock=reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    @defer.inlineCallbacks
    def call(self, method, path, body=None, key=APP):
        status, headers, raw = yield threads.deferToThread(call, self.port, method, path,
                                                           body, key)
        return status, headers, json.loads(raw) if raw else None

    @defer.inlineCallbacks
    def send(self, key, sender, to=NUMBER, text="اطلاعیه"):
        status, _, body = yield self.call("POST", "/v1/messages",
                                          {"from": sender, "to": to, "text": text}, key)
        assert status == 202, body
        return body["messages"][0]["id"]

    def reply(self, in_reply_to, text="پاسخ من", **extra):
        return self.call("POST", "/v1/citizen/replies",
                         {"national_id": NID, "msisdn": NUMBER, "in_reply_to": in_reply_to,
                          "text": text, **extra})

    def rows(self, sql, *args):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql, args).fetchall()

    # -- reading ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_an_app_reads_a_citizens_messages_from_two_agencies_newest_first_in_pages(self):
        sent = []
        for key, sender in (("tax-key", "40401234"), ("judiciary-key", "40400135"),
                            ("tax-key", "MALIAT")):
            sent.append((yield self.send(key, sender, text=f"to you from {sender}")))
        yield self.send("tax-key", "40401234", to=OTHER_NUMBER, text="someone else's")
        status, _, first = yield self.call("GET", messages_path(limit=2))
        self.assertEqual(status, 200)
        self.assertEqual([m["id"] for m in first["messages"]], [sent[2], sent[1]])
        self.assertEqual(first["messages"][1], {
            "id": sent[1], "agency": "judiciary", "agency_name": "judiciary",
            "from": "40400135", "text": "to you from 40400135",
            "sent_at": first["messages"][1]["sent_at"], "status": "queued"})
        self.assertRegex(first["messages"][0]["sent_at"], r"^\d{4}-\d\d-\d\dT.*Z$")
        yield self.send("judiciary-key", "40400135")          # new ones do not shift pages
        status, _, rest = yield self.call("GET", messages_path(limit=2, after=first["next"]))
        self.assertEqual(status, 200)
        self.assertEqual([m["id"] for m in rest["messages"]], [sent[0]])
        self.assertIsNone(rest["next"])
        # In Persian digits and in the national form alike; the other citizen sees only theirs.
        status, _, other = yield self.call("GET", messages_path(OTHER_NID, "۰۹۳۵۱۲۳۴۵۶۷"))
        self.assertEqual([m["text"] for m in other["messages"]], ["someone else's"])

    @defer.inlineCallbacks
    def test_a_mismatched_pair_is_refused_and_audited_without_the_national_id(self):
        yield self.send("tax-key", "40401234")
        for nid in (OTHER_NID, "0087654326"):              # someone else's; not registered
            status, _, body = yield self.call("GET", messages_path(nid, NUMBER))
            self.assertEqual((status, body["error"]["code"]), (403, "identity_mismatch"))
        yield self.store._write(lambda conn: None)         # the audit rows are committed
        rows = self.rows("SELECT event, agency, detail FROM audit"
                         " WHERE event = 'identity_mismatch'")
        self.assertEqual(len(rows), 2)
        for event, agency, detail in rows:
            self.assertIsNone(agency)
            self.assertEqual(json.loads(detail)["app"], "dolat")
            self.assertEqual(json.loads(detail)["msisdn"], self.store.number_hash("989121234567"))
            self.assertNotIn(OTHER_NID, detail)
            self.assertNotIn("0087654326", detail)
            self.assertNotIn("9121234567", detail)

    @defer.inlineCallbacks
    def test_bad_national_ids_numbers_and_cursors_are_refused_before_the_directory(self):
        for path, code in ((messages_path("0012345678"), "invalid_national_id"),
                           (messages_path("1111111111"), "invalid_national_id"),
                           (messages_path(NID, "02112345678"), "invalid_number"),
                           (messages_path(NID, NUMBER, after="i1:3"), "invalid_request"),
                           (messages_path(NID, NUMBER, limit=101), "invalid_request"),
                           (messages_path(NID, NUMBER, page=2), "invalid_request"),
                           ("/v1/citizen/messages?msisdn=09121234567", "invalid_request")):
            status, _, body = yield self.call("GET", path)
            self.assertEqual((status, body["error"]["code"]), (400, code), path)
        self.assertEqual(self.rows("SELECT count(*) FROM audit"
                                   " WHERE event = 'identity_mismatch'"), [(0,)])

    @defer.inlineCallbacks
    def test_a_directory_that_cannot_answer_or_none_at_all_is_503_never_a_guess(self):
        for directory in (DownDirectory(), None):
            self.identity.directory = directory
            status, headers, body = yield self.call("GET", messages_path())
            self.assertEqual((status, body["error"]["code"]), (503, "directory_unavailable"))
            self.assertIn("Retry-After", headers)
            status, _, body = yield self.reply("whatever")
            self.assertEqual((status, body["error"]["code"]), (503, "directory_unavailable"))

    # -- keys and rates -----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_app_keys_and_agency_keys_each_open_only_their_own_routes(self):
        message = yield self.send("tax-key", "40401234")
        status, _, _ = yield self.call("GET", messages_path(), key="tax-key")
        self.assertEqual(status, 401)
        status, _, _ = yield self.call("POST", "/v1/citizen/replies",
                                       {"national_id": NID, "msisdn": NUMBER,
                                        "in_reply_to": message, "text": "x"}, key="tax-key")
        self.assertEqual(status, 401)
        for method, path, body in (("POST", "/v1/messages",
                                    {"from": "40401234", "to": NUMBER, "text": "x"}),
                                   ("GET", "/v1/inbox", None),
                                   ("GET", f"/v1/messages/{message}", None)):
            status, headers, answer = yield self.call(method, path, body, key=APP)
            self.assertEqual((status, answer["error"]["code"]), (401, "unauthorized"), path)
            self.assertIn("WWW-Authenticate", headers)
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(1,)])

    @defer.inlineCallbacks
    def test_an_app_key_on_agency_routes_counts_as_a_failed_authentication(self):
        for _ in range(10):                   # the throttle's default: 10 within 60 s
            status, _, _ = yield self.call("GET", "/v1/inbox", key=APP)
            self.assertEqual(status, 401)
        status, headers, body = yield self.call("GET", "/v1/inbox", key=APP)
        self.assertEqual((status, body["error"]["code"]), (429, "rate_limited"))
        status, _, _ = yield self.call("GET", messages_path(), key=APP)   # the address
        self.assertEqual(status, 429)

    @defer.inlineCallbacks
    def test_each_app_has_its_own_request_rate(self):
        for _ in range(2):                    # slow: 2 a second, on a frozen clock
            status, _, _ = yield self.call("GET", messages_path(), key="slow-app-key")
            self.assertEqual(status, 200)
        status, headers, body = yield self.call("GET", messages_path(), key="slow-app-key")
        self.assertEqual((status, body["error"]["code"]), (429, "rate_limited"))
        self.assertEqual(headers["Retry-After"], "1")
        status, _, _ = yield self.call("GET", messages_path())              # another app
        self.assertEqual(status, 200)
        self.frozen.advance(1)
        status, _, _ = yield self.call("GET", messages_path(), key="slow-app-key")
        self.assertEqual(status, 200)

    # -- replies ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_reply_lands_in_the_sending_agencys_inbox_on_channel_app_once(self):
        answered = yield self.send("tax-key", "40401234")
        yield self.send("tax-key", "40401234")                # a later one, not answered
        status, _, filed = yield self.reply(answered)
        self.assertEqual(status, 201)
        self.assertEqual((filed["in_reply_to"], filed["channel"], filed["to"], filed["from"]),
                         (answered, "app", "40401234", "989121234567"))
        status, _, again = yield self.reply(answered)          # a retried POST
        self.assertEqual((status, again["id"]), (201, filed["id"]))
        status, _, inbox = yield self.call("GET", "/v1/inbox", key="tax-key")
        self.assertEqual([(m["id"], m["text"], m["channel"], m["in_reply_to"])
                          for m in inbox["messages"]],
                         [(filed["id"], "پاسخ من", "app", answered)])
        self.assertEqual([m.id for m in self.heard], [filed["id"]])     # pushed once
        status, _, second = yield self.reply(answered, idempotency_key="second")
        self.assertEqual(status, 201)
        self.assertNotEqual(second["id"], filed["id"])
        status, _, judiciary = yield self.call("GET", "/v1/inbox", key="judiciary-key")
        self.assertEqual(judiciary["messages"], [])

    @defer.inlineCallbacks
    def test_a_reply_to_someone_elses_or_no_message_is_not_found(self):
        elses = yield self.send("tax-key", "40401234", to=OTHER_NUMBER)
        for in_reply_to in (elses, "no-such-message"):
            status, _, body = yield self.reply(in_reply_to)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"))
        self.assertEqual(self.rows("SELECT count(*) FROM inbox"), [(0,)])

    @defer.inlineCallbacks
    def test_reply_bodies_are_checked_like_a_citizens_sms(self):
        answered = yield self.send("tax-key", "40401234")
        lone = ('{"national_id": "0012345679", "msisdn": "09121234567", "in_reply_to": "%s",'
                ' "text": "bad \\ud800"}' % answered).encode()
        for body, code in ((lone, "invalid_request"),
                           ({"national_id": NID, "msisdn": NUMBER, "in_reply_to": answered,
                             "text": "x" * 1001}, "invalid_request"),
                           ({"national_id": NID, "msisdn": NUMBER, "in_reply_to": answered,
                             "text": "  "}, "invalid_request"),
                           ({"national_id": NID, "msisdn": NUMBER, "text": "x"},
                            "invalid_request"),
                           ({"national_id": "0012345670", "msisdn": NUMBER,
                             "in_reply_to": answered, "text": "x"}, "invalid_national_id"),
                           ({"national_id": NID, "msisdn": 9121234567,
                             "in_reply_to": answered, "text": "x"}, "invalid_number")):
            status, _, answer = yield self.call("POST", "/v1/citizen/replies", body)
            self.assertEqual((status, answer["error"]["code"]), (400, code), body)
        status, _, _ = yield self.reply(answered, text="x" * 1000)
        self.assertEqual(status, 201)


def test_an_apps_rate_survives_a_reload_and_a_removed_app_is_refused():
    clock = Clock()
    limits = AppRequestLimits(APPS, clock)
    slow = APPS[1]
    limits.admit(slow)
    limits.admit(slow)
    limits.update(APPS)                          # SIGHUP: the bucket is kept, not refilled
    with pytest.raises(RateLimited) as caught:
        limits.admit(slow)
    assert caught.value.retry_after == 1
    limits.update([APPS[0]])
    clock.advance(10)
    with pytest.raises(RateLimited):
        limits.admit(slow)
