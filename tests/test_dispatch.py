"""The dispatcher on a Clock: lanes per operator, priorities, expiry, resends and the
store's outcomes, with in-memory stand-ins for the store and the operator pools."""

from dataclasses import replace

import pytest
from conftest import operator_config
from store_contract import ClaimContract
from twisted.internet import defer
from twisted.internet.task import Clock

from gateway.config.schema import Routing, RoutingRule
from gateway.dispatch.dispatcher import (RECORD_RETRY_S, REBIND_RETRY_S, UNKNOWN_OUTCOME,
                                         Dispatcher, Lane)
from gateway.smpp.esme import ResponseTimeout, SessionClosed
from gateway.smpp.pool import NoSession
from gateway.dispatch.routing import OperatorRouter
from gateway.smpp import constants as c
from gateway.model import CLAIM_ORDER, EMERGENCY, LANE_SHARES, ClaimedPart
from gateway.store.operations import claim_plan
from gateway.store.interface import StoreClosed

MCI, IRANCELL = "98912", "98935"


class FakePool:
    """An operator's binds: `capacity` submits per turn, answers held until told."""

    def __init__(self, capacity=100, bound=1):
        self.capacity = capacity
        self.bound = bound
        self.on_ready = None
        self.waiting = []            # (pdu, deferred) not yet answered

    def bound_count(self):
        return self.bound

    def free_slots(self):
        return max(0, self.capacity - len(self.waiting)) if self.bound else 0

    def submit(self, pdu, answer=None):      # a Deferred, as a pool may give for any
        d = defer.Deferred()
        self.waiting.append((pdu, d))
        return d

    def cork(self):              # the real pool's burst of one write per session
        return ()

    def uncork(self, corked):
        pass

    def slow_down(self, seconds):
        pass

    def throttled(self):
        pass

    def fail_all(self, error):
        waiting, self.waiting = self.waiting, []
        for pdu, d in waiting:
            d.errback(error)
        return [pdu for pdu, _ in waiting]

    def answer_all(self, status=c.ESME_ROK):
        waiting, self.waiting = self.waiting, []
        for n, (pdu, d) in enumerate(waiting):
            d.callback(pdu.response(status=status, message_id=f"{n:x}"))
        return [pdu for pdu, _ in waiting]


class FakeStore:
    """Queued parts in memory, each with its route; claim honours not_before and leases
    what it hands out to this store's owner, record keeps every outcome of a part it
    holds and puts requeued parts back.  It passes the claim contract
    (tests/store_contract.py) that the real store passes; `sharing` makes another
    store (another process) on the same parts."""

    def __init__(self, clock, lease_s=300.0, sharing=None, owner="fake"):
        self.clock = clock
        self.lease_s = lease_s
        self.owner = owner
        self.outcomes = []
        self.fail_records = 0
        self.claims = []             # (route, limit) of each claim
        self.credit = {}             # route → share fractions (operations.claim_plan)
        if sharing is None:
            self.queued = []         # [(not_before, part)]
            self._parts = {}         # (message_id, seq) -> (part, route)
            self.leases = {}         # (message_id, seq) -> [owner, claimed at]
        else:
            self.queued, self._parts, self.leases = (sharing.queued, sharing._parts,
                                                     sharing.leases)

    def put(self, part, not_before=0.0, route="by prefix"):
        """Queue `part` on `route` (default: the one the API stored for its prefix)."""
        if route == "by prefix":
            route = ROUTES.get(part.recipient[:5])
        self._parts[(part.message_id, part.seq)] = (part, route)
        self.queued.append((not_before, part))

    def _route(self, part):
        return self._parts[(part.message_id, part.seq)][1]

    def queued_routes(self):
        return defer.succeed({self._route(part) for _, part in self.queued})

    def claim(self, limit, now, route=None):
        """As the real store claims: emergency first, high and normal by their shares
        (operations.claim_plan), each oldest first."""
        self.claims.append((route, limit))
        for key, (owner, claimed_at) in list(self.leases.items()):
            if owner != self.owner and claimed_at < now - self.lease_s:
                del self.leases[key]             # taken back: an unknown outcome
                p = self._parts[key][0]
                p.attempts += 1
                p.unknowns += 1
                self.queued.append((claimed_at, p))
        waiting = {priority: sorted((p for p in self.queued if p[0] <= now
                                     and p[1].priority == priority
                                     and self._route(p[1]) == route), key=lambda p: p[0])
                   for priority in CLAIM_ORDER}
        due = waiting[EMERGENCY][:limit]
        credit = self.credit.setdefault(route, {})
        for priority, most in claim_plan(limit - len(due), CLAIM_ORDER, LANE_SHARES, credit):
            want = limit - len(due) if most is None else min(most, limit - len(due))
            taken, waiting[priority] = waiting[priority][:want], waiting[priority][want:]
            due += taken
        due.sort(key=lambda p: (-p[1].priority, p[0]))
        for entry in due:
            self.queued.remove(entry)
            self.leases[(entry[1].message_id, entry[1].seq)] = [self.owner, now]
        # Copies, as a database hands out: what record() changes later is not theirs.
        return defer.succeed([replace(part) for _, part in due])

    def renew_leases(self, now):
        mine = [lease for lease in self.leases.values() if lease[0] == self.owner]
        for lease in mine:
            lease[1] = now
        return defer.succeed(len(mine))

    def record(self, outcomes):
        if self.fail_records:
            self.fail_records -= 1
            return defer.fail(OSError("disk I/O error"))
        held = [o for o in outcomes
                if self.leases.get((o.message_id, o.seq), (None,))[0] == self.owner]
        self.outcomes.extend(held)
        for o in held:
            del self.leases[(o.message_id, o.seq)]
            if o.kind == "requeue":
                p, route = self._parts[(o.message_id, o.seq)]
                p.attempts += o.count_attempt
                p.unknowns += o.unknown
                self.queued.append((self.clock.seconds() if o.not_before is None
                                    else o.not_before, p))
        return defer.succeed(len(held))


# What the API stored, by prefix: "rightel" is no operator of this configuration any
# more, and None stands for parts stored before routes were.
ROUTES = {MCI: "mci", IRANCELL: "irancell", "98920": "rightel", "98921": None}
PARTS = {}


def part(n, prefix=MCI, priority=0, expires_at=1e9):
    p = ClaimedPart(message_id=f"m{n}", seq=1, total=1, agency="tax", sender="40401234",
                    recipient=f"{prefix}{n:07d}", priority=priority, data_coding=0,
                    esm_class=0, payload=b"hi", receipt=True, attempts=0,
                    expires_at=expires_at)
    PARTS[(p.message_id, p.seq)] = p
    return p


class TestFakeStoreContract(ClaimContract):
    """The stand-in passes the real store's claim contract: it cannot drift."""

    @pytest.fixture(autouse=True)
    def fake_store(self):
        self.store = FakeStore(Clock())
        self.lease_s = self.store.lease_s
        self.made = 0

    def other(self):
        return FakeStore(self.store.clock, sharing=self.store, owner="other")

    def wait(self, d):
        result = []
        d.addBoth(result.append)
        if hasattr(result[0], "raiseException"):
            result[0].raiseException()
        return result[0]

    def queue(self, route=None, priority=0, created_at=0.0):
        self.made += 1
        p = ClaimedPart(message_id=f"c{self.made}", seq=1, total=1, agency="tax",
                        sender="40401234", recipient="989121234567", priority=priority,
                        data_coding=0, esm_class=0, payload=b"hi", receipt=True,
                        attempts=0, expires_at=1e12)
        self.store.put(p, not_before=created_at, route=route)
        return (p.message_id, p.seq)


@pytest.fixture
def world(clock):
    store = FakeStore(clock)
    pools = {"mci": FakePool(), "irancell": FakePool()}
    routing = Routing(rules=(
        RoutingRule(prefixes=(MCI,), operator="mci", fallback=(), origin="t:1"),
        RoutingRule(prefixes=(IRANCELL,), operator="irancell", fallback=(), origin="t:2")),
        default="mci")
    settings = {name: operator_config(name=name) for name in pools}
    dispatcher = Dispatcher(store, pools, settings, OperatorRouter(routing), clock=clock,
                            batch=50, buffer_limit=200)
    yield store, pools, dispatcher
    dispatcher.stop_claiming()


def run(clock, seconds=0.01, steps=5):
    for _ in range(steps):
        clock.advance(seconds)


def kinds(store, kind):
    return sorted(o.message_id for o in store.outcomes if o.kind == kind)


def test_a_stuck_operator_leaves_its_surplus_in_the_store_and_others_flow(clock, world):
    store, pools, dispatcher = world
    pools["irancell"].capacity = 0                   # bound but takes nothing
    for n in range(300):
        store.put(part(n, IRANCELL))
    store.put(part(999, MCI), not_before=0.5)         # arrives behind the backlog
    dispatcher.start()
    run(clock, 0.1, 10)
    lane_limit = dispatcher.lanes["irancell"].limit
    assert lane_limit == 200 // 4
    assert dispatcher.lanes["irancell"].size == lane_limit
    assert len(store.queued) == 300 - lane_limit      # the rest waits in the store
    sent = pools["mci"].answer_all()
    assert [pdu.fields["destination_addr"] for pdu in sent] == [f"{MCI}0000999"]
    run(clock)
    assert kinds(store, "submitted") == ["m999"]
    assert kinds(store, "requeue") == []              # nothing claimed only to go back
    # No claim for the full lane's route asked for more than its room.
    assert all(limit <= lane_limit for route, limit in store.claims)


def test_parts_waiting_in_a_lane_keep_their_leases(clock, world):
    # An operator that takes nothing for longer than the lease time: another process
    # sharing the store must not take back (and send again) what this one holds.
    store, pools, dispatcher = world
    pools["irancell"].capacity = 0
    for n in range(3):
        store.put(part(n, IRANCELL))
    dispatcher.start()
    run(clock, 1, 2 * int(store.lease_s))
    assert dispatcher.lanes["irancell"].size == 3
    other = FakeStore(clock, sharing=store, owner="other")
    taken = []
    other.claim(10, clock.seconds(), route="irancell").addCallback(taken.extend)
    assert taken == []
    pools["irancell"].capacity = 100                 # then its answers are recorded
    run(clock, 0.5, 2)
    pools["irancell"].answer_all()
    run(clock)
    assert kinds(store, "submitted") == ["m0", "m1", "m2"]


def test_an_emergency_part_goes_ahead_of_a_full_lane(clock, world):
    store, pools, dispatcher = world
    lane = dispatcher.lanes["mci"]
    pools["mci"].capacity = 0
    for n in range(lane.limit + 20):
        store.put(part(n))
    dispatcher.start()
    run(clock)
    assert lane.size == lane.limit
    store.put(part(500, priority=2))
    dispatcher.wake({"mci"})
    run(clock)
    pools["mci"].capacity = 1                         # one slot opens: m0 goes, and
    dispatcher.kick()                                 # the room is claimed, emergency
    run(clock)                                        # first
    assert [pdu.fields["destination_addr"] for pdu in pools["mci"].answer_all()] == [
        f"{MCI}0000000"]
    run(clock)
    (pdu, _), = pools["mci"].waiting                  # ahead of m1 … m49 in the lane
    assert pdu.fields["destination_addr"] == f"{MCI}0000500"
    assert pdu.fields["priority_flag"] == 3


def test_parts_held_past_their_validity_expire_instead_of_going_out(clock, world):
    store, pools, dispatcher = world
    pools["mci"].capacity = 0
    store.put(part(1, expires_at=5.0))
    store.put(part(2, expires_at=1e9))
    dispatcher.start()
    run(clock)
    clock.advance(6)
    pools["mci"].capacity = 10
    dispatcher.wake()
    run(clock)
    assert kinds(store, "expired") == ["m1"]
    assert [pdu.fields["destination_addr"] for pdu, _ in pools["mci"].waiting] == [
        f"{MCI}0000002"]


def test_a_bind_status_answer_sends_the_part_again_later_without_counting_it(clock, world):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    pools["mci"].answer_all(c.ESME_RINVBNDSTS)
    run(clock)
    assert pools["mci"].waiting == []                 # not at once: it waits in the store
    (requeue,) = store.outcomes
    assert requeue.kind == "requeue" and not requeue.count_attempt and not requeue.unknown
    assert requeue.not_before == pytest.approx(clock.seconds() + REBIND_RETRY_S, abs=0.1)
    clock.advance(REBIND_RETRY_S)
    run(clock, 0.5, 2)
    pools["mci"].answer_all()
    run(clock)
    assert [o.kind for o in store.outcomes] == ["requeue", "submitted"]


@pytest.mark.parametrize("error", [ResponseTimeout("seq 1 unanswered"),
                                   SessionClosed("session lost")])
def test_unknown_outcomes_back_off_and_end_the_part_failed(clock, world, error):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    sends, delays = 0, []
    for _ in range(10):
        if not pools["mci"].waiting:
            break
        pools["mci"].fail_all(error)
        sends += 1
        run(clock)
        last = store.outcomes[-1]
        if last.kind != "requeue":
            break
        assert last.unknown and last.count_attempt
        delays.append(last.not_before - clock.seconds())
        clock.advance(last.not_before - clock.seconds())
        run(clock, 0.5, 2)
    assert sends == 3                                  # OperatorConfig's default bound
    assert delays == pytest.approx([2.0, 4.0], abs=0.1)
    failed = store.outcomes[-1]
    assert (failed.kind, failed.error) == ("failed", UNKNOWN_OUTCOME)
    assert PARTS[("m1", 1)].unknowns == 2 and PARTS[("m1", 1)].attempts == 2


def test_a_part_whose_unknown_outcomes_reached_the_bound_is_not_sent_again(clock, world):
    # The store releases a part a crashed run left in flight as an unknown outcome
    # (its lease): after max_unknown_outcomes of them (here 1 send + 2 crashes) it
    # fails instead of going out once more.
    store, pools, dispatcher = world
    spent, fresh = part(1), part(2)
    spent.unknowns, fresh.unknowns = 3, 2
    store.put(spent)
    store.put(fresh)
    dispatcher.start()
    run(clock)
    assert [pdu.fields["destination_addr"] for pdu, _ in pools["mci"].waiting] == [
        fresh.recipient]
    (failed,) = store.outcomes
    assert (failed.message_id, failed.kind, failed.error) == ("m1", "failed", UNKNOWN_OUTCOME)


def test_a_submit_the_pool_could_not_take_is_sent_again_uncounted(clock, world):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    pools["mci"].fail_all(NoSession("no free slot"))
    run(clock)
    assert len(pools["mci"].waiting) == 1 and store.outcomes == []


def test_an_unencodable_submit_fails_instead_of_looping(clock, world):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    pools["mci"].fail_all(ValueError("destination_addr too long"))
    run(clock)
    assert pools["mci"].waiting == []
    (failed,) = store.outcomes
    assert failed.kind == "failed" and "not encodable" in failed.error


def test_outcomes_the_store_could_not_write_are_written_again(clock, world):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    store.fail_records = 2
    pools["mci"].answer_all()
    run(clock)
    assert store.outcomes == []
    clock.advance(RECORD_RETRY_S)
    clock.advance(RECORD_RETRY_S)
    assert kinds(store, "submitted") == ["m1"]


def test_no_retry_once_the_store_is_closed(clock, world):
    store, pools, dispatcher = world
    store.put(part(1))
    dispatcher.start()
    run(clock)
    store.record = lambda outcomes: defer.fail(StoreClosed("closed"))
    pools["mci"].answer_all()
    run(clock)
    assert dispatcher._record_call is None


def test_a_deep_backlog_is_claimed_only_as_its_lane_has_room(clock, world):
    store, pools, dispatcher = world
    pools["mci"].capacity = 7
    for n in range(400):
        store.put(part(n))
    dispatcher.start()
    for _ in range(200):
        run(clock, 0.01, 1)
        pools["mci"].answer_all()
        assert dispatcher.lanes["mci"].size <= dispatcher.lanes["mci"].limit
    run(clock)
    assert len(kinds(store, "submitted")) == 400
    assert kinds(store, "requeue") == []          # nothing bounced back to the store


def test_parts_of_routes_the_configuration_no_longer_has_are_still_sent(clock, world):
    store, pools, dispatcher = world
    store.put(part(1, "98920"))
    store.put(part(2, "98921"), not_before=1.0)       # due only later
    dispatcher.start()
    run(clock)
    run(clock, 0.6, 2)                                 # polls claim the later one too
    sent = pools["mci"].answer_all()                  # the default operator carries both
    assert sorted(pdu.fields["destination_addr"] for pdu in sent) == [
        "989200000001", "989210000002"]
    assert {route for route, _ in store.claims} >= {"rightel", None}


def test_stored_routes_answered_later_or_after_a_failure_are_still_claimed(clock, world):
    # A network database answers queued_routes later, or fails: the lanes' own routes
    # are claimed meanwhile, and the poll asks again after a failure.
    store, pools, dispatcher = world
    answers = []
    store.queued_routes = lambda: answers.append(defer.Deferred()) or answers[-1]
    store.put(part(1, "98920"))                       # "rightel": no lane of its own
    store.put(part(2))
    dispatcher.start()
    run(clock)
    assert [pdu.fields["destination_addr"] for pdu, _ in pools["mci"].waiting] == [
        "989120000002"]
    answers[0].errback(OSError("disk I/O error"))
    run(clock, 0.6, 1)                                # the poll asks again
    assert len(answers) == 2
    answers[1].callback({"rightel"})
    run(clock, 0.6, 1)
    assert sorted(pdu.fields["destination_addr"] for pdu, _ in pools["mci"].waiting) == [
        "989120000002", "989200000001"]


def test_a_thousand_unknown_statuses_make_one_metric_series(clock, world):
    from gateway import metrics
    store, pools, dispatcher = world
    dispatcher.lanes["mci"].operator = "labels-op"       # series of this test only
    for n in range(1000):
        store.put(part(n))
    dispatcher.start()
    answered = 0
    for _ in range(100):
        run(clock)
        waiting, pools["mci"].waiting = pools["mci"].waiting, []
        for pdu, d in waiting:
            d.callback(pdu.response(status=0x1000 + answered))   # codes SMPP never named
            answered += 1
        if answered >= 1000:
            break
    assert answered == 1000
    (family,) = metrics.SUBMIT_SM_RESULTS.collect()
    labels = {s.labels["status"] for s in family.samples
              if s.labels["operator"] == "labels-op" and s.name.endswith("_total")}
    assert labels == {"other"}


def test_every_answer_is_counted_in_the_results_metric(clock, world):
    # Tallied per lane and added once per pump or outcome write: throttled answers,
    # which write no outcome, are counted too.
    from gateway import metrics
    from gateway.smpp.status import status_label
    store, pools, dispatcher = world
    dispatcher.lanes["mci"].operator = "count-op"        # series of this test only
    for n in range(30):
        store.put(part(n))
    dispatcher.start()
    run(clock)
    waiting, pools["mci"].waiting = pools["mci"].waiting, []
    assert len(waiting) == 30
    for n, (pdu, d) in enumerate(waiting):
        d.callback(pdu.response(status=c.ESME_RTHROTTLED if n < 10 else c.ESME_ROK,
                                message_id=f"{n:x}"))
    run(clock)
    (family,) = metrics.SUBMIT_SM_RESULTS.collect()
    counted = {s.labels["status"]: s.value for s in family.samples
               if s.labels["operator"] == "count-op" and s.name.endswith("_total")}
    assert counted == {status_label(c.ESME_ROK): 20, status_label(c.ESME_RTHROTTLED): 10}


def test_smsc_error_answers_are_logged_once_per_interval_with_a_count(clock, world, caplog):
    store, pools, dispatcher = world
    for n in range(40):
        store.put(part(n))
    dispatcher.start()
    run(clock)
    pools["mci"].answer_all(c.ESME_RSYSERR)
    run(clock)
    lines = [r for r in caplog.records if "ESME_RSYSERR" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "operator mci" in lines[0].getMessage()
    clock.advance(10)
    run(clock, 0.5, 2)
    pools["mci"].answer_all(c.ESME_RSYSERR)        # the retries, 2 s later
    run(clock)
    lines = [r.getMessage() for r in caplog.records if "ESME_RSYSERR" in r.getMessage()]
    assert len(lines) == 2 and "39 more like this" in lines[1]


def test_a_lane_sends_three_high_parts_for_each_normal_one_and_emergency_first():
    lane = Lane("mci", FakePool(), None, 100)
    for n in range(6):
        lane.add(part(n, priority=0))
    for n in range(10, 19):
        lane.add(part(n, priority=1))
    lane.add(part(99, priority=2))
    order = [lane.pop().priority for _ in range(16)]
    assert order == [2, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0]
    assert lane.size == 0


def test_a_flood_of_high_parts_leaves_normal_its_share_at_the_smsc(clock, world):
    store, pools, dispatcher = world
    pools["mci"].capacity = 8
    for n in range(400):
        store.put(part(n, priority=1))
    for n in range(400, 440):
        store.put(part(n, priority=0))
    dispatcher.start()
    sent = []
    for _ in range(10):
        run(clock, 0.01, 2)
        sent += pools["mci"].answer_all()
    first = [int(pdu.fields["destination_addr"][5:]) for pdu in sent[:80]]
    assert sum(n >= 400 for n in first) == 20            # a quarter, not after the 400


def test_a_failing_answer_handler_is_logged_not_raised_into_the_session(caplog):
    from gateway.dispatch.dispatcher import _Answer

    class Broken:
        def _answered(self, resp, lane, part):
            raise RuntimeError("boom")

        _lost = _answered

    part = ClaimedPart("m1", 1, 1, "tax", "40401234", "989121234567", 0, 0, 0, b"hi",
                       True, 0, 2e9)
    answer = _Answer(Broken(), None, part)
    answer.callback(object())
    answer.errback(RuntimeError("lost"))
    assert caplog.text.count("part m1/1 failed") == 2
