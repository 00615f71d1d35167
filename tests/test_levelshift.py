import numpy as np
import pytest

from gridwatch.levelshift import scan_level_shift, shift_at


def _design(n_meters, n_days, extra=None):
    cols = [np.ones((n_days, n_meters))]
    if extra is not None:
        cols.append(extra)
    return np.stack(cols, axis=2).transpose(1, 0, 2)


def test_finds_onset_and_size_of_a_step_in_every_meter():
    rng = np.random.default_rng(0)
    n_days, n_meters = 40, 50
    onset = rng.integers(8, 38, n_meters)
    size = rng.uniform(0.5, 3.0, n_meters)
    y = 1.0 + 0.05 * rng.standard_normal((n_days, n_meters))
    y += (np.arange(n_days)[:, None] >= onset[None, :]) * size[None, :]

    result = scan_level_shift(y, _design(n_meters, n_days), min_pre=5, min_post=1)

    np.testing.assert_array_equal(result.onset, onset)
    np.testing.assert_allclose(result.shift, size, atol=0.1)
    assert np.all(result.t > 10)


def test_step_matches_a_hand_computed_difference_of_means():
    y = np.array([1.0, 1.2, 0.8, 1.0, 1.0, 3.0, 3.2, 2.8])[:, None]
    result = scan_level_shift(y, _design(1, 8), min_pre=3, min_post=1)
    assert result.onset[0] == 5
    assert result.shift[0] == pytest.approx(3.0 - 1.0)
    np.testing.assert_allclose(result.fitted_baseline[:, 0], 1.0)


def test_covariate_explains_a_rise_that_is_not_a_step():
    # Heating: the series follows degree-days, which jump at day 20; the
    # joint fit attributes the rise to them, not to a step.
    rng = np.random.default_rng(1)
    n_days = 40
    hdd = np.where(np.arange(n_days) >= 20, 10.0, 2.0) + rng.uniform(-2, 2, n_days)
    y = (0.2 + 0.1 * hdd + 0.01 * rng.standard_normal(n_days))[:, None]
    without = scan_level_shift(y, _design(1, n_days), min_pre=5)
    with_hdd = scan_level_shift(y, _design(1, n_days, hdd[:, None]), min_pre=5)
    assert without.shift[0] > 0.5
    assert with_hdd.shift[0] < 0.05


def test_missing_days_are_ignored_not_zero():
    y = np.array([1.0, 1.0, np.nan, 1.0, 1.0, 2.0, np.nan, 2.0])[:, None]
    result = scan_level_shift(y, _design(1, 8), min_pre=3)
    assert result.onset[0] == 5
    assert result.shift[0] == pytest.approx(1.0)
    assert result.n_pre[0] == 4 and result.n_post[0] == 2


def test_flat_series_has_no_upward_shift():
    y = np.ones((20, 1))
    result = scan_level_shift(y, _design(1, 20), min_pre=5)
    assert result.onset[0] == -1
    assert np.isnan(result.shift[0])


def test_shift_at_a_given_onset():
    y = np.array([[1.0, 1, 1, 4, 4, 4], [2.0, 2, 2, 2, 2, 2]]).T
    shift, base = shift_at(y, _design(2, 6), np.array([3, -1]))
    assert shift[0] == pytest.approx(3.0)
    assert np.isnan(shift[1])
    np.testing.assert_allclose(base[:, 0], 1.0)
    np.testing.assert_allclose(base[:, 1], 2.0)


def test_wrong_design_shape_is_refused():
    with pytest.raises(ValueError, match="X must have shape"):
        scan_level_shift(np.ones((10, 3)), np.ones((3, 9, 1)))


def test_the_scan_is_the_best_of_one_least_squares_fit_per_candidate_onset():
    # The scan computes every candidate's fit from suffix sums; here each candidate
    # is fitted on its own (lstsq with the step column) and the best one picked.
    rng = np.random.default_rng(4)
    n_days, n_meters, min_pre, min_post = 30, 12, 5, 2
    temperature = rng.normal(10, 4, (n_days, n_meters))
    y = 1.0 + 0.05 * temperature + 0.1 * rng.standard_normal((n_days, n_meters))
    y[18:, :6] += np.linspace(0.4, 1.5, 6)
    y[rng.random(y.shape) < 0.15] = np.nan
    X = _design(n_meters, n_days, temperature)
    result = scan_level_shift(y, X, min_pre=min_pre, min_post=min_post)
    for m in range(n_meters):
        ok = ~np.isnan(y[:, m])
        best = (-np.inf, None)
        for k in range(min_pre, n_days):
            step = (np.arange(n_days) >= k) * 1.0
            if ok[:k].sum() < min_pre or ok[k:].sum() < min_post:
                continue
            design = np.column_stack([X[m][ok], step[ok]])
            beta, ssr, *_ = np.linalg.lstsq(design, y[ok, m], rcond=None)
            if beta[-1] > 0 and -ssr[0] > best[0]:
                best = (-ssr[0], k, beta[-1])
        if best[1] is None:
            assert result.onset[m] == -1
            continue
        assert result.onset[m] == best[1], m
        np.testing.assert_allclose(result.shift[m], best[2], rtol=1e-9)
