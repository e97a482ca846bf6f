"""The systemd unit: it runs the daemon as the contract says, restarts it, keeps it in a
sandbox, and (where systemd-analyze exists) systemd itself accepts it."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "payam-gateway.service"
INSTALLED = "/opt/payam-gateway/venv/bin/payam-gateway"


def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def test_runs_the_daemon_and_reloads_with_sighup():
    service = unit()["Service"]
    assert service["ExecStart"] == f"{INSTALLED} run -c /etc/payam-gateway/gateway.yaml"
    assert "check-config" in service["ExecStartPre"]
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"


def test_a_store_needing_a_person_or_a_bad_config_is_not_restarted():
    from gateway.cli import EXIT_STORE
    service = unit()["Service"]
    prevented = service["RestartPreventExitStatus"].split()
    assert str(EXIT_STORE) in prevented and "2" in prevented
    # systemd applies RestartPreventExitStatus to the main process only: a failing
    # ExecStartPre would restart in a loop, so check-config there must not be fatal.
    assert service["ExecStartPre"].startswith("-")


def test_runs_sandboxed_with_only_its_state_directory():
    service = unit()["Service"]
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "payam-gateway"
    assert service["ProtectSystem"] == "strict"
    for setting in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert service[setting] == "yes", setting
    assert service["CapabilityBoundingSet"] == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    # Pointed at this checkout's console script, which verify requires to exist.
    script = Path(sys.executable).with_name("payam-gateway")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(script)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
