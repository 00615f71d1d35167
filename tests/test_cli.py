"""The command line: exit codes, one-line errors, help for every command."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from gridwatch import __version__
from gridwatch.cli import main
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    result = CliRunner().invoke(main, ["simulate", str(path), "--meters", "60", "--days", "21",
                                       "--seed", "2"])
    assert result.exit_code == 0, result.output
    return path


def test_run_writes_flags_and_says_so(simulated, tmp_path):
    result = CliRunner().invoke(main, ["run", "--input", str(simulated), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "meters analysed" in result.output
    assert (tmp_path / "flags.csv").exists() and (tmp_path / "run.json").exists()


def test_quiet_run_prints_nothing(simulated, tmp_path):
    result = CliRunner().invoke(main, ["run", "--input", str(simulated), "--output", str(tmp_path),
                                       "--quiet"])
    assert result.exit_code == 0 and result.output == ""


def test_evaluate_prints_recall_and_false_alarms(simulated, tmp_path):
    runner = CliRunner()
    runner.invoke(main, ["run", "--input", str(simulated), "--output", str(tmp_path)])
    result = runner.invoke(main, ["evaluate", str(tmp_path), str(simulated / "labels.json")])
    assert result.exit_code == 0, result.output
    assert "recall" in result.output and "false alarms" in result.output


def test_missing_input_is_one_line_and_exit_3(tmp_path):
    result = CliRunner().invoke(main, ["run", "--input", str(tmp_path / "nope"),
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridwatch: error:")
    assert "nope" in lines[0]


def test_bad_config_is_exit_2_naming_the_key(simulated, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[detection]\nfdr_alpha = 7\n")
    result = CliRunner().invoke(main, ["run", "--input", str(simulated), "--output",
                                       str(tmp_path / "out"), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "detection.fdr_alpha" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "simulate", "evaluate"])
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_every_command_is_documented_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    for command in main.commands:
        assert f"gridwatch {command}" in readme


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "gridwatch", "--version"], capture_output=True,
                          text=True, check=True)
    assert __version__ in done.stdout
