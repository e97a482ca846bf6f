"""The systemd unit: it runs the daemon as the contract says, restarts it, keeps it in a
sandbox, and (where systemd-analyze exists) systemd itself accepts it."""

import configparser
import re
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


def test_the_install_steps_of_operating_md_give_a_configuration_that_loads(tmp_path):
    # docs/operating.md copies config/ to /etc/payam-gateway and points store.path at the
    # unit's state directory with one sed line; the copy must reference nothing outside.
    from gateway.config.load import check_config, load_gateway_config
    repo = UNIT.parent.parent
    guide = (repo / "docs" / "operating.md").read_text()
    assert "cp -r /opt/payam-gateway/src/config/. /etc/payam-gateway/" in guide
    assert "cp -r /opt/payam-gateway/src/routing_rules /etc/payam-gateway/" in guide
    seds = [re.match(r"sed -i 's\|(.*?)\|(.*?)\|' /etc/payam-gateway/gateway.yaml$",
                     line).groups()
            for line in guide.splitlines() if line.startswith("sed -i 's|^")]
    state = f"/var/lib/{unit()['Service']['StateDirectory']}"
    assert f'store:   {{path: "{state}/gateway.db"}}' in [r for _p, r in seds]

    etc = tmp_path / "etc" / "payam-gateway"
    shutil.copytree(repo / "config", etc)
    shutil.copytree(repo / "routing_rules", etc / "routing_rules")
    installed = (etc / "gateway.yaml").read_text()
    for pattern, replacement in seds:
        installed = re.sub(pattern, replacement.replace(state, str(tmp_path / "state")),
                           installed, count=1, flags=re.MULTILINE)
    (etc / "gateway.yaml").write_text(installed)
    assert check_config(str(etc / "gateway.yaml")) == []
    config = load_gateway_config(str(etc / "gateway.yaml"))
    assert config.store_path == str(tmp_path / "state" / "gateway.db")
    for path in (config.agencies_path, config.routing_rules_path, config.ussd_menus_path):
        assert path.startswith(str(etc) + "/"), path
    assert unit()["Service"]["ExecStart"].endswith("-c /etc/payam-gateway/gateway.yaml")


def test_the_service_reads_its_configuration_through_its_group():
    # DynamicUser has no fixed uid: /etc/payam-gateway (SMPP passwords) is readable by a
    # static group the guide makes, not by everyone.
    assert unit()["Service"]["SupplementaryGroups"] == "payam-gateway"


def test_systemd_hears_ready_and_watches_the_reactor():
    # gateway.systemd: READY=1 once the store is open and HTTP and metrics listen;
    # WATCHDOG=1 at half WatchdogSec; STOPPING=1 and RELOADING=1 (test_systemd_notify).
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"].rstrip("s")) >= 10
    from gateway.cli import EXIT_LOCKED
    # Another daemon on the store may be stopping: restarted, not held failed.
    assert str(EXIT_LOCKED) not in service["RestartPreventExitStatus"].split()
