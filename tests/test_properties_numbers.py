"""Property tests of recipient numbers and national IDs (issue 13): every accepted form in
every digit script normalises to the one stored form; anything else is refused with our
own error, never another exception; masks never show the whole value."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.national_id import (
    InvalidNationalId, check_digit, mask_national_id, normalize_national_id)
from gateway.numbers import InvalidNumber, mask_msisdn, normalize_msisdn

ASCII = "0123456789"
SCRIPTS = (ASCII, "۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩")
digits = st.text(st.sampled_from(ASCII), min_size=9, max_size=9)
spaces = st.text(st.sampled_from(" \t\n"), max_size=2)
junk = st.text(st.one_of(st.sampled_from("0123456789+ ۰۹٠٩-()"), st.characters()),
               max_size=40)


def in_script(text, script):
    return text.translate(str.maketrans(ASCII, script))


@given(digits, st.sampled_from(["0{}", "{}", "98{}", "+98{}", "0098{}"]),
       st.sampled_from(SCRIPTS), spaces, spaces)
def test_every_accepted_form_in_every_script_is_the_same_number(rest, form, script,
                                                                 lead, trail):
    national = "9" + rest
    written = lead + in_script(form.format(national), script) + trail
    assert normalize_msisdn(written) == "98" + national


@given(junk)
def test_anything_else_is_refused_with_invalid_number_or_normalised(value):
    try:
        number = normalize_msisdn(value)
    except InvalidNumber:
        return
    assert len(number) == 12 and number.isascii() and number.isdigit()
    assert number.startswith("989")
    assert normalize_msisdn(number) == number            # the stored form is a fixpoint


@given(st.text(st.sampled_from(ASCII), min_size=1, max_size=20))
def test_a_masked_number_never_shows_the_whole_number(number):
    masked = mask_msisdn(number)
    assert number not in masked and len(masked) == len(number)


def national_ids():
    return digits.filter(lambda d: len(set(d)) > 1).map(lambda d: d + str(check_digit(d)))


@given(national_ids(), st.sampled_from(SCRIPTS), spaces, spaces)
def test_a_valid_national_id_in_any_script_normalises_to_its_ascii_digits(nid, script,
                                                                          lead, trail):
    # check_digit may give 10 → never: it is 0..9 by construction (11 - total, total ≥ 2).
    assert len(nid) == 10
    assert normalize_national_id(lead + in_script(nid, script) + trail) == nid


@given(national_ids(), st.integers(1, 9))
def test_a_wrong_check_digit_is_refused(nid, shift):
    wrong = nid[:9] + str((int(nid[9]) + shift) % 10)
    try:
        normalize_national_id(wrong)
    except InvalidNationalId as error:
        assert wrong not in str(error)                   # the reason never repeats it
    else:
        raise AssertionError("a national ID with a wrong check digit was accepted")


@given(junk)
def test_any_text_is_a_national_id_or_invalid_national_id(value):
    try:
        nid = normalize_national_id(value)
    except InvalidNationalId as error:
        assert len(value.strip()) < 5 or value.strip() not in str(error)
        return
    assert len(nid) == 10 and nid.isascii() and nid.isdigit()
    assert int(nid[9]) == check_digit(nid[:9])


@given(national_ids())
def test_a_masked_national_id_shows_only_its_last_two_digits(nid):
    assert mask_national_id(nid) == "********" + nid[-2:]
