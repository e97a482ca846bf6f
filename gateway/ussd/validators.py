"""Named input validators a menu may use (`validator: national_id`): each takes the
citizen's input (digits already made ASCII) and answers the value to keep, or None."""

import re

from gateway.national_id import InvalidNationalId, normalize_national_id
from gateway.numbers import InvalidNumber, normalize_msisdn

_DIGITS = re.compile(r"^[0-9]{1,20}$")
_TEN = re.compile(r"^[0-9]{10}$")


def national_id(text):
    """An Iranian national ID (gateway.national_id: check digit, not ten equal digits)."""
    try:
        return normalize_national_id(text) if _TEN.match(text) else None
    except InvalidNationalId:
        return None


def mobile(text):
    """A mobile number in any accepted form, kept as 98912…"""
    try:
        return normalize_msisdn(text)
    except InvalidNumber:
        return None


def digits(text):
    return text if _DIGITS.match(text) else None


def postal_code(text):
    """Ten digits, not starting with 0."""
    return text if _TEN.match(text) and text[0] != "0" else None


VALIDATORS = {"national_id": national_id, "mobile": mobile, "digits": digits,
              "postal_code": postal_code}
