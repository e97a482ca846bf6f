"""Malformed submit_sm_resp, for the `malformed_every` behaviour (issue 13, item 1).

The simulator has accepted the submit_sm (it is recorded, its receipt is owed, a USSD
answer reaches the handset): only the answer the ESME reads is broken, as SMSCs in the
field have sent them. The kinds, taken in turn:

  lying_length   a good submit_sm_resp whose command_length says 4 octets more than it
                 has: the ESME's framer takes 4 octets of whatever follows (the next
                 answer or a receipt), then reads a length out of the middle of a PDU;
                 the stream has lost sync and the session must close
  truncated      status 0, the body cut inside the message_id (no NUL)
  garbage_id     status 0, a message_id of octets no SMSC id has (0xFF, control
                 characters) with stray octets after its NUL
  wrong_command  a deliver_sm_resp, not a submit_sm_resp, under the submit_sm's sequence

Knows bytes only, like the codec.
"""

from gateway.smpp import constants as c
from gateway.smpp.pdu import HEADER, HEADER_LENGTH, PDU, encode

KINDS = ("lying_length", "truncated", "garbage_id", "wrong_command")
LIE_OCTETS = 4
GARBAGE_ID = b"\xff\xfe\x01\x7f\x00\x13\x37"    # id octets, its NUL, then two stray


def malformed_resp(kind, sequence, message_id, command_id=c.SUBMIT_SM_RESP) -> bytes:
    """The bytes of a broken answer of `kind` to the request `sequence` (a submit_sm, or
    a data_sm with command_id DATA_SM_RESP) the simulator accepted under `message_id`."""
    good = encode(PDU(command_id, sequence, c.ESME_ROK, fields={"message_id": message_id}))
    if kind == "lying_length":
        return HEADER.pack(len(good) + LIE_OCTETS, command_id, c.ESME_ROK,
                           sequence) + good[HEADER_LENGTH:]
    if kind == "truncated":
        body = message_id.encode("ascii")[:max(1, len(message_id) // 2)]
    elif kind == "garbage_id":
        body = GARBAGE_ID
    elif kind == "wrong_command":
        return HEADER.pack(len(good), c.DELIVER_SM_RESP, c.ESME_ROK,
                           sequence) + good[HEADER_LENGTH:]
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return HEADER.pack(HEADER_LENGTH + len(body), command_id, c.ESME_ROK,
                       sequence) + body
