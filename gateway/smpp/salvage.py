"""What can still be read from a response the codec refused (issue 6, item 3).

A response's header is always readable once the frame is whole: its command_status says
whether the SMSC took the request, whatever follows. A status-0 submit_sm_resp whose
message_id runs past 65 octets, lacks its NUL or is followed by stray octets still means
"accepted": resending it sends the citizen another copy. So the status is kept and the
message_id salvaged (up to the first NUL, at most 64 octets); TLVs are dropped.
Knows bytes only, like the codec.
"""

from gateway.smpp import constants as c
from gateway.smpp.pdu import HEADER, HEADER_LENGTH, PDU

MESSAGE_ID_MAX = 64            # octets of a C-Octet String of 65 without its NUL

# Responses whose body starts with a message_id C-Octet String.
_WITH_MESSAGE_ID = frozenset({c.SUBMIT_SM_RESP, c.DATA_SM_RESP, c.DELIVER_SM_RESP})


def salvage_response(frame):
    """A response PDU from a frame decode() refused: the header's command_id, status and
    sequence; with status 0 and a message_id-carrying command, the readable part of the
    message_id. Returns (pdu, truncated) where truncated says the id was cut short."""
    command_id, status, sequence = HEADER.unpack_from(frame)[1:]
    pdu = PDU(command_id, sequence, status)
    truncated = False
    if status == c.ESME_ROK and command_id in _WITH_MESSAGE_ID:
        body = bytes(frame[HEADER_LENGTH:])
        nul = body.find(b"\0")
        raw = body if nul < 0 else body[:nul]
        truncated = len(raw) > MESSAGE_ID_MAX
        pdu.fields["message_id"] = raw[:MESSAGE_ID_MAX].decode("latin-1")
    return pdu, truncated
