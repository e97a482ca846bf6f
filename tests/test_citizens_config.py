"""apps.yaml, gateway.yaml `directory:` and the directory file: what loads, and each
problem reported as file:line without repeating a national ID or number."""

import dataclasses
import hashlib
import os

import pytest

from gateway.citizens.directory import FileDirectory, confirms
from gateway.config import ConfigErrors, load_gateway_config
from gateway.national_id import InvalidNationalId, is_national_id, normalize_national_id
from tests.test_config import AGENCIES, GATEWAY, HASH_A, ROOT, make_config, write

SAMPLE = os.path.join(ROOT, "config", "gateway.yaml")
DEMO = os.path.join(ROOT, "gateway", "demo", "gateway.yaml")
DEMO_APP_KEYS = {"dolat-hamrah": "demo-dolat-hamrah-key-00000000000",
                 "messenger": "demo-messenger-key-000000000000000"}
HASH_C = "sha256:" + "c" * 64


def errors_of(path):
    with pytest.raises(ConfigErrors) as caught:
        load_gateway_config(path)
    return [(os.path.basename(e.file), e.line, e.message) for e in caught.value.errors]


def national_config(tmp_path, apps=None, directory=None, setting="{path: directory.yaml}"):
    gateway = GATEWAY
    if apps is not None:
        write(tmp_path, "apps.yaml", apps)
        gateway += "apps: apps.yaml\n"
    if directory is not None:
        write(tmp_path, "directory.yaml", directory)
    if setting is not None and (directory is not None or "url" in setting):
        gateway += f"directory: {setting}\n"
    return make_config(tmp_path, gateway=gateway, agencies=AGENCIES)


# --- national IDs -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0012345679", "1234567891", "۰۰۱۲۳۴۵۶۷۹", " 4455667784 "])
def test_valid_national_ids_normalise_to_ascii(value):
    assert normalize_national_id(value) == normalize_national_id(value.strip()) \
        and is_national_id(value) and normalize_national_id(value).isascii()


@pytest.mark.parametrize("value, reason", [
    ("0012345678", "check digit"), ("001234567", "10 digits"), ("00123456790", "10 digits"),
    ("1111111111", "equal digits"), ("00123-4567", "10 digits"), (12345679, "string"),
    ("", "10 digits"), ("x" * 100, "too long"), ("٠٠١٢٣٤٥٦٧٨", "check digit")])
def test_invalid_national_ids_say_why_without_the_value(value, reason):
    with pytest.raises(InvalidNationalId) as caught:
        normalize_national_id(value)
    assert reason in caught.value.reason
    assert not isinstance(value, str) or not value or value not in str(caught.value)


def test_every_check_digit_but_one_is_refused():
    valid = [d for d in range(10) if is_national_id("001234567" + str(d))]
    assert valid == [9]


# --- samples -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [SAMPLE, DEMO])
def test_samples_name_apps_and_a_directory_of_valid_citizens(path):
    config = load_gateway_config(path)
    assert {app.id for app in config.apps} == set(DEMO_APP_KEYS)
    for app in config.apps:
        assert app.keys == ("sha256:" + hashlib.sha256(
            DEMO_APP_KEYS[app.id].encode()).hexdigest(),)
    assert len(config.directory.citizens) >= 3
    assert all(is_national_id(c.national_id) for c in config.directory.citizens)
    agency_keys = {key for agency in config.agencies for key in agency.keys}
    assert not agency_keys & {key for app in config.apps for key in app.keys}


def test_demo_and_sample_directories_are_the_same():
    assert load_gateway_config(DEMO).directory.citizens == \
        load_gateway_config(SAMPLE).directory.citizens


# --- apps.yaml --------------------------------------------------------------------------

def test_apps_load_with_their_keys(tmp_path):
    path = national_config(tmp_path, apps=f"""\
        apps:
          - id: dolat-hamrah
            name: "دولت همراه"
            keys: ["{HASH_C}"]
        """)
    config = load_gateway_config(path)
    assert [(a.id, a.keys) for a in config.apps] == [("dolat-hamrah", (HASH_C,))]
    assert config.apps_path == str(tmp_path / "apps.yaml")
    assert config.apps[0].rate_per_s == 50.0          # the default request rate


def test_an_app_may_have_its_own_request_rate(tmp_path):
    path = national_config(tmp_path, apps=f"apps:\n  - {{id: a, name: x, keys: [\"{HASH_C}\"],"
                                          " rate_per_s: 5}\n")
    assert [app.rate_per_s for app in load_gateway_config(path).apps] == [5.0]


def test_an_app_may_not_hold_an_agency_key(tmp_path):
    path = national_config(tmp_path, apps=f"""\
        apps:
          - id: app
            name: "x"
            keys: ["{HASH_A}"]
        """)
    [(file, line, message)] = errors_of(path)
    assert (file, line) == ("apps.yaml", 4) and "agency 'tax'" in message


@pytest.mark.parametrize("body, line, fragment", [
    ("apps:\n  - id: a\n    name: x\n    keys: [\"sha256:abc\"]\n", 4, "64 lowercase hex"),
    ("apps:\n  - id: a\n    name: x\n", 2, "missing required key 'keys'"),
    ("apps:\n  - {id: a, name: x, keys: [\"%s\"]}\n  - {id: a, name: y, keys: [\"%s\"]}\n"
     % (HASH_C, "sha256:" + "d" * 64), 3, "listed twice"),
    ("apps:\n  - {id: a, name: x, keys: [\"%s\"]}\n  - {id: b, name: y, keys: [\"%s\"]}\n"
     % (HASH_C, HASH_C), 3, "already used"),
    ("apps:\n  - {id: a, name: x, keys: [\"%s\"], secret: 1}\n" % HASH_C, 2, "unknown key"),
    ("apps:\n  - {id: a, name: x, keys: [\"%s\"], rate_per_s: 0}\n" % HASH_C, 2,
     "greater than 0"),
])
def test_apps_file_errors_name_file_and_line(tmp_path, body, line, fragment):
    path = national_config(tmp_path, apps=body)
    [(file, at, message)] = errors_of(path)
    assert (file, at) == ("apps.yaml", line) and fragment in message, message


# --- directory --------------------------------------------------------------------------

CITIZENS = """\
- {national_id: "0012345679", msisdn: "09121234567", email: "a@example.ir"}
- {national_id: "۱۲۳۴۵۶۷۸۹۱", msisdn: "+989351234567"}
"""


def test_directory_file_loads_normalised_citizens(tmp_path):
    config = load_gateway_config(national_config(tmp_path, directory=CITIZENS))
    assert [(c.national_id, c.msisdn, c.email) for c in config.directory.citizens] == [
        ("0012345679", "989121234567", "a@example.ir"), ("1234567891", "989351234567", None)]
    assert "0012345679" not in repr(config.directory.citizens)


@pytest.mark.parametrize("body, line, fragment", [
    ('- {national_id: "0012345678", msisdn: "09121234567"}\n', 1, "check digit"),
    ('- {national_id: "0012345679", msisdn: "02112345678"}\n', 1, "mobile"),
    ('- {national_id: "0012345679", msisdn: "09121234567"}\n'
     '- {national_id: "0012345679", msisdn: "09121234568"}\n', 2, "listed twice"),
    ('- {national_id: "0012345679", msisdn: "09121234567", email: "nope"}\n', 1, "name@domain"),
    ('- {national_id: "0012345679"}\n', 1, "missing required key 'msisdn'"),
    ('citizens: []\n', 1, "expected a list"),
])
def test_directory_file_errors_name_the_line_not_the_person(tmp_path, body, line, fragment):
    path = national_config(tmp_path, directory=body)
    [(file, at, message)] = errors_of(path)
    assert (file, at) == ("directory.yaml", line) and fragment in message, message
    assert "0012345678" not in message and "0912123456" not in message


@pytest.mark.parametrize("setting, fragment", [
    ("{path: directory.yaml, url: \"http://127.0.0.1:1\"}", "exactly one"),
    ("{}", "exactly one"),
    ("{url: \"ftp://x\"}", "http(s)://"),
    ("{url: \"http://127.0.0.1:1\", timeout_s: 0}", "greater than 0"),
    ("{url: \"http://127.0.0.1:1\", ttl: 5}", "unknown key"),
    ("{path: missing.yaml}", "is not a file"),
])
def test_directory_setting_errors(tmp_path, setting, fragment):
    path = national_config(tmp_path, directory=CITIZENS, setting=setting)
    errors = errors_of(path)
    assert len(errors) == 1 and errors[0][0] == "gateway.yaml" and fragment in errors[0][2]


def test_directory_url_settings_are_read(tmp_path):
    setting = '{url: "http://127.0.0.1:9/dir/", timeout_s: 1.5, cache_ttl_s: 60}'
    config = load_gateway_config(national_config(tmp_path, setting=setting))
    assert (config.directory.url, config.directory.timeout_s, config.directory.cache_ttl_s,
            config.directory.citizens) == ("http://127.0.0.1:9/dir", 1.5, 60, ())


def test_file_directory_looks_up_and_confirms(tmp_path):
    config = load_gateway_config(national_config(tmp_path, directory=CITIZENS))
    directory = FileDirectory(config.directory.citizens)
    found = []
    directory.lookup("0012345679").addCallback(found.append)
    directory.lookup("0087654326").addCallback(found.append)
    confirms(directory, "989121234567", "0012345679").addCallback(found.append)
    confirms(directory, "989351234567", "0012345679").addCallback(found.append)
    directory.lookup_msisdn("989351234567").addCallback(
        lambda citizen: found.append(citizen.national_id))
    assert [getattr(f, "msisdn", f) for f in found] == ["989121234567", None, True, False,
                                                      "1234567891"]
    directory.update(())
    directory.lookup("0012345679").addCallback(found.append)
    assert found[-1] is None and dataclasses.is_dataclass(config.directory)
