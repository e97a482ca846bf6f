"""USSD pages: what one page may hold, counted as the encoding actually costs.

A USSD page has no concatenation: at most 182 GSM 7-bit septets (extension characters
cost two) or, once one character is outside GSM 03.38, 80 UCS2 characters (UTF-16
units: a character outside the BMP costs two). Other USSD engines count characters,
whatever the encoding; a Persian page counted that way overflows.

`paginate(lines, footer)` splits a longer text into pages, each but the last ending with
`footer` (the "more" option), never splitting a line that fits a page and splitting one
that does not at a space where it can, else between characters (never inside a
surrogate pair).
"""

from gateway.text.encode import measure, utf16_units
from gateway.text.gsm import is_gsm

from gateway.smpp.constants import DATA_CODING_DEFAULT

GSM_PAGE = 182          # septets
UCS2_PAGE = 80          # UTF-16 units


def page_cost(text):
    """(cost, limit): what `text` costs as one page, and what its encoding allows."""
    data_coding, length = measure(text)
    return length, GSM_PAGE if data_coding == DATA_CODING_DEFAULT else UCS2_PAGE


def fits(text):
    cost, limit = page_cost(text)
    return cost <= limit


def fits_with(line, footer):
    """Can `line` stand on a page of its own that ends with `footer`?"""
    return fits(line + "\n" + footer)


def paginate(text, footer):
    """The pages of `text` (lines separated by "\\n"); all but the last end with
    "\\n" + footer. A text that fits is one page, footer-less."""
    if fits(text):
        return [text]
    pages, current = [], []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        rest = "\n".join(current + lines[index:])
        if fits(rest):
            pages.append(rest)
            return pages
        candidate = current + [lines[index]]
        if fits_with("\n".join(candidate), footer):
            current = candidate
            index += 1
            continue
        if current:
            pages.append("\n".join(current) + "\n" + footer)
            current = []
            continue
        # One line longer than a page: its head goes on this page, the rest stays.
        head, tail = _split_line(lines[index], footer)
        pages.append(head + "\n" + footer)
        lines[index] = tail
    if current:
        pages.append("\n".join(current))
    return pages


def _split_line(line, footer):
    """(head, tail): the longest head of `line` on a page with `footer`, cut after a
    space when one is in its second half."""
    low, high = 1, len(line)
    while low < high:                           # the longest prefix that fits
        middle = (low + high + 1) // 2
        if fits_with(line[:middle], footer):
            low = middle
        else:
            high = middle - 1
    cut = low
    if 0xD800 <= ord(line[cut - 1]) <= 0xDBFF and cut > 1:
        cut -= 1                                 # (only with surrogates in a str)
    space = line.rfind(" ", 0, cut)
    if space > cut // 2:
        cut = space + 1
    return line[:cut].rstrip(), line[cut:].lstrip()


def page_units(text):
    """How a page's length reads in messages: '81 UCS2 characters' or '183 septets'."""
    if is_gsm(text):
        return f"{page_cost(text)[0]} GSM septets"
    return f"{utf16_units(text)} UCS2 characters"
