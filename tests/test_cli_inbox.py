"""`payam-gateway inbox`: the unrouted box or an agency's inbox, read-only from the
store (safe beside a running daemon); citizens' numbers masked unless asked."""

import json

from threaded_clock import ThreadedClock

from daemon_harness import write_config
from gateway import cli
from gateway.config.load import load_gateway_config
from gateway.model import InboxEntry
from gateway.store import Store


def filed_store(tmp_path):
    config_path, _ = write_config(tmp_path, 2775)
    config = load_gateway_config(config_path)
    clock = ThreadedClock()
    store = Store(config.store_path, clock, commit_interval=0.0)
    store.open()
    clock.wait(store.file_inbox([
        InboxEntry(agency=None, number="40405", citizen="989121234567", text="کسی هست؟",
                   channel="sms", received_at=clock.seconds(), operator="mci"),
        InboxEntry(agency="tax", number="40401234", citizen="989351234567", text="بله",
                   channel="sms", received_at=clock.seconds(), operator="irancell")]))
    clock.wait(store.close())
    return str(config_path)


def test_the_unrouted_box_is_listed_with_masked_numbers(tmp_path, capsys):
    config = filed_store(tmp_path)
    assert cli.main(["inbox", "--unrouted", "--json", "-c", config]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["to"], row["from"], row["text"], row["operator"]) == (
        "40405", "98912****567", "کسی هست؟", "mci")
    assert cli.main(["inbox", "--agency", "tax", "--full-numbers", "-c", config]) == 0
    out = capsys.readouterr().out
    assert "989351234567" in out and "بله" in out and "کسی" not in out


def test_it_says_which_box_and_knows_the_agencies(tmp_path, capsys):
    config = filed_store(tmp_path)
    assert cli.main(["inbox", "-c", config]) == 2
    assert cli.main(["inbox", "--agency", "nosuch", "-c", config]) == 2
    assert "no agency 'nosuch'" in capsys.readouterr().err
