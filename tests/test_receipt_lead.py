"""The lead bound (RECEIPT_LEAD_S): a receipt kept at time T never ends a part whose
submit outcome came more than RECEIPT_LEAD_S after it (audit 6, item 1).

An SMSC answers submit_sm when it takes the message, so a receipt overtakes its own
submit_sm_resp by seconds: one kept for an hour is for some other submission that
happened to get the same id (sequential ids, an SMSC restart). Each case is run just
inside the bound too, so that a test whose receipt reached nothing at all cannot pass.
"""

import sqlite3

import pytest
from conftest import answered
from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)

from gateway.store import NewMessage, PartOutcome
from gateway.store import receipts as store_receipts

LATE_S = 3600.0             # well past RECEIPT_LEAD_S (600 s)
SOON_S = 60.0               # well within it




def accepted(store, clock, count=1):
    """`count` one-part messages on mci, accepted and claimed ('sending')."""
    messages = [NewMessage(
        id=store.new_message_id(), agency="tax", sender="40401234",
        recipient=f"98912{n:07d}", text="salam", priority=0, reference=None,
        validity_s=86400, receipt=True, data_coding=0, esm_class=0, parts=[b"salam"],
        created_at=clock.seconds(), route="mci") for n in range(count)]
    ok(clock, store.accept(messages))
    ok(clock, store.claim(count, clock.seconds(), route="mci"))
    return messages


def submitted(store, clock, messages, smsc_ids):
    ok(clock, store.record([PartOutcome(m.id, 1, "submitted", operator="mci", smsc_id=i)
                            for m, i in zip(messages, smsc_ids)]))


def receipts(store, clock, ids, mode, learn=()):
    return ok(clock, store.apply_receipts([("mci", i, "delivered", None) for i in ids],
                                          {"mci": mode}, learn=learn))


def status(store, message):
    return answered(store.get_message(message.id))["status"]


@pytest.mark.parametrize("after_s, expected", [(SOON_S, "delivered"),
                                               (LATE_S, "submitted")])
def test_a_receipt_kept_under_a_fixed_base_does_not_end_a_later_submission(
        store, clock, after_s, expected):
    (m,) = accepted(store, clock)
    assert receipts(store, clock, ["99"], "dec") == [False]     # kept under hex 63
    clock.advance(after_s)
    submitted(store, clock, [m], ["63"])
    assert status(store, m) == expected


@pytest.mark.parametrize("after_s, expected", [(SOON_S, "delivered"),
                                               (LATE_S, "submitted")])
def test_a_receipt_kept_unread_does_not_end_a_later_submission_once_auto_learns(
        store, clock, db_path, after_s, expected):
    (m,) = accepted(store, clock)
    assert receipts(store, clock, ["99"], "auto") == [False]    # decimal: kept unread
    clock.advance(after_s)
    submitted(store, clock, [m], ["63"])                        # 99 read as decimal
    assert status(store, m) == "submitted"                      # nothing guessed yet
    # Then the operator shows its base: hex resp ids, decimal receipts.
    votes = accepted(store, clock, store_receipts.LEARN_VOTES)
    numbers = range(1000, 1000 + len(votes))
    submitted(store, clock, votes, [f"{n:X}" for n in numbers])
    receipts(store, clock, [str(n) for n in numbers], "auto")
    clock.advance(store_receipts.MATURE_S + 1)
    receipts(store, clock, [], "auto", learn=["mci"])
    with sqlite3.connect(db_path) as conn:
        (base,) = conn.execute("SELECT value FROM meta WHERE key = 'receipt_ids:mci'"
                               ).fetchone()
    assert base == "dec"
    assert status(store, m) == expected
