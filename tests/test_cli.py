"""The command line: exit codes, one-line errors, help for every command."""

import json
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


@pytest.mark.parametrize(("setting", "engine", "kept"), [
    ("", "memory", True), ("", "streaming", True), ("", None, True),  # None: no --engine
    ("reuse_freed_memory = false", "memory", False),
    ("", "dask", False),  # a Dask client only merges; its workers keep it (tests/test_cluster.py)
])
def test_run_keeps_freed_memory_where_it_analyses(simulated, tmp_path, monkeypatch, setting,
                                                  engine, kept):
    import gridwatch.allocator

    calls = []
    monkeypatch.setattr(gridwatch.allocator, "reuse_freed_memory", lambda: calls.append(1))
    config = tmp_path / "config.toml"
    config.write_text(f"[engine]\n{setting}\nmemory_budget_mb = 1\n")
    chosen = [] if engine is None else ["--engine", engine]
    result = CliRunner().invoke(main, ["run", "--input", str(simulated), "--output",
                                       str(tmp_path / "out"), "--config", str(config),
                                       *chosen, "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls == ([1] if kept else [])


def test_a_dask_run_from_a_fresh_process(simulated, tmp_path):
    # As cron starts it: nothing of dask.distributed is loaded before the run,
    # and the local cluster starts in a thread while the main thread plans.
    config = tmp_path / "config.toml"
    config.write_text("[engine]\nmemory_budget_mb = 1\nworkers = 1\n")  # several partitions
    run = subprocess.run([sys.executable, "-m", "gridwatch", "run", "--input", str(simulated),
                          "--output", str(tmp_path / "out"), "--config", str(config),
                          "--engine", "dask", "--quiet"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["engine"]["kind"] == "dask" and info["engine"]["partitions"] > 1


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


@pytest.mark.parametrize("command", ["run", "simulate", "evaluate", "plot", "cases",
                                     "cases list", "cases show", "cases close", "cases suppress"])
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [*command.split(), "--help"])
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


@pytest.mark.parametrize("site", ["meter", "transformer"])
def test_plot_any_site(simulated, tmp_path, site):
    import json

    labels = json.loads((simulated / "labels.json").read_text())
    site_id = next(iter(labels["meters"])) if site == "meter" else next(iter(labels["transformers"]))
    out = tmp_path / "site.png"
    result = CliRunner().invoke(main, ["plot", site_id, "--input", str(simulated), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_unknown_site_is_a_clear_error(simulated, tmp_path):
    result = CliRunner().invoke(main, ["plot", "NO-SUCH-METER", "--input", str(simulated),
                                       "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 3
    assert "no meter or asset 'NO-SUCH-METER'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_cases_close_and_suppress_change_the_next_run(simulated, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(main, ["run", "--input", str(simulated), "--output", str(out)]).exit_code == 0
    listing = runner.invoke(main, ["cases", "list", "--output", str(out), "--status", "new"])
    assert listing.exit_code == 0
    flags = __import__("pandas").read_csv(out / "flags.csv", dtype=str, keep_default_na=False)
    flagged = flags.loc[flags["flagged"] == "true", "meter_id"].tolist()
    assert len(flagged) >= 2
    assert flagged[0] in listing.output
    first, second = flagged[0], flagged[1]
    closed = runner.invoke(main, ["cases", "close", first, "--outcome", "legitimate_load",
                                  "--note", "heat pump", "--output", str(out)])
    assert closed.exit_code == 0, closed.output
    assert runner.invoke(main, ["cases", "suppress", second, "--reason", "licensed",
                                "--output", str(out)]).exit_code == 0
    assert runner.invoke(main, ["run", "--input", str(simulated), "--output", str(out)]).exit_code == 0
    again = __import__("pandas").read_csv(out / "flags.csv", dtype=str,
                                          keep_default_na=False).set_index("meter_id")
    assert again.loc[first, "flagged"] == "false" and "legitimate_load" in again.loc[first, "reasons"]
    assert again.loc[second, "flagged"] == "false"
    shown = runner.invoke(main, ["cases", "show", first, "--output", str(out)])
    assert '"status": "closed"' in shown.output
    report = (out / "report.html").read_text()
    assert "closed as legitimate_load: heat pump" in report  # the case history is in the report


def test_cases_bad_outcome_and_unknown_case(simulated, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    runner.invoke(main, ["run", "--input", str(simulated), "--output", str(out)])
    bad = runner.invoke(main, ["cases", "close", "X", "--outcome", "aliens", "--output", str(out)])
    assert bad.exit_code == 2  # click refuses the choice
    unknown = runner.invoke(main, ["cases", "show", "NO-SUCH", "--output", str(out)])
    assert unknown.exit_code == 3 and "unknown case 'NO-SUCH'" in unknown.stderr
