"""gateway.numbers: MSISDN normalisation, digit conversion, masking."""

import pytest

from gateway.numbers import (
    InvalidNumber,
    mask_msisdn,
    normalize_digits,
    normalize_msisdn,
)

PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FORMS = ["09121234567", "9121234567", "989121234567", "+989121234567", "00989121234567"]


@pytest.mark.parametrize("form", FORMS)
def test_every_accepted_form(form):
    assert normalize_msisdn(form) == "989121234567"
    assert normalize_msisdn(f"  {form}\t\n") == "989121234567"


@pytest.mark.parametrize("form", FORMS)
def test_persian_and_arabic_indic_digits(form):
    assert normalize_msisdn(form.translate(PERSIAN)) == "989121234567"
    assert normalize_msisdn(form.translate(ARABIC)) == "989121234567"


def test_mixed_digit_scripts_and_other_operators():
    assert normalize_msisdn("۰۹۳۵" + "٩٨٧" + "6543") == "989359876543"
    assert normalize_msisdn("09901234567") == "989901234567"
    # A 10-digit national number may itself start with 98.
    assert normalize_msisdn("9812345678") == "989812345678"


@pytest.mark.parametrize("value, reason", [
    ("02112345678", "not a mobile"),           # Tehran landline
    ("982112345678", "not a mobile"),
    ("+982112345678", "not a mobile"),
    ("00988121234567", "not a mobile"),        # 0098 with a wrong next digit
    ("0912123456", "wrong length"),            # too short
    ("091212345678", "wrong length"),          # too long
    ("912123456", "wrong length"),
    ("98912123456", "wrong length"),
    ("9891212345678", "wrong length"),
    ("+98912123456", "wrong length"),
    ("0098912123456789", "wrong length"),
    ("123", "wrong length"),
    ("0", "wrong length"),
    ("+", "only digits"),
    ("0912abc4567", "only digits"),
    ("O9121234567", "only digits"),            # letter O
    ("+98 912 123 4567", "only digits"),       # inner spaces
    ("0912-123-4567", "only digits"),
    ("(0912)1234567", "only digits"),
    ("++989121234567", "only digits"),
    ("98+9121234567", "only digits"),
    ("\u200e09121234567", "only digits"),      # left-to-right mark from a copy-paste
    ("０９１２１２３４５６７", "only digits"),    # fullwidth digits are not accepted
    ("⁰⁹¹²¹²³⁴⁵⁶⁷", "only digits"),             # superscripts pass str.isdigit, not us
    ("+19121234567", "country code"),
    ("+4915112345678", "country code"),
    ("0049151123456", "country code"),
    ("", "empty"),
    ("   ", "empty"),
    ("9" * 40, "too long"),
])
def test_rejects(value, reason):
    with pytest.raises(InvalidNumber) as caught:
        normalize_msisdn(value)
    assert reason in caught.value.reason
    assert caught.value.value == value
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", [None, 9121234567, b"09121234567", ["09121234567"]])
def test_non_string_input(value):
    with pytest.raises(InvalidNumber, match="must be a string"):
        normalize_msisdn(value)


def test_normalize_digits():
    assert normalize_digits("کد ۱۲۳ و ٤٥٦ و 789") == "کد 123 و 456 و 789"
    assert normalize_digits("abc") == "abc"
    with pytest.raises(TypeError):
        normalize_digits(123)


def test_mask_never_shows_the_whole_number():
    assert mask_msisdn("989121234567") == "98912****567"
    assert mask_msisdn("09121234567") == "09121***567"
    assert mask_msisdn("12345") == "***45"
    assert mask_msisdn("12") == "**"
    assert mask_msisdn("") == ""
    assert "9121234567" not in mask_msisdn(9121234567)



def test_the_fast_path_answers_as_the_general_parse_does():
    # normalize_msisdn answers plain ASCII "09…" / "989…" without the general parse; a
    # trailing space sends the same digits through the general one.
    import itertools
    from gateway.numbers import InvalidNumber as Invalid

    def outcome(value):
        try:
            return normalize_msisdn(value)
        except Invalid:
            return "invalid"

    prefixes = ["09", "989", "98", "9", "0", "08", "988", "0098", "00"]
    for prefix, length in itertools.product(prefixes, range(9, 14)):
        for fill in ("1", "0", "9"):
            value = (prefix + fill * length)[:length]
            assert outcome(value) == outcome(value + " "), value
