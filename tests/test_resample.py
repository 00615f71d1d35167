"""The analysis grid (gridwatch.resample)."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.resample import analysis_index, to_grid, weather_to_grid


def make_readings(rows):
    frame = pd.DataFrame(rows, columns=["meter_id", "timestamp", "kwh"])
    frame["meter_id"] = pd.Categorical(frame["meter_id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("us")
    return frame


def stamps(start, count, minutes):
    return pd.date_range(start, periods=count, freq=f"{minutes}min", tz="UTC")


def test_analysis_index_is_utc_and_half_open():
    index = analysis_index("2024-01-01", "2024-01-02", 60)
    assert len(index) == 24
    assert index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert index[-1] == pd.Timestamp("2024-01-01 23:00", tz="UTC")
    assert index.dtype == pd.DatetimeTZDtype("us", "UTC")


def test_analysis_index_converts_aware_bounds():
    start = pd.Timestamp("2024-01-01", tz="Asia/Kolkata")  # 2023-12-31 18:30 UTC
    index = analysis_index(start, start + pd.Timedelta(hours=2), 30)
    assert list(index.strftime("%H:%M")) == ["18:30", "19:00", "19:30", "20:00"]


def test_mixed_intervals_on_an_hourly_grid_match_hand_calculation():
    rows = []
    # A, 15-min: hour 0 full; hour 1 half present; hour 2 one sub-interval NaN
    a = [0.25, 0.5, 0.25, 0.5, 0.5, 0.5, None, None, 1.0, np.nan, 1.0, 1.0]
    rows += [("A", t, v) for t, v in zip(stamps("2024-01-01", 12, 15), a, strict=True)
             if v is not None]
    # B, 30-min: hour 0 full, hour 1 half
    rows += [("B", t, v) for t, v in zip(stamps("2024-01-01", 3, 30), [1.0, 2.0, 1.0],
                                         strict=True)]
    # C, 60-min: hour 0 only
    rows += [("C", "2024-01-01 00:00", 2.5)]
    readings = make_readings(rows)
    intervals = pd.Series({"A": 15, "B": 30, "C": 60})
    index = analysis_index("2024-01-01", "2024-01-01 04:00", 60)
    kw, coverage = to_grid(readings, intervals, meter_ids=["C", "D", "A", "B"], index=index)

    assert list(kw.columns) == ["C", "D", "A", "B"] and kw.index.equals(index)
    expected_kw = pd.DataFrame({
        "C": [2.5, np.nan, np.nan, np.nan],
        "D": [np.nan] * 4,
        "A": [1.5 / 1.0, 1.0 / 0.5, 3.0 / 0.75, np.nan],  # kWh present / hours present
        "B": [3.0 / 1.0, 1.0 / 0.5, np.nan, np.nan],
    }, index=index)
    expected_coverage = pd.DataFrame({
        "C": [1.0, 0, 0, 0], "D": [0.0] * 4, "A": [1.0, 0.5, 0.75, 0], "B": [1.0, 0.5, 0, 0],
    }, index=index)
    pd.testing.assert_frame_equal(kw, expected_kw, check_names=False, rtol=1e-12)
    pd.testing.assert_frame_equal(coverage, expected_coverage, check_names=False, rtol=1e-12)


def test_gaps_stay_nan_on_the_grid():
    times = stamps("2024-01-01", 6, 60).delete([2, 3])
    readings = make_readings([("A", t, 1.0) for t in times])
    index = analysis_index("2024-01-01", "2024-01-01 06:00", 60)
    kw, coverage = to_grid(readings, pd.Series({"A": 60}), meter_ids=["A"], index=index)
    assert kw["A"].isna().tolist() == [False, False, True, True, False, False]
    assert coverage["A"].tolist() == [1, 1, 0, 0, 1, 1]


def test_readings_outside_the_index_are_ignored():
    readings = make_readings([("A", t, 1.0) for t in stamps("2023-12-31 22:00", 6, 60)])
    index = analysis_index("2024-01-01", "2024-01-01 02:00", 60)
    kw, _ = to_grid(readings, pd.Series({"A": 60}), meter_ids=["A"], index=index)
    assert kw["A"].tolist() == [1.0, 1.0]


def test_interval_longer_than_grid_is_nan():
    readings = make_readings([("A", "2024-01-01 00:00", 1.0), ("B", "2024-01-01 00:00", 0.25)])
    index = analysis_index("2024-01-01", "2024-01-01 01:00", 15)
    kw, coverage = to_grid(readings, pd.Series({"A": 60, "B": 15}), meter_ids=["A", "B"],
                           index=index)
    assert kw["A"].isna().all() and (coverage["A"] == 0).all()
    assert kw["B"].iloc[0] == 1.0


def test_to_grid_matches_a_pandas_reference():
    rng = np.random.default_rng(11)
    parts = []
    for i, minutes in enumerate(rng.choice([15, 30, 60], size=60)):
        times = stamps("2024-01-01", 3 * 24 * 60 // minutes, minutes)
        keep = rng.random(len(times)) > 0.2
        parts.append(pd.DataFrame({"meter_id": f"M{i:02d}", "timestamp": times[keep],
                                   "kwh": rng.gamma(2, 0.1, keep.sum()), "minutes": minutes}))
    long = pd.concat(parts, ignore_index=True)
    readings = long[["meter_id", "timestamp", "kwh"]].astype({"meter_id": "category"})
    intervals = long.groupby("meter_id")["minutes"].first()
    index = analysis_index("2024-01-01 06:00", "2024-01-03", 60)
    ids = list(intervals.index[::-1]) + ["absent"]
    kw, coverage = to_grid(readings, intervals, meter_ids=ids, index=index)

    end = index[-1] + pd.Timedelta("1h")
    inside = long[(long["timestamp"] >= index[0]) & (long["timestamp"] < end)]
    cells = inside.assign(cell=inside["timestamp"].dt.floor("h"))
    sums = cells.groupby(["cell", "meter_id"]).agg(kwh=("kwh", "sum"), minutes=("minutes", "sum"))
    ref_kw = (sums["kwh"] / (sums["minutes"] / 60)).unstack().reindex(index=index, columns=ids)
    ref_cov = (sums["minutes"] / 60).unstack().reindex(index=index, columns=ids).fillna(0.0)
    np.testing.assert_allclose(kw.to_numpy(), ref_kw.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(coverage.to_numpy(), ref_cov.to_numpy(), rtol=1e-12)


def test_to_grid_without_readings_is_all_nan():
    readings = make_readings([("A", "2024-01-01", 1.0)]).iloc[:0]
    index = analysis_index("2024-01-01", "2024-01-01 02:00", 60)
    kw, coverage = to_grid(readings, pd.Series({"A": 60}), meter_ids=["A", "B"], index=index)
    assert kw.isna().all().all() and (coverage == 0).all().all()
    assert kw.shape == (2, 2)


def test_to_grid_refuses_naive_index():
    readings = make_readings([("A", "2024-01-01", 1.0)])
    with pytest.raises(ValueError, match="tz-aware"):
        to_grid(readings, pd.Series({"A": 60}), meter_ids=["A"],
                index=pd.date_range("2024-01-01", periods=3, freq="h"))


def test_weather_to_grid_interpolates_short_gaps_only():
    observations = [("00:00", 10.0), ("00:30", 12.0), ("01:00", 12.0), ("04:00", 18.0),
                    ("05:00", 20.0), ("10:00", 30.0), ("11:00", 31.0)]
    weather = pd.DataFrame({
        "region": "north",
        "timestamp": pd.to_datetime([f"2024-01-01 {t}" for t, _ in observations], utc=True),
        "temperature_c": [v for _, v in observations],
    })
    index = analysis_index("2023-12-31 23:00", "2024-01-01 13:00", 60)
    grid = weather_to_grid(weather, regions=["north", "south"], index=index)
    expected = [np.nan, 11.0, 12.0, 14.0, 16.0, 18.0, 20.0,  # 2 h gap filled
                np.nan, np.nan, np.nan, np.nan,  # 4 h gap stays missing
                30.0, 31.0, np.nan]
    np.testing.assert_allclose(grid["north"].to_numpy(), expected)
    assert grid["south"].isna().all()
    assert list(grid.columns) == ["north", "south"]


def test_spread_within_a_cell_by_hand():
    from gridwatch.resample import analysis_index, to_grid

    readings = pd.DataFrame({
        "meter_id": pd.Categorical(["A", "A", "A", "A", "B", "B"]),
        "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 00:15", "2024-01-01 00:30",
                                     "2024-01-01 00:45", "2024-01-01 00:00", "2024-01-01 00:30"],
                                    utc=True),
        "kwh": [0.75, 0.0, 0.75, 0.0, 0.5, 0.5],  # A cycles 3 kW on/off; B is steady 1 kW
    })
    grid = analysis_index("2024-01-01", "2024-01-01 01:00", 60)
    kw, _, spread = to_grid(readings, pd.Series({"A": 15, "B": 30}), meter_ids=["A", "B"],
                            index=grid, with_spread=True)
    assert kw.iloc[0].tolist() == [1.5, 1.0]
    assert spread.iloc[0, 0] == pytest.approx(1.5)  # sub-interval kW 3, 0, 3, 0
    assert spread.iloc[0, 1] == pytest.approx(0.0)
