"""SMSC message ids as receipts meet them: one normal form, and reading per id base.

A leaf (it imports nothing from gateway): the SMPP side parses receipts, the store
files parts under their submit_sm_resp id and reads receipts' ids into that key, and
neither needs the other for it.
"""

# How an operator's receipts write the id its submit_sm_resp gave (`receipt_ids`, one
# setting per operator, never guessed per receipt: translating every receipt both ways
# hands an early receipt to an older part whose id is its translation, `49` → `31`):
#   raw  the same id (compared upper-cased, leading zeros stripped);
#   dec  the receipt writes in decimal an id the submit_sm_resp gave in hex;
#   hex  the receipt writes in hex an id the submit_sm_resp gave in decimal.
ID_BASES = ("raw", "dec", "hex")
_HEX_DIGITS = frozenset("0123456789ABCDEF")
_DECIMAL_DIGITS = frozenset("0123456789")
# SMPP message_id is at most 64 octets; a longer id is never translated.
_MAX_TRANSLATED = 64


def normal_id(smsc_id):
    """The normal form of an SMSC message id: upper case, leading zeros stripped ("0"
    for all zeros).  Parts are filed under the normal form of their submit_sm_resp id.
    Raises ValueError for an empty id."""
    if not isinstance(smsc_id, str):
        raise ValueError(f"SMSC message id must be a str, not {type(smsc_id).__name__}")
    raw = smsc_id.strip().strip("\0").upper()
    if not raw:
        raise ValueError("empty SMSC message id")
    return raw.lstrip("0") or "0"


def receipt_key(receipt_id, base):
    """The normal submit_sm_resp id a receipt's id (already normal) stands for under
    `base`, or None when the id cannot be written in that base (a receipt of a `dec`
    operator that is not all decimal digits matches nothing)."""
    if base == "raw":
        return receipt_id
    if len(receipt_id) > _MAX_TRANSLATED:
        return None
    if base == "dec":
        return format(int(receipt_id), "X") if set(receipt_id) <= _DECIMAL_DIGITS else None
    if base == "hex":
        return str(int(receipt_id, 16)) if set(receipt_id) <= _HEX_DIGITS else None
    raise ValueError(f"unknown receipt id base {base!r}")


def read_only_raw(smsc_id):
    """Whether an id (normal form) can be meant only as itself (raw) when both a
    receipt and a submit_sm_resp of one operator carry it: it is not a decimal number
    of at most 64 digits, so no `dec` receipt writes it, and a resp id that is not
    decimal says the operator's resp ids are not decimal, so no `hex` receipt stands
    for one of them.  (The same string on both sides: a receipt id merely shaped like
    a hex number, before any resp id of its operator is known, may still be `hex`.)"""
    return len(smsc_id) > _MAX_TRANSLATED or not set(smsc_id) <= _DECIMAL_DIGITS
