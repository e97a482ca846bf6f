"""The store's broadcast rows (gateway/store/broadcasts.py): text and parts kept once,
recipients once each, fed into claimable parts a batch at a time, counted and
cancelled; and the claim's priority shares."""

import sqlite3

from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)
from threaded_clock import T0

from gateway.model import NewBroadcast, NewMessage, PartOutcome
from gateway.store.operations import claim_plan
from gateway.text import encode_for_submit

PERSIAN = "شهروند گرامی، " * 8          # UCS2, 2 parts


def broadcast(store, recipients, *, agency="tax", priority=0, validity_s=86400, invalid=0,
              text=PERSIAN, created_at=T0):
    encoded = encode_for_submit(text, 0)
    return NewBroadcast(id=store.new_message_id(), agency=agency, sender="40401234",
                        text=text, priority=priority, validity_s=validity_s, receipt=True,
                        data_coding=encoded.data_coding, esm_class=encoded.esm_class,
                        parts=list(encoded.parts), created_at=created_at,
                        recipients=recipients, invalid=invalid)


def received(clock, store, numbers, **options):
    """A broadcast opened with these numbers (ints), all on route mci."""
    b = broadcast(store, 0, **options)
    added = ok(clock, store.add_broadcast_recipients(b.id, [[n, "mci"] for n in numbers]))
    b.recipients = added
    ok(clock, store.open_broadcast(b))
    return b


def test_a_repeated_number_is_stored_once(store, clock):
    b = broadcast(store, 0)
    first = ok(clock, store.add_broadcast_recipients(b.id, [[989120000001, "mci"],
                                                            [989120000002, "mci"]]))
    again = ok(clock, store.add_broadcast_recipients(b.id, [[989120000002, "mci"],
                                                            [989120000003, "mci"]]))
    assert (first, again) == (2, 1)


def test_text_and_parts_are_stored_once_and_fed_parts_carry_no_payload(store, clock,
                                                                        db_path):
    b = received(clock, store, range(989120000001, 989120000101))
    fed, routes, done = ok(clock, store.feed_broadcast(b.id, 1000, T0))
    assert (fed, routes, done) == (100, ["mci"], True)
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM broadcast_parts").fetchone() == (2,)
    assert db.execute("SELECT count(*), sum(length(payload)), sum(length(text))"
                      " FROM parts JOIN messages ON id = message_id").fetchone() == (200, 0, 0)


def test_claimed_broadcast_parts_have_the_broadcasts_payload_with_their_own_reference(
        store, clock):
    b = received(clock, store, range(989120000001, 989120000041))
    ok(clock, store.feed_broadcast(b.id, 1000, T0))
    claimed = ok(clock, store.claim(100, T0, "mci"))
    assert len(claimed) == 80
    for part in claimed:
        stored = b.parts[part.seq - 1]
        assert part.payload[:3] == stored[:3] and part.payload[4:] == stored[4:]
        assert part.total == 2 and part.data_coding == 8 and part.agency == "tax"
    # Each recipient's two parts share one reference; recipients differ from each other.
    refs = {}
    for part in claimed:
        refs.setdefault(part.recipient, set()).add(part.payload[3])
    assert all(len(r) == 1 for r in refs.values())
    assert len({r.pop() for r in refs.values()}) > 10


def test_feeding_goes_a_batch_at_a_time_and_counts_follow(store, clock):
    b = received(clock, store, range(989120000001, 989120000011))
    assert ok(clock, store.feed_broadcast(b.id, 4, T0))[:2] == (4, ["mci"])
    progress = ok(clock, store.get_broadcast(b.id))
    assert progress["recipients"] == 10 and progress["counts"]["queued"] == 10
    assert ok(clock, store.broadcast_backlog(b.id)) == 4
    parts = ok(clock, store.claim(100, T0, "mci"))
    assert len(parts) == 8
    ok(clock, store.record([PartOutcome(p.message_id, p.seq, "submitted", operator="mci",
                                        smsc_id=f"id{n}") for n, p in enumerate(parts)]))
    counts = ok(clock, store.get_broadcast(b.id))["counts"]
    assert counts["submitted"] == 4 and counts["queued"] == 6
    assert ok(clock, store.feed_broadcast(b.id, 4, T0))[0] == 4
    assert ok(clock, store.feed_broadcast(b.id, 4, T0))[::2] == (2, True)
    assert ok(clock, store.open_broadcasts()) == []


def test_cancel_ends_what_was_not_submitted_and_says_so_in_the_counts(store, clock):
    b = received(clock, store, range(989120000001, 989120000011))
    ok(clock, store.feed_broadcast(b.id, 4, T0))
    parts = ok(clock, store.claim(4, T0, "mci"))           # two recipients' parts
    ok(clock, store.record([PartOutcome(p.message_id, p.seq, "submitted", operator="mci",
                                        smsc_id=f"id{n}") for n, p in enumerate(parts)]))
    assert ok(clock, store.cancel_broadcast(b.id)) is True
    progress = ok(clock, store.get_broadcast(b.id))
    assert progress["state"] == "cancelled"
    assert progress["counts"] == {"queued": 0, "submitted": 2, "delivered": 0,
                                  "failed": 0, "expired": 0, "cancelled": 8}
    assert ok(clock, store.claim(100, T0, "mci")) == []
    assert ok(clock, store.feed_broadcast(b.id, 4, T0))[0] == 0
    assert ok(clock, store.cancel_broadcast(b.id)) is False
    assert ok(clock, store.cancel_broadcast("nope")) is None


def test_a_broadcast_counts_whole_in_the_quota_from_its_accept(store, clock):
    b = received(clock, store, range(989120000001, 989120000011))
    assert ok(clock, store.parts_used("tax", T0 - 1)) == 20
    ok(clock, store.feed_broadcast(b.id, 3, T0))
    assert ok(clock, store.parts_used("tax", T0 - 1)) == 20


def test_a_discarded_broadcast_leaves_no_recipients(store, clock, db_path):
    b = broadcast(store, 0)
    ok(clock, store.add_broadcast_recipients(b.id, [[989120000001, "mci"]]))
    ok(clock, store.discard_broadcast(b.id))
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM broadcast_recipients").fetchone() == (0,)


def queue_messages(store, clock, count, priority, route="mci"):
    messages = [NewMessage(id=store.new_message_id(), agency="tax", sender="40401234",
                           recipient="989121234567", text="salam", priority=priority,
                           reference=None, validity_s=86400, receipt=False, data_coding=0,
                           esm_class=0, parts=[b"salam"], created_at=T0 - 100 + n,
                           route=route) for n in range(count)]
    ok(clock, store.accept(messages))


def test_high_and_normal_share_a_claim_three_to_one_and_emergency_goes_first(store, clock):
    queue_messages(store, clock, 100, 0)
    queue_messages(store, clock, 100, 1)
    queue_messages(store, clock, 3, 2)
    first = ok(clock, store.claim(23, T0, "mci"))
    assert [p.priority for p in first[:3]] == [2, 2, 2]
    assert sorted(p.priority for p in first[3:]).count(0) == 5        # 20 × 1/4
    claimed = {0: 0, 1: 0}
    for _ in range(40):                   # small claims too keep the share (credit)
        for part in ok(clock, store.claim(2, T0, "mci")):
            claimed[part.priority] += 1
    assert claimed == {0: 20, 1: 60}


def test_a_share_left_unused_goes_to_the_other_priority():
    plan = claim_plan(8, (2, 1, 0), {1: 3, 0: 1})
    assert plan == [(0, 2), (1, 6), (1, None), (0, None)]


# -- the feeder over the real store: fair shares, single messages, the agency's rate --------


from gateway.outbound.feeder import BroadcastFeeder  # noqa: E402


def drain(store, clock, feeder, rounds, capacity, singles=()):
    """Rounds of 0.1 s: the feeder feeds, an operator takes `capacity` parts (oldest
    first, as the dispatcher claims) and submits them.  singles: {round: message} put in
    at that round.  → [{agency: parts claimed}] per round, and {message id: round}."""
    shares, seen = [], {}
    for n in range(rounds):
        clock.advance(0.1)
        now = clock.seconds()
        ok(clock, feeder.tick())
        if n in dict(singles):
            message = dict(singles)[n]
            message.created_at = now
            ok(clock, store.accept([message]))
        claimed = ok(clock, store.claim(capacity, now, "mci"))
        counts = {}
        for part in claimed:
            counts[part.agency] = counts.get(part.agency, 0) + 1
            seen.setdefault(part.message_id, n)
        shares.append(counts)
        if claimed:
            ok(clock, store.record([PartOutcome(p.message_id, p.seq, "submitted",
                                                operator="mci", smsc_id=f"{n}.{i}")
                                    for i, p in enumerate(claimed)]))
    return shares, seen


def test_two_agencies_broadcasting_share_the_operator_by_weight_and_singles_pass(store, clock):
    tax = received(clock, store, range(989120000000, 989120004000), agency="tax",
                   text="salam", created_at=clock.seconds())
    police = received(clock, store, range(989350000000, 989350004000), agency="police",
                      text="salam", created_at=clock.seconds())
    rates = {"tax": 3000, "police": 1000}
    feeder = BroadcastFeeder(store, clock=clock, rate_of=rates.get, backlog_parts=600)
    feeder.add(tax.id, "tax", 1)
    feeder.add(police.id, "police", 1)
    single = NewMessage(id=store.new_message_id(), agency="judiciary", sender="40400135",
                        recipient="989121234567", text="salam", priority=0,
                        reference=None, validity_s=86400, receipt=False, data_coding=0,
                        esm_class=0, parts=[b"salam"], created_at=0, route="mci")
    # The operator takes 200 parts a round (2,000/s): less than the two rates' 4,000/s.
    shares, seen = drain(store, clock, feeder, 20, 200, singles=[(10, single)])
    steady = shares[5:20]
    tax_parts = sum(s.get("tax", 0) for s in steady)
    police_parts = sum(s.get("police", 0) for s in steady)
    assert tax_parts + police_parts + 1 == 200 * 15          # the operator kept busy
    assert 2.5 <= tax_parts / police_parts <= 3.5             # by weight (their rates)
    # Behind the backlog (600 parts: 3 rounds), never behind the broadcasts.
    assert seen[single.id] <= 10 + 3


def test_a_broadcast_drains_no_faster_than_its_agencys_rate(store, clock):
    tax = received(clock, store, range(989120000000, 989120002000), agency="tax",
                   created_at=clock.seconds())                # 2 parts each
    feeder = BroadcastFeeder(store, clock=clock, rate_of={"tax": 500}.get)
    feeder.add(tax.id, "tax", 2)
    shares, _ = drain(store, clock, feeder, 30, 10_000)
    claimed = sum(s.get("tax", 0) for s in shares)
    assert 1400 <= claimed <= 1500 + 2                        # 500 parts/s over 3 s


def test_shares_follow_the_weights_even_for_a_broadcast_that_joins_late(store, clock):
    police = received(clock, store, range(989350000000, 989350006000), agency="police",
                      text="salam", created_at=clock.seconds())
    tax = received(clock, store, range(989120000000, 989120006000), agency="tax",
                   text="salam", created_at=clock.seconds())
    feeder = BroadcastFeeder(store, clock=clock, rate_of={"tax": 3000, "police": 1000}.get,
                             backlog_parts=600)
    feeder.add(police.id, "police", 1)
    drain(store, clock, feeder, 8, 200)               # police alone fills the backlog
    feeder.add(tax.id, "tax", 1)
    shares, _ = drain(store, clock, feeder, 20, 200)
    late = shares[8:]
    tax_parts = sum(s.get("tax", 0) for s in late)
    police_parts = sum(s.get("police", 0) for s in late)
    assert 2.5 <= tax_parts / police_parts <= 3.5


def test_receipts_reach_broadcast_parts_as_they_reach_messages(store, clock):
    b = received(clock, store, range(989120000001, 989120000004), created_at=clock.seconds())
    ok(clock, store.feed_broadcast(b.id, 10, clock.seconds()))
    parts = ok(clock, store.claim(10, clock.seconds(), "mci"))
    ok(clock, store.record([PartOutcome(p.message_id, p.seq, "submitted", operator="mci",
                                        smsc_id=f"a{n:x}") for n, p in enumerate(parts)]))
    matched = ok(clock, store.apply_receipts(
        [("mci", f"a{n:x}", "delivered", None) for n in range(len(parts))], {"mci": "raw"}))
    assert matched == [True] * 6
    counts = ok(clock, store.get_broadcast(b.id))["counts"]
    assert counts["delivered"] == 3 and counts["submitted"] == 0
    message = ok(clock, store.get_message(parts[0].message_id))
    assert message["status"] == "delivered" and message["agency"] == "tax"


def test_fed_recipients_leave_their_rows_and_an_ended_broadcast_is_purged(store, clock,
                                                                         db_path):
    b = received(clock, store, range(989120000001, 989120000011), created_at=clock.seconds())
    ok(clock, store.feed_broadcast(b.id, 4, clock.seconds()))
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM broadcast_recipients").fetchone() == (6,)
    ok(clock, store.cancel_broadcast(b.id))
    live = received(clock, store, range(989120000001, 989120000003),
                    created_at=clock.seconds())
    clock.advance(10)
    removed = ok(clock, store.purge(older_than=clock.seconds()))
    assert removed["broadcasts"] == 1 and removed["broadcast_recipients"] == 6
    assert db.execute("SELECT id FROM broadcasts").fetchall() == [(live.id,)]
    assert db.execute("SELECT count(*) FROM broadcast_parts").fetchone() == (2,)


def test_a_normal_broadcast_fails_opted_out_citizens_and_an_urgent_one_reaches_them(
        store, clock, db_path):
    """Issue 8 item 4 on the broadcast path: STOP (where allowed) holds for broadcasts
    too; `high` and `emergency` still go."""
    ok(clock, store.opt_out("tax", "989120000002"))
    ok(clock, store.opt_out("judiciary", "989120000003"))      # another agency's: no effect
    normal = received(clock, store, range(989120000001, 989120000005))
    urgent = received(clock, store, range(989120000001, 989120000005), priority=2)
    ok(clock, store.feed_broadcast(normal.id, 1000, T0))
    ok(clock, store.feed_broadcast(urgent.id, 1000, T0))
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT broadcast_id, recipient, status FROM messages"
                      " WHERE status = 'failed'").fetchall()
    assert rows == [(normal.id, "989120000002", "failed")]
    assert db.execute("SELECT DISTINCT error FROM parts WHERE state = 'failed'"
                      ).fetchall() == [("opted_out",)]
    claimed = ok(clock, store.claim(100, T0, "mci"))
    assert len(claimed) == (3 + 4) * 2                        # 2 parts each
    assert ("989120000002", 2) in {(p.recipient, p.priority) for p in claimed}


def test_a_broadcast_keeps_its_fingerprint_for_those_it_will_reach(store, clock):
    ok(clock, store.opt_out("tax", "989120000002"))
    digest = b"\x01" * 16
    for priority in (0, 2):
        b = broadcast(store, 0, priority=priority)
        b.fingerprint = digest if priority == 0 else b"\x02" * 16
        b.recipients = ok(clock, store.add_broadcast_recipients(
            b.id, [[n, "mci"] for n in range(989120000001, 989120000004)]))
        ok(clock, store.open_broadcast(b))
    assert ok(clock, store.find_sent([digest], "989120000001", 0)).to_citizen
    assert not ok(clock, store.find_sent([digest], "989120000002", 0)).to_citizen
    assert ok(clock, store.find_sent([b"\x02" * 16], "989120000002", 0)).to_citizen


def test_claiming_broadcast_parts_reads_each_stored_payload_once_per_claim(store, clock,
                                                                            db_path):
    # The drain claims ~10,000 broadcast parts a second: their payload (the broadcast's,
    # stored once) is read once per claim and part number, not by a subquery per row
    # and carried hex-encoded through the claim's JSON (SQLite VM steps: deterministic
    # where time is not; 166 per part before, 150 now).
    from gateway.model import CLAIM_ORDER, LANE_SHARES
    from gateway.store import operations
    b = received(clock, store, range(989120000001, 989120000251))
    ok(clock, store.feed_broadcast(b.id, 1000, T0))
    db = sqlite3.connect(db_path, isolation_level=None)
    steps = [0]

    def step():
        steps[0] += 1

    db.set_progress_handler(step, 1)
    claimed = operations.claim(db, 500, T0, "mci", CLAIM_ORDER, "o", None, LANE_SHARES, {})
    db.set_progress_handler(None, 1)
    assert len(claimed) == 500
    payloads = {bytes(p) for p in b.parts}
    assert all(row[9][:3] + row[9][4:] in {p[:3] + p[4:] for p in payloads}
               for row in claimed)
    assert steps[0] <= 155 * 500, steps[0] / 500


def test_storing_a_batch_of_recipients_costs_few_sqlite_steps_each(store, clock, db_path):
    # A million recipients go through this before the 202 (SQLite VM steps: deterministic
    # where time is not).  Each element's two json_extract() calls, each parsing its
    # element again, cost 21 steps and 1.4 µs CPU a recipient; one INSERT per route of
    # the batch reading plain numbers, 19 steps and 0.6 µs (20 since migration 16 gave
    # each row a national_id column, NULL here).
    from gateway.store import broadcasts as store_broadcasts
    db = sqlite3.connect(db_path, isolation_level=None)
    rows = [[989120000000 + n, "mci" if n % 3 else "irancell"] for n in range(10_000)]
    steps = [0]

    def step():
        steps[0] += 1

    db.set_progress_handler(step, 1)
    added = store_broadcasts.add_recipients(db, [("b1", rows), ("b1", rows[:10])])
    db.set_progress_handler(None, 1)
    assert added == [10_000, 0]
    assert sorted(db.execute("SELECT number, route FROM broadcast_recipients")) == \
        sorted(map(tuple, rows))
    assert steps[0] <= 20.5 * 10_010, steps[0] / 10_010
