"""The simulator's metering faults and mapping errors (issue 13, item 4).

Each fault is checked against the same dataset simulated without it: the
faults draw from a generator of their own, so both share every other draw and
the fault is the only difference.
"""

from __future__ import annotations

import filecmp
import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gridwatch import columns as col
from gridwatch.cli import main
from gridwatch.simulate import simulate_dataset

TZ = "Europe/London"
N_METERS, DAYS, SEED = 300, 30, 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same dirty dataset without and with network faults."""
    base = tmp_path_factory.mktemp("base")
    faulty = tmp_path_factory.mktemp("faulty")
    kw = dict(n_meters=N_METERS, days=DAYS, seed=SEED, dirty=True)
    return (base, simulate_dataset(base, **kw),
            faulty, simulate_dataset(faulty, **kw, network_faults=True))


def _upstream(out) -> pd.DataFrame:
    return pd.read_parquet(out / "upstream.parquet")


def _series(u, asset) -> pd.Series:
    x = u[u[col.ASSET_ID] == asset]
    return pd.Series(x[col.KWH].to_numpy(), index=pd.DatetimeIndex(x[col.TIMESTAMP]))


def _faulted(labels, kind) -> dict:
    return {a: v["metering_fault"] for a, v in labels["transformers"].items()
            if (v["metering_fault"] or {}).get("kind") == kind}


def _local_start(text) -> pd.Timestamp:
    return pd.Timestamp(text).tz_localize(TZ).tz_convert("UTC")


# --- off: nothing changes ---------------------------------------------------------------
def test_simulate_without_network_faults_is_byte_identical(tmp_path):
    simulate_dataset(tmp_path / "omitted", n_meters=80, days=12, seed=3)
    off = simulate_dataset(tmp_path / "off", n_meters=80, days=12, seed=3,
                           network_faults=False, mismap_share=None)
    names = sorted(p.name for p in (tmp_path / "omitted").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "off").iterdir())
    assert names == ["labels.json", "meters.csv", "readings.parquet", "upstream.parquet",
                     "weather.csv"]
    for name in names:
        assert filecmp.cmp(tmp_path / "omitted" / name, tmp_path / "off" / name,
                           shallow=False), name
    assert "network_faults" not in off
    assert all("listed_transformer_id" not in v for v in off["meters"].values())
    assert all("metering_fault" not in v for v in off["transformers"].values())


def test_simulate_network_faults_change_only_upstream_and_meters_listing(runs):
    base, base_labels, faulty, labels = runs
    for name in ("readings.parquet", "weather.csv"):  # the physics draws are shared
        assert filecmp.cmp(base / name, faulty / name, shallow=False), name
    assert not filecmp.cmp(base / "meters.csv", faulty / "meters.csv", shallow=False)
    # The labels only gain keys.
    for m, v in base_labels["meters"].items():
        assert {k: labels["meters"][m][k] for k in v} == v
    for a, v in base_labels["transformers"].items():
        assert {k: labels["transformers"][a][k] for k in v} == v
    assert labels["dirty"] == base_labels["dirty"]
    assert json.loads((faulty / "labels.json").read_text()) == labels
    # Transformers without a fault keep their upstream series exactly.
    bu, fu = _upstream(base), _upstream(faulty)
    untouched = [a for a, v in labels["transformers"].items()
                 if v["metering_fault"] is None and v["scada_outage"] is None]
    assert len(untouched) >= 5
    pd.testing.assert_frame_equal(bu[bu[col.ASSET_ID].isin(untouched)].reset_index(drop=True),
                                  fu[fu[col.ASSET_ID].isin(untouched)].reset_index(drop=True))


# --- transformer faults -----------------------------------------------------------------
def test_simulate_ct_ratio_change_scales_upstream_from_its_start(runs):
    base, _, faulty, labels = runs
    ct = _faulted(labels, "ct_ratio")
    assert ct
    first_day = pd.Timestamp(labels["as_of"]) - pd.Timedelta(days=DAYS - 1)
    bu, fu = _upstream(base), _upstream(faulty)
    for asset, fault in ct.items():
        f = fault["factor"]
        assert 1.04 <= f <= 1.12 or 0.88 <= f <= 0.96, asset
        assert fault["date"] == fault["start"][:10]
        day = (pd.Timestamp(fault["date"]) - first_day).days
        assert int(0.25 * DAYS) <= day <= int(0.85 * DAYS), asset
        before, after = _series(bu, asset), _series(fu, asset)
        assert before.index.equals(after.index)  # same rows: only the values scale
        start = _local_start(fault["start"])
        early = before.index < start
        assert early.any() and (~early).any()
        np.testing.assert_array_equal(after[early].to_numpy(), before[early].to_numpy())
        # From the start on, factor x the true energy (each value rounded to 1 Wh again).
        np.testing.assert_allclose(after[~early].to_numpy(), f * before[~early].to_numpy(),
                                   rtol=0, atol=0.0006)
        assert after[~early].sum() / before[~early].sum() == pytest.approx(f, rel=1e-4)
        # The first scaled interval is the labelled one.
        changed = after[~early].index[after[~early].to_numpy() != before[~early].to_numpy()]
        assert changed.min() - start < pd.Timedelta(hours=2)


def test_simulate_clock_offset_shifts_upstream_timestamps(runs):
    base, _, faulty, labels = runs
    clock = _faulted(labels, "clock_offset")
    assert clock
    bu, fu = _upstream(base), _upstream(faulty)
    window_start, window_end = bu[col.TIMESTAMP].min(), bu[col.TIMESTAMP].max()
    for asset, fault in clock.items():
        h = fault["hours"]
        assert h in (-2, -1, 1, 2)
        true, stamped = _series(bu, asset), _series(fu, asset)
        # The energy of true time t is written at t + h; rows outside the window dropped.
        expected = true.copy()
        expected.index = expected.index + pd.Timedelta(hours=h)
        expected = expected[(expected.index >= window_start) & (expected.index <= window_end)]
        pd.testing.assert_series_equal(stamped, expected)
        assert len(true) - len(stamped) <= 4 * abs(h)
        assert not stamped.equals(true)


def test_simulate_scada_outage_removes_72_hours_before_the_last_3_days(runs):
    base, _, faulty, labels = runs
    outages = {a: v["scada_outage"] for a, v in labels["transformers"].items()
               if v["scada_outage"]}
    assert outages
    bu, fu = _upstream(base), _upstream(faulty)
    last_days = pd.Timestamp(labels["as_of"]).tz_localize(TZ) - pd.Timedelta(days=2)
    for asset, outage in outages.items():
        assert outage["hours"] == 72
        start = _local_start(outage["start"])
        stop = start + pd.Timedelta(hours=72)
        assert stop <= last_days.tz_convert("UTC")
        true, kept = _series(bu, asset), _series(fu, asset)
        inside = (true.index >= start) & (true.index < stop)
        assert inside.sum() > 0.9 * 72 * 4  # the window had data (a dirty gap may overlap)
        pd.testing.assert_series_equal(kept, true[~inside])
    # Every upstream row removed is counted.
    n = labels["network_faults"]
    n_steps = bu[col.TIMESTAMP].nunique()
    assert len(fu) == (len(labels["transformers"]) * n_steps - labels["dirty"]["upstream_gap_rows"]
                       - n["scada_outage_rows"] - n["clock_offset_dropped_rows"])
    assert n["scada_outage_rows"] > 0 and n["clock_offset_dropped_rows"] > 0


def test_simulate_metering_faults_avoid_bypass_transformers_and_are_counted(runs):
    _, _, _, labels = runs
    tx = labels["transformers"]
    ct, clock = set(_faulted(labels, "ct_ratio")), set(_faulted(labels, "clock_offset"))
    outage = {a for a, v in tx.items() if v["scada_outage"]}
    bypass = {v["transformer_id"] for v in labels["meters"].values() if v["type"] == "bypass"}
    assert bypass and len(tx) >= 10
    assert not (ct | clock) & bypass
    assert not ct & clock and not outage & (ct | clock)
    assert all(v["hidden_kw"] is None for a, v in tx.items() if a in ct | clock)
    # About 3 %, 3 % and 2 % of the transformers, at least one each from 10 transformers on.
    for found, share in ((ct, 0.03), (clock, 0.03), (outage, 0.02)):
        assert len(found) == max(1, math.floor(share * len(tx) + 0.5))
    n = labels["network_faults"]
    assert (n["ct_ratio"], n["clock_offset"], n["scada_outage"]) == (
        len(ct), len(clock), len(outage))


# --- mapping errors ---------------------------------------------------------------------
def test_simulate_mismapped_meters_stay_on_their_feeder(runs):
    base, _, faulty, labels = runs
    true_meters = pd.read_csv(base / "meters.csv", dtype=str).set_index(col.METER_ID)
    listed = pd.read_csv(faulty / "meters.csv", dtype=str).set_index(col.METER_ID)
    feeder_of = true_meters.groupby(col.TRANSFORMER_ID)[col.FEEDER_ID].first()
    meters = labels["meters"]
    mismapped = sorted(m for m, v in meters.items() if v["mismapped"])
    assert len(mismapped) == math.floor(0.05 * N_METERS + 0.5) == labels["network_faults"][
        "mismapped"]
    for m, v in meters.items():
        assert v["transformer_id"] == true_meters.loc[m, col.TRANSFORMER_ID]  # the truth
        assert v["listed_transformer_id"] == listed.loc[m, col.TRANSFORMER_ID]
        assert v["mismapped"] == (v["listed_transformer_id"] != v["transformer_id"])
    for m in mismapped:
        v = meters[m]
        assert v["type"] != "bypass"
        assert feeder_of[v["listed_transformer_id"]] == feeder_of[v["transformer_id"]], m
    # Only transformer_id of the mismapped meters changes in meters.csv.
    other = listed.columns.drop(col.TRANSFORMER_ID)
    pd.testing.assert_frame_equal(listed[other], true_meters[other])
    changed = listed.index[listed[col.TRANSFORMER_ID] != true_meters[col.TRANSFORMER_ID]]
    assert sorted(changed) == mismapped


def test_simulate_swapped_meters_come_in_pairs(runs):
    _, _, _, labels = runs
    meters = labels["meters"]
    swapped = {m: v for m, v in meters.items() if v["swap"]}
    n = labels["network_faults"]
    assert len(swapped) == n["swapped"] == 2 * n["swap_pairs"] > 0
    # A third of the mismapped meters: round(15 / 6) = 3 pairs.
    assert n["swap_pairs"] == math.floor(n["mismapped"] / 6 + 0.5)
    for m, v in swapped.items():
        other = meters[v["swap_with"]]
        assert other["swap_with"] == m and other["swap"]
        assert v["transformer_id"] != other["transformer_id"]
        assert v["listed_transformer_id"] == other["transformer_id"]
        assert other["listed_transformer_id"] == v["transformer_id"]
    moved = [v for v in meters.values() if v["mismapped"] and not v["swap"]]
    assert moved and all(v["swap_with"] is None for v in moved)
    assert all(not v["swap"] for v in meters.values() if not v["mismapped"])


def test_simulate_mismap_share_sets_the_number_of_mismapped_meters(tmp_path):
    none = simulate_dataset(tmp_path / "a", n_meters=120, days=6, seed=2, network_faults=True,
                            mismap_share=0.0)
    assert none["network_faults"]["mismapped"] == 0
    assert all(v["listed_transformer_id"] == v["transformer_id"]
               for v in none["meters"].values())
    many = simulate_dataset(tmp_path / "b", n_meters=300, days=6, seed=2, network_faults=True,
                            mismap_share=0.2)
    assert many["network_faults"]["mismapped"] == 60
    # Six days leave room for a 72 h outage before the last 3 days, five do not.
    assert len(many["transformers"]) >= 10 and many["network_faults"]["scada_outage"] == 1
    # The only 72 h ending before the last 3 of 6 days: the first 3 days.
    outage = [v["scada_outage"] for v in many["transformers"].values() if v["scada_outage"]]
    assert outage == [{"start": "2026-03-26T00:00", "hours": 72}]
    short = simulate_dataset(tmp_path / "c", n_meters=300, days=5, seed=2, network_faults=True)
    assert short["network_faults"]["scada_outage"] == 0
    assert short["network_faults"]["ct_ratio"] >= 1


def test_simulate_network_fault_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="network_faults needs upstream"):
        simulate_dataset(tmp_path, n_meters=20, days=3, upstream=False, network_faults=True)
    with pytest.raises(ValueError, match="needs network_faults"):
        simulate_dataset(tmp_path, n_meters=20, days=3, mismap_share=0.1)
    with pytest.raises(ValueError, match="outside 0..1"):
        simulate_dataset(tmp_path, n_meters=20, days=3, network_faults=True, mismap_share=1.5)


def test_simulate_cli_network_faults(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(tmp_path / "net"), "--meters", "60", "--days",
                                  "14", "--network-faults", "--mismap-share", "0.1"])
    assert result.exit_code == 0, result.output
    assert "6 mismapped meters" in result.output
    labels = json.loads((tmp_path / "net" / "labels.json").read_text())
    assert labels["network_faults"]["mismapped"] == 6
    assert labels["network_faults"]["mismap_share"] == 0.1
    result = runner.invoke(main, ["simulate", str(tmp_path / "x"), "--mismap-share", "0.1"])
    assert result.exit_code == 2 and "--mismap-share needs --network-faults" in result.output
    assert not (tmp_path / "x").exists()
