"""URLs in the configuration (issue 13, found by fuzz/ussd_menu): a URL urllib cannot
split (an unclosed `[`, a stray `]`) or with a port that is no port was a ValueError
traceback out of check-config, run and SIGHUP; it is a `file:line` error like any other.
One case per setting that takes a URL: a USSD dynamic state's url, an agency's
reply_webhook.url, gateway.yaml's directory.url."""

import shutil
from pathlib import Path

import pytest

from gateway.config.load import check_config

REPO = Path(__file__).resolve().parent.parent
BAD_URLS = ["http://127.0.0.1:900]0/x", "http://[::1/x", "http://h:99999/x", "http://h:ab/x"]


@pytest.fixture
def config(tmp_path):
    """A copy of config/ and routing_rules/ that check_config accepts as it is."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "routing_rules", tmp_path / "routing_rules")
    path = tmp_path / "config" / "gateway.yaml"
    path.write_text(path.read_text().replace("../var/gateway.db",
                                             str(tmp_path / "var" / "gateway.db")))
    assert check_config(path) == []
    return path


def _replace_once(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _one_error_naming(lines, path, setting):
    """Refused with a `file:line` error on that setting (a USSD state refused also
    leaves the states that lead to it dangling: those lines may follow)."""
    named = [line for line in lines if line.startswith(f"{path}:") and setting in line]
    assert len(named) == 1, lines


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_ussd_dynamic_url_that_cannot_be_split_is_a_config_error(config, url):
    menu = config.parent / "ussd" / "tax.yaml"
    _replace_once(menu, '"http://127.0.0.1:9000/ussd/tax-debt"', f'"{url}"')
    _one_error_naming(check_config(config), menu, ".url")


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_reply_webhook_url_that_cannot_be_split_is_a_config_error(config, url):
    import base64
    agencies = config.parent / "agencies.yaml"
    secret = "whsec_" + base64.b64encode(bytes(range(24))).decode()
    _replace_once(agencies, '# reply_webhook: {url: "http://127.0.0.1:9000/replies", '
                            'secret: "whsec_<base64 of >= 24 random bytes>"}',
                  f'reply_webhook: {{url: "{url}", secret: "{secret}"}}')
    _one_error_naming(check_config(config), agencies, "reply_webhook.url")


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_directory_url_that_cannot_be_split_is_a_config_error(config, url):
    _replace_once(config, "directory: {path: directory.yaml}", f'directory: {{url: "{url}"}}')
    _one_error_naming(check_config(config), config, "directory.url")
