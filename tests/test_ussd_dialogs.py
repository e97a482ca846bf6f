"""The USSD dialogs without SMPP: the engine, pages, sessions and their timers (Clock)."""

import textwrap

import pytest
from twisted.internet import defer

from conftest import answered
from gateway.config.agencies_file import read_agencies
from gateway.config.ussd_file import read_ussd_menus
from gateway.text.pages import page_cost, paginate
from gateway.ussd.dial import parse_dial
from gateway.ussd.dialogs import UssdDialogs
from gateway.ussd.validators import national_id
from ussd_loopback import REPO

AGENCIES = read_agencies(str(REPO / "config" / "agencies.yaml"), [])
CITIZEN = "989121234567"
KEY = (CITIZEN, 9)
# A 300-character Persian menu text (with ZWNJ), 5 options.
LONG = ("شهروند گرامی، برای پیگیری پرونده\u200cهای قضایی و ثبت درخواست\u200cهای خود "
        "یکی از گزینه\u200cهای زیر را انتخاب کنید. ") * 4


def menus(tmp_path, text):
    (tmp_path / "m.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    errors = []
    loaded = read_ussd_menus(str(tmp_path), AGENCIES, errors)
    assert errors == []
    return loaded


MENU = """\
    agency: judiciary
    start: home
    states:
      home:
        type: menu
        text: "خانه"
        options:
          - {text: "پیگیری", next: ask}
          - {text: "English", next: home, language: en}
      ask:
        type: input
        text: "کد ملی؟"
        text_en: "National ID?"
        save: national_id
        validator: national_id
        error: "نادرست"
        next: bye
      bye:
        type: end
        text: "ممنون {national_id}"
        text_en: "Thanks {national_id}"
"""


@pytest.fixture
def dialogs(tmp_path, clock):
    d = UssdDialogs(menus(tmp_path, MENU), clock=clock, max_sessions=100)
    d.start()
    yield d
    d.stop()


def step(dialogs, kind, text, key=KEY):
    return answered(dialogs.step("mci", kind, key[0], key, text))


def test_national_id_check_digit():
    assert national_id("0067749828") == "0067749828"
    assert national_id("0067749827") is None         # wrong check digit
    assert national_id("1111111111") is None         # never issued
    assert national_id("006774982") is None


@pytest.mark.parametrize("dial, expected", [
    ("*4*0135#", ("*4*0135#", ())),
    ("*4*0135*2*1#", ("*4*0135#", ("2", "1"))),
    ("*۴*۰۱۳۵*۲#", ("*4*0135#", ("2",))),            # Persian digits
    ("*4*135#", (None, ())),                           # 0135 is not 135
    ("*4*0135", (None, ())),
    ("*4*0135*#", (None, ())),
    ("*4*0135*" + "1*" * 40 + "1#", (None, ())),       # oversized
    ("\x00\xff*4#", (None, ())),
    ("*4*0135*1*1*1*1*1*1*1*1*1*1*1#", (None, ())),     # path over 10 steps
])
def test_dial_strings(dial, expected):
    assert parse_dial(dial, {"*4*0135#"}) == expected


def test_a_300_character_persian_text_is_paginated_within_80_per_page():
    pages = paginate(LONG + "\n1. یک\n2. دو", "99. بیشتر")
    assert len(pages) >= 4
    for page in pages:
        cost, limit = page_cost(page)
        assert limit == 80 and cost <= 80
    assert all(p.endswith("99. بیشتر") for p in pages[:-1])
    assert " ".join(p.replace("\n99. بیشتر", "") for p in pages).replace("\n", " ") \
        .split() == (LONG + " 1. یک 2. دو").split()


def test_gsm_pages_hold_182_septets_counting_extension_characters_twice():
    text = ("{x} " * 60).strip()          # '{' and '}' cost two septets each
    pages = paginate(text, "99. More")
    assert all(page_cost(p) <= (182, 182) for p in pages)
    assert page_cost(pages[0])[1] == 182 and len(pages) == 3


def test_paginated_menu_more_and_back(tmp_path, clock):
    text = MENU.replace('text: "خانه"', f'text: "{LONG}"')
    d = UssdDialogs(menus(tmp_path, text), clock=clock)
    first = step(d, "new", "*4*0135#")
    assert first.text.endswith("99. بیشتر") and not first.end
    second = step(d, "continue", "99")
    assert second.text != first.text
    assert step(d, "continue", "0").text == first.text       # one page back
    while "99. بیشتر" in step(d, "continue", "99").text:
        pass
    # the option is chosen from any page
    assert "کد ملی" in step(d, "continue", "1").text


def test_invalid_then_valid_then_end_and_language(dialogs):
    assert "خانه" in step(dialogs, "new", "*4*0135#").text
    assert step(dialogs, "continue", "7").text.startswith("گزینه نامعتبر")
    assert "English" in step(dialogs, "continue", "2").text      # same menu, in English
    assert step(dialogs, "continue", "1").text == "National ID?"
    assert step(dialogs, "continue", "123").text.startswith("نادرست")
    end = step(dialogs, "continue", "۰۰۶۷۷۴۹۸۲۸")            # Persian digits
    assert end == ("Thanks 0067749828", True)
    assert len(dialogs.table) == 0


def test_idle_timeout_ends_the_dialog_and_a_late_answer_is_told(dialogs, clock):
    step(dialogs, "new", "*4*0135#")
    clock.advance(59)
    assert len(dialogs.table) == 1
    step(dialogs, "continue", "1")               # activity: 60 s again from here
    clock.advance(59)
    assert len(dialogs.table) == 1
    clock.advance(2)
    assert len(dialogs.table) == 0
    late = step(dialogs, "continue", "0067749828")
    assert late.end and "پایان" in late.text


def test_maximum_lifetime_even_when_active(dialogs, clock):
    step(dialogs, "new", "*4*0135#")
    for _ in range(17):
        clock.advance(10)
        step(dialogs, "continue", "0")
    assert len(dialogs.table) == 1
    clock.advance(11)
    assert len(dialogs.table) == 0


def test_duplicate_start_gets_the_same_page_and_one_dialog(dialogs):
    first = step(dialogs, "new", "*4*0135#")
    assert step(dialogs, "new", "*4*0135#") == first
    assert len(dialogs.table) == 1
    step(dialogs, "continue", "1")
    # a new start after input restarts the dialog
    assert step(dialogs, "new", "*4*0135#") == first


def test_a_flood_of_sessions_is_bounded(dialogs):
    for n in range(150):
        page = step(dialogs, "new", "*4*0135#", key=(f"98912{n:07d}", None))
    assert len(dialogs.table) == 100
    assert page.end and "پرمشغله" in page.text


def test_garbage_and_unknown_dials_end_politely_without_a_session(dialogs):
    for text in ("", "hello", "*4*" + "9" * 500 + "#", "*4*0136#", "\ufffd\ufffd"):
        page = step(dialogs, "new", text)
        assert page.end and "تعلق ندارد" in page.text
    assert len(dialogs.table) == 0


def test_abort_and_network_end_answer_nothing(dialogs):
    step(dialogs, "new", "*4*0135#")
    assert step(dialogs, "abort", "") is None
    assert step(dialogs, "end", "") is None
    assert len(dialogs.table) == 0


def test_a_step_while_the_last_is_pending_is_dropped(tmp_path, clock):
    text = MENU.replace("""        type: end
        text: "ممنون {national_id}"
        text_en: "Thanks {national_id}"
""", """        type: dynamic
        url: "http://127.0.0.1:1/"
        fallback: "نشد"
""")
    pending = defer.Deferred()

    class Slow:
        def fetch(self, state, dialog, **_):
            return pending

        def close(self):
            return defer.succeed(None)
    d = UssdDialogs(menus(tmp_path, text), clock=clock, dynamic=Slow())
    step(d, "new", "*4*0135#")
    step(d, "continue", "1")
    waiting = d.step("mci", "continue", CITIZEN, KEY, "0067749828")
    assert not waiting.called
    assert step(d, "continue", "1") is None          # dropped while busy
    pending.callback(("پرونده شما باز است", True))
    assert answered(waiting) == ("پرونده شما باز است", True)


class _NeverAnswers:
    """treq's face, for DynamicStates: a post that never answers (until cancelled)."""

    def __init__(self):
        self.cancelled = []

    def post(self, url, **kwargs):
        return defer.Deferred(lambda d: self.cancelled.append(url))


def test_a_dynamic_state_gives_up_after_2_seconds_and_cancels_the_request(clock):
    from gateway.config.schema import UssdState, UssdText
    from gateway.ussd.dynamic import DynamicStates
    from gateway.ussd.engine import Dialog
    http = _NeverAnswers()
    states = DynamicStates(clock, http=http)
    state = UssdState(name="s", kind="dynamic", url="http://127.0.0.1:1/x",
                      fallback=UssdText("x"))
    result = states.fetch(state, Dialog(None, {}), agency="judiciary", code="*4*0135#",
                          msisdn=CITIZEN)
    clock.advance(1.9)
    assert not result.called
    clock.advance(0.2)
    assert answered(result) is None                   # → the fallback text
    assert http.cancelled == ["http://127.0.0.1:1/x"] and states.in_flight == 0


def test_logs_never_carry_the_whole_number(dialogs, clock, caplog):
    import logging
    from gateway.config.schema import UssdState, UssdText
    from gateway.ussd.dynamic import DynamicStates
    from gateway.ussd.engine import Dialog
    caplog.set_level(logging.DEBUG)
    step(dialogs, "new", "*4*0999#")                              # unknown code: logged
    states = DynamicStates(clock, http=_NeverAnswers())
    states.fetch(UssdState(name="s", kind="dynamic", url="http://127.0.0.1:1/",
                           fallback=UssdText("x")), Dialog(None, {}), agency="judiciary",
                 code="*4*0135#", msisdn=CITIZEN)
    clock.advance(3)                                              # timed out: logged
    assert caplog.records and CITIZEN not in caplog.text
    assert "98912****567" in caplog.text
