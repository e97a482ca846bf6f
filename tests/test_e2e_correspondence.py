"""Correspondence end to end: the real daemon and the built-in SMSC simulator as
subprocesses on loopback, driven through the simulator's control API (MO injection)
and the agency API; a reply-webhook receiver in this process checks signatures with the
`standardwebhooks` package."""

import json
import subprocess

import pytest
from standardwebhooks import Webhook as Verifier

from daemon_harness import KEYS, PYTHON, REPO, Daemon, http_json, wait_for, \
    write_config, write_sample_agencies
from e2e_fixtures import receiver, sim  # noqa: F401 (fixtures)

TAX, POST, JUDICIARY = KEYS["tax"], KEYS["post"], KEYS["judiciary"]
CITIZEN = "989121234567"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PERSIAN_3_PARTS = ("شهروند گرامی، پاسخ شما به نامه\u200cی شماره ۱۲۳۴ دریافت شد. " * 3
                   + "با سپاس از همکاری شما")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim, receiver):
    directory = tmp_path_factory.mktemp("corr")
    agencies_path = write_sample_agencies(directory, ("tax", receiver.port, SECRET), post={"opt_out": True})
    config, http_port = write_config(directory, sim.smpp_port, agencies=agencies_path)
    running = Daemon(config, http_port).start()
    yield running
    assert running.stop() == 0


def mo(sim, text, to="40401234", **extra):
    answer = sim.control("POST", "/mo", {"from": CITIZEN, "to": to, "text": text, **extra})
    assert set(answer["statuses"]) == {0}, answer
    return answer


def inbox(daemon, key, after=None):
    path = "/v1/inbox" + (f"?after={after}" if after else "")
    code, body, _ = http_json(daemon.http_port, "GET", path, key=key)
    assert code == 200, body
    return body


def wait_inbox_text(daemon, key, text):
    def found():
        return next((m for m in inbox(daemon, key)["messages"] if m["text"] == text), None)
    return wait_for(found, 15, what=f"inbox message {text[:20]!r}")


def test_gsm_and_ucs2_replies_land_in_the_right_inbox_with_in_reply_to(sim, daemon):
    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                      "text": "Your tax return is due."})
    assert code == 202
    sent_id = sent["messages"][0]["id"]
    daemon.wait_status(TAX, sent_id, "delivered")
    mo(sim, "Baleh, pardakht kardam")
    sim.behave(mo_coding="ucs2")
    try:
        mo(sim, "پرداخت\u200cشد، سپاس")
    finally:
        sim.behave(mo_coding="auto")
    gsm = wait_inbox_text(daemon, TAX, "Baleh, pardakht kardam")
    ucs2 = wait_inbox_text(daemon, TAX, "پرداخت\u200cشد، سپاس")
    for message in (gsm, ucs2):
        assert (message["from"], message["to"], message["channel"], message["in_reply_to"]) \
            == (CITIZEN, "40401234", "sms", sent_id)


def test_a_three_part_persian_mo_out_of_order_with_a_repeat_is_stored_once_whole(
        sim, daemon):
    answer = mo(sim, PERSIAN_3_PARTS, order=[3, 1, 2], repeat=[2])
    assert answer["parts"] == 4
    wait_inbox_text(daemon, TAX, PERSIAN_3_PARTS)
    texts = [m["text"] for m in inbox(daemon, TAX)["messages"]]
    assert texts.count(PERSIAN_3_PARTS) == 1


@pytest.mark.parametrize("concat, command", [("udh16", "deliver_sm"), ("sar", "data_sm")])
def test_16_bit_and_sar_concatenation_and_data_sm(sim, daemon, concat, command):
    text = f"{concat}/{command}: " + PERSIAN_3_PARTS[:150]        # 3 parts still
    mo(sim, text, concat=concat, command=command, order=[2, 3, 1])
    wait_inbox_text(daemon, TAX, text)


def test_an_agency_cannot_see_another_agencys_inbox(sim, daemon):
    mo(sim, "for the tax office only")
    wait_inbox_text(daemon, TAX, "for the tax office only")
    assert all(m["to"] == "40400135" for m in inbox(daemon, JUDICIARY)["messages"])
    assert "for the tax office only" not in [m["text"] for m in
                                             inbox(daemon, JUDICIARY)["messages"]]


def test_the_webhook_gets_each_reply_signed_per_standard_webhooks(sim, daemon, receiver):
    mo(sim, "webhook me")
    message = wait_inbox_text(daemon, TAX, "webhook me")

    def pushed():
        for headers, body in receiver.seen:
            if headers["webhook-id"] == message["id"]:
                return headers, body
    headers, body = wait_for(pushed, 15, what="the webhook POST")
    assert Verifier(SECRET).verify(body, headers) == message


def test_an_mo_to_an_unowned_number_is_kept_unrouted_for_admins(sim, daemon):
    mo(sim, "who is 40405?", to="40405")

    def listed():
        out = subprocess.run(
            [PYTHON, "-m", "gateway.cli", "inbox", "--unrouted", "--json",
             "-c", str(daemon.config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        return next((r for r in rows if r["text"] == "who is 40405?"), None)
    row = wait_for(listed, 15, interval=0.5, what="the unrouted message")
    assert row["to"] == "40405" and row["from"] == "98912****567"      # masked


def submits_to_citizen_from(sim, sender):
    return [s for s in sim.submits()
            if s["destination_addr"] == CITIZEN and s["source_addr"] == sender]


def test_help_is_answered_from_the_same_number(sim, daemon):
    before = len(submits_to_citizen_from(sim, "40401111"))
    mo(sim, "راهنما", to="40401111")
    answers = wait_for(lambda: submits_to_citizen_from(sim, "40401111")[before:], 15,
                       what="the HELP answer")
    assert "شرکت ملی پست" in answers[0]["text"] and "40401111" in answers[0]["text"]
    assert "راهنما" not in [m["text"] for m in inbox(daemon, POST)["messages"]]


def test_stop_is_honoured_only_where_the_agency_allows_it(sim, daemon):
    mo(sim, "STOP", to="40401111")               # post: opt_out true
    mo(sim, "STOP", to="40401234")               # tax: an ordinary reply
    wait_inbox_text(daemon, TAX, "STOP")

    def opted_out():
        code, body, _ = daemon.send(POST, **{"from": "40401111", "to": "09121234567",
                                           "text": "routine notice"})
        assert code == 202
        code, got, _ = daemon.status(POST, body["messages"][0]["id"])
        return got if got["status"] == "failed" else None
    got = wait_for(opted_out, 15, interval=0.3, what="the opt-out taking effect")
    assert got["error"] == "opted_out"
    code, urgent, _ = daemon.send(POST, **{"from": "40401111", "to": "09121234567",
                                         "text": "urgent notice", "priority": "emergency"})
    daemon.wait_status(POST, urgent["messages"][0]["id"], "delivered")
    code, other, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                       "text": "routine from tax"})
    daemon.wait_status(TAX, other["messages"][0]["id"], "delivered")
