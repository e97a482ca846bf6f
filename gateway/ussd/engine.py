"""One citizen's walk through one agency's menu: the state machine, no I/O of its own.

A `Dialog` holds where the citizen is (the state waiting for input, its pages and the
page shown), what they entered (`values`), the way back (`history`) and the language.
`Engine.start(dialog, path)` shows the start state (walking a direct-dial path as if
typed); `Engine.answer(dialog, text)` takes one input. Both give a Deferred of a `Page`:
the text to show and whether the dialog ends with it. The two steps that leave the
process, an agency's dynamic state and filing a request, are the `fetch` and `file`
callables the engine is given (gateway/ussd/dynamic.py, filing.py; stand-ins in ussd-try
and menu tests).

Navigation in every state: `0` one page back (the previous page of a paginated text,
else the previous state), `00` the start; the menu's "more" key the next page.
"""

import re
from typing import NamedTuple

from twisted.internet import defer

from gateway.numbers import normalize_digits
from gateway.text.pages import paginate
from gateway.ussd.validators import VALIDATORS

BACK, HOME = "0", "00"
MAX_HOPS = 20                    # routers chained without a page between them
MAX_HISTORY = 50
MAX_INPUT = 160                  # characters of one input kept
TEMPLATE_RE = re.compile(r"\{([a-z_][a-z0-9_]{0,31})\}")
SERVICE_ERROR = ("سرویس موقتاً در دسترس نیست. لطفاً بعداً تلاش کنید.",
                 "The service is unavailable. Please try again later.")


class Page(NamedTuple):
    text: str
    end: bool


class Dialog:
    """Where one citizen is in one menu."""

    __slots__ = ("menu", "states", "state", "pages", "page", "history", "values",
                 "language", "shown_text", "ending", "outcome", "ended", "steps", "context")

    def __init__(self, menu, states, language="fa"):
        self.menu = menu
        self.states = states              # name → UssdState (the engine's index)
        self.state = None                 # the state waiting for input
        self.pages = ()
        self.page = 0
        self.history = []                 # (state name, text it showed), for `0`
        self.values = {}
        self.language = language
        self.shown_text = None            # a dynamic state's text, as the agency gave it
        self.ending = False               # the pages shown end the dialog
        self.outcome = "page"             # what the last step did (metrics)
        self.ended = False
        self.steps = 0
        self.context = None               # the caller's (whose dialog this is)

    @property
    def current(self):
        return Page(self.pages[self.page], self.ending and self.page == len(self.pages) - 1)


def render(text, values):
    """`text` with each {name} replaced by the value collected under that name."""
    if "{" not in text:
        return text
    return TEMPLATE_RE.sub(lambda m: str(values.get(m.group(1), "")), text)


def index_states(menu):
    return {state.name: state for state in menu.states}


def _fail_fetch(state, dialog):
    return defer.succeed(None)


def _fail_file(state, dialog):
    return defer.succeed(None)


class Engine:
    def __init__(self, fetch=_fail_fetch, file=_fail_file):
        """fetch(state, dialog) → Deferred[(text, end) | None] (None: use the fallback);
        file(state, dialog) → Deferred[tracking number | None] (None: not filed)."""
        self.fetch = fetch
        self.file = file

    def new_dialog(self, menu, states=None, language="fa"):
        return Dialog(menu, states if states is not None else index_states(menu), language)

    def start(self, dialog, path=()):
        d = self._enter(dialog, dialog.menu.start)
        if path:
            d.addCallback(self._walk, dialog, list(path))
        return d

    def _walk(self, page, dialog, path):
        """A direct dial's path, one element after another, as if typed."""
        if not path or dialog.ended or dialog.ending or dialog.outcome == "invalid":
            return page                   # done, or the state needs other input: it asks
        return self.answer(dialog, path.pop(0)).addCallback(self._walk, dialog, path)

    def answer(self, dialog, text):
        """→ Deferred[Page]: the dialog after one input."""
        dialog.steps += 1
        dialog.outcome = "page"
        text = normalize_digits(text.strip())[:MAX_INPUT]
        menu = dialog.menu
        if text == HOME:
            dialog.history.clear()
            return self._enter(dialog, menu.start)
        if text == BACK:
            return defer.succeed(self._back(dialog))
        if dialog.page < len(dialog.pages) - 1 and text == menu.more_key:
            dialog.page += 1
            return defer.succeed(self._shown(dialog))
        if dialog.ending:
            return defer.succeed(self._shown(dialog))   # read on, or back: nothing else
        state = dialog.state
        if state.kind == "menu":
            option = _option(state, text)
            if option is None:
                return defer.succeed(self._again(dialog, menu.invalid))
            if option.language:
                dialog.language = option.language
            return self._forward(dialog, option.next)
        if state.kind == "input":
            value = _validate(state, text)
            if value is None:
                return defer.succeed(self._again(dialog, state.error or menu.invalid))
            dialog.values[state.save] = value
            return self._forward(dialog, state.next)
        # A dynamic state the agency kept open: the input goes on to `next`.
        if state.save:
            dialog.values[state.save] = text
        return self._forward(dialog, state.next)

    # -- moving ------------------------------------------------------------------------

    def _forward(self, dialog, name):
        if len(dialog.history) >= MAX_HISTORY:
            del dialog.history[0]
        dialog.history.append((dialog.state.name, dialog.shown_text))
        return self._enter(dialog, name)

    def _back(self, dialog):
        if dialog.page > 0:
            dialog.page -= 1
            return self._shown(dialog)
        if dialog.history:
            name, shown = dialog.history.pop()
            dialog.ending = False
            self._show(dialog, dialog.states[name], shown)
            return self._shown(dialog)
        return self._shown(dialog)        # at the start: it stays

    def _enter(self, dialog, name):
        """→ Deferred[Page] of the state `name` (routers followed); already fired but
        for dynamic and file states, which wait on the world."""
        language = dialog.language
        dialog.ending = False
        for _hop in range(MAX_HOPS):
            state = dialog.states[name]
            kind = state.kind
            if kind == "router":
                name = _route(state, dialog)
                continue
            if kind == "menu" or kind == "input":
                self._show(dialog, state)
                return defer.succeed(self._shown(dialog))
            if kind == "end":
                return defer.succeed(self._end(dialog, render(state.text.get(language),
                                                              dialog.values)))
            if kind == "dynamic":
                return self.fetch(state, dialog).addCallback(self._fetched, dialog, state)
            return self.file(state, dialog).addCallback(self._filed, dialog, state)
        dialog.outcome = "loop"
        return defer.succeed(self._end(dialog, SERVICE_ERROR[language == "en"]))

    def _fetched(self, answer, dialog, state):
        if answer is None:
            dialog.outcome = "fallback"
            return self._end(dialog, render(state.fallback.get(dialog.language),
                                            dialog.values))
        text, ends = answer
        if ends or not state.next:
            return self._end(dialog, text)
        self._show(dialog, state, text)
        return self._shown(dialog)

    def _filed(self, tracking, dialog, state):
        language = dialog.language
        if tracking is None:
            dialog.outcome = "not_filed"
            return self._end(dialog, SERVICE_ERROR[language == "en"])
        dialog.values["tracking"] = tracking
        dialog.outcome = "filed"
        return self._end(dialog, render(state.text.get(language), dialog.values))

    # -- pages -------------------------------------------------------------------------

    def _show(self, dialog, state, shown_text=None, prefix=None):
        """Make `state` the one waiting for input, its pages built anew."""
        dialog.state = state
        dialog.shown_text = shown_text
        language = dialog.language
        if shown_text is not None:
            body = shown_text
        else:
            body = render(state.text.get(language), dialog.values)
        if state.kind == "menu":
            body += "".join(f"\n{number}. {render(option.label.get(language), dialog.values)}"
                            for number, option in enumerate(state.options, 1))
        if prefix is not None:
            body = prefix + "\n" + body
        dialog.pages = paginate(body, self._footer(dialog))
        dialog.page = 0

    def _again(self, dialog, error):
        dialog.outcome = "invalid"
        self._show(dialog, dialog.state, dialog.shown_text,
                   prefix=render(error.get(dialog.language), dialog.values))
        return self._shown(dialog)

    def _end(self, dialog, text):
        if dialog.outcome == "page":
            dialog.outcome = "end"
        dialog.ending = True
        dialog.pages = paginate(text or " ", self._footer(dialog))
        dialog.page = 0
        return self._shown(dialog)

    def _shown(self, dialog):
        page = dialog.current
        if page.end:
            dialog.ended = True
        return page

    @staticmethod
    def _footer(dialog):
        menu = dialog.menu
        return f"{menu.more_key}. {menu.more.get(dialog.language)}"


def _option(state, text):
    if not text.isdigit() or len(text) > 2:
        return None
    number = int(text)
    return state.options[number - 1] if 1 <= number <= len(state.options) else None


def _validate(state, text):
    if not text:
        return None
    if state.pattern is not None and not re.fullmatch(state.pattern, text):
        return None
    if state.validator is not None:
        return VALIDATORS[state.validator](text)
    return text


def _route(state, dialog):
    for route in state.routes:
        value = dialog.language if route.var == "language" else dialog.values.get(route.var)
        if route.test == "set":
            matched = (value is not None) == route.value
        elif value is None:
            matched = False
        elif route.test == "equals":
            matched = value == route.value
        elif route.test == "in":
            matched = value in route.value
        else:
            matched = re.search(route.value, value) is not None
        if matched:
            return route.next
    return state.default
