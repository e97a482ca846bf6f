"""Broadcasts to citizens by national ID, over real loopback HTTP and the real store:
JSON `to` objects, NDJSON lines and a CSV `national_id` column, resolved through the
directory while the body streams (a bounded number of lookups at once), the 202 only
once every recipient is durable; bad check digits reported by entry, unknown citizens
counted failed, a directory that cannot answer refused 503 with nothing stored."""

import json

import test_broadcast_api
from test_national_id_recipients import (
    BAD_CHECK_DIGIT, CITIZEN, IRANCELL_CITIZEN, UNKNOWN_ID, DownDirectory, HeldDirectory,
    _later, _valid_ids)
from twisted.internet import defer

from gateway.citizens.directory import FileDirectory
from gateway.model import Citizen
from gateway.outbound.recipients import LOOKUPS_AT_ONCE


class NationalIdBroadcasts(test_broadcast_api.BroadcastAPITests):

    def setUp(self):
        super().setUp()
        self.broadcasts.outbound.use_directory(FileDirectory([CITIZEN, IRANCELL_CITIZEN]))

    def stored(self):
        return (self.rows("SELECT count(*) FROM broadcasts")[0][0],
                self.rows("SELECT count(*) FROM broadcast_recipients")[0][0])


for _name in [n for n in dir(test_broadcast_api.BroadcastAPITests) if n.startswith("test_")]:
    setattr(NationalIdBroadcasts, _name, None)


class BroadcastsByNationalId(NationalIdBroadcasts):

    @defer.inlineCallbacks
    def test_json_ids_mix_with_numbers_bad_ones_reported_unknown_ones_counted_failed(self):
        status, document = yield self.send({
            "from": "40401234", "text": "Hello",
            "to": ["09351112233", {"national_id": CITIZEN.national_id},
                   {"national_id": BAD_CHECK_DIGIT}, {"national_id": UNKNOWN_ID},
                   "09121234567"]},                 # CITIZEN's number again: sent once
            "application/json")
        self.assertEqual(status, 202, document)
        self.assertEqual((document["recipients"], document["duplicates"],
                          document["invalid_count"], document["unknown_citizens"]),
                         (2, 1, 1, 1))
        self.assertEqual(document["invalid"],
                         [{"entry": "to[2]", "reason": "national ID: check digit does not match"}])
        self.assertNotIn(BAD_CHECK_DIGIT, json.dumps(document))
        self.assertEqual(self.limits.used_today("tax"), 2)      # unknown: no quota
        self.assertEqual(sorted(self.rows(
            "SELECT number, national_id FROM broadcast_recipients WHERE broadcast_id = ?",
            document["id"])), [(989121234567, CITIZEN.national_id), (989351112233, None)])
        status, progress = yield self.call("GET", f"/v1/broadcasts/{document['id']}")
        self.assertEqual((progress["recipients"], progress["unknown_citizens"],
                          progress["counts"]["queued"], progress["counts"]["failed"]),
                         (2, 1, 2, 1))
        # Fed, the citizen's message shows the ID it was addressed by, the number masked.
        self.feeder_clock.advance(1)
        yield self.feeder.tick()
        [(message_id,)] = self.rows("SELECT id FROM messages WHERE recipient = ?",
                                    "989121234567")
        status, message = yield self.call("GET", f"/v1/messages/{message_id}")
        self.assertEqual((status, message["to"], message["national_id"]),
                         (200, "98912****567", CITIZEN.national_id))
        [(other_id,)] = self.rows("SELECT id FROM messages WHERE recipient = ?",
                                  "989351112233")
        status, message = yield self.call("GET", f"/v1/messages/{other_id}")
        self.assertEqual(message["to"], "989351112233")

    @defer.inlineCallbacks
    def test_ndjson_lines_and_a_csv_national_id_column(self):
        ndjson = "\n".join([json.dumps({"national_id": CITIZEN.national_id}),
                            '"09351112233"',
                            json.dumps({"national_id": "123"})]).encode()
        status, document = yield self.send(ndjson, **{"from": "40401234", "text": "Hi"})
        self.assertEqual((status, document["recipients"], document["invalid"]),
                         (202, 2, [{"entry": "line 3",
                                    "reason": "national ID: must be 10 digits"}]))
        csv = ("name,national_id,msisdn\n"
               f"a,{CITIZEN.national_id},\n"
               f"b,{IRANCELL_CITIZEN.national_id},09121234567\n"
               "c,,09191112233\n"
               f"d,{UNKNOWN_ID},\n").encode()
        status, document = yield self.send(csv, "text/csv", **{"from": "40401234",
                                                               "text": "Hi"})
        self.assertEqual(status, 202, document)
        self.assertEqual((document["recipients"], document["unknown_citizens"],
                          document["invalid_count"]), (3, 1, 0))
        self.assertEqual(sorted(n for (n,) in self.rows(
            "SELECT number FROM broadcast_recipients WHERE broadcast_id = ?",
            document["id"])), [989121234567, 989191112233, 989351234567])

    @defer.inlineCallbacks
    def test_directory_down_is_503_and_nothing_of_the_broadcast_stays(self):
        self.broadcasts.outbound.use_directory(DownDirectory())
        status, document = yield self.send(
            {"from": "40401234", "text": "Hello",
             "to": test_broadcast_api.numbers(50) + [{"national_id": CITIZEN.national_id}]},
            "application/json")
        self.assertEqual((status, document["error"]["code"]), (503, "directory_unavailable"))
        yield self.store._write(lambda conn: None)   # the discard is behind the answer
        self.assertEqual(self.stored(), (0, 0))
        self.assertEqual(self.limits.used_today("tax"), 0)

    @defer.inlineCallbacks
    def test_without_a_directory_a_national_id_is_invalid_request(self):
        self.broadcasts.outbound.use_directory(None)
        status, document = yield self.send(
            {"from": "40401234", "text": "Hello",
             "to": ["09351112233", {"national_id": CITIZEN.national_id}]},
            "application/json")
        self.assertEqual((status, document["error"]["code"]), (400, "invalid_request"))
        self.assertIn("directory", document["error"]["message"])
        yield self.store._write(lambda conn: None)
        self.assertEqual(self.stored(), (0, 0))

    @defer.inlineCallbacks
    def test_a_slow_directory_is_asked_a_bounded_number_at_a_time_before_the_202(self):
        citizens = [Citizen(nid, f"98912{n:07d}") for n, nid in enumerate(_valid_ids(3000))]
        directory = HeldDirectory(citizens)
        self.broadcasts.outbound.use_directory(directory)
        body = "".join(json.dumps({"national_id": c.national_id}) + "\n"
                       for c in citizens).encode()
        answered = self.send(body, **{"from": "40401234", "text": "Hi"})
        while len(directory.waiting) < LOOKUPS_AT_ONCE:
            yield _later()
        for _ in range(5):
            yield _later()
        self.assertFalse(answered.called)            # no 202 while lookups are out
        self.assertEqual(len(directory.waiting), LOOKUPS_AT_ONCE)
        while not answered.called:
            directory.answer_all()
            yield _later()
        status, document = yield answered
        self.assertEqual((status, document["recipients"]), (202, 3000))
        self.assertEqual(directory.most_in_flight, LOOKUPS_AT_ONCE)
        self.assertEqual(len(directory.asked), 3000)
        self.assertEqual(self.stored(), (1, 3000))


