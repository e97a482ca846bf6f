"""Iranian national IDs (کد ملی): the one check of their shape and check digit.

Ten digits, the last a mod-11 check over the first nine weighted 10..2; ten equal digits
pass the arithmetic but are never issued. Written in Persian or Arabic-Indic digits too.
A national ID is personal data: it is never logged (mask_national_id for the rare line
that must say which one).
"""

from gateway.numbers import normalize_digits

NATIONAL_ID_LENGTH = 10
_MAX_INPUT = 32


class InvalidNationalId(ValueError):
    """Not a national ID; `reason` says why (never repeats the value)."""

    def __init__(self, reason):
        super().__init__(f"invalid national ID: {reason}")
        self.reason = reason


def check_digit(first_nine: str) -> int:
    total = sum(int(digit) * (10 - index) for index, digit in enumerate(first_nine)) % 11
    return total if total < 2 else 11 - total


def normalize_national_id(value) -> str:
    """The ten ASCII digits of a valid national ID; InvalidNationalId otherwise."""
    if not isinstance(value, str):
        raise InvalidNationalId(f"must be a string, not {type(value).__name__}")
    text = value.strip()
    if len(text) > _MAX_INPUT:
        raise InvalidNationalId("too long")
    text = normalize_digits(text)
    if len(text) != NATIONAL_ID_LENGTH or not (text.isascii() and text.isdigit()):
        raise InvalidNationalId("must be 10 digits")
    if len(set(text)) == 1:
        raise InvalidNationalId("ten equal digits are not issued")
    if int(text[9]) != check_digit(text[:9]):
        raise InvalidNationalId("check digit does not match")
    return text


def is_national_id(value) -> bool:
    try:
        normalize_national_id(value)
    except InvalidNationalId:
        return False
    return True


def mask_national_id(national_id) -> str:
    """Safe for a log line: the last two digits only."""
    text = national_id if isinstance(national_id, str) else ""
    return "********" + text[-2:] if len(text) >= 2 else "**"
