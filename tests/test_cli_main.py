"""The top-level ``slidelite`` group: help, version, unknown sub-commands."""
from click.testing import CliRunner

from slidelite import __version__
from slidelite.cli import COMMANDS, main


def test_help_lists_every_command_without_importing_them():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_unknown_command_is_one_line_exit_2_with_suggestion():
    result = CliRunner().invoke(main, ["clasify", "x.jpg"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: no such command 'clasify' (did you mean 'classify'?)"]
