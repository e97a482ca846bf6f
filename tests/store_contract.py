"""The tests every store passes (gateway/store/interface.py, MessageStore), by capability.

Each group is a mixin for the part of the interface it covers.  A test module mixes the
groups its store implements into a `Test...` class, which provides:

    self.store             the store under test, open (set by an autouse fixture)
    self.wait(d)           the result of Deferred `d` (its failure raised)
    self.queue(route=None, priority=0, created_at=T0) -> (message_id, seq)
                           one part waiting on `route`, due from `created_at`
    self.other()           a second store on the same queue, with an owner of its own
                           (another process or node); closed after the test
    self.lease_s           how old another owner's lease must be to be taken back

tests/test_store_contract.py runs every group against the SQLite store;
tests/test_dispatch.py runs the claim group against the dispatcher's FakeStore, so that
the stand-in cannot drift from the real thing.  A new store (PostgreSQL) runs them all.
"""

import inspect

import pytest
from twisted.internet import defer

from gateway.model import InboxEntry, NewBroadcast, NewMessage, PartOutcome, SentMatch
from gateway.store.interface import (
    DuplicateIdempotencyKey, IdempotencyMismatch, MessageStore, StoreClosed)

T0 = 1_700_000_000.0


def new_message(store, route=None, priority=0, created_at=T0, parts=1, agency="tax",
                **overrides):
    fields = dict(id=store.new_message_id(), agency=agency, sender="40401234",
                  recipient="989121234567", text="salam", priority=priority,
                  reference="ref-1", validity_s=86400, receipt=True, data_coding=0,
                  esm_class=0x40 if parts > 1 else 0,
                  parts=[f"part {n}".encode() for n in range(1, parts + 1)],
                  created_at=created_at, route=route)
    fields.update(overrides)
    return NewMessage(**fields)


def interface_methods():
    return sorted(name for name, value in vars(MessageStore).items()
                  if inspect.isfunction(value) and not name.startswith("_"))


def ids(parts):
    return [(p.message_id, p.seq) for p in parts]


def signatures_match(store, names):
    """Each of `names` is a method of `store` taking the interface's parameters."""
    for name in names:
        wanted = inspect.signature(getattr(MessageStore, name))
        given = inspect.signature(getattr(type(store), name))
        assert list(given.parameters) == list(wanted.parameters), (name, given, wanted)


class ClaimContract:
    """claim, record, queued_routes: what the dispatcher asks of a store."""

    CLAIM_METHODS = ("claim", "renew_leases", "record", "queued_routes")

    def test_claim_methods_take_the_interfaces_arguments(self):
        signatures_match(self.store, self.CLAIM_METHODS)

    def test_claim_answers_a_deferred_even_for_nothing(self):
        d = self.store.claim(0, T0)
        assert isinstance(d, defer.Deferred)
        assert self.wait(d) == []
        assert self.wait(self.store.claim(10, T0)) == []

    def test_claim_takes_the_highest_priority_first_then_the_oldest(self):
        normal_old = self.queue(priority=0, created_at=T0 - 30)
        normal_new = self.queue(priority=0, created_at=T0 - 10)
        emergency = self.queue(priority=2, created_at=T0 - 5)
        high = self.queue(priority=1, created_at=T0 - 1)
        claimed = self.wait(self.store.claim(10, T0))
        assert ids(claimed) == [emergency, high, normal_old, normal_new]

    def test_claim_takes_at_most_its_limit_and_never_a_part_twice(self):
        queued = [self.queue(created_at=T0 - 10 + n) for n in range(5)]
        first = self.wait(self.store.claim(3, T0))
        second = self.wait(self.store.claim(3, T0))
        assert ids(first) == queued[:3] and ids(second) == queued[3:]
        assert self.wait(self.store.claim(3, T0)) == []

    def test_claim_takes_only_its_route_none_being_parts_without_one(self):
        mci = self.queue(route="mci")
        irancell = self.queue(route="irancell")
        without = self.queue(route=None)
        assert ids(self.wait(self.store.claim(10, T0, route="irancell"))) == [irancell]
        assert ids(self.wait(self.store.claim(10, T0, route=None))) == [without]
        assert ids(self.wait(self.store.claim(10, T0, route="mci"))) == [mci]

    def test_claim_leaves_parts_that_are_not_due_yet(self):
        later = self.queue(created_at=T0 + 60)
        assert self.wait(self.store.claim(10, T0)) == []
        assert ids(self.wait(self.store.claim(10, T0 + 60))) == [later]

    def test_queued_routes_names_the_routes_of_waiting_parts_only(self):
        assert self.wait(self.store.queued_routes()) == set()
        self.queue(route="mci")
        self.queue(route=None)
        self.queue(route="irancell")
        assert self.wait(self.store.claim(1, T0, route="irancell"))
        assert self.wait(self.store.queued_routes()) == {"mci", None}

    def test_a_requeued_part_comes_back_when_due_with_its_counts(self):
        part = self.queue()
        [claimed] = self.wait(self.store.claim(1, T0))
        changed = self.wait(self.store.record([PartOutcome(
            *part, "requeue", operator="mci", error="unknown_outcome: ResponseTimeout",
            not_before=T0 + 2, unknown=True)]))
        assert changed == 1
        assert self.wait(self.store.claim(1, T0 + 1)) == []
        [again] = self.wait(self.store.claim(1, T0 + 2))
        assert (again.message_id, again.seq) == part
        assert (again.attempts, again.unknowns) == (claimed.attempts + 1, claimed.unknowns + 1)

        self.wait(self.store.record([PartOutcome(*part, "requeue", not_before=T0 + 2,
                                                 count_attempt=False)]))
        [third] = self.wait(self.store.claim(1, T0 + 2))
        assert (third.attempts, third.unknowns) == (again.attempts, again.unknowns)

    def test_a_requeued_part_keeps_its_route(self):
        part = self.queue(route="irancell")
        self.wait(self.store.claim(1, T0, route="irancell"))
        self.wait(self.store.record([PartOutcome(*part, "requeue", not_before=T0,
                                                 count_attempt=False)]))
        assert self.wait(self.store.queued_routes()) == {"irancell"}
        assert self.wait(self.store.claim(1, T0, route="mci")) == []
        assert ids(self.wait(self.store.claim(1, T0, route="irancell"))) == [part]

    def test_a_part_recorded_as_sent_or_ended_is_not_claimed_again(self):
        sent, failed, expired = self.queue(), self.queue(), self.queue()
        self.wait(self.store.claim(3, T0))
        changed = self.wait(self.store.record([
            PartOutcome(*sent, "submitted", operator="mci", smsc_id="1A"),
            PartOutcome(*failed, "failed", operator="mci", error="ESME_RINVDSTADR"),
            PartOutcome(*expired, "expired", error="validity period passed")]))
        assert changed == 3
        assert self.wait(self.store.claim(10, T0 + 3600)) == []
        assert self.wait(self.store.queued_routes()) == set()

    def test_an_outcome_counts_only_while_this_store_holds_the_parts_lease(self):
        part = self.queue()
        self.wait(self.store.claim(1, T0))
        other = self.other()                     # this store stopped answering...
        [taken] = self.wait(other.claim(1, T0 + self.lease_s + 1))
        assert (taken.message_id, taken.seq) == part and taken.unknowns == 1
        # ...and comes back with the answer to its send: the part is the other's now.
        late = PartOutcome(*part, "submitted", operator="mci", smsc_id="1A")
        assert self.wait(self.store.record([late])) == 0
        assert self.wait(other.record([PartOutcome(*part, "requeue", not_before=T0,
                                                   count_attempt=False)])) == 1
        [again] = self.wait(other.claim(1, T0 + self.lease_s + 2))
        assert (again.message_id, again.seq) == part

    def test_a_renewed_lease_is_not_taken_back(self):
        mine = self.queue()
        self.wait(self.store.claim(1, T0))
        other = self.other()
        theirs = self.queue()
        assert ids(self.wait(other.claim(1, T0))) == [theirs]
        assert self.wait(self.store.renew_leases(T0 + 200)) == 1    # its own part only
        assert self.wait(other.claim(1, T0 + self.lease_s + 1)) == []
        [taken] = self.wait(other.claim(1, T0 + 200 + self.lease_s + 1))
        assert (taken.message_id, taken.seq) == mine
        assert self.wait(self.store.renew_leases(T0 + 600)) == 0    # none left to it
        assert self.wait(self.store.record([PartOutcome(*mine, "failed",
                                                        error="x")])) == 0


class AcceptContract:
    """accept, new_message_id and the reads of what was accepted: the accept path's
    and the HTTP API's side of the store."""

    def test_accepted_messages_are_read_back_as_the_contract_shows_them(self):
        m = new_message(self.store, parts=2, priority=1)
        assert self.wait(self.store.accept([m])) == [m.id]
        view = self.wait(self.store.get_message(m.id))
        assert {key: view[key] for key in ("id", "from", "to", "status", "parts",
                                           "priority", "reference", "agency")} == {
            "id": m.id, "from": "40401234", "to": "989121234567", "status": "queued",
            "parts": 2, "priority": "high", "reference": "ref-1", "agency": "tax"}
        assert view["created_at"].endswith("Z") and view["attempts"] == 0
        assert self.wait(self.store.get_message("no-such-id")) is None

    def test_a_key_reused_for_another_request_is_a_mismatch_not_a_replay(self):
        first = new_message(self.store)
        self.wait(self.store.accept([first], idempotency=("tax", "k-h", '{"first":1}',
                                                          "hash-a")))
        assert self.wait(self.store.idempotent_response("tax", "k-h", T0, "hash-a")) \
            == '{"first":1}'
        with pytest.raises(IdempotencyMismatch):
            self.wait(self.store.idempotent_response("tax", "k-h", T0, "hash-b"))
        # A caller without a hash cannot tell: the first response, as before.
        assert self.wait(self.store.idempotent_response("tax", "k-h", T0)) == '{"first":1}'
        other = new_message(self.store)
        with pytest.raises(IdempotencyMismatch):
            self.wait(self.store.accept([other], idempotency=("tax", "k-h", "{}", "hash-b")))
        with pytest.raises(DuplicateIdempotencyKey):
            self.wait(self.store.accept([other], idempotency=("tax", "k-h", "{}", "hash-a")))
        assert self.wait(self.store.get_message(other.id)) is None

    def test_message_ids_are_unique_url_safe_strings(self):
        made = {self.store.new_message_id() for _ in range(100)}
        assert len(made) == 100
        assert all(i.replace("-", "").replace("_", "").isalnum() for i in made)

    def test_an_idempotency_key_is_answered_with_its_first_response(self):
        first = new_message(self.store)
        assert self.wait(self.store.idempotent_response("tax", "k-1", T0)) is None
        self.wait(self.store.accept([first], idempotency=("tax", "k-1", '{"first":1}')))
        assert self.wait(self.store.idempotent_response("tax", "k-1", T0)) == '{"first":1}'
        assert self.wait(self.store.idempotent_response("health", "k-1", T0)) is None
        again = new_message(self.store)
        d = self.store.accept([again], idempotency=("tax", "k-1", '{"again":1}'))
        with pytest.raises(DuplicateIdempotencyKey) as refused:
            self.wait(d)
        assert refused.value.response == '{"first":1}'
        assert self.wait(self.store.get_message(again.id)) is None

    def test_parts_used_and_has_queued_follow_what_was_accepted(self):
        assert self.wait(self.store.has_queued()) is False
        assert self.wait(self.store.parts_used("tax", T0 - 100)) == 0
        self.wait(self.store.accept([new_message(self.store, parts=3, created_at=T0 - 50),
                                     new_message(self.store, parts=2, created_at=T0 - 10),
                                     new_message(self.store, agency="health")]))
        assert self.wait(self.store.has_queued()) is True
        assert self.wait(self.store.parts_used("tax", T0 - 100)) == 5
        assert self.wait(self.store.parts_used("tax", T0 - 20)) == 2


class ReceiptContract:
    """apply_receipts, learned_receipt_ids, store_inbound: the inbound router's side."""

    def test_a_receipt_ends_the_part_its_operator_carried(self):
        part = self.queue(route="mci")
        self.wait(self.store.claim(1, T0, route="mci"))
        self.wait(self.store.record([PartOutcome(*part, "submitted", operator="mci",
                                                 smsc_id="0a1")]))
        matched = self.wait(self.store.apply_receipts(
            [("irancell", "A1", "delivered", None), ("mci", "A1", "delivered", None)],
            {"mci": "raw", "irancell": "raw"}))
        assert matched == [False, True]
        assert self.wait(self.store.get_message(part[0]))["status"] == "delivered"
        assert self.store.learned_receipt_ids("mci") is None       # configured, not learned

    def test_a_raw_inbound_pdu_is_kept(self):
        row = self.wait(self.store.store_inbound(
            "mci", {"source_addr": "989121234567", "short_message": b"salam"}, {0x0424: b"x"}))
        assert row is not None


class RecordsContract:
    """audit, purge, expire_unreceipted, expire_unsent: policy's and housekeeping's side."""

    def test_audit_purge_and_expiry_answer_what_they_did(self):
        assert self.wait(self.store.audit("sender_refused", "tax", {"sender": "x"})) is not None
        removed = self.wait(self.store.purge(T0 - 86400, audit_before=T0 + 1))
        assert removed["audit"] == 1 and removed["messages"] == 0
        assert self.wait(self.store.expire_unreceipted(86400.0)) == 0
        assert self.wait(self.store.expire_unsent()) == 0


class AuditContract:
    """audit rows: kept until retention purges them by age; citizens' numbers hashed."""

    def test_the_purge_removes_only_audit_rows_older_than_its_cutoff(self):
        self.wait(self.store.audit("sender_refused", "tax", {"sender": "old"}))
        removed = self.wait(self.store.purge(T0 - 86400, audit_before=self.clock.seconds()
                                             - 3600))
        assert removed["audit"] == 0                       # younger than the cutoff
        removed = self.wait(self.store.purge(T0 - 86400,
                                             audit_before=self.clock.seconds() + 1))
        assert removed["audit"] == 1

    def test_a_number_hashes_to_the_same_salted_value_and_never_shows(self):
        first = self.store.number_hash("989121234567")
        assert first == self.store.number_hash("989121234567")
        assert first != self.store.number_hash("989121234568")
        assert first.startswith("h:") and "1234567" not in first and len(first) == 18


class GaugeContract:
    """queue_summary, status_counts: the cheap reads the metrics refresh every few s."""

    def test_the_queue_summary_counts_queued_parts_and_the_oldest_wait_per_priority(self):
        assert self.wait(self.store.queue_summary(T0)) == {0: (0, 0.0), 1: (0, 0.0),
                                                            2: (0, 0.0)}
        self.queue(priority=0, created_at=T0 - 30)
        self.queue(priority=0, created_at=T0 - 10)
        self.queue(priority=2, created_at=T0 - 5)
        summary = self.wait(self.store.queue_summary(T0))
        assert summary[0] == (2, 30.0) and summary[2] == (1, 5.0)
        assert summary[1] == (0, 0.0)
        # Claimed parts still wait for an SMSC; once recorded submitted they are gone.
        claimed = self.wait(self.store.claim(2, T0))
        assert self.wait(self.store.queue_summary(T0)) == summary
        self.wait(self.store.record([PartOutcome(p.message_id, p.seq, "submitted",
                                                 operator="mci", smsc_id=f"id{n}")
                                     for n, p in enumerate(claimed)]))
        assert self.wait(self.store.queue_summary(T0))[2] == (0, 0.0)

    def test_status_counts_follow_messages_through_their_statuses(self):
        assert self.wait(self.store.status_counts()) == {}
        message_id, seq = self.queue()
        [part] = self.wait(self.store.claim(10, T0 + 1))
        self.wait(self.store.record([PartOutcome(message_id, seq, "submitted",
                                                 operator="mci", smsc_id="77")]))
        assert self.wait(self.store.status_counts()) == {("tax", "submitted"): 1}
        assert self.wait(self.store.apply_receipts([("mci", "77", "delivered", None)],
                                                   {"mci": "raw"})) == [True]
        assert self.wait(self.store.status_counts()) == {("tax", "submitted"): 1,
                                                          ("tax", "delivered"): 1}


def reply(citizen="989121234567", agency="tax", number="40401234", text="salam",
          received_at=T0 + 60, **overrides):
    fields = dict(agency=agency, number=number, citizen=citizen, text=text, channel="sms",
                  received_at=received_at, operator="mci")
    fields.update(overrides)
    return InboxEntry(**fields)


class InboxContract:
    """file_inbox, list_inbox: the agencies' inboxes and the unrouted box."""

    def test_a_reply_is_filed_in_its_agencys_inbox_with_what_it_answers(self):
        older = new_message(self.store, created_at=T0 - 10)
        latest = new_message(self.store, created_at=T0)
        other_number = new_message(self.store, created_at=T0 + 1, sender="40409999")
        other_citizen = new_message(self.store, created_at=T0 + 2, recipient="989350000000")
        self.wait(self.store.accept([older, latest, other_number, other_citizen]))
        [(filed, new)] = self.wait(self.store.file_inbox([reply(text="سلام\u200cها")]))
        assert new and filed.in_reply_to == latest.id and filed.text == "سلام\u200cها"
        assert filed.agency == "tax" and filed.channel == "sms" and not filed.partial
        [(unanswered, _)] = self.wait(self.store.file_inbox([reply(citizen="989390000001")]))
        assert unanswered.in_reply_to is None
        assert [m.id for m in self.wait(self.store.list_inbox("tax"))] == [filed.id,
                                                                          unanswered.id]

    def test_an_inbox_pages_by_cursor_and_shows_only_its_agency(self):
        self.wait(self.store.file_inbox([reply(agency="tax", text=f"t{n}") for n in range(5)]
                                        + [reply(agency="post", number="40405555")]))
        first = self.wait(self.store.list_inbox("tax", 0, 3))
        rest = self.wait(self.store.list_inbox("tax", first[-1].seq, 3))
        assert [m.text for m in first + rest] == [f"t{n}" for n in range(5)]
        assert [m.agency for m in self.wait(self.store.list_inbox("post"))] == ["post"]

    def test_unrouted_messages_have_their_own_box(self):
        self.wait(self.store.file_inbox([reply(agency=None, number="40407777")]))
        assert self.wait(self.store.list_inbox("tax")) == []
        [kept] = self.wait(self.store.list_inbox(None))
        assert kept.number == "40407777" and kept.agency is None

    def test_a_source_key_is_filed_once(self):
        [(first, new)] = self.wait(self.store.file_inbox([reply(source_key="mci:abc")]))
        [(again, new_again)] = self.wait(self.store.file_inbox(
            [reply(source_key="mci:abc", text="other")]))
        assert new and not new_again and again.id == first.id and again.text == "salam"
        assert len(self.wait(self.store.list_inbox("tax"))) == 1


CITIZEN = "989121234567"


class CitizenMessagesContract:
    """citizen_messages, citizen_message: what the national inbox (partner apps) reads;
    and an inbox entry that names the message it answers."""

    def test_a_citizens_messages_from_every_agency_come_newest_first_and_no_one_elses(self):
        tax = new_message(self.store, created_at=T0, text="from tax")
        post = new_message(self.store, created_at=T0 + 5, agency="post", text="from post")
        other = new_message(self.store, created_at=T0 + 9, recipient="989350000000")
        self.wait(self.store.accept([tax, post, other]))
        page = self.wait(self.store.citizen_messages(CITIZEN))
        assert [(m.id, m.agency, m.text, m.status) for m in page] == [
            (post.id, "post", "from post", "queued"), (tax.id, "tax", "from tax", "queued")]
        assert page[0].sender == "40401234" and page[0].created_at == T0 + 5
        assert self.wait(self.store.citizen_message(CITIZEN, other.id)) is None
        assert self.wait(self.store.citizen_message(CITIZEN, tax.id)) == page[1]

    def test_pages_follow_a_cursor_that_new_messages_do_not_shift(self):
        # Two share an instant: the id breaks the tie, so none is skipped or repeated.
        messages = [new_message(self.store, created_at=T0 + n // 2) for n in range(7)]
        self.wait(self.store.accept(messages))
        first = self.wait(self.store.citizen_messages(CITIZEN, None, 3))
        self.wait(self.store.accept([new_message(self.store, created_at=T0 + 60)]))
        cursor = (first[-1].created_at, first[-1].id)
        rest = self.wait(self.store.citizen_messages(CITIZEN, cursor, 10))
        newest_first = sorted(messages, key=lambda m: (m.created_at, m.id), reverse=True)
        assert [m.id for m in first + rest] == [m.id for m in newest_first]

    def test_a_broadcast_shows_its_text_to_each_recipient_once_fed(self):
        b = NewBroadcast(id=self.store.new_message_id(), agency="post", sender="40405555",
                         text="to everyone", priority=0, validity_s=86400, receipt=True,
                         data_coding=0, esm_class=0, parts=[b"to everyone"],
                         created_at=T0, recipients=2, invalid=0)
        self.wait(self.store.add_broadcast_recipients(
            b.id, [[int(CITIZEN), "mci"], [989350000000, "mci"]]))
        self.wait(self.store.open_broadcast(b))
        assert self.wait(self.store.citizen_messages(CITIZEN)) == []     # not fed yet
        self.wait(self.store.feed_broadcast(b.id, 10, T0))
        [shown] = self.wait(self.store.citizen_messages(CITIZEN))
        assert (shown.agency, shown.sender, shown.text) == ("post", "40405555", "to everyone")

    def test_messages_never_sent_and_hidden_agencies_are_not_shown(self):
        opted = new_message(self.store, error="opted_out")
        platform = new_message(self.store, agency="@4040")
        shown = new_message(self.store)
        self.wait(self.store.accept([opted, platform, shown]))
        page = self.wait(self.store.citizen_messages(CITIZEN, None, 100, ("@4040",)))
        assert [m.id for m in page] == [shown.id]
        assert self.wait(self.store.citizen_message(CITIZEN, platform.id, ("@4040",))) is None

    def test_an_entry_naming_what_it_answers_keeps_it(self):
        answered = new_message(self.store, created_at=T0)
        latest = new_message(self.store, created_at=T0 + 1)
        self.wait(self.store.accept([answered, latest]))
        [(filed, _)] = self.wait(self.store.file_inbox(
            [reply(channel="app", in_reply_to=answered.id)]))
        assert filed.in_reply_to == answered.id and filed.channel == "app"


class FingerprintContract:
    """find_sent, fingerprint_key, and the fingerprints accept and purge keep: the 4040
    check's side (gateway/authenticity)."""

    def test_a_fingerprint_sent_with_a_message_is_found_for_its_recipient_then_others(self):
        key = self.store.fingerprint_key()
        assert isinstance(key, bytes) and len(key) >= 16
        digest, other = b"d" * 16, b"o" * 16
        self.wait(self.store.accept([
            new_message(self.store, recipient="989121234567", fingerprint=digest),
            new_message(self.store, recipient="989121234567", fingerprint=digest,
                        created_at=T0 + 5),
            new_message(self.store, recipient="989350000000", fingerprint=digest,
                        agency="post", created_at=T0 + 9),
            new_message(self.store, recipient="989390000000")]))
        find = self.store.find_sent
        assert self.wait(find([other, digest], "989121234567", T0 - 1)) == \
            SentMatch("tax", T0 + 5, True)
        elsewhere = self.wait(find([digest], "989390000000", T0 - 1))
        assert elsewhere.to_citizen is False and elsewhere.agency in ("tax", "post")
        assert self.wait(find([digest], "989121234567", T0 + 10)) is None
        assert self.wait(find([other], "989121234567", 0)) is None
        assert self.wait(find([], "989121234567", 0)) is None

    def test_a_refused_accept_keeps_no_fingerprint_and_purge_ages_them_out(self):
        digest = b"d" * 16
        self.wait(self.store.accept([new_message(self.store, fingerprint=digest,
                                                 created_at=T0 - 40 * 86400)],
                                    idempotency=("tax", "k-9", "{}")))
        with pytest.raises(DuplicateIdempotencyKey):
            self.wait(self.store.accept([new_message(self.store, fingerprint=digest,
                                                     recipient="989350000000")],
                                        idempotency=("tax", "k-9", "{}")))
        assert self.wait(self.store.find_sent([digest], "989350000000", 0)).to_citizen \
            is False
        assert self.wait(self.store.purge(0))["messages"] == 0
        removed = self.wait(self.store.purge(0, fingerprints_before=T0 - 30 * 86400))
        assert removed["fingerprints"] == 1
        assert self.wait(self.store.find_sent([digest], "989121234567", 0)) is None


def mo_part(seq, total=3, key="mci|989121234567|40401234|3|u7", body=None, at=T0 + 60):
    from gateway.model import MoPart
    return MoPart(key, seq, total, "mci", "989121234567", "40401234", 8,
                  body if body is not None else f"part{seq}".encode("utf-16-be"), at)


class CorrespondenceContract:
    """keep_mo_part, file_mo, stale_mo_sets, pushes, opt-outs (migration 10)."""

    def test_parts_make_a_set_once_each_and_filing_settles_it(self):
        keep = self.store.keep_mo_part
        assert self.wait(keep(mo_part(3), T0, 8))[:2] == (True, None)
        assert self.wait(keep(mo_part(3), T0, 8))[0] is False          # redelivered
        assert self.wait(keep(mo_part(1), T0, 8))[1] is None
        new, whole, overflow = self.wait(keep(mo_part(2), T0, 8))
        assert new and whole.complete and [p.seq for p in whole.parts] == [1, 2, 3]
        assert overflow == []
        [(filed, _)] = self.wait(self.store.file_mo(
            [reply(source_key=whole.set_id)], [whole.set_id]))
        assert filed.text == "salam"
        # Settled: a late copy of a part is a redelivery, and nothing is stale.
        assert self.wait(keep(mo_part(2), T0, 8))[0] is False
        assert self.wait(self.store.stale_mo_sets(T0 + 10_000, T0 + 10_000, 10, 1000)) == []
        assert self.wait(self.store.forget_mo_parts(T0 + 10_000)) == 3

    def test_incomplete_sets_go_stale_and_a_citizen_overflows(self):
        keep = self.store.keep_mo_part
        self.wait(keep(mo_part(1, key="k1"), T0, 2))
        self.wait(keep(mo_part(1, key="k2", at=T0 + 61), T0, 2))
        _, _, overflow = self.wait(keep(mo_part(1, key="k3", at=T0 + 62), T0, 2))
        assert [s.set_id.split("@")[0] for s in overflow] == ["k1"]
        stale = self.wait(self.store.stale_mo_sets(T0 + 61.5, T0, 10, 1000))
        assert [s.set_id.split("@")[0] for s in stale] == ["k1", "k2"][:len(stale)]
        assert all(not s.complete for s in stale)

    def test_pushes_are_queued_once_and_their_state_kept(self):
        [(filed, _)] = self.wait(self.store.file_inbox([reply()]))
        assert self.wait(self.store.unqueued_inbox(["tax"], T0, 10)) == [(filed.seq, "tax")]
        assert self.wait(self.store.queue_pushes([(filed.seq, "tax")])) == 1
        assert self.wait(self.store.queue_pushes([(filed.seq, "tax")])) == 0
        assert self.wait(self.store.unqueued_inbox(["tax"], T0, 10)) == []
        [(seq, attempts, _)] = self.wait(self.store.due_pushes("tax", T0 + 10**9, 10))
        assert (seq, attempts) == (filed.seq, 0)
        self.wait(self.store.push_done(seq, "pending", 1, T0 + 10**10, "HTTP 500"))
        assert self.wait(self.store.due_pushes("tax", T0 + 10**9, 10)) == []
        assert self.wait(self.store.push_counts()) == {("tax", "pending"): 1}
        assert self.wait(self.store.inbox_by_seq([seq]))[seq].id == filed.id

    def test_opt_outs(self):
        assert self.wait(self.store.opt_out("tax", "989121234567")) is True
        assert self.wait(self.store.opt_out("tax", "989121234567")) is False
        found = self.wait(self.store.opted_out("tax", ["989121234567", "989350000000"]))
        assert found == {"989121234567"}
        assert self.wait(self.store.opted_out("post", ["989121234567"])) == set()


class LifecycleContract:
    """open, close, writable, and the interface as a whole."""

    def test_it_is_a_message_store_with_the_interfaces_signatures(self):
        assert isinstance(self.store, MessageStore)
        signatures_match(self.store, interface_methods())

    def test_it_is_writable_while_open_and_refuses_writes_once_closed(self):
        assert self.wait(self.store.writable()) is True
        self.wait(self.store.close())
        assert self.wait(self.store.writable()) is False
        with pytest.raises(StoreClosed):
            self.wait(self.store.accept([new_message(self.store)]))
        with pytest.raises(StoreClosed):
            self.wait(self.store.claim(1, T0))
