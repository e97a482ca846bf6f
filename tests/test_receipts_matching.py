"""Which part a delivery receipt reaches: one id base per operator, never a guess.

A receipt may overtake its part's submit_sm_resp.  It must then wait for exactly its
own id, under the id base the operator's SMSC uses (`receipt_ids`), and never be taken
for an older part whose id happens to be its translation into the other base (`49`
decimal is `31` hex), nor for another operator's part with the same id.
"""

import logging
import sqlite3

import pytest
from conftest import answered
from threaded_clock import T0
from store_fixtures import clock, db_path, ok, store, store_before  # noqa: F401 (fixtures)

from gateway.store import NewMessage, PartOutcome, Store
from gateway.store import receipts as store_receipts




def accepted(store, clock, count=1, validity_s=86400, route="mci"):
    """`count` one-part messages, accepted and claimed (they are 'sending')."""
    messages = [NewMessage(
        id=store.new_message_id(), agency="tax", sender="40401234",
        recipient=f"98912{n:07d}", text="salam", priority=0, reference=None,
        validity_s=validity_s, receipt=True, data_coding=0, esm_class=0,
        parts=[b"salam"], created_at=clock.seconds(), route=route) for n in range(count)]
    ok(clock, store.accept(messages))
    ok(clock, store.claim(count, clock.seconds(), route=route))
    return messages


def submitted(store, clock, message, smsc_id, operator="mci"):
    ok(clock, store.record([PartOutcome(message.id, 1, "submitted", operator=operator,
                                        smsc_id=smsc_id)]))


def receipt(store, clock, operator, smsc_id, state="delivered", mode="raw", error=None):
    return ok(clock, store.apply_receipts([(operator, smsc_id, state, error)],
                                          {operator: mode}))[0]


def status(store, message):
    return answered(store.get_message(message.id))["status"]


# -- the misattribution of issue 6, item 1 -------------------------------------------

@pytest.mark.parametrize("mode, older_id, own_id", [
    ("raw", "31", "49"),    # same ids both ways; "49" read as decimal would be hex "31"
    ("dec", "49", "31"),    # resp hex, receipt decimal: "49" taken raw would be "49"
    ("hex", "49", "73"),    # resp decimal, receipt hex: "49" taken raw would be "49"
])
def test_an_early_receipt_waits_for_its_own_id_instead_of_taking_an_older_part(
        store, clock, mode, older_id, own_id):
    older, own = accepted(store, clock, 2)
    submitted(store, clock, older, older_id)
    # The receipt for `own` commits before own's submit outcome; its translation into
    # another base is the older part's id.
    assert receipt(store, clock, "mci", "49", mode=mode) is False
    assert status(store, older) == "submitted"
    assert status(store, own) == "queued"

    submitted(store, clock, own, own_id)
    assert status(store, own) == "delivered"
    assert status(store, older) == "submitted"


def test_hex_mode_reads_the_receipt_id_as_hex(store, clock):
    (m,) = accepted(store, clock)
    submitted(store, clock, m, "73")            # decimal resp id
    assert receipt(store, clock, "mci", "73", mode="hex") is False     # 0x73 = 115
    assert receipt(store, clock, "mci", "0049", mode="hex") is True
    assert status(store, m) == "delivered"


def test_a_receipt_not_readable_in_the_operators_base_matches_nothing(store, clock, caplog):
    (m,) = accepted(store, clock)
    submitted(store, clock, m, "1A2B")
    assert receipt(store, clock, "mci", "1A2B", mode="dec") is False   # not decimal
    assert receipt(store, clock, "mci", "1A2C", mode="dec") is False
    assert caplog.text.count("cannot be read in its receipt_ids base") == 1
    assert receipt(store, clock, "mci", "6699", mode="dec") is True
    assert status(store, m) == "delivered"


def test_a_receipt_never_reaches_a_part_already_final(store, clock):
    # The SMSC reused id 7 (restarted, counter reset): the early receipt of the new
    # part must not be swallowed by the old, delivered one.
    old, new = accepted(store, clock, 2)
    submitted(store, clock, old, "7")
    assert receipt(store, clock, "mci", "7") is True
    receipt(store, clock, "mci", "7", state="failed", error="UNDELIV")
    assert status(store, old) == "delivered"
    submitted(store, clock, new, "7")
    assert status(store, new) == "failed"
    assert status(store, old) == "delivered"


def test_a_receipt_never_reaches_a_part_submitted_long_before_it(store, clock):
    (m,) = accepted(store, clock, validity_s=3600)
    submitted(store, clock, m, "88")
    clock.advance(3600 + store_receipts.RECEIPT_LAG_S + 1)
    assert receipt(store, clock, "mci", "88") is False
    assert status(store, m) == "submitted"


def test_a_pending_receipt_does_not_reach_a_part_submitted_long_after_it(store, clock):
    (m,) = accepted(store, clock)
    assert receipt(store, clock, "mci", "99") is False
    clock.advance(store_receipts.RECEIPT_LEAD_S + 1)
    submitted(store, clock, m, "99")
    assert status(store, m) == "submitted"


# -- issue 6, item 2: receipts are scoped to the operator ------------------------------

def test_another_operators_receipt_with_the_same_id_changes_nothing(store, clock):
    (mci,) = accepted(store, clock, route="mci")
    (irancell,) = accepted(store, clock, route="irancell")
    submitted(store, clock, mci, "5000", operator="mci")
    # irancell's SMSC hands out the same ids; its receipt overtakes its part's outcome.
    assert receipt(store, clock, "irancell", "5000", state="failed", error="x") is False
    assert status(store, mci) == "submitted"
    submitted(store, clock, irancell, "5000", operator="irancell")
    assert status(store, irancell) == "failed"
    assert status(store, mci) == "submitted"
    assert receipt(store, clock, "mci", "5000") is True
    assert status(store, mci) == "delivered"


def test_a_receipt_from_an_operator_that_carried_nothing_changes_nothing(store, clock):
    (m,) = accepted(store, clock)
    submitted(store, clock, m, "42", operator="mci")
    assert receipt(store, clock, "hostile", "42", state="failed", error="x") is False
    assert status(store, m) == "submitted"


# -- auto: the base learned from unambiguous matches, then fixed ---------------------

def feed(store, clock, count, resp_of, receipt_of, operator="mci", start=1000,
         mode="auto"):
    """`count` parts submitted with ids resp_of(start...), then their receipts
    (receipt_of(start...)), one batch each; returns the messages."""
    messages = accepted(store, clock, count, route=operator)
    ok(clock, store.record([
        PartOutcome(m.id, 1, "submitted", operator=operator, smsc_id=resp_of(start + i))
        for i, m in enumerate(messages)]))
    ok(clock, store.apply_receipts(
        [(operator, receipt_of(start + i), "delivered", None) for i in range(count)],
        {operator: mode}))
    return messages


def judge(store, clock, *operators):
    """Once the kept receipts have come of age, the round the inbound router runs."""
    clock.advance(store_receipts.MATURE_S + 1)
    operators = operators or ("mci",)
    ok(clock, store.apply_receipts([], dict.fromkeys(operators, "auto"), learn=operators))


def learned(db_path, operator):
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?",
                           (f"receipt_ids:{operator}",)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("mode, resp_of, receipt_of", [
    ("raw", str, str),          # decimal ids: raw, dec and hex all read them
    ("dec", lambda n: f"{n:X}", str),
    ("hex", str, lambda n: f"{n:x}"),
])
def test_auto_learns_the_base_and_then_applies_the_waiting_receipts(
        store, clock, db_path, caplog, mode, resp_of, receipt_of):
    caplog.set_level(logging.INFO, "payam.store")
    first = feed(store, clock, store_receipts.LEARN_VOTES - 1, resp_of, receipt_of)
    judge(store, clock)
    # Not learned yet: nothing is applied on a single interpretation's say-so.
    assert {status(store, m) for m in first} == {"submitted"}
    assert learned(db_path, "mci") is None

    rest = feed(store, clock, 1, resp_of, receipt_of, start=2000)
    assert status(store, rest[0]) == "submitted"      # too young to be evidence
    judge(store, clock)
    assert learned(db_path, "mci") == mode
    assert {status(store, m) for m in first + rest} == {"delivered"}
    assert caplog.text.count("receipt ids learned") == 1

    # From now on a receipt is applied at once under the learned base.
    (later,) = feed(store, clock, 1, resp_of, receipt_of, start=3000)
    assert status(store, later) == "delivered"
    assert caplog.text.count("receipt ids learned") == 1


def test_auto_never_applies_an_early_receipt_to_an_older_parts_translation(
        store, clock, db_path):
    older, own = accepted(store, clock, 2)
    submitted(store, clock, older, "31")
    assert receipt(store, clock, "mci", "49", mode="auto") is False
    assert status(store, older) == "submitted"
    submitted(store, clock, own, "49")
    assert status(store, own) == "submitted"          # waits for the base to be known
    # Ids that only read one way teach "raw"; then "49" goes to its own part.
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"A{n}", lambda n: f"A{n}")
    judge(store, clock)
    assert learned(db_path, "mci") == "raw"
    assert status(store, own) == "delivered"
    assert status(store, older) == "submitted"


def test_auto_takes_no_evidence_from_receipts_that_overtook_their_part(
        store, clock, db_path):
    # Each receipt n arrives while only an older part with n's hex form is filed: at
    # that moment "dec" looks like the only reading.  Judged once of age, its own part
    # (raw n) is filed too: two readings, no evidence, nothing learned, nothing moved.
    pairs = []
    for n in range(200, 200 + 2 * store_receipts.LEARN_VOTES):
        older, own = accepted(store, clock, 2)
        submitted(store, clock, older, f"{n:X}")
        assert receipt(store, clock, "mci", str(n), mode="auto") is False
        submitted(store, clock, own, str(n))
        pairs.append((older, own))
    judge(store, clock)
    assert learned(db_path, "mci") is None
    assert {status(store, m) for pair in pairs for m in pair} == {"submitted"}


def test_auto_does_not_learn_from_receipts_matching_under_two_bases(store, clock, db_path):
    # "10" is a part's id raw and also hex for 16, another part's id: no evidence.
    parts = accepted(store, clock, 2)
    submitted(store, clock, parts[0], "10")
    submitted(store, clock, parts[1], "16")
    for _ in range(store_receipts.LEARN_VOTES + 5):
        assert receipt(store, clock, "mci", "10", mode="auto") is False
    judge(store, clock)
    assert learned(db_path, "mci") is None
    assert {status(store, m) for m in parts} == {"submitted"}


# -- auto: receipts that can be read one way only are applied at once ---------------
# A receipt id that is not a decimal number cannot be read `dec`; once it is also a
# submit_sm_resp id of its operator, that operator's resp ids are not decimal, so no
# `hex` receipt stands for it either: raw is its only reading, nothing to learn first.

@pytest.mark.parametrize("resp_id, receipt_id", [
    ("1A233E23166000", "1a233e23166000"),   # the built-in simulator's hex ids
    ("MSG-0017", "msg-0017"),                  # not even hex: raw by its syntax alone
    ("9" * 70, "9" * 70),                      # too long to be translated
])
def test_auto_applies_a_receipt_readable_one_way_only_at_once(
        store, clock, db_path, resp_id, receipt_id):
    (m,) = accepted(store, clock)
    submitted(store, clock, m, resp_id)
    assert receipt(store, clock, "mci", receipt_id, mode="auto") is True
    assert status(store, m) == "delivered"          # no clock advance, no learning
    assert learned(db_path, "mci") is None          # one vote only


def test_auto_keeps_an_early_receipt_readable_one_way_and_its_outcome_applies_it(
        store, clock):
    (m,) = accepted(store, clock)
    # The operator's very first receipt overtakes its submit_sm_resp: nothing of its
    # ids is known yet, and nothing is met.
    assert receipt(store, clock, "mci", "1A233E23166001", mode="auto") is False
    assert status(store, m) == "queued"
    submitted(store, clock, m, "1A233E23166001")
    assert status(store, m) == "delivered"


def test_auto_never_reads_an_early_letter_receipt_as_hex_for_an_older_part(store, clock):
    # 0x1A2B = 6699: read as hex, the early receipt would name the older part.
    older, own = accepted(store, clock, 2)
    submitted(store, clock, older, "6699")
    assert receipt(store, clock, "mci", "1A2B", mode="auto") is False
    assert status(store, older) == "submitted"
    submitted(store, clock, own, "1A2B")
    assert status(store, own) == "delivered"
    clock.advance(store_receipts.MATURE_S + 1)
    judge(store, clock)
    assert status(store, older) == "submitted"


def test_auto_still_waits_for_a_receipt_with_two_readings(store, clock):
    # "123" is raw 123, hex 0x7B and, read as hex, 291: any may be meant.
    (m,) = accepted(store, clock)
    submitted(store, clock, m, "123")
    assert receipt(store, clock, "mci", "123", mode="auto") is False
    assert status(store, m) == "submitted"
    # An early decimal receipt of a letter-id operator may be `dec` too: it waits.
    (early,) = accepted(store, clock)
    submitted(store, clock, accepted(store, clock)[0], "ABC")
    assert receipt(store, clock, "mci", "456", mode="auto") is False
    submitted(store, clock, early, "456")
    assert status(store, early) == "submitted"


def test_auto_learns_raw_from_receipts_readable_one_way_without_waiting(
        store, clock, db_path):
    (decimal,) = accepted(store, clock)
    submitted(store, clock, decimal, "1234")
    assert receipt(store, clock, "mci", "1234", mode="auto") is False
    messages = feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"{n:X}A",
                    lambda n: f"{n:x}a")
    assert {status(store, m) for m in messages} == {"delivered"}
    assert learned(db_path, "mci") == "raw"
    # The decimal receipt kept meanwhile is read under the learned base.
    assert status(store, decimal) == "delivered"


def test_an_outcome_applies_a_kept_receipt_only_for_an_auto_operator_still_learning(
        store, clock, db_path):
    # Kept unread by an earlier run while the operator was `auto`; it is configured
    # `dec` now, where "1A2B" cannot be a receipt id.  Until this run has seen its
    # mode (its first receipt), an outcome must not read the kept receipt raw.
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO pending_receipts (key, operator, state, error,"
                     " received_at) VALUES ('1A2B', 'mci', 'failed', 'x', ?)",
                     (clock.seconds(),))
    (m,) = accepted(store, clock)
    submitted(store, clock, m, "1A2B")
    assert status(store, m) == "submitted"
    assert receipt(store, clock, "mci", "77", mode="dec") is False
    assert status(store, m) == "submitted"


def test_the_learned_base_survives_a_restart(db_path, clock):
    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"{n:X}", str)
    judge(store, clock)
    clock.wait(store.close())
    assert learned(db_path, "mci") == "dec"

    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    try:
        (m,) = feed(store, clock, 1, lambda n: f"{n:X}", str, start=5000)
        assert status(store, m) == "delivered"
    finally:
        clock.wait(store.close())


def test_auto_learns_per_operator(store, clock, db_path):
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"{n:X}", str, operator="mci")
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"X{n}", lambda n: f"x{n}",
         operator="irancell")
    judge(store, clock, "mci", "irancell")
    assert (learned(db_path, "mci"), learned(db_path, "irancell")) == ("dec", "raw")


def test_a_configured_base_wins_over_a_learned_one(store, clock, db_path):
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"{n:X}", str)
    judge(store, clock)
    assert learned(db_path, "mci") == "dec"
    (m,) = feed(store, clock, 1, str, str, start=7000, mode="raw")
    assert status(store, m) == "delivered"


def test_the_inbound_router_judges_the_kept_receipts_once_they_are_of_age(
        store, clock, db_path):
    from gateway.inbound import InboundClassifier, receipts as inbound_receipts
    from gateway.smpp import constants as c
    from gateway.smpp.pdu import PDU

    messages = accepted(store, clock, store_receipts.LEARN_VOTES)
    ok(clock, store.record([PartOutcome(m.id, 1, "submitted", operator="mci",
                                        smsc_id=f"{n:X}") for n, m in enumerate(messages, 900)]))
    router = InboundClassifier(store, clock, receipt_ids={"mci": "auto"})
    answers = []
    for n in range(900, 900 + len(messages)):
        pdu = PDU(c.DELIVER_SM, fields={"esm_class": 0x04, "short_message": b""})
        pdu.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, str(n))
        pdu.set_tlv(c.TLV_MESSAGE_STATE, c.MESSAGE_STATE_DELIVERED)
        answers.append(router.received("mci", None, pdu))
    clock.advance(inbound_receipts.RECEIPT_GATHER_S)
    for answer in answers:
        assert ok(clock, answer) == c.ESME_ROK
    assert {status(store, m) for m in messages} == {"submitted"}

    clock.advance(inbound_receipts.LEARN_AGAIN_S)            # the router's round of judging
    ok(clock, store.apply_receipts([], {}))          # ... has committed after this one
    assert learned(db_path, "mci") == "dec"
    assert {status(store, m) for m in messages} == {"delivered"}


@pytest.mark.parametrize("response_timeout_s", [5, 120])
def test_kept_receipts_come_of_age_after_their_operators_response_timeout(
        store, clock, db_path, response_timeout_s):
    # A receipt's submit_sm_resp comes within response_timeout_s (or never): judged
    # before that, an early receipt could vote for the older part its translation names.
    mature_s = store_receipts.mature_after(response_timeout_s)
    assert mature_s == response_timeout_s + store_receipts.MATURE_MARGIN_S
    feed(store, clock, store_receipts.LEARN_VOTES, lambda n: f"{n:X}", str)
    for wait in (mature_s - 1, 2):
        clock.advance(wait)
        ok(clock, store.apply_receipts([], {"mci": "auto"}, learn=["mci"],
                                       mature_s={"mci": mature_s}))
        if wait != 2:
            assert learned(db_path, "mci") is None
    assert learned(db_path, "mci") == "dec"


def test_the_inbound_router_judges_after_the_operators_response_timeout(store, clock):
    from gateway.inbound import InboundClassifier, receipts as inbound_receipts
    router = InboundClassifier(store, clock, receipt_ids={"mci": "auto"},
                               response_timeouts={"mci": 5})
    calls = []
    store.apply_receipts = lambda receipts, modes, learn=(), mature_s=None: (
        calls.append((list(learn), dict(mature_s or {}))) or _fired([False] * len(receipts)))
    from gateway.smpp import constants as c
    from gateway.smpp.pdu import PDU
    pdu = PDU(c.DELIVER_SM, fields={"esm_class": 0x04, "short_message": b""})
    pdu.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, "123")
    pdu.set_tlv(c.TLV_MESSAGE_STATE, c.MESSAGE_STATE_DELIVERED)
    router.received("mci", None, pdu)
    clock.advance(inbound_receipts.RECEIPT_GATHER_S)
    assert calls == [([], {"mci": 35.0})]
    clock.advance(5 + store_receipts.MATURE_MARGIN_S + 0.5)
    assert len(calls) == 1
    clock.advance(0.6)
    assert calls[-1] == (["mci"], {"mci": 35.0})


def _fired(result):
    from twisted.internet import defer
    return defer.succeed(result)


def test_config_modes_are_auto_and_the_id_bases():
    from gateway.config.schema import RECEIPT_ID_MODES
    from gateway.receipt_ids import ID_BASES
    assert RECEIPT_ID_MODES == ("auto", *ID_BASES)


# -- migration 6 ---------------------------------------------------------------------

def test_parts_filed_before_their_operator_was_recorded_keep_their_scope(db_path, clock):
    old = store_before(db_path, 6, T0)
    old.execute("INSERT INTO messages (id, agency, sender, recipient, text, priority,"
                " validity_s, receipt, data_coding, esm_class, parts, parts_submitted,"
                " status, operator, created_at)"
                " VALUES ('m1', 'tax', '40401234', '989121234567', 's', 0, 86400, 1, 0,"
                " 0, 1, 1, 'submitted', 'mci', ?)", (T0,))
    old.execute("INSERT INTO parts (message_id, seq, priority, payload, not_before, state,"
                " operator, smsc_id) VALUES ('m1', 1, 0, x'73', ?, 'submitted', 'mci',"
                " '77')", (T0,))
    # A key filed without its operator (the trigger of migration 2 copies it).
    old.execute("INSERT INTO receipt_keys (key, operator, message_id, seq)"
                " VALUES ('77', NULL, 'm1', 1)")
    old.conn.commit()
    old.close()

    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    try:
        assert receipt(store, clock, "irancell", "77", state="failed") is False
        assert ok(clock, store.get_message("m1"))["status"] == "submitted"
        assert receipt(store, clock, "mci", "77") is True
        assert ok(clock, store.get_message("m1"))["status"] == "delivered"
    finally:
        clock.wait(store.close())


def test_receipts_pending_at_the_upgrade_are_matched_under_the_operators_base(
        db_path, clock):
    old = store_before(db_path, 6, T0)
    # Kept by the old code under the receipt's raw form (decimal 6699 = hex 1A2B).
    old.execute("INSERT INTO pending_receipts (key, operator, state, error, received_at)"
                " VALUES ('6699', 'mci', 'delivered', NULL, ?)", (T0,))
    old.conn.commit()
    old.close()

    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    try:
        (m,) = accepted(store, clock)
        submitted(store, clock, m, "1A2B")
        assert status(store, m) == "submitted"        # the base is not known yet
        # The first receipt of the operator under a known base settles the old ones.
        assert receipt(store, clock, "mci", "1", mode="dec") is False
        assert status(store, m) == "delivered"
    finally:
        clock.wait(store.close())


def test_migration_21_files_parts_on_their_own_row_and_keeps_every_match(db_path, clock):
    # Before migration 21 a submitted part was filed in receipt_keys as well; parts
    # from before migration 2 were filed there only (no receipt_key), some under
    # several readings of their id.  After it, the part's own row is its filing.
    old = store_before(db_path, 21, T0)
    for n in (1, 2, 3):
        old.execute("INSERT INTO messages (id, agency, sender, recipient, text, priority,"
                    " validity_s, receipt, data_coding, esm_class, parts, status,"
                    " created_at) VALUES (?, 'tax', '40401234', '989121234567', 's', 0,"
                    " 86400, 1, 0, 0, 1, 'queued', ?)", (f"m{n}", T0))
        old.execute("INSERT INTO parts (message_id, seq, priority, payload, not_before,"
                    " state, owner) VALUES (?, 1, 0, x'73', ?, 'sending', 'o')",
                    (f"m{n}", T0))
    # m1 submitted by migration 20's trigger (filed in both places).
    old.execute("UPDATE parts SET state = 'submitted', operator = 'mci', smsc_id = '0a1',"
                " receipt_key = 'A1', changed_at = ? WHERE message_id = 'm1'", (T0,))
    # m2, m3 as parts submitted before migration 2: keys in receipt_keys only.
    for message_id, smsc_id, keys in (("m2", "77", ("4D", "77")), ("m3", "b2", ("B2",))):
        old.execute("UPDATE parts SET state = 'submitted', smsc_id = ?, changed_at = ?"
                    " WHERE message_id = ?", (smsc_id, T0, message_id))
        old.execute("UPDATE parts SET receipt_key = NULL, operator = NULL"
                    " WHERE message_id = ?", (message_id,))
        old.execute("DELETE FROM receipt_keys WHERE message_id = ?", (message_id,))
        for key in keys:
            old.execute("INSERT INTO receipt_keys (key, operator, message_id, seq)"
                        " VALUES (?, 'mci', ?, 1)", (key, message_id))
    assert old.execute("SELECT count(*) FROM receipt_keys").fetchone()[0] == 4
    old.conn.commit()
    old.close()

    store = Store(db_path, clock, commit_interval=0.0)
    store.open()
    try:
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name ="
                                " 'receipt_keys'").fetchone()[0] == 0
            assert conn.execute("SELECT message_id, receipt_key, operator FROM parts"
                                " ORDER BY message_id").fetchall() == [
                ("m1", "A1", "mci"), ("m2", "77", "mci"), ("m3", "B2", "mci")]
        assert receipt(store, clock, "irancell", "A1") is False       # own operator only
        for message_id, key in (("m1", "A1"), ("m2", "77"), ("m3", "B2")):
            assert receipt(store, clock, "mci", key) is True
            assert ok(clock, store.get_message(message_id))["status"] == "delivered"
        # A part submitted after the migration is filed by the same UPDATE.
        fresh, = accepted(store, clock)
        submitted(store, clock, fresh, "c3")
        assert receipt(store, clock, "mci", "C3") is True
        assert ok(clock, store.get_message(fresh.id))["status"] == "delivered"
    finally:
        clock.wait(store.close())
