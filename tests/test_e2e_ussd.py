"""USSD end to end with the daemon and the simulator as processes: the simulator's
control API dials and answers as a citizen's handset; a filing is read back through the
agency API's inbox and pushed to the agency's reply webhook; SIGHUP reloads the menus (and
a bad menu file keeps the running ones)."""

import json
import signal
import sqlite3

import pytest
import yaml
from standardwebhooks import Webhook as Verifier

from daemon_harness import KEYS, Daemon, Simulator, http_json, sample_agencies, wait_for
from ussd_loopback import REPO, write_gateway
from webhook_receiver import WebhookReceiver

JUDICIARY = (REPO / "config" / "ussd" / "judiciary.yaml").read_text(encoding="utf-8")
CITIZEN = "989121234567"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver():
    webhook = WebhookReceiver()
    yield webhook
    webhook.close()


@pytest.fixture
def sim():
    simulator = Simulator()
    yield simulator
    simulator.stop()


@pytest.fixture
def daemon(tmp_path, sim, receiver):
    agencies = sample_agencies(("judiciary", receiver.port, SECRET))
    path = write_gateway(tmp_path, sim.smpp_port, {"judiciary.yaml": JUDICIARY},
                         agencies=yaml.safe_dump(agencies, allow_unicode=True))
    port = int(yaml.safe_load(path.read_text())["http"]["listen"].rsplit(":", 1)[1])
    d = Daemon(path, port).start()
    yield d
    d.stop()


def handset(sim, action, **body):
    return sim.control("POST", f"/ussd/{action}", body)


def test_a_citizen_files_a_request_through_the_simulators_handset(sim, daemon):
    home = handset(sim, "dial", **{"from": CITIZEN, "code": "*4*0135#"})
    assert "قوه قضاییه" in home["text"] and not home["end"] and home["op"] == 2
    handset(sim, "send", **{"from": CITIZEN, "text": "1"})
    handset(sim, "send", **{"from": CITIZEN, "text": "1"})
    wrong = handset(sim, "send", **{"from": CITIZEN, "text": "0067749827"})
    assert "نادرست" in wrong["text"] and not wrong["end"]
    done = handset(sim, "send", **{"from": CITIZEN, "text": "0067749828"})
    assert done["end"] and done["op"] == 17 and done["its_session_info"] & 1
    tracking = done["text"].rsplit(" ", 1)[1]
    db = sqlite3.connect(daemon.db_path)
    try:
        ((agency, channel, text),) = db.execute(
            "SELECT agency, channel, text FROM inbox").fetchall()
    finally:
        db.close()
    assert (agency, channel) == ("judiciary", "ussd")
    assert json.loads(text)["tracking"] == tracking
    # the SMS with the tracking number, from the judiciary's 4040 number
    sms = wait_for(lambda: [s for s in sim.submits() if s["destination_addr"] == CITIZEN
                            and "0x0501" not in s["tlvs"]], what="the tracking SMS")
    assert tracking in sms[0]["text"] and sms[0]["source_addr"] == "40400135"


def test_a_filing_is_in_the_agency_api_inbox_and_pushed_to_its_webhook(sim, daemon,
                                                                       receiver):
    handset(sim, "dial", **{"from": CITIZEN, "code": "*4*0135*1*2#"})
    done = handset(sim, "send", **{"from": CITIZEN, "text": "0067749828"})
    assert done["end"]
    tracking = done["text"].rsplit(" ", 1)[1]
    code, body, _ = http_json(daemon.http_port, "GET", "/v1/inbox",
                              key=KEYS["judiciary"])
    assert code == 200, body
    (message,) = body["messages"]
    assert (message["from"], message["to"], message["channel"], message["in_reply_to"]) \
        == (CITIZEN, "40400135", "ussd", None)
    filed = json.loads(message["text"])
    assert (filed["tracking"], filed["values"]) == (tracking,
                                                    {"national_id": "0067749828"})
    code, other, _ = http_json(daemon.http_port, "GET", "/v1/inbox", key=KEYS["tax"])
    assert code == 200 and other["messages"] == []

    (headers, raw), = wait_for(lambda: list(receiver.seen), what="the webhook push")
    assert Verifier(SECRET).verify(raw, headers) == message
    assert headers["webhook-id"] == message["id"]


def test_sighup_reloads_menus_and_keeps_them_on_a_bad_file(sim, daemon):
    menu = daemon.config_path.parent / "ussd" / "judiciary.yaml"
    menu.write_text(JUDICIARY.replace("خدمات الکترونیک", "خدمات نو"), encoding="utf-8")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "USSD menus" in daemon.output(), what="the reload")
    assert "خدمات نو" in handset(sim, "dial", **{"from": CITIZEN, "code": "*4*0135#"})["text"]
    handset(sim, "abort", **{"from": CITIZEN})
    menu.write_text(JUDICIARY.replace("next: filed", "next: nowhere"), encoding="utf-8")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.output(), what="the refusal")
    assert "judiciary.yaml" in daemon.output().split("reload refused", 1)[1]
    assert "خدمات نو" in handset(sim, "dial", **{"from": CITIZEN, "code": "*4*0135#"})["text"]
