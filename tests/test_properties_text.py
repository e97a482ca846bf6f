"""Property tests of outbound text splitting and its inbound decoding (issue 13): for any
Unicode text, the parts put back together are the text exactly (ZWNJ included), no part
is over its limit, and no part ends inside an escape pair or a surrogate pair."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.text import (
    DATA_CODING_GSM, DATA_CODING_UCS2, ESM_CLASS_UDHI, count_parts, decode_short_message,
    encode_message, gsm_decode)
from gateway.text.encode import GSM_PER_PART, GSM_SINGLE, UCS2_PER_PART, UCS2_SINGLE
from gateway.text.gsm import BASIC_CHARS, ESCAPE, EXTENSION_CHARS

ZWNJ = "\u200c"
# Alphabets that reach every branch: plain GSM, GSM with extension characters (two
# septets each), Persian with ZWNJ and Persian digits, and astral characters (emoji:
# a surrogate pair in UTF-16).
GSM = st.sampled_from(sorted(BASIC_CHARS))
EXTENSION = st.sampled_from(sorted(EXTENSION_CHARS))
PERSIAN = st.sampled_from(list("سلامپرونده‌ی۰۱۲۳۴۵۶۷۸۹ ،؟") + [ZWNJ])
ASTRAL = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)
ANY = st.characters(blacklist_categories=("Cs",))          # any char but a lone surrogate

texts = st.one_of(
    st.text(st.one_of(GSM, EXTENSION), min_size=1, max_size=700),
    st.text(st.one_of(GSM, EXTENSION, PERSIAN, ASTRAL), min_size=1, max_size=500),
    st.text(st.one_of(PERSIAN, ASTRAL), min_size=1, max_size=400),
    st.text(ANY, min_size=1, max_size=300),
)


def _chunks(message):
    """Each part's payload without its concatenation UDH."""
    if message.esm_class & ESM_CLASS_UDHI:
        return [part[6:] for part in message.parts]
    return list(message.parts)


@given(texts, st.integers(0, 255))
def test_parts_reassemble_to_the_text_and_none_is_over_its_limit(text, ref):
    message = encode_message(text, ref)
    chunks = _chunks(message)
    many = len(chunks) > 1
    assert bool(message.esm_class & ESM_CLASS_UDHI) == many
    if message.data_coding == DATA_CODING_GSM:
        assert all(len(chunk) <= (GSM_PER_PART if many else GSM_SINGLE) for chunk in chunks)
        # An escape pair is never split: each part reads on its own.
        assert all(chunk[-1:] != bytes((ESCAPE,)) for chunk in chunks)
        assert "".join(gsm_decode(chunk) for chunk in chunks) == text
    else:
        assert message.data_coding == DATA_CODING_UCS2
        limit = 2 * (UCS2_PER_PART if many else UCS2_SINGLE)
        assert all(len(chunk) <= limit and len(chunk) % 2 == 0 for chunk in chunks)
        # A surrogate pair is never split: each part is valid UTF-16 on its own.
        assert "".join(chunk.decode("utf-16-be") for chunk in chunks) == text
    assert text.count(ZWNJ) == "".join(
        decode_short_message(part, message.data_coding, many).text
        for part in message.parts).count(ZWNJ)


@given(texts, st.integers(0, 255))
def test_a_handset_decoding_each_part_reads_the_text_back(text, ref):
    message = encode_message(text, ref)
    many = len(message.parts) > 1
    decoded = [decode_short_message(part, message.data_coding, many)
               for part in message.parts]
    if many:
        assert [(d.concat.ref, d.concat.total, d.concat.seq) for d in decoded] == [
            (ref, len(decoded), seq) for seq in range(1, len(decoded) + 1)]
    assert "".join(d.text for d in decoded) == text


@given(texts)
def test_count_parts_agrees_with_the_parts_built(text):
    assert count_parts(text) == len(encode_message(text, 0).parts)


@given(st.text(ANY, max_size=50), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
       st.text(ANY, max_size=50))
def test_a_lone_surrogate_is_refused_with_value_error(before, surrogate, after):
    text = before + surrogate + after
    for call in (lambda: encode_message(text, 0), lambda: count_parts(text)):
        try:
            call()
        except ValueError:
            pass
        else:
            raise AssertionError("a lone surrogate was encoded")
