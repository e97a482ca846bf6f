"""The metrics of issue 11 item 8 as the running daemon serves them at /metrics."""

import re

import pytest

from daemon_harness import KEYS, Daemon, Simulator, wait_for, write_config

TAX = KEYS["tax"]


@pytest.fixture
def simulator():
    sim = Simulator()
    yield sim
    sim.stop()


def value(scraped, series):
    match = re.search("^" + re.escape(series) + r" ([0-9.e+-]+)$", scraped, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_the_daemon_serves_latency_window_queue_and_per_agency_status_metrics(
        tmp_path, simulator):
    config, http_port = write_config(tmp_path, simulator.smpp_port, window=10)
    daemon = Daemon(config, http_port).start()
    try:
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                            "text": "metrics check"})
        assert code == 202, body
        daemon.wait_status(TAX, body["messages"][0]["id"], "delivered")
        # The store's counts are read every 5 s: the delivery shows within a round.
        scraped = wait_for(lambda: (lambda text: text if value(
            text, 'payam_messages_status_total{agency="tax",status="delivered"}') == 1
            else None)(daemon.scrape_metrics()), 15, what="delivered counted for tax")
        assert value(scraped, 'payam_messages_status_total{agency="tax",status="submitted"}') == 1
        assert value(scraped, 'payam_messages_status_total{agency="post",status="failed"}') == 0
        assert value(scraped, 'payam_window_size{operator="mci"}') == 10
        assert value(scraped, 'payam_window_in_flight{operator="mci"}') == 0
        assert value(scraped, 'payam_queued_parts{priority="normal"}') == 0
        assert value(scraped, 'payam_oldest_queued_seconds{priority="emergency"}') == 0
        assert value(scraped, 'payam_http_request_seconds_count{route="/v1/messages",'
                              'status_class="2xx"}') == 1
    finally:
        assert daemon.stop() == 0
