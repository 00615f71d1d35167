import numpy as np
import pytest

from gridwatch.features import (
    degree_days,
    flat_increment_kw,
    hourly_increment,
    repeated_value_runs,
    robust_z,
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


def test_robust_z_ignores_outliers_and_uses_groups():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 0.98, 1.0, 50.0])
    z = robust_z(values)
    assert z[-1] > 100
    assert np.all(np.abs(z[:-1]) < 4)
    groups = np.array([0] * 5 + [1] * 6)
    assert np.isnan(robust_z(np.full(3, np.nan))).all()
    assert robust_z(values, groups, min_group=5)[-1] > 10
