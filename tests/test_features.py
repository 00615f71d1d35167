import numpy as np
import pytest

from gridwatch.features import (
    degree_days,
    flat_increment_kw,
    hourly_increment,
    repeated_value_runs,
)


def test_repeated_value_runs_marks_whole_runs_only():
    kw = np.array([1.0, 2, 2, 2, 2, 3, 3, np.nan, 3, 3])[:, None]
    mask = repeated_value_runs(kw, min_cells=4)
    np.testing.assert_array_equal(mask[:, 0], [0, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def test_repeated_value_runs_is_per_meter():
    kw = np.column_stack([np.full(30, 0.7), np.linspace(0, 1, 30)])
    mask = repeated_value_runs(kw, min_cells=24)
    assert mask[:, 0].all() and not mask[:, 1].any()


def test_degree_days():
    hdd, cdd = degree_days(np.array([10.0, 15.5, 25.0]))
    np.testing.assert_allclose(hdd, [5.5, 0, 0])
    np.testing.assert_allclose(cdd, [0, 0, 3.0])


def test_flat_increment_tells_an_added_rig_from_a_household_that_grows():
    profile = 0.3 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, 24)) ** 2  # a daily shape
    rig = profile + 1.5
    grown = profile * 1.8
    before = np.column_stack([profile, profile])
    after = np.column_stack([rig, grown])
    flat_kw = flat_increment_kw(before, after)
    assert flat_kw[0] == pytest.approx(1.5, abs=1e-9)
    assert flat_kw[1] < 0.05


def test_flat_increment_of_a_rig_curtailed_at_peak_hours_stays_whole():
    hours = np.arange(24)
    profile = 0.3 + np.where((hours >= 17) & (hours < 21), 1.2, 0.0)
    after = profile + np.where((hours >= 17) & (hours < 20), 0.0, 2.0)
    assert flat_increment_kw(profile[:, None], after[:, None])[0] > 0.9 * 2.0


def test_flat_increment_of_a_rig_on_a_business_that_also_changed_season():
    hours = np.arange(24)
    profile = 5 + 20 * ((hours >= 8) & (hours < 18))  # business hours [kW]
    after = profile * 1.1 + 3.0  # 10 % seasonal growth plus a 3 kW rig
    assert flat_increment_kw(profile[:, None], after[:, None])[0] == pytest.approx(3.0)


def test_hourly_increment_by_hand():
    hour = np.tile(np.arange(24), 2)
    kw = np.concatenate([np.ones(24), np.full(24, 3.0)])[:, None]
    post = np.zeros((48, 1), bool)
    post[24:] = True
    before, after = hourly_increment(kw, hour, post)
    np.testing.assert_allclose(before[:, 0], 1.0)
    np.testing.assert_allclose(after[:, 0], 3.0)


def _hdd(n_days=40):
    return np.linspace(0.0, 16.0, n_days)[:, None] * np.ones((1, 3))


def test_heating_fades_to_nothing_a_crypto_heater_keeps_its_throttled_power_a_rig_ignores_it():
    from gridwatch.features import TemperatureResponse

    hdd = _hdd()
    heater = 0.2 * hdd[:, 0]  # 0.2 kW per K below the balance point
    crypto = np.where(hdd[:, 0] > 3.5, 3.0, 1.8)  # full when cold, 60 % above 12 C
    rig = np.full(len(hdd), 2.0)
    y = np.stack([heater, crypto, rig], axis=1)
    fit = TemperatureResponse(y, hdd, np.ones_like(y, dtype=bool))
    share = fit.warm_share()
    assert share[0] == pytest.approx(0.0, abs=1e-9)
    assert 0.45 < share[1] < 0.75
    assert share[2] == 1.0
    assert fit.slope_kw_per_k[0] == pytest.approx(0.2)
    assert fit.slope_t[0] > 10 and fit.slope_t[1] > 3
    np.testing.assert_allclose(fit.residual_kw[:, 0], 0.0, atol=1e-12)


def test_warm_share_is_measured_above_a_household_floor():
    from gridwatch.features import TemperatureResponse

    hdd = _hdd()
    y = 0.3 + 0.1 * hdd  # a household floor of 0.3 kW plus heating
    fit = TemperatureResponse(y, hdd, np.ones_like(y, dtype=bool))
    assert fit.warm_share(above_kw=0.3)[0] == pytest.approx(0.0, abs=1e-9)
    assert fit.warm_share()[0] > 0.1  # without it the floor looks like a kept load


def test_on_state_is_steady_for_a_rig_with_hours_off_and_not_for_a_duty_cycle():
    from gridwatch.features import on_state

    rng = np.random.default_rng(0)
    n = 24 * 30
    hour = np.arange(n) % 24
    post = (np.arange(n) >= 24 * 10)[:, None] * np.ones((1, 2), dtype=bool)
    rig_on = np.ones(n, dtype=bool)
    for start in range(24 * 10, n, 17):  # off 4 h in every 17 h: 24 % of the hours
        rig_on[start:start + 4] = False
    house = 0.2 + 0.02 * rng.standard_normal((n, 2))
    kw = house.copy()
    kw[:, 0] += np.where(post[:, 0] & rig_on, 2.0, 0.0)
    kw[:, 1] += np.where(post[:, 1], 2.0 * rng.uniform(0.0, 0.8, n), 0.0)  # duty each hour
    usual = np.full((24, 2), 0.2)
    uptime, level, noise = on_state(kw, hour, usual, post, np.array([2.0, 0.8]))
    assert uptime[0] == pytest.approx(1 - 4 / 17, abs=0.03)
    assert level[0] == pytest.approx(2.0, abs=0.05)
    assert noise[0] < 0.1 < noise[1]
