"""The metrics of issue 11 item 8: HTTP answer time by route template and status class,
window use per operator, queue depth and oldest wait per priority, messages reaching
each status per configured agency."""

from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.task import Clock

from gateway import metrics
from gateway.gauges import StoreGauges, store_gauges_service
from gateway.http.server import PathRouter, Request, json_response


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request(method, path):
    return Request(method, path, {}, {}, b"", "127.0.0.1")


def test_http_answer_time_is_observed_per_route_template_and_status_class():
    clock = Clock()
    router = PathRouter(clock=clock)
    waiting = defer.Deferred()
    router.add_prefix("GET", "/v1/things/", "/v1/things/{id}", lambda r, rest: waiting)
    router.add("GET", "/quick", lambda r: json_response(200, {}))
    labels = {"route": "/v1/things/{id}", "status_class": "2xx"}
    count = sample("payam_http_request_seconds_count", **labels)
    slow = sample("payam_http_request_seconds_bucket", le="0.25", **labels)
    answered = router(request("GET", "/v1/things/abc"))
    clock.advance(0.3)
    waiting.callback(json_response(200, {}))
    assert answered.result.status == 200
    assert sample("payam_http_request_seconds_count", **labels) == count + 1
    assert sample("payam_http_request_seconds_bucket", le="0.25", **labels) == slow
    assert sample("payam_http_request_seconds_bucket", le="0.5", **labels) >= count + 1
    # A path that matches nothing is one "unmatched" series, not one per path.
    unmatched = sample("payam_http_request_seconds_count", route="unmatched",
                       status_class="4xx")
    for n in range(3):
        router(request("GET", f"/nothing/{n}"))
    assert sample("payam_http_request_seconds_count", route="unmatched",
                  status_class="4xx") == unmatched + 3


class Summaries:
    """A store's two gauge reads, as the test sets them."""

    def __init__(self):
        self.queue = {0: (0, 0.0), 1: (0, 0.0), 2: (0, 0.0)}
        self.counts = {}
        self.asked = []

    def queue_summary(self, now):
        self.asked.append(now)
        return defer.succeed(dict(self.queue))

    def status_counts(self):
        return defer.succeed(dict(self.counts))


def test_the_store_gauges_set_queue_depth_and_count_statuses_from_the_first_round_on():
    store, clock = Summaries(), Clock()
    agencies = ["g-tax", "g-post"]
    service = store_gauges_service(store, clock, lambda: agencies, every_s=5)
    store.counts = {("g-tax", "delivered"): 1000}       # the store's past
    store.queue = {0: (7, 12.5), 1: (0, 0.0), 2: (1, 0.5)}
    service.startService()
    try:
        assert sample("payam_queued_parts", priority="normal") == 7
        assert sample("payam_oldest_queued_seconds", priority="normal") == 12.5
        assert sample("payam_queued_parts", priority="emergency") == 1
        # Every configured agency's series exists from 0; the past is not counted.
        assert REGISTRY.get_sample_value("payam_messages_status_total",
                                         {"agency": "g-post", "status": "failed"}) == 0
        assert sample("payam_messages_status_total", agency="g-tax", status="delivered") == 0
        store.counts = {("g-tax", "delivered"): 1003, ("g-tax", "queued"): 5,
                        ("g-gone", "failed"): 2}
        store.queue = {0: (0, 0.0), 1: (0, 0.0), 2: (0, 0.0)}
        clock.advance(5)
        assert sample("payam_messages_status_total", agency="g-tax", status="delivered") == 3
        assert sample("payam_messages_status_total", agency=metrics.OTHER_AGENCY,
                      status="failed") >= 2                # bounded: not "g-gone"
        assert REGISTRY.get_sample_value("payam_messages_status_total",
                                         {"agency": "g-gone", "status": "failed"}) is None
        assert sample("payam_queued_parts", priority="normal") == 0
        assert store.asked == [0, 5]
    finally:
        service.stopService()


def test_a_failed_read_is_logged_and_the_next_round_still_comes(caplog):
    store, clock = Summaries(), Clock()
    store.queue_summary = lambda now: defer.fail(RuntimeError("disk gone"))
    gauges = StoreGauges(store, clock)
    service = store_gauges_service(store, clock, every_s=5)
    service.startService()
    try:
        clock.advance(5)
        assert service.running and "disk gone" in caplog.text
    finally:
        service.stopService()
    assert gauges.refresh().called
