"""The operators section of gateway.yaml: one OperatorConfig per operator, every value
checked here once (the pool and the sessions take them as given)."""

from gateway.config.schema import BIND_MODES, RECEIPT_ID_MODES, OperatorConfig, UssdOperator
from gateway.config.shared import read_name
from gateway.config.yamlnodes import line_of

# SMPP 3.4 C-Octet String limits (without the terminating NUL) for bind fields.
SYSTEM_ID_MAX, PASSWORD_MAX, SYSTEM_TYPE_MAX = 15, 8, 12
VALID_NPI = (0, 1, 3, 4, 6, 8, 9, 10, 14, 18)

OPERATOR_KEYS = ("name", "host", "port", "system_id", "password", "system_type", "bind",
                 "binds", "window", "tps", "enquire_link_s", "reconnect_s", "receipts",
                 "receipt_ids", "response_timeout_s", "short_code_ton", "short_code_npi",
                 "max_unknown_outcomes", "ussd")
USSD_OP_SETS = ("new_ops", "continue_ops", "abort_ops", "end_ops")
USSD_KEYS = USSD_OP_SETS + ("dial_field", "answer_style", "continue_op", "end_op")


def read_operators(reader, node):
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

    read("name", lambda n, w: read_name(reader, n, w))
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
    read("ussd", lambda n, w: _read_ussd(reader, n, w))
    return values


def _read_ussd(reader, node, what):
    """How this operator's USSD gateway writes its fields; keys left out keep the
    reference's defaults (UssdOperator)."""
    fields = reader.mapping(node, what, USSD_KEYS)
    if fields is None:
        return None
    values, before = {}, len(reader.errors)
    for key in USSD_OP_SETS:
        if key in fields:
            items = reader.sequence(fields[key][1], f"{what}.{key}", non_empty=True) or ()
            values[key] = tuple(reader.integer(item, f"{what}.{key}", 0, 255)
                                for item in items)
    for key in ("continue_op", "end_op"):
        if key in fields:
            values[key] = reader.integer(fields[key][1], f"{what}.{key}", 0, 255)
    if "dial_field" in fields:
        values["dial_field"] = _read_choice(reader, fields["dial_field"][1],
                                            f"{what}.dial_field",
                                            ("short_message", "destination_addr"))
    if "answer_style" in fields:
        values["answer_style"] = _read_choice(reader, fields["answer_style"][1],
                                              f"{what}.answer_style", ("op", "end_bit"))
    if len(reader.errors) != before:
        return None
    settings = UssdOperator(**values)
    meanings = {}
    for key in USSD_OP_SETS:
        for op in getattr(settings, key):
            if op in meanings and meanings[op] != key:
                reader.fail(node, f"{what}: ussd_service_op {op} is in both "
                                  f"{meanings[op]} and {key}")
                return None
            meanings[op] = key
    return settings



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
