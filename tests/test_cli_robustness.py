"""A nightly run that never lies (issue 14, items 14 and 16-23): real ``gridwatch`` processes.

Each test drives the installed command as cron or a user would, and pins the
exit code and the one line on stderr that the README's exit-code table promises.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gridwatch.cli import main
from tests.conftest import REPO_ROOT

GRIDWATCH = [sys.executable, "-m", "gridwatch"]


def gridwatch(*args, cwd=None, timeout=300):
    return subprocess.run([*GRIDWATCH, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("robust") / "sim"
    done = gridwatch("simulate", path, "--meters", 60, "--days", 21, "--seed", 2)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def published(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "out"
    done = gridwatch("run", "--input", dataset, "--output", out, "--quiet")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a small tmpfs (as root); unmounted after the test."""
    mounted = []

    def mount(name, options):
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("needs root and mount(8) for a read-only or full file system")
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- item 14: machine problems are not bugs ---------------------------------------------
@pytest.mark.parametrize("where", ["read_only", "parent_is_a_file", "proc", "disk_full",
                                   "log_read_only"])
def test_a_machine_problem_is_exit_4_naming_the_path(dataset, tmp_path, mount_tmpfs, where):
    log_args = []
    if where == "read_only":
        output = mount_tmpfs("ro", "size=1m,ro") / "out"
        named = str(output.parent)
    elif where == "parent_is_a_file":
        (tmp_path / "afile").write_text("x")
        output = tmp_path / "afile" / "out"
        named = str(tmp_path / "afile")
    elif where == "proc":
        output = Path("/proc/gridwatch-out")
        named = "/proc/"
    elif where == "disk_full":
        output = mount_tmpfs("tiny", "size=64k") / "out"
        named = str(output.parent)
    else:
        output = tmp_path / "out"
        log_args = ["--log-file", mount_tmpfs("ro", "size=1m,ro") / "run.log"]
        named = "run.log"
    done = gridwatch("run", "--input", dataset, "--output", output, "--quiet", *log_args)
    line = one_line(done.stderr)
    assert done.returncode == 4, done.stderr
    assert line.startswith("gridwatch: error: ") and named in line
    assert "--debug" not in line and "internal error" not in line


def test_a_binary_config_is_exit_2_naming_the_file(dataset, tmp_path):
    config = tmp_path / "garbage.toml"
    config.write_bytes(b"\x00\x01\xff\xfe\x89PNG garbage")
    done = gridwatch("run", "--input", dataset, "--output", tmp_path / "out", "--config", config)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert str(config) in line and "not a TOML text file" in line


# --- item 16: a bad command line is 2; --debug after the subcommand ------------------------
@pytest.mark.parametrize("as_of", ["2026-13-45", "yesterday", "2026-03-20T99:99",
                                   "2026-03-20T10:00"])
def test_a_bad_as_of_is_a_usage_error(dataset, tmp_path, as_of):
    done = gridwatch("run", "--input", dataset, "--output", tmp_path / "out", "--as-of", as_of)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert line.startswith("gridwatch: error: Invalid value for '--as-of'") and as_of in line
    assert not (tmp_path / "out").exists()


def test_debug_is_accepted_after_the_subcommand(dataset, tmp_path):
    after = gridwatch("run", "--debug", "--input", dataset, "--output", tmp_path / "a", "--quiet")
    before = gridwatch("--debug", "run", "--input", dataset, "--output", tmp_path / "b", "--quiet")
    assert (after.returncode, after.stderr) == (0, "")
    assert (before.returncode, before.stderr) == (0, "")


# --- item 17: one line, first, with the cause ----------------------------------------------
@pytest.mark.parametrize("args", [["run", "--bogus"], ["plot"], ["nope"],
                                  ["cases", "close", "X", "--outcome", "aliens"]],
                         ids=["unknown-option", "missing-argument", "unknown-command", "bad-choice"])
def test_a_usage_error_is_one_line_with_the_reason_first(args):
    done = gridwatch(*args)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert line.startswith("gridwatch: error: ") and "Usage:" not in line
    assert "--help" in line


def test_a_column_name_with_a_newline_does_not_split_the_line(dataset, tmp_path):
    data = tmp_path / "nl"
    data.mkdir()
    shutil.copy(dataset / "meters.csv", data / "meters.csv")
    (data / "readings.csv").write_text('"meter_id","time\nstamp","kwh"\nM000001,2026-03-01T00:00,1\n')
    done = gridwatch("run", "--input", data, "--output", tmp_path / "out")
    line = one_line(done.stderr)
    assert done.returncode == 3
    assert "time\\nstamp" in line


@pytest.mark.parametrize("engine", ["memory", "streaming"])
def test_no_usable_readings_names_the_file_and_the_cause(dataset, tmp_path, engine):
    data = tmp_path / "nomatch"
    data.mkdir()
    shutil.copy(dataset / "readings.parquet", data / "readings.parquet")
    meters = pd.read_csv(dataset / "meters.csv", dtype=str)
    meters.assign(meter_id="X" + meters["meter_id"]).to_csv(data / "meters.csv", index=False)
    done = gridwatch("run", "--input", data, "--output", tmp_path / "out", "--engine", engine)
    line = one_line(done.stderr)
    assert done.returncode == 3
    assert str(data / "readings.parquet") in line
    assert "readings.unknown_meter" in line and "meter_id" in line and "meters" in line
    assert "data_quality.csv" not in line  # a failed run does not write it


# --- item 18: signals: one line each, 130 / 143 / 129 --------------------------------------
@pytest.fixture(scope="module")
def many_flags(tmp_path_factory):
    """Enough flagged sites that plot helper processes start (one per 40 sites)."""
    path = tmp_path_factory.mktemp("many") / "sim"
    done = gridwatch("simulate", path, "--meters", 2000, "--days", 21, "--seed", 1)
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize(("name", "code", "text"), [
    ("SIGINT", 130, "gridwatch: interrupted (SIGINT)"),
    ("SIGTERM", 143, "gridwatch: stopped by SIGTERM"),
    ("SIGHUP", 129, "gridwatch: stopped by SIGHUP"),
])
def test_a_signal_while_plots_are_drawn_is_one_line(many_flags, tmp_path, name, code, text):
    log = tmp_path / "run.log"
    out = tmp_path / "out"
    # Its own process group, signalled as a whole: what Ctrl-C at a terminal does.
    proc = subprocess.Popen([*GRIDWATCH, "run", "--input", str(many_flags), "--output", str(out),
                             "--log-file", str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and "writing report.html and plots" in log.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its plots"
    time.sleep(0.5)  # the helpers are drawing
    os.killpg(proc.pid, getattr(signal, name))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert one_line(stderr) == text
    assert not out.exists()  # nothing published
    assert not list(tmp_path.glob(".out.staging-*"))  # its staging directory removed
    assert "nothing published" in log.read_text()


# --- item 19: a successful --quiet run prints nothing --------------------------------------
def test_an_absurd_reading_prints_no_warning_on_a_quiet_run(dataset, tmp_path):
    data = tmp_path / "huge"
    shutil.copytree(dataset, data)
    readings = pd.read_parquet(data / "readings.parquet")
    readings.loc[readings.index[100], "kwh"] = 1e308
    readings.to_parquet(data / "readings.parquet")
    log = tmp_path / "run.log"
    done = gridwatch("run", "--input", data, "--output", tmp_path / "out", "--quiet",
                     "--log-file", log)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "RuntimeWarning" in log.read_text()  # kept, in the log


# --- item 20: simulate writes the config its dataset needs ---------------------------------
def test_simulate_writes_the_config_its_dataset_needs(dataset, tmp_path):
    labels = json.loads((dataset / "labels.json").read_text())
    config = tomllib.loads((dataset / "gridwatch.toml").read_text())
    assert config["data"]["timezone"] == labels["timezone"] == "Europe/London"
    licensed = sorted(m for m, lab in labels["meters"].items() if lab["type"] == "suppressed_licensed")
    assert licensed and sorted(s["meter_id"] for s in config["suppress"]) == licensed
    done = gridwatch("run", "--input", dataset, "--output", tmp_path / "out", "--quiet",
                     "--config", dataset / "gridwatch.toml")
    assert done.returncode == 0, done.stderr
    flags = pd.read_csv(tmp_path / "out" / "flags.csv", dtype=str, keep_default_na=False)
    assert set(flags.loc[flags["flagged"] == "true", "meter_id"]).isdisjoint(licensed)
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["as_of"] == labels["as_of"]  # the dataset's last day, not UTC's


@pytest.mark.parametrize("command", [[], ["run"], ["simulate"]], ids=["main", "run", "simulate"])
def test_help_examples_of_a_run_pass_a_config(command):
    text = CliRunner().invoke(main, [*command, "--help"]).output
    runs = [line for line in text.splitlines() if "gridwatch run --input" in line]
    assert runs and all("--config" in line for line in runs), runs


# --- item 21: plot from a published run -----------------------------------------------------
def test_plot_from_a_published_run_does_not_analyse_again(published, tmp_path, monkeypatch):
    import gridwatch.pipeline

    flags = pd.read_csv(published / "flags.csv", dtype=str, keep_default_na=False)
    site = flags.loc[flags["flagged"] == "true", "meter_id"].iloc[0]
    monkeypatch.setattr(gridwatch.pipeline, "run", lambda *a, **k: pytest.fail("re-analysed"))
    png = tmp_path / "site.png"
    result = CliRunner().invoke(main, ["plot", site, "--from", str(published), "-o", str(png)])
    assert result.exit_code == 0, result.output
    from gridwatch.report.plots import safe_plot_name

    assert png.read_bytes() == (published / "plots" / safe_plot_name(site)).read_bytes()


def test_plot_from_a_run_of_an_unflagged_meter_uses_that_run(published, dataset, tmp_path):
    flags = pd.read_csv(published / "flags.csv", dtype=str, keep_default_na=False)
    site = flags.loc[flags["flagged"] == "false", "meter_id"].iloc[-1]
    from_run = gridwatch("plot", site, "--from", published, "-o", tmp_path / "a.png")
    again = gridwatch("plot", site, "--input", dataset, "-o", tmp_path / "b.png")
    assert from_run.returncode == 0 and again.returncode == 0, from_run.stderr + again.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


# --- item 22: no shipped text points outside the repository ---------------------------------
def _shipped_texts():
    paths = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
             *sorted((REPO_ROOT / "configs").glob("*.toml")),
             *sorted((REPO_ROOT / "gridwatch").rglob("*.py"))]
    texts = {str(p.relative_to(REPO_ROOT)): p.read_text(encoding="utf-8") for p in paths}
    runner = CliRunner()
    for name in ["main", *main.commands]:
        args = [] if name == "main" else [name]
        text = runner.invoke(main, [*args, "--help"]).output
        texts[f"gridwatch {' '.join(args)} --help"] = re.sub(r"-\n\s+", "-", text)  # unwrapped
    return texts


def test_no_shipped_text_points_outside_the_repository():
    for where, text in _shipped_texts().items():
        assert "DATA_CONTRACT" not in text, where
        assert "/work/shared" not in text, where
        for name in re.findall(r"(?<![\w/.-])((?:docs/)?[\w-]+\.md)\b", text):
            if name in ("README.md",):
                continue
            target = REPO_ROOT / name if "/" in name else REPO_ROOT / "docs" / name
            assert target.exists() or (REPO_ROOT / name).exists(), f"{where} points to {name}"


# --- item 23: the full list of settings ships with the package ------------------------------
def test_config_defaults_prints_the_shipped_default_toml():
    done = gridwatch("config", "--defaults", cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (REPO_ROOT / "configs" / "default.toml").read_text(encoding="utf-8")


def test_pyproject_ships_default_toml_and_every_subpackage():
    tool = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["gridwatch.configs"] == "configs"
    assert "default.toml" in tool["package-data"]["gridwatch.configs"]
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts)
             for p in (REPO_ROOT / "gridwatch").rglob("__init__.py")}
    assert found | {"gridwatch.configs"} == set(tool["packages"])
