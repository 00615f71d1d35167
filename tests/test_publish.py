"""A run that cron can trust: lock, atomic publish, ``latest``, idempotence, exit codes, logs."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from gridwatch import cli
from gridwatch.cli import main
from gridwatch.publish import Destination, output_lock
from tests.conftest import REPO_ROOT

AS_OF_1, AS_OF_2 = "2024-03-25", "2024-03-26"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    result = CliRunner().invoke(main, ["simulate", str(path), "--meters", "80", "--days", "28",
                                       "--seed", "5", "--as-of", AS_OF_2])
    assert result.exit_code == 0, result.output
    return path


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def test_output_root_publishes_one_directory_per_day_and_latest_last(dataset, tmp_path):
    root = tmp_path / "root"
    assert _run("--input", dataset, "--output-root", root, "--as-of", AS_OF_1).exit_code == 0
    assert _run("--input", dataset, "--output-root", root, "--as-of", AS_OF_2).exit_code == 0
    assert (root / AS_OF_1 / "flags.csv").is_file() and (root / AS_OF_2 / "run.json").is_file()
    assert os.readlink(root / "latest") == AS_OF_2  # relative: the root can be moved
    assert (root / "latest" / "report.html").is_file()
    assert not list(root.glob(".staging-*"))
    assert (root / "state" / "cases.sqlite").is_file()  # case history beside the runs


def test_rerun_of_the_same_day_gives_byte_identical_flags_and_transformers(dataset, tmp_path):
    out = tmp_path / "out"
    assert _run("--input", dataset, "--output", out, "--as-of", AS_OF_1).exit_code == 0
    first = {name: (out / name).read_bytes() for name in ("flags.csv", "transformers.csv")}
    assert _run("--input", dataset, "--output", out, "--as-of", AS_OF_1).exit_code == 0
    assert {name: (out / name).read_bytes() for name in first} == first
    assert b"true" in first["flags.csv"]  # something was flagged: the comparison is not vacuous


def test_a_rerun_replaces_the_output_directory_as_a_whole(dataset, tmp_path):
    out = tmp_path / "out"
    assert _run("--input", dataset, "--output", out, "--as-of", AS_OF_1).exit_code == 0
    (out / "plots" / "left-over.png").write_bytes(b"old")
    assert _run("--input", dataset, "--output", out, "--as-of", AS_OF_1).exit_code == 0
    assert not (out / "plots" / "left-over.png").exists()
    assert not list(tmp_path.glob(".out.staging-*"))


def test_a_directory_of_other_files_is_never_replaced(dataset, tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    result = _run("--input", dataset, "--output", precious, "--as-of", AS_OF_1)
    assert result.exit_code == 2
    assert "not GridWatch outputs" in result.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_second_run_on_a_locked_output_exits_5_at_once(dataset, tmp_path):
    out = tmp_path / "out"
    with output_lock(Destination.for_output(out)):
        started = time.perf_counter()
        result = _run("--input", dataset, "--output", out)
        waited_s = time.perf_counter() - started
    assert result.exit_code == 5
    assert "another gridwatch run holds the lock" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert waited_s < 5  # "at once": it does not wait for the lock, nor run the analysis
    assert not out.exists()
    assert _run("--input", dataset, "--output", out).exit_code == 0  # released afterwards


def test_a_run_killed_part_way_leaves_the_previous_latest_intact(dataset, tmp_path):
    root = tmp_path / "root"
    assert _run("--input", dataset, "--output-root", root, "--as-of", AS_OF_1).exit_code == 0
    before = (root / "latest" / "flags.csv").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridwatch", "run", "--input", str(dataset), "--output-root",
         str(root), "--as-of", AS_OF_2, "--quiet"], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not list(root.glob(".staging-*")):  # the run has started writing
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert os.readlink(root / "latest") == AS_OF_1
    assert (root / "latest" / "flags.csv").read_bytes() == before
    assert not (root / AS_OF_2).exists()
    # the next run cleans up what the killed one left and publishes
    assert _run("--input", dataset, "--output-root", root, "--as-of", AS_OF_2).exit_code == 0
    assert not list(root.glob(".staging-*"))
    assert os.readlink(root / "latest") == AS_OF_2


def test_a_failed_run_publishes_nothing(tmp_path):
    root = tmp_path / "root"
    result = _run("--input", tmp_path / "missing", "--output-root", root)
    assert result.exit_code == 3
    assert sorted(p.name for p in root.iterdir()) == [".lock"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--output", "{out}"], 2, "no input given", id="no-input"),
        pytest.param(["--input", "{data}"], 2, "no output given", id="no-output"),
        pytest.param(["--input", "{data}", "--output", "{out}", "--as-of", "someday"], 2,
                     "is not a day", id="bad-as-of"),
    ],
)
def test_usage_errors_are_one_line_with_their_exit_code(dataset, tmp_path, args, code, message):
    result = _run(*[a.format(data=dataset, out=tmp_path / "out") for a in args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_an_internal_error_exits_1_with_a_one_line_reason(dataset, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("gridwatch.pipeline.run", broken)
    result = _run("--input", dataset, "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("gridwatch: internal error: RuntimeError: disk on fire "
                                     "(rerun with --debug for the traceback)")
    assert not (tmp_path / "out").exists()


def test_the_log_file_records_the_run_and_never_the_credentials(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", "s3cret-pw")
    log_file = tmp_path / "logs" / "gridwatch.log"
    assert _run("--input", dataset, "--output", tmp_path / "out", "--log-file", log_file,
                "--quiet").exit_code == 0
    assert _run("--input", tmp_path / "nope", "--output", tmp_path / "out",
                "--log-file", log_file).exit_code == 3
    text = log_file.read_text()
    assert "run started" in text and "detection:" in text and "published" in text
    assert "ERROR" in text and "exit 3" in text  # the failure is in the log too
    assert "s3cret-pw" not in text
    assert "s3cret-pw" not in (tmp_path / "out" / "run.json").read_text()


def test_progress_is_shown_on_a_terminal_only(dataset, tmp_path, monkeypatch):
    assert "detection:" not in _run("--input", dataset, "--output", tmp_path / "a").stderr
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    shown = _run("--input", dataset, "--output", tmp_path / "b").stderr
    assert "gridwatch: read" in shown and "gridwatch: detection:" in shown
    quiet = _run("--input", dataset, "--output", tmp_path / "c", "--quiet")
    assert quiet.stderr == "" and quiet.output == ""


def test_output_root_and_log_file_from_the_config_are_relative_to_it(dataset, tmp_path):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "gridwatch.toml").write_text(
        '[output]\nroot = "../runs"\nlog_file = "../log/gridwatch.log"\n')
    result = CliRunner().invoke(main, ["run", "--input", str(dataset), "--as-of", AS_OF_1,
                                       "--config", str(conf_dir / "gridwatch.toml"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "runs" / AS_OF_1 / "flags.csv").is_file()
    assert "run finished" in (tmp_path / "log" / "gridwatch.log").read_text()
