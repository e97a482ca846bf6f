"""A broadcast draining through the dispatcher, over the real store: an emergency
message accepted mid-drain goes out ahead of the broadcast parts already waiting."""

from conftest import operator_config
from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)
from test_broadcast_store import received
from test_dispatch import FakePool

from gateway.config.schema import Routing
from gateway.dispatch import Dispatcher
from gateway.dispatch.routing import OperatorRouter
from gateway.model import NewMessage
from gateway.outbound.feeder import BroadcastFeeder


def settle(clock, store):
    """Let every write queued so far commit and its callbacks run (twice: callbacks
    queue writes of their own)."""
    for _ in range(3):
        ok(clock, store.audit("test", None, {}))


def test_an_emergency_message_overtakes_a_draining_broadcast(store, clock):
    broadcast = received(clock, store, range(989120000000, 989120003000),
                         created_at=clock.seconds())
    pool = FakePool(capacity=50)              # 50 submits per round of 0.1 s: 500/s
    dispatcher = Dispatcher(store, {"mci": pool}, {"mci": operator_config(name="mci")},
                            OperatorRouter(Routing(rules=(), default="mci")), clock=clock,
                            batch=500, buffer_limit=1000)
    feeder = BroadcastFeeder(store, clock=clock, rate_of=lambda agency: 100_000,
                             on_fed=dispatcher.wake)
    feeder.add(broadcast.id, "tax", 2)
    dispatcher.start()
    sent = []

    def one_round():
        clock.advance(0.1)
        ok(clock, feeder.tick())
        settle(clock, store)
        clock.advance(0)
        sent.extend(pool.answer_all())
        settle(clock, store)

    for _ in range(5):
        one_round()
    lane = dispatcher.lanes["mci"]
    assert lane.size >= 400 and len(sent) >= 150      # a deep backlog in the lane
    emergency = NewMessage(id=store.new_message_id(), agency="police", sender="40401111",
                           recipient="989351234567", text="alarm", priority=2,
                           reference=None, validity_s=600, receipt=False, data_coding=0,
                           esm_class=0, parts=[b"alarm"], created_at=clock.seconds(),
                           route="mci")
    ok(clock, store.accept([emergency]))
    dispatcher.wake({"mci"})
    before, waiting = len(sent), lane.size
    one_round()                  # the window is full: what was in flight is answered
    one_round()
    after = [pdu.fields["destination_addr"] for pdu in sent[before:]]
    # Out with the next window (within 0.2 s here), ahead of the hundreds of broadcast
    # parts that were waiting in the lane.
    assert waiting >= 400 and "989351234567" in after[:60]
    assert sent[before + after.index("989351234567")].fields["priority_flag"] == 3
    dispatcher.stop_claiming()
