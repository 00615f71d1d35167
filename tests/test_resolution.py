import numpy as np
import pandas as pd
import pytest

from gridwatch.resolution import split_coarse

METERS = pd.DataFrame({"meter_id": ["I1", "D1", "Y1", "W1"]})


def _readings():
    interval = pd.date_range("2026-03-01", periods=96, freq="30min", tz="UTC")
    # daily reads at local midnight across the spring DST change (a 23 h day)
    daily = pd.date_range("2026-03-20", periods=20, freq="D").tz_localize("Europe/London")
    monthly = pd.date_range("2025-01-01", periods=14, freq="MS", tz="UTC")
    weekly = pd.date_range("2026-01-01", periods=10, freq="7D", tz="UTC")
    parts = [("I1", interval, 0.2), ("D1", daily.tz_convert("UTC"), 9.0),
             ("Y1", monthly, 300.0), ("W1", weekly, 50.0)]
    frame = pd.concat([pd.DataFrame({"meter_id": m, "timestamp": t, "kwh": v})
                       for m, t, v in parts], ignore_index=True)
    frame["meter_id"] = frame["meter_id"].astype("category")
    return frame


def test_daily_and_monthly_meters_are_taken_out_interval_and_weekly_left():
    interval, coarse, issues = split_coarse(_readings(), METERS, max_plausible_kw=100.0)
    assert set(interval["meter_id"].astype(str)) == {"I1", "W1"}  # weekly: refused by cleaning
    res = coarse.groupby("meter_id")["resolution"].first().to_dict()
    assert res == {"D1": "daily", "Y1": "monthly"}
    frame = issues.to_frame()
    assert set(frame.loc[frame["code"] == "readings.daily_reads", "meter_id"]) == {"D1"}
    assert set(frame.loc[frame["code"] == "readings.monthly_reads", "meter_id"]) == {"Y1"}


def test_period_of_a_read_runs_to_the_next_read():
    _, coarse, _ = split_coarse(_readings(), METERS, max_plausible_kw=100.0)
    daily = coarse[coarse["meter_id"] == "D1"]["period_hours"].to_numpy()
    assert sorted(set(daily)) == [23.0, 24.0]  # 29 March 2026: a 23 h day in London
    monthly = coarse[coarse["meter_id"] == "Y1"]["period_hours"].to_numpy()
    assert monthly[0] == 31 * 24 and monthly[1] == 28 * 24  # January, February 2025


def test_repairs_are_counted_never_silent():
    r = _readings()
    y1 = r[r["meter_id"] == "Y1"]
    extra = y1.iloc[[2, 3]].assign(kwh=[300.0, 999.0])  # a repeat and a correction, later in file
    bad = r.index[r["meter_id"] == "Y1"][5]
    r.loc[bad, "kwh"] = -5.0
    r = pd.concat([r, extra], ignore_index=True)
    r["meter_id"] = r["meter_id"].astype(pd.CategoricalDtype(["I1", "D1", "Y1", "W1"]))
    _, coarse, issues = split_coarse(r, METERS, max_plausible_kw=100.0)
    counts = issues.to_frame().groupby("code")["count"].sum()
    assert counts["readings.duplicate_row"] == 1
    assert counts["readings.conflicting_duplicate"] == 1
    assert counts["readings.negative_kwh"] == 1
    y = coarse[coarse["meter_id"] == "Y1"].reset_index(drop=True)
    assert len(y) == 14 and y.loc[3, "kwh"] == 999.0  # the last row in file order is kept
    assert np.isnan(y.loc[5, "kwh"])


@pytest.mark.parametrize("kind", ["categorical", "str"])
def test_unknown_meters_are_left_to_the_interval_cleaning(kind):
    r = _readings()
    r["meter_id"] = r["meter_id"].astype(str).replace({"Y1": "Z9"})
    if kind == "categorical":
        r["meter_id"] = r["meter_id"].astype("category")
    interval, coarse, _ = split_coarse(r, METERS, max_plausible_kw=100.0)
    assert "Z9" in set(interval["meter_id"].astype(str))
    assert "Z9" not in set(coarse["meter_id"])
