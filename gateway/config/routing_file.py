"""The routing rule files: prefix rules in order, each naming operators of gateway.yaml."""

import logging
import re

from gateway.config.schema import Routing, RoutingRule
from gateway.config.shared import yaml_files
from gateway.config.yamlnodes import NodeReader, line_of

# Warnings (a configuration that loads but likely does not say what was meant) go to this
# logger as `file:line: warning: ...`; check-config prints them.
log = logging.getLogger("payam.config")

PREFIX_RE = re.compile(r"^98[0-9]{0,10}$")    # 98 + at most the 10-digit national number
RULE_KEYS = ("prefixes", "operator", "fallback")


def read_routing(path, operator_names, errors):
    rules, default, default_origin = [], None, None
    earlier_prefixes = {}                  # prefix → origin of the earlier rule holding it
    for file_path in yaml_files(path, errors):
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
