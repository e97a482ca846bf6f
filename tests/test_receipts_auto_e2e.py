"""End to end over loopback with the default `receipt_ids: auto` (the key left out).

The built-in simulator's ids are hex numbers with a letter, its receipts repeat them:
such a receipt can be read one way only, so it is applied at once, without waiting for
the operator's id base to be learned (gateway/store/receipts.py).  Before, one message
stayed `submitted` until ten receipts had come of age (a minute each).
"""

import pytest

from daemon_harness import KEYS, Daemon, Simulator, write_config

TAX = KEYS["tax"]
# Generous for a loaded machine; without the fast path the message is never delivered.
DELIVERED_WITHIN_S = 20


@pytest.mark.parametrize("simulator_args", [
    ("--receipt-delay", "0.05"),                        # the receipt after the resp
    ("--receipt-delay", "0", "--ack-delay", "0.3"),     # ... overtaking the resp
], ids=["receipt-after-resp", "receipt-before-resp"])
def test_one_message_is_delivered_with_the_default_auto_receipt_ids(
        tmp_path, simulator_args):
    sim = Simulator(*simulator_args)
    try:
        config, http_port = write_config(tmp_path, sim.smpp_port, receipt_ids=None)
        assert "receipt_ids" not in config.read_text()
        daemon = Daemon(config, http_port).start()
        try:
            code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                              "text": "Your tax return is due."})
            assert code == 202, body
            [msg] = body["messages"]
            final = daemon.wait_status(TAX, msg["id"], "delivered",
                                       timeout=DELIVERED_WITHIN_S)
            assert final["operator"] == "mci"
            [submit] = sim.submits()
            assert any(ch.isalpha() for ch in submit["message_id"])
        finally:
            daemon.stop()
    finally:
        sim.stop()
