"""The reference docs in docs/ keep up with the code: every route, error code and
configuration key is described, and nothing links outside the repository."""

from pathlib import Path

import pytest

from gateway.config import (
    agencies_file, apps_file, directory_file, gateway_file, operators, routing_file, smtp_file,
    ussd_file)
from gateway.http import openapi
from gateway.http.errors import STATUS_FOR_CODE

REPO = Path(__file__).resolve().parent.parent
API = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_api_md_describes_every_route_of_the_openapi_document():
    for path, item in openapi.document()["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in API, f"{method.upper()} {path}"


@pytest.mark.parametrize("code", sorted(STATUS_FOR_CODE))
def test_api_md_gives_every_error_code_with_its_status(code):
    row = next((line for line in API.splitlines() if line.startswith(f"| `{code}` |")), None)
    assert row is not None, code
    assert f"| {STATUS_FOR_CODE[code]} |" in row


@pytest.mark.parametrize("section,keys", [
    ("gateway.yaml", gateway_file.GATEWAY_KEYS), ("retention", gateway_file.RETENTION_KEYS),
    ("authenticity", gateway_file.AUTHENTICITY_KEYS),
    ("operators", operators.OPERATOR_KEYS), ("agencies", agencies_file.AGENCY_KEYS),
    ("routing rules", routing_file.RULE_KEYS),
    ("directory", directory_file.DIRECTORY_KEYS), ("apps", apps_file.APP_KEYS),
    ("directory file", directory_file.CITIZEN_KEYS),
    ("admin", tuple(f"admin.{key}" for key in gateway_file.ADMIN_KEYS)),
    ("operators' ussd", operators.USSD_KEYS), ("smtp", smtp_file.SMTP_KEYS),
    ("USSD menus", ussd_file.MENU_KEYS + ussd_file.COMMON_KEYS + ussd_file.OPTION_KEYS
     + ussd_file.ROUTE_KEYS + tuple(key for keys in ussd_file.KIND_KEYS.values()
                                    for key in keys))])
def test_configuration_md_describes_every_key(section, keys):
    for key in keys:
        assert f"`{key}" in CONFIGURATION, f"{section}: {key}"


def test_no_document_points_outside_the_repository():
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert "../shared/" not in path.read_text(encoding="utf-8"), path


def test_api_md_says_what_attempts_counts_as_the_dispatcher_does():
    # dispatch/dispatcher.py: temporary errors and unknown outcomes count an attempt; throttled
    # and "not bound" answers go back uncounted (count_attempt=False), after a pause.
    row = next(line for line in API.splitlines() if line.startswith("| `attempts` |"))
    counted, _, uncounted = row.partition("Not counted:")
    assert "temporary error" in counted and "unknown outcome" in counted
    assert "max_unknown_outcomes" in counted
    for status in ("ESME_RTHROTTLED", "ESME_RMSGQFUL", "ESME_RINVBNDSTS", "ESME_RALYBND"):
        assert status in uncounted, status
    assert "crash" in uncounted


def test_operating_md_says_how_long_each_kind_of_record_is_kept_and_none_is_planned():
    operating = (REPO / "docs" / "operating.md").read_text(encoding="utf-8")
    for key in (*gateway_file.RETENTION_KEYS, "authenticity.retention_days"):
        row = next((line for line in operating.splitlines()
                    if line.startswith(f"| `{key}` |")), None)
        assert row is not None, key
        assert "planned" not in row, row


def test_api_md_says_what_a_ussd_filings_text_holds():
    """An integrator reading the inbox learns there that a `ussd` message's text is the
    filing's JSON object, with the keys gateway/ussd/filing.py writes."""
    import inspect
    from gateway.ussd import filing
    row = next(line for line in API.splitlines() if line.startswith("| `channel` |"))
    source = inspect.getsource(filing.Filing.file)
    for key in ("tracking", "code", "state", "values"):
        assert f'"{key}"' in source and f'"{key}"' in row, key


def test_the_readme_shows_the_citizen_api_with_the_demo_apps_key():
    import hashlib
    import re

    import yaml

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    apps = yaml.safe_load((REPO / "gateway" / "demo" / "apps.yaml").read_text())["apps"]
    hashes = {key for app in apps for key in app["keys"]}
    keys = set(re.findall(r"Bearer (demo-[a-z-]+-key-0+)'", readme))
    app_keys = {k for k in keys
                if "sha256:" + hashlib.sha256(k.encode()).hexdigest() in hashes}
    assert app_keys, "no README curl line uses a demo partner app's key"
    assert "/v1/citizen/messages?national_id=" in readme
    assert "/v1/citizen/replies" in readme
