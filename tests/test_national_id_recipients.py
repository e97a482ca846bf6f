"""POST /v1/messages with recipients given by national ID, over real loopback HTTP and
the real SQLite store: resolved through the directory at accept, unknown citizens
reported per recipient, a directory that cannot answer refused 503 with nothing stored,
the agency shown the ID it gave and a masked number, never the citizen's whole number."""

import json
import logging

import test_api
from twisted.internet import defer

from gateway.citizens.directory import DirectoryUnavailable, FileDirectory
from gateway.model import Citizen
from gateway.outbound.recipients import LOOKUPS_AT_ONCE

CITIZEN = Citizen("0012345679", "989121234567", "citizen1@example.ir")
IRANCELL_CITIZEN = Citizen("1234567891", "989351234567")
UNKNOWN_ID = "0087654326"              # a valid check digit, not in the directory
BAD_CHECK_DIGIT = "0012345678"


class DownDirectory:
    """A directory whose every lookup fails as a lookup service that is down does."""

    def __init__(self):
        self.asked = 0

    def lookup(self, national_id):
        self.asked += 1
        return defer.fail(DirectoryUnavailable("lookup service: connection refused"))


class HeldDirectory:
    """A slow directory: lookups wait until the test answers them."""

    def __init__(self, citizens):
        self.citizens = {c.national_id: c for c in citizens}
        self.waiting = []
        self.asked = []
        self.most_in_flight = 0

    def lookup(self, national_id):
        self.asked.append(national_id)
        d = defer.Deferred()
        self.waiting.append((d, national_id))
        self.most_in_flight = max(self.most_in_flight, len(self.waiting))
        return d

    def answer_all(self):
        while self.waiting:
            d, national_id = self.waiting.pop(0)
            d.callback(self.citizens.get(national_id))


class NationalIdTests(test_api.APITests):
    """APITests' server and store, with a citizen directory on the accept path."""

    directory = None

    def make_api(self, store, **options):
        api = super().make_api(store, **options)
        directory = self.directory if self.directory is not None else FileDirectory(
            [CITIZEN, IRANCELL_CITIZEN])
        api.outbound.use_directory(directory)
        return api

    def message_count(self):
        return self.rows("SELECT COUNT(*) FROM messages")[0][0]


# APITests' own tests are not run again here.
for _name in [n for n in dir(test_api.APITests) if n.startswith("test_")]:
    setattr(NationalIdTests, _name, None)


class ResolvedRecipients(NationalIdTests):

    @defer.inlineCallbacks
    def test_numbers_and_national_ids_mix_and_the_agency_sees_only_a_masked_number(self):
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "Your tax return is due.",
            "to": ["09351112233", {"national_id": "۰۰۱۲۳۴۵۶۷۹"},
                   {"national_id": IRANCELL_CITIZEN.national_id}]})
        self.assertEqual(status, 202, body)
        plain, by_id, other = body["messages"]
        self.assertEqual(plain["to"], "989351112233")
        self.assertNotIn("national_id", plain)
        self.assertEqual(by_id, {"id": by_id["id"], "to": "98912****567",
                                 "national_id": "0012345679", "parts": 1,
                                 "status": "queued"})
        self.assertEqual(other["to"], "98935****567")
        # Stored, routed and counted with the number the directory gave.
        self.assertEqual(
            self.rows("SELECT recipient, national_id FROM messages WHERE id = ?",
                      by_id["id"]), [("989121234567", "0012345679")])
        self.assertEqual(self.rows("SELECT route FROM parts WHERE message_id = ?",
                                   by_id["id"]), [("mci",)])
        self.assertEqual(self.woken_routes, {"mci", "irancell"})
        self.assertEqual(self.limits.used_today("tax"), 3)
        status, _, raw = yield self.request("GET", f"/v1/messages/{by_id['id']}",
                                            key="tax-key")
        shown = json.loads(raw)
        self.assertEqual((status, shown["to"], shown["national_id"], shown["status"]),
                         (200, "98912****567", "0012345679", "queued"))
        self.assertNotIn("989121234567", raw.decode())
        status, _, raw = yield self.request("GET", f"/v1/messages/{plain['id']}",
                                            key="tax-key")
        self.assertEqual(json.loads(raw)["to"], "989351112233")
        self.assertNotIn("national_id", json.loads(raw))

    @defer.inlineCallbacks
    def test_a_lone_national_id_object_is_one_recipient(self):
        status, _, body = yield self.send(**{
            "from": "MALIAT", "text": "x", "to": {"national_id": CITIZEN.national_id}})
        self.assertEqual(status, 202, body)
        self.assertEqual(body["messages"][0]["to"], "98912****567")

    @defer.inlineCallbacks
    def test_a_bad_check_digit_is_invalid_national_id_by_index_and_nothing_is_asked(self):
        self.directory = HeldDirectory([CITIZEN])
        self.api.outbound.use_directory(self.directory)
        with self.assertLogs("payam", logging.DEBUG) as logs:
            logging.getLogger("payam.test").debug("start")
            status, _, body = yield self.send(**{
                "from": "40401234", "text": "x",
                "to": [{"national_id": CITIZEN.national_id}, "09121234567",
                       {"national_id": BAD_CHECK_DIGIT}, {"national_id": "12345"}]})
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_national_id"))
        message = body["error"]["message"]
        self.assertIn("to[2]", message)
        self.assertIn("check digit", message)
        self.assertIn("to[3]", message)
        self.assertNotIn("to[0]", message)
        self.assertNotIn(BAD_CHECK_DIGIT, message)
        self.assertFalse(any(BAD_CHECK_DIGIT in line or CITIZEN.national_id in line
                             for line in logs.output), logs.output)
        self.assertEqual(self.directory.asked, [])     # checked before anything
        self.assertEqual(self.message_count(), 0)

    @defer.inlineCallbacks
    def test_recipient_objects_other_than_national_id_are_invalid_request(self):
        for to in ([{"msisdn": "09121234567"}], [{"national_id": "0012345679", "x": 1}],
                   {"to": "09121234567"}):
            status, _, body = yield self.send(**{"from": "40401234", "text": "x", "to": to})
            self.assertEqual((status, body["error"]["code"]), (400, "invalid_request"), to)
        status, _, body = yield self.send(**{"from": "40401234", "text": "x",
                                             "to": [{"national_id": 12345679}]})
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_national_id"))
        self.assertEqual(self.message_count(), 0)

    @defer.inlineCallbacks
    def test_an_unknown_citizen_is_failed_per_recipient_and_costs_no_quota(self):
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x",
            "to": [{"national_id": UNKNOWN_ID}, {"national_id": CITIZEN.national_id}]})
        self.assertEqual(status, 202, body)
        unknown, known = body["messages"]
        self.assertEqual(unknown, {"id": unknown["id"], "to": None, "parts": 0,
                                   "status": "failed", "error": "unknown_citizen",
                                   "national_id": UNKNOWN_ID})
        self.assertEqual(known["status"], "queued")
        self.assertEqual(self.limits.used_today("tax"), 1)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM parts WHERE message_id = ?",
                                   unknown["id"]), [(0,)])
        status, _, raw = yield self.request("GET", f"/v1/messages/{unknown['id']}",
                                            key="tax-key")
        shown = json.loads(raw)
        self.assertEqual((status, shown["status"], shown["error"], shown["to"],
                          shown["parts"], shown["national_id"]),
                         (200, "failed", "unknown_citizen", None, 0, UNKNOWN_ID))
        self.assertIsNotNone(shown["done_at"])
        # The day's quota read from the store (a restart) does not count it either.
        used = yield self.store.parts_used("tax", 0)
        self.assertEqual(used, 1)

    @defer.inlineCallbacks
    def test_a_submission_to_unknown_citizens_only_is_accepted_failed_not_a_500(self):
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x", "to": {"national_id": UNKNOWN_ID}})
        self.assertEqual(status, 202, body)
        [unknown] = body["messages"]
        self.assertEqual((unknown["status"], unknown["error"], unknown["parts"]),
                         ("failed", "unknown_citizen", 0))
        self.assertEqual(self.limits.used_today("tax"), 0)

    @defer.inlineCallbacks
    def test_unknown_citizens_only_with_the_quota_counted_in_the_store(self):
        # As an HTTP worker of the split daemon counts it (gateway/procs/worker.py): no
        # reservation for zero parts, so no quota for the store to count either.
        self.limits.store_counts = True
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x", "to": {"national_id": UNKNOWN_ID}})
        self.assertEqual((status, body["messages"][0]["error"]), (202, "unknown_citizen"))
        self.assertEqual(self.limits.used_today("tax"), 0)

    @defer.inlineCallbacks
    def test_directory_down_is_503_with_retry_after_and_nothing_is_stored(self):
        self.directory = DownDirectory()
        self.api.outbound.use_directory(self.directory)
        status, headers, body = yield self.send(**{
            "from": "40401234", "text": "x", "idempotency_key": "k-down",
            "to": ["09351112233", {"national_id": CITIZEN.national_id}]})
        self.assertEqual((status, body["error"]["code"]), (503, "directory_unavailable"))
        self.assertTrue(int(headers["Retry-After"]) >= 1)
        self.assertEqual(self.directory.asked, 1)
        self.assertEqual(self.message_count(), 0)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM idempotency"), [(0,)])
        self.assertEqual(self.limits.used_today("tax"), 0)
        self.assertEqual((self.api.outbound.resolving, self.api.outbound.pending), (0, 0))
        # Once it answers again, the same key is a first request.
        self.api.outbound.use_directory(FileDirectory([CITIZEN]))
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x", "idempotency_key": "k-down",
            "to": ["09351112233", {"national_id": CITIZEN.national_id}]})
        self.assertEqual(status, 202, body)
        self.assertEqual(self.message_count(), 2)

    @defer.inlineCallbacks
    def test_without_a_directory_national_ids_are_invalid_request_saying_so(self):
        self.api.outbound.use_directory(None)
        status, _, body = yield self.send(**{
            "from": "40401234", "text": "x", "to": [{"national_id": CITIZEN.national_id}]})
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_request"))
        self.assertIn("directory", body["error"]["message"])
        self.assertEqual(self.message_count(), 0)
        status, _, _ = yield self.send(**{"from": "40401234", "text": "x",
                                          "to": "09121234567"})
        self.assertEqual(status, 202)            # numbers need no directory

    @defer.inlineCallbacks
    def test_one_lookup_per_distinct_id_a_bounded_number_at_a_time(self):
        citizens = [Citizen(nid, f"98912{n:07d}") for n, nid in enumerate(_valid_ids(40))]
        self.directory = HeldDirectory(citizens)
        self.api.outbound.use_directory(self.directory)
        to = [{"national_id": c.national_id} for c in citizens] * 2
        answered = self.send(**{"from": "40401234", "text": "x", "to": to})
        while len(self.directory.waiting) < LOOKUPS_AT_ONCE:
            yield _later()
        for _ in range(3):                        # the rest wait for a free slot
            yield _later()
        self.assertEqual(len(self.directory.waiting), LOOKUPS_AT_ONCE)
        while not answered.called:
            self.directory.answer_all()
            yield _later()
        status, _, body = yield answered
        self.assertEqual(status, 202, body)
        self.assertEqual(sorted(self.directory.asked), sorted(c.national_id for c in citizens))
        self.assertEqual(self.directory.most_in_flight, LOOKUPS_AT_ONCE)
        # As a number given twice is two messages, so is an ID given twice.
        self.assertEqual(len(body["messages"]), 80)

    @defer.inlineCallbacks
    def test_an_id_and_its_number_are_handled_as_a_number_given_twice(self):
        _, _, twice = yield self.send(**{"from": "40401234", "text": "x",
                                         "to": ["09121234567", "09121234567"]})
        _, _, mixed = yield self.send(**{"from": "40401234", "text": "x",
                                         "to": ["09121234567",
                                                {"national_id": CITIZEN.national_id}]})
        self.assertEqual(len(twice["messages"]), len(mixed["messages"]))
        self.assertEqual(mixed["messages"][1]["to"], "98912****567")

    @defer.inlineCallbacks
    def test_idempotency_replays_and_hashes_the_body_as_given(self):
        fields = {"from": "40401234", "text": "x", "idempotency_key": "k-nid",
                  "to": [{"national_id": CITIZEN.national_id}]}
        first = yield self.request("POST", "/v1/messages", fields, "tax-key")
        # The directory now gives another number: the same body is the same request.
        self.api.outbound.use_directory(
            FileDirectory([Citizen(CITIZEN.national_id, "989129999999")]))
        again = yield self.request("POST", "/v1/messages", fields, "tax-key")
        self.assertEqual((first[0], again[0]), (202, 202))
        self.assertEqual(first[2], again[2])
        self.assertEqual(again[1].get("Idempotent-Replayed"), "true")
        other = yield self.request("POST", "/v1/messages",
                                   {**fields, "to": [{"national_id": IRANCELL_CITIZEN
                                                      .national_id}]}, "tax-key")
        self.assertEqual((other[0], json.loads(other[2])["error"]["code"]),
                         (409, "idempotency_mismatch"))
        self.assertEqual(self.message_count(), 1)


def _valid_ids(count):
    """`count` distinct national IDs with valid check digits."""
    from gateway.national_id import check_digit
    ids = []
    n = 100000000
    while len(ids) < count:
        first = f"{n:09d}"
        ids.append(first + str(check_digit(first)))
        n += 7919
    return ids


def _later():
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    return deferLater(reactor, 0.01, lambda: None)



class BrokenDirectory:
    """An adapter with a bug whose error message holds the ID it was asked."""

    def lookup(self, national_id):
        return defer.fail(KeyError(f"no row for {national_id}"))


class UnexpectedDirectoryErrors(NationalIdTests):

    @defer.inlineCallbacks
    def test_an_adapter_error_is_503_and_its_message_is_not_logged(self):
        self.api.outbound.use_directory(BrokenDirectory())
        with self.assertLogs("payam", logging.ERROR) as logs:
            status, _, body = yield self.send(**{
                "from": "40401234", "text": "x", "to": [{"national_id": CITIZEN.national_id}]})
        self.assertEqual((status, body["error"]["code"]), (503, "directory_unavailable"))
        self.assertTrue(logs.output)
        self.assertFalse(any(CITIZEN.national_id in line for line in logs.output),
                         logs.output)
        self.assertEqual(self.message_count(), 0)


def test_the_resolver_shares_its_slots_fails_a_job_once_and_goes_on_with_the_next():
    from gateway.outbound.errors import DirectoryDown
    from gateway.outbound.recipients import Resolver

    held = HeldDirectory([CITIZEN, IRANCELL_CITIZEN])
    resolver = Resolver(held, at_once=2)
    first = resolver.lookup_all([CITIZEN.national_id, IRANCELL_CITIZEN.national_id,
                                 UNKNOWN_ID])
    second = resolver.lookup_all([CITIZEN.national_id])
    assert len(held.waiting) == 2 and resolver.in_flight == 2     # the third waits
    held.answer_all()                    # the third of `first`, then `second`'s, follow
    held.answer_all()
    assert first.result == {CITIZEN.national_id: CITIZEN,
                            IRANCELL_CITIZEN.national_id: IRANCELL_CITIZEN,
                            UNKNOWN_ID: None}
    assert second.result == {CITIZEN.national_id: CITIZEN}
    assert resolver.in_flight == 0
    assert resolver.lookup_all([]).result == {}

    down = Resolver(DownDirectory())
    failed = down.lookup_all([CITIZEN.national_id, UNKNOWN_ID])
    assert failed.result.check(DirectoryDown)
    failed.addErrback(lambda _: None)
    assert down.directory.asked == 1 and down.in_flight == 0     # nothing more asked
    again = down.lookup_all([CITIZEN.national_id])
    assert again.result.check(DirectoryDown)
    again.addErrback(lambda _: None)
