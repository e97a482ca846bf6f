"""No full phone number and no message text in the daemon's log lines or /metrics, even
at DEBUG, through every path a number or a text takes (issue 11): accepted and refused
submissions, receipts, a citizen's MO. A text is logged only for an agency that
gateway.yaml's log.debug_text_agencies names. Every other end-to-end test asserts the
same at its daemon's stop (daemon_harness.Daemon.assert_private)."""

import json

import pytest
import yaml

from daemon_harness import (KEYS, Daemon, Simulator, assert_private, http_json,
                            privacy_leaks, wait_for, write_config)

TAX, JUDICIARY = KEYS["tax"], KEYS["judiciary"]
TAX_TEXT = "Your tax return 7731 is due on 1 Esfand: pay at my.tax.gov.ir"
JUDICIARY_TEXT = "ابلاغیه الکترونیک پرونده شماره ۱۴۰۲ در سامانه ثنا"
CITIZEN_TEXT = "I already paid this one last week, see receipt 5521"
NATIONAL_ID_REPLY = ("کد ملی من ۰۰۱۲۳۴۵۶۷۸ است و این نامه را با کد 0012345678 هم فرستادم. "
                     * 3)


@pytest.fixture
def simulator():
    sim = Simulator()
    yield sim
    sim.stop()


def test_the_harness_check_finds_what_it_looks_for():
    assert privacy_leaks("a 98912****567 b\nc 14 parts d") == []
    assert privacy_leaks('{"message": "to 989121234567"}') == ['{"message": "to 989121234567"}']
    assert len(privacy_leaks("x 09121234567 y\nz")) == 1
    assert len(privacy_leaks('{"m": "\\u0627\\u0628\\u0644\\u0627\\u063a\\u06cc\\u0647 '
                             'text"}', ["ابلاغیه text"])) == 1
    with pytest.raises(AssertionError, match="1 line"):
        assert_private("to 989121234567")


def _debug_config(tmp_path, simulator, debug_text_agencies=None):
    config, http_port = write_config(tmp_path, simulator.smpp_port)
    if debug_text_agencies is not None:
        settings = yaml.safe_load(config.read_text())
        settings["log"] = {"debug_text_agencies": debug_text_agencies}
        config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    return config, http_port


def _every_path(daemon, simulator):
    """Numbers and texts through acceptance, refusal, receipts and an MO."""
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "text": TAX_TEXT, "to": [
        "09121234567", "+989351234567", "۰۹۱۲۷۶۵۴۳۲۱", "00989131112233"]})
    assert code == 202, body
    code, body, _ = daemon.send(JUDICIARY, **{"from": "40400135", "to": "09124445566",
                                              "text": JUDICIARY_TEXT})
    assert code == 202, body
    first = body["messages"][0]["id"]
    # Refusals: a citizen's number as sender, a bad recipient, a bad key.
    assert daemon.send(TAX, **{"from": "09127778899", "to": "09121234567",
                               "text": TAX_TEXT})[0] == 403
    assert daemon.send(TAX, **{"from": "40401234", "to": "0912123456789",
                               "text": TAX_TEXT})[0] == 400
    assert http_json(daemon.http_port, "POST", "/v1/messages",
                     {"from": "40401234", "to": "09121234567", "text": TAX_TEXT},
                     key="not-a-key")[0] == 401
    daemon.wait_status(JUDICIARY, first, "delivered")
    answered = simulator.control("POST", "/mo", {"from": "989121234567", "to": "40401234",
                                                 "text": CITIZEN_TEXT})
    assert answered["statuses"] == [0]
    daemon.texts.add(CITIZEN_TEXT)
    # Issue 8's other inbound paths: a 4040 check (a forwarded copy), HELP, and a
    # multipart reply carrying a national ID.
    for to, text, extra in (("4040", JUDICIARY_TEXT, {}), ("40401234", "HELP", {}),
                            ("40401234", NATIONAL_ID_REPLY, {"concat": "udh8"})):
        answered = simulator.control("POST", "/mo", {"from": "989124445566", "to": to,
                                                     "text": text, **extra})
        assert set(answered["statuses"]) == {0}
    daemon.texts.update((NATIONAL_ID_REPLY, "0012345678", "۰۰۱۲۳۴۵۶۷۸"))
    wait_for(lambda: [s for s in simulator.submits() if s["source_addr"] == "4040"
                      and s["destination_addr"] == "989124445566"], 15,
             what="the 4040 answer")


def test_no_number_or_text_reaches_the_logs_or_metrics_even_at_debug(tmp_path, simulator):
    config, http_port = _debug_config(tmp_path, simulator)
    daemon = Daemon(config, http_port).start(extra=("--log-level", "debug"))
    try:
        _every_path(daemon, simulator)
    finally:
        assert daemon.stop() == 0           # asserts privacy over output and /metrics
    lines = daemon.output().splitlines()
    assert len(lines) > 20                  # DEBUG: a real amount of output was checked
    assert all(json.loads(line)["message"] is not None for line in lines)   # JSON, 1/line
    assert "payam_messages_accepted_total" in daemon.metrics_seen


def test_a_debug_flag_naming_an_agency_logs_that_agency_s_texts_only(tmp_path, simulator):
    config, http_port = _debug_config(tmp_path, simulator, debug_text_agencies=["tax"])
    daemon = Daemon(config, http_port)
    daemon.check_privacy = False            # tax's texts are logged, on purpose
    daemon.start(extra=("--log-level", "debug"))
    try:
        _every_path(daemon, simulator)
    finally:
        assert daemon.stop() == 0
    output = daemon.output()
    texts = [json.loads(line) for line in output.splitlines()
             if '"message_text"' in line]
    assert {r["agency"] for r in texts} == {"tax"}
    assert any(TAX_TEXT in r["message"] for r in texts)
    assert JUDICIARY_TEXT not in output
    assert_private(output, [JUDICIARY_TEXT])        # numbers stay masked there too
