"""GET /v1/inbox over loopback HTTP with the real store (cursor paging, only the agency's
own inbox, in_reply_to), and the keywords: HELP answered through the accept path from
the same number, STOP honoured only where the agency allows it, opted-out citizens'
normal messages recorded failed `opted_out` (high/emergency still go), answers rate
limited and never to a non-citizen."""

import dataclasses
import json
import time

from store_fixtures import open_store
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from test_api import AGENCIES as API_AGENCIES
from test_api import call

from gateway.http.api import AgencyAPI
from gateway.http.inbox_query import encode_cursor
from gateway.http.server import HTTPFactory
from gateway.inbound.keywords import ANSWERS_PER_WINDOW, keyword_of, normalise
from gateway.inbound.record import MobileOriginated
from gateway.inbox.filing import Inbox
from gateway.model import InboxEntry
from gateway.outbound.accept import Outbound
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits

CITIZEN = "989121234567"
TAX, JUDICIARY = API_AGENCIES[0], API_AGENCIES[1]
TAX_OPTING = dataclasses.replace(TAX, opt_out=True, name="سازمان امور مالیاتی")
AGENCIES = [TAX_OPTING, JUDICIARY]


def test_keyword_matching_is_normalised():
    for text in ("HELP", " help ", "Help!", "راهنما", "راه\u200cنما", "راهنما؟", "ﺭﺍﻫﻨﻤﺎ"):
        assert keyword_of(text)[0] == "help", text
    for text in ("STOP", "stop.", "لغو", " لغو "):
        assert keyword_of(text)[0] == "stop", text
    assert keyword_of("help me please") is None and keyword_of("کمک") is None
    assert normalise("كيك") == normalise("کیک")             # Arabic kaf and yeh
    assert keyword_of("HELP")[1] == "en" and keyword_of("راهنما")[1] == "fa"


class Correspondence(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-corr-")
        limits_clock = Clock()
        limits_clock.advance(reactor.seconds())
        self.keyring, self.audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        self.outbound = Outbound(self.store, AgencyLimits(AGENCIES, self.store, limits_clock),
                                 self.audit, clock=reactor,
                                 agencies=lambda: self.keyring.agencies)
        api = AgencyAPI(self.outbound, self.store, self.keyring, self.audit, clock=reactor)
        self.factory = HTTPFactory(api.router, clock=reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.stop)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port
        self.inbox = Inbox(self.store)

    @defer.inlineCallbacks
    def get(self, path, key="tax-key"):
        status, _, raw = yield threads.deferToThread(call, self.port, "GET", path, None, key)
        return status, json.loads(raw)

    @defer.inlineCallbacks
    def send(self, priority="normal", key="tax-key", sender="40401234", whole=False):
        status, _, raw = yield threads.deferToThread(
            call, self.port, "POST", "/v1/messages",
            {"from": sender, "to": "09121234567", "text": "اطلاعیه", "priority": priority},
            key)
        assert status == 202, raw
        entry = json.loads(raw)["messages"][0]
        return entry if whole else entry["id"]

    def reply(self, agency="tax", text="بله", number="40401234"):
        return self.inbox.file(InboxEntry(agency=agency, number=number, citizen=CITIZEN,
                                          text=text, channel="sms",
                                          received_at=time.time(), operator="mci"))

    # -- GET /v1/inbox ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_the_inbox_pages_with_an_opaque_cursor_and_in_reply_to(self):
        sent = yield self.send()
        for n in range(5):
            yield self.reply(text=f"پاسخ {n}")
        status, page = yield self.get("/v1/inbox?limit=2")
        self.assertEqual(status, 200)
        self.assertEqual([m["text"] for m in page["messages"]], ["پاسخ 0", "پاسخ 1"])
        first = page["messages"][0]
        self.assertEqual(set(first), {"id", "from", "to", "text", "received_at",
                                      "in_reply_to", "channel"})
        self.assertEqual((first["from"], first["to"], first["in_reply_to"], first["channel"]),
                         (CITIZEN, "40401234", sent, "sms"))
        status, rest = yield self.get(f"/v1/inbox?after={page['next']}")
        self.assertEqual([m["text"] for m in rest["messages"]],
                         ["پاسخ 2", "پاسخ 3", "پاسخ 4"])
        status, empty = yield self.get(f"/v1/inbox?after={rest['next']}")
        self.assertEqual((empty["messages"], empty["next"]), ([], rest["next"]))

    @defer.inlineCallbacks
    def test_an_agency_sees_only_its_own_inbox(self):
        yield self.reply(agency="judiciary", number="40400135", text="برای دادگستری")
        yield self.reply(agency=None, number="40405", text="unrouted")
        status, page = yield self.get("/v1/inbox")
        self.assertEqual((status, page["messages"]), (200, []))
        status, page = yield self.get("/v1/inbox", key="judiciary-key")
        self.assertEqual([m["text"] for m in page["messages"]], ["برای دادگستری"])

    @defer.inlineCallbacks
    def test_bad_cursors_and_limits_are_invalid_requests(self):
        for query in ("after=abc", "after=" + encode_cursor(3) + "x", "after=aTE6LTE",
                      "after=%00", "limit=0", "limit=101", "limit=ten", "limit=-1"):
            status, body = yield self.get(f"/v1/inbox?{query}")
            self.assertEqual((status, body["error"]["code"]), (400, "invalid_request"), query)
        status, body = yield self.get("/v1/inbox", key="no-such-key")
        self.assertEqual(status, 401)

    # -- keywords --------------------------------------------------------------------------

    def keywords(self):
        from gateway.inbound.keywords import Keywords
        return Keywords(self.store, reactor, lambda: self.outbound)

    def mo(self, text, citizen=CITIZEN, destination="40401234"):
        return MobileOriginated(operator="mci", session=None, citizen=citizen,
                                destination=destination, text=text,
                                received_at=time.time())

    def sent_to_citizen(self):
        from test_api import APITests
        return APITests.rows(self, "SELECT sender, text, priority, status, error"
                                   " FROM messages ORDER BY rowid")

    @defer.inlineCallbacks
    def test_help_is_answered_from_the_same_number_with_the_agencys_name(self):
        keywords = self.keywords()
        yield keywords.handle(self.mo("راهنما"), TAX_OPTING, "40401234")
        [(sender, text, priority, status, error)] = self.sent_to_citizen()
        self.assertEqual((sender, priority, status), ("40401234", 1, "queued"))
        self.assertIn("سازمان امور مالیاتی", text)
        self.assertIn("40401234", text)

    @defer.inlineCallbacks
    def test_keyword_answers_are_rate_limited_and_never_to_a_non_citizen(self):
        keywords = self.keywords()
        for _ in range(ANSWERS_PER_WINDOW + 3):
            yield keywords.handle(self.mo("HELP"), TAX_OPTING, "40401234")
        self.assertEqual(len(self.sent_to_citizen()), ANSWERS_PER_WINDOW)
        # Another gateway's number or a mask: an auto-answer loop would start here.
        self.assertIsNone(keywords.handle(self.mo("HELP", citizen="40401111"), TAX_OPTING,
                                          "40401234"))
        self.assertIsNone(keywords.handle(self.mo("HELP", citizen="MALIAT"), TAX_OPTING,
                                          "40401234"))

    @defer.inlineCallbacks
    def test_stop_where_allowed_fails_normal_messages_opted_out_but_not_urgent_ones(self):
        keywords = self.keywords()
        yield keywords.handle(self.mo("لغو"), TAX_OPTING, "40401234")
        answered = yield self.send("normal", whole=True)
        self.assertEqual((answered["status"], answered["error"]), ("failed", "opted_out"))
        normal = answered["id"]
        high = yield self.send("high")
        emergency = yield self.send("emergency")
        _, got = yield self.get(f"/v1/messages/{normal}")
        self.assertEqual((got["status"], got["error"]), ("failed", "opted_out"))
        for kept in (high, emergency):
            _, got = yield self.get(f"/v1/messages/{kept}")
            self.assertEqual((got["status"], got["error"]), ("queued", None))
        # The confirmation went out, urgent enough to pass the opt-out itself.
        self.assertIn("سازمان امور مالیاتی", self.sent_to_citizen()[0][1])
        # Another agency's normal messages are not touched.
        other = yield self.send("normal", key="judiciary-key", sender="40400135")
        _, got = yield self.get(f"/v1/messages/{other}", key="judiciary-key")
        self.assertEqual(got["status"], "queued")

    @defer.inlineCallbacks
    def test_stop_where_not_allowed_is_an_ordinary_reply(self):
        keywords = self.keywords()
        self.assertIsNone(keywords.handle(self.mo("STOP", destination="40400135"), JUDICIARY,
                                          "40400135"))
        normal = yield self.send("normal", key="judiciary-key", sender="40400135")
        _, got = yield self.get(f"/v1/messages/{normal}", key="judiciary-key")
        self.assertEqual(got["status"], "queued")
