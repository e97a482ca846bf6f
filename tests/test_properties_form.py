"""Property test of Kannel's query and form decoding (issue 10 moved it onto bytes for
speed): for any input it reads exactly what parse_qsl reads in latin-1 both ways, the
reading every migrated agency's sendsms was accepted under."""

from urllib.parse import parse_qsl

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.http.kannel import form_fields

# Mostly the bytes that mean something in a query, then any byte at all.
_SPECIAL = st.sampled_from([b"&", b"=", b"+", b"%", b"%2", b"%41", b"%zz", b"%e2%80%8c",
                            b"%C3", b";", b"a", b"F"])
CHUNKS = st.lists(st.one_of(_SPECIAL, st.binary(max_size=4)), max_size=24).map(b"".join)


def _as_parse_qsl_reads_it(chunk):
    pairs = parse_qsl(chunk.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


@given(CHUNKS)
@example(b"to=%2B98912&text=%D8%B3%D9%84%D8%A7%D9%85+%E2%80%8C&&flag&=x&a==b")
def test_form_fields_read_any_bytes_as_parse_qsl_does(chunk):
    assert form_fields(chunk) == _as_parse_qsl_reads_it(chunk)
