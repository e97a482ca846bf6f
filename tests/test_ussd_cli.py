"""`ussd-try` walks a menu in the terminal; `check-config --ussd-tests` runs the menu
tests under <ussd_menus>/tests/ and names failures with file:line."""

import subprocess
import sys

import pytest

from twisted.internet import defer
from twisted.internet.task import Clock

from conftest import answered
from gateway.cli import main
from gateway.config.load import load_gateway_config
from gateway.ussd.terminal import try_menu
from ussd_loopback import REPO, write_gateway

JUDICIARY = (REPO / "config" / "ussd" / "judiciary.yaml").read_text(encoding="utf-8")
TESTS = (REPO / "config" / "ussd" / "tests" / "judiciary.yaml").read_text(encoding="utf-8")


def config_with_tests(tmp_path, tests=TESTS):
    path = write_gateway(tmp_path, 2775, {"judiciary.yaml": JUDICIARY})
    (tmp_path / "ussd" / "tests").mkdir()
    (tmp_path / "ussd" / "tests" / "judiciary.yaml").write_text(tests, encoding="utf-8")
    return path


def test_the_sample_menu_tests_pass(tmp_path, capsys):
    assert main(["check-config", "-c", str(config_with_tests(tmp_path)), "--ussd-tests"]) == 0
    assert "4 USSD tests passed" in capsys.readouterr().out


def test_every_shipped_menu_test_passes_and_reload_says_it_reloads_menus(capsys):
    # config/ussd/tests/ holds the tests of all three sample menus (not only the
    # judiciary's): an edit of a sample menu that breaks its tests fails here.
    assert main(["check-config", "-c", str(REPO / "config" / "gateway.yaml"),
                 "--ussd-tests"]) == 0
    assert "7 USSD tests passed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert "reload agencies, routing rules and USSD menus" in listed


def test_a_failing_menu_test_is_named_with_file_and_line(tmp_path, capsys):
    broken = TESTS.replace('expect: "کد پیگیری: 1234567890"', 'expect: "شماره پیگیری"')
    assert main(["check-config", "-c", str(config_with_tests(tmp_path, broken)),
                 "--ussd-tests"]) == 2
    err = capsys.readouterr().err
    assert "tests/judiciary.yaml:14: test 'a citizen files a complaint', step 5: " \
           "expected the page to contain 'شماره پیگیری'" in err


def test_a_bad_test_file_is_a_config_error(tmp_path, capsys):
    broken = TESTS.replace("    dial:", "    dail:", 1)
    assert main(["check-config", "-c", str(config_with_tests(tmp_path, broken)),
                 "--ussd-tests"]) == 2
    assert "tests/judiciary.yaml:4: tests[0]: unknown key 'dail'" in capsys.readouterr().err


def test_ussd_try_walks_the_menu_without_an_smsc(tmp_path):
    config = load_gateway_config(write_gateway(tmp_path, 2775, {"j.yaml": JUDICIARY}))
    typed, said = iter(["1", "2", "123", "0067749828"]), []
    code = answered(try_menu(Clock(), config.ussd_menus, "*4*0135#",
                             ask=lambda: defer.succeed(next(typed)), say=said.append))
    text = "\n".join(said)
    assert code == 0
    assert "کد ملی نادرست است." in text and "کد پیگیری: 1234567890" in text
    assert "(end)" in said[-1] and "/80" in said[-1]
    assert "[would file into judiciary's inbox" in text


def test_ussd_try_as_a_command(tmp_path):
    path = write_gateway(tmp_path, 2775, {"j.yaml": JUDICIARY})
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "ussd-try", "-c", str(path),
                           "*4*0135*1*2#"], input="0067749828\n", capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "کد پیگیری" in done.stdout
    unknown = subprocess.run([sys.executable, "-m", "gateway.cli", "ussd-try", "-c",
                              str(path), "*4*9999#"], capture_output=True, text=True,
                             timeout=30, cwd=REPO)
    assert unknown.returncode == 1 and "تعلق ندارد" in unknown.stdout
