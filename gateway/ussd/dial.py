"""Dial strings: `*4*0135#` names a menu, `*4*0135*2*1#` also a path through it."""

import re

from gateway.numbers import normalize_digits

MAX_DIAL = 64                     # a real dial string is far shorter
MAX_PATH = 10                     # path elements walked at most
_DIAL_RE = re.compile(r"^\*4(\*[0-9]{1,12})+#$")


def parse_dial(text, codes):
    """(code, path) for a dial string under *4 whose longest prefix is in `codes` (the
    agencies' "*4*0135#"), path the remaining elements; (None, ()) for a string that is
    no dial string or names no code."""
    if not isinstance(text, str) or len(text) > MAX_DIAL:
        return None, ()
    text = normalize_digits(text.strip())
    if not _DIAL_RE.match(text):
        return None, ()
    elements = text[3:-1].split("*")
    for length in range(len(elements), 0, -1):
        code = "*4*" + "*".join(elements[:length]) + "#"
        if code in codes:
            path = tuple(elements[length:])
            return (code, path) if len(path) <= MAX_PATH else (None, ())
    return None, ()


def is_dial_string(text):
    return isinstance(text, str) and len(text) <= MAX_DIAL and bool(
        _DIAL_RE.match(normalize_digits(text.strip())))
