"""The accept path without HTTP: gateway.outbound against the real SQLite store.

What USSD, broadcasts or a Kannel-compatible endpoint will see: an agency and a
Submission in, an Accepted or a Refusal (data) out. The HTTP mapping of refusals to the
contract's codes is checked at the end. The limits run on a frozen Clock.
"""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import answered
from store_fixtures import FailingAccepts, WithAccept, open_store
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.config.schema import Agency
from gateway.outbound import errors
from gateway.outbound.accept import Outbound
from gateway.outbound.submission import Accepted, Submission
from gateway.policy.auth import hash_key
from gateway.policy.limits import AgencyLimits

REPO = Path(__file__).resolve().parent.parent


def agency(id_, numbers, rate=1000, daily=100_000):
    return Agency(id=id_, name=id_, keys=(hash_key(f"{id_}-key"),), numbers=tuple(numbers),
                  masks=(), ussd_code=None, rate_per_s=rate, daily_parts=daily,
                  reply_webhook=None)


TAX = agency("tax", ["40401234"])
POST = agency("post", ["40405555"])
TINY = agency("tiny", ["40407777"], rate=2)
SMALL = agency("small", ["40408888"], daily=3)


def submission(sender="40401234", to=("09121234567",), text="x", key=None):
    return Submission(sender=sender, recipients=list(to), text=text, priority=0,
                      reference=None, idempotency_key=key, validity_s=3600, receipt=True)


class RecordingAudit:
    def __init__(self):
        self.refusals = []

    def sender_refused(self, agency_id, sender, reason, peer, owner=None):
        self.refusals.append((agency_id, sender, reason, peer, owner))


class OutboundTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-outbound-")
        self.clock = Clock()
        self.clock.advance(reactor.seconds())
        self.agencies = [TAX, TINY, SMALL]
        self.limits = AgencyLimits(self.agencies, self.store, self.clock)
        self.audit = RecordingAudit()
        self.woken = []
        self.outbound = self.make(self.store)

    def make(self, store, **options):
        return Outbound(store, self.limits, self.audit, clock=reactor,
                        agencies=lambda: self.agencies, on_accepted=self.woken.append,
                        route_of=lambda msisdn: "mci", **options)

    def count(self, sql):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchone()[0]

    @defer.inlineCallbacks
    def test_a_submission_is_stored_and_answered_as_data_after_the_commit(self):
        d = self.outbound.submit(TAX, submission(to=["09121234567", "۰۹۳۵۱۲۳۴۵۶۷"]))
        self.assertIsInstance(d, defer.Deferred)
        accepted = yield d
        self.assertIsInstance(accepted, Accepted)
        self.assertFalse(accepted.replayed)
        self.assertEqual([m.recipient for m in accepted.messages],
                         ["989121234567", "989351234567"])
        self.assertEqual(json.loads(accepted.document)["messages"],
                         [{"id": m.id, "to": m.recipient, "parts": 1, "status": "queued"}
                          for m in accepted.messages])
        self.assertEqual(self.count("SELECT COUNT(*) FROM messages"), 2)
        self.assertEqual((self.woken, self.outbound.pending), ([{"mci"}], 0))
        self.assertEqual(self.limits.used_today("tax"), 2)

    @defer.inlineCallbacks
    def test_a_key_given_again_is_replayed_at_once_with_the_first_document(self):
        first = yield self.outbound.submit(TAX, submission(key="k-1"))
        # No store write: the lookup of the key, fired at once by SQLite, answers.
        again = answered(self.outbound.submit(TAX, submission(key="k-1")))
        self.assertIsInstance(again, Accepted)
        self.assertEqual((again.replayed, again.messages, again.document),
                         (True, None, first.document))
        self.assertEqual(self.count("SELECT COUNT(*) FROM messages"), 1)
        self.assertEqual(self.limits.used_today("tax"), 1)

    @defer.inlineCallbacks
    def test_after_a_key_lookup_answered_later_refusals_come_as_the_answer(self):
        # A network database answers the lookup later: what the accept path finds
        # after it (here the rate) reaches the caller through `answer`, as a Failure.
        later = []

        class LateLookups:
            def __getattr__(_, name):
                return getattr(self.store, name)

            def idempotent_response(_, agency, key, now, request_hash=None):
                d = defer.Deferred()
                later.append((d, self.store.idempotent_response(agency, key, now,
                                                                request_hash)))
                return d

        outbound = self.make(LateLookups())
        first = outbound.submit(TINY, submission(sender="40407777", key="a"),
                                answer=self.tagged)
        second = outbound.submit(TINY, submission(sender="40407777", to=["09121234567"] * 2,
                                                  key="b"), answer=self.tagged)
        self.assertFalse(first.called or second.called)
        for d, stored in later:
            stored.chainDeferred(d)
        (tag, accepted), (tag2, refused) = yield defer.gatherResults([first, second])
        self.assertEqual((tag, type(accepted)), ("answered", Accepted))
        self.assertEqual(tag2, "answered")
        self.assertTrue(refused.check(errors.OverRate))

    @defer.inlineCallbacks
    def test_concurrent_submissions_with_one_key_all_get_the_first_ones_answer(self):
        answers = [self.outbound.submit(TAX, submission(key="k-2"), answer=self.tagged)
                   for _ in range(3)]
        outcomes = yield defer.gatherResults(answers)
        self.assertEqual([tag for tag, _ in outcomes], ["answered"] * 3)
        self.assertEqual({o.document for _, o in outcomes}, {outcomes[0][1].document})
        self.assertEqual([o.replayed for _, o in outcomes], [False, True, True])
        self.assertEqual(self.count("SELECT COUNT(*) FROM messages"), 1)

    @staticmethod
    def tagged(outcome):
        return ("answered", outcome)

    def test_a_spoofed_sender_is_refused_audited_with_its_owner_and_origin(self):
        # The owner is looked up in the agencies of now: a reload may have added it.
        self.agencies.append(POST)
        refusal = self.assertRaises(errors.SenderRefused, self.outbound.submit, TAX,
                                    submission(sender="40405555"), "10.0.0.7")
        self.assertEqual(refusal.reason, "number_not_assigned")
        self.assertEqual(self.audit.refusals,
                         [("tax", "40405555", "number_not_assigned", "10.0.0.7", "post")])

    def test_numbers_and_text_are_checked_for_every_channel(self):
        refusal = self.assertRaises(errors.InvalidRecipients, self.outbound.submit, TAX,
                                    submission(to=["09121234567", "0912"]))
        self.assertIn("to[1]", refusal.message)
        self.assertRaises(errors.TooManyParts, self.outbound.submit, TAX,
                          submission(text="س" * (67 * 11)))
        self.assertRaises(errors.UnsendableText, self.outbound.submit, TAX,
                          submission(text="\ud83d"))
        self.assertEqual(self.count("SELECT COUNT(*) FROM messages"), 0)

    @defer.inlineCallbacks
    def test_rate_and_quota_refusals_say_when_to_retry(self):
        yield self.outbound.submit(TINY, submission("40407777", ["09121234567"] * 2))
        refusal = self.assertRaises(errors.OverRate, self.outbound.submit, TINY,
                                    submission("40407777"))
        self.assertEqual(refusal.retry_after, 1)
        yield self.outbound.submit(SMALL, submission("40408888", ["09121234567"] * 3))
        refusal = self.assertRaises(errors.OverQuota, self.outbound.submit, SMALL,
                                    submission("40408888"))
        self.assertGreaterEqual(refusal.retry_after, 1)
        self.assertIn("needs 1", refusal.message)

    @defer.inlineCallbacks
    def test_a_store_failure_is_overloaded_and_gives_the_parts_back(self):
        outbound = self.make(FailingAccepts(self.store))
        with self.assertRaises(errors.Overloaded) as caught:
            yield outbound.submit(TAX, submission(key="k-3"))
        self.assertEqual(caught.exception.retry_after, 1)
        self.assertEqual((outbound.pending, self.woken), (0, []))
        self.assertEqual(self.limits.used_today("tax"), 0)

    def test_too_many_accepts_waiting_for_the_store_are_refused_before_any_check(self):
        silent = WithAccept(self.store, lambda messages, idempotency=None: defer.Deferred())
        outbound = self.make(silent, max_pending=1)
        outbound.submit(TAX, submission())
        self.assertRaises(errors.Overloaded, outbound.admit)
        # Even a submission that would be refused for its sender is shed first.
        self.assertRaises(errors.Overloaded, outbound.submit, TAX, submission("40409999"))
        self.assertEqual(self.audit.refusals, [])


def loaded_by(module, prefixes):
    """Which modules under `prefixes` importing `module` loads, in a fresh interpreter."""
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules "
            f"if m.startswith({tuple(prefixes)!r})))")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_accept_path_imports_nothing_of_http():
    """Channels without HTTP (USSD, broadcasts) must be able to call it."""
    assert loaded_by("gateway.outbound.accept", ["gateway.http"]) == "[]"


def test_policy_imports_neither_the_accept_path_nor_http():
    modules = "gateway.policy.auth, gateway.policy.senders, gateway.policy.limits, " \
              "gateway.policy.audit, gateway.policy.auth_throttle"
    assert loaded_by(modules, ["gateway.http", "gateway.outbound"]) == "[]"


def test_every_refusal_has_the_contract_code_and_status_over_http():
    from gateway.http.errors import CODE_FOR_REFUSAL, api_error

    refusals = {cls for cls in vars(errors).values()
                if isinstance(cls, type) and issubclass(cls, errors.Refusal)
                and cls is not errors.Refusal}
    assert set(CODE_FOR_REFUSAL) == refusals
    expected = {errors.SenderRefused: 403, errors.InvalidRecipients: 400,
                errors.TooManyParts: 400, errors.UnsendableText: 400, errors.OverRate: 429,
                errors.OverQuota: 429, errors.Overloaded: 503}
    for cls, status in expected.items():
        refusal = (cls("number_not_assigned", "no") if cls is errors.SenderRefused
                   else cls("no", retry_after=7))
        error = api_error(refusal)
        assert (error.status, error.message) == (status, "no")
        assert error.headers == ({} if cls is errors.SenderRefused else {"Retry-After": "7"})
