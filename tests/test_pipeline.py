"""The whole run on small datasets: outputs, accounting, atomicity, isolation of bad meters."""

import json

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.config import config_from_dict
from gridwatch.days import last_full_day
from gridwatch.decisions import hold_back
from gridwatch.errors import InputError
from gridwatch.pipeline import run
from gridwatch.simulate import simulate_dataset


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    labels = simulate_dataset(path, n_meters=150, days=30, seed=11, as_of="2026-03-31")
    return path, labels


@pytest.fixture(scope="module")
def sim_run(sim, tmp_path_factory):
    path, labels = sim
    out = tmp_path_factory.mktemp("out")
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]},
                            "analysis": {"history_days": 30}})
    return run(path, out, config=cfg), out


def test_outputs_have_the_contract_columns(sim_run):
    result, out = sim_run
    flags = pd.read_csv(out / "flags.csv", dtype=str, keep_default_na=False)
    assert list(flags.columns) == list(col.FLAGS_COLUMNS)
    assert flags["rank"].astype(int).tolist() == list(range(1, len(flags) + 1))
    assert set(flags["flagged"]) <= {"true", "false"}
    assert set(flags["kind"]) <= {"", "visible_load", "hidden_load_suspect"}
    scores = flags["score"].astype(float)
    assert scores.between(0, 1).all()
    flagged = flags[flags["flagged"] == "true"]
    assert flagged["kind"].isin(["visible_load", "hidden_load_suspect"]).all()
    assert (flagged["excess_kw"].astype(float) > 0).all()
    transformers = pd.read_csv(out / "transformers.csv")
    assert list(transformers.columns) == list(col.TRANSFORMERS_COLUMNS)
    dq = pd.read_csv(out / "data_quality.csv")
    assert list(dq.columns) == list(col.DATA_QUALITY_COLUMNS)
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_every_meter_with_data_is_in_flags_or_explained(sim, sim_run):
    path, labels = sim
    result, out = sim_run
    flags = pd.read_csv(out / "flags.csv", dtype=str, keep_default_na=False)
    dq = pd.read_csv(out / "data_quality.csv", dtype=str, keep_default_na=False)
    excluded = set(dq.loc[dq["action"] == "excluded", "meter_id"])
    assert set(labels["meters"]) <= set(flags["meter_id"]) | excluded


def test_row_accounting_readings_in_equals_used_plus_dropped(sim_run):
    result, out = sim_run
    info = json.loads((out / "run.json").read_text())
    counts = info["counts"]["readings"]
    assert counts["in"] > 0
    assert counts["in"] == counts["used"] + sum(counts["dropped_by_reason"].values())
    assert counts["dropped_by_reason"].get("readings.duplicate_row", 0) > 0  # the sim is dirty
    assert info["as_of"] == "2026-03-31"
    assert info["config"]["analysis"]["history_days"] == 30


def test_default_as_of_is_the_last_full_day():
    readings = pd.DataFrame({
        "meter_id": ["A", "A"],
        "timestamp": pd.to_datetime(["2026-03-30 23:00", "2026-03-31 12:00"], utc=True),
    })
    assert str(last_full_day(readings, pd.Series({"A": 60}), "UTC")) == "2026-03-30"
    readings.loc[1, "timestamp"] = pd.Timestamp("2026-03-31 23:00", tz="UTC")
    assert str(last_full_day(readings, pd.Series({"A": 60}), "UTC")) == "2026-03-31"


def _tiny_dataset(path, n_meters=20, days=20, extra_rows=None):
    rng = np.random.default_rng(5)
    ts = pd.date_range("2026-03-01", periods=days * 24, freq="1h", tz="UTC")
    ids = [f"M{i:02d}" for i in range(n_meters)]
    meters = pd.DataFrame({"meter_id": ids, "customer_class": "residential",
                           "tariff_per_kwh": 0.2})
    rows = pd.DataFrame({
        "meter_id": np.repeat(ids, len(ts)),
        "timestamp": np.tile(ts.strftime("%Y-%m-%dT%H:%M:%SZ"), n_meters),
        "kwh": rng.uniform(0.1, 1.0, n_meters * len(ts)).round(3),
    })
    if extra_rows is not None:
        rows = pd.concat([rows, extra_rows], ignore_index=True)
    path.mkdir(parents=True, exist_ok=True)
    meters.to_csv(path / "meters.csv", index=False)
    rows.to_csv(path / "readings.csv", index=False)
    return path


def test_one_bad_meter_does_not_sink_the_run(tmp_path):
    # M99 reads every two hours (unsupported): it is dropped and reported, the rest runs.
    bad = pd.DataFrame({
        "meter_id": "M99",
        "timestamp": pd.date_range("2026-03-01", periods=100, freq="2h", tz="UTC")
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kwh": 0.5,
    })
    data = _tiny_dataset(tmp_path / "data", extra_rows=bad)
    meters = pd.read_csv(data / "meters.csv")
    pd.concat([meters, pd.DataFrame({"meter_id": ["M99"]})]).to_csv(data / "meters.csv",
                                                                     index=False)
    result = run(data, tmp_path / "out")
    assert len(result.flags) == 20
    dq = result.issues.to_frame()
    row = dq[(dq["code"] == "readings.unsupported_interval") & (dq["meter_id"] == "M99")]
    assert row["count"].sum() == 100


def test_suppressed_meter_is_listed_but_not_flagged(sim, tmp_path):
    path, labels = sim
    licensed = [m for m, v in labels["meters"].items() if v["type"] == "suppressed_licensed"]
    cfg = config_from_dict({
        "data": {"timezone": labels["timezone"]}, "analysis": {"history_days": 30},
        "suppress": [{"meter_id": m, "reason": "licensed data room"} for m in licensed],
    })
    flags = run(path, tmp_path, config=cfg).flags.set_index("meter_id")
    rows = flags.loc[licensed]
    assert (rows["flagged"] == "false").all()
    assert rows["reasons"].str.startswith("suppressed in config (licensed data room)").all()
    # a held-back site scores below every flagged one, so that rank follows score
    assert (flags.loc[flags["flagged"] == "false", "score"].dropna() < 0.5).all()
    assert flags.sort_values("rank")["score"].dropna().is_monotonic_decreasing


def test_holding_back_a_flagged_site_caps_its_score_and_says_what_it_was():
    table = pd.DataFrame({"meter_id": ["A", "B", "C"], "flagged": [True, True, False],
                          "kind": ["visible_load"] * 2 + [""], "score": [0.97, 0.8, 0.3],
                          "reasons": ["new steady load of 2 kW", "x", "y"]})
    out = hold_back(table, pd.Series({"A": "suppressed in config (data room)", "C": "closed"}),
                    id_column="meter_id")
    assert out["flagged"].tolist() == [False, True, False]
    assert out["score"].tolist() == [0.499, 0.8, 0.3]
    assert out["reasons"].iloc[0] == ("suppressed in config (data room); would be flagged "
                                      "(score 0.97): new steady load of 2 kW")
    assert out["reasons"].iloc[2] == "closed"


def test_as_of_outside_the_data_is_a_clear_error(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    with pytest.raises(InputError, match="no readings in the analysis window ending 2020-01-01"):
        run(data, tmp_path / "out", as_of="2020-01-01")


def test_a_failed_write_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    run(data, out)
    before = (out / "flags.csv").read_bytes()

    def broken(self, path, *args, **kwargs):
        with open(path, "w") as handle:
            handle.write("meter_id,ra")  # half a file, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        run(data, out)
    assert (out / "flags.csv").read_bytes() == before
    assert not list(out.glob(".*"))


def test_rerun_gives_identical_flags(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    run(data, tmp_path / "a")
    run(data, tmp_path / "b")
    assert (tmp_path / "a" / "flags.csv").read_bytes() == (tmp_path / "b" / "flags.csv").read_bytes()


def test_score_says_the_decision_and_has_no_negative_zero(sim_run):
    result, out = sim_run
    text = (out / "flags.csv").read_text()
    assert ",-0.0," not in text
    flags = pd.read_csv(out / "flags.csv", dtype={"flagged": str})
    flagged = flags["flagged"] == "true"
    assert (flags.loc[flagged, "score"] >= 0.5).all()
    assert (flags.loc[~flagged, "score"] < 0.5).all()


def test_early_as_of_with_little_data_runs_without_warnings(sim, tmp_path):
    # filterwarnings = error turns any numpy "All-NaN slice" warning into a failure:
    # cron must not get mail for a quiet run.
    path, labels = sim
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]}})
    result = run(path, tmp_path, as_of="2026-03-16", config=cfg)
    assert len(result.flags) > 0


def test_runs_without_weather_on_fourteen_days(tmp_path_factory):
    import shutil

    src = tmp_path_factory.mktemp("sim14")
    labels = simulate_dataset(src, n_meters=400, days=30, seed=21, as_of="2026-03-31")
    (src / "weather.csv").unlink()
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]},
                            "analysis": {"history_days": 14}})
    result = run(src, tmp_path_factory.mktemp("out14"), config=cfg)
    flags = result.flags.set_index("meter_id")
    inside = [m for m, v in labels["meters"].items()
              if v["type"] == "rig" and "2026-03-21" <= v["onset"] <= "2026-03-29"]
    assert len(inside) >= 3
    found = (flags.loc[inside, "flagged"] == "true").mean()
    assert found >= 0.8
    assert "not explained by temperature" not in " ".join(flags["reasons"])  # no weather, no claim
    shutil.rmtree(src)


def test_expected_consumption_follows_a_rig_meter_before_its_onset(sim, sim_run):
    path, labels = sim
    result, _ = sim_run
    table = result.detection.table
    rigs = table[table["flagged"] & (table["onset"] != "")]
    assert len(rigs) >= 1
    position = list(table.index).index(rigs.index[0])
    expected = result.expected.predict(result.grid, columns=[position])[:, 0]
    actual = result.kw.iloc[:, position].to_numpy()
    onset_cell = result.detection.onset_cell[position]
    before = slice(0, onset_cell)
    after = slice(onset_cell + 24, None)
    gap_before = np.nanmean(actual[before] - expected[before])
    gap_after = np.nanmean(actual[after] - expected[after])
    # Before the onset the expectation tracks the meter; after it, the rig is the gap.
    assert abs(gap_before) < 0.2 * rigs["excess_kw"].iloc[0]
    assert gap_after == pytest.approx(rigs["excess_kw"].iloc[0], rel=0.3)


def test_transformers_csv_has_every_asset_with_upstream_and_finds_hidden_loads(sim, sim_run):
    path, labels = sim
    result, out = sim_run
    transformers = pd.read_csv(out / "transformers.csv", dtype=str, keep_default_na=False)
    upstream = pd.read_parquet(path / "upstream.parquet")
    assert set(transformers["asset_id"]) == set(upstream["asset_id"].astype(str))
    hidden = {a for a, v in labels["transformers"].items() if v.get("hidden_kw")}
    flagged = set(transformers.loc[transformers["flagged"] == "true", "asset_id"])
    assert hidden  # the simulation has bypasses
    assert len(hidden & flagged) / len(hidden) >= 0.9
    assert len(flagged - hidden) <= 1
    row = transformers[transformers["flagged"] == "true"].iloc[0]
    assert float(row["unexplained_kw"]) > 0 and row["onset"] != ""


def test_a_dataset_without_upstream_has_an_empty_transformers_csv(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    run(data, tmp_path / "out")
    transformers = pd.read_csv(tmp_path / "out" / "transformers.csv")
    assert list(transformers.columns) == list(col.TRANSFORMERS_COLUMNS)
    assert transformers.empty


def test_an_upstream_asset_without_meters_is_a_counted_issue(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    meters = pd.read_csv(data / "meters.csv")
    meters["transformer_id"] = "TX-1"
    meters.to_csv(data / "meters.csv", index=False)
    ts = pd.date_range("2026-03-01", periods=20 * 96, freq="15min", tz="UTC")
    up = pd.DataFrame({"asset_id": np.repeat(["TX-1", "TX-GHOST"], len(ts)),
                       "timestamp": np.tile(ts.strftime("%Y-%m-%dT%H:%M:%SZ"), 2),
                       "kwh": 3.0})
    up.to_csv(data / "upstream.csv", index=False)
    result = run(data, tmp_path / "out")
    dq = result.issues.to_frame()
    assert "TX-GHOST" in set(dq["meter_id"])
    assert set(result.transformers["asset_id"]) >= {"TX-1"}


def test_consecutive_nights_give_new_then_ongoing(sim, tmp_path):
    from gridwatch.cases import CaseStore
    from gridwatch.pipeline import case_db_path

    path, labels = sim
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]},
                            "analysis": {"history_days": 21}, "report": {"enabled": False}})
    out = tmp_path / "latest"
    first = run(path, out, as_of="2026-03-30", config=cfg)
    second = run(path, out, as_of="2026-03-31", config=cfg)
    statuses = second.cases.set_index("case_id")["status"]
    both = set(first.flags.loc[first.flags["flagged"] == "true", "meter_id"]) & set(
        second.flags.loc[second.flags["flagged"] == "true", "meter_id"])
    assert both
    assert (statuses.loc[sorted(both)] == "ongoing").all()
    store = CaseStore(case_db_path(out, cfg))
    assert len(store.runs()) == 2
    # The first as-of again is a re-run of a back-filled night: recorded in its place (issue 14).
    third = run(path, out, as_of="2026-03-30", config=cfg)
    assert third.cases is not None
    assert third.issues.total("cases.not_recorded") == 0
    assert store.runs()["as_of"].tolist() == ["2026-03-30", "2026-03-31"]
