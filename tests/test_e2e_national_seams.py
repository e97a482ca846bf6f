"""The seams of the national inbox end to end, in one real daemon (the sample apps and
directory file, `smtp:` to a loopback server, a reply webhook) and the SMSC simulator on
loopback: a message addressed by national ID falls back to the directory's email, shows
in the citizen's inbox for an app, and the app's reply reaches the agency; SIGHUP's new
directory file is the one national-ID recipients are resolved through."""

import shutil
import signal
from email import message_from_bytes
from email.policy import default
from urllib.parse import urlencode

import pytest
import yaml
from standardwebhooks import Webhook as Verifier

from daemon_harness import KEYS, REPO, Daemon, http_json, wait_for, write_config, \
    write_sample_agencies
from e2e_fixtures import receiver, sim, smtp  # noqa: F401 (fixtures)

TAX = KEYS["tax"]
APP = "demo-dolat-hamrah-key-00000000000"         # config/apps.yaml's demo key
NID, NUMBER, ADDRESS = "0012345679", "09121234567", "citizen1@example.ir"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module", params=[0, 1], ids=["one-process", "split"])
def daemon(request, tmp_path_factory, sim, smtp, receiver):
    # Split too (http.workers: 1): the HTTP worker builds its own accept path and API,
    # which must carry the directory, the apps and the fallback as the one process does.
    directory = tmp_path_factory.mktemp("seams")
    agencies_path = write_sample_agencies(directory, ("tax", receiver.port, SECRET))
    path, http_port = write_config(directory, sim.smpp_port, agencies=agencies_path,
                                   citizens={"path": str(directory / "directory.yaml")})
    shutil.copy(REPO / "config" / "apps.yaml", directory / "apps.yaml")
    shutil.copy(REPO / "config" / "directory.yaml", directory / "directory.yaml")
    config = yaml.safe_load(path.read_text())
    config["apps"] = str(directory / "apps.yaml")
    config["http"]["workers"] = request.param
    config["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "from": "notify@payam.gov.ir",
                      "timeout_s": 5, "max_attempts": 3, "retry_s": [1, 2]}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    running = Daemon(path, http_port).start()
    yield running
    assert running.stop() == 0
    assert ADDRESS not in running.output()


def citizen_messages(daemon, national_id=NID, msisdn=NUMBER):
    query = urlencode({"national_id": national_id, "msisdn": msisdn})
    return http_json(daemon.http_port, "GET", "/v1/citizen/messages?" + query, key=APP)


def test_a_national_id_with_the_email_fallback_is_emailed_to_the_directorys_address(
        sim, daemon, smtp):
    text = "ابلاغ مالیاتی: پیامک شما نرسید"
    sim.behave(fail_every=1, fail_status=0x0B)           # ESME_RINVDSTADR: permanent
    try:
        code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": {"national_id": NID},
                                          "text": text, "fallback": "email"})
        assert code == 202, sent
        message_id = sent["messages"][0]["id"]
        daemon.wait_status(TAX, message_id, "failed")
    finally:
        sim.behave(fail_every=0)
    mails = wait_for(lambda: [m for m in smtp.received if text.encode() in m[2]
                              or message_id.encode() in m[2]] or None, 20, what="the email")
    [(sender, recipients, raw)] = mails
    assert recipients == [ADDRESS]
    mail = message_from_bytes(raw, policy=default)
    assert mail.get_content().replace("\r\n", "\n").rstrip("\n") == text

    def email_sent():
        body = daemon.status(TAX, message_id)[1]
        return body if body["channels"]["email"] == "sent" else None
    assert wait_for(email_sent, 10, what="email sent")["channels"] == \
        {"sms": "failed", "email": "sent"}


def test_a_message_by_national_id_is_in_the_citizens_inbox_and_the_app_reply_reaches_the_agency(
        daemon, receiver):
    text = "مالیات شما به شناسه ملی ثبت شد"
    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": [{"national_id": NID}],
                                      "text": text})
    assert code == 202, sent
    message_id = sent["messages"][0]["id"]
    daemon.wait_status(TAX, message_id, "delivered")
    code, page, _ = citizen_messages(daemon)
    assert code == 200, page
    [shown] = [m for m in page["messages"] if m["id"] == message_id]
    assert (shown["text"], shown["agency"], shown["status"]) == (text, "tax", "delivered")

    reply = {"national_id": NID, "msisdn": NUMBER, "in_reply_to": message_id,
             "text": "دریافت شد"}
    daemon.texts.add(reply["text"])
    code, filed, _ = http_json(daemon.http_port, "POST", "/v1/citizen/replies", reply, key=APP)
    assert code == 201, filed
    code, inbox, _ = http_json(daemon.http_port, "GET", "/v1/inbox", key=TAX)
    [entry] = [m for m in inbox["messages"] if m["id"] == filed["id"]]
    assert (entry["channel"], entry["in_reply_to"], entry["from"]) == (
        "app", message_id, "989121234567")

    def pushed():
        return next(((headers, body) for headers, body in receiver.seen
                     if headers["webhook-id"] == filed["id"]), None)
    headers, body = wait_for(pushed, 15, what="the webhook POST")
    assert Verifier(SECRET).verify(body, headers) == entry


def test_sighup_reloads_the_directory_file_for_recipients_and_apps(sim, daemon):
    new_nid, new_number = "2233445562", "09127778899"     # a valid check digit
    path = daemon.config_path.parent / "directory.yaml"
    with open(path, "a") as directory:
        directory.write(f'- {{national_id: "{new_nid}", msisdn: "{new_number}"}}\n')
    daemon.national_ids.add(new_nid)
    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": {"national_id": new_nid},
                                      "text": "before the reload"})
    assert code == 202 and sent["messages"][0]["status"] == "failed", sent
    assert citizen_messages(daemon, new_nid, new_number)[0] == 403

    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: citizen_messages(daemon, new_nid, new_number)[0] == 200, 10,
             what="the reloaded directory")
    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": {"national_id": new_nid},
                                      "text": "after the reload"})
    assert code == 202 and sent["messages"][0]["status"] == "queued", sent
    daemon.wait_status(TAX, sent["messages"][0]["id"], "delivered")
    assert any(s.get("destination_addr") == "989127778899" for s in sim.submits())
