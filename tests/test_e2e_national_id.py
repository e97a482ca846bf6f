"""End to end over loopback: an agency addresses citizens by national ID; the daemon
resolves them through its directory file and the SMS reaches, at the simulator, the
number the directory gave. The agency is shown a masked number, and neither the ID nor
the number reaches the daemon's output."""

import pytest
import yaml

from daemon_harness import KEYS, REPO, Daemon, Simulator, wait_for, write_config

TAX = KEYS["tax"]
CITIZEN_ID, CITIZEN_NUMBER = "0012345679", "989121234567"     # config/directory.yaml
IRANCELL_ID, IRANCELL_NUMBER = "1234567891", "989351234567"
UNKNOWN_ID = "0000000019"              # a valid check digit, in no directory


@pytest.fixture
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


@pytest.fixture
def daemon(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    settings = yaml.safe_load(config.read_text())
    settings["directory"] = {"path": str(REPO / "config" / "directory.yaml")}
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    d = Daemon(config, http_port).start()
    yield d
    d.stop()
    for national_id in (CITIZEN_ID, IRANCELL_ID, UNKNOWN_ID):
        assert national_id not in d.output()


def test_an_sms_to_a_national_id_reaches_the_number_the_directory_gave(sim, daemon):
    code, body, _ = daemon.send(TAX, **{
        "from": "40401234", "text": "Your tax return is due.",
        "to": [{"national_id": CITIZEN_ID}, {"national_id": "۱۲۳۴۵۶۷۸۹۱"},
               {"national_id": UNKNOWN_ID}]})
    assert code == 202, body
    mci, irancell, unknown = body["messages"]
    assert (mci["to"], mci["national_id"], mci["status"]) == ("98912****567", CITIZEN_ID,
                                                              "queued")
    assert irancell["to"] == "98935****567"
    assert (unknown["to"], unknown["status"], unknown["error"]) == (None, "failed",
                                                                   "unknown_citizen")

    for number in (CITIZEN_NUMBER, IRANCELL_NUMBER):
        [seen] = wait_for(lambda: [s for s in sim.submits()
                                   if s["destination_addr"] == number],
                          what=f"submit_sm to {number[:5]}")
        assert seen["text"] == "Your tax return is due."
    final = daemon.wait_status(TAX, mci["id"], "delivered")
    assert (final["to"], final["national_id"], final["operator"]) == (
        "98912****567", CITIZEN_ID, "mci")
    assert daemon.wait_status(TAX, irancell["id"], "delivered")["operator"] == "irancell"
    _, shown, _ = daemon.status(TAX, unknown["id"])
    assert (shown["status"], shown["error"], shown["to"]) == ("failed", "unknown_citizen",
                                                             None)
    assert len(sim.submits()) == 2                  # nothing for the unknown citizen


def test_a_bad_check_digit_is_invalid_national_id_and_nothing_is_sent(sim, daemon):
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "text": "x",
                                        "to": ["09121234567", {"national_id": "0012345678"}]})
    assert (code, body["error"]["code"]) == (400, "invalid_national_id")
    assert "to[1]" in body["error"]["message"]
    assert sim.submits() == []
