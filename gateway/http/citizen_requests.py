"""The partner apps' requests read strictly, apart from the handlers: GET
/v1/citizen/messages' query and POST /v1/citizen/replies' body.

A national ID must pass its check digit (`invalid_national_id`), a number must be an
Iranian mobile (`invalid_number`), anything else malformed is `invalid_request`.  The
cursor is opaque: the base64url form of "c1:<created_at>:<id>" of the last message of
a page (newest first), handed back as `next`; one this API did not make is refused.
"""

import base64
import binascii
import re

from gateway.http.errors import ApiError
from gateway.http.validate import invalid, parse_json_object
from gateway.national_id import InvalidNationalId, normalize_national_id
from gateway.numbers import InvalidNumber, normalize_msisdn

MAX_LIMIT = 100
MAX_REPLY_CHARS = 1000          # an app reply is a citizen's SMS-sized answer, a bit more
MAX_IDEMPOTENCY_KEY = 128
MAX_MESSAGE_ID = 64
REPLY_FIELDS = ("national_id", "msisdn", "in_reply_to", "text", "idempotency_key")
_REPLY_FIELD_SET = frozenset(REPLY_FIELDS)
QUERY_FIELDS = ("national_id", "msisdn", "after", "limit")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,160}")
_POSITION = re.compile(r"c1:([0-9]{1,12}(?:\.[0-9]{1,20})?):([A-Za-z0-9_-]{1,64})")
_LIMIT = re.compile(r"[0-9]{1,3}")


def encode_cursor(created_at, message_id):
    text = f"c1:{created_at!r}:{message_id}"
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor):
    """(created_at, id) the page starts after (older than); ApiError for anything else."""
    bad = invalid("after: not a cursor this API gave (pass back `next`)")
    if not _CURSOR.fullmatch(cursor):
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    found = _POSITION.fullmatch(text)
    if found is None:
        raise bad
    position = (float(found.group(1)), found.group(2))
    if encode_cursor(*position) != cursor:
        raise bad
    return position


def _national_id(value):
    try:
        return normalize_national_id(value)
    except InvalidNationalId as error:
        raise ApiError("invalid_national_id", f"national_id: {error.reason}") from None


def _msisdn(value):
    try:
        if not isinstance(value, str):
            raise InvalidNumber(value, "not a string")
        return normalize_msisdn(value)
    except InvalidNumber:
        raise ApiError("invalid_number", "msisdn: not an Iranian mobile number") from None


def messages_query(query):
    """(national_id, msisdn, before or None, limit) of GET /v1/citizen/messages."""
    unknown = sorted(name for name in query if name not in QUERY_FIELDS)
    if unknown:
        raise invalid(f"unknown parameter(s): {', '.join(repr(n[:40]) for n in unknown[:5])}"
                      f"; allowed: {', '.join(QUERY_FIELDS)}")
    for name in ("national_id", "msisdn"):
        if not query.get(name):
            raise invalid(f"'{name}' is required")
    national_id = _national_id(query["national_id"])
    msisdn = _msisdn(query["msisdn"])
    before = decode_cursor(query["after"]) if query.get("after") else None
    limit = MAX_LIMIT
    if "limit" in query:
        value = query["limit"]
        if not _LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
            raise invalid(f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(value)
    return national_id, msisdn, before, limit


def reply_body(body):
    """(national_id, msisdn, in_reply_to, text, idempotency_key or None) of POST
    /v1/citizen/replies (lone surrogates and repeated names: parse_json_object)."""
    document = parse_json_object(body)
    if not _REPLY_FIELD_SET.issuperset(document):
        unknown = sorted(name for name in document if name not in REPLY_FIELDS)
        raise invalid(f"unknown field(s): {', '.join(repr(n[:40]) for n in unknown[:5])}"
                      f"; allowed: {', '.join(REPLY_FIELDS)}")
    for name in ("national_id", "msisdn", "in_reply_to", "text"):
        if name not in document:
            raise invalid(f"'{name}' is required")
    national_id = _national_id(document["national_id"])
    msisdn = _msisdn(document["msisdn"])
    in_reply_to = document["in_reply_to"]
    if not isinstance(in_reply_to, str) or not 1 <= len(in_reply_to) <= MAX_MESSAGE_ID:
        raise invalid(f"'in_reply_to' must be a message id (1 to {MAX_MESSAGE_ID} "
                      "characters)")
    text = document["text"]
    if not isinstance(text, str) or not text.strip():
        raise invalid("'text' must be a non-empty string")
    if len(text) > MAX_REPLY_CHARS:
        raise invalid(f"'text' must be at most {MAX_REPLY_CHARS} characters")
    key = document.get("idempotency_key")
    if key is not None and (not isinstance(key, str)
                            or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY):
        raise invalid(f"'idempotency_key' must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return national_id, msisdn, in_reply_to, text, key
