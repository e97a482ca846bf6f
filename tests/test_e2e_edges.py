"""Issue 11 items 3, 4 and 9 through the real daemon (`payam-gateway run`), not an
in-process API: an unreachable SMSC is one WARNING naming the operator, its address and
the error (not a line per attempt, no traceback), /healthz says `degraded` meanwhile;
HEAD, 415, 409; Kannel's sendsms in the shapes of Kannel's user guide, through the
same checks (sender, links) and queue as POST /v1/messages."""

import http.client
import json
import time
from urllib.parse import quote, urlencode

import jsonschema_rs
import pytest
import yaml

from daemon_harness import KEYS, Daemon, Simulator, free_port, http_json, wait_for, write_config
from gateway.http import openapi

TAX = KEYS["tax"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    sim = Simulator("--receipt-delay", "0.05")
    directory = tmp_path_factory.mktemp("edges")
    config, http_port = write_config(directory, sim.smpp_port)
    settings = yaml.safe_load(config.read_text())
    dead_port = free_port()                     # nothing listens there
    for operator in settings["operators"]:
        if operator["name"] == "rightel":
            operator["port"] = dead_port
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    daemon = Daemon(config, http_port).start(wait_bound=False)
    wait_for(lambda: all(daemon.health()["operators"][name]["bound"] >= 1
                         for name in ("mci", "irancell")), 30, what="mci and irancell bound")
    yield daemon, sim, dead_port
    try:
        assert daemon.stop() == 0
    finally:
        sim.stop()


def raw(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_an_unreachable_smsc_is_one_warning_naming_operator_address_and_error(setup):
    daemon, _sim, dead_port = setup
    time.sleep(3)                               # several reconnect attempts (0.2 .. 1 s)
    lines = [json.loads(line) for line in daemon.output().splitlines()
             if line.startswith("{") and "cannot connect" in line]
    assert lines, daemon.output()[-2000:]
    first = lines[0]
    assert first["level"] == "WARNING"
    assert "rightel" in first["message"] and f"127.0.0.1:{dead_port}" in first["message"]
    assert "refused" in first["message"].lower()
    assert len(lines) <= 2, [line["message"] for line in lines]   # not one per attempt
    assert "Traceback" not in daemon.output()


def test_healthz_is_degraded_while_an_operator_has_no_bound_session(setup):
    daemon, _sim, _ = setup
    code, body, _ = http_json(daemon.http_port, "GET", "/healthz")
    assert code == 200
    assert body["status"] == "degraded" and body["operators"]["rightel"]["bound"] == 0


def test_head_answers_as_get_without_a_body(setup):
    daemon, _sim, _ = setup
    code, accepted, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                            "text": "head and get alike"})
    assert code == 202
    message_id = accepted["messages"][0]["id"]
    daemon.wait_status(TAX, message_id, "delivered")       # (its body changes no more)
    path = f"/v1/messages/{message_id}"
    auth = {"Authorization": f"Bearer {TAX}"}
    for where, headers in (("/healthz", {}), ("/v1/openapi.json", {}), (path, auth)):
        get_status, get_headers, get_body = raw(daemon.http_port, "GET", where,
                                                headers=headers)
        head_status, head_headers, head_body = raw(daemon.http_port, "HEAD", where,
                                                   headers=headers)
        assert (head_status, head_body) == (get_status, b""), where
        assert head_headers["Content-Length"] == str(len(get_body)), where
        assert head_headers["Content-Type"] == get_headers["Content-Type"], where


def test_a_body_that_is_not_json_is_415_and_a_reused_key_with_another_body_is_409(setup):
    daemon, _sim, _ = setup
    auth = {"Authorization": f"Bearer {TAX}"}
    status, _, body = raw(daemon.http_port, "POST", "/v1/messages", b"from=40401234",
                          {**auth, "Content-Type": "text/plain"})
    error = json.loads(body)["error"]
    assert status == 415 and error["code"] == "unsupported_media_type"
    assert "send JSON" in error["message"]
    first = {"from": "40401234", "to": "09121234567", "text": "first",
             "idempotency_key": "e2e-edges-1"}
    code, accepted, _ = daemon.send(TAX, **first)
    assert code == 202
    assert daemon.send(TAX, **first)[:2] == (202, accepted)       # the same answer
    code, body, _ = daemon.send(TAX, **{**first, "text": "second"})
    assert code == 409 and body["error"]["code"] == "idempotency_mismatch"


def test_kannels_user_guide_get_and_post_are_accepted_and_delivered(setup):
    daemon, _sim, _ = setup
    # Kannel's user guide: /cgi-bin/sendsms?username=tester&password=foobar&to=...&text=...
    query = ("username=tax&password=" + quote(TAX) + "&from=40401234"
             "&to=09121234567+09351234567&text=Hello+world")
    status, headers, body = raw(daemon.http_port, "GET", f"/cgi-bin/sendsms?{query}")
    assert (status, body) == (202, b"0: Accepted for delivery")
    ids = headers["X-Payam-Message-Ids"].split(",")
    assert len(ids) == 2
    form = urlencode({"username": "tax", "password": TAX, "from": "MALIAT",
                      "to": "09121234567", "text": "سلام", "charset": "UTF-8",
                      "coding": "2", "dlr-mask": "3",
                      "dlr-url": "http://127.0.0.1/dlr?id=%i"})
    status, headers, body = raw(daemon.http_port, "POST", "/cgi-bin/sendsms", form,
                                {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (202, b"0: Accepted for delivery")
    ids += headers["X-Payam-Message-Ids"].split(",")
    for message_id in ids:
        delivered = daemon.wait_status(TAX, message_id, "delivered")
    assert delivered["from"] == "MALIAT"


def test_kannels_refusals_are_the_contracts_a_foreign_sender_and_a_foreign_link(setup):
    daemon, _sim, _ = setup
    base = {"username": "tax", "password": TAX, "to": "09121234567"}
    status, _, body = raw(daemon.http_port, "GET", "/cgi-bin/sendsms?" + urlencode(
        {**base, "from": "40400135", "text": "x"}))
    assert status == 403 and body.startswith(b"Sender not allowed"), body
    # The tax agency lists its links: a phishing link is link_not_allowed (403) here too.
    status, _, body = raw(daemon.http_port, "GET", "/cgi-bin/sendsms?" + urlencode(
        {**base, "from": "40401234", "text": "pay at http://evil.example/x"}))
    assert status == 403 and body.startswith(b"Link not allowed"), body
    assert b"evil.example" in body
    status, _, body = raw(daemon.http_port, "GET", "/cgi-bin/sendsms?" + urlencode(
        {**base, "password": "wrong-key", "from": "40401234", "text": "x"}))
    assert (status, body) == (403, b"Authorization failed for sendsms")


def test_a_broadcast_with_a_foreign_link_is_refused_as_any_text_is(setup):
    # The agency's `links` hold for broadcasts too (JSON, or NDJSON with the text in the
    # query): a leaked key cannot send a phishing link to a million citizens.
    daemon, _sim, _ = setup
    auth = {"Authorization": f"Bearer {TAX}"}
    phishing = "pay your fine at http://evil.example/x"
    daemon.texts.add(phishing)
    body = json.dumps({"from": "40401234", "text": phishing, "to": ["09121234567"]})
    status, _, answer = raw(daemon.http_port, "POST", "/v1/broadcasts", body,
                            {**auth, "Content-Type": "application/json"})
    assert status == 403 and json.loads(answer)["error"]["code"] == "link_not_allowed"
    spec = openapi.document()                # and the document says so
    schema = spec["paths"]["/v1/broadcasts"]["post"]["responses"]["403"]["content"][
        "application/json"]["schema"]
    jsonschema_rs.validator_for({**schema, "components": spec["components"]}).validate(
        json.loads(answer))
    status, _, answer = raw(daemon.http_port, "POST", "/v1/broadcasts?" + urlencode(
        {"from": "40401234", "text": phishing}), b'"09121234567"\n',
        {**auth, "Content-Type": "application/x-ndjson"})
    assert status == 403 and json.loads(answer)["error"]["code"] == "link_not_allowed"
    status, _, answer = raw(daemon.http_port, "POST", "/v1/broadcasts", json.dumps(
        {"from": "40401234", "text": "see https://my.tax.gov.ir/x", "to": ["09121234567"]}),
        {**auth, "Content-Type": "application/json"})
    assert status == 202, answer
