"""The national inbox end to end: the real daemon (apps.yaml and directory.yaml as the
samples ship them) and the SMSC simulator on loopback. A partner app reads what two
agencies sent a citizen and nothing of another's, a mismatched pair is refused, a reply
from the app reaches the agency's inbox and its signed webhook, and SIGHUP reloads the
apps' keys."""

import hashlib
import shutil
import signal
from urllib.parse import urlencode

import pytest
import yaml
from standardwebhooks import Webhook as Verifier

from daemon_harness import KEYS, REPO, Daemon, http_json, wait_for, write_config, \
    write_sample_agencies
from e2e_fixtures import receiver, sim  # noqa: F401 (fixtures)

TAX, JUDICIARY = KEYS["tax"], KEYS["judiciary"]
APP = "demo-dolat-hamrah-key-00000000000"         # config/apps.yaml's demo key
NID, NUMBER = "0012345679", "09121234567"         # config/directory.yaml's first citizen
OTHER_NUMBER = "09351234567"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim, receiver):
    directory = tmp_path_factory.mktemp("national")
    agencies_path = write_sample_agencies(directory, ("tax", receiver.port, SECRET))
    config, http_port = write_config(directory, sim.smpp_port, agencies=agencies_path)
    shutil.copy(REPO / "config" / "apps.yaml", directory / "apps.yaml")
    shutil.copy(REPO / "config" / "directory.yaml", directory / "directory.yaml")
    with open(config, "a") as gateway:
        gateway.write("apps: apps.yaml\ndirectory: {path: directory.yaml}\n")
    running = Daemon(config, http_port).start()
    yield running
    assert running.stop() == 0


def citizen_messages(daemon, key=APP, **query):
    query = {"national_id": NID, "msisdn": NUMBER, **query}
    return http_json(daemon.http_port, "GET", "/v1/citizen/messages?" + urlencode(query),
                     key=key)


def sent(daemon, key, sender, text, to=NUMBER):
    code, body, _ = daemon.send(key, **{"from": sender, "to": to, "text": text})
    assert code == 202, body
    return body["messages"][0]["id"]


def test_an_app_reads_what_two_agencies_sent_and_nothing_of_another_citizens(daemon):
    tax = sent(daemon, TAX, "40401234", "مالیات شما ثبت شد")
    judiciary = sent(daemon, JUDICIARY, "40400135", "ابلاغیه قضایی شما صادر شد")
    sent(daemon, TAX, "40401234", "for another citizen entirely", to=OTHER_NUMBER)
    daemon.wait_status(JUDICIARY, judiciary, "delivered")
    code, page, _ = citizen_messages(daemon, limit=1)
    assert code == 200, page
    [newest] = page["messages"]
    assert (newest["id"], newest["agency"], newest["from"], newest["status"]) == (
        judiciary, "judiciary", "40400135", "delivered")
    code, rest, _ = citizen_messages(daemon, after=page["next"])
    assert code == 200 and rest["messages"][0]["id"] == tax
    assert rest["messages"][0]["agency_name"] == "سازمان امور مالیاتی"
    everything = [m["text"] for m in citizen_messages(daemon)[1]["messages"]]
    assert "for another citizen entirely" not in everything


def test_a_broadcast_shows_with_its_text_to_each_of_its_citizens(daemon):
    text = "اطلاعیه همگانی اداره پست"
    daemon.texts.add(text)
    code, body, _ = http_json(daemon.http_port, "POST", "/v1/broadcasts",
                              {"from": "40401111", "text": text,
                               "to": [NUMBER, OTHER_NUMBER, "09191112233"]},
                              key=KEYS["post"])
    assert code == 202, body

    def shown():
        found = [m for m in citizen_messages(daemon)[1]["messages"] if m["text"] == text]
        return found or None
    [message] = wait_for(shown, 15, what="the broadcast in the citizen's inbox")
    assert (message["agency"], message["from"]) == ("post", "40401111")
    assert message["id"].startswith(body["id"])


def test_a_mismatched_pair_and_keys_of_the_other_kind_are_refused(daemon):
    code, body, _ = citizen_messages(daemon, msisdn=OTHER_NUMBER)
    assert (code, body["error"]["code"]) == (403, "identity_mismatch")
    code, body, _ = citizen_messages(daemon, national_id="0012345678")
    assert (code, body["error"]["code"]) == (400, "invalid_national_id")
    assert citizen_messages(daemon, key=TAX)[0] == 401
    code, _, _ = daemon.send(APP, **{"from": "40401234", "to": NUMBER, "text": "x"})
    assert code == 401
    wait_for(lambda: "identity mismatch" in daemon.output(), 10, what="the warning")
    assert NID not in daemon.output() and "0012345678" not in daemon.output()


def test_an_app_reply_reaches_the_agencys_inbox_and_its_webhook(daemon, receiver):
    answered = sent(daemon, TAX, "40401234", "لطفاً تأیید کنید")
    reply = {"national_id": NID, "msisdn": NUMBER, "in_reply_to": answered,
             "text": "تأیید می‌کنم"}
    code, filed, _ = http_json(daemon.http_port, "POST", "/v1/citizen/replies", reply, key=APP)
    assert code == 201, filed
    code, inbox, _ = http_json(daemon.http_port, "GET", "/v1/inbox", key=TAX)
    [shown] = [m for m in inbox["messages"] if m["id"] == filed["id"]]
    assert (shown["channel"], shown["in_reply_to"], shown["to"], shown["from"]) == (
        "app", answered, "40401234", "989121234567")

    def pushed():
        return next(((headers, body) for headers, body in receiver.seen
                     if headers["webhook-id"] == filed["id"]), None)
    headers, body = wait_for(pushed, 15, what="the webhook POST")
    assert Verifier(SECRET).verify(body, headers) == shown


def test_sighup_reloads_the_apps_keys(daemon):
    new_key = "rotated-dolat-hamrah-key-0123456789"
    apps_path = daemon.config_path.parent / "apps.yaml"
    document = yaml.safe_load(apps_path.read_text())
    document["apps"][0]["keys"] = ["sha256:" + hashlib.sha256(new_key.encode()).hexdigest()]
    apps_path.write_text(yaml.safe_dump(document, allow_unicode=True))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: citizen_messages(daemon, key=new_key)[0] == 200, 10, what="reload")
    assert citizen_messages(daemon, key=APP)[0] == 401
