"""Property tests of the SMPP codec (issue 13): any PDU we can build survives
encode → decode unchanged; any bytes at all give a PDU or one of our two errors, never
another exception; a lying command_length or TLV length is caught, never trusted."""

import struct

from hypothesis import assume, example, given
from hypothesis import strategies as st

from gateway.smpp import constants as c
from gateway.smpp.pdu import (
    _LAYOUT_SPECS, HEADER_LENGTH, MAX_PDU, MAX_SHORT_MESSAGE, PDU, Framer, FramingError,
    PDUError, decode, encode)

COMMANDS = sorted(_LAYOUT_SPECS)


def _field(kind):
    if kind == "u8":
        return st.integers(0, 255)
    if kind == "sm":
        return st.binary(max_size=MAX_SHORT_MESSAGE)
    size = int(kind[1:])                      # a C-Octet string: latin-1, no NUL
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=size - 1)


@st.composite
def pdus(draw):
    command_id = draw(st.sampled_from(COMMANDS))
    spec = _LAYOUT_SPECS[command_id]
    fields = {name: draw(_field(kind)) for name, kind in spec}
    status = draw(st.integers(0, 0xFFFFFFFF)) if command_id & c.RESPONSE_BIT else 0
    tlvs = draw(st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=300),
                                max_size=4))
    return PDU(command_id, draw(st.integers(0, 0xFFFFFFFF)), status, fields, tlvs)


@given(pdus())
def test_decode_of_encode_is_the_same_pdu(pdu):
    frame = encode(pdu)
    assert struct.unpack_from(">I", frame)[0] == len(frame)
    assert decode(frame) == pdu


@given(pdus())
def test_the_framer_cuts_a_stream_of_pdus_back_into_them_whatever_the_chunking(pdu):
    frame = encode(pdu)
    stream = frame * 3
    framer, frames = Framer(), []
    for start in range(0, len(stream), 7):
        frames += framer.feed(stream[start:start + 7])
    assert frames == [frame] * 3 and framer.pending == 0


@given(st.binary(max_size=600))
@example(b"\x00\x00\x00\x10\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01")
def test_any_bytes_decode_to_a_pdu_or_our_error(frame):
    try:
        pdu = decode(frame)
    except (PDUError, FramingError):
        return
    assert isinstance(pdu, PDU)
    repr(pdu)                                 # a log line of anything decoded works


@given(st.sampled_from(COMMANDS), st.binary(max_size=400), st.integers(0, 0xFFFFFFFF))
def test_any_body_under_a_valid_header_decodes_or_raises_pdu_error(command_id, body, seq):
    frame = struct.pack(">IIII", HEADER_LENGTH + len(body), command_id, 0, seq) + body
    try:
        pdu = decode(frame)
    except PDUError as error:
        assert error.sequence == seq and error.status
        return
    # Whatever decoded can be encoded again (an answer or a log line never trips on
    # it) and means the same thing the second time (a bodiless response gets its
    # empty fields written out, so compare the octets of the second round).
    assert pdu.sequence == seq and pdu.command_id == command_id
    for tag in pdu.tlvs:
        pdu.get_tlv(tag)
    again = encode(pdu)
    assert encode(decode(again)) == again


@given(pdus(), st.integers(-HEADER_LENGTH, 2 * MAX_PDU))
def test_a_lying_command_length_is_never_trusted(pdu, lie):
    frame = bytearray(encode(pdu))
    length = len(frame) + lie
    assume(lie != 0 and 0 <= length <= 0xFFFFFFFF)
    struct.pack_into(">I", frame, 0, length)
    try:
        decode(bytes(frame))
    except FramingError:
        assert length < HEADER_LENGTH or length > MAX_PDU
    except PDUError as error:
        assert error.status == c.ESME_RINVCMDLEN
    else:
        raise AssertionError(f"a frame of {len(frame)} octets claiming {length} decoded")
    # A length promising more than came: the framer waits and holds what it has (a
    # shorter one cuts there, and the rest is judged as the next PDU's header).
    if HEADER_LENGTH <= length <= MAX_PDU and length > len(frame):
        framer = Framer()
        assert framer.feed(bytes(frame)) == [] and framer.pending == len(frame)


@given(pdus().filter(lambda p: p.tlvs), st.integers(1, 0xFFFF))
def test_a_tlv_claiming_more_octets_than_remain_is_an_optional_parameter_error(pdu, extra):
    frame = bytearray(encode(pdu))
    # The last TLV's length field sits 4 + len(value) from the end.
    last = list(pdu.tlvs.values())[-1]
    at = len(frame) - len(last) - 2
    claimed = len(last) + extra
    assume(claimed <= 0xFFFF)
    struct.pack_into(">H", frame, at, claimed)
    try:
        decode(bytes(frame))
    except PDUError as error:
        assert error.status == c.ESME_RINVOPTPARSTREAM and error.sequence == pdu.sequence
    else:
        raise AssertionError("a TLV longer than the body decoded")
