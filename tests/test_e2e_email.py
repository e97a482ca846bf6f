"""The email fallback end to end: the real daemon (with `smtp:` and the demo's directory
file) and the SMSC simulator as subprocesses on loopback; the simulator refuses every
submit_sm with a permanent error, and the email reaches a small SMTP server in this
process (a thread) with the agency's text intact. The daemon's output carries neither
the address nor the text (the harness checks numbers and texts at stop)."""

from email import message_from_bytes
from email.policy import default

import pytest
import yaml

from daemon_harness import KEYS, REPO, Daemon, wait_for, write_config
from e2e_fixtures import sim, smtp  # noqa: F401 (fixtures)

TAX = KEYS["tax"]
TEXT = "شهروند گرامی، اظهارنامه\u200cی مالیاتی شما ثبت نشد."
ADDRESS = "citizen1@example.ir"            # the demo directory's entry for 09121234567


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim, smtp):
    directory = tmp_path_factory.mktemp("email")
    path, http_port = write_config(directory, sim.smpp_port)
    config = yaml.safe_load(path.read_text())
    config["directory"] = {"path": str(REPO / "gateway" / "demo" / "directory.yaml")}
    config["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "from": "notify@payam.gov.ir",
                      "timeout_s": 5, "max_attempts": 3, "retry_s": [1, 2]}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    running = Daemon(path, http_port).start()
    yield running
    assert running.stop() == 0
    assert ADDRESS not in running.output()


def test_an_sms_the_smsc_refuses_is_emailed_and_a_delivered_one_is_not(sim, daemon, smtp):
    sim.behave(fail_every=1, fail_status=0x0B)           # ESME_RINVDSTADR: permanent
    try:
        code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                          "text": TEXT, "fallback": "email"})
        assert code == 202, sent
        message_id = sent["messages"][0]["id"]
        daemon.wait_status(TAX, message_id, "failed")
    finally:
        sim.behave(fail_every=0)
    wait_for(lambda: smtp.received, 20, what="the fallback email")
    [(sender, recipients, raw)] = smtp.received
    assert (sender, recipients) == ("notify@payam.gov.ir", [ADDRESS])
    mail = message_from_bytes(raw, policy=default)
    assert "سازمان امور مالیاتی" in mail["Subject"]
    assert mail["Message-ID"] == f"<{message_id}.sms-fallback@payam.gov.ir>"
    assert mail.get_content().replace("\r\n", "\n").rstrip("\n") == TEXT

    def email_sent():
        body = daemon.status(TAX, message_id)[1]
        return body if body["channels"]["email"] == "sent" else None
    assert wait_for(email_sent, 10, what="email sent")["channels"] == \
        {"sms": "failed", "email": "sent"}

    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                      "text": TEXT + " ۲", "fallback": "email"})
    assert code == 202
    delivered = daemon.wait_status(TAX, sent["messages"][0]["id"], "delivered")
    assert delivered["channels"] == {"sms": "delivered", "email": "not_needed"}
    assert len(smtp.received) == 1

    assert 'payam_email_sent_total{result="sent"} 1.0' in daemon.scrape_metrics()
