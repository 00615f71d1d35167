"""A nightly run that never lies about its history (issue 14, items 3 to 7).

End to end: real simulated datasets, real ``gridwatch run`` (in process with
``CliRunner``, or as a subprocess where the process must fail for real), real
SQLite files.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from gridwatch.cases import CaseStore
from gridwatch.cli import main
from tests import test_publish
from tests.conftest import REPO_ROOT

NIGHT_1, NIGHT_2 = test_publish.AS_OF_1, test_publish.AS_OF_2
dataset = test_publish.dataset  # the same simulated dataset (a module-scoped fixture)


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args), "--quiet"])


def _cases(*args) -> CliRunner:
    return CliRunner().invoke(main, ["cases", *map(str, args)])


def _gridwatch_process(args, *, prelude="", preexec_fn=None) -> subprocess.CompletedProcess:
    """``gridwatch ARGS`` in a new Python process, after running ``prelude`` in it."""
    code = prelude + textwrap.dedent(f"""
        import sys
        from gridwatch.cli import main
        sys.argv = ["gridwatch", *{[str(a) for a in args]!r}]
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, preexec_fn=preexec_fn, timeout=300)


def _quality_codes(night_dir) -> set[str]:
    return set(pd.read_csv(night_dir / "data_quality.csv")["code"])


# --- item 3 ---------------------------------------------------------------------------

def _small_files_only():
    """In the child: files may not grow past 500 kB (report.html is ~1 MB): EFBIG, a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))


def test_a_night_whose_outputs_never_appear_is_not_recorded(dataset, tmp_path):
    root = tmp_path / "root"
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_1).exit_code == 0
    failed = _gridwatch_process(["run", "--input", dataset, "--output-root", root, "--as-of",
                                 NIGHT_2, "--quiet"], preexec_fn=_small_files_only)
    assert failed.returncode != 0, failed.stderr
    assert not (root / NIGHT_2).exists() and os.readlink(root / "latest") == NIGHT_1
    store = CaseStore(root / "state" / "cases.sqlite", create=False)
    assert store.runs()["as_of"].tolist() == [NIGHT_1]
    assert set(store.list_cases()["last_seen"]) == {NIGHT_1}
    # the same night, once it can be published, is recorded (nothing is refused)
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_2).exit_code == 0
    assert store.runs()["as_of"].tolist() == [NIGHT_1, NIGHT_2]


# --- item 4 ---------------------------------------------------------------------------

def test_a_backfill_keeps_latest_on_the_newest_night_and_joins_the_history(dataset, tmp_path):
    root = tmp_path / "root"
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_2).exit_code == 0
    newest = CaseStore(root / "state" / "cases.sqlite", create=False).list_cases()
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_1).exit_code == 0
    assert os.readlink(root / "latest") == NIGHT_2  # README: latest is the newest night
    assert (root / NIGHT_1 / "run.json").is_file()
    assert "cases.not_recorded" not in _quality_codes(root / NIGHT_1)
    store = CaseStore(root / "state" / "cases.sqlite", create=False)
    assert store.runs()["as_of"].tolist() == [NIGHT_1, NIGHT_2]
    flags_1 = pd.read_csv(root / NIGHT_1 / "flags.csv", dtype=str)
    on_1 = set(flags_1.loc[flags_1["flagged"] == "true", "meter_id"])
    now = store.list_cases().set_index("case_id")
    both = on_1 & set(newest["case_id"])
    assert both  # some meter is flagged on both nights: the check is not vacuous
    for meter in both:  # first seen on the back-filled night, last seen on the newest
        assert (now.loc[meter, "first_seen"], now.loc[meter, "last_seen"]) == (NIGHT_1, NIGHT_2)
        assert now.loc[meter, "status"] == "ongoing"
    assert set(now.loc[sorted(on_1), "first_seen"]) == {NIGHT_1}


# --- item 5 ---------------------------------------------------------------------------

def test_sibling_outputs_keep_their_own_histories(dataset, tmp_path):
    runs = tmp_path / "runs"
    assert _run("--input", dataset, "--output", runs / "a", "--as-of", NIGHT_1).exit_code == 0
    assert _run("--input", dataset, "--output", runs / "b", "--as-of", NIGHT_2).exit_code == 0
    assert not (runs / "state").exists()
    listing = _cases("list", "--output", runs / "b")
    assert listing.exit_code == 0, listing.stderr
    b = CaseStore(runs / ".b.state" / "cases.sqlite", create=False).list_cases()
    assert len(b) and set(b["status"]) == {"new"}  # b's first run: nothing is "ongoing"
    assert CaseStore(runs / ".a.state" / "cases.sqlite", create=False).runs()[
        "as_of"].tolist() == [NIGHT_1]
    missing = _cases("list", "--output", runs / "c")
    assert missing.exit_code == 3
    assert "no such output directory" in missing.stderr and str(runs / "c") in missing.stderr
    assert not (runs / "state").exists() and not (runs / ".c.state").exists()


def test_an_old_shared_history_is_migrated_refused_or_left_alone(dataset, tmp_path):
    runs = tmp_path / "runs"
    assert _run("--input", dataset, "--output", runs / "a", "--as-of", NIGHT_1).exit_code == 0
    legacy = runs / "state" / "cases.sqlite"  # where earlier versions kept it
    legacy.parent.mkdir()
    (runs / ".a.state" / "cases.sqlite").rename(legacy)
    # cases --output a points at the old file rather than inventing an empty history
    hint = _cases("list", "--output", runs / "a")
    assert hint.exit_code == 3 and f"--db {legacy}" in hint.stderr
    # a was published, alone in runs/: it inherits a copy, and says so
    assert _run("--input", dataset, "--output", runs / "a", "--as-of", NIGHT_2).exit_code == 0
    assert "cases.history_migrated" in _quality_codes(runs / "a")
    mine = CaseStore(runs / ".a.state" / "cases.sqlite", create=False)
    assert mine.runs()["as_of"].tolist() == [NIGHT_1, NIGHT_2]
    assert CaseStore(legacy, create=False).runs()["as_of"].tolist() == [NIGHT_1]  # kept
    # a new sibling does not inherit it: a history of its own, and a notice
    assert _run("--input", dataset, "--output", runs / "b", "--as-of", NIGHT_2).exit_code == 0
    assert "cases.history_created" in _quality_codes(runs / "b")
    assert set(CaseStore(runs / ".b.state" / "cases.sqlite").list_cases()["status"]) == {"new"}
    # a published output with published siblings: the old file mixes them, so it refuses
    (runs / ".a.state" / "cases.sqlite").unlink()
    refused = _run("--input", dataset, "--output", runs / "a", "--as-of", NIGHT_2)
    assert refused.exit_code == 3
    assert str(legacy) in refused.stderr and "shared with b" in refused.stderr


# --- item 6 ---------------------------------------------------------------------------

def _damaged(path):
    store = CaseStore(path)
    flags = pd.DataFrame({"meter_id": [f"M-{i}" for i in range(2000)], "flagged": "true",
                          "excess_kw": 1.0, "reasons": "x" * 200})
    store.record_run("2024-03-01", flags, None)
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # everything past the 100-byte header
    path.write_bytes(bytes(data))
    return "damaged"


def _directory(path):
    path.mkdir(parents=True)
    return "is a directory"


def _empty(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return "is empty (0 bytes)"


def _read_only(path):
    CaseStore(path).record_run("2024-03-01", pd.DataFrame({"meter_id": ["M-1"],
                                                           "flagged": ["true"]}), None)
    path.chmod(0o444)
    if os.geteuid() == 0:  # root writes through file modes: make it immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
            pytest.skip("running as root without chattr +i: no read-only file")
    return "is read-only"


@pytest.mark.parametrize("make", [_damaged, _directory, _empty, _read_only],
                         ids=["damaged", "directory", "zero-length", "read-only"])
def test_an_unusable_case_database_exits_3_naming_it(dataset, tmp_path, make):
    db = tmp_path / "history" / "cases.sqlite"
    what = make(db)
    config = tmp_path / "gridwatch.toml"
    config.write_text(f'[cases]\ndatabase = "{db}"\n')
    try:
        listed = _cases("list", "--db", db)
        closed = _cases("close", "M-1", "--outcome", "meter_fault", "--db", db)
        ran = _run("--input", dataset, "--output", tmp_path / "out", "--config", config)
    finally:
        if make is _read_only and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=False)
    if make is _read_only:  # reading a read-only history is fine; changing it is not
        assert listed.exit_code == 0 and "M-1" in listed.output
    for result in (closed, ran) if make is _read_only else (listed, closed, ran):
        assert result.exit_code == 3, result.output
        line = result.stderr.strip()
        assert "\n" not in line and str(db) in line and what in line
        assert "restore" in line or "writable" in line or "remove it" in line
    assert not (tmp_path / "out").exists()
    if make is _empty:
        assert db.stat().st_size == 0  # not silently re-created


def test_a_history_missing_where_one_was_expected_is_reported(dataset, tmp_path):
    root = tmp_path / "root"
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_1).exit_code == 0
    (root / "state" / "cases.sqlite").unlink()
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_2).exit_code == 0
    assert "cases.history_created" in _quality_codes(root / NIGHT_2)
    assert "cases.history_created" not in _quality_codes(root / NIGHT_1)  # the very first run


# --- item 7 ---------------------------------------------------------------------------

KILL_AT_LATEST = textwrap.dedent("""
    import os, signal
    _replace = os.replace
    def _killed_before_the_rename(src, dst, *args, **kwargs):
        if os.path.basename(str(src)).startswith(".latest."):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between symlink and rename
        return _replace(src, dst, *args, **kwargs)
    os.replace = _killed_before_the_rename
""")


def test_a_latest_link_left_by_kill_9_is_removed_by_the_next_run(dataset, tmp_path):
    root = tmp_path / "root"
    killed = _gridwatch_process(["run", "--input", dataset, "--output-root", root, "--as-of",
                                 NIGHT_1, "--quiet"], prelude=KILL_AT_LATEST)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(root.glob(".latest.*"))
    assert len(left) == 1 and left[0].is_symlink()
    assert _run("--input", dataset, "--output-root", root, "--as-of", NIGHT_2).exit_code == 0
    assert not list(root.glob(".latest.*"))
    assert os.readlink(root / "latest") == NIGHT_2

