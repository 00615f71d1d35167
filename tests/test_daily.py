import numpy as np
import pandas as pd
import pytest

from gridwatch.daily import daily_kwh, daily_step_signs


def _homes(rng, n_days=120, n=30):
    return rng.lognormal(np.log(8.0), 0.15, (n_days, n))


def test_a_rig_is_dated_to_the_day_and_sized_at_24_x_kw():
    rng = np.random.default_rng(0)
    kwh = _homes(rng)
    kwh[70:, 0] += 1.5 * 24  # 1.5 kW from day 70
    s = daily_step_signs(kwh, None, np.zeros(120, bool), np.zeros(30, int))
    assert s.loc[0, "flagged"] and s.loc[0, "onset"] == 70
    assert s.loc[0, "excess_kw"] == pytest.approx(1.5, rel=0.05)
    assert s.loc[0, "peer_ratio"] > 4
    assert not s["flagged"][1:].any()


def test_a_cold_spell_on_an_electrically_heated_home_is_explained_by_temperature():
    rng = np.random.default_rng(1)
    n_days = 120
    temp = np.full((n_days, 30), 5.0) + rng.normal(0, 1, (n_days, 30))
    temp[80:95] -= 20.0  # a two-week cold spell
    kwh = _homes(rng, n_days)
    kwh[:, 0] += 1.2 * np.maximum(15.5 - temp[:, 0], 0)  # heated: +24 kWh/day in the spell
    without = daily_step_signs(kwh, None, np.zeros(n_days, bool), np.zeros(30, int))
    with_weather = daily_step_signs(kwh, temp, np.zeros(n_days, bool), np.zeros(30, int))
    assert without.loc[0, "t"] > with_weather.loc[0, "t"]
    assert not with_weather.loc[0, "flagged"]


def test_a_new_ev_charged_on_some_days_is_not_a_rig():
    rng = np.random.default_rng(2)
    kwh = _homes(rng)
    kwh[60:, 0] += rng.uniform(8, 14, 60) * (rng.random(60) < 0.6)
    s = daily_step_signs(kwh, None, np.zeros(120, bool), np.zeros(30, int))
    assert not s.loc[0, "flagged"]


def test_daily_kwh_spreads_a_caught_up_read_over_its_days():
    t = pd.to_datetime(["2026-03-01", "2026-03-02", "2026-03-04"]).tz_localize("UTC")
    reads = pd.DataFrame({"meter_id": "D1", "timestamp": t, "kwh": [8.0, 20.0, 9.0],
                          "period_hours": [24.0, 48.0, 24.0]})
    days = pd.date_range("2026-03-01", periods=5, freq="D")
    wide = daily_kwh(reads, ["D1"], "UTC", days)
    assert wide["D1"].tolist()[:4] == [8.0, 10.0, 10.0, 9.0]
    assert np.isnan(wide["D1"].iloc[4])
