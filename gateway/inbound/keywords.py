"""Keywords a citizen may send to an agency's number: HELP / راهنما and STOP / لغو.

HELP is answered from the same number with the agency's name and what the number is
for (citizens use HELP as a trust check). STOP is a keyword only where the agency's
config allows opting out (`opt_out: true`; off by default, legal notices must reach
people): the citizen is recorded opted out of that agency (the accept path then
records its `normal` messages to them `failed`, `opted_out`) and told so. Elsewhere
STOP is an ordinary reply, filed in the inbox.

Keyword answers never start a loop: only a citizen's mobile number is answered (never
a 4040 number, a mask, a foreign sender), only a whole message that is exactly the
keyword, and at most `answers_per_window` answers per citizen per window.
"""

import collections
import logging
import unicodedata

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.model import HIGH
from gateway.numbers import mask_msisdn
from gateway.outbound.submission import Submission
from gateway.smpp.ratelog import RateLimitedLog

log = logging.getLogger("payam.inbound.keywords")

HELP, STOP = "help", "stop"
WORDS = {"help": HELP, "راهنما": HELP, "stop": STOP, "لغو": STOP}
ANSWERS_PER_WINDOW = 3           # keyword answers per citizen per window
ANSWER_WINDOW_S = 3600.0
MAX_TRACKED_CITIZENS = 100_000   # the rate limit's memory, oldest forgotten first
ANSWER_VALIDITY_S = 3600

# Persian and Arabic forms of one letter, and what to drop: format characters (ZWNJ,
# ZWJ, direction marks), tatweel, Arabic diacritics.
_FOLD = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ة": "ه", "أ": "ا", "إ": "ا",
                       "آ": "ا", "ٱ": "ا", "ـ": None})
_TRAILING = ".!?؟،,;:-"

DEFAULT_HELP = {
    "fa": "{name}: این شماره ({number}) شماره رسمی پیامک {name} است؛ پاسخ شما به این "
          "شماره به دست {name} می‌رسد. برای بررسی اصالت یک پیامک، متن آن را به ۴۰۴۰ بفرستید.",
    "en": "{name}: {number} is the official SMS number of {name}; your replies to it "
          "reach {name}. To check whether a text is genuine, forward it to 4040.",
}
STOPPED = {
    "fa": "{name}: دیگر پیامک‌های عادی {name} برای شما فرستاده نمی‌شود؛ پیام‌های فوری "
          "همچنان می‌رسد.",
    "en": "{name}: you will no longer get {name}'s routine messages; urgent ones still "
          "reach you.",
}


def normalise(text):
    """Text folded for keyword matching: NFKC, case, Persian/Arabic letter forms,
    whitespace and ZWNJ removed, trailing punctuation dropped."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    text = "".join(ch for ch in text if not ch.isspace()
                   and unicodedata.category(ch) not in ("Cf", "Mn"))
    return text.strip(_TRAILING)


def keyword_of(text):
    """(keyword, language) when the whole text is one, else None."""
    word = WORDS.get(normalise(text))
    if word is None:
        return None
    return word, ("en" if text.strip().isascii() else "fa")


class AnswerLimit:
    """At most `count` answers per citizen per `window_s` (bounded memory)."""

    def __init__(self, clock, count=ANSWERS_PER_WINDOW, window_s=ANSWER_WINDOW_S,
                 max_citizens=MAX_TRACKED_CITIZENS):
        self.clock = clock
        self.count = count
        self.window_s = window_s
        self.max_citizens = max_citizens
        self._times = collections.OrderedDict()

    def allow(self, citizen):
        now = self.clock.seconds()
        times = self._times.pop(citizen, None) or collections.deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        allowed = len(times) < self.count
        if allowed:
            times.append(now)
        self._times[citizen] = times
        while len(self._times) > self.max_citizens:
            self._times.popitem(last=False)
        return allowed


class Keywords:
    def __init__(self, store, clock, outbound_of, limit=None):
        """outbound_of(): the accept path (Outbound) answers go through, or None while
        it is not built."""
        self.store = store
        self.clock = clock
        self.outbound_of = outbound_of
        self.limit = limit if limit is not None else AnswerLimit(clock)
        self._said = RateLimitedLog(log, clock)

    def handle(self, mo, agency, number):
        """Deferred once a keyword in `mo` (to `agency`'s `number`) is handled; None
        when `mo` is not one of its keywords (it is then an ordinary reply)."""
        found = keyword_of(mo.text) if not mo.partial else None
        if found is None:
            return None
        word, language = found
        if word == STOP and not agency.opt_out:
            return None
        if not mo.citizen.startswith("989") or not mo.citizen.isdigit():
            return None          # not a citizen's handset: filed, never answered
        if word == HELP:
            text = (agency.help_text or DEFAULT_HELP[language]).format(
                name=agency.name, number=number)
            return self._answer(mo, agency, number, text, word)
        d = self.store.opt_out(agency.id, mo.citizen)
        d.addCallback(lambda new: log.info(
            "citizen %s opted out of %s%s", mask_msisdn(mo.citizen), agency.id,
            "" if new else " (again)"))
        d.addCallback(lambda _: self._answer(
            mo, agency, number, STOPPED[language].format(name=agency.name), word))
        return d

    def _answer(self, mo, agency, number, text, word):
        outbound = self.outbound_of()
        if outbound is None or not self.limit.allow(mo.citizen):
            self._said.log(logging.INFO, (agency.id, word, "unanswered"),
                           "%s from %s to %s not answered (%s)", word, mask_msisdn(mo.citizen),
                           agency.id,
                           "rate limit" if outbound is not None else "no accept path")
            return defer.succeed(None)
        # HIGH: an answer the citizen asked for reaches them even after STOP.
        submission = Submission(sender=number, recipients=[mo.citizen], text=text,
                                priority=HIGH, reference=f"keyword:{word}",
                                idempotency_key=None, validity_s=ANSWER_VALIDITY_S,
                                receipt=False)
        try:
            d = outbound.submit(agency, submission, origin=f"keyword:{word}")
        except Exception:
            d = defer.fail()
        d.addBoth(self._answered, mo, agency, word)
        return d

    @staticmethod
    def _answered(outcome, mo, agency, word):
        if isinstance(outcome, Failure):
            log.warning("%s answer to %s for %s not accepted: %s", word,
                        mask_msisdn(mo.citizen), agency.id, outcome.getErrorMessage())
        return None
