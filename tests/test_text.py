"""gateway.text: GSM 03.38 tables, coding choice, splitting with UDH, inbound decoding."""

import random

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec used as an oracle)
import pytest

from gateway.text import (
    ConcatInfo,
    DecodedText,
    MAX_PARTS,
    TextTooLong,
    codec_for,
    count_parts,
    decode_payload,
    decode_short_message,
    encode_for_submit,
    encode_message,
    encode_text,
    gsm_decode,
    gsm_encode,
    gsm_length,
    is_gsm,
    measure,
    split_udh,
    udh_length,
    utf16_units,
)
from gateway.text.gsm import BASIC_TABLE, EXTENSION_CHARS, GSM_CHARS

ZWNJ = "\u200c"
PERSIAN = ("سازمان امور مالیاتی" + ZWNJ + "می" + ZWNJ + "گوید: مهلت تسلیم اظهارنامه "
           "۱۴۰۳/۰۳/۳۱ است؛ آیا پرداخت کرده" + ZWNJ + "اید؟ «لطفاً» ـ ٠١٢٣٤٥٦٧٨٩، ")
EMOJI = "\U0001F600"  # a surrogate pair in UTF-16
EXTENSIONS = "^{}\\[~]|€\f"


def body(part: bytes) -> bytes:
    """A part's short_message without its 6-octet concatenation UDH."""
    assert part[:3] == b"\x05\x00\x03"
    return part[6:]


def reassemble_utf16(message) -> str:
    return b"".join(body(p) for p in message.parts).decode("utf-16-be")


def reassemble_gsm(message) -> str:
    return gsm_decode(b"".join(body(p) for p in message.parts))


# --- GSM 03.38 tables ---------------------------------------------------------------

def test_basic_table_has_127_characters_and_the_escape():
    assert len(BASIC_TABLE) == 128
    assert BASIC_TABLE[0x1B] is None
    assert len(set(c for c in BASIC_TABLE if c is not None)) == 127


def test_all_basic_characters_round_trip():
    text = "".join(c for c in BASIC_TABLE if c is not None)
    encoded = gsm_encode(text)
    assert encoded == bytes(code for code in range(128) if code != 0x1B)
    assert gsm_decode(encoded) == text
    assert gsm_length(text) == 127
    assert is_gsm(text)


def test_extension_characters_take_an_escape_each():
    encoded = gsm_encode(EXTENSIONS)
    assert encoded == b"\x1b\x14\x1b(\x1b)\x1b/\x1b<\x1b=\x1b>\x1b@\x1be\x1b\n"
    assert gsm_length(EXTENSIONS) == 2 * len(EXTENSIONS)
    assert gsm_decode(encoded) == EXTENSIONS


def test_oracle_agrees_on_every_gsm_character_and_a_random_sample():
    for char in GSM_CHARS:
        assert gsm_encode(char) == char.encode("gsm03.38"), repr(char)
    alphabet = sorted(GSM_CHARS)
    rng = random.Random(38)
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        encoded = gsm_encode(text)
        assert encoded == text.encode("gsm03.38")
        assert gsm_decode(encoded) == encoded.decode("gsm03.38")
        assert gsm_length(text) == len(encoded)


def test_ascii_fast_path_agrees_with_the_oracle():
    ascii_gsm = [chr(c) for c in range(128) if chr(c) in GSM_CHARS]
    rng = random.Random(3)
    for _ in range(300):
        text = "".join(rng.choice(ascii_gsm) for _ in range(rng.randint(1, 300)))
        assert gsm_encode(text) == text.encode("gsm03.38")
        assert gsm_length(text) == len(text.encode("gsm03.38"))
        assert is_gsm(text)
        assert not is_gsm(text + "`")
        assert gsm_decode(gsm_encode(text)) == text


def test_is_gsm_matches_the_oracle_over_the_bmp():
    # The oracle also "encodes" the escape control itself; it is not a character for us.
    for cp in range(0x3000):
        char = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or cp == 0x1B:
            continue
        try:
            char.encode("gsm03.38")
            oracle = True
        except UnicodeError:
            oracle = False
        assert is_gsm(char) == oracle, hex(cp)


def test_not_gsm():
    for text in ("سلام", "ç", "\t", "\x1b", EMOJI, "abc" + ZWNJ, "`"):
        assert not is_gsm(text)
    with pytest.raises(ValueError, match="U\\+0633 at position 2"):
        gsm_encode("ab" + "س")
    with pytest.raises(TypeError):
        gsm_encode(b"abc")


def test_gsm_decode_is_tolerant():
    assert gsm_decode(b"ab\x80\xff") == "ab??"
    assert gsm_decode(b"ab\x1b") == "ab?"                # escape at the end
    assert gsm_decode(b"a\x1b\x1bb") == "a?b"            # ESC ESC: reserved, one '?'
    assert gsm_decode(b"\x1b\x1b\x1b(") == "?{"
    assert gsm_decode(b"\x1bA") == "A"                    # unknown extension: basic char
    assert gsm_decode(b"\x1b\xc8") == "?"
    assert gsm_decode(bytearray(b"\x00\x02")) == "@$"
    with pytest.raises(TypeError):
        gsm_decode("abc")


# --- coding choice and part counts ----------------------------------------------------

@pytest.mark.parametrize("length, parts", [
    (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1530, 10), (1531, 11),
])
def test_gsm_part_counts_at_boundaries(length, parts):
    text = "".join(random.Random(length).choice("abcXYZ 0123@$!") for _ in range(length))
    message = encode_message(text, 1)
    assert message.data_coding == 0
    assert len(message.parts) == parts == count_parts(text)
    assert message.esm_class == (0x40 if parts > 1 else 0)
    if parts == 1:
        assert message.parts == [gsm_encode(text)]
    else:
        assert all(len(body(p)) == 153 for p in message.parts[:-1])
        assert reassemble_gsm(message) == text


def test_escape_characters_count_two_septets():
    assert count_parts("€" * 80) == 1
    assert count_parts("€" * 80 + "a") == 2
    assert count_parts("a" * 159 + "€") == 2
    message = encode_message("a" * 158 + "€", 0)
    assert message.parts == [b"a" * 158 + b"\x1be"]


def test_escape_pair_is_never_split_across_parts():
    # 152 plain septets put the escape of '[' at septet 153: the pair moves to part 2.
    text = "a" * 152 + "[" + "b" * 100
    message = encode_message(text, 9)
    first, second = body(message.parts[0]), body(message.parts[1])
    assert first == b"a" * 152
    assert second.startswith(b"\x1b<")
    assert reassemble_gsm(message) == text
    for part in message.parts:
        assert not body(part).endswith(b"\x1b")


def test_escape_shortening_can_add_a_part():
    # Pairs straddling every boundary: 153-septet arithmetic says 2 parts, reality 3.
    text = "a" * 152 + "[" * 77
    assert gsm_length(text) == 306
    message = encode_message(text, 3)
    assert len(message.parts) == 3 == count_parts(text)
    assert reassemble_gsm(message) == text


@pytest.mark.parametrize("length, parts", [
    (1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (670, 10),
])
def test_ucs2_part_counts_at_boundaries(length, parts):
    text = (PERSIAN * 20)[:length]
    message = encode_message(text, 200)
    assert message.data_coding == 8
    assert len(message.parts) == parts == count_parts(text)
    if parts == 1:
        assert message.esm_class == 0
        assert message.parts == [text.encode("utf-16-be")]
    else:
        assert message.esm_class == 0x40
        assert all(len(body(p)) == 134 for p in message.parts[:-1])
        assert reassemble_utf16(message) == text


def test_one_non_gsm_character_makes_the_whole_text_ucs2():
    text = "Your code is 1234 " + "ç"
    data_coding, length = measure(text)
    assert (data_coding, length) == (8, len(text))
    assert encode_message(text, 0).parts == [text.encode("utf-16-be")]


def test_persian_text_with_zwnj_round_trips_byte_exactly():
    text = (PERSIAN * 4)[:300]
    assert ZWNJ in text and "؛" in text and "«" in text and "ـ" in text and "٣" in text
    message = encode_message(text, 42)
    rebuilt = b"".join(body(p) for p in message.parts)
    assert rebuilt == text.encode("utf-16-be")
    decoded = [decode_short_message(p, message.data_coding, True) for p in message.parts]
    assert "".join(d.text for d in decoded) == text
    assert [d.concat for d in decoded] == [
        ConcatInfo(42, len(message.parts), seq) for seq in range(1, len(message.parts) + 1)]


def test_udh_bytes_are_exact():
    message = encode_message("x" * 400, 0xAB)
    assert [p[:6] for p in message.parts] == [
        bytes([0x05, 0x00, 0x03, 0xAB, 3, seq]) for seq in (1, 2, 3)]


def test_emoji_at_a_boundary_moves_to_the_next_part():
    text = "س" * 66 + EMOJI + "س" * 10       # the pair would take units 67 and 68
    assert utf16_units(text) == 78
    message = encode_message(text, 5)
    assert len(message.parts) == 2 == count_parts(text)
    first, second = body(message.parts[0]), body(message.parts[1])
    assert len(first) == 132                  # one unit shorter
    assert first.decode("utf-16-be") == "س" * 66
    assert second.decode("utf-16-be") == EMOJI + "س" * 10
    for part in message.parts:                # every part is valid UTF-16 on its own
        body(part).decode("utf-16-be", "strict")


def test_surrogate_shortening_can_add_a_part():
    text = "ا" * 66 + EMOJI * 34            # 134 units: 2 parts by arithmetic
    assert utf16_units(text) == 134
    message = encode_message(text, 5)
    assert len(message.parts) == 3 == count_parts(text)
    assert reassemble_utf16(message) == text


def test_emoji_only_text_fills_single_part_by_units():
    assert count_parts(EMOJI * 35) == 1
    assert count_parts(EMOJI * 35 + "a") == 2


def test_count_parts_agrees_with_encode_message_on_random_texts():
    rng = random.Random(7)
    pools = ["abc €[", "ab{}[]|~^\\\f", "abc", "سلام" + ZWNJ + EMOJI, "ab" + EMOJI, "؟،" + ZWNJ]
    for _ in range(300):
        pool = rng.choice(pools)
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 700)))
        message = encode_message(text, rng.randrange(256))
        assert count_parts(text) == len(message.parts)
        if len(message.parts) > 1:
            joined = b"".join(body(p) for p in message.parts)
            decoded = gsm_decode(joined) if message.data_coding == 0 else joined.decode("utf-16-be")
            assert decoded == text


def test_bad_inputs():
    for call in (encode_message, encode_for_submit):
        with pytest.raises(ValueError, match="empty"):
            call("", 0)
        with pytest.raises(TypeError):
            call(None, 0)
    with pytest.raises(ValueError, match="empty"):
        count_parts("")
    for ref in (-1, 256, "1", True, 1.0):
        with pytest.raises(ValueError, match="0..255"):
            encode_message("hi", ref)
    with pytest.raises(ValueError, match="unpaired surrogate U\\+D83D at position 2"):
        encode_message("ab\ud83d", 0)


def test_encode_for_submit_enforces_the_part_limit():
    assert MAX_PARTS == 10
    assert len(encode_for_submit("a" * 1530, 1).parts) == 10
    with pytest.raises(TextTooLong) as caught:
        encode_for_submit("a" * 1531, 1)
    assert (caught.value.parts, caught.value.max_parts) == (11, 10)
    assert "11" in str(caught.value)
    with pytest.raises(TextTooLong):
        encode_for_submit("س" * 135, 1, max_parts=2)
    assert len(encode_for_submit("س" * 134, 1, max_parts=2).parts) == 2
    assert len(encode_for_submit("a" * 160, 1, max_parts=1).parts) == 1
    with pytest.raises(TextTooLong) as caught:
        encode_for_submit("a" * 161, 1, max_parts=1)
    assert caught.value.parts == 2
    with pytest.raises(TextTooLong) as caught:            # refused before building
        encode_for_submit("س" * 5000, 1)
    assert caught.value.parts == 75
    for bad in (0, -1, "10", None):
        with pytest.raises(ValueError, match="max_parts"):
            encode_for_submit("hi", 1, max_parts=bad)


def test_encode_text_does_not_split():
    assert encode_text("a" * 300) == (0, b"a" * 300)
    assert encode_text("سلام") == (8, "سلام".encode("utf-16-be"))


# --- inbound decoding -----------------------------------------------------------------

def test_decode_16bit_reference_udh():
    data = bytes([0x06, 0x08, 0x04, 0x12, 0x34, 3, 2]) + "سلام".encode("utf-16-be")
    assert decode_short_message(data, 8, True) == DecodedText("سلام", ConcatInfo(0x1234, 3, 2))


def test_decode_skips_other_information_elements():
    # Port addressing IE (0x05) before the 8-bit concatenation IE.
    udh = bytes([0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x07, 2, 1])
    decoded = decode_short_message(udh + b"hello", 0, True)
    assert decoded == DecodedText("hello", ConcatInfo(7, 2, 1))


def test_decode_without_concatenation_ie():
    decoded = decode_short_message(bytes([0x04, 0x05, 0x02, 0x0B, 0x84]) + b"x", 0, True)
    assert decoded == DecodedText("x", None)


def test_decode_ignores_invalid_concatenation_numbers():
    for total, seq in ((0, 0), (2, 0), (2, 3)):
        data = bytes([0x05, 0x00, 0x03, 1, total, seq]) + b"a"
        assert decode_short_message(data, 0, True).concat is None


def test_udh_length_checks_the_payload():
    assert udh_length(b"\x05\x00\x03\x01\x02\x01abc") == 6
    with pytest.raises(ValueError, match="UDH claims 5 octets"):
        decode_short_message(b"\x05\x00\x03", 0, True)
    with pytest.raises(ValueError, match="empty"):
        decode_short_message(b"", 8, True)
    with pytest.raises(ValueError, match="past the end"):
        decode_short_message(b"\x03\x00\x05\x01hello", 0, True)
    with pytest.raises(ValueError, match="truncated"):
        decode_short_message(b"\x01\x00hello", 0, True)


def test_udhi_false_keeps_leading_bytes_as_text():
    assert decode_short_message(b"\x05\x00\x03abc", 4, False) == DecodedText("\x05\x00\x03abc", None)


def test_decode_per_data_coding():
    assert decode_short_message(b"\x00\x02\x1be", 0, False).text == "@$€"
    assert decode_short_message(b"\x00\x1b\x14", 0x0F, False).text == "@^"
    assert decode_short_message(b"caf\xe9", 3, False).text == "café"
    assert decode_short_message(b"abc\xff", 1, False).text == "abc\ufffd"
    assert decode_short_message(b"\x01\xff", 4, False).text == "\x01\xff"
    assert decode_short_message(b"\x01\xff", 2, False).text == "\x01\xff"
    assert decode_short_message("سلام".encode("utf-16-be") + b"\x06", 8, False).text == "سلام\ufffd"
    assert decode_short_message(b"\xd8\x3d", 8, False).text == "\ufffd"   # lone high surrogate
    assert decode_short_message("Привет".encode("iso8859_5"), 6, False).text == "Привет"
    # GSM 03.38 data coding scheme groups beyond SMPP's own values.
    assert decode_short_message("سلام".encode("utf-16-be"), 0x18, False).text == "سلام"
    assert decode_short_message(b"\x00", 0xF0, False).text == "@"
    assert decode_short_message(b"\x00", 0xF4, False).text == "\x00"
    assert decode_short_message("ب".encode("utf-16-be"), 0xE0, False).text == "ب"


def test_codec_for_rejects_out_of_range_values():
    assert codec_for(0x11) == "gsm"
    assert codec_for(0x24) == "binary"       # compressed: shown raw
    for value in (-1, 256, "8"):
        with pytest.raises(ValueError):
            codec_for(value)


def test_split_udh_returns_raw_body_for_reassembly():
    # A sender that split a surrogate pair across parts: joining bodies first repairs it.
    raw = EMOJI.encode("utf-16-be")
    one = bytes([5, 0, 3, 9, 2, 1]) + raw[:2]
    two = bytes([5, 0, 3, 9, 2, 2]) + raw[2:]
    (c1, b1), (c2, b2) = split_udh(one, True), split_udh(two, True)
    assert (c1.seq, c2.seq) == (1, 2)
    assert decode_payload(b1 + b2, 8) == EMOJI
    assert decode_short_message(one, 8, True).text == "\ufffd"
    with pytest.raises(TypeError):
        decode_short_message("text", 8, False)


def test_extension_chars_set_matches_the_brief():
    assert EXTENSION_CHARS == set(EXTENSIONS)


def test_non_ascii_gsm_text_boundaries():
    assert encode_message("é" * 160, 0).parts == [b"\x05" * 160]
    text = "Δ" * 152 + "€" + "é" * 10
    message = encode_message(text, 0)
    assert len(message.parts) == 2 == count_parts(text)
    assert body(message.parts[0]) == b"\x10" * 152
    assert body(message.parts[1]) == b"\x1be" + b"\x05" * 10
