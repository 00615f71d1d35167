"""The labelled dataset simulator: layout, determinism, calibration, scenarios, mess."""

from __future__ import annotations

import filecmp
import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gridwatch import columns as col
from gridwatch.simulate import (
    BYPASS_KINDS,
    DEFAULT_SCENARIO_MIX,
    LABEL_TYPES,
    simulate_dataset,
    suppressed_meters,
)

TZ = "Europe/London"
CONTRACT_METER_COLUMNS = [
    col.METER_ID, col.TRANSFORMER_ID, col.FEEDER_ID, col.SUBSTATION_ID, col.CUSTOMER_CLASS,
    col.REGION, col.TARIFF_PER_KWH, col.CONTRACTED_KW, col.LAT, col.LON,
]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """300 meters, 40 days (across the 2026-03-29 DST change), no injected mess."""
    out = tmp_path_factory.mktemp("clean")
    labels = simulate_dataset(out, n_meters=300, days=40, seed=11, dirty=False)
    return out, labels


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    """Many bypass rigs and no stuck registers (which also leave energy unmetered)."""
    out = tmp_path_factory.mktemp("hidden")
    mix = {"bypass": 0.03, "frozen_meter": 0.0}
    labels = simulate_dataset(out, n_meters=300, days=30, seed=13, dirty=False, scenario_mix=mix)
    return out, labels


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    out = tmp_path_factory.mktemp("messy")
    labels = simulate_dataset(out, n_meters=300, days=40, seed=12, dirty=True)
    return out, labels


def _kw_local(readings: pd.DataFrame) -> pd.DataFrame:
    """Clean readings with mean demand [kW] and local date / hour columns."""
    r = readings.sort_values([col.METER_ID, col.TIMESTAMP])
    step_h = r.groupby(col.METER_ID)[col.TIMESTAMP].diff().dt.total_seconds() / 3600
    interval_h = step_h.groupby(r[col.METER_ID]).transform("median")
    local = r[col.TIMESTAMP].dt.tz_convert(TZ)
    return r.assign(kw=r[col.KWH] / interval_h, interval_h=interval_h,
                    date=local.dt.strftime("%Y-%m-%d"), hour=local.dt.hour)


# --- determinism -----------------------------------------------------------------------
def test_same_seed_gives_identical_files_and_labels(tmp_path):
    a = simulate_dataset(tmp_path / "a", n_meters=60, days=10, seed=7)
    b = simulate_dataset(tmp_path / "b", n_meters=60, days=10, seed=7)
    assert a == b
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["labels.json", "meters.csv", "readings.parquet", "upstream.parquet",
                     "weather.csv"]
    for name in names:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name


def test_different_seed_differs(tmp_path):
    a = simulate_dataset(tmp_path / "a", n_meters=60, days=10, seed=1)
    b = simulate_dataset(tmp_path / "b", n_meters=60, days=10, seed=2)
    ra = pd.read_parquet(tmp_path / "a" / "readings.parquet")
    rb = pd.read_parquet(tmp_path / "b" / "readings.parquet")
    assert not ra.equals(rb)
    assert a["meters"] != b["meters"]


def test_csv_and_parquet_hold_the_same_readings(tmp_path):
    simulate_dataset(tmp_path / "p", n_meters=40, days=5, as_of="2026-03-30", seed=3)
    simulate_dataset(tmp_path / "c", n_meters=40, days=5, as_of="2026-03-30", seed=3, fmt="csv")
    pq_frame = pd.read_parquet(tmp_path / "p" / "readings.parquet")
    csv_raw = pd.read_csv(tmp_path / "c" / "readings.csv", dtype={col.METER_ID: str})
    # ISO 8601 local times with their offset; the window crosses the switch to BST.
    offsets = set(csv_raw[col.TIMESTAMP].str[-6:])
    assert offsets == {"+00:00", "+01:00"}
    csv_frame = csv_raw.assign(**{col.TIMESTAMP: pd.to_datetime(csv_raw[col.TIMESTAMP],
                                                                 utc=True, format="ISO8601")})
    np.testing.assert_array_equal(csv_frame[col.METER_ID].to_numpy(),
                                  pq_frame[col.METER_ID].to_numpy())
    np.testing.assert_array_equal(csv_frame[col.TIMESTAMP].to_numpy(),
                                  pq_frame[col.TIMESTAMP].to_numpy())
    np.testing.assert_allclose(csv_frame[col.KWH].to_numpy(), pq_frame[col.KWH].to_numpy(),
                               rtol=0, atol=1e-12)
    assert (tmp_path / "c" / "upstream.csv").exists()


# --- layout ---------------------------------------------------------------------------------
def test_tables_follow_the_contract(clean):
    out, labels = clean
    meters = pd.read_csv(out / "meters.csv", dtype={col.METER_ID: str})
    assert list(meters.columns) == CONTRACT_METER_COLUMNS
    assert meters[col.METER_ID].is_unique and len(meters) == 300
    assert set(meters[col.CUSTOMER_CLASS]) <= set(col.CUSTOMER_CLASSES)
    assert meters[col.TARIFF_PER_KWH].between(0.15, 0.30).all()
    sizes = meters.groupby(col.TRANSFORMER_ID).size()
    assert sizes.between(10, 49).all()  # 10-40, the last block may absorb a short tail
    assert 2 <= meters[col.REGION].nunique() <= 3

    schema = pq.read_schema(out / "readings.parquet")
    assert schema.names == [col.METER_ID, col.TIMESTAMP, col.KWH]
    assert str(schema.field(col.TIMESTAMP).type) == "timestamp[us, tz=UTC]"
    readings = pd.read_parquet(out / "readings.parquet")
    assert set(readings[col.METER_ID]) == set(meters[col.METER_ID])
    # Whole local days: 40 days from local midnight, 2026-03-29 has 23 hours.
    first = pd.Timestamp("2026-02-20", tz=TZ).tz_convert("UTC")
    last_end = pd.Timestamp("2026-04-01", tz=TZ).tz_convert("UTC")
    assert readings[col.TIMESTAMP].min() == first
    steps = readings.sort_values([col.METER_ID, col.TIMESTAMP]).groupby(col.METER_ID)[
        col.TIMESTAMP].agg(["max", "count"])
    interval = (last_end - steps["max"]).dt.total_seconds() / 60
    assert set(interval) == {15.0, 30.0, 60.0}
    assert (steps["count"] * interval == (40 * 24 - 1) * 60).all()
    assert (interval == 30).mean() > 0.6

    upstream = pd.read_parquet(out / "upstream.parquet")
    assert list(upstream.columns) == [col.ASSET_ID, col.TIMESTAMP, col.KWH]
    assert set(upstream[col.ASSET_ID]) == set(meters[col.TRANSFORMER_ID])
    assert upstream.groupby(col.ASSET_ID)[col.TIMESTAMP].diff().dropna().eq(
        pd.Timedelta(minutes=15)).all()

    weather = pd.read_csv(out / "weather.csv")
    assert list(weather.columns) == [col.REGION, col.TIMESTAMP, col.TEMPERATURE_C]
    assert set(meters[col.REGION]) <= set(weather[col.REGION])
    assert weather.groupby(col.REGION).size().eq(40 * 24 - 1).all()  # hourly
    assert -5 < weather[col.TEMPERATURE_C].mean() < 12  # a British February-March

    on_disk = json.loads((out / "labels.json").read_text())
    assert on_disk == labels
    assert labels["as_of"] == "2026-03-31" and labels["timezone"] == TZ
    assert set(labels["meters"]) == set(meters[col.METER_ID])
    tx = meters.set_index(col.METER_ID)[col.TRANSFORMER_ID]
    assert all(v["transformer_id"] == tx[m] for m, v in labels["meters"].items())
    assert set(labels["transformers"]) == set(meters[col.TRANSFORMER_ID])


def test_label_types_appear_with_the_requested_fractions(tmp_path):
    n = 400
    mix = {"rig": 0.05, "ev_charging": 0.04, "frozen_meter": 0.0}
    labels = simulate_dataset(tmp_path, n_meters=n, days=14, seed=5, scenario_mix=mix,
                              dirty=False)
    counts = pd.Series([v["type"] for v in labels["meters"].values()]).value_counts()
    expected = {**DEFAULT_SCENARIO_MIX, **mix}
    for t, fraction in expected.items():
        assert counts.get(t, 0) == math.floor(fraction * n + 0.5), t
    assert counts["normal"] == n - sum(math.floor(f * n + 0.5) for f in expected.values())
    assert set(counts.index) <= set(LABEL_TYPES)
    positives = counts.get("rig", 0) + counts.get("rig_preexisting", 0)
    assert 0.03 <= positives / n <= 0.07
    # Rigs: about 20 % started 1-2 days before as-of, some 3-7 days before.
    ages = [(pd.Timestamp(labels["as_of"]) - pd.Timestamp(v["onset"])).days
            for v in labels["meters"].values() if v["type"] == "rig"]
    assert sum(1 <= a <= 2 for a in ages) == math.floor(0.2 * len(ages) + 0.5)
    assert sum(3 <= a <= 7 for a in ages) == math.floor(0.15 * len(ages) + 0.5)
    kw = [v["rig_kw"] for v in labels["meters"].values() if v["type"] == "rig"]
    assert min(kw) >= 0.5 and max(kw) <= 10.0
    pre = [v for v in labels["meters"].values() if v["type"] == "rig_preexisting"]
    assert pre and all(v["onset"] is None and v["rig_kw"] > 0 for v in pre)


def test_bypass_is_one_per_transformer_and_absent_without_upstream(clean, tmp_path):
    _, labels = clean
    bypass = {m: v for m, v in labels["meters"].items() if v["type"] == "bypass"}
    assert len(bypass) == 3
    hidden = {a: v for a, v in labels["transformers"].items() if v["hidden_kw"] is not None}
    assert sorted(v["culprit"] for v in hidden.values()) == sorted(bypass)
    for asset, v in hidden.items():
        culprit = bypass[v["culprit"]]
        assert culprit["transformer_id"] == asset
        assert v["onset"] == culprit["onset"] and v["bypass_kind"] == culprit["bypass_kind"]
        assert 1.0 <= culprit["rig_kw"] <= 5.0
        # What the transformer delivers beyond its meters: the rig plus the diverted house.
        assert v["hidden_kw"] == pytest.approx(culprit["rig_kw"] + culprit["diverted_kw"],
                                               abs=1e-3)
        if culprit["bypass_kind"] == "separate_line":
            assert culprit["diverted_kw"] == 0.0 and v["hidden_kw"] == culprit["rig_kw"]
    others = [v for v in labels["meters"].values() if v["type"] != "bypass"]
    assert all(v["bypass_kind"] is None and v["diverted_kw"] is None for v in others)

    labels = simulate_dataset(tmp_path, n_meters=100, days=5, seed=2, upstream=False)
    assert not (tmp_path / "upstream.parquet").exists()
    assert all(v["type"] != "bypass" for v in labels["meters"].values())


def test_bypass_kinds_come_in_about_equal_thirds(tmp_path):
    labels = simulate_dataset(tmp_path / "a", n_meters=900, days=6, seed=21, dirty=False,
                              scenario_mix={"bypass": 0.03})
    kinds = pd.Series([v["bypass_kind"] for v in labels["meters"].values()
                       if v["type"] == "bypass"]).value_counts()
    assert kinds.sum() >= 15
    assert set(kinds.index) == set(BYPASS_KINDS)
    assert kinds.max() - kinds.min() <= 1  # largest remainder of a third each
    tx_kinds = pd.Series([v["bypass_kind"] for v in labels["transformers"].values()
                          if v["hidden_kw"] is not None]).value_counts()
    assert tx_kinds.to_dict() == kinds.to_dict()
    # Another mix; the meters' types and the other meters' readings do not change.
    only = simulate_dataset(tmp_path / "b", n_meters=900, days=6, seed=21, dirty=False,
                            scenario_mix={"bypass": 0.03}, bypass_kind_mix={"whole_house": 1})
    assert {v["bypass_kind"] for v in only["meters"].values() if v["type"] == "bypass"} == {
        "whole_house"}
    assert [v["type"] for v in only["meters"].values()] == [
        v["type"] for v in labels["meters"].values()]
    ra = pd.read_parquet(tmp_path / "a" / "readings.parquet")
    rb = pd.read_parquet(tmp_path / "b" / "readings.parquet")
    moved = {m for m, v in labels["meters"].items()
             if v["type"] == "bypass" and v["bypass_kind"] != "whole_house"}
    pd.testing.assert_frame_equal(ra[~ra[col.METER_ID].isin(moved)],
                                  rb[~rb[col.METER_ID].isin(moved)])
    with pytest.raises(ValueError, match="unknown bypass kind"):
        simulate_dataset(tmp_path / "c", n_meters=20, days=3, bypass_kind_mix={"magnet": 1})


def test_bypass_kinds_change_what_the_meter_records(hidden):
    out, labels = hidden
    r = _kw_local(pd.read_parquet(out / "readings.parquet"))
    seen = set()
    for meter, v in labels["meters"].items():
        if v["type"] != "bypass":
            continue
        x = r[r[col.METER_ID] == meter]
        before = x.loc[x["date"] < v["onset"], "kw"].mean()
        after = x.loc[x["date"] > v["onset"], "kw"].mean()
        seen.add(v["bypass_kind"])
        if v["bypass_kind"] == "whole_house":
            assert after < 0.05 * before, meter
            assert v["diverted_kw"] > 0.03
        elif v["bypass_kind"] == "partial":
            assert 0.1 * before < after < 0.9 * before, meter
            assert v["diverted_kw"] > 0.0
        else:
            assert 0.5 * before < after < 2.0 * before, meter
            assert v["diverted_kw"] == 0.0
    assert seen == set(BYPASS_KINDS)


def test_upstream_has_gaps_when_dirty(messy, clean):
    for (out, labels), dirty in ((messy, True), (clean, False)):
        u = pd.read_parquet(out / "upstream.parquet")
        d = labels["dirty"]
        n_steps = u[col.TIMESTAMP].nunique()
        assert len(u) == len(labels["transformers"]) * n_steps - d["upstream_gap_rows"]
        assert (d["upstream_gaps"] > 0) == dirty and (d["upstream_gap_rows"] > 0) == dirty


def test_invalid_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown label type 'miner'"):
        simulate_dataset(tmp_path, scenario_mix={"miner": 0.1})
    with pytest.raises(ValueError, match="sum to"):
        simulate_dataset(tmp_path, scenario_mix={"rig": 0.6, "ev_charging": 0.5})
    with pytest.raises(ValueError, match="fmt"):
        simulate_dataset(tmp_path, fmt="xlsx")
    with pytest.raises(ValueError, match="time zone"):
        simulate_dataset(tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="customer class"):
        simulate_dataset(tmp_path, class_mix={"hospital": 1.0})


def test_suppressed_meters_lists_the_licensed_loads(clean):
    _, labels = clean
    entries = suppressed_meters(labels)
    licensed = sorted(m for m, v in labels["meters"].items() if v["type"] == "suppressed_licensed")
    assert [e["meter_id"] for e in entries] == licensed and len(licensed) == 6
    assert all(e["reason"] for e in entries)


# --- calibration ----------------------------------------------------------------------
def test_residential_statistics_are_in_the_edrp_range(clean):
    """EDRP (622 Scottish homes, half-hourly): mean 0.44 kW, CV about 1.1, floor 0.15-0.25."""
    out, labels = clean
    meters = pd.read_csv(out / "meters.csv", dtype={col.METER_ID: str}).set_index(col.METER_ID)
    r = _kw_local(pd.read_parquet(out / "readings.parquet"))
    normal = [m for m, v in labels["meters"].items()
              if v["type"] == "normal" and meters.loc[m, col.CUSTOMER_CLASS] == "residential"]
    r = r[r[col.METER_ID].isin(normal) & (r["interval_h"] == 0.5)]
    kw = r.pivot(index=col.TIMESTAMP, columns=col.METER_ID, values="kw")
    assert kw.shape[1] > 100
    mean = kw.mean()
    assert 0.35 <= mean.mean() <= 0.55  # EDRP 0.44
    assert 0.3 <= mean.median() <= 0.5  # EDRP 0.39
    assert mean.min() >= 0.04 and mean.max() <= 2.5
    cv = kw.std() / mean
    assert 0.9 <= cv.median() <= 1.35  # EDRP 1.06
    floor = kw.quantile(0.05) / mean
    assert 0.12 <= floor.median() <= 0.32  # EDRP 0.23 (5th percentile / mean)
    hour = kw.index.tz_convert(TZ).hour
    profile = (kw / mean).groupby(hour).mean().mean(axis=1)
    night, morning, evening = profile[2:5].mean(), profile[7:10].mean(), profile[17:21].mean()
    assert night < 0.6 < morning < evening  # EDRP: 0.4, 1.1, 1.5
    weekend = np.asarray(kw.index.tz_convert(TZ).day_of_week >= 5)
    late_morning = np.asarray((hour >= 10) & (hour < 13))
    assert kw[weekend & late_morning].mean().mean() > kw[~weekend & late_morning].mean().mean()
    daily = kw.groupby(kw.index.tz_convert(TZ).date).mean()
    assert 0.15 <= (daily.std() / daily.mean()).median() <= 0.35  # EDRP 0.23


def _residential(out) -> set:
    meters = pd.read_csv(out / "meters.csv", dtype={col.METER_ID: str})
    return set(meters.loc[meters[col.CUSTOMER_CLASS] == "residential", col.METER_ID])


def test_rig_raises_the_floor_by_about_its_draw(clean):
    out, labels = clean
    r = _kw_local(pd.read_parquet(out / "readings.parquet"))
    night = r[r["hour"] < 5].groupby([col.METER_ID, "date"])["kw"].median()
    as_of = labels["as_of"]
    rel_errors = []
    for meter, v in labels["meters"].items():
        # Households only: on a 200 kW plant a 1.35 kW step is lost in the noise.
        if v["type"] != "rig" or meter not in _residential(out):
            continue
        nights = night.loc[meter]
        before = nights[nights.index < v["onset"]].median()
        # Night of the as-of day: after the onset (8-22 h local) and after any staged unit.
        after = nights[as_of]
        rel_errors.append(abs((after - before) - v["rig_kw"]) / v["rig_kw"])
    assert len(rel_errors) >= 5
    assert np.median(rel_errors) < 0.08
    assert np.mean(np.array(rel_errors) < 0.3) >= 0.8  # an outage may cover one night


def test_lookalikes_change_the_load_after_onset(clean):
    out, labels = clean
    r = _kw_local(pd.read_parquet(out / "readings.parquet"))
    daily = r.groupby([col.METER_ID, "date"])["kw"].mean()
    households = _residential(out)
    for t in ("ev_charging", "growing_household", "cycling_load", "night_storage_heating"):
        dated = [(m, v["onset"]) for m, v in labels["meters"].items()
                 if v["type"] == t and v["onset"] and m in households]
        assert dated, t
        rises = [daily.loc[m][daily.loc[m].index >= onset].mean()
                 > daily.loc[m][daily.loc[m].index < onset].mean() for m, onset in dated]
        # Day-to-day swings (CV about 0.25) can hide a small extra load for a few days.
        assert np.mean(rises) >= 0.7, (t, rises)


def test_frozen_meter_repeats_one_value_from_onset(clean):
    out, labels = clean
    r = pd.read_parquet(out / "readings.parquet")
    local_date = r[col.TIMESTAMP].dt.tz_convert(TZ).dt.strftime("%Y-%m-%d")
    frozen = {m: v["onset"] for m, v in labels["meters"].items() if v["type"] == "frozen_meter"}
    assert frozen
    for meter, onset in frozen.items():
        after = r.loc[(r[col.METER_ID] == meter) & (local_date > onset), col.KWH]
        assert after.nunique() == 1 and after.iloc[0] > 0 and len(after) >= 24


def test_upstream_carries_the_hidden_load(hidden):
    out, labels = hidden
    meters = pd.read_csv(out / "meters.csv", dtype={col.METER_ID: str})
    r = pd.read_parquet(out / "readings.parquet")
    u = pd.read_parquet(out / "upstream.parquet")
    tx = r[col.METER_ID].map(meters.set_index(col.METER_ID)[col.TRANSFORMER_ID])
    metered_kw = r.groupby([tx, r[col.TIMESTAMP].dt.floor("h")])[col.KWH].sum()  # kWh per h
    delivered_kw = u.groupby([u[col.ASSET_ID], u[col.TIMESTAMP].dt.floor("h")])[col.KWH].sum()
    n_hidden = 0
    for asset, v in labels["transformers"].items():
        p = metered_kw.loc[asset].to_numpy()
        residual = delivered_kw.loc[asset].to_numpy() - p
        if v["hidden_kw"] is None:
            # Losses: no-load plus load losses, a few percent of the energy on every day.
            day = metered_kw.loc[asset].index.tz_convert(TZ).date
            daily = pd.Series(residual).groupby(day).sum() / pd.Series(p).groupby(day).sum()
            assert daily.between(0.0, 0.06).all(), asset
            continue
        n_hidden += 1
        # residual = no-load + k * load^2 + hidden load after its onset (+ noise).
        # The label gives the onset day only: leave that day out of the fit.
        local_day = delivered_kw.loc[asset].index.tz_convert(TZ).strftime("%Y-%m-%d")
        use = local_day != v["onset"]
        after = (local_day > v["onset"]).astype(float)
        design = np.column_stack([np.ones_like(p), p, p**2, after])
        step_kw = np.linalg.lstsq(design[use], residual[use], rcond=None)[0][3]
        # Peak-hour curtailment (2-4 h a day) and outages lower the mean draw.
        assert 0.75 * v["hidden_kw"] - 0.2 < step_kw < 1.05 * v["hidden_kw"] + 0.2, asset
    assert n_hidden >= 5


# --- mess -----------------------------------------------------------------------------
def test_dirty_counts_match_the_file(messy):
    out, labels = messy
    d = labels["dirty"]
    r = pd.read_parquet(out / "readings.parquet")
    assert len(r) == d["rows_written"]
    assert d["rows_expected"] - d["gap_rows"] + d["duplicate_rows_identical"] \
        + d["duplicate_rows_conflicting"] == d["rows_written"]
    key_dups = int(r.duplicated([col.METER_ID, col.TIMESTAMP]).sum())
    row_dups = int(r.duplicated([col.METER_ID, col.TIMESTAMP, col.KWH]).sum())
    assert row_dups == d["duplicate_rows_identical"] > 0
    assert key_dups - row_dups == d["duplicate_rows_conflicting"] > 0
    assert int((r[col.KWH] < 0).sum()) == d["negative_values"] > 0
    # Spikes are 200-2000 times the meter's mean; no real reading reaches 100 times it.
    p995 = r.groupby(col.METER_ID)[col.KWH].transform(lambda x: x.quantile(0.995))
    level = r[col.KWH].where(r[col.KWH] <= p995).groupby(r[col.METER_ID]).transform("mean")
    assert int((r[col.KWH] > 100 * level.clip(lower=0.01)).sum()) == d["spikes"] > 0
    same_meter = r[col.METER_ID].eq(r[col.METER_ID].shift())
    descents = int((same_meter & (r[col.TIMESTAMP].diff() < pd.Timedelta(0))).sum())
    assert 0 < descents <= d["out_of_order_rows"] - d["out_of_order_blocks"]
    assert d["gaps"] == d["gap_meters"] > 0 and d["gap_rows"] > 0
    mess = d["gap_rows"] + d["duplicate_rows_identical"] + d["duplicate_rows_conflicting"] \
        + d["negative_values"] + d["spikes"] + d["out_of_order_rows"]
    assert mess / d["rows_expected"] < 0.01


def test_clean_dataset_has_no_mess(clean):
    out, labels = clean
    r = pd.read_parquet(out / "readings.parquet")
    d = labels["dirty"]
    assert d["rows_written"] == d["rows_expected"] == len(r)
    assert all(v == 0 for k, v in d.items() if not k.startswith("rows_"))
    assert not r.duplicated([col.METER_ID, col.TIMESTAMP]).any()
    assert (r[col.KWH] >= 0).all()
    assert r[col.TIMESTAMP].groupby(r[col.METER_ID]).is_monotonic_increasing.all()
