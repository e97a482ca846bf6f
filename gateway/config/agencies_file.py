"""The agencies files: one Agency per entry, senders and keys unique across all files."""

import base64
import binascii
import os
import re

from gateway.config.schema import Agency, Webhook
from gateway.config.shared import read_name, split_http_url, yaml_files
from gateway.config.yamlnodes import NodeReader, line_of
from gateway.text.links import normal_host

# Agencies that leave these out get limits that never bite a normal agency but still stop
# a runaway script: 100 parts/s and 100,000 parts/day.
DEFAULT_RATE_PER_S = 100.0
DEFAULT_DAILY_PARTS = 100_000

KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NUMBER_RE = re.compile(r"^4040[0-9]{1,16}$")
MASK_RE = re.compile(r"^[A-Za-z0-9]{3,11}$")
USSD_CODE_RE = re.compile(r"^\*4\*[0-9]+#$")

AGENCY_KEYS = ("id", "name", "keys", "numbers", "masks", "ussd_code", "rate_per_s",
               "daily_parts", "reply_webhook", "links", "opt_out",
               "help_text")
WEBHOOK_SECRET_PREFIX = "whsec_"
MIN_WEBHOOK_SECRET_BYTES = 24       # Standard Webhooks: 24 to 64 random bytes
MAX_HELP_TEXT = 500


class _Claims:
    """Values that must be unique across agencies, and where each was first claimed."""

    def __init__(self):
        self.owners = {}

    def claim(self, reader, node, what, kind, key, shown, agency_id):
        owner = self.owners.get((kind, key))
        if owner is not None and owner[0] == agency_id:
            reader.fail(node, f"{what}: {kind} {shown!r} is listed twice (first at {owner[1]})")
            return False
        if owner is not None:
            reader.fail(node, f"{what}: {kind} {shown!r} already belongs to agency "
                              f"{owner[0]!r} ({owner[1]})")
            return False
        self.owners[(kind, key)] = (agency_id, f"{os.path.basename(reader.path)}:"
                                               f"{line_of(node)}")
        return True


def read_agencies(path, errors):
    claims, agencies = _Claims(), []
    for file_path in yaml_files(path, errors):
        reader = NodeReader(file_path, errors)
        root = reader.compose()
        if root is None:
            continue
        fields = reader.mapping(root, "agencies file", ("agencies",), required=("agencies",))
        if not fields or "agencies" not in fields:
            continue
        items = reader.sequence(fields["agencies"][1], "agencies", non_empty=True)
        for index, item in enumerate(items or ()):
            agency = _read_agency(reader, item, f"agencies[{index}]", claims)
            if agency is not None:
                agencies.append(agency)
    return tuple(agencies)


def _read_agency(reader, node, what, claims):
    before = len(reader.errors)
    fields = reader.mapping(node, what, AGENCY_KEYS, required=("id", "keys"))
    if fields is None:
        return None
    if "numbers" not in fields and "masks" not in fields:
        reader.fail(node, f"{what}: needs at least one sender: 'numbers' or 'masks'")
    agency_id = None
    if "id" in fields:
        agency_id = read_name(reader, fields["id"][1], f"{what}.id")
        first = claims.owners.get(("id", agency_id))
        if first is not None:
            reader.fail(fields["id"][1], f"{what}.id: duplicate agency id {agency_id!r} "
                                         f"(first at {first[1]})")
        elif agency_id is not None:
            claims.claim(reader, fields["id"][1], f"{what}.id", "id", agency_id, agency_id,
                         agency_id)
    owner = agency_id or what

    def node_of(key):
        return fields[key][1] if key in fields else None

    name = agency_id
    if "name" in fields:
        name = reader.text(node_of("name"), f"{what}.name")
    keys = _read_unique_list(reader, node_of("keys"), f"{what}.keys", "key", KEY_HASH_RE,
                             "'sha256:' and 64 lowercase hex digits "
                             "(see `payam-gateway hash-key`)", claims, owner, str)
    numbers = _read_unique_list(reader, node_of("numbers"), f"{what}.numbers", "number",
                                NUMBER_RE, "4040 followed by 1-16 digits", claims, owner,
                                str)
    masks = _read_unique_list(reader, node_of("masks"), f"{what}.masks", "mask", MASK_RE,
                              "3-11 ASCII letters and digits", claims, owner, str.upper)
    for mask, mask_node in masks or ():
        if mask.isdigit():
            reader.fail(mask_node, f"{what}.masks: {mask!r} needs at least one letter "
                                   f"(all-digit senders are numbers)")
    ussd_code = None
    if "ussd_code" in fields:
        ussd_code = reader.text(node_of("ussd_code"), f"{what}.ussd_code")
        if ussd_code is not None:
            if not USSD_CODE_RE.match(ussd_code):
                reader.fail(node_of("ussd_code"), f"{what}.ussd_code: expected a code under "
                            f"*4 such as \"*4*0135#\", got {ussd_code!r}")
            else:
                claims.claim(reader, node_of("ussd_code"), f"{what}.ussd_code", "USSD code",
                             ussd_code, ussd_code, owner)
    rate = DEFAULT_RATE_PER_S
    if "rate_per_s" in fields:
        rate = reader.number(node_of("rate_per_s"), f"{what}.rate_per_s", above=0)
    daily = DEFAULT_DAILY_PARTS
    if "daily_parts" in fields:
        daily = reader.integer(node_of("daily_parts"), f"{what}.daily_parts", minimum=1)
    webhook = None
    if "reply_webhook" in fields:
        webhook = _read_webhook(reader, node_of("reply_webhook"), f"{what}.reply_webhook")
    links = ()
    if "links" in fields:
        links = _read_links(reader, node_of("links"), f"{what}.links")
    opt_out = False
    if "opt_out" in fields:
        opt_out = reader.boolean(node_of("opt_out"), f"{what}.opt_out")
    help_text = None
    if "help_text" in fields:
        help_text = _read_help_text(reader, node_of("help_text"), f"{what}.help_text")
    if len(reader.errors) != before:
        return None
    return Agency(id=agency_id, name=name,
                  keys=tuple(value for value, _ in keys),
                  numbers=tuple(value for value, _ in numbers or ()),
                  masks=tuple(value for value, _ in masks or ()),
                  ussd_code=ussd_code, rate_per_s=rate, daily_parts=daily,
                  reply_webhook=webhook, links=links, opt_out=bool(opt_out),
                  help_text=help_text)


def _read_unique_list(reader, node, what, kind, pattern, shape, claims, owner, unique_key):
    """A list of strings of one shape, each unique across agencies (by `unique_key`)."""
    if node is None:
        return ()
    items = reader.texts(node, what, non_empty=True)
    if items is None:
        return None
    for index, (value, item) in enumerate(items):
        if not pattern.match(value):
            reader.fail(item, f"{what}[{index}]: expected {shape}, got {value!r}")
        else:
            claims.claim(reader, item, f"{what}[{index}]", kind, unique_key(value), value,
                         owner)
    return items


def _read_links(reader, node, what):
    """The hosts an agency's texts may link to, in gateway.text.links' normal form
    (exact hosts: a subdomain is listed on its own)."""
    items = reader.texts(node, what, non_empty=True)
    hosts = []
    for index, (value, item) in enumerate(items or ()):
        host = normal_host(value)
        if host is None or "." not in host:
            reader.fail(item, f"{what}[{index}]: expected a domain such as "
                              f"\"tax.gov.ir\" (no scheme, path or port), got {value!r}")
        elif host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def _read_webhook(reader, node, what):
    fields = reader.mapping(node, what, ("url", "secret"), required=("url", "secret"))
    if not fields or "url" not in fields or "secret" not in fields:
        return None
    url = reader.text(fields["url"][1], f"{what}.url")
    secret = reader.text(fields["secret"][1], f"{what}.secret")
    if url is not None:
        if split_http_url(url) is None:
            reader.fail(fields["url"][1], f"{what}.url: expected an http:// or https:// URL, "
                                          f"got {url!r}")
            return None
    if secret is not None and not _webhook_secret_ok(secret):
        reader.fail(fields["secret"][1], f"{what}.secret: expected \"whsec_\" followed by "
                    f"the base64 of at least {MIN_WEBHOOK_SECRET_BYTES} random bytes")
        return None
    if url is None or secret is None:
        return None
    return Webhook(url=url, secret=secret)


def _webhook_secret_ok(secret):
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= MIN_WEBHOOK_SECRET_BYTES


def _read_help_text(reader, node, what):
    text = reader.text(node, what)
    if text is None:
        return None
    if len(text) > MAX_HELP_TEXT:
        reader.fail(node, f"{what}: at most {MAX_HELP_TEXT} characters, got {len(text)}")
        return None
    try:
        text.format(name="", number="")
    except (KeyError, IndexError, ValueError) as error:
        reader.fail(node, f"{what}: only {{name}} and {{number}} may be filled in "
                          f"({error})")
        return None
    return text
