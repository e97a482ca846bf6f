"""gateway.yaml `smtp:` (the email fallback's mail server): what loads, and each
mistake named by file and line, as check-config prints it; the password never shows."""

import os

import pytest

from gateway.config import ConfigErrors, check_config, load_gateway_config
from gateway.config.schema import SmtpSettings
from tests.test_config import GATEWAY, make_config

GOOD = """\
smtp:
  host: mail.example.ir
  port: 587
  from: notify@payam.gov.ir
  username: payam
  password: "s3cret-pass"
  starttls: true
  timeout_s: 20
  max_attempts: 4
  retry_s: [30, 900]
"""


def with_smtp(tmp_path, section):
    return make_config(tmp_path, gateway=GATEWAY + section)


def test_an_smtp_section_loads_every_key(tmp_path):
    config = load_gateway_config(with_smtp(tmp_path, GOOD))
    assert config.smtp == SmtpSettings(
        host="mail.example.ir", port=587, sender="notify@payam.gov.ir", username="payam",
        password="s3cret-pass", starttls=True, timeout_s=20.0, max_attempts=4,
        retry_s=(30.0, 900.0))
    assert "s3cret" not in repr(config.smtp) and "s3cret" not in repr(config)


def test_defaults_and_no_section(tmp_path):
    config = load_gateway_config(with_smtp(tmp_path, "smtp: {host: 127.0.0.1, from: a@b.ir}\n"))
    assert (config.smtp.port, config.smtp.username, config.smtp.starttls,
            config.smtp.timeout_s, config.smtp.max_attempts, config.smtp.retry_s) == \
        (25, None, False, 30.0, 5, (60.0, 1800.0))
    assert load_gateway_config(make_config(tmp_path / "none")).smtp is None


LINE = GATEWAY.count("\n") + 1          # the `smtp:` line


@pytest.mark.parametrize("section,offset,fragment", [
    ("smtp: {host: h.ir}\n", 0, "missing required key 'from'"),
    ("smtp:\n  host: h.ir\n  from: nobody\n", 2, "smtp.from: expected an address"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  prot: 25\n", 3, "unknown key 'prot'"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  port: 70000\n", 3, "smtp.port"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  username: u\n", 1, "both 'username' and"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  starttls: yes please\n", 3, "smtp.starttls"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  timeout_s: 0\n", 3, "smtp.timeout_s"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  max_attempts: 0\n", 3, "smtp.max_attempts"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  retry_s: [900, 30]\n", 3, "must not exceed"),
    ("smtp:\n  host: h.ir\n  from: a@b.ir\n  retry_s: [30]\n", 3, "two numbers"),
    ("smtp: mail.example.ir\n", 0, "smtp: expected a mapping"),
])
def test_mistakes_name_the_file_and_line(tmp_path, section, offset, fragment):
    path = with_smtp(tmp_path, section)
    with pytest.raises(ConfigErrors) as caught:
        load_gateway_config(path)
    [error] = caught.value.errors
    assert (os.path.basename(error.file), error.line) == ("gateway.yaml", LINE + offset), error
    assert fragment in error.message, error.message
    # check-config prints the same, file:line first.
    [line] = check_config(path)
    assert line.startswith(f"{path}:{LINE + offset}: ") and fragment in line


def test_the_password_is_never_in_an_error(tmp_path):
    path = with_smtp(tmp_path, "smtp:\n  host: h.ir\n  from: a@b.ir\n"
                               "  password: \"hunter2-secret\"\n")
    assert not any("hunter2" in line for line in check_config(path))


def test_the_sample_s_commented_smtp_section_loads_once_uncommented(tmp_path):
    sample = os.path.join(os.path.dirname(__file__), "..", "config", "gateway.yaml")
    lines = open(sample, encoding="utf-8").read().splitlines()
    start = lines.index("# smtp:")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    config = load_gateway_config(with_smtp(tmp_path, "\n".join(block) + "\n"))
    assert config.smtp.host == "mail.example.ir" and config.smtp.starttls is True
