"""Each operator's USSD fields behind one small interface (Vumi's "processor" idea).

`read_request(pdu, settings)` turns a USSD deliver_sm into a plain UssdRequest (what kind
of step, whose session, what the citizen dialled or typed); `answer_tlvs(request, end,
settings)` builds the TLVs of our answer. Vendors differ in the ussd_service_op values
they send, in where the dialled string is, and in how our last answer must say the
dialog ends; a UssdSettings per operator says which. Menu code sees only the records and
never a TLV. Pure functions of data: no sessions, no timers, no I/O.

Defaults (the USSD-over-SMPP reference the contract follows): op 1 (PSSR indication)
starts a dialog, 18 (USSR confirm) continues it, 0x81 is a user abort (Mica and others),
17 (PSSR response) from the network ends it; we continue with op 2 (USSR request) and end with 17
(PSSR response). its_session_info (0x1383: octet 1 the session number, octet 2 a
sequence number over bits 7-1 and the end-of-session bit 0) is echoed on every answer,
with the end bit set on the last one. The "end_bit" style (Vumi's Tata) always answers
op 2 and marks the end by that bit alone.
"""

from dataclasses import dataclass
from typing import NamedTuple

from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.smpp import constants as c
from gateway.text.decode import decode_payload

NEW, CONTINUE, ABORT, END, UNKNOWN = "new", "continue", "abort", "end", "unknown"
DIAL_FIELDS = ("short_message", "destination_addr")
ANSWER_STYLES = ("op", "end_bit")
USER_ABORT = 0x81                 # a vendor value, outside SMPP 3.4's table
END_OF_SESSION = 0x0001           # its_session_info: bit 0 of its second octet


@dataclass(frozen=True)
class UssdSettings:
    """How one operator's USSD gateway writes its fields (per operator in config later)."""
    new_ops: frozenset = frozenset({c.USSD_PSSR_INDICATION})
    continue_ops: frozenset = frozenset({c.USSD_USSR_CONFIRM})
    abort_ops: frozenset = frozenset({USER_ABORT})
    end_ops: frozenset = frozenset({c.USSD_PSSR_RESPONSE})
    dial_field: str = "short_message"      # where a new dialog's dialled string is
    answer_style: str = "op"               # "op": continue_op / end_op; "end_bit": Tata
    continue_op: int = c.USSD_USSR_REQUEST
    end_op: int = c.USSD_PSSR_RESPONSE

    def __post_init__(self):
        # The operators' config reader will check these with file:line; until it exists,
        # a wrong value must not pass silently.
        if self.dial_field not in DIAL_FIELDS:
            raise ValueError(f"dial_field must be one of {DIAL_FIELDS}, not "
                             f"{self.dial_field!r}")
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, not "
                             f"{self.answer_style!r}")
        sets = (self.new_ops, self.continue_ops, self.abort_ops, self.end_ops)
        values = [op for ops in sets for op in ops] + [self.continue_op, self.end_op]
        if any(not isinstance(op, int) or not 0 <= op <= 0xFF for op in values):
            raise ValueError("ussd_service_op values are integers 0..255")
        if sum(len(ops) for ops in sets) != len(set().union(*sets)):
            raise ValueError("an ussd_service_op value may mean one kind of step only")


DEFAULT_USSD = UssdSettings()


def settings_from(style):
    """UssdSettings from an operator's config.schema.UssdOperator (None: the defaults)."""
    if style is None:
        return DEFAULT_USSD
    return UssdSettings(
        new_ops=frozenset(style.new_ops), continue_ops=frozenset(style.continue_ops),
        abort_ops=frozenset(style.abort_ops), end_ops=frozenset(style.end_ops),
        dial_field=style.dial_field, answer_style=style.answer_style,
        continue_op=style.continue_op, end_op=style.end_op)


class UssdRequest(NamedTuple):
    """One USSD step from a citizen, as the menu code sees it."""
    kind: str                     # NEW | CONTINUE | ABORT | END | UNKNOWN
    msisdn: str                   # "98912…" (source_addr as sent when not a mobile number)
    session_key: tuple            # (msisdn, its session number or None)
    text: str                     # NEW: the dialled string ("*4*0135#"); else the input
    its_session_info: int | None  # as received, echoed on the answers
    op: int | None                # ussd_service_op as received


def read_request(pdu, settings=DEFAULT_USSD):
    """The UssdRequest a USSD deliver_sm / data_sm carries."""
    op = pdu.get_tlv(c.TLV_USSD_SERVICE_OP)
    its = pdu.get_tlv(c.TLV_ITS_SESSION_INFO)
    if its is not None and not 0 <= its <= 0xFFFF:
        its = None                # not the 2 octets SMPP defines: no correlation from it
    if op in settings.new_ops:
        kind = NEW
    elif op in settings.continue_ops:
        kind = CONTINUE
    elif op in settings.abort_ops:
        kind = ABORT
    elif op in settings.end_ops:
        kind = END
    else:
        kind = UNKNOWN
    if its is not None and its & END_OF_SESSION and kind in (CONTINUE, UNKNOWN):
        kind = END                # the network marked the end by the bit alone
    fields = pdu.fields
    source = fields.get("source_addr", "")
    try:
        msisdn = normalize_msisdn(source)
    except InvalidNumber:
        msisdn = source
    if kind == NEW and settings.dial_field == "destination_addr":
        text = fields.get("destination_addr", "")
    else:
        body = fields.get("short_message") or pdu.get_tlv(c.TLV_MESSAGE_PAYLOAD) or b""
        text = decode_payload(body, fields.get("data_coding", 0))
    return UssdRequest(kind, msisdn, (msisdn, None if its is None else its >> 8),
                       text.strip(), its, op)


def answer_tlvs(request, end, settings=DEFAULT_USSD):
    """The TLVs (tag → raw octets, in order) of our answer to `request`: the dialog goes
    on (end False) or this is its last page (end True)."""
    its = request.its_session_info
    if end and (settings.answer_style == "op" or its is None):
        # With no its_session_info to carry the end bit, only the op can say it.
        op = settings.end_op
    else:
        op = settings.continue_op
    tlvs = {c.TLV_USSD_SERVICE_OP: bytes((op,))}
    if its is not None:
        its = its | END_OF_SESSION if end else its & ~END_OF_SESSION
        tlvs[c.TLV_ITS_SESSION_INFO] = its.to_bytes(2, "big")
    return tlvs
