"""metrics.TurnCounts: a reactor turn's adds reach their metrics once, at its end, or
when this thread reads the registry; buckets and sums as Histogram.observe gives."""

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, REGISTRY
from twisted.internet.task import Clock

from gateway import metrics


def test_adds_are_written_at_the_turns_end_summed_per_series():
    registry = CollectorRegistry()
    counter = Counter("t_turn_adds_total", "t", ["k"], registry=registry)
    clock = Clock()
    turn = metrics.TurnCounts(clock)
    add_a, add_b = turn.adder(counter.labels("a")), turn.adder(counter.labels("b"))
    for _ in range(3):
        add_a(1)
    add_b(5)
    assert registry.get_sample_value("t_turn_adds_total", {"k": "a"}) == 0
    assert len(clock.getDelayedCalls()) == 1          # one write-out a turn
    clock.advance(0)
    assert registry.get_sample_value("t_turn_adds_total", {"k": "a"}) == 3
    assert registry.get_sample_value("t_turn_adds_total", {"k": "b"}) == 5
    add_a(2)
    clock.advance(0)
    assert registry.get_sample_value("t_turn_adds_total", {"k": "a"}) == 5
    assert clock.getDelayedCalls() == []


def test_observes_land_in_the_buckets_histogram_observe_picks():
    registry = CollectorRegistry()
    direct = Histogram("t_direct_seconds", "t", buckets=(0.01, 0.1, 1), registry=registry)
    batched = Histogram("t_batched_seconds", "t", buckets=(0.01, 0.1, 1), registry=registry)
    clock = Clock()
    observe = metrics.TurnCounts(clock).observer(batched)
    for amount in (0.0, 0.01, 0.05, 0.1, 0.5, 1, 7):
        direct.observe(amount)
        observe(amount)
    clock.advance(0)
    for le in ("0.01", "0.1", "1.0", "+Inf"):
        assert (registry.get_sample_value("t_batched_seconds_bucket", {"le": le})
                == registry.get_sample_value("t_direct_seconds_bucket", {"le": le}))
    assert abs(registry.get_sample_value("t_batched_seconds_sum") - 8.66) < 1e-9
    assert registry.get_sample_value("t_batched_seconds_count") == 7


def test_reading_the_registry_on_the_counting_thread_writes_what_is_pending():
    clock = Clock()
    turn = metrics.TurnCounts(clock)
    labels = {"route": "/t/turn", "status": "202"}
    before = REGISTRY.get_sample_value("payam_http_requests_total", labels) or 0
    turn.adder(metrics.HTTP_REQUESTS.labels("/t/turn", 202))(1)
    seen = []
    other = threading.Thread(target=lambda: seen.append(
        REGISTRY.get_sample_value("payam_http_requests_total", labels) or 0))
    other.start()
    other.join()
    assert seen == [before]                  # another thread: at most a turn behind
    assert REGISTRY.get_sample_value("payam_http_requests_total", labels) == before + 1
    assert not any(call.active() for call in clock.getDelayedCalls())
