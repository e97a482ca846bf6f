"""Sender policy: an agency may send only from its own 4040 numbers and its own masks.

Anything else is spoofing (or a misconfiguration) and is refused; the caller audits it.
`reason` values are a small fixed set because they label a metric.
"""

from gateway.numbers import normalize_digits

SHORT_CODE_PREFIX = "4040"
MAX_SENDER_LENGTH = 64         # longer input is not worth examining


class SenderNotAllowed(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def check_sender(agency, sender):
    """("number" | "mask", address to send from) for an allowed sender, else
    SenderNotAllowed. Numbers may arrive in Persian or Arabic-Indic digits."""
    if not isinstance(sender, str) or not sender.strip():
        raise SenderNotAllowed("empty", "'from' must be one of your sender numbers or masks")
    if len(sender) > MAX_SENDER_LENGTH:
        raise SenderNotAllowed("not_registered", "'from' is not a sender registered to you")
    digits = normalize_digits(sender.strip())
    if digits.isascii() and digits.isdigit():
        if not digits.startswith(SHORT_CODE_PREFIX):
            raise SenderNotAllowed(
                "not_a_government_number",
                "'from' must be a 4040 number or a mask registered to you")
        if digits not in agency.numbers:
            raise SenderNotAllowed("number_not_assigned",
                                   f"number {digits} is not assigned to you")
        return "number", digits
    if sender in agency.masks:
        return "mask", sender
    raise SenderNotAllowed("mask_not_registered", "'from' is not a mask registered to you")


def owner_of(agencies, sender):
    """Which agency a refused sender actually belongs to, for the audit record."""
    if not isinstance(sender, str):
        return None
    digits = normalize_digits(sender.strip())
    for agency in agencies:
        if digits in agency.numbers or sender in agency.masks:
            return agency.id
    return None
