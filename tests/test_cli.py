"""The console script's own surface: --version, and --help that gives every default."""

import argparse
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from gateway import __version__
from gateway import cli
from gateway.simulator import main as simulator_main

SCRIPT = Path(sys.executable).with_name("payam-gateway")


def test_version_prints_the_installed_distributions_version():
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"payam-gateway {version('payam-gateway')}"
    # One source of truth: setup.cfg takes the version from the package.
    assert version("payam-gateway") == __version__


def _parsers():
    """(name, parser) of the top level, every subcommand and the simulator's own."""
    top = cli.build_parser()
    found = [("payam-gateway", top)]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += sorted(action.choices.items())
    found.append(("smsc-sim options", simulator_main.build_parser()))
    return found


def _help_blocks(parser):
    """{option string: its help text, whitespace collapsed} from the rendered --help."""
    blocks, current = {}, None
    for line in parser.format_help().splitlines():
        match = re.match(r"^  (-\S+)", line)
        if match:
            current = match.group(1).rstrip(",")
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {option: " ".join(text.split()) for option, text in blocks.items()}


@pytest.mark.parametrize("name,parser", _parsers(), ids=lambda value: str(value)[:20])
def test_every_option_help_names_its_default(name, parser):
    if name == "smsc-sim":
        return                   # parsed by the simulator's own parser (checked too)
    blocks = _help_blocks(parser)
    options = [action for action in parser._actions if action.option_strings
               and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))]
    for action in options:
        text = blocks[action.option_strings[0]]
        assert "(default: " in text, f"{name} {action.option_strings[0]}: {text}"


def test_subcommands_defaults_are_what_the_help_says():
    args = cli.build_parser().parse_args(["run"])
    assert args.config == "config/gateway.yaml" and args.log_level == "info"
    assert args.create_store is False
    help_text = " ".join(_help_blocks(dict(_parsers())["run"]).values())
    assert "(default: config/gateway.yaml)" in help_text
    assert "(default: off)" in help_text


def test_backup_is_a_subcommand_with_a_required_output():
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["backup"])
    args = parser.parse_args(["backup", "-c", "g.yaml", "out.db"])
    assert (args.command, args.config, args.output) == ("backup", "g.yaml", "out.db")
