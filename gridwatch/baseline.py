"""Expected consumption of every meter, hour by hour.

The expected demand of meter ``m`` in grid cell ``t`` is

    expected_kw[t, m] = expected_daily_kw[day(t), m] + profile_kw[slot(t), m]

- ``expected_daily_kw`` is the daily level explained by weekend, heating and
  cooling degree-days and the peer group's index, fitted jointly with the
  detected level shift and with the shift removed
  (:func:`gridwatch.levelshift.shift_at`), so the anomaly never
  contaminates the expectation;
- ``profile_kw`` is the meter's time-of-week shape: the mean deviation of
  each slot from its day's mean, over the reference cells only (before the
  onset). With four weeks of reference or more the slot is the hour of the
  week (168 slots); with less, the hour of day on weekdays and weekends
  (48 slots), which 14 days of history already fill.

One fit serves all meters: the profile is a pair of matrix products of a
one-hot slot matrix with the ``(n_cells, n_meters)`` demand matrix.
"""

from __future__ import annotations

import numpy as np

from gridwatch.days import DayGrid, sum_by_slot
from gridwatch.errors import NotFittedError


def _slots(grid: DayGrid, weekly: bool) -> tuple[np.ndarray, int]:
    if weekly:
        return grid.weekday_of_cell * 24 + grid.hour_of_cell, 168
    return (grid.weekday_of_cell >= 5) * 24 + grid.hour_of_cell, 48


class ExpectedConsumption:
    """Time-of-week profile on top of a modelled daily level, for all meters at once.

    Parameters
    ----------
    weekly_profile_min_days : int, default 28
        Days in the window needed to use a 168-slot hour-of-week profile
        instead of 48 hour-of-day slots.

    Attributes
    ----------
    profile_kw_ : numpy.ndarray of shape (n_slots, n_meters)
        Mean deviation from the day's mean per slot [kW].
    expected_daily_kw_ : numpy.ndarray of shape (n_days, n_meters)
        Modelled daily mean demand [kW].
    weekly_ : bool
        Whether the profile has 168 slots (else 48).

    Examples
    --------
    >>> model = ExpectedConsumption().fit(kw, grid, reference, expected_daily_kw)  # doctest: +SKIP
    >>> expected_kw = model.predict(grid)  # doctest: +SKIP
    """

    def __init__(self, *, weekly_profile_min_days: int = 28):
        self.weekly_profile_min_days = weekly_profile_min_days

    def fit(self, kw, grid: DayGrid, reference, expected_daily_kw) -> ExpectedConsumption:
        """Learn each meter's time-of-week shape on its reference cells.

        Parameters
        ----------
        kw : numpy.ndarray of shape (n_cells, n_meters)
            Demand [kW], NaN where missing.
        grid : DayGrid
        reference : numpy.ndarray of bool, shape (n_cells, n_meters)
            Cells free of the anomaly (before each meter's onset).
        expected_daily_kw : numpy.ndarray of shape (n_days, n_meters)
            Modelled daily mean demand [kW].

        Returns
        -------
        self
        """
        kw = np.asarray(kw, dtype=np.float64)
        if kw.shape != reference.shape:
            raise ValueError(f"kw {kw.shape} and reference {reference.shape} differ in shape")
        if expected_daily_kw.shape != (grid.n_days, kw.shape[1]):
            raise ValueError(f"expected_daily_kw must have shape {(grid.n_days, kw.shape[1])}, "
                             f"got {expected_daily_kw.shape}")
        # The window's length decides (not the meters'): the same model for every
        # meter, whichever meters are fitted together.
        self.weekly_ = bool(grid.n_days >= self.weekly_profile_min_days)
        slot, n_slots = _slots(grid, self.weekly_)
        # Deviation of each cell from its own day's mean (the level is modelled separately).
        valid = ~np.isnan(kw) & reference
        starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
        n = np.add.reduceat(valid.astype(np.float64), starts, axis=0)
        s = np.add.reduceat(np.where(valid, kw, 0.0), starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            day_mean = s / n
        dev = np.where(valid, kw - day_mean[grid.day_of_cell], 0.0)
        counts = sum_by_slot(valid, slot, n_slots)
        with np.errstate(invalid="ignore", divide="ignore"):
            profile = sum_by_slot(dev, slot, n_slots) / counts
        self.profile_kw_ = np.nan_to_num(profile)  # unseen slot: no deviation
        self.expected_daily_kw_ = np.asarray(expected_daily_kw, dtype=np.float64)
        return self

    def _check_fitted(self):
        if not hasattr(self, "profile_kw_"):
            raise NotFittedError("ExpectedConsumption is not fitted yet; call fit() first")

    def predict(self, grid: DayGrid, columns=None) -> np.ndarray:
        """Expected demand per cell [kW], ``(n_cells, n_meters)`` (or the given columns)."""
        self._check_fitted()
        slot, _ = _slots(grid, self.weekly_)
        cols = slice(None) if columns is None else columns
        daily = self.expected_daily_kw_[:, cols]
        return np.maximum(daily[grid.day_of_cell] + self.profile_kw_[:, cols][slot], 0.0)

    def select(self, columns) -> ExpectedConsumption:
        """The fitted model of some meters only (positions, in the order given)."""
        self._check_fitted()
        model = type(self)(weekly_profile_min_days=self.weekly_profile_min_days)
        model.weekly_ = self.weekly_
        model.profile_kw_ = self.profile_kw_[:, columns]
        model.expected_daily_kw_ = self.expected_daily_kw_[:, columns]
        return model

    def to_dict(self) -> dict:
        """Plain-data form of the fitted model (lists), for storage."""
        self._check_fitted()
        return {
            "weekly_profile_min_days": self.weekly_profile_min_days,
            "weekly_": self.weekly_,
            "profile_kw_": self.profile_kw_.tolist(),
            "expected_daily_kw_": np.where(np.isnan(self.expected_daily_kw_), None,
                                           self.expected_daily_kw_).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ExpectedConsumption:
        """Rebuild a fitted model from :meth:`to_dict`."""
        model = cls(weekly_profile_min_days=data["weekly_profile_min_days"])
        model.weekly_ = bool(data["weekly_"])
        model.profile_kw_ = np.asarray(data["profile_kw_"], dtype=np.float64)
        model.expected_daily_kw_ = np.asarray(data["expected_daily_kw_"], dtype=np.float64)
        return model
