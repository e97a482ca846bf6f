"""USSD menu files: what check-config catches, with file:line."""

import textwrap

import pytest

from gateway.config.agencies_file import read_agencies
from gateway.config.ussd_file import read_ussd_menus
from gateway.config.yamlnodes import ConfigErrors
from ussd_loopback import REPO

AGENCIES = read_agencies(str(REPO / "config" / "agencies.yaml"), [])


def load(tmp_path, text, name="menu.yaml"):
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    errors = []
    menus = read_ussd_menus(str(tmp_path), AGENCIES, errors)
    return menus, [str(error).replace(str(tmp_path) + "/", "") for error in errors]


GOOD = """\
    agency: judiciary
    start: home
    states:
      home:
        type: menu
        text: "خانه"
        options:
          - {text: "یک", next: ask}
      ask:
        type: input
        text: "کد ملی؟"
        save: national_id
        validator: national_id
        next: bye
      bye:
        type: end
        text: "ممنون {national_id}"
"""


def test_a_good_menu_loads_with_the_agencys_code(tmp_path):
    (menu,), errors = load(tmp_path, GOOD)
    assert errors == []
    assert (menu.agency, menu.code, menu.start) == ("judiciary", "*4*0135#", "home")


def test_the_sample_menus_load():
    errors = []
    menus = read_ussd_menus(str(REPO / "config" / "ussd"), AGENCIES, errors)
    assert errors == [] and {m.agency for m in menus} >= {"judiciary"}


@pytest.mark.parametrize("change, expected", [
    (("next: bye", "next: nowhere"), "menu.yaml:10: states.ask: goes to 'nowhere', which is no state"),
    (("validator: national_id", "validator: shoe_size"), "menu.yaml:13: states.ask.validator: one of"),
    (("validator: national_id", "pattern: '[0-9'"), "menu.yaml:13: states.ask.pattern: bad regular expression"),
    (("{national_id}", "{postcode}"), "menu.yaml:16: states.bye: the template names {postcode}, which no state collects"),
    (("        save: national_id\n", "        save: national_id\n        colour: red\n"), "menu.yaml:13: states.ask: unknown key 'colour'"),
    (("agency: judiciary", "agency: customs"), "menu.yaml:1: agency: no agency 'customs'"),
    (("start: home", "start: hom"), "menu.yaml:2: start: no state named 'hom'"),
])
def test_mistakes_are_named_with_file_and_line(tmp_path, change, expected):
    old, new = change
    menus, errors = load(tmp_path, GOOD.replace(old, new, 1))
    assert menus == ()
    assert any(error.startswith(expected) for error in errors), errors


def test_an_unreachable_state_is_an_error(tmp_path):
    text = textwrap.dedent(GOOD) + "  orphan:\n    type: end\n    text: x\n"
    _, errors = load(tmp_path, text)
    assert "menu.yaml:19: states.orphan: unreachable from the start state 'home'" in errors


def test_an_option_that_cannot_fit_a_page_even_paginated(tmp_path):
    long_label = "گزینه" * 20          # 100 UCS2 characters: more than a page
    _, errors = load(tmp_path, GOOD.replace('"یک"', f'"{long_label}"'))
    assert any("cannot fit even when paginated" in e and e.startswith("menu.yaml:8:")
               for e in errors), errors


def test_a_long_text_is_fine_it_is_paginated(tmp_path):
    _, errors = load(tmp_path, GOOD.replace('"خانه"', '"' + "خانه " * 80 + '"'))
    assert errors == []


def test_an_agency_without_a_ussd_code_has_no_menu(tmp_path):
    import dataclasses
    agencies = [dataclasses.replace(a, ussd_code=None) if a.id == "judiciary" else a
                for a in AGENCIES]
    (tmp_path / "m.yaml").write_text(textwrap.dedent(GOOD), encoding="utf-8")
    errors = []
    read_ussd_menus(str(tmp_path), agencies, errors)
    assert [e.line for e in errors] == [1] and "has no ussd_code" in str(errors[0])


def test_two_menus_for_one_agency(tmp_path):
    load(tmp_path, GOOD, "a.yaml")
    _, errors = load(tmp_path, GOOD, "b.yaml")
    assert any("b.yaml:1: agency: 'judiciary' already has a menu (a.yaml:1)" in e
               for e in errors), errors


def test_check_config_names_menu_errors(tmp_path):
    from gateway.config.load import check_config
    from ussd_loopback import write_gateway
    path = write_gateway(tmp_path, 2775, {"bad.yaml": GOOD.replace("next: bye", "next: x")})
    problems = check_config(path)
    assert any("bad.yaml:10: states.ask: goes to 'x'" in p for p in problems), problems


def test_operator_ussd_settings_are_read_and_checked(tmp_path):
    from gateway.config.load import load_gateway_config
    from ussd_loopback import write_gateway
    path = write_gateway(tmp_path, 2775, {}, operator_extra={"ussd": {
        "new_ops": [1], "continue_ops": [12], "dial_field": "destination_addr",
        "answer_style": "end_bit"}})
    (operator,) = load_gateway_config(path).operators
    assert operator.ussd.continue_ops == (12,)
    assert operator.ussd.dial_field == "destination_addr"
    path = write_gateway(tmp_path, 2775, {}, operator_extra={"ussd": {
        "new_ops": [1], "continue_ops": [1], "dial_fields": "x"}})
    with pytest.raises(ConfigErrors) as problems:
        load_gateway_config(path)
    text = str(problems.value)
    assert "unknown key 'dial_fields'" in text


def test_the_demos_embedded_menus_are_the_sample_menus():
    for name in ("judiciary.yaml", "tax.yaml", "post.yaml"):
        assert (REPO / "gateway" / "demo" / "ussd" / name).read_bytes() == \
            (REPO / "config" / "ussd" / name).read_bytes(), name


def test_filing_needs_an_agency_with_a_4040_number(tmp_path):
    import dataclasses
    agencies = [dataclasses.replace(a, numbers=()) if a.id == "judiciary" else a
                for a in AGENCIES]
    text = textwrap.dedent(GOOD).replace("type: end", "type: file")
    (tmp_path / "m.yaml").write_text(text.replace("{national_id}", "{tracking}"),
                                     encoding="utf-8")
    errors = []
    read_ussd_menus(str(tmp_path), agencies, errors)
    assert [str(e).split("m.yaml:")[1] for e in errors] == [
        "16: states.bye: filing needs the agency's 4040 number (its inbox, its SMS), "
        "and 'judiciary' has none"]
