"""The feeder's backlog must leave room for the drain's target rate while the dispatcher
holds a full lane: fed messages stay 'queued' until all their parts are submitted, so the
parts a lane holds (half the dispatcher's buffer, 2,500) and those in flight (4 binds of
window 100) count against the backlog too."""

from twisted.internet import defer, task

from gateway.outbound.feeder import TICK_S, BroadcastFeeder

HELD_BY_DISPATCHER = 2500 + 4 * 100          # parts claimed, not yet submitted
TARGET_PARTS_S = 10_000
TRANSACTION_S = 0.05                         # a feed's commit, measured mid-drain


class Store:
    def __init__(self, waiting_messages):
        self.waiting = waiting_messages
        self.fed = []

    def broadcast_backlog(self, broadcast_id):
        return defer.succeed(self.waiting)

    def feed_broadcast(self, broadcast_id, limit, now):
        self.fed.append(limit)
        return defer.succeed((limit, ["mci"], False))


def test_a_round_feeds_what_the_target_rate_drains_while_the_lane_is_full():
    # At 4,000 parts a round fed 1,100 parts: the drain could not pass ~7,300 parts/s
    # however fast the rest went (1,100 / (0.1 s tick + 0.05 s commit)).
    clock = task.Clock()
    store = Store(HELD_BY_DISPATCHER // 2)      # 2-part messages
    feeder = BroadcastFeeder(store, clock=clock, rate_of=lambda agency: 1_000_000)
    feeder.add("b1", "crisis", 2)
    clock.advance(1.0)                          # the agency's budget fills
    feeder.tick()
    fed_parts = sum(store.fed) * 2
    assert fed_parts >= TARGET_PARTS_S * (TICK_S + TRANSACTION_S), fed_parts
