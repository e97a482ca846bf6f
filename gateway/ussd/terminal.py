"""`payam-gateway ussd-try -c gateway.yaml '*4*0135#'`: walk a menu in the terminal,
with no SMSC and no store. Each page is printed as a handset would show it (with its
length against the page's limit); what you type is the next step; an empty line or EOF
ends the dialog as a user abort. Dynamic states call the agency's endpoint for real;
file states file nothing and print what they would file and send.
"""

import json

from twisted.internet import defer, threads

from gateway.text.pages import page_cost
from gateway.ussd.dialogs import UssdDialogs
from gateway.ussd.engine import render
from gateway.ussd.menu_tests import TEST_TRACKING

TRY_MSISDN = "989120000000"


class _DryFiling:
    def __init__(self, say):
        self.say = say

    def file(self, state, dialog, **_):
        values = {name: dialog.values.get(name) for name in state.fields or dialog.values}
        self.say(f"[would file into {dialog.menu.agency}'s inbox: "
                 f"{json.dumps(values, ensure_ascii=False)}]")
        if state.sms is not None:
            text = render(state.sms.get(dialog.language),
                          dict(dialog.values, tracking=TEST_TRACKING))
            self.say(f"[would send by SMS from the agency's 4040 number: {text}]")
        return defer.succeed(TEST_TRACKING)


def show(page, say):
    cost, limit = page_cost(page.text)
    say("┌" + "─" * 40)
    for line in page.text.split("\n"):
        say("│ " + line)
    say("└" + "─" * 40 + f" {cost}/{limit}" + (" (end)" if page.end else ""))


@defer.inlineCallbacks
def try_menu(reactor, menus, dial, *, ask=None, say=print, dynamic=None):
    """Walk the dialog `dial` starts; → Deferred[exit code] (0 ended, 1 no service)."""
    if ask is None:
        def ask():
            return threads.deferToThread(input, "> ")
    dialogs = UssdDialogs(menus, clock=reactor, filing=_DryFiling(say), dynamic=dynamic)
    key = (TRY_MSISDN, None)
    page = yield dialogs.step("try", "new", TRY_MSISDN, key, dial)
    show(page, say)
    if page.end and dialogs.table.get(key) is None and dialogs.menus and \
            "تعلق ندارد" in page.text:
        return 1
    while not page.end:
        try:
            text = yield ask()
        except EOFError:
            text = ""
        if not text.strip():
            yield dialogs.step("try", "abort", TRY_MSISDN, key, "")
            say("[aborted]")
            break
        page = yield dialogs.step("try", "continue", TRY_MSISDN, key, text)
        show(page, say)
    if dynamic is not None:
        yield dynamic.close()
    return 0
