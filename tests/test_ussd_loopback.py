"""USSD dialogs end to end over real SMPP on loopback: the simulator's USSD side dials,
answers and aborts as a handset would; the daemon (in process) answers each step with a
submit_sm on the same bind."""

import json
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from conftest import wait_until
from gateway.config.load import load_gateway_config
from gateway.config.schema import DEFAULT_ADMIN_LISTEN
from gateway.smpp import constants as c
from ussd_loopback import CITIZEN, REPO, Loopback, page, walk, write_gateway

JUDICIARY = (REPO / "config" / "ussd" / "judiciary.yaml").read_text(encoding="utf-8")
VALID_ID = "0067749828"


class JudiciaryMenu(unittest.TestCase):
    timeout = 20

    def setUp(self):
        self.loop = Loopback(self, {"judiciary.yaml": JUDICIARY})
        return self.loop.bound()

    @defer.inlineCallbacks
    def test_dial_walk_two_levels_invalid_then_valid_id_files_and_ends_with_tracking(self):
        answers = yield walk(self.loop, "*4*0135#", "1", "2", "1234567890", VALID_ID)
        home, kinds, ask, again, done = answers
        self.assertIn("قوه قضاییه", home["text"])
        self.assertEqual((home["op"], home["end"]), (c.USSD_USSR_REQUEST, False))
        self.assertIn("شکایت", kinds["text"])
        self.assertIn("کد ملی", ask["text"])
        self.assertIn("نادرست", again["text"])
        self.assertFalse(again["end"])
        self.assertTrue(done["end"])
        self.assertEqual(done["op"], c.USSD_PSSR_RESPONSE)
        tracking = done["text"].rsplit(" ", 1)[1]
        self.assertRegex(tracking, r"^[0-9]{10}$")
        # its_session_info echoed: same session number, end bit only on the last page.
        numbers = {a["its_session_info"] >> 8 for a in answers}
        self.assertEqual(len(numbers), 1)
        self.assertEqual([a["its_session_info"] & 1 for a in answers], [0, 0, 0, 0, 1])
        # The request is in the judiciary's inbox, channel ussd, with the ID and number.
        inbox = yield self.loop.service.inbox.list("judiciary")
        (filed,) = inbox
        self.assertEqual((filed.channel, filed.citizen, filed.number),
                         ("ussd", CITIZEN, "40400135"))
        document = json.loads(filed.text)
        self.assertEqual(document["tracking"], tracking)
        self.assertEqual(document["values"], {"national_id": VALID_ID})
        # ... and the tracking number went by SMS from the 4040 number.
        yield wait_until(reactor, lambda: self._sms_to(CITIZEN))
        (sms,) = self._sms_to(CITIZEN)
        self.assertIn(tracking, sms["text"])
        self.assertEqual(sms["source_addr"], "40400135")

    def _sms_to(self, msisdn):
        return [r for r in self.loop.simulator.factory.records.after(0, 1000)
                if r["destination_addr"] == msisdn and "0x0501" not in r["tlvs"]]

    @defer.inlineCallbacks
    def test_direct_dial_walks_options_and_stops_where_input_is_needed(self):
        answer = yield self.loop.dial("*4*0135*1*2#")
        self.assertIn("کد ملی", answer["text"])
        self.assertFalse(answer["end"])
        done = yield self.loop.send(VALID_ID)
        self.assertTrue(done["end"])
        self.assertIn("کد پیگیری", done["text"])

    @defer.inlineCallbacks
    def test_direct_dial_fills_input_too(self):
        answer = yield self.loop.dial(f"*4*0135*1*1*{VALID_ID}#")
        self.assertTrue(answer["end"])
        self.assertIn("کد پیگیری", answer["text"])

    @defer.inlineCallbacks
    def test_back_and_home(self):
        yield walk(self.loop, "*4*0135#", "1", "1")
        back = yield self.loop.send("0")
        self.assertIn("نوع درخواست", back["text"])
        home = yield self.loop.send("00")
        self.assertIn("خدمات الکترونیک", home["text"])
        self.assertFalse(home["end"])

    @defer.inlineCallbacks
    def test_unknown_code_gets_a_polite_op17_end(self):
        answer = yield self.loop.dial("*4*9999#")
        self.assertEqual((answer["op"], answer["end"]), (c.USSD_PSSR_RESPONSE, True))
        self.assertIn("تعلق ندارد", answer["text"])

    @defer.inlineCallbacks
    def test_answer_after_the_end_is_answered_with_an_end(self):
        yield walk(self.loop, "*4*0135#", "1", "1", VALID_ID)
        late = yield self.loop.send("1")
        self.assertTrue(late["end"])
        self.assertIn("پایان", late["text"])

    @defer.inlineCallbacks
    def test_user_abort_ends_the_dialog_and_leaves_one_record(self):
        yield walk(self.loop, "*4*0135#", "1")
        yield self.loop.ussd.abort(CITIZEN)
        dialogs = self.loop.service.ussd
        yield wait_until(reactor, lambda: len(dialogs.table) == 0)
        yield wait_until(reactor, lambda: self._records())
        (record,) = self._records()
        self.assertEqual(record[:3], ("judiciary", "user_abort", 1))

    def _records(self):
        db = sqlite3.connect(self.loop.service.config.store_path)
        try:
            return db.execute("SELECT agency, end_reason, steps FROM ussd_dialogs").fetchall()
        finally:
            db.close()


DYNAMIC = """\
agency: judiciary
start: ask
states:
  ask:
    type: input
    text: "شماره پرونده؟"
    save: case_number
    pattern: "[0-9]{4,16}"
    next: status
  status:
    type: dynamic
    url: "http://127.0.0.1:PORT/PATH"
    timeout_s: 1
    fallback: "سامانه پاسخ نداد."
"""


class AgencyEndpoint:
    """A local HTTP endpoint for dynamic states: /fast answers, /slow never does,
    /garbage answers what is not JSON."""

    def __init__(self, testcase):
        from twisted.web import resource, server
        self.requests = []
        endpoint = self

        class Answer(resource.Resource):
            isLeaf = True

            def render_POST(self, request):
                endpoint.requests.append((request.path, json.loads(request.content.read())))
                request.setHeader(b"Content-Type", b"application/json")
                if request.path == b"/slow":
                    return server.NOT_DONE_YET
                if request.path == b"/garbage":
                    return b"\xff<html>"
                number = endpoint.requests[-1][1]["values"]["case_number"]
                return json.dumps({"text": f"پرونده {number}: در حال رسیدگی", "end": True},
                                  ensure_ascii=False).encode()
        site = server.Site(Answer())
        site.log = lambda request: None
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)

    def menu(self, path):
        return DYNAMIC.replace("PORT", str(self.port.getHost().port)).replace("PATH", path)


class DynamicStates(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def _dialog(self, path):
        endpoint = AgencyEndpoint(self)
        loop = Loopback(self, {"j.yaml": endpoint.menu(path)})
        yield loop.bound()
        answers = yield walk(loop, "*4*0135#", "12345")
        return endpoint, answers[-1]

    @defer.inlineCallbacks
    def test_the_agencys_endpoint_writes_the_page(self):
        endpoint, answer = yield self._dialog("fast")
        self.assertEqual(page(answer), ("پرونده 12345: در حال رسیدگی", True))
        ((_, sent),) = endpoint.requests
        self.assertEqual((sent["agency"], sent["msisdn"], sent["values"]),
                         ("judiciary", CITIZEN, {"case_number": "12345"}))

    @defer.inlineCallbacks
    def test_a_slow_endpoint_gets_the_fallback_and_the_reactor_goes_on(self):
        endpoint, answer = yield self._dialog("slow")
        self.assertEqual(page(answer), ("سامانه پاسخ نداد.", True))

    @defer.inlineCallbacks
    def test_a_garbage_answer_gets_the_fallback(self):
        endpoint, answer = yield self._dialog("garbage")
        self.assertEqual(page(answer), ("سامانه پاسخ نداد.", True))


PAGED = """\
agency: judiciary
start: home
states:
  home:
    type: menu
    text: "TEXT"
    options:
      - {text: "پایان", next: bye}
  bye: {type: end, text: "خدانگهدار"}
"""
LONG_PERSIAN = ("شهروند گرامی، برای پیگیری پرونده\u200cهای قضایی و ثبت درخواست\u200cهای خود "
                "یکی از گزینه\u200cهای زیر را انتخاب کنید. ") * 4


class OperatorStyles(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_a_300_character_persian_menu_goes_out_in_pages_of_80(self):
        self.assertGreaterEqual(len(LONG_PERSIAN), 300)
        loop = Loopback(self, {"j.yaml": PAGED.replace("TEXT", LONG_PERSIAN)})
        yield loop.bound()
        answers = [(yield loop.dial("*4*0135#"))]
        while "99. بیشتر" in answers[-1]["text"]:
            answers.append((yield loop.send("99")))
        self.assertGreaterEqual(len(answers), 4)
        for answer in answers:
            self.assertLessEqual(len(answer["text"]), 80)
            self.assertFalse(answer["end"])
        sent = [r for r in loop.simulator.factory.records.after(0, 100)]
        self.assertTrue(all(r["data_coding"] == 8 and len(r["short_message"]) <= 320
                            for r in sent))
        self.assertEqual(page((yield loop.send("1"))), ("خدانگهدار", True))

    @defer.inlineCallbacks
    def test_op_values_dial_field_and_end_bit_style_follow_the_operator_setting(self):
        loop = Loopback(self, {"j.yaml": PAGED.replace("TEXT", "خانه")}, operator_extra={
            "ussd": {"new_ops": [1], "continue_ops": [12], "abort_ops": [33],
                     "dial_field": "destination_addr", "answer_style": "end_bit"}})
        yield loop.bound()
        first = yield loop.dial("*4*0135#", dial_field="destination_addr")
        self.assertIn("خانه", first["text"])
        self.assertEqual((first["op"], first["its_session_info"] & 1), (2, 0))
        last = yield loop.send("1", op=12)
        # end_bit style: op 2 still, the end said by its_session_info's bit alone
        self.assertEqual((last["op"], last["its_session_info"] & 1, last["end"]),
                         (2, 1, True))
        # the default continue op (18) means nothing to this operator
        yield loop.dial("*4*0135#", dial_field="destination_addr")
        yield loop.ussd.abort(CITIZEN, op=33)
        yield wait_until(reactor, lambda: len(loop.service.ussd.table) == 0)

    @defer.inlineCallbacks
    def test_transmitter_receiver_binds_answer_on_the_receivers_transmitter(self):
        # The request comes on the receiver, which cannot carry a submit_sm: the page
        # goes on the transmitter of its pair (it was retried on the receiver for 5 s,
        # then lost).
        loop = Loopback(self, {"j.yaml": PAGED.replace("TEXT", "خانه")},
                        operator_extra={"bind": "transmitter+receiver"})
        yield wait_until(reactor, lambda: len(loop.simulator.factory.sessions) == 2
                         and loop.service.pools["mci"].bound_count() == 1)
        first = yield loop.dial("*4*0135#")
        self.assertEqual(page(first), ("خانه\n1. پایان", False))
        self.assertEqual(page((yield loop.send("1"))), ("خدانگهدار", True))

    @defer.inlineCallbacks
    def test_a_dialog_survives_a_bind_reconnect(self):
        loop = Loopback(self, {"j.yaml": PAGED.replace("TEXT", "خانه")})
        yield loop.bound()
        yield loop.dial("*4*0135#")
        for session in list(loop.simulator.factory.sessions):
            session.transport.loseConnection()
        yield wait_until(reactor, lambda: loop.service.pools["mci"].bound_count() == 0)
        yield loop.bound()
        self.assertEqual(page((yield loop.send("1"))), ("خدانگهدار", True))


def test_the_loopback_daemon_listens_on_no_fixed_port(tmp_path):
    """Several test runs on one machine (or a demo on its default ports) must not
    collide: the admin endpoint's default 127.0.0.1:9109 is left to real daemons."""
    config = load_gateway_config(write_gateway(tmp_path, 2775, {}))
    assert config.admin_listen != DEFAULT_ADMIN_LISTEN
    assert config.metrics_listen is None


def test_the_loopback_ports_are_outside_the_ephemeral_range(tmp_path):
    config = load_gateway_config(write_gateway(tmp_path, 2775, {}))
    assert all(port < 32768 for _, port in (config.http_listen, config.admin_listen))
