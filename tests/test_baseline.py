import numpy as np
import pandas as pd
import pytest

from gridwatch.baseline import ExpectedConsumption
from gridwatch.days import day_grid
from gridwatch.errors import NotFittedError


def _grid(days):
    return day_grid(pd.date_range("2026-01-05", periods=days * 24, freq="1h", tz="UTC"), "UTC")


def test_recovers_a_daily_shape_on_top_of_the_modelled_level():
    grid = _grid(21)
    shape = np.sin(np.arange(24) / 24 * 2 * np.pi)  # zero-mean daily shape
    level = np.linspace(1, 2, grid.n_days)
    kw = (level[grid.day_of_cell] + shape[grid.hour_of_cell])[:, None]
    reference = np.ones_like(kw, bool)
    model = ExpectedConsumption().fit(kw, grid, reference, level[:, None])
    assert not model.weekly_  # 21 days: hour-of-day x weekend slots
    np.testing.assert_allclose(model.predict(grid), np.maximum(kw, 0), atol=1e-9)


def test_anomaly_after_the_reference_does_not_enter_the_profile():
    grid = _grid(35)
    kw = np.ones((len(grid.index), 1))
    onset_cell = 28 * 24
    kw[onset_cell:, 0] += np.where(grid.hour_of_cell[onset_cell:] < 6, 5.0, 0.0)
    reference = np.arange(len(grid.index))[:, None] < onset_cell
    model = ExpectedConsumption().fit(kw, grid, reference, np.ones((grid.n_days, 1)))
    assert model.weekly_
    np.testing.assert_allclose(model.predict(grid), 1.0)


def test_round_trip_predicts_identically():
    grid = _grid(14)
    rng = np.random.default_rng(3)
    kw = rng.uniform(0, 2, (len(grid.index), 4))
    daily = rng.uniform(0.5, 1.5, (grid.n_days, 4))
    model = ExpectedConsumption().fit(kw, grid, np.ones_like(kw, bool), daily)
    again = ExpectedConsumption.from_dict(model.to_dict())
    np.testing.assert_array_equal(model.predict(grid), again.predict(grid))


def test_predict_before_fit_is_refused():
    with pytest.raises(NotFittedError, match="fit"):
        ExpectedConsumption().predict(_grid(14))
