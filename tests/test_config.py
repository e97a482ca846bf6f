"""Configuration loading: the shipped samples, defaults, and every rule's file:line error."""

import dataclasses
import hashlib
import os
import textwrap

import pytest

from gateway.config import (
    ConfigError, ConfigErrors, OperatorConfig, check_config, load_agencies,
    load_gateway_config, load_routing)
from gateway.config.agencies_file import DEFAULT_DAILY_PARTS, DEFAULT_RATE_PER_S
from gateway.dispatch.routing import OperatorRouter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "config", "gateway.yaml")
DEMO = os.path.join(ROOT, "gateway", "demo", "gateway.yaml")
DEMO_KEYS = {"tax": "demo-tax-key-0000000000000000",
             "judiciary": "demo-judiciary-key-000000000000",
             "post": "demo-post-key-00000000000000000"}

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64

GATEWAY = """\
http: {listen: "127.0.0.1:8080"}
agencies: agencies.yaml
routing_rules: rules/
operators:
  - name: mci
    host: 127.0.0.1
    port: 2775
    system_id: payam
    password: secret
  - name: irancell
    host: 127.0.0.1
    port: 2776
    system_id: payam
    password: secret
"""
AGENCIES = f"""\
agencies:
  - id: tax
    name: "سازمان امور مالیاتی"
    keys: ["{HASH_A}"]
    numbers: ["40401234"]
    masks: ["MALIAT"]
"""
RULES = """\
rules:
  - prefixes: ["98912"]
    operator: mci
    fallback: [irancell]
default: mci
"""


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def make_config(tmp_path, gateway=GATEWAY, agencies=AGENCIES, rules=RULES):
    """A valid three-file configuration, with any one file swapped for a broken one."""
    write(tmp_path, "agencies.yaml", agencies)
    write(tmp_path, "rules/10-rules.yaml", rules)
    return write(tmp_path, "gateway.yaml", gateway)


def errors_of(path):
    with pytest.raises(ConfigErrors) as caught:
        load_gateway_config(path)
    return caught.value.errors


def assert_single_error(path, file, line, *fragments):
    errors = errors_of(path)
    assert len(errors) == 1, "\n".join(map(str, errors))
    error = errors[0]
    assert (os.path.basename(error.file), error.line) == (file, line), str(error)
    assert str(error).startswith(f"{error.file}:{line}: ")
    for fragment in fragments:
        assert fragment in error.message, str(error)


def with_operator_line(line):
    """GATEWAY with one more line in the first operator's mapping (reported at line 10)."""
    return GATEWAY.replace("    password: secret\n", f"    password: secret\n    {line}\n", 1)


KEY_LINES = {"name": 5, "host": 6, "port": 7, "system_id": 8, "password": 9}


def with_operator_setting(line):
    """GATEWAY with `line` set in the first operator: in place, or added at line 10."""
    key = line.split(":")[0]
    if key not in KEY_LINES:
        return with_operator_line(line), 10
    lines = GATEWAY.splitlines(keepends=True)
    indent = "  - " if key == "name" else "    "
    lines[KEY_LINES[key] - 1] = f"{indent}{line}\n"
    return "".join(lines), KEY_LINES[key]


# --- shipped samples ------------------------------------------------------------------

def test_sample_config_loads_clean():
    assert check_config(SAMPLE) == []
    config = load_gateway_config(SAMPLE)
    assert [(op.name, op.port) for op in config.operators] == [
        ("mci", 2775), ("irancell", 2776), ("rightel", 2777)]
    assert config.http_listen == ("127.0.0.1", 8080)
    assert config.metrics_listen == ("127.0.0.1", 9108)
    assert config.store_path == os.path.join(ROOT, "var", "gateway.db")
    assert config.routing_rules_path == os.path.join(ROOT, "routing_rules")
    assert config.ussd_menus_path == os.path.join(ROOT, "config", "ussd")
    assert [a.id for a in config.agencies] == ["tax", "judiciary", "post"]
    assert config.routing.default == "mci"


def test_demo_config_loads_clean_and_matches_the_samples():
    assert check_config(DEMO) == []
    demo, sample = load_gateway_config(DEMO), load_gateway_config(SAMPLE)
    assert demo.agencies_path == os.path.join(ROOT, "gateway", "demo", "agencies.yaml")
    assert demo.routing_rules_path == os.path.join(ROOT, "gateway", "demo", "routing.yaml")
    assert demo.ussd_menus_path == os.path.join(ROOT, "gateway", "demo", "ussd")
    assert [dataclasses.replace(m, path="") for m in demo.ussd_menus] == \
        [dataclasses.replace(m, path="") for m in sample.ussd_menus]
    assert {op.name for op in demo.operators} == {op.name for op in sample.operators}
    assert demo.agencies == sample.agencies
    strip = [(r.prefixes, r.operator, r.fallback) for r in demo.routing.rules]
    assert strip == [(r.prefixes, r.operator, r.fallback) for r in sample.routing.rules]
    assert demo.routing.default == sample.routing.default
    # The lead's demo swaps ports and store path on the frozen value.
    moved = dataclasses.replace(demo.operators[0], port=40000)
    assert moved.port == 40000 and demo.operators[0].port == 2775


def test_sample_key_hashes_are_the_documented_demo_keys():
    for agency in load_gateway_config(SAMPLE).agencies:
        digest = hashlib.sha256(DEMO_KEYS[agency.id].encode()).hexdigest()
        assert agency.keys == ("sha256:" + digest,)


# --- values and defaults --------------------------------------------------------------

def test_omitted_keys_take_the_contract_defaults(tmp_path):
    gateway = """\
    agencies: agencies.yaml
    routing_rules: rules
    operators:
      - {name: mci, host: smsc.example, port: 2775, system_id: payam, password: pw}
    """
    agencies = f"""\
    agencies:
      - id: post
        keys: ["{HASH_A}"]
        masks: [IRANPOST]
    """
    rules = "default: mci\n"
    config = load_gateway_config(make_config(tmp_path, gateway, agencies, rules))
    assert config.operators == (OperatorConfig("mci", "smsc.example", 2775, "payam", "pw"),)
    op = config.operators[0]
    assert (op.bind, op.binds, op.window, op.tps, op.enquire_link_s, op.reconnect_s,
            op.receipts, op.short_code_ton, op.short_code_npi, op.receipt_ids) == (
        "transceiver", 1, 100, 500.0, 30.0, (1.0, 30.0), True, 3, 0, "auto")
    assert config.http_listen == ("127.0.0.1", 8080)
    assert config.metrics_listen is None
    assert config.store_path == str(tmp_path / "var" / "gateway.db")
    assert config.ussd_menus_path is None
    agency = config.agencies[0]
    assert (agency.name, agency.numbers, agency.ussd_code, agency.reply_webhook) == (
        "post", (), None, None)
    assert (agency.rate_per_s, agency.daily_parts) == (DEFAULT_RATE_PER_S, DEFAULT_DAILY_PARTS)
    assert config.routing.rules == () and config.routing.default == "mci"


def test_every_value_is_read(tmp_path):
    gateway = GATEWAY.replace('"127.0.0.1:8080"', '"[::1]:8443"') + """\
    system_type: "VMA"
    bind: transmitter+receiver
    binds: 3
    window: 250
    tps: 12.5
    enquire_link_s: 15
    reconnect_s: [0.5, 60]
    receipts: false
    receipt_ids: dec
    response_timeout_s: 10
    short_code_ton: 0
    short_code_npi: 1
metrics: {listen: "0.0.0.0:9108"}
store: {path: "/srv/payam/gateway.db"}
"""
    agencies = AGENCIES + """\
    ussd_code: "*4*0135#"
    rate_per_s: 20
    daily_parts: 5000
    reply_webhook: {url: "https://agency.example/replies", secret: "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"}
    opt_out: true
    help_text: "{name} answers on {number}"
"""
    config = load_gateway_config(make_config(tmp_path, gateway, agencies))
    op = config.operators[1]
    assert op == OperatorConfig("irancell", "127.0.0.1", 2776, "payam", "secret", "VMA",
                                "transmitter+receiver", 3, 250, 12.5, 15.0, (0.5, 60.0),
                                False, 10.0, 0, 1, receipt_ids="dec")
    assert config.http_listen == ("::1", 8443)
    assert config.metrics_listen == ("0.0.0.0", 9108)
    assert config.store_path == "/srv/payam/gateway.db"
    agency = config.agencies[0]
    assert agency.name == "سازمان امور مالیاتی"
    assert (agency.ussd_code, agency.rate_per_s, agency.daily_parts) == ("*4*0135#", 20.0, 5000)
    assert (agency.reply_webhook.url, agency.reply_webhook.secret) == (
        "https://agency.example/replies", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3")
    assert (agency.opt_out, agency.help_text) == (True, "{name} answers on {number}")
    rule = config.routing.rules[0]
    assert (rule.prefixes, rule.operator, rule.fallback) == (("98912",), "mci", ("irancell",))
    assert rule.origin == f"{tmp_path / 'rules' / '10-rules.yaml'}:2"


def test_unquoted_scalars_keep_their_written_text(tmp_path):
    gateway = GATEWAY.replace("password: secret", "password: 0123", 1)
    agencies = AGENCIES.replace('["40401234"]', "[40401234]")
    rules = RULES.replace('["98912"]', "[98912]")
    config = load_gateway_config(make_config(tmp_path, gateway, agencies, rules))
    assert config.operators[0].password == "0123"        # not YAML 1.1 octal 83
    assert config.agencies[0].numbers == ("40401234",)
    assert config.routing.rules[0].prefixes == ("98912",)


def test_agencies_directory_is_merged_in_name_order(tmp_path):
    write(tmp_path, "agencies/20-post.yaml",
          f'agencies: [{{id: post, keys: ["{HASH_B}"], masks: [IRANPOST]}}]\n')
    write(tmp_path, "agencies/10-tax.yaml", AGENCIES)
    write(tmp_path, "agencies/notes.txt", "not yaml: [")
    gateway = GATEWAY.replace("agencies: agencies.yaml", "agencies: agencies/")
    config = load_gateway_config(make_config(tmp_path, gateway))
    assert [a.id for a in config.agencies] == ["tax", "post"]
    assert load_agencies(str(tmp_path / "agencies")) == config.agencies


def test_routing_files_in_name_order_first_match_wins(tmp_path):
    write(tmp_path, "rules/20-general.yaml", 'rules: [{prefixes: ["9893"], operator: mci}]\n')
    write(tmp_path, "rules/05-ported.yaml",
          'rules: [{prefixes: ["98935"], operator: irancell}]\n')
    config = load_gateway_config(make_config(tmp_path))
    assert [r.prefixes for r in config.routing.rules] == [("98935",), ("98912",), ("9893",)]


def test_routing_may_be_a_single_file(tmp_path):
    path = write(tmp_path, "routing.yaml", RULES)
    gateway = GATEWAY.replace("routing_rules: rules/", "routing_rules: routing.yaml")
    config = load_gateway_config(make_config(tmp_path, gateway))
    assert config.routing_rules_path == path
    assert load_routing(path, {"mci", "irancell"}) == config.routing


def test_relative_paths_resolve_against_the_naming_file(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    write(tmp_path, "etc/agencies.yaml", AGENCIES)
    write(tmp_path, "routing_rules/10.yaml", RULES)
    (tmp_path / "etc" / "menus").mkdir()
    gateway = (GATEWAY.replace("rules/", "../routing_rules/")
               + "store: {path: ../var/gw.db}\nussd_menus: menus\n")
    write(tmp_path, "etc/gateway.yaml", gateway)
    monkeypatch.chdir(tmp_path / "routing_rules")      # the working directory must not matter
    config = load_gateway_config("../etc/gateway.yaml")
    assert config.path == str(conf / "gateway.yaml")
    assert config.agencies_path == str(conf / "agencies.yaml")
    assert config.routing_rules_path == str(tmp_path / "routing_rules")
    assert config.store_path == str(tmp_path / "var" / "gw.db")
    assert config.ussd_menus_path == str(conf / "menus")


# --- file-level problems --------------------------------------------------------------

def test_config_error_formats_file_and_line():
    assert str(ConfigError("a.yaml", 7, "bad")) == "a.yaml:7: bad"
    assert str(ConfigErrors([ConfigError("a.yaml", 7, "bad"), ConfigError("b", None, "x")])) \
        == "a.yaml:7: bad\nb: x"


def test_yaml_syntax_error_has_file_and_line(tmp_path):
    broken = AGENCIES.replace('masks: ["MALIAT"]', 'masks: MALIAT: 1')
    assert_single_error(make_config(tmp_path, agencies=broken), "agencies.yaml", 6,
                        "YAML syntax error", "mapping values are not allowed here")


def test_unquoted_ussd_code_is_a_yaml_error_at_its_line(tmp_path):
    broken = AGENCIES + "    ussd_code: *4*123#\n"
    assert_single_error(make_config(tmp_path, agencies=broken), "agencies.yaml", 7,
                        "YAML syntax error")


def test_empty_file_is_an_error(tmp_path):
    assert_single_error(make_config(tmp_path, rules=""), "10-rules.yaml", 1, "empty")


def test_missing_gateway_file(tmp_path):
    errors = check_config(str(tmp_path / "nope.yaml"))
    assert errors == [f"{tmp_path / 'nope.yaml'}: cannot read file: No such file or directory"]


def test_top_level_must_be_a_mapping(tmp_path):
    assert_single_error(make_config(tmp_path, gateway="- a\n- b\n"), "gateway.yaml", 1,
                        "expected a mapping, got a list")


def test_unknown_top_level_key_names_it_and_the_allowed_ones(tmp_path):
    path = make_config(tmp_path, gateway=GATEWAY + "operator: []\n")
    assert_single_error(path, "gateway.yaml", 15, "unknown key 'operator'",
                        "did you mean 'operators'?", "allowed: http, metrics, store")


def test_unknown_key_in_an_operator_reported_at_its_line(tmp_path):
    path = make_config(tmp_path, gateway=with_operator_line("windw: 10"))
    assert_single_error(path, "gateway.yaml", 10, "operators[0]: unknown key 'windw'",
                        "did you mean 'window'?", "short_code_npi")


def test_unknown_key_deep_in_an_agency_webhook(tmp_path):
    agencies = AGENCIES + """\
    reply_webhook:
      url: "http://127.0.0.1:9000/replies"
      secret: "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
      token: "t"
"""
    assert_single_error(make_config(tmp_path, agencies=agencies), "agencies.yaml", 10,
                        "agencies[0].reply_webhook: unknown key 'token'",
                        "allowed: url, secret")


def test_unknown_key_in_a_rule(tmp_path):
    rules = RULES.replace("    fallback: [irancell]", "    fallbacks: [irancell]")
    assert_single_error(make_config(tmp_path, rules=rules), "10-rules.yaml", 4,
                        "rules[0]: unknown key 'fallbacks'", "did you mean 'fallback'?")


def test_duplicate_key_is_an_error(tmp_path):
    path = make_config(tmp_path, gateway=with_operator_line("port: 2780"))
    assert_single_error(path, "gateway.yaml", 10, "duplicate key 'port'", "first at line 7")


def test_merge_keys_are_refused_clearly(tmp_path):
    path = make_config(tmp_path, gateway=with_operator_line("<<: {window: 5}"))
    assert_single_error(path, "gateway.yaml", 10, "merge keys")


@pytest.mark.parametrize("key", ["agencies", "routing_rules", "operators"])
def test_gateway_required_keys(tmp_path, key):
    lines = GATEWAY.splitlines(keepends=True)
    if key == "operators":
        gateway = "".join(lines[:3])
    else:
        gateway = "".join(line for line in lines if not line.startswith(key))
    errors = errors_of(make_config(tmp_path, gateway=gateway))
    assert [(e.line, e.message) for e in errors if "missing" in e.message] == [
        (1, f"gateway config: missing required key {key!r}")]


# --- gateway.yaml values --------------------------------------------------------------

@pytest.mark.parametrize("listen, fragment", [
    ("8080", "host:port"),
    (":8080", "host:port"),
    ("::1:8080", "host:port"),
    ("[::1]8080", "host:port"),
    ("localhost:http", "host:port"),
    ("127.0.0.1:0", "between 1 and 65535"),
    ("127.0.0.1:65536", "between 1 and 65535"),
])
def test_bad_listen_addresses(tmp_path, listen, fragment):
    gateway = GATEWAY.replace('"127.0.0.1:8080"', f'"{listen}"')
    assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", 1,
                        "http.listen", fragment)


def test_listen_section_must_name_listen(tmp_path):
    gateway = GATEWAY + 'metrics: {}\n'
    assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", 15,
                        "metrics: missing required key 'listen'")


@pytest.mark.parametrize("key", ["agencies", "routing_rules"])
def test_named_files_must_exist(tmp_path, key):
    line = {"agencies": 2, "routing_rules": 3}[key]
    gateway = GATEWAY.replace(f"{key}: ", f"{key}: missing-")
    assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", line,
                        f"{key}: {tmp_path / 'missing-'}", "does not exist")


def test_explicit_ussd_menus_must_be_an_existing_directory(tmp_path):
    path = make_config(tmp_path, gateway=GATEWAY + "ussd_menus: ussd/\n")
    assert_single_error(path, "gateway.yaml", 15, "ussd_menus", "does not exist")
    (tmp_path / "ussd").write_text("a file")
    assert_single_error(path, "gateway.yaml", 15, "ussd_menus", "is not a directory")


def test_store_path_may_not_be_a_directory(tmp_path):
    (tmp_path / "var").mkdir()
    path = make_config(tmp_path, gateway=GATEWAY + "store: {path: var}\n")
    assert_single_error(path, "gateway.yaml", 15, "store.path", "is a directory")


def test_operators_must_be_a_non_empty_list(tmp_path):
    gateway = GATEWAY.split("operators:")[0] + "operators: []\n"
    errors = errors_of(make_config(tmp_path, gateway=gateway))
    assert str(errors[0]).endswith("gateway.yaml:4: operators: must not be empty")
    # rules name mci and irancell, which no longer exist: reported too, at their lines
    assert {(os.path.basename(e.file), e.line) for e in errors[1:]} == {
        ("10-rules.yaml", 3), ("10-rules.yaml", 4), ("10-rules.yaml", 5)}


@pytest.mark.parametrize("key", ["name", "host", "port", "system_id", "password"])
def test_operator_required_keys(tmp_path, key):
    gateway = GATEWAY.replace(f" {key}: ", f" x_{key}: ", 1)
    errors = errors_of(make_config(tmp_path, gateway=gateway))
    assert any(e.line == 5 and e.message == f"operators[0]: missing required key {key!r}"
               for e in errors), "\n".join(map(str, errors))


@pytest.mark.parametrize("line, fragment", [
    ("port: 0", "operators[0].port: must be between 1 and 65535, got 0"),
    ("port: '2775'", "operators[0].port: expected an integer, got a string ('2775')"),
    ("binds: 0", "operators[0].binds: must be between 1 and 64, got 0"),
    ("window: 0", "operators[0].window: must be between 1 and 10000, got 0"),
    ("window: 10001", "operators[0].window: must be between 1 and 10000, got 10001"),
    ("window: 2.5", "operators[0].window: expected an integer, got a number ('2.5')"),
    ("tps: 0", "operators[0].tps: must be greater than 0, got 0"),
    ("tps: -5", "operators[0].tps: must be greater than 0, got -5"),
    ("tps: .inf", "operators[0].tps: must be a finite number"),
    ("tps: fast", "operators[0].tps: expected a number, got a string ('fast')"),
    ("enquire_link_s: 0", "operators[0].enquire_link_s: must be greater than 0"),
    ("response_timeout_s: 0", "operators[0].response_timeout_s: must be greater than 0"),
    ("reconnect_s: [30, 1]", "operators[0].reconnect_s: from (30) must not exceed to (1)"),
    ("reconnect_s: [1]", "operators[0].reconnect_s: expected two numbers [from, to]"),
    ("reconnect_s: 5", "operators[0].reconnect_s: expected a list"),
    ("reconnect_s: [0, 5]", "operators[0].reconnect_s[0]: must be greater than 0"),
    ("bind: receiver", "operators[0].bind: must be one of transceiver, transmitter+receiver"),
    ("receipts: 1", "operators[0].receipts: expected true or false, got an integer"),
    ("receipt_ids: decimal", "operators[0].receipt_ids: must be one of auto, raw, dec, hex"),
    ("short_code_ton: 7", "operators[0].short_code_ton: must be between 0 and 6"),
    ("short_code_npi: 2", "operators[0].short_code_npi: not an SMPP NPI value"),
    ("system_type: ABCDEFGHIJKLM", "operators[0].system_type: SMPP allows at most 12"),
    ("name: MCI", "operators[0].name: 'MCI' must be 1-32 of a-z, 0-9"),
    ("host: [a, b]", "operators[0].host: expected a string, got a list"),
])
def test_operator_value_rules(tmp_path, line, fragment):
    gateway, line_no = with_operator_setting(line)
    errors = errors_of(make_config(tmp_path, gateway=gateway))
    mine = [e for e in errors if "operators[0]" in e.message]
    assert len(mine) == 1, "\n".join(map(str, errors))
    assert mine[0].line == line_no and fragment in mine[0].message, str(mine[0])


def test_password_longer_than_smpp_allows(tmp_path):
    gateway = GATEWAY.replace("password: secret", "password: 123456789", 1)
    assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", 9,
                        "operators[0].password: SMPP allows at most 8 characters, got 9")


def test_duplicate_operator_names(tmp_path):
    gateway = GATEWAY.replace("name: irancell", "name: mci")
    rules = RULES.replace("    fallback: [irancell]\n", "")
    assert_single_error(make_config(tmp_path, gateway=gateway, rules=rules), "gateway.yaml", 10,
                        "operators[1]: duplicate operator name 'mci' (first at line 5)")


# --- agencies -------------------------------------------------------------------------

def agency_error(tmp_path, agencies, line, *fragments):
    assert_single_error(make_config(tmp_path, agencies=agencies), "agencies.yaml", line,
                        *fragments)


def test_agency_required_keys(tmp_path):
    agencies = AGENCIES.replace("  - id: tax\n    name", "  - name")
    agency_error(tmp_path, agencies, 2, "agencies[0]: missing required key 'id'")
    agencies = AGENCIES.replace(f'    keys: ["{HASH_A}"]\n', "")
    agency_error(tmp_path, agencies, 2, "agencies[0]: missing required key 'keys'")
    agencies = AGENCIES.replace('    numbers: ["40401234"]\n', "").replace(
        '    masks: ["MALIAT"]\n', "")
    agency_error(tmp_path, agencies, 2, "needs at least one sender")


def test_agencies_file_shape(tmp_path):
    agency_error(tmp_path, "agencies: []\n", 1, "agencies: must not be empty")
    errors = errors_of(make_config(tmp_path, agencies="agency: []\n"))
    assert [(e.line, e.message) for e in errors] == [
        (1, "agencies file: unknown key 'agency' (did you mean 'agencies'?); allowed: agencies"),
        (1, "agencies file: missing required key 'agencies'")]


@pytest.mark.parametrize("agency_id", ["Tax", "tax office", "a" * 33, "'ماليات'"])
def test_agency_id_shape(tmp_path, agency_id):
    agency_error(tmp_path, AGENCIES.replace("id: tax", f"id: {agency_id}"), 2,
                 "agencies[0].id:", "must be 1-32 of a-z, 0-9")


@pytest.mark.parametrize("key, fragment", [
    ("[]", "agencies[0].keys: must not be empty"),
    ('"sha256:abc"', "agencies[0].keys: expected a list"),
    ('["sha256:abc"]', "agencies[0].keys[0]: expected 'sha256:' and 64 lowercase hex"),
    (f'["{HASH_A.upper()}"]', "agencies[0].keys[0]: expected 'sha256:'"),
    (f'["{HASH_A.replace("sha256:", "md5:")}"]', "agencies[0].keys[0]: expected 'sha256:'"),
])
def test_agency_keys_shape(tmp_path, key, fragment):
    agency_error(tmp_path, AGENCIES.replace(f'["{HASH_A}"]', key), 4, fragment)


@pytest.mark.parametrize("number", ["50401234", "4040", "4040" + "1" * 17, "4040-123",
                                    "+40401234"])
def test_agency_numbers_shape(tmp_path, number):
    agency_error(tmp_path, AGENCIES.replace("40401234", number), 5,
                 "agencies[0].numbers[0]: expected 4040 followed by 1-16 digits")


@pytest.mark.parametrize("mask, fragment", [
    ("MA", "3-11 ASCII letters and digits"),
    ("MALIATIRAN12", "3-11 ASCII letters and digits"),
    ("MALI AT", "3-11 ASCII letters and digits"),
    ("مالیات", "3-11 ASCII letters and digits"),
    ("12345", "needs at least one letter"),
])
def test_agency_masks_shape(tmp_path, mask, fragment):
    agency_error(tmp_path, AGENCIES.replace("MALIAT", mask), 6, "agencies[0].masks", fragment)


@pytest.mark.parametrize("code", ["*4*#", "*5*123#", "*4*12a#", "*4*123", "4*123#"])
def test_agency_ussd_code_shape(tmp_path, code):
    agency_error(tmp_path, AGENCIES + f'    ussd_code: "{code}"\n', 7,
                 "agencies[0].ussd_code: expected a code under *4")


SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"      # base64 of 24 bytes


@pytest.mark.parametrize("line, fragment", [
    ("rate_per_s: 0", "agencies[0].rate_per_s: must be greater than 0"),
    ("rate_per_s: many", "agencies[0].rate_per_s: expected a number"),
    ("daily_parts: 0", "agencies[0].daily_parts: must be at least 1, got 0"),
    ("daily_parts: 1.5", "agencies[0].daily_parts: expected an integer"),
    (f'reply_webhook: {{url: "ftp://x/y", secret: {SECRET}}}',
     "reply_webhook.url: expected an http://"),
    (f'reply_webhook: {{url: "http://", secret: {SECRET}}}',
     "reply_webhook.url: expected an http://"),
    ('reply_webhook: {url: "http://a/b"}', "reply_webhook: missing required key 'secret'"),
    ('reply_webhook: {url: "http://a/b", secret: "s3cret"}',
     'reply_webhook.secret: expected "whsec_" followed by the base64 of at least 24'),
    ('reply_webhook: {url: "http://a/b", secret: "whsec_c2hvcnQ="}',   # 5 bytes
     'reply_webhook.secret: expected "whsec_"'),
    ('reply_webhook: {url: "http://a/b", secret: "whsec_not base64!!"}',
     'reply_webhook.secret: expected "whsec_"'),
    ("opt_out: sometimes", "agencies[0].opt_out: expected true or false"),
    ('help_text: "{name} {nmber}"', "agencies[0].help_text: only {name} and {number}"),
    ("reply_webhook: http://a/b", "reply_webhook: expected a mapping"),
])
def test_agency_value_rules(tmp_path, line, fragment):
    agency_error(tmp_path, AGENCIES + f"    {line}\n", 7, fragment)


def test_agency_name_must_not_be_empty(tmp_path):
    agency_error(tmp_path, AGENCIES.replace('"سازمان امور مالیاتی"', "''"), 3,
                 "agencies[0].name: must not be empty")


SECOND_AGENCY = """\
  - id: post
    keys: ["{key}"]
    numbers: ["{number}"]
    masks: ["{mask}"]
"""


@pytest.mark.parametrize("field, kwargs, line, fragment", [
    ("id", dict(key=HASH_B, number="40401111", mask="IRANPOST"), 7,
     "agencies[1].id: duplicate agency id 'tax' (first at agencies.yaml:2)"),
    ("key", dict(key=HASH_A, number="40401111", mask="IRANPOST"), 8,
     "agencies[1].keys[0]: key '" + HASH_A + "' already belongs to agency 'tax'"),
    ("number", dict(key=HASH_B, number="40401234", mask="IRANPOST"), 9,
     "agencies[1].numbers[0]: number '40401234' already belongs to agency 'tax' "
     "(agencies.yaml:5)"),
    ("mask", dict(key=HASH_B, number="40401111", mask="Maliat"), 10,
     "agencies[1].masks[0]: mask 'Maliat' already belongs to agency 'tax' (agencies.yaml:6)"),
])
def test_agency_values_are_unique_across_agencies(tmp_path, field, kwargs, line, fragment):
    second = SECOND_AGENCY.format(**kwargs)
    if field == "id":
        second = second.replace("id: post", "id: tax")
    agency_error(tmp_path, AGENCIES + second, line, fragment)


def test_ussd_codes_and_numbers_are_unique_across_files(tmp_path):
    write(tmp_path, "agencies/a.yaml", AGENCIES + '    ussd_code: "*4*0135#"\n')
    write(tmp_path, "agencies/b.yaml", SECOND_AGENCY.format(
        key=HASH_B, number="40401111", mask="ADLIRAN").replace("  - ", "agencies:\n  - ", 1)
        + '    ussd_code: "*4*0135#"\n')
    with pytest.raises(ConfigErrors) as caught:
        load_agencies(str(tmp_path / "agencies"))
    assert [str(e) for e in caught.value.errors] == [
        f"{tmp_path / 'agencies' / 'b.yaml'}:6: agencies[0].ussd_code: USSD code '*4*0135#' "
        f"already belongs to agency 'tax' (a.yaml:7)"]


def test_value_listed_twice_in_one_agency(tmp_path):
    agencies = AGENCIES.replace('["MALIAT"]', '["MALIAT", "maliat"]')
    agency_error(tmp_path, agencies, 6, "mask 'maliat' is listed twice")


def test_load_agencies_reports_a_missing_path(tmp_path):
    with pytest.raises(ConfigErrors) as caught:
        load_agencies(str(tmp_path / "gone.yaml"))
    assert [str(e) for e in caught.value.errors] == [f"{tmp_path / 'gone.yaml'}: does not exist"]


def test_empty_agencies_directory(tmp_path):
    (tmp_path / "agencies").mkdir()
    with pytest.raises(ConfigErrors) as caught:
        load_agencies(str(tmp_path / "agencies"))
    assert "no *.yaml files" in str(caught.value)


# --- routing rules --------------------------------------------------------------------

def rules_error(tmp_path, rules, line, *fragments):
    assert_single_error(make_config(tmp_path, rules=rules), "10-rules.yaml", line, *fragments)


def test_rule_names_an_unknown_operator(tmp_path):
    rules_error(tmp_path, RULES.replace("operator: mci", "operator: rightel"), 3,
                "rules[0].operator: no operator named 'rightel' in gateway.yaml",
                "operators: irancell, mci")


def test_fallback_names_an_unknown_operator(tmp_path):
    rules_error(tmp_path, RULES.replace("[irancell]", "[irancell, rightel]"), 4,
                "rules[0].fallback[1]: no operator named 'rightel'")


def test_fallback_repeats_a_candidate(tmp_path):
    rules_error(tmp_path, RULES.replace("[irancell]", "[mci]"), 4,
                "rules[0].fallback[0]: 'mci' is already a candidate")


def test_default_names_an_unknown_operator(tmp_path):
    rules_error(tmp_path, RULES.replace("default: mci", "default: tci"), 5,
                "default: no operator named 'tci'")


def test_only_one_file_may_set_default(tmp_path):
    write(tmp_path, "rules/20-more.yaml", "rules: []\ndefault: irancell\n")
    assert_single_error(make_config(tmp_path), "20-more.yaml", 2,
                        "default: already set at", "10-rules.yaml:5")


@pytest.mark.parametrize("prefix", ["+98912", "0912", "912", "98a12", "9", "98" + "1" * 11])
def test_prefix_shape(tmp_path, prefix):
    rules_error(tmp_path, RULES.replace('"98912"', f'"{prefix}"'), 2,
                "rules[0].prefixes[0]: expected digits in international form starting with 98")


def test_rule_required_keys_and_shapes(tmp_path):
    rules_error(tmp_path, RULES.replace("    operator: mci\n", ""), 2,
                "rules[0]: missing required key 'operator'")
    rules_error(tmp_path, RULES.replace('["98912"]', "[]"), 2,
                "rules[0].prefixes: must not be empty")
    rules_error(tmp_path, "rules: {}\n", 1, "rules: expected a list")
    rules_error(tmp_path, "{}\n", 1, "expected 'rules' and/or 'default'")


def test_a_rule_that_can_never_match_loads_with_a_warning(tmp_path, caplog):
    rules = RULES.replace("default: mci", '  - prefixes: ["989123", "98913"]\n'
                                          "    operator: irancell\ndefault: mci")
    with caplog.at_level("WARNING", logger="payam.config"):
        config = load_gateway_config(make_config(tmp_path, rules=rules))
    first, second = config.routing.rules
    assert second.prefixes == ("989123", "98913") and second.operator == "irancell"
    assert OperatorRouter(config.routing).candidates("989123456789")[0] == "mci"   # first wins
    (warning,) = caplog.messages
    assert "10-rules.yaml:5: warning: rules[1].prefixes[0]: 989123 can never match" in warning
    assert "10-rules.yaml:2 already takes it" in warning


def test_load_routing_standalone_checks_operator_names(tmp_path):
    path = write(tmp_path, "rules.yaml", RULES)
    assert load_routing(path, ["mci", "irancell"]).default == "mci"
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path, ["mci"])
    assert [e.line for e in caught.value.errors] == [4]


# --- many problems at once ------------------------------------------------------------

def test_every_problem_of_a_load_is_reported_in_reading_order(tmp_path):
    gateway = with_operator_line("window: 0").replace("port: 2776", "port: 99999")
    agencies = AGENCIES.replace("40401234", "1234").replace("MALIAT", "M")
    rules = RULES.replace('"98912"', '"0912"').replace("default: mci", "default: tci")
    lines = check_config(make_config(tmp_path, gateway, agencies, rules))
    gw, ag, ru = (str(tmp_path / name) for name in
                  ("gateway.yaml", "agencies.yaml", "rules/10-rules.yaml"))
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{gw}:10", f"{gw}:13", f"{ag}:5", f"{ag}:6", f"{ru}:2", f"{ru}:5"]


# --- retention ------------------------------------------------------------------------

def test_retention_defaults_when_left_out(tmp_path):
    from gateway.config.schema import Retention
    retention = load_gateway_config(make_config(tmp_path)).retention
    assert retention == Retention()
    assert (retention.messages, retention.audit, retention.receipts, retention.inbound,
            retention.inbox) == (30, 365, 3, 30, 30)


def test_retention_days_per_kind(tmp_path):
    gateway = GATEWAY + "retention:\n  messages: 7\n  audit: 730\n  receipts: 0.5\n"
    retention = load_gateway_config(make_config(tmp_path, gateway)).retention
    assert (retention.messages, retention.audit, retention.receipts) == (7, 730, 0.5)
    assert retention.inbound == 30 and retention.inbox == 30        # defaults kept


@pytest.mark.parametrize("setting, line, fragment", [
    ("  messages: 0", 16, "retention.messages: must be greater than 0"),
    ("  audit: forever", 16, "retention.audit: expected a number"),
    ("  inbond: 30", 16, "inbond"),
    ("  inbox: 40000", 16, "retention.inbox"),
])
def test_retention_errors_name_file_and_line(tmp_path, setting, line, fragment):
    gateway = GATEWAY + "retention:\n" + setting + "\n"
    assert_single_error(make_config(tmp_path, gateway), "gateway.yaml", line, fragment)


def test_retention_must_be_a_mapping(tmp_path):
    gateway = GATEWAY + "retention: 30\n"
    assert_single_error(make_config(tmp_path, gateway), "gateway.yaml", 15, "retention")

def test_max_unknown_outcomes_is_read_and_bounded(tmp_path):
    config = load_gateway_config(make_config(tmp_path, with_operator_line(
        "max_unknown_outcomes: 5")))
    assert config.operators[0].max_unknown_outcomes == 5
    assert OperatorConfig("x", "h", 1, "s", "p").max_unknown_outcomes == 3
    gateway, line_no = with_operator_setting("max_unknown_outcomes: 0")
    (error,) = [e for e in errors_of(make_config(tmp_path, gateway=gateway))
                if "operators[0]" in e.message]
    assert error.line == line_no and "max_unknown_outcomes: must be between 1 and 100" \
        in error.message


def test_http_max_connections_defaults_and_is_checked(tmp_path):
    config = load_gateway_config(make_config(tmp_path))
    assert config.http_max_connections == 1024
    gateway = GATEWAY.replace('http: {listen: "127.0.0.1:8080"}',
                              'http: {listen: "127.0.0.1:8080", max_connections: 50}')
    assert load_gateway_config(make_config(tmp_path, gateway=gateway)).http_max_connections == 50
    gateway = GATEWAY.replace('http: {listen: "127.0.0.1:8080"}',
                              'http: {listen: "127.0.0.1:8080", max_connections: 0}')
    assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", 1,
                        "http.max_connections")


def test_http_workers_defaults_to_auto_and_is_checked(tmp_path):
    from gateway.procs.supervisor import workers_for
    config = load_gateway_config(make_config(tmp_path))
    assert config.http_workers == "auto"
    assert workers_for("auto", cpus=2) == 1 and workers_for("auto", cpus=1) == 0
    assert workers_for("auto", cpus=8) == 7
    for text, value in (("0", 0), ("3", 3), ("auto", "auto")):
        gateway = GATEWAY.replace('http: {listen: "127.0.0.1:8080"}',
                                  f'http: {{listen: "127.0.0.1:8080", workers: {text}}}')
        assert load_gateway_config(make_config(tmp_path, gateway=gateway)).http_workers == value
    for bad in ("many", "-1", "65"):
        gateway = GATEWAY.replace('http: {listen: "127.0.0.1:8080"}',
                                  f'http: {{listen: "127.0.0.1:8080", workers: {bad}}}')
        assert_single_error(make_config(tmp_path, gateway=gateway), "gateway.yaml", 1,
                            "http.workers")
