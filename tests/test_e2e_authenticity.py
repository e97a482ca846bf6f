"""End to end over loopback (issue 8 items 5 and 6): a citizen forwards a text to 4040
through the SMSC simulator, and the daemon's answer is the submit_sm from 4040 the
simulator records; an agency's link outside its `links` is refused at the HTTP API.

One simulator and one daemon for the module (each test uses its own citizens), with
`authenticity.checks_per_hour: 3` so the limit shows in a few messages.
"""

import sqlite3
import time

import pytest
import yaml

from daemon_harness import KEYS, Daemon, http_json, wait_for, write_config
from e2e_fixtures import sim  # noqa: F401 (fixtures)

from gateway.authenticity.jalali import persian_date

TAX = KEYS["tax"]
AGENCY_NAME = "سازمان امور مالیاتی"
# Short enough to come back as one UCS2 MO part (70 units), "Fwd: " included.
NOTICE = "مؤدی گرامی، مهلت اظهارنامه ۱۴۰۵ شما تا ۲۰ آذر است.\u200cکد ۷۷"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim):
    directory = tmp_path_factory.mktemp("auth-e2e")
    config, http_port = write_config(directory, sim.smpp_port)
    settings = yaml.safe_load(config.read_text())
    settings["authenticity"] = {"retention_days": 30, "checks_per_hour": 3}
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    d = Daemon(config, http_port).start()
    yield d
    d.stop()


def answer_to(sim, msisdn, count=1):
    """The texts of the first `count` messages 4040 sent to `msisdn`, parts joined."""
    def answers():
        parts = [s for s in sim.submits()
                 if s["source_addr"] == "4040" and s["destination_addr"] == msisdn]
        # Two answers may carry the same 8-bit concatenation reference (it is random
        # per message): a part joins the first message of its reference and count that
        # lacks its number, in the order the SMSC took them.
        messages = []
        for part in parts:
            concat = part["concat"] or {"ref": None, "seq": 1, "total": 1}
            key = (concat["ref"], concat["total"])
            home = next((m for m in messages if m[0] == key and concat["seq"] not in m[1]),
                        None)
            if home is None:
                home = (key, {})
                messages.append(home)
            home[1][concat["seq"]] = part["text"]
        whole = [texts for (_, total), texts in messages if len(texts) == total]
        if len(whole) < count:
            return None
        return ["".join(texts[seq] for seq in sorted(texts)) for texts in whole]
    return wait_for(answers, what=f"{count} answer(s) from 4040 to {msisdn}")


def forward(sim, citizen, text):
    result = sim.control("POST", "/mo", {"from": citizen, "to": "4040", "text": text})
    assert result["statuses"] == [0], result


def send(daemon, to, text=NOTICE):
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": to, "text": text})
    assert code == 202, body
    return body["messages"][0]["id"]


def test_a_forwarded_copy_of_a_sent_text_is_confirmed_from_4040(sim, daemon):
    sent_on = persian_date(time.time())
    send(daemon, "09121110001")
    # As a phone may send it back: Arabic yeh and kaf, ASCII digits, no ZWNJ, spaces.
    copy = ("Fwd: " + NOTICE.replace("ی", "ي").replace("ک", "ك").replace("\u200c", "")
            .replace("۱۴۰۵", "1405").replace(" ", "  ", 2))
    forward(sim, "989121110001", copy)
    [answer] = answer_to(sim, "989121110001")
    assert AGENCY_NAME in answer and "برای شما فرستاده است" in answer
    assert sent_on in answer or persian_date(time.time()) in answer    # midnight between


def test_an_invented_text_gets_the_warning(sim, daemon):
    forward(sim, "989121110002", "سازمان امور مالیاتی: بدهی دارید، پرداخت در evil.ir")
    [answer] = answer_to(sim, "989121110002")
    assert "هیچ دستگاه دولتی" in answer and AGENCY_NAME not in answer


def test_a_genuine_text_forwarded_by_another_citizen_is_not_a_notice_to_them(sim, daemon):
    send(daemon, "09121110003")
    forward(sim, "989121110004", NOTICE)
    [answer] = answer_to(sim, "989121110004")
    assert AGENCY_NAME in answer and "اما نه برای شما" in answer


def test_over_the_hourly_checks_one_polite_answer_then_silence(sim, daemon):
    for n in range(5):
        forward(sim, "989121110005", f"متن ساختگی شماره {n}")
    # The fifth check's answer, had there been one, was stored before its deliver_sm_resp;
    # a later citizen's answer arriving shows the queue has moved past it.
    forward(sim, "989121110006", "متن ساختگی دیگر")
    answer_to(sim, "989121110006")
    answers = answer_to(sim, "989121110005", 4)
    assert len(answers) == 4
    assert "یک ساعت دیگر" in answers[3] and all("هیچ دستگاه" in a for a in answers[:3])


def test_checks_are_kept_in_no_inbox_and_no_agency_may_send_from_4040(sim, daemon):
    send(daemon, "09121110007")
    forward(sim, "989121110007", NOTICE)
    answer_to(sim, "989121110007")
    code, body, _ = daemon.send(TAX, **{"from": "4040", "to": "09121110007", "text": "x"})
    assert (code, body["error"]["code"]) == (403, "sender_not_allowed")
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 0
        kinds = {row[0] for row in db.execute(
            "SELECT json_extract(detail, '$.kind') FROM audit WHERE event = 'platform_message'")}
        agencies = {row[0] for row in db.execute(
            "SELECT DISTINCT agency FROM messages WHERE sender = '4040'")}
    assert kinds == {"authenticity"} and agencies == {"@4040"}


def test_a_link_outside_the_agencys_links_is_refused_and_audited(sim, daemon):
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121110008",
                                      "text": "پرداخت: https://tax.gov.ir.evil.com/pay"})
    assert (code, body["error"]["code"]) == (403, "link_not_allowed"), body
    assert "tax.gov.ir.evil.com" in body["error"]["message"]
    send(daemon, "09121110008", "ثبت در https://my.tax.gov.ir/login")
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        [(agency, detail)] = db.execute(
            "SELECT agency, detail FROM audit WHERE event = 'link_refused'").fetchall()
    assert agency == "tax" and "tax.gov.ir.evil.com" in detail and "pay" not in detail
    code, body, _ = http_json(daemon.http_port, "GET", "/v1/openapi.json")
    assert "link_not_allowed" in str(body)
