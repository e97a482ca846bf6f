"""Loading and checking gateway.yaml, the agencies files and the routing rule files.

Every function collects all problems of a load and raises them together as ConfigErrors,
each `file:line: message`, so an operator fixes a file in one pass.
"""

import logging
import os
import re
from urllib.parse import urlsplit

from gateway.config.schema import (
    BIND_MODES, DEFAULT_HTTP_MAX_CONNECTIONS, RECEIPT_ID_MODES, Agency, GatewayConfig,
    OperatorConfig, Retention, Routing, RoutingRule, Webhook)
from gateway.config.yamlnodes import ConfigError, ConfigErrors, NodeReader, line_of

# Warnings (a configuration that loads but likely does not say what was meant) go to this
# logger as `file:line: warning: ...`; check-config prints them.
log = logging.getLogger("payam.config")

# Agencies that leave these out get limits that never bite a normal agency but still stop
# a runaway script: 100 parts/s and 100,000 parts/day.
DEFAULT_RATE_PER_S = 100.0
DEFAULT_DAILY_PARTS = 100_000

DEFAULT_HTTP_LISTEN = ("127.0.0.1", 8080)
DEFAULT_STORE_PATH = "var/gateway.db"

NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NUMBER_RE = re.compile(r"^4040[0-9]{1,16}$")
MASK_RE = re.compile(r"^[A-Za-z0-9]{3,11}$")
USSD_CODE_RE = re.compile(r"^\*4\*[0-9]+#$")
PREFIX_RE = re.compile(r"^98[0-9]{0,10}$")    # 98 + at most the 10-digit national number
PORT_RE = re.compile(r"^[0-9]{1,5}$")

# SMPP 3.4 C-Octet String limits (without the terminating NUL) for bind fields.
SYSTEM_ID_MAX, PASSWORD_MAX, SYSTEM_TYPE_MAX = 15, 8, 12
VALID_NPI = (0, 1, 3, 4, 6, 8, 9, 10, 14, 18)

GATEWAY_KEYS = ("http", "metrics", "store", "agencies", "routing_rules", "ussd_menus",
                "operators", "retention")
RETENTION_KEYS = ("messages", "audit", "receipts", "inbound", "inbox")
RETENTION_MAX_DAYS = 36500
OPERATOR_KEYS = ("name", "host", "port", "system_id", "password", "system_type", "bind",
                 "binds", "window", "tps", "enquire_link_s", "reconnect_s", "receipts",
                 "receipt_ids", "response_timeout_s", "short_code_ton", "short_code_npi",
                 "max_unknown_outcomes")
AGENCY_KEYS = ("id", "name", "keys", "numbers", "masks", "ussd_code", "rate_per_s",
               "daily_parts", "reply_webhook")
RULE_KEYS = ("prefixes", "operator", "fallback")


# --- public API ---------------------------------------------------------------------

def load_gateway_config(path):
    """Everything `run` needs: gateway.yaml plus the agencies and routing files it names."""
    path = os.path.abspath(path)
    errors = []
    reader = NodeReader(path, errors)
    root = reader.compose()
    settings = _read_gateway(reader, root) if root is not None else None
    if settings is None:
        raise _in_reading_order(errors)
    operator_names = {op.name for op in settings["operators"] or ()} | settings["named"]
    agencies = routing = None
    if settings["agencies_path"]:
        agencies = _load_agencies(settings["agencies_path"], errors)
    if settings["routing_rules_path"]:
        routing = _load_routing(settings["routing_rules_path"], operator_names, errors)
    if errors:
        raise _in_reading_order(errors)
    return GatewayConfig(
        path=path,
        http_listen=settings["http_listen"],
        metrics_listen=settings["metrics_listen"],
        store_path=settings["store_path"],
        agencies_path=settings["agencies_path"],
        routing_rules_path=settings["routing_rules_path"],
        ussd_menus_path=settings["ussd_menus_path"],
        operators=settings["operators"],
        agencies=agencies,
        routing=routing,
        retention=settings["retention"],
        http_max_connections=settings["http_max_connections"])


def load_agencies(path):
    """The agencies of a file or a directory of *.yaml files (merged in name order)."""
    errors = []
    agencies = _load_agencies(os.path.abspath(path), errors)
    if errors:
        raise _in_reading_order(errors)
    return agencies


def load_routing(path, operator_names):
    """The routing rules of a directory of *.yaml files (name order) or of one file."""
    errors = []
    routing = _load_routing(os.path.abspath(path), set(operator_names), errors)
    if errors:
        raise _in_reading_order(errors)
    return routing


def _in_reading_order(errors):
    """Errors grouped by file (in the order files were read), then by line."""
    file_rank = {}
    for error in errors:
        file_rank.setdefault(error.file, len(file_rank))
    return ConfigErrors(sorted(errors, key=lambda e: (file_rank[e.file], e.line or 0)))


def check_config(path):
    """Formatted `file:line: message` lines, empty when `run` would load the config."""
    try:
        load_gateway_config(path)
    except ConfigErrors as problems:
        return [str(error) for error in problems.errors]
    return []


# --- gateway.yaml -------------------------------------------------------------------

def _read_gateway(reader, root):
    """The settings of gateway.yaml, paths resolved; None if the file is not a mapping."""
    fields = reader.mapping(root, "gateway config", GATEWAY_KEYS,
                            required=("agencies", "routing_rules", "operators"))
    if fields is None:
        return None
    base = os.path.dirname(reader.path)
    settings = {
        "http_listen": DEFAULT_HTTP_LISTEN, "metrics_listen": None,
        "store_path": os.path.normpath(os.path.join(base, DEFAULT_STORE_PATH)),
        "agencies_path": None, "routing_rules_path": None, "ussd_menus_path": None,
        "operators": None, "named": set(), "retention": Retention(),
        "http_max_connections": DEFAULT_HTTP_MAX_CONNECTIONS,
    }
    if "http" in fields:
        _read_http_section(reader, fields["http"][1], settings)
    if "metrics" in fields:
        settings["metrics_listen"] = _read_listen_section(reader, fields["metrics"][1],
                                                          "metrics")
    if "store" in fields:
        store = reader.mapping(fields["store"][1], "store", ("path",), required=("path",))
        if store and "path" in store:
            settings["store_path"] = _read_store_path(reader, store["path"][1], base)
    if "agencies" in fields:
        settings["agencies_path"] = _read_existing_path(
            reader, fields["agencies"][1], base, "agencies", directory=None)
    if "routing_rules" in fields:
        settings["routing_rules_path"] = _read_existing_path(
            reader, fields["routing_rules"][1], base, "routing_rules", directory=None)
    if "ussd_menus" in fields:
        settings["ussd_menus_path"] = _read_existing_path(
            reader, fields["ussd_menus"][1], base, "ussd_menus", directory=True)
    if "operators" in fields:
        settings["operators"], settings["named"] = _read_operators(
            reader, fields["operators"][1])
    if "retention" in fields:
        settings["retention"] = _read_retention(reader, fields["retention"][1])
    return settings


def _read_retention(reader, node):
    """Days per kind of record; kinds left out keep their defaults."""
    fields = reader.mapping(node, "retention", RETENTION_KEYS)
    days = {}
    for key, (_key_node, value) in (fields or {}).items():
        value = reader.number(value, f"retention.{key}", above=0,
                              maximum=RETENTION_MAX_DAYS)
        if value is not None:
            days[key] = value
    return Retention(**days)


def _read_listen_section(reader, node, section):
    fields = reader.mapping(node, section, ("listen",), required=("listen",))
    if not fields or "listen" not in fields:
        return None
    return _read_listen(reader, fields["listen"][1], f"{section}.listen")


def _read_http_section(reader, node, settings):
    fields = reader.mapping(node, "http", ("listen", "max_connections"), required=("listen",))
    settings["http_listen"] = None
    if not fields:
        return
    if "listen" in fields:
        settings["http_listen"] = _read_listen(reader, fields["listen"][1], "http.listen")
    if "max_connections" in fields:
        settings["http_max_connections"] = reader.integer(
            fields["max_connections"][1], "http.max_connections", 1, 1_000_000)


def _read_listen(reader, node, what):
    """"host:port" or "[v6addr]:port" → (host, port)."""
    text = reader.text(node, what)
    if text is None:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        valid = bool(sep) and ":" in host
    else:
        host, sep, port = text.rpartition(":")
        valid = bool(sep) and ":" not in host
    if not valid or not host or not PORT_RE.match(port):
        reader.fail(node, f"{what}: expected \"host:port\" (IPv6 as \"[::1]:8080\"), "
                          f"got {text!r}")
        return None
    if not 1 <= int(port) <= 65535:
        reader.fail(node, f"{what}: port must be between 1 and 65535, got {port}")
        return None
    return host, int(port)


def _read_store_path(reader, node, base):
    text = reader.text(node, "store.path")
    if text is None:
        return None
    path = os.path.normpath(os.path.join(base, text))
    if os.path.isdir(path):
        reader.fail(node, f"store.path: {path} is a directory; name the database file")
        return None
    return path


def _read_existing_path(reader, node, base, what, directory):
    """A path that must exist; directory=True demands a directory, None allows either."""
    text = reader.text(node, what)
    if text is None:
        return None
    path = os.path.normpath(os.path.join(base, text))
    if not os.path.exists(path):
        reader.fail(node, f"{what}: {path} does not exist")
        return None
    if (directory or text.endswith("/")) and not os.path.isdir(path):
        reader.fail(node, f"{what}: {path} is not a directory")
        return None
    return path


def _read_operators(reader, node):
    """(tuple of OperatorConfig or None, every name read) — names also when others fail."""
    items = reader.sequence(node, "operators", non_empty=True)
    if items is None:
        return None, set()
    operators, first_line, complete = [], {}, True
    for index, item in enumerate(items):
        before = len(reader.errors)
        operator = _read_operator(reader, item, f"operators[{index}]")
        name = operator.get("name") if operator else None
        if name is not None:
            if name in first_line:
                reader.fail(item, f"operators[{index}]: duplicate operator name {name!r} "
                                  f"(first at line {first_line[name]})")
            else:
                first_line[name] = line_of(item)
        if len(reader.errors) == before:
            operators.append(OperatorConfig(**operator))
        else:
            complete = False
    return (tuple(operators) if complete else None), set(first_line)


def _read_operator(reader, node, what):
    fields = reader.mapping(node, what, OPERATOR_KEYS,
                            required=("name", "host", "port", "system_id", "password"))
    if fields is None:
        return None
    values = {}

    def read(key, parse):
        if key in fields:
            value = parse(fields[key][1], f"{what}.{key}")
            if value is not None:
                values[key] = value

    read("name", lambda n, w: _read_name(reader, n, w))
    read("host", reader.text)
    read("port", lambda n, w: reader.integer(n, w, 1, 65535))
    read("system_id", lambda n, w: _read_c_octets(reader, n, w, SYSTEM_ID_MAX, False))
    read("password", lambda n, w: _read_c_octets(reader, n, w, PASSWORD_MAX, True))
    read("system_type", lambda n, w: _read_c_octets(reader, n, w, SYSTEM_TYPE_MAX, True))
    read("bind", lambda n, w: _read_choice(reader, n, w, BIND_MODES))
    read("binds", lambda n, w: reader.integer(n, w, 1, 64))
    read("window", lambda n, w: reader.integer(n, w, 1, 10000))
    read("tps", lambda n, w: reader.number(n, w, above=0))
    read("enquire_link_s", lambda n, w: reader.number(n, w, above=0))
    read("reconnect_s", lambda n, w: _read_backoff(reader, n, w))
    read("receipts", reader.boolean)
    read("receipt_ids", lambda n, w: _read_choice(reader, n, w, RECEIPT_ID_MODES))
    read("response_timeout_s", lambda n, w: reader.number(n, w, above=0))
    read("short_code_ton", lambda n, w: reader.integer(n, w, 0, 6))
    read("short_code_npi", lambda n, w: _read_npi(reader, n, w))
    read("max_unknown_outcomes", lambda n, w: reader.integer(n, w, 1, 100))
    return values


def _read_name(reader, node, what):
    text = reader.text(node, what)
    if text is not None and not NAME_RE.match(text):
        reader.fail(node, f"{what}: {text!r} must be 1-32 of a-z, 0-9, '_' and '-'")
        return None
    return text


def _read_c_octets(reader, node, what, limit, allow_empty):
    text = reader.text(node, what, allow_empty=allow_empty)
    if text is None:
        return None
    if not text.isascii() or not text.isprintable():
        reader.fail(node, f"{what}: must be printable ASCII")
        return None
    if len(text) > limit:
        reader.fail(node, f"{what}: SMPP allows at most {limit} characters, got {len(text)}")
        return None
    return text


def _read_choice(reader, node, what, choices):
    text = reader.text(node, what)
    if text is not None and text not in choices:
        reader.fail(node, f"{what}: must be one of {', '.join(choices)}, got {text!r}")
        return None
    return text


def _read_backoff(reader, node, what):
    items = reader.sequence(node, what)
    if items is None:
        return None
    if len(items) != 2:
        reader.fail(node, f"{what}: expected two numbers [from, to], got {len(items)} items")
        return None
    low = reader.number(items[0], f"{what}[0]", above=0)
    high = reader.number(items[1], f"{what}[1]", above=0)
    if low is None or high is None:
        return None
    if low > high:
        reader.fail(node, f"{what}: from ({low:g}) must not exceed to ({high:g})")
        return None
    return low, high


def _read_npi(reader, node, what):
    value = reader.integer(node, what)
    if value is not None and value not in VALID_NPI:
        reader.fail(node, f"{what}: not an SMPP NPI value ({', '.join(map(str, VALID_NPI))})")
        return None
    return value


# --- agencies -----------------------------------------------------------------------

def _yaml_files(path, errors):
    """The file itself, or a directory's *.yaml files in name order (dotfiles skipped)."""
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path)
                       if name.endswith(".yaml") and not name.startswith("."))
        if not names:
            errors.append(ConfigError(path, None, "directory holds no *.yaml files"))
        return [os.path.join(path, name) for name in names]
    if not os.path.exists(path):
        errors.append(ConfigError(path, None, "does not exist"))
        return []
    return [path]


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


def _load_agencies(path, errors):
    claims, agencies = _Claims(), []
    for file_path in _yaml_files(path, errors):
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
        agency_id = _read_name(reader, fields["id"][1], f"{what}.id")
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
    if len(reader.errors) != before:
        return None
    return Agency(id=agency_id, name=name,
                  keys=tuple(value for value, _ in keys),
                  numbers=tuple(value for value, _ in numbers or ()),
                  masks=tuple(value for value, _ in masks or ()),
                  ussd_code=ussd_code, rate_per_s=rate, daily_parts=daily,
                  reply_webhook=webhook)


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


def _read_webhook(reader, node, what):
    fields = reader.mapping(node, what, ("url", "token"), required=("url", "token"))
    if not fields or "url" not in fields or "token" not in fields:
        return None
    url = reader.text(fields["url"][1], f"{what}.url")
    token = reader.text(fields["token"][1], f"{what}.token")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            reader.fail(fields["url"][1], f"{what}.url: expected an http:// or https:// URL, "
                                          f"got {url!r}")
            return None
    if url is None or token is None:
        return None
    return Webhook(url=url, token=token)


# --- routing rules ------------------------------------------------------------------

def _load_routing(path, operator_names, errors):
    rules, default, default_origin = [], None, None
    earlier_prefixes = {}                  # prefix → origin of the earlier rule holding it
    for file_path in _yaml_files(path, errors):
        reader = NodeReader(file_path, errors)
        root = reader.compose()
        if root is None:
            continue
        fields = reader.mapping(root, "routing rules file", ("rules", "default"))
        if fields is None:
            continue
        if not fields:
            reader.fail(root, "routing rules file: expected 'rules' and/or 'default'")
        if "rules" in fields:
            items = reader.sequence(fields["rules"][1], "rules")
            for index, item in enumerate(items or ()):
                rule = _read_rule(reader, item, f"rules[{index}]", operator_names,
                                  earlier_prefixes)
                if rule is not None:
                    rules.append(rule)
        if "default" in fields:
            node = fields["default"][1]
            origin = f"{file_path}:{line_of(node)}"
            name = _read_operator_name(reader, node, "default", operator_names)
            if default_origin is not None:
                reader.fail(node, f"default: already set at {default_origin}; "
                                  f"only one rules file may set it")
            elif name is not None:
                default, default_origin = name, origin
    return Routing(rules=tuple(rules), default=default)


def _read_rule(reader, node, what, operator_names, earlier_prefixes):
    before = len(reader.errors)
    fields = reader.mapping(node, what, RULE_KEYS, required=("prefixes", "operator"))
    if fields is None:
        return None
    origin = f"{reader.path}:{line_of(node)}"
    prefixes = []
    if "prefixes" in fields:
        for index, (prefix, item) in enumerate(
                reader.texts(fields["prefixes"][1], f"{what}.prefixes", non_empty=True) or ()):
            where = f"{what}.prefixes[{index}]"
            if not PREFIX_RE.match(prefix):
                reader.fail(item, f"{where}: expected digits in international form starting "
                                  f"with 98 (no '+'), at most 12 digits, got {prefix!r}")
            elif prefix in prefixes:
                reader.fail(item, f"{where}: {prefix} is listed twice")
            else:
                shadow = next((earlier_prefixes[prefix[:k]]
                               for k in range(2, len(prefix) + 1)
                               if prefix[:k] in earlier_prefixes), None)
                if shadow is not None:
                    # Legal (first match wins) but dead: said, not refused.
                    log.warning("%s:%d: warning: %s: %s can never match: the rule at %s "
                                "already takes it (first match wins)", reader.path,
                                line_of(item), where, prefix, shadow)
                prefixes.append(prefix)
    operator = None
    if "operator" in fields:
        operator = _read_operator_name(reader, fields["operator"][1], f"{what}.operator",
                                       operator_names)
    fallback = []
    if "fallback" in fields:
        for index, item in enumerate(reader.sequence(fields["fallback"][1],
                                                     f"{what}.fallback") or ()):
            where = f"{what}.fallback[{index}]"
            name = _read_operator_name(reader, item, where, operator_names)
            if name is None:
                continue
            if name == operator or name in fallback:
                reader.fail(item, f"{where}: {name!r} is already a candidate of this rule")
            else:
                fallback.append(name)
    for prefix in prefixes:
        earlier_prefixes.setdefault(prefix, origin)
    if len(reader.errors) != before:
        return None
    return RoutingRule(prefixes=tuple(prefixes), operator=operator, fallback=tuple(fallback),
                       origin=origin)


def _read_operator_name(reader, node, what, operator_names):
    name = reader.text(node, what)
    if name is not None and name not in operator_names:
        known = ", ".join(sorted(operator_names)) or "none"
        reader.fail(node, f"{what}: no operator named {name!r} in gateway.yaml "
                          f"(operators: {known})")
        return None
    return name
