"""The checks every channel's submissions need: recipients and text length.

A channel checks the shape of its own input (JSON, USSD menus, ...); what is sendable
is decided here, the same for all of them.
"""

from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.outbound.errors import InvalidRecipients, TooManyParts, UnsendableText
from gateway.text import MAX_PARTS, count_parts

MAX_TEXT_CHARS = 10_000       # far beyond 10 parts: refused as too long, not parsed further
MAX_REPORTED = 5              # offending recipients named in one refusal


def normalize_recipients(entries):
    """Every recipient in the stored form ("98912..."), or InvalidRecipients naming the
    first few bad entries by index and reason (the numbers themselves are not echoed)."""
    normalized = []
    problems = []
    bad = 0
    for index, entry in enumerate(entries):
        try:
            normalized.append(normalize_msisdn(entry))
        except InvalidNumber as error:
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"to[{index}]: {error.reason}")
    if bad:
        more = f" (and {bad - len(problems)} more)" if bad > len(problems) else ""
        raise InvalidRecipients(f"{bad} recipient(s) are not Iranian mobile numbers: "
                                + "; ".join(problems) + more)
    return normalized


def check_text_length(text):
    """The number of SMS parts the text needs; TooManyParts beyond MAX_PARTS."""
    if len(text) > MAX_TEXT_CHARS:
        raise TooManyParts(f"text has {len(text)} characters; at most {MAX_PARTS} SMS "
                           "parts are allowed")
    try:
        parts = count_parts(text)
    except ValueError as error:        # e.g. an unpaired surrogate from a JSON escape
        raise UnsendableText(f"'text' cannot be sent: {error}") from None
    if parts > MAX_PARTS:
        raise TooManyParts(f"text needs {parts} SMS parts; at most {MAX_PARTS} are allowed")
    return parts
