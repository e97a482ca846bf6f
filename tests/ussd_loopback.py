"""In-process USSD over loopback: the real daemon (GatewayService) bound over real SMPP
sockets to the built-in simulator, whose USSD side plays the citizens' handsets."""

import shutil
import tempfile
from pathlib import Path

import yaml
from twisted.internet import defer, reactor

from conftest import wait_until
from daemon_harness import free_port
from gateway.config.load import load_gateway_config
from gateway.service import GatewayService
from gateway.simulator.main import start_simulator

REPO = Path(__file__).resolve().parent.parent
CITIZEN = "989121234567"


def temporary_directory(testcase):
    path = tempfile.mkdtemp(prefix="payam-ussd-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def write_gateway(directory, smpp_port, menus, *, operator_extra=None, agencies=None):
    """gateway.yaml with one operator (mci), the sample agencies and the menus given as
    {file name: YAML text}."""
    directory = Path(directory)
    (directory / "ussd").mkdir(exist_ok=True)
    for name, text in menus.items():
        (directory / "ussd" / name).write_text(text, encoding="utf-8")
    agencies_file = directory / "agencies.yaml"
    if agencies is None:
        shutil.copy(REPO / "config" / "agencies.yaml", agencies_file)
    else:
        agencies_file.write_text(agencies, encoding="utf-8")
    operator = {"name": "mci", "host": "127.0.0.1", "port": smpp_port, "system_id": "mci",
                "password": "secret", "bind": "transceiver", "binds": 1, "window": 50,
                "tps": 1000, "reconnect_s": [0.2, 1], "receipts": False}
    operator.update(operator_extra or {})
    (directory / "routing.yaml").write_text("rules: []\ndefault: mci\n")
    config = {"http": {"listen": f"127.0.0.1:{free_port()}"},
              "admin": {"listen": f"127.0.0.1:{free_port()}"},   # not the fixed 9109
              "store": {"path": "var/gateway.db"},
              "agencies": "agencies.yaml", "routing_rules": "routing.yaml",
              "ussd_menus": "ussd/", "operators": [operator]}
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


class Loopback:
    """The simulator and the daemon in this process, on the real reactor."""

    def __init__(self, testcase, menus, **options):
        tmp = temporary_directory(testcase)
        self.simulator = start_simulator(reactor, "127.0.0.1", 0, None)
        testcase.addCleanup(self.simulator.stop)
        self.config_path = write_gateway(tmp, self.simulator.smpp_port, menus, **options)
        self.service = GatewayService(load_gateway_config(self.config_path), reactor)
        self.service.startService()
        testcase.addCleanup(lambda: self.service.running and self.service.stopService())
        self.ussd = self.simulator.factory.ussd

    def bound(self):
        return wait_until(reactor, lambda: self.service.pools["mci"].bound_count() == 1)

    def dial(self, code, msisdn=CITIZEN, **options):
        return self.ussd.dial(msisdn, code, **options)

    def send(self, text, msisdn=CITIZEN, **options):
        return self.ussd.send(msisdn, text, **options)


def page(answer):
    return answer["text"], answer["end"]


@defer.inlineCallbacks
def walk(loop, code, *inputs, msisdn=CITIZEN):
    """Every answer of a dialog: the dial's, then one per input."""
    answers = [(yield loop.dial(code, msisdn))]
    for text in inputs:
        answers.append((yield loop.send(text, msisdn)))
    return answers
