"""The field load models: what each says it draws, it draws."""

import numpy as np
import pytest

from gridwatch import loads

STEP_H = 0.25
N_STEPS = 96 * 60  # 60 days of 15-minute steps


@pytest.mark.parametrize("off_share", [0.0, 0.1, 0.3])
def test_uptime_mask_is_off_the_share_asked_in_blocks_of_hours(off_share):
    rng = np.random.default_rng(3)
    on = loads.uptime_mask(N_STEPS, 40, step_hours=STEP_H, off_share=off_share, rng=rng)
    assert abs((1 - on.mean()) - off_share) < 0.03
    if off_share:
        starts = (on[:-1] & ~on[1:]).sum()
        mean_block_h = (~on).sum() / starts * STEP_H
        assert 1.0 <= mean_block_h <= 6.0 * 1.2  # blocks of 1-6 h (some merge)


def test_window_mask_covers_the_evening_peak_on_weekdays_only():
    hour = np.tile(np.arange(24.0), 7)
    weekend = np.repeat([False] * 5 + [True] * 2, 24)
    mask = loads.window_mask(hour, weekend, start_h=np.array([16.0]), length_h=np.array([4.0]),
                             weekdays_only=np.array([True]))
    assert mask[:, 0].sum() == 5 * 4
    assert mask[16:20, 0].all() and not mask[20, 0]


def test_a_rig_draws_its_nominal_power_while_on():
    rng = np.random.default_rng(1)
    on = np.ones((N_STEPS, 3), dtype=bool)
    on[:, 2] = np.arange(N_STEPS) >= N_STEPS // 2
    kw = loads.rig_kw(np.array([1.35, 3.25, 2.0]), on, temperature_c=15.0, rng=rng)
    np.testing.assert_allclose(kw[:, :2].mean(axis=0), [1.35, 3.25], rtol=0.01)
    assert kw[: N_STEPS // 2, 2].max() == 0 and kw[N_STEPS // 2:, 2].mean() == pytest.approx(2.0, rel=0.01)


def test_gpu_restarts_take_a_few_percent_of_the_hours():
    rng = np.random.default_rng(2)
    on = np.ones((N_STEPS, 20), dtype=bool)
    kw = loads.rig_kw(np.full(20, 0.4), on, temperature_c=15.0, rng=rng, ripple=0.05,
                      restarts_per_day=4.0, step_hours=STEP_H)
    down = (kw == 0).mean()
    assert 0.01 < down < 0.1  # 4 restarts of 5-30 min a day
    assert kw[kw > 0].std() / 0.4 == pytest.approx(0.05, rel=0.2)


def test_a_crypto_heater_is_throttled_when_warm_and_full_when_cold():
    rng = np.random.default_rng(4)
    temp = np.where(np.arange(N_STEPS) < N_STEPS // 2, 2.0, 20.0)[:, None]
    kw = loads.crypto_heater_kw(np.array([3.0]), np.ones((N_STEPS, 1), dtype=bool),
                                temperature_c=temp, throttle_share=np.array([0.6]), rng=rng)
    # full power, and 60 % of it, each with its fans' drift of 0.3 %/K from 15 C
    assert kw[: N_STEPS // 2].mean() == pytest.approx(3.0 * (1 + 0.003 * (2 - 15)), rel=0.01)
    assert kw[N_STEPS // 2:].mean() == pytest.approx(1.8 * (1 + 0.003 * (20 - 15)), rel=0.01)


def test_a_heat_pump_saturates_when_cold_and_fades_when_warm():
    rng = np.random.default_rng(5)
    hour = np.tile(np.arange(0, 24, STEP_H), 60)
    temp = np.linspace(-10.0, 18.0, N_STEPS)[:, None]
    kw = loads.heat_pump_kw(temp, hour, rated_kw=np.array([2.0]), heat_loss_kw_per_k=np.array([0.4]),
                            rng=rng, step_hours=STEP_H, hot_water_h=np.array([3.0]))[:, 0]
    cold, mild, warm = (kw[(temp[:, 0] >= lo) & (temp[:, 0] < hi) & ~((hour >= 3) & (hour < 4))]
                        for lo, hi in ((-10, -5), (5, 8), (16, 18)))
    assert cold.mean() == pytest.approx(2.0, rel=0.1)  # at its rated input
    assert warm.mean() < 0.05  # nothing to heat above the balance point
    assert 0.2 < mild.mean() < cold.mean()
    dhw = kw[(hour >= 3) & (hour < 4) & (temp[:, 0] > 16)]
    assert dhw.mean() == pytest.approx(2.0, rel=0.1)  # the daily hot-water hour


def test_cycling_draws_its_duty_times_its_power():
    rng = np.random.default_rng(6)
    kw = loads.cycling_kw(N_STEPS, 30, power_kw=np.full(30, 0.12), duty=np.full(30, 0.4),
                          mean_on_min=np.full(30, 25.0), step_hours=STEP_H, rng=rng)
    assert kw.mean() == pytest.approx(0.048, rel=0.05)
    assert kw.max() <= 0.12 + 1e-6


def test_pv_makes_nothing_at_night_and_its_peak_under_its_rating():
    rng = np.random.default_rng(7)
    steps = np.arange(N_STEPS)
    solar_hour = (steps * STEP_H) % 24
    kw = loads.pv_kw(np.array([4.0]), lat_deg=np.array([52.0]), day_of_year=120 + steps // 96,
                     solar_hour=solar_hour, day=steps // 96, rng=rng)[:, 0]
    assert kw[(solar_hour < 3) | (solar_hour > 21)].max() == 0
    assert 2.0 < kw.max() <= 4.0 * loads.PV_PERFORMANCE_RATIO


def test_registers_split_net_demand_by_its_sign():
    imp, exp = loads.import_export_kw(np.array([[1.0, 0.2]]), np.array([[0.4, 1.0]]))
    np.testing.assert_allclose(imp, [[0.6, 0.0]])
    np.testing.assert_allclose(exp, [[0.0, 0.8]])
