"""gateway.yaml `directory:` and the embedded directory file (a YAML list of citizens).

`directory: {path: directory.yaml}` reads the citizens at load (check-config checks every
entry); `directory: {url: "http://..."}` names a lookup service, asked at run time.
Errors name the entry's index and line, never its national ID or number.
"""

import os

from gateway.config.schema import DirectorySettings
from gateway.config.shared import split_http_url
from gateway.config.yamlnodes import NodeReader
from gateway.model import Citizen
from gateway.national_id import InvalidNationalId, normalize_national_id
from gateway.numbers import InvalidNumber, normalize_msisdn

DIRECTORY_KEYS = ("path", "url", "timeout_s", "cache_ttl_s", "cache_size")
CITIZEN_KEYS = ("national_id", "msisdn", "email")
MAX_EMAIL = 254


def read_directory_settings(reader, node, base):
    """DirectorySettings from gateway.yaml's `directory:` (the file itself read later)."""
    fields = reader.mapping(node, "directory", DIRECTORY_KEYS)
    if fields is None:
        return None
    if ("path" in fields) == ("url" in fields):
        reader.fail(node, "directory: give exactly one of 'path' (a directory file) or "
                          "'url' (a lookup service)")
        return None
    values = {}
    if "path" in fields:
        text = reader.text(fields["path"][1], "directory.path")
        if text is None:
            return None
        path = os.path.normpath(os.path.join(base, text))
        if not os.path.isfile(path):
            reader.fail(fields["path"][1], f"directory.path: {path} is not a file")
            return None
        values["path"] = path
    if "url" in fields:
        url = reader.text(fields["url"][1], "directory.url")
        if url is None:
            return None
        parts = split_http_url(url)
        if parts is None or parts.query or parts.fragment:
            reader.fail(fields["url"][1], "directory.url: expected http(s)://host[:port]"
                                          "[/path], no query")
            return None
        values["url"] = url.rstrip("/")
    for key, low, high in (("timeout_s", 0, 60), ("cache_ttl_s", 0, 86400)):
        if key in fields:
            value = reader.number(fields[key][1], f"directory.{key}", above=low,
                                  maximum=high)
            if value is not None:
                values[key] = value
    if "cache_size" in fields:
        value = reader.integer(fields["cache_size"][1], "directory.cache_size", 0, 10_000_000)
        if value is not None:
            values["cache_size"] = value
    return DirectorySettings(**values)


def read_directory_file(path, errors):
    """The citizens of a directory file: national IDs valid and unique, numbers normal."""
    reader = NodeReader(path, errors)
    root = reader.compose()
    if root is None:
        return ()
    items = reader.sequence(root, "directory file")
    citizens, seen = [], {}
    for index, node in enumerate(items or ()):
        citizen = _read_citizen(reader, node, f"[{index}]", seen)
        if citizen is not None:
            citizens.append(citizen)
    return tuple(citizens)


def _read_citizen(reader, node, what, seen):
    fields = reader.mapping(node, what, CITIZEN_KEYS, required=("national_id", "msisdn"))
    if not fields or "national_id" not in fields or "msisdn" not in fields:
        return None
    national_id = msisdn = email = None
    raw = reader.text(fields["national_id"][1], f"{what}.national_id")
    if raw is not None:
        try:
            national_id = normalize_national_id(raw)
        except InvalidNationalId as error:
            reader.fail(fields["national_id"][1], f"{what}.national_id: {error.reason}")
    if national_id is not None and national_id in seen:
        reader.fail(fields["national_id"][1], f"{what}.national_id: listed twice "
                                              f"(first at line {seen[national_id]})")
        national_id = None
    elif national_id is not None:
        seen[national_id] = fields["national_id"][1].start_mark.line + 1
    raw = reader.text(fields["msisdn"][1], f"{what}.msisdn")
    if raw is not None:
        try:
            msisdn = normalize_msisdn(raw)
        except InvalidNumber as error:
            reader.fail(fields["msisdn"][1], f"{what}.msisdn: {error.reason}")
    if "email" in fields:
        email = reader.text(fields["email"][1], f"{what}.email")
        if email is not None and not _looks_like_email(email):
            reader.fail(fields["email"][1], f"{what}.email: expected name@domain")
            email = None
        elif email is None:
            return None
    if national_id is None or msisdn is None:
        return None
    return Citizen(national_id=national_id, msisdn=msisdn, email=email)


def _looks_like_email(text):
    local, at, domain = text.rpartition("@")
    return (bool(at) and bool(local) and "." in domain and len(text) <= MAX_EMAIL
            and not any(ch.isspace() or ch in "<>,;\"\r\n" for ch in text))
