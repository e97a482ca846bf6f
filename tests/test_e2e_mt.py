"""End to end over loopback: agency HTTP → daemon → SMPP → simulator → receipts → status."""

import signal
import sqlite3

import pytest

from daemon_harness import KEYS, Daemon, Simulator, wait_for, write_config

TAX = KEYS["tax"]
JUDICIARY = KEYS["judiciary"]
PERSIAN = "شهروند گرامی، اظهارنامه\u200cی مالیاتی شما تا پایان آبان ثبت نشده است؛ لطفاً پیش از سررسید اقدام فرمایید."


@pytest.fixture
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


@pytest.fixture
def daemon(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port)
    d = Daemon(config, http_port).start()
    yield d
    d.stop()


def submits_to(sim, msisdn):
    return [s for s in sim.submits() if s["destination_addr"] == msisdn]


def test_gsm_message_from_short_code_reaches_smsc_and_is_delivered(sim, daemon):
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                      "text": "Your tax return is due.", "reference": "r-1"})
    assert code == 202, body
    [msg] = body["messages"]
    assert msg["to"] == "989121234567" and msg["parts"] == 1 and msg["status"] == "queued"

    [seen] = wait_for(lambda: submits_to(sim, "989121234567"), what="submit_sm at SMSC")
    assert seen["source_addr"] == "40401234"
    assert (seen["source_addr_ton"], seen["source_addr_npi"]) == (3, 0)
    assert (seen["dest_addr_ton"], seen["dest_addr_npi"]) == (1, 1)
    assert seen["data_coding"] == 0 and seen["text"] == "Your tax return is due."
    assert seen["registered_delivery"] == 1

    final = daemon.wait_status(TAX, msg["id"], "delivered")
    assert final["from"] == "40401234" and final["to"] == "989121234567"
    assert final["reference"] == "r-1" and final["operator"] == "mci"
    assert final["submitted_at"] and final["done_at"]


def test_persian_multipart_from_mask_goes_as_ucs2_parts_and_delivers_when_all_do(sim, daemon):
    code, body, _ = daemon.send(TAX, **{"from": "MALIAT", "to": ["۰۹۳۵۱۲۳۴۵۶۷"],
                                      "text": PERSIAN})
    assert code == 202, body
    [msg] = body["messages"]
    assert msg["to"] == "989351234567" and msg["parts"] == 2

    parts = wait_for(lambda: len(submits_to(sim, "989351234567")) == 2
                     and submits_to(sim, "989351234567"), what="both parts")
    parts.sort(key=lambda s: s["concat"]["seq"])
    for number, part in enumerate(parts, 1):
        assert part["source_addr"] == "MALIAT" and part["source_addr_ton"] == 5
        assert part["data_coding"] == 8 and part["esm_class"] & 0x40
        assert part["concat"]["total"] == 2 and part["concat"]["seq"] == number
    assert parts[0]["concat"]["ref"] == parts[1]["concat"]["ref"]
    assert "".join(p["text"] for p in parts) == PERSIAN   # ZWNJ and punctuation intact

    final = daemon.wait_status(TAX, msg["id"], "delivered")
    assert final["parts"] == 2 and final["operator"] == "irancell"


@pytest.mark.parametrize("sender, key, code, error", [
    ("40400135", TAX, 403, "sender_not_allowed"),     # the judiciary's number
    ("40409999", TAX, 403, "sender_not_allowed"),     # an unassigned 4040 number
    ("ADLIRAN", TAX, 403, "sender_not_allowed"),      # another agency's mask
    ("BANKMELLI", TAX, 403, "sender_not_allowed"),    # an unknown mask
    ("40401234", "not-a-real-key", 401, "unauthorized"),
    ("40401234", None, 401, "unauthorized"),
])
def test_spoofed_senders_are_refused_and_audited(sim, daemon, sender, key, code, error):
    status, body, _ = daemon.send(key, **{"from": sender, "to": "09121234567", "text": "x"})
    assert status == code and body["error"]["code"] == error
    if code == 403:
        def audited():
            with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
                rows = db.execute("SELECT agency, detail FROM audit").fetchall()
            return [r for r in rows if sender in r[1]]
        [(agency, _detail)] = wait_for(audited, 5, what="audit row")
        assert agency == "tax"
    assert submits_to(sim, "989121234567") == []


def test_throttling_smsc_loses_nothing(tmp_path, sim):
    sim.behave(throttle_every=3)
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start()
    try:
        recipients = [f"0912{n:07d}" for n in range(40)]
        code, body, _ = daemon.send(JUDICIARY, **{"from": "40400135", "to": recipients,
                                                "text": "ابلاغیه جدید در سامانه ثنا"})
        assert code == 202
        ids = [m["id"] for m in body["messages"]]
        wait_for(lambda: sim.stats()["throttled"] > 0, what="throttling")
        for message_id in ids:
            daemon.wait_status(JUDICIARY, message_id, "delivered", timeout=30)
        delivered_to = {s["destination_addr"] for s in sim.submits()}
        assert {f"98912{n:07d}" for n in range(40)} <= delivered_to
    finally:
        assert daemon.stop() == 0


def test_connection_dropped_mid_flight_every_message_arrives_after_reconnect(tmp_path, sim):
    sim.behave(drop_after=15)
    config, http_port = write_config(tmp_path, sim.smpp_port, window=10)
    daemon = Daemon(config, http_port).start()
    try:
        recipients = [f"0912{n:07d}" for n in range(60)]
        code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": recipients,
                                          "text": "Reminder: payment due."})
        assert code == 202
        for message in body["messages"]:
            daemon.wait_status(TAX, message["id"], "delivered", timeout=40)
        assert sim.stats()["drops"] >= 1
        arrived = {s["destination_addr"] for s in sim.submits()}
        assert {f"98912{n:07d}" for n in range(60)} <= arrived
    finally:
        daemon.stop()


def test_sigkill_with_messages_queued_then_restart_delivers_everything(tmp_path, sim):
    sim.behave(throttle_every=1)          # nothing gets through: all stays queued
    config, http_port = write_config(tmp_path, sim.smpp_port)
    daemon = Daemon(config, http_port).start()
    recipients = [f"0935{n:07d}" for n in range(30)]
    code, body, _ = daemon.send(TAX, **{"from": "MALIAT", "to": recipients,
                                      "text": "اطلاعیه مهم"})
    assert code == 202
    ids = [m["id"] for m in body["messages"]]
    wait_for(lambda: sim.stats()["throttled"] > 0, what="throttled attempts")
    daemon.kill()                          # SIGKILL: no chance to flush anything

    sim.behave(throttle_every=0)
    daemon = Daemon(config, http_port).start()
    try:
        for message_id in ids:
            daemon.wait_status(TAX, message_id, "delivered", timeout=30)
        arrived = {s["destination_addr"] for s in sim.submits()}
        assert {f"98935{n:07d}" for n in range(30)} <= arrived
    finally:
        assert daemon.stop() == 0


def test_sigterm_unbinds_and_exits_zero(sim, daemon):
    binds_before = sim.stats()["unbinds"]
    assert daemon.stop(signal.SIGTERM) == 0
    assert sim.stats()["unbinds"] >= binds_before + 3     # one per operator


def test_a_second_sigterm_while_stopping_changes_nothing(sim, daemon):
    daemon.send_signal(signal.SIGTERM)
    assert daemon.stop(signal.SIGTERM) == 0
    output = daemon.output()
    assert "stopped cleanly" in output
    assert "ReactorNotRunning" not in output and "CRITICAL" not in output


@pytest.mark.parametrize("id_format, receipt_ids", [("decimal", "raw"), ("mixed", "dec")])
def test_text_receipts_match_whether_the_smsc_writes_ids_in_hex_or_decimal(
        tmp_path, id_format, receipt_ids):
    """Receipts carrying only the text form (no TLVs), with the id in decimal after a
    hex submit_sm_resp ("mixed") or decimal throughout, still deliver both parts."""
    sim = Simulator("--receipt-delay", "0.05", "--receipts", "text",
                    "--id-format", id_format)
    try:
        config, http_port = write_config(tmp_path, sim.smpp_port, receipt_ids=receipt_ids)
        daemon = Daemon(config, http_port).start()
        try:
            code, body, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                              "text": PERSIAN})
            assert code == 202 and body["messages"][0]["parts"] == 2
            final = daemon.wait_status(TAX, body["messages"][0]["id"], "delivered")
            assert final["done_at"]
            assert sim.stats()["receipts"] >= 2
        finally:
            assert daemon.stop() == 0
    finally:
        sim.stop()
