"""GET /v1/inbox's query: an opaque cursor and a page size, read strictly.

The cursor is the base64url form of "i1:<position>" (the inbox's filing order): agencies
pass back the `next` they were given and must not build one. A cursor that is not one
of ours, or a limit outside 1..100, is `invalid_request`."""

import base64
import binascii
import re

from gateway.http.errors import ApiError

MAX_LIMIT = 100
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,64}")
_POSITION = re.compile(r"i1:(0|[1-9][0-9]{0,17})")
_LIMIT = re.compile(r"[0-9]{1,3}")


def encode_cursor(position):
    return base64.urlsafe_b64encode(f"i1:{position}".encode("ascii")).decode(
        "ascii").rstrip("=")


def decode_cursor(cursor):
    """The position after which the page starts; ApiError for anything else."""
    bad = ApiError("invalid_request", "after: not a cursor this API gave (pass back `next`)")
    if not _CURSOR.fullmatch(cursor):
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    found = _POSITION.fullmatch(text)
    if found is None or encode_cursor(int(found.group(1))) != cursor:
        raise bad
    return int(found.group(1))


def inbox_query(query):
    """(after position, limit) of a request's query {name: value}."""
    after = 0
    if "after" in query and query["after"] != "":
        after = decode_cursor(query["after"])
    limit = MAX_LIMIT
    if "limit" in query:
        value = query["limit"]
        if not _LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
            raise ApiError("invalid_request", f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(value)
    return after, limit
