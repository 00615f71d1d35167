"""Issue 14, "a nightly run that never lies": input that used to sink or fool a whole night.

Each test takes a small simulated dataset directory, breaks it the way real
exports break, and runs the pipeline (what ``gridwatch run`` calls) on it:
the night still runs, and what was wrong is counted in ``data_quality.csv``.
"""

import shutil

import pandas as pd
import pytest

from gridwatch.config import Config
from gridwatch.pipeline import run
from gridwatch.simulate import simulate_dataset

AS_OF = "2026-03-31"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=160, days=21, as_of=AS_OF, seed=3, fmt="csv",
                     timezone="UTC", dirty=False)
    (path / "labels.json").unlink()
    return path


@pytest.fixture(scope="module")
def baseline(dataset, tmp_path_factory):
    """The intact dataset's run."""
    return run(dataset, tmp_path_factory.mktemp("out") / "out", config=_config())


def _config(**engine):
    return Config(report={"enabled": False}, cases={"enabled": False},
                  analysis={"history_days": 21}, engine=engine or {})


def _copy(dataset, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(dataset, target)
    return target


def _append(path, line: str):
    with open(path, "a") as f:
        f.write(line + "\n")


def _quality(out):
    return pd.read_csv(out / "data_quality.csv", keep_default_na=False)


def _issue(out, code, meter_id):
    rows = _quality(out).query("code == @code and meter_id == @meter_id")
    assert len(rows) == 1, f"no single {code} for {meter_id}"
    return rows.iloc[0]


def test_a_reading_in_2099_neither_moves_the_as_of_nor_refuses_the_night(dataset, baseline,
                                                                          tmp_path):
    # Item 8: it moved the default as-of to 2098-12-31, then "no readings in the analysis
    # window ... (check --as-of ...)" for an --as-of nobody passed.
    data = _copy(dataset, tmp_path)
    _append(data / "readings.csv", "M000001,2099-01-01T00:00:00+00:00,0.1")
    result = run(data, tmp_path / "out", config=_config())
    assert result.as_of == baseline.as_of == pd.Timestamp(AS_OF).date()
    issue = _issue(tmp_path / "out", "readings.future_timestamp", "M000001")
    assert (issue["count"], issue["action"]) == (1, "dropped")
    assert result.info["counts"]["readings"]["dropped_by_reason"]["readings.future_timestamp"] == 1


def test_a_clock_months_ahead_moves_no_engine_s_as_of(dataset, baseline, tmp_path):
    # Item 8: a clock ahead but not past the run's time; every engine decides the day alike.
    data = _copy(dataset, tmp_path)
    _append(data / "readings.csv", "M000002,2026-08-01T00:00:00+00:00,0.1")
    memory = run(data, tmp_path / "memory", config=_config(kind="memory"))
    streaming = run(data, tmp_path / "streaming",
                    config=_config(kind="streaming", memory_budget_mb=1))
    assert memory.as_of == streaming.as_of == baseline.as_of
    assert streaming.info["engine"]["partitions"] >= 2
    for name in ("flags.csv", "data_quality.csv"):
        assert ((tmp_path / "memory" / name).read_text()
                == (tmp_path / "streaming" / name).read_text()), name


def test_missing_kwh_is_counted_like_every_other_repair(dataset, tmp_path):
    # Item 10: kwh empty or NaN on 20 % of a meter's rows left no trace.
    data = _copy(dataset, tmp_path)
    readings = pd.read_csv(data / "readings.csv", dtype=str)
    rows = readings.index[readings["meter_id"] == "M000003"][::5]
    readings.loc[rows[::2], "kwh"] = ""
    readings.loc[rows[1::2], "kwh"] = "NaN"
    readings.to_csv(data / "readings.csv", index=False)
    run(data, tmp_path / "out", config=_config())
    issue = _issue(tmp_path / "out", "readings.missing_kwh", "M000003")
    assert (issue["count"], issue["action"]) == (len(rows), "kept")


def test_lower_case_z_offsets_are_read_as_utc(dataset, baseline, tmp_path):
    # Item 11: '...00:00z' matched the reader's offset pattern, failed the parser, and
    # more than 10 % bad timestamps refused the whole file.
    data = _copy(dataset, tmp_path)
    text = (data / "readings.csv").read_text()
    assert "+00:00," in text
    (data / "readings.csv").write_text(text.replace("+00:00,", "z,"))
    result = run(data, tmp_path / "out", config=_config())
    assert "readings.bad_timestamp" not in set(_quality(tmp_path / "out")["code"])
    assert result.flags.equals(baseline.flags)


def test_one_line_over_a_mib_loses_nothing_else(dataset, baseline, tmp_path):
    # Item 12: "straddling object straddles two block boundaries" refused a 20 MB CSV.
    data = _copy(dataset, tmp_path)
    _append(data / "readings.csv", "M000004,2026-03-20T00:00:00+00:00," + "9" * (2 << 20))
    result = run(data, tmp_path / "out", config=_config())
    assert result.info["counts"]["readings"]["in"] == baseline.info["counts"]["readings"]["in"] + 1
    # The row is read; its absurd value is set missing and counted, like any other.
    codes = set(_quality(tmp_path / "out").query("meter_id == 'M000004'")["code"])
    assert codes & {"readings.implausible_kwh", "readings.non_numeric_kwh",
                    "readings.conflicting_duplicate"}


def test_latin1_ids_and_regions_are_read_and_counted(dataset, tmp_path):
    # Item 13: Latin-1 text gave exit 1 with the empty message "_ConversionError: ".
    data = _copy(dataset, tmp_path)
    meters = (data / "meters.csv").read_text(encoding="utf-8").splitlines()
    first = meters[1].split(",")
    first[0], first[5] = "Mé-0001", "Bretagne-Été"
    with open(data / "meters.csv", "ab") as f:
        f.write((",".join(first) + "\n").encode("latin-1"))
    readings = pd.read_csv(data / "readings.csv", dtype=str)
    copy = readings[readings["meter_id"] == "M000001"].assign(meter_id="Mé-0001")
    with open(data / "readings.csv", "ab") as f:
        f.write(copy.to_csv(index=False, header=False).encode("latin-1"))
    for engine in ({"kind": "memory"}, {"kind": "streaming", "memory_budget_mb": 1}):
        out = tmp_path / engine["kind"]
        result = run(data, out, config=_config(**engine))
        assert "Mé-0001" in set(result.flags["meter_id"])  # analysed under its real name
        assert _issue(out, "readings.latin1_text", "Mé-0001")["count"] == len(copy)
        assert _issue(out, "meters.latin1_text", "Mé-0001")["action"] == "resolved"
    assert ((tmp_path / "memory" / "data_quality.csv").read_text()
            == (tmp_path / "streaming" / "data_quality.csv").read_text())
