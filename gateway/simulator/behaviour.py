"""How the simulated SMSC misbehaves: throttling, failures, drops, malformed answers, id
format, receipts.

One mutable `Behaviour` per simulator, changed at run time through the control API
(`Behaviour.merge`), so a test can switch throttling on and off while our daemon is bound.
"""

import dataclasses
from dataclasses import dataclass

ID_FORMATS = ("hex", "decimal", "mixed")      # mixed: resp in hex, receipts in decimal
RECEIPT_MODES = ("both", "text", "tlv", "none")
MO_CODINGS = ("auto", "ucs2")                 # auto: GSM 03.38 when it fits, else UCS2

# Receipt stat → (message_state TLV value, err code in the receipt text).
RECEIPT_STATES = {
    "ENROUTE": (1, "000"),
    "DELIVRD": (2, "000"),
    "EXPIRED": (3, "000"),
    "DELETED": (4, "000"),
    "UNDELIV": (5, "001"),
    "ACCEPTD": (6, "000"),
    "UNKNOWN": (7, "000"),
    "REJECTD": (8, "000"),
}


class BehaviourError(ValueError):
    """A setting that does not exist or has a value the simulator cannot use."""


@dataclass
class Behaviour:
    throttle_every: int = 0          # every Nth submit_sm gets ESME_RTHROTTLED (0: never)
    throttle_rate: float = 0.0       # accepted submits per second above which it throttles
    fail_every: int = 0              # every Nth submit_sm gets fail_status (0: never)
    fail_status: int = 0x45          # ESME_RSUBMITFAIL
    drop_after: int = 0              # close the connection on the Nth submit_sm, unanswered
    drop_repeat: bool = False        # keep dropping every drop_after submits
    id_format: str = "hex"
    receipts: str = "both"           # receipt text, TLVs, both, or no receipts at all
    receipt_delay_s: float = 0.2
    receipt_stat: str = "DELIVRD"
    undeliverable_fraction: float = 0.0   # this share of receipts says UNDELIV instead
    ack_delay_s: float = 0.0         # hold each submit_sm_resp this long
    # Every Nth accepted submit_sm answered with a malformed submit_sm_resp (0: never),
    # the kinds in turn (malformed.KINDS: lying command_length, truncated body, garbage
    # message_id, wrong command_id); the submit is accepted all the same.
    malformed_every: int = 0
    mo_coding: str = "auto"

    def merge(self, changes) -> None:
        """Apply a partial update (the control API's JSON). All or nothing: on any bad key
        or value, BehaviourError and the behaviour is left as it was."""
        if not isinstance(changes, dict):
            raise BehaviourError("behaviour changes must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise BehaviourError(
                f"unknown behaviour setting(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}")
        candidate = dataclasses.replace(self, **{
            name: _coerce(name, known[name].type, value) for name, value in changes.items()})
        candidate.validate()
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def validate(self) -> None:
        for name in ("throttle_every", "fail_every", "drop_after", "malformed_every"):
            if getattr(self, name) < 0:
                raise BehaviourError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("throttle_rate", "receipt_delay_s", "ack_delay_s"):
            if getattr(self, name) < 0:
                raise BehaviourError(f"{name} must be >= 0, not {getattr(self, name)}")
        if not 0 <= self.fail_status <= 0xFFFFFFFF:
            raise BehaviourError(f"fail_status must fit 32 bits, not {self.fail_status}")
        if not 0.0 <= self.undeliverable_fraction <= 1.0:
            raise BehaviourError(
                f"undeliverable_fraction must be within 0..1, not {self.undeliverable_fraction}")
        _check_choice("id_format", self.id_format, ID_FORMATS)
        _check_choice("receipts", self.receipts, RECEIPT_MODES)
        _check_choice("receipt_stat", self.receipt_stat, tuple(RECEIPT_STATES))
        _check_choice("mo_coding", self.mo_coding, MO_CODINGS)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(name, value, choices) -> None:
    if value not in choices:
        raise BehaviourError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _coerce(name, annotation, value):
    """JSON value → the field's type. bool is refused for numbers (True is not a count)."""
    kind = {"int": int, "float": float, "bool": bool, "str": str}[
        annotation if isinstance(annotation, str) else annotation.__name__]
    if kind is bool:
        if not isinstance(value, bool):
            raise BehaviourError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(value, bool):
        raise BehaviourError(f"{name} must be a number, not {value!r}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise BehaviourError(f"{name} must be an integer, not {value!r}")
        return value
    if kind is float:
        if not isinstance(value, (int, float)):
            raise BehaviourError(f"{name} must be a number, not {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise BehaviourError(f"{name} must be a string, not {value!r}")
    return value
