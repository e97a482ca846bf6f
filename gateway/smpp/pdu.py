"""The SMPP 3.4 codec: bytes ⇄ PDU, and framing of a TCP byte stream into PDUs.

Knows bytes only: no sockets, no sessions, no configuration.

Each command's mandatory body is declared once as (name, kind) pairs and compiled at
import into a straight-line encoder and decoder (runs of 1-octet integers packed by one
struct), so nothing reflects over attributes per PDU. After the mandatory fields,
whatever remains of the body is the TLV stream, for every command: TLVs are kept raw by
tag, unknown tags included (a library that rejects an unfamiliar TLV drops USSD).
"""

import linecache
import struct

from gateway.numbers import mask_msisdn
from gateway.smpp import constants as c

HEADER = struct.Struct(">IIII")
HEADER_LENGTH = 16
# Room for a 64 KB message_payload TLV plus the largest mandatory body.
MAX_PDU = 70_000
MAX_SHORT_MESSAGE = 254

_TLV_HEAD = struct.Struct(">HH")
_LENGTH = struct.Struct(">I")


class PDUError(Exception):
    """A frame that is not a valid PDU. `status` is the command_status to answer with
    (generic_nack, or the *_resp of a known request), `sequence` the one to answer to."""

    def __init__(self, message, status, command_id=None, sequence=0):
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence


class FramingError(Exception):
    """The stream cannot be split into PDUs any more (command_length < 16 or > MAX_PDU):
    the only safe answer is to close the connection."""


# --- body layouts ------------------------------------------------------------------------
# A layout is written as (name, kind) pairs: kind is the C-Octet string's maximum size
# including its NUL ("c16"), "u8" for a 1-octet integer, or "sm" for sm_length followed
# by short_message.  _Layout compiles it.

# The status to answer when a C-Octet string is malformed, where SMPP names one.
_FIELD_STATUS = {
    "system_id": c.ESME_RINVSYSID,
    "password": c.ESME_RINVPASWD,
    "system_type": c.ESME_RINVSYSTYP,
    "service_type": c.ESME_RINVSERTYP,
    "source_addr": c.ESME_RINVSRCADR,
    "destination_addr": c.ESME_RINVDSTADR,
    "schedule_delivery_time": c.ESME_RINVSCHED,
    "validity_period": c.ESME_RINVEXPIRY,
    "message_id": c.ESME_RINVMSGID,
}

_BIND = [("system_id", "c16"), ("password", "c9"), ("system_type", "c13"),
         ("interface_version", "u8"), ("addr_ton", "u8"), ("addr_npi", "u8"),
         ("address_range", "c41")]
_SM = [("service_type", "c6"), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
       ("source_addr", "c21"), ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"),
       ("destination_addr", "c21"), ("esm_class", "u8"), ("protocol_id", "u8"),
       ("priority_flag", "u8"), ("schedule_delivery_time", "c17"),
       ("validity_period", "c17"), ("registered_delivery", "u8"),
       ("replace_if_present_flag", "u8"), ("data_coding", "u8"),
       ("sm_default_msg_id", "u8"), ("short_message", "sm")]
_DATA_SM = [("service_type", "c6"), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
            ("source_addr", "c65"), ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"),
            ("destination_addr", "c65"), ("esm_class", "u8"),
            ("registered_delivery", "u8"), ("data_coding", "u8")]
_MESSAGE_ID = [("message_id", "c65")]
_SYSTEM_ID = [("system_id", "c16")]

_LAYOUT_SPECS = {
    c.GENERIC_NACK: [],
    c.BIND_RECEIVER: _BIND,
    c.BIND_TRANSMITTER: _BIND,
    c.BIND_TRANSCEIVER: _BIND,
    c.BIND_RECEIVER_RESP: _SYSTEM_ID,
    c.BIND_TRANSMITTER_RESP: _SYSTEM_ID,
    c.BIND_TRANSCEIVER_RESP: _SYSTEM_ID,
    c.OUTBIND: [("system_id", "c16"), ("password", "c9")],
    c.UNBIND: [],
    c.UNBIND_RESP: [],
    c.ENQUIRE_LINK: [],
    c.ENQUIRE_LINK_RESP: [],
    c.SUBMIT_SM: _SM,
    c.SUBMIT_SM_RESP: _MESSAGE_ID,
    c.DELIVER_SM: _SM,
    c.DELIVER_SM_RESP: _MESSAGE_ID,
    c.DATA_SM: _DATA_SM,
    c.DATA_SM_RESP: _MESSAGE_ID,
    c.QUERY_SM: [("message_id", "c65"), ("source_addr_ton", "u8"),
                 ("source_addr_npi", "u8"), ("source_addr", "c21")],
    c.QUERY_SM_RESP: [("message_id", "c65"), ("final_date", "c17"),
                      ("message_state", "u8"), ("error_code", "u8")],
    c.CANCEL_SM: [("service_type", "c6"), ("message_id", "c65"),
                  ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
                  ("source_addr", "c21"), ("dest_addr_ton", "u8"),
                  ("dest_addr_npi", "u8"), ("destination_addr", "c21")],
    c.CANCEL_SM_RESP: [],
    c.REPLACE_SM: [("message_id", "c65"), ("source_addr_ton", "u8"),
                   ("source_addr_npi", "u8"), ("source_addr", "c21"),
                   ("schedule_delivery_time", "c17"), ("validity_period", "c17"),
                   ("registered_delivery", "u8"), ("sm_default_msg_id", "u8"),
                   ("short_message", "sm")],
    c.REPLACE_SM_RESP: [],
    c.ALERT_NOTIFICATION: [("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
                           ("source_addr", "c65"), ("esme_addr_ton", "u8"),
                           ("esme_addr_npi", "u8"), ("esme_addr", "c65")],
    # submit_multi / submit_multi_resp are named in constants but not coded: we never
    # send them and an SMSC never sends them to an ESME, so they decode as RINVCMDID.
}


class _Layout:
    """One command's mandatory body, compiled to a straight-line encoder and decoder.

    A generic loop over the fields costs ~6 µs per submit_sm here; the generated
    functions (the technique of collections.namedtuple and dataclasses) do the same
    work in about half that. `_LAYOUTS[c.SUBMIT_SM].source()` shows what is generated.
    Error paths call the helpers below, so the generated code stays short."""

    __slots__ = ("spec", "names", "encode", "decode", "zero_body")

    def __init__(self, spec, name="body"):
        self.spec = tuple(_merge_integer_runs(spec))
        self.names = frozenset(name for name, _ in spec)
        namespace = {"_LENGTH_OCTET": _LENGTH_OCTET, "_bad_string": _bad_string,
                     "_bad_integers": _bad_integers, "_bad_short_message": _bad_short_message,
                     "_missing_nul": _missing_nul, "_truncated": _truncated,
                     "struct_error": struct.error, "PDUError": PDUError}
        for index, (_, kind) in enumerate(self.spec):
            if isinstance(kind, struct.Struct):
                namespace[f"_ints{index}"] = kind
        # A real file name, known to linecache, so a traceback through the generated
        # code shows its lines instead of '<string>'.
        source = self.source()
        filename = f"<payam-codec {name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)
        self.encode = namespace["encode"]
        self.decode = namespace["decode"]
        self.zero_body = self.encode({})

    def source(self):
        return "\n".join(self._encoder_lines() + [""] + self._decoder_lines())

    def _encoder_lines(self):
        lines = ["def encode(fields):", "    get = fields.get"]
        pieces = []
        for index, (name, kind) in enumerate(self.spec):
            out = f"b{index}"
            pieces.append(out)
            if isinstance(kind, int):                       # C-Octet string, max size
                lines += [
                    f"    v = get({name!r})",
                    "    if v:",
                    "        try:",
                    f"            {out} = v.encode('latin-1')",
                    "        except (AttributeError, UnicodeEncodeError):",
                    f"            _bad_string({name!r}, v, {kind})",
                    f"        if len({out}) >= {kind} or b'\\0' in {out}:",
                    f"            _bad_string({name!r}, v, {kind})",
                    f"        {out} += b'\\0'",
                    "    else:",
                    f"        {out} = b'\\0'"]
            elif kind == "sm":
                lines += [
                    f"    {out} = get({name!r}, b'')",
                    f"    if type({out}) is not bytes or len({out}) > {MAX_SHORT_MESSAGE}:",
                    f"        {out} = _bad_short_message({name!r}, {out})",
                    f"    length{index} = _LENGTH_OCTET[len({out})]"]
                pieces.insert(-1, f"length{index}")
            else:                                           # a run of 1-octet integers
                values = ", ".join(f"get({n!r}, 0)" for n in name)
                lines += [
                    "    try:",
                    f"        {out} = _ints{index}.pack({values})",
                    "    except struct_error:",
                    f"        _bad_integers(fields, {name!r})"]
        lines.append(f"    return b''.join(({', '.join(pieces)},))" if pieces
                     else "    return b''")
        return lines

    def _decoder_lines(self):
        lines = ["def decode(frame, pos, fields, command_id, sequence):",
                 "    end = len(frame)"]
        for index, (name, kind) in enumerate(self.spec):
            if isinstance(kind, int):
                status = _FIELD_STATUS.get(name, c.ESME_RINVPARLEN)
                lines += [
                    f"    nul = frame.find(b'\\0', pos, pos + {kind})",
                    "    if nul < 0:",
                    f"        _missing_nul(frame, pos, {name!r}, {kind}, {status},"
                    " command_id, sequence)",
                    f"    fields[{name!r}] = frame[pos:nul].decode('latin-1')",
                    "    pos = nul + 1"]
            elif kind == "sm":
                lines += [
                    "    if pos >= end:",
                    "        _truncated('sm_length', command_id, sequence)",
                    "    length = frame[pos]",
                    "    pos += 1",
                    f"    if length > {MAX_SHORT_MESSAGE} or pos + length > end:",
                    "        raise PDUError(f'sm_length {length} does not fit the body',"
                    f" {c.ESME_RINVMSGLEN}, command_id, sequence)",
                    f"    fields[{name!r}] = frame[pos:pos + length]",
                    "    pos += length"]
            else:
                targets = ", ".join(f"fields[{n!r}]" for n in name)
                lines += [
                    f"    if pos + {kind.size} > end:",
                    f"        _truncated({name[0]!r}, command_id, sequence)",
                    f"    {targets}, = _ints{index}.unpack_from(frame, pos)",
                    f"    pos += {kind.size}"]
        lines.append("    return pos")
        return lines


def _merge_integer_runs(spec):
    """(name, "c21") → (name, 21); consecutive (name, "u8") → (names, Struct(">BB..."))."""
    run = []
    for name, kind in spec:
        if kind == "u8":
            run.append(name)
            continue
        if run:
            yield tuple(run), struct.Struct(">" + "B" * len(run))
            run = []
        yield name, (kind if kind == "sm" else int(kind[1:]))
    if run:
        yield tuple(run), struct.Struct(">" + "B" * len(run))


# Error paths of the generated code.
def _bad_string(name, value, size):
    raise ValueError(f"{name} must be a latin-1 str of at most {size - 1} octets "
                     f"without NUL, not {value!r}")


def _bad_integers(fields, names):
    bad = {name: fields.get(name) for name in names}
    raise ValueError(f"1-octet integer fields must be ints 0..255: {bad}")


def _bad_short_message(name, value):
    if isinstance(value, bytearray) and len(value) <= MAX_SHORT_MESSAGE:
        return bytes(value)
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"{name} must be bytes, not {type(value).__name__}")
    raise ValueError(f"{name} takes {len(value)} octets; at most {MAX_SHORT_MESSAGE} "
                     "fit (use message_payload)")


def _missing_nul(frame, pos, name, size, status, command_id, sequence):
    if frame.find(b"\0", pos) < 0:
        raise PDUError(f"{name}: no NUL before the end of the body",
                       c.ESME_RINVCMDLEN, command_id, sequence)
    raise PDUError(f"{name}: longer than {size - 1} octets", status, command_id, sequence)


def _truncated(name, command_id, sequence):
    raise PDUError(f"body ends before {name}", c.ESME_RINVCMDLEN, command_id, sequence)


_LENGTH_OCTET = [bytes((n,)) for n in range(256)]


_LAYOUTS = {command_id: _Layout(spec, c.command_name(command_id))
            for command_id, spec in _LAYOUT_SPECS.items()}


# --- typed TLVs --------------------------------------------------------------------------
# Size of the integer for integer TLVs; "c" a C-Octet string; "b" octets.
_TLV_TYPES = {
    c.TLV_DEST_ADDR_SUBUNIT: 1, c.TLV_DEST_NETWORK_TYPE: 1, c.TLV_DEST_BEARER_TYPE: 1,
    c.TLV_DEST_TELEMATICS_ID: 2, c.TLV_SOURCE_ADDR_SUBUNIT: 1,
    c.TLV_SOURCE_NETWORK_TYPE: 1, c.TLV_SOURCE_BEARER_TYPE: 1,
    c.TLV_SOURCE_TELEMATICS_ID: 1, c.TLV_QOS_TIME_TO_LIVE: 4, c.TLV_PAYLOAD_TYPE: 1,
    c.TLV_ADDITIONAL_STATUS_INFO_TEXT: "c", c.TLV_RECEIPTED_MESSAGE_ID: "c",
    c.TLV_MS_MSG_WAIT_FACILITIES: 1, c.TLV_PRIVACY_INDICATOR: 1,
    c.TLV_SOURCE_SUBADDRESS: "b", c.TLV_DEST_SUBADDRESS: "b",
    c.TLV_USER_MESSAGE_REFERENCE: 2, c.TLV_USER_RESPONSE_CODE: 1,
    c.TLV_SOURCE_PORT: 2, c.TLV_DESTINATION_PORT: 2, c.TLV_SAR_MSG_REF_NUM: 2,
    c.TLV_LANGUAGE_INDICATOR: 1, c.TLV_SAR_TOTAL_SEGMENTS: 1,
    c.TLV_SAR_SEGMENT_SEQNUM: 1, c.TLV_SC_INTERFACE_VERSION: 1,
    c.TLV_CALLBACK_NUM_PRES_IND: 1, c.TLV_CALLBACK_NUM_ATAG: "b",
    c.TLV_NUMBER_OF_MESSAGES: 1, c.TLV_CALLBACK_NUM: "b", c.TLV_DPF_RESULT: 1,
    c.TLV_SET_DPF: 1, c.TLV_MS_AVAILABILITY_STATUS: 1, c.TLV_NETWORK_ERROR_CODE: "b",
    c.TLV_MESSAGE_PAYLOAD: "b", c.TLV_DELIVERY_FAILURE_REASON: 1,
    c.TLV_MORE_MESSAGES_TO_SEND: 1, c.TLV_MESSAGE_STATE: 1, c.TLV_USSD_SERVICE_OP: 1,
    c.TLV_DISPLAY_TIME: 1, c.TLV_SMS_SIGNAL: 2, c.TLV_MS_VALIDITY: 1,
    c.TLV_ALERT_ON_MESSAGE_DELIVERY: "b", c.TLV_ITS_REPLY_TYPE: 1,
    c.TLV_ITS_SESSION_INFO: 2,
}


def _decode_tlvs(body, pos, command_id, sequence):
    tlvs = {}
    end = len(body)
    while pos < end:
        if pos + 4 > end:
            raise PDUError(f"{end - pos} stray octets where a TLV header should be",
                           c.ESME_RINVOPTPARSTREAM, command_id, sequence)
        tag, length = _TLV_HEAD.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise PDUError(f"TLV 0x{tag:04X} claims {length} octets, {end - pos} remain",
                           c.ESME_RINVOPTPARSTREAM, command_id, sequence)
        # SMPP allows each tag once; should a peer repeat one, the last value wins.
        tlvs[tag] = body[pos:pos + length]
        pos += length
    return tlvs


# --- the PDU -------------------------------------------------------------------------------
class PDU:
    """One SMPP PDU. `fields` holds the mandatory body parameters by SMPP 3.4 name
    (C-Octet strings as str, short_message as bytes, sm_length implicit); `tlvs` the
    raw value of each optional parameter by tag, in arrival order."""

    __slots__ = ("command_id", "status", "sequence", "fields", "tlvs")

    def __init__(self, command_id, sequence=0, status=0, fields=None, tlvs=None):
        self.command_id = command_id
        self.sequence = sequence
        self.status = status
        self.fields = {} if fields is None else fields
        self.tlvs = {} if tlvs is None else tlvs

    @property
    def name(self):
        return c.command_name(self.command_id)

    @property
    def is_response(self):
        return bool(self.command_id & c.RESPONSE_BIT)

    def get_tlv(self, tag):
        """The TLV's value: int, str or bytes by its SMPP type (bytes for unknown tags);
        None when absent. Integers of an unexpected width are read at their own width."""
        raw = self.tlvs.get(tag)
        if raw is None:
            return None
        kind = _TLV_TYPES.get(tag, "b")
        if kind == "b":
            return raw
        if kind == "c":
            # Some SMSCs omit the terminating NUL; accept the value either way.
            nul = raw.find(b"\0")
            return (raw if nul < 0 else raw[:nul]).decode("latin-1")
        return int.from_bytes(raw, "big")

    def set_tlv(self, tag, value):
        """Set a TLV from its typed value (int / str for known tags) or raw bytes (any tag)."""
        if not isinstance(tag, int) or not 0 <= tag <= 0xFFFF:
            raise ValueError(f"TLV tag must be an int 0..0xFFFF, not {tag!r}")
        kind = _TLV_TYPES.get(tag, "b")
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        elif kind == "c" and isinstance(value, str):
            try:
                raw = value.encode("latin-1") + b"\0"
            except UnicodeEncodeError:
                raise ValueError(f"TLV {c.tlv_name(tag)} must be latin-1 text") from None
        elif isinstance(kind, int) and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < 1 << (8 * kind):
                raise ValueError(f"TLV {c.tlv_name(tag)} takes a {kind}-octet integer, "
                                 f"not {value}")
            raw = value.to_bytes(kind, "big")
        else:
            expected = {"b": "bytes", "c": "str or bytes"}.get(kind, "int or bytes")
            raise ValueError(f"TLV {c.tlv_name(tag)} takes {expected}, "
                             f"not {type(value).__name__}")
        if len(raw) > 0xFFFF:
            raise ValueError(f"TLV {c.tlv_name(tag)} value of {len(raw)} octets is too long")
        self.tlvs[tag] = raw

    def response(self, status=0, **fields):
        """The matching *_resp with this PDU's sequence (e.g. message_id= for submit_sm)."""
        if self.is_response:
            raise ValueError(f"{self.name} is itself a response")
        response_id = self.command_id | c.RESPONSE_BIT
        if response_id not in _LAYOUTS:
            raise ValueError(f"{self.name} has no response PDU")
        return PDU(response_id, self.sequence, status, fields)

    def __eq__(self, other):
        if not isinstance(other, PDU):
            return NotImplemented
        return (self.command_id == other.command_id and self.sequence == other.sequence
                and self.status == other.status and self.fields == other.fields
                and self.tlvs == other.tlvs)

    __hash__ = None

    def __repr__(self):
        # For logs: never the message text nor a whole phone number.
        parts = [self.name, f"seq={self.sequence}"]
        if self.status or self.is_response:
            parts.append(f"status={c.status_name(self.status)}")
        fields = self.fields
        for name in ("system_id", "message_id", "service_type"):
            if fields.get(name):
                parts.append(f"{name}={fields[name]!r}")
        for name, label in (("source_addr", "src"), ("destination_addr", "dst")):
            if fields.get(name):
                parts.append(f"{label}={mask_msisdn(fields[name])}")
        for name in ("esm_class", "data_coding", "registered_delivery"):
            if fields.get(name):
                parts.append(f"{name}=0x{fields[name]:02X}")
        if "short_message" in fields:
            parts.append(f"sm_length={len(fields['short_message'])}")
        if self.tlvs:
            parts.append("tlvs=" + ",".join(c.tlv_name(tag) for tag in self.tlvs))
        return f"<PDU {' '.join(parts)}>"


# --- bytes ⇄ PDU ---------------------------------------------------------------------------
_EMPTY_ID_RESPONSE = struct.Struct(">IIIIx")   # header + the NUL of message_id ""


def encode_empty_id_response(request, status):
    """encode(request.response(status=status, message_id="")) for a deliver_sm or
    data_sm, packed directly: the answer to every receipt, without building a PDU."""
    return _EMPTY_ID_RESPONSE.pack(_EMPTY_ID_RESPONSE.size,
                                   request.command_id | c.RESPONSE_BIT, status,
                                   request.sequence)


def encode(pdu):
    """The PDU's bytes. Missing fields encode as 0 / ""; unknown field names, values
    that do not fit and non-latin-1 strings raise ValueError (they are our bugs)."""
    command_id = pdu.command_id
    layout = _LAYOUTS.get(command_id)
    if layout is None:
        raise ValueError(f"cannot encode {c.command_name(command_id)}")
    fields = pdu.fields
    tlvs = pdu.tlvs
    if not fields:
        # SMPP 3.4: a *_resp with an error status carries no body.
        if pdu.status and command_id & c.RESPONSE_BIT and not tlvs:
            body = b""
        else:
            body = layout.zero_body
    else:
        if not fields.keys() <= layout.names:
            unknown = sorted(set(fields) - layout.names)
            raise ValueError(f"{c.command_name(command_id)} has no field(s) {unknown}")
        body = layout.encode(fields)
    if tlvs:
        out = [body]
        try:
            for tag, value in tlvs.items():
                out.append(_TLV_HEAD.pack(tag, len(value)))
                out.append(value)
            body = b"".join(out)
        except (TypeError, struct.error):
            raise ValueError(f"TLV {tag!r}: tag 0..0xFFFF and a bytes value "
                             f"of at most 65535 octets expected, not {value!r:.60}") from None
    length = HEADER_LENGTH + len(body)
    if length > MAX_PDU:
        raise ValueError(f"{c.command_name(command_id)} of {length} octets exceeds {MAX_PDU}")
    return HEADER.pack(length, command_id, pdu.status, pdu.sequence) + body


def decode(frame):
    """One whole PDU (header included) → PDU. Raises FramingError when the frame cannot
    be a PDU at all, PDUError (with the status to answer) when its content is invalid."""
    size = len(frame)
    if size < HEADER_LENGTH:
        raise FramingError(f"a PDU takes at least {HEADER_LENGTH} octets, got {size}")
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length < HEADER_LENGTH or length > MAX_PDU:
        raise FramingError(f"command_length {length} outside {HEADER_LENGTH}..{MAX_PDU}")
    if length != size:
        raise PDUError(f"command_length {length} but the frame has {size} octets",
                       c.ESME_RINVCMDLEN, command_id, sequence)
    layout = _LAYOUTS.get(command_id)
    if layout is None:
        raise PDUError(f"unsupported command_id 0x{command_id:08X}",
                       c.ESME_RINVCMDID, command_id, sequence)
    fields = {}
    tlvs = None
    if size > HEADER_LENGTH:
        if type(frame) is not bytes:
            frame = bytes(frame)
        pos = layout.decode(frame, HEADER_LENGTH, fields, command_id, sequence)
        if pos < size:
            tlvs = _decode_tlvs(frame, pos, command_id, sequence)
    elif layout.spec and not command_id & c.RESPONSE_BIT:
        # Responses may come without a body (always on error, from some SMSCs on
        # success too); a request may not.
        raise PDUError(f"{c.command_name(command_id)} without a body",
                       c.ESME_RINVCMDLEN, command_id, sequence)
    return PDU(command_id, sequence, status, fields, tlvs)


class Framer:
    """Splits a byte stream into whole PDU frames, for Protocol.dataReceived.

    After a FramingError the stream has lost sync for good: close the connection."""

    def __init__(self, max_length=MAX_PDU):
        self.max_length = max_length
        self._buffer = bytearray()

    def feed(self, data):
        # Frames are sliced from one bytes object (one copy each); only what is left
        # of an incomplete PDU is kept in the buffer.
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
        elif type(data) is not bytes:
            data = bytes(data)
        frames = []
        pos = 0
        available = len(data)
        max_length = self.max_length
        unpack = _LENGTH.unpack_from
        while available - pos >= 4:
            length, = unpack(data, pos)
            if length < HEADER_LENGTH or length > max_length:
                if not buffer:
                    buffer += data
                raise FramingError(f"command_length {length} outside "
                                   f"{HEADER_LENGTH}..{max_length}")
            if available - pos < length:
                break
            frames.append(data[pos:pos + length])
            pos += length
        if buffer:
            if pos:
                del buffer[:pos]
        elif pos < available:
            buffer += data[pos:] if pos else data
        return frames

    @property
    def pending(self):
        """Octets held back, waiting for the rest of a PDU."""
        return len(self._buffer)
