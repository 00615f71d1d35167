import numpy as np
import pandas as pd
import pytest

from gridwatch.monthly import (
    MonthlyParams,
    irkutsk_signs,
    monthly_kwh_per_day,
    peer_groups,
    season_masks,
)

MONTHS = pd.period_range("2025-01", periods=14, freq="M")
HDD = np.array([35, 32, 25, 14, 6, 1, 0, 1, 6, 14, 25, 33, 35, 32], dtype=float)  # Jan..Feb
WARM = np.isin(MONTHS.month, (6, 7, 8))
COLD = np.isin(MONTHS.month, (12, 1, 2))


def _population(rng, n=40):
    kpd = 8.0 * rng.lognormal(0, 0.05, (14, n))
    return kpd


def _masks(n):
    return np.repeat(WARM[:, None], n, axis=1), np.repeat(COLD[:, None], n, axis=1)


def test_a_rig_from_april_is_dated_and_flagged_peers_are_not():
    rng = np.random.default_rng(1)
    kpd = _population(rng)
    kpd[3:, 0] += 24.0  # a 1 kW rig from April 2025
    warm, cold = _masks(40)
    s = irkutsk_signs(kpd, np.zeros(40, int), warm, cold)
    assert s["flagged"].tolist() == [True] + [False] * 39
    assert s.loc[0, "onset_month"] == 3 and s.loc[0, "stepped"]
    assert s.loc[0, "excess_kw"] == pytest.approx(1.0, rel=0.05)
    assert s.loc[0, "summer_ratio"] == pytest.approx(32.0 / 8.0, rel=0.05)


def test_an_electrically_heated_home_compared_with_unheated_peers_drops_in_summer():
    rng = np.random.default_rng(2)
    kpd = _population(rng)
    kpd[:, 0] += 0.9 * HDD  # heating: 4x the peers in winter, like them in summer
    warm, cold = _masks(40)
    s = irkutsk_signs(kpd, np.zeros(40, int), warm, cold)
    assert s.loc[0, "winter_ratio"] > 3
    assert not s.loc[0, "sign_peers"] and not s.loc[0, "flagged"]


def test_high_in_winter_most_is_a_seasonal_drop_even_when_summer_is_high():
    rng = np.random.default_rng(3)
    kpd = _population(rng)
    kpd[:, 0] = 8.0 * 2.8 + 1.5 * HDD  # 2.8x in summer (no rise: 2.5x needed), ~9x in winter
    warm, cold = _masks(40)
    s = irkutsk_signs(kpd, np.zeros(40, int), warm, cold,
                      MonthlyParams(min_excess_kw=0.3))
    assert s.loc[0, "sign_peers"] and not s.loc[0, "sign_summer"]
    assert not s.loc[0, "flagged"]


def test_an_unstable_high_meter_is_not_flagged_and_too_few_months_are_not_judged():
    rng = np.random.default_rng(4)
    kpd = _population(rng)
    kpd[:, 0] = 32.0 * np.array([1, 0.3, 1.6, 0.5, 1.4, 0.6, 1.7, 0.4, 1.8, 0.5, 1.5, 1, 1, 1])
    kpd[:4, 1] = np.nan  # 10 months only
    kpd[:, 1] += 24.0
    warm, cold = _masks(40)
    s = irkutsk_signs(kpd, np.zeros(40, int), warm, cold)
    assert not s.loc[0, "sign_stable"] and not s.loc[0, "flagged"]
    assert not s.loc[1, "judged"] and not s.loc[1, "flagged"]


def test_peer_groups_use_heating_where_known_and_widen_small_groups():
    meters = pd.DataFrame({
        "customer_class": ["residential"] * 30 + ["commercial"] * 3,
        "region": ["irkutsk"] * 33,
        "heating_type": ["electric"] * 12 + ["district"] * 5 + [""] * 13 + [""] * 3,
    })
    group, label = peer_groups(meters, min_peers=10)
    assert len(set(group[:12])) == 1 and label[0] == "residential, irkutsk, electric heating"
    # 5 district-heated homes are too few: they widen to class and region, with the unknown ones
    assert group[12] == group[20] and label[12] == "residential, irkutsk"
    assert label[30] == "all premises"  # 3 commercial premises: class too small as well


def test_season_masks_follow_the_temperature_and_the_hemisphere():
    months = pd.period_range("2025-01", periods=14, freq="M")
    temp = -np.cos(2 * np.pi * (months.month.to_numpy() - 1) / 12)[:, None] * 20.0
    temp = np.repeat(temp, 2, axis=1)
    warm, cold = season_masks(months, temp, np.array([False, False]))
    assert set(months[warm[:, 0]].month) == {6, 7, 8}
    assert set(months[cold[:, 0]].month) == {12, 1, 2}
    warm, _ = season_masks(months, None, np.array([True, False]))  # no weather: calendar
    assert set(months[warm[:, 0]].month) == {12, 1, 2}
    assert set(months[warm[:, 1]].month) == {6, 7, 8}


def test_monthly_kwh_per_day_is_the_energy_over_the_days_of_the_period():
    starts = pd.date_range("2025-01-01", periods=3, freq="MS", tz="UTC")
    reads = pd.DataFrame({"meter_id": "Y1", "timestamp": starts, "kwh": [310.0, 280.0, np.nan],
                          "period_hours": [31 * 24.0, 28 * 24.0, 31 * 24.0]})
    kpd = monthly_kwh_per_day(reads, ["Y1", "Y2"], "UTC", pd.Period("2025-03", "M"), 3)
    assert kpd["Y1"].tolist()[:2] == [10.0, 10.0]
    assert np.isnan(kpd["Y1"].iloc[2]) and kpd["Y2"].isna().all()
