"""Which texts a citizen's message to 4040 may be a copy of, in normal form.

A forwarded SMS often carries more than the original: a "Forwarded:" marker, a header
line, a signature or a comment of the citizen's. Tried, in this order:
- the whole text;
- the text after a forward marker at its start (`Fwd:`, `FW:`, `Forwarded:`,
  `Forwarded message:`, `بازارسال:`, `بازارسال شده:`, `فوروارد:`, `هدایت شده:`,
  `ارسال مجدد:`, any case, `:` or `：`);
- the text without up to MAX_ADDED_LINES whole lines at its start and/or its end (a
  piece of at least MIN_PIECE normalised characters; a piece is never cut inside a line).
At most 2 + (MAX_ADDED_LINES + 1)² - 1 = 17 candidates, whatever the text, so the
lookup stays one bounded query. A copy with words changed, or added inside a line,
does not match: the check says "not sent", which is the safe answer.
"""

import re

from gateway.text.normalise import normalise_for_check

MAX_ADDED_LINES = 3
MIN_PIECE = 12
_MARKER = re.compile(r"^\s*(?:fwd?|fw|forwarded(?:\s+message)?|بازارسال(?:\s*شده)?|"
                     r"فوروارد(?:\s*شده)?|هدایت(?:\s*شده)?|ارسال\s*مجدد)\s*[:：]\s*",
                     re.IGNORECASE)


def candidate_texts(text):
    """The normal forms to look up, most likely first, without duplicates or empties."""
    found = {}

    def add(normal, piece=False):
        if normal and (not piece or len(normal) >= MIN_PIECE):
            found.setdefault(normal, None)

    add(normalise_for_check(text))
    unmarked = _MARKER.sub("", text, count=1)
    add(normalise_for_check(unmarked))
    lines = [line for line in unmarked.splitlines() if line.strip()]
    if len(lines) > 1:
        for start in range(min(MAX_ADDED_LINES, len(lines) - 1) + 1):
            for cut in range(min(MAX_ADDED_LINES, len(lines) - 1 - start) + 1):
                if start or cut:
                    add(normalise_for_check("\n".join(lines[start:len(lines) - cut])),
                        piece=True)
    return list(found)
