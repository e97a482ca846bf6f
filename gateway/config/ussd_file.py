"""USSD menu files (`ussd_menus:`, one *.yaml per agency): a UssdMenu each, checked
whole before anything runs it.

Besides the shape of each key (unknown keys are errors), a menu is checked as a state
machine: every `next` names a state, every state can be reached from `start`, regexes
compile, validators exist, templates name only values some state collects, and every
option line fits a page even with the "more" option under it (a longer text is paginated,
an option never split). Each problem is `file:line`.
"""

import os
import re

from gateway.config.schema import (
    USSD_LANGUAGES, USSD_ROUTE_TESTS, USSD_STATE_KINDS, USSD_VALIDATORS, UssdMenu,
    UssdOption, UssdRoute, UssdState, UssdText)
from gateway.config.shared import split_http_url
from gateway.config.yamlnodes import NodeReader, line_of
from gateway.text.pages import fits_with, page_cost, page_units

VALUE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
STATE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")
MORE_KEY_RE = re.compile(r"^[0-9#*]{1,3}$")
MAX_STATES = 500
MAX_OPTIONS = 20
MAX_TEXT = 1000                 # characters of one text, before pagination
MAX_TIMEOUT_S = 5.0             # a dynamic state's timeout: well under a network step's
TRACKING = "tracking"           # the value a file state adds

MENU_KEYS = ("agency", "start", "states", "more", "invalid")
COMMON_KEYS = ("type", "text", "text_en")
KIND_KEYS = {
    "menu": ("options",),
    "input": ("save", "pattern", "validator", "error", "error_en", "next"),
    "end": (),
    "router": ("routes", "default"),
    "dynamic": ("url", "fallback", "fallback_en", "timeout_s", "save", "next"),
    "file": ("sms", "sms_en", "fields"),
}
NEEDS_TEXT = ("menu", "input", "end", "file")
OPTION_KEYS = ("text", "text_en", "next", "language")
ROUTE_KEYS = ("if", "next") + USSD_ROUTE_TESTS


def read_ussd_menus(path, agencies, errors):
    """The menus of a directory's *.yaml files (name order; subdirectories such as
    tests/ are not menus). `agencies`: the Agency records, whose ussd_code a menu uses."""
    by_id = {agency.id: agency for agency in agencies or ()}
    menus, taken = [], {}
    for file_path in menu_files(path):
        reader = NodeReader(file_path, errors)
        root = reader.compose()
        if root is None:
            continue
        menu = _read_menu(reader, root, by_id, taken)
        if menu is not None:
            menus.append(menu)
    return tuple(menus)


def menu_files(path):
    if not path or not os.path.isdir(path):
        return []
    return [os.path.join(path, name) for name in sorted(os.listdir(path))
            if name.endswith(".yaml") and not name.startswith(".")
            and os.path.isfile(os.path.join(path, name))]


def _read_menu(reader, root, agencies, taken):
    before = len(reader.errors)
    fields = reader.mapping(root, "menu", MENU_KEYS, required=("agency", "start", "states"))
    if fields is None:
        return None
    agency = None
    if "agency" in fields:
        node = fields["agency"][1]
        agency_id = reader.text(node, "agency")
        agency = agencies.get(agency_id)
        if agency_id is not None and agency is None:
            reader.fail(node, f"agency: no agency {agency_id!r} in the agencies files")
        elif agency is not None and not agency.ussd_code:
            reader.fail(node, f"agency: {agency_id!r} has no ussd_code in the agencies file")
        elif agency is not None and agency_id in taken:
            reader.fail(node, f"agency: {agency_id!r} already has a menu ({taken[agency_id]})")
        elif agency is not None:
            taken[agency_id] = f"{os.path.basename(reader.path)}:{line_of(node)}"
    more_key, more = "99", UssdText("بیشتر", "More")
    if "more" in fields:
        more_key, more = _read_more(reader, fields["more"][1], more_key, more)
    invalid = UssdText("گزینه نامعتبر است.", "Invalid choice.")
    if "invalid" in fields:
        invalid = _read_text(reader, fields["invalid"][1], None, "invalid") or invalid
    footer_line = _footer(more_key, more)
    for language in USSD_LANGUAGES:
        footer = footer_line.get(language)
        if not fits_with("1", footer):
            reader.fail(fields.get("more", (root, root))[1],
                        f"more: the \"more\" option ({page_units(footer)}) leaves no room "
                        f"on a page")
    states = {}
    if "states" in fields:
        states = _read_states(reader, fields["states"][1], footer_line)
    start = None
    if "start" in fields:
        start = reader.text(fields["start"][1], "start")
        if start is not None and states and start not in states:
            reader.fail(fields["start"][1], f"start: no state named {start!r}")
    if states and start in states:
        _check_graph(reader, states, start)
    if agency is not None and not agency.numbers:
        for name, (state, node) in states.items():
            if state.kind == "file":
                reader.fail(node, f"states.{name}: filing needs the agency's 4040 number "
                                  f"(its inbox, its SMS), and {agency.id!r} has none")
    if len(reader.errors) != before or agency is None:
        return None
    return UssdMenu(agency=agency.id, code=agency.ussd_code, path=reader.path, start=start,
                    states=tuple(state for state, _ in states.values()),
                    more_key=more_key, more=more, invalid=invalid)


def _footer(more_key, more):
    return UssdText(f"{more_key}. {more.fa}",
                    None if more.en is None else f"{more_key}. {more.en}")


def _read_more(reader, node, key, text):
    fields = reader.mapping(node, "more", ("key", "text", "text_en"))
    if not fields:
        return key, text
    if "key" in fields:
        value = reader.text(fields["key"][1], "more.key")
        if value is not None and (not MORE_KEY_RE.match(value) or value in ("0", "00")):
            reader.fail(fields["key"][1], f"more.key: 1-3 of 0-9, * and #, not 0 or 00 "
                                          f"(back and home), got {value!r}")
        elif value is not None:
            key = value
    text = _read_text_pair(reader, fields, "text", "more") or text
    return key, text


def _read_text(reader, node, node_en, what):
    fa = _one_text(reader, node, what)
    en = _one_text(reader, node_en, f"{what}_en") if node_en is not None else None
    return None if fa is None else UssdText(fa, en)


def _read_text_pair(reader, fields, key, what):
    """fields[key] and fields[key + '_en'] as one UssdText (None when key is absent)."""
    if key not in fields:
        if f"{key}_en" in fields:
            reader.fail(fields[f"{key}_en"][0], f"{what}: {key}_en without {key} "
                                                f"(Persian is the text every session has)")
        return None
    english = fields.get(f"{key}_en")
    return _read_text(reader, fields[key][1], english[1] if english else None,
                      f"{what}.{key}")


def _one_text(reader, node, what):
    value = reader.text(node, what)
    if value is None:
        return None
    value = value.strip("\n")
    if len(value) > MAX_TEXT:
        reader.fail(node, f"{what}: at most {MAX_TEXT} characters, got {len(value)}")
        return None
    try:
        value.encode("utf-16-be")
    except UnicodeEncodeError:
        reader.fail(node, f"{what}: not valid Unicode text")
        return None
    return value


def _read_states(reader, node, footer):
    """{name: (UssdState, node)} in file order."""
    from yaml.nodes import MappingNode
    if not isinstance(node, MappingNode):
        reader.fail(node, "states: expected a mapping of state names to states")
        return {}
    if len(node.value) > MAX_STATES:
        reader.fail(node, f"states: at most {MAX_STATES} states, got {len(node.value)}")
        return {}
    states = {}
    for key_node, value_node in node.value:
        name = reader.text(key_node, "states")
        if name is None:
            continue
        if not STATE_NAME_RE.match(name):
            reader.fail(key_node, f"states: state name {name!r} must be 1-40 of A-Z, a-z, "
                                  f"0-9, '_' and '-'")
            continue
        if name in states:
            reader.fail(key_node, f"states: duplicate state {name!r} "
                                  f"(first at line {states[name][0].line})")
            continue
        state = _read_state(reader, name, value_node, footer)
        if state is not None:
            states[name] = (state, value_node)
    return states


def _read_state(reader, name, node, footer):
    what = f"states.{name}"
    from yaml.nodes import MappingNode
    if not isinstance(node, MappingNode):
        reader.fail(node, f"{what}: expected a mapping")
        return None
    kind = None
    for key_node, value_node in node.value:
        if getattr(key_node, "value", None) == "type":
            kind = reader.text(value_node, f"{what}.type")
            if kind is not None and kind not in USSD_STATE_KINDS:
                reader.fail(value_node, f"{what}.type: one of {', '.join(USSD_STATE_KINDS)}, "
                                        f"got {kind!r}")
                return None
    if kind is None:
        reader.fail(node, f"{what}: missing required key 'type' "
                          f"({', '.join(USSD_STATE_KINDS)})")
        return None
    before = len(reader.errors)
    required = ("text",) if kind in NEEDS_TEXT else ()
    required += {"input": ("save", "next"), "menu": ("options",), "router": ("default",),
                 "dynamic": ("url", "fallback")}.get(kind, ())
    fields = reader.mapping(node, what, COMMON_KEYS + KIND_KEYS[kind], required=required)
    if fields is None:
        return None
    values = {"name": name, "kind": kind, "line": line_of(node)}
    values["text"] = _read_text_pair(reader, fields, "text", what)
    if kind == "menu" and "options" in fields:
        values["options"] = _read_options(reader, fields["options"][1], what, footer)
    if kind in ("input", "dynamic") and "save" in fields:
        values["save"] = _read_value_name(reader, fields["save"][1], f"{what}.save")
    if "next" in fields:
        values["next"] = reader.text(fields["next"][1], f"{what}.next")
    if kind == "input":
        if "pattern" in fields:
            values["pattern"] = _read_pattern(reader, fields["pattern"][1], f"{what}.pattern")
        if "validator" in fields:
            validator = reader.text(fields["validator"][1], f"{what}.validator")
            if validator is not None and validator not in USSD_VALIDATORS:
                reader.fail(fields["validator"][1], f"{what}.validator: one of "
                            f"{', '.join(USSD_VALIDATORS)}, got {validator!r}")
            values["validator"] = validator
        values["error"] = _read_text_pair(reader, fields, "error", what)
    if kind == "router":
        if "routes" in fields:
            values["routes"] = _read_routes(reader, fields["routes"][1], what)
        if "default" in fields:
            values["default"] = reader.text(fields["default"][1], f"{what}.default")
    if kind == "dynamic":
        if "url" in fields:
            values["url"] = _read_url(reader, fields["url"][1], f"{what}.url")
        values["fallback"] = _read_text_pair(reader, fields, "fallback", what)
        if "timeout_s" in fields:
            values["timeout_s"] = reader.number(fields["timeout_s"][1], f"{what}.timeout_s",
                                                above=0, maximum=MAX_TIMEOUT_S)
    if kind == "file":
        values["sms"] = _read_text_pair(reader, fields, "sms", what)
        if "fields" in fields:
            names = reader.texts(fields["fields"][1], f"{what}.fields", non_empty=True)
            for value, item in names or ():
                if not VALUE_NAME_RE.match(value):
                    reader.fail(item, f"{what}.fields: {value!r} is not a value name")
            values["fields"] = tuple(value for value, _ in names or ())
    if len(reader.errors) != before:
        return None
    return UssdState(**{key: value for key, value in values.items() if value is not None})


def _read_options(reader, node, what, footer):
    items = reader.sequence(node, f"{what}.options", non_empty=True)
    if items is None:
        return None
    if len(items) > MAX_OPTIONS:
        reader.fail(node, f"{what}.options: at most {MAX_OPTIONS} options, got {len(items)}")
        return None
    options = []
    for index, item in enumerate(items, 1):
        where = f"{what}.options[{index - 1}]"
        fields = reader.mapping(item, where, OPTION_KEYS, required=("text", "next"))
        if not fields or "text" not in fields or "next" not in fields:
            continue
        label = _read_text_pair(reader, fields, "text", where)
        target = reader.text(fields["next"][1], f"{where}.next")
        language = None
        if "language" in fields:
            language = reader.text(fields["language"][1], f"{where}.language")
            if language is not None and language not in USSD_LANGUAGES:
                reader.fail(fields["language"][1], f"{where}.language: one of "
                            f"{', '.join(USSD_LANGUAGES)}, got {language!r}")
        if label is None or target is None:
            continue
        for language_shown in USSD_LANGUAGES:
            line = f"{index}. {label.get(language_shown)}"
            end = footer.get(language_shown)
            if not fits_with(line, end):
                cost, limit = page_cost(line + "\n" + end)
                reader.fail(fields["text"][1], f"{where}.text: the option line with the "
                            f"\"more\" option under it is {page_units(line + chr(10) + end)}"
                            f", over the page's {limit}: it cannot fit even when paginated")
                break
        options.append(UssdOption(label=label, next=target, language=language))
    return tuple(options) if len(options) == len(items) else None


def _read_routes(reader, node, what):
    items = reader.sequence(node, f"{what}.routes", non_empty=True)
    if items is None:
        return None
    routes = []
    for index, item in enumerate(items):
        where = f"{what}.routes[{index}]"
        fields = reader.mapping(item, where, ROUTE_KEYS, required=("if", "next"))
        if not fields or "if" not in fields or "next" not in fields:
            continue
        var = reader.text(fields["if"][1], f"{where}.if")
        target = reader.text(fields["next"][1], f"{where}.next")
        tests = [key for key in USSD_ROUTE_TESTS if key in fields]
        if len(tests) != 1:
            reader.fail(item, f"{where}: needs exactly one test of "
                              f"{', '.join(USSD_ROUTE_TESTS)}")
            continue
        test = tests[0]
        value_node = fields[test][1]
        if test == "equals":
            value = reader.text(value_node, f"{where}.equals", allow_empty=True)
        elif test == "matches":
            value = _read_pattern(reader, value_node, f"{where}.matches")
        elif test == "in":
            value = tuple(v for v, _ in reader.texts(value_node, f"{where}.in",
                                                     non_empty=True) or ())
        else:
            value = reader.boolean(value_node, f"{where}.set")
        if var is None or target is None or value is None:
            continue
        if var != "language" and not VALUE_NAME_RE.match(var):
            reader.fail(fields["if"][1], f"{where}.if: {var!r} is not a value name")
            continue
        routes.append(UssdRoute(var=var, test=test, value=value, next=target))
    return tuple(routes) if len(routes) == len(items) else None


def _read_value_name(reader, node, what):
    name = reader.text(node, what)
    if name is not None and (not VALUE_NAME_RE.match(name) or name == TRACKING):
        reader.fail(node, f"{what}: {name!r} must be 1-32 of a-z, 0-9 and '_' "
                          f"(and not {TRACKING!r}, which filing adds)")
        return None
    return name


def _read_pattern(reader, node, what):
    pattern = reader.text(node, what)
    if pattern is None:
        return None
    try:
        re.compile(pattern)
    except re.error as error:
        reader.fail(node, f"{what}: bad regular expression {pattern!r}: {error}")
        return None
    return pattern


def _read_url(reader, node, what):
    url = reader.text(node, what)
    if url is None:
        return None
    if split_http_url(url) is None:
        reader.fail(node, f"{what}: expected an http:// or https:// URL, got {url!r}")
        return None
    return url


def targets(state):
    """The states `state` may go to next."""
    found = [option.next for option in state.options]
    found += [route.next for route in state.routes]
    found += [name for name in (state.next, state.default) if name]
    return found


def _check_graph(reader, states, start):
    """Unknown `next` names, states never reached from start, and template values no
    state collects."""
    collected = {state.save for state, _ in states.values() if state.save}
    for name, (state, node) in states.items():
        for target in targets(state):
            if target not in states:
                reader.fail(node, f"states.{name}: goes to {target!r}, which is no state")
        texts = [state.text, state.error, state.fallback, state.sms]
        texts += [option.label for option in state.options]
        allowed = collected | ({TRACKING} if state.kind == "file" else set())
        for text in filter(None, texts):
            for value in (text.fa, text.en):
                for used in TEMPLATE_RE.findall(value or ""):
                    if used not in allowed:
                        reader.fail(node, f"states.{name}: the template names {{{used}}}, "
                                          f"which no state collects"
                                          + (" ({tracking} is only known in a file state)"
                                             if used == TRACKING else ""))
        for value in state.fields:
            if value not in collected:
                reader.fail(node, f"states.{name}.fields: no state collects {value!r}")
        for route in state.routes:
            if route.var != "language" and route.var not in collected:
                reader.fail(node, f"states.{name}: routes on {route.var!r}, which no "
                                  f"state collects")
    seen, todo = {start}, [start]
    while todo:
        for target in targets(states[todo.pop()][0]):
            if target in states and target not in seen:
                seen.add(target)
                todo.append(target)
    for name, (state, node) in states.items():
        if name not in seen:
            reader.fail(node, f"states.{name}: unreachable from the start state {start!r}")
