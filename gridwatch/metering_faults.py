"""Metering faults of an asset's upstream measurement: a ratio change and a clock offset.

An energy balance compares what an asset delivers with what its meters
record. Two faults of the upstream measurement make that difference move
without any energy going astray (issue 13):

- **A ratio change** (a CT replaced by one of another ratio, a meter constant
  changed): from some moment on the upstream reading is ``k`` times what it
  was. The unexplained part grows *in proportion to the load* at every hour,
  ``(k - 1) x delivered``, where a hidden rig adds the same kW at every hour.
  :func:`ratio_changes` fits both models on the hourly cells after a
  candidate onset and calls it a ratio change when the proportional model
  explains the change and the constant one does not.
- **A clock offset** (a SCADA clock set to the wrong zone, or drifted by
  whole hours): the upstream series is the meters' sum shifted in time, so
  the residual follows the slope of the daily load curve and vanishes when
  the series is shifted back. :func:`clock_offsets` tries every shift of up
  to ``max_hours`` and keeps the one that leaves the smallest residual.

Both work on whole ``(n_cells, n_assets)`` arrays: every shift, every asset,
every model at once (batched normal equations over the assets; the sums over
cells run row by row, so an asset's result does not depend on which other
assets are analysed with it).

References: ``docs/data-contract.md §transformers.csv`` (``kind =
metering_fault``); issue 13.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gridwatch.days import DayGrid, daily_mean
from gridwatch.lstsq import batched_least_squares

__all__ = ["ClockOffsets", "RatioChanges", "clock_offsets", "ratio_changes", "shift_rows"]

CLOCK_MAX_HOURS = 3  # whole-hour shifts tried each way [h]
CLOCK_MAX_RSS_RATIO = 0.5  # the best shift leaves at most this share of the unshifted residual [-]
CLOCK_MIN_DAYS = 7  # days of overlap the comparison needs [days]
RATIO_MAX_MAR_RATIO = 0.35  # the proportional model leaves at most this share of the constant one's [-]
RATIO_MAX_NOISE = 2.0  # ... and at most this many times the residual before the onset [-]
RATIO_MIN_CHANGE = 0.015  # smallest ratio change reported, |k - 1| [-]
RATIO_MIN_DAYS = 2  # full days after the onset the fit needs [days]
RATIO_PRE_DAYS = 14  # days before the change it is judged against [days]
PROFILE_MIN_LOAD_SPREAD = 0.08  # the load's daily profile must vary this much (CV) to tell [-]
PROFILE_MAX_RSS_SHARE = 0.7  # the load's profile explains at least 30 % of the change's [-]
PROFILE_MIN_SLOPE_T = 4.0  # t of the change's slope on the load's profile [-]
PROFILE_STRONG_RSS_SHARE = 0.3  # ... and for a ratio change on the profile alone [-]
PROFILE_STRONG_SLOPE_T = 6.0
PROFILE_MIN_HOURS = 8  # hours of day with data (fewer on the dark hours behind PV) [h]
PROFILE_MAX_INTERCEPT = 0.4  # intercept of the free line, share of the mean change [-]
PROFILE_MAX_SLOPE_GAP = 0.3  # the free line's slope within this share of the origin line's [-]


def shift_rows(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Each column read ``cells`` rows later: ``out[t, j] = values[t + cells[j], j]``, NaN past the ends.

    Parameters
    ----------
    values : numpy.ndarray of shape (n_rows, n_columns)
    cells : numpy.ndarray of int, shape (n_columns,)
        Rows to shift each column by (0: unchanged).

    Returns
    -------
    numpy.ndarray of float64, shape (n_rows, n_columns)

    Examples
    --------
    >>> shift_rows(np.arange(4.0)[:, None], np.array([1]))[:, 0].tolist()
    [1.0, 2.0, 3.0, nan]
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rows = np.arange(n)[:, None] + np.asarray(cells, dtype=np.int64)[None, :]
    inside = (rows >= 0) & (rows < n)
    out = np.take_along_axis(values, np.clip(rows, 0, n - 1), axis=0)
    return np.where(inside, out, np.nan)


@dataclass(frozen=True)
class ClockOffsets:
    """The clock offset of every asset's upstream series.

    Attributes
    ----------
    cells : numpy.ndarray of int, shape (n_assets,)
        Grid cells by which the upstream series runs late: its reading of
        cell ``t`` belongs to cell ``t - cells`` (0: none found, or not certain).
    hours : numpy.ndarray of float, shape (n_assets,)
        The same in hours (positive: the upstream clock is ahead of the meters').
    rss_ratio : numpy.ndarray of float, shape (n_assets,)
        Residual left by the best shift over that left by none [-] (NaN when
        there is too little data to tell).
    certain : numpy.ndarray of bool, shape (n_assets,)
        A shift other than 0 was found, and it is certain.
    """

    cells: np.ndarray
    hours: np.ndarray
    rss_ratio: np.ndarray
    certain: np.ndarray


def clock_offsets(delivered_kw: np.ndarray, metered_kw: np.ndarray, grid: DayGrid, *,
                  max_hours: int = CLOCK_MAX_HOURS,
                  max_rss_ratio: float = CLOCK_MAX_RSS_RATIO,
                  min_days: int = CLOCK_MIN_DAYS) -> ClockOffsets:
    """Find whole-hour clock offsets between each asset's upstream series and its meters.

    For every shift ``s`` of ``-max_hours .. max_hours`` the residual
    ``delivered(t + s) - metered(t)`` is taken, its mean on each local day
    removed (losses, a hidden load, a step: none of them depends on the
    hour's alignment), and its mean square compared on the cells where every
    shift has data. A shift is certain when it is not 0 and leaves at most
    ``max_rss_ratio`` of the unshifted residual.

    Parameters
    ----------
    delivered_kw : numpy.ndarray of shape (n_cells, n_assets)
        Upstream demand per grid cell [kW], NaN where missing.
    metered_kw : numpy.ndarray of shape (n_cells, n_assets)
        Sum of the asset's meters per grid cell [kW] (gaps filled).
    grid : DayGrid
        Local days of the grid.
    max_hours : int, default 3
        Largest offset tried each way [h].
    max_rss_ratio : float, default 0.5
        A shift must leave at most this share of the unshifted residual [-].
    min_days : int, default 7
        Days of data every shift must share [days].

    Returns
    -------
    ClockOffsets

    Examples
    --------
    >>> offsets = clock_offsets(delivered, metered, grid)  # doctest: +SKIP
    >>> offsets.hours[offsets.certain]  # doctest: +SKIP
    array([1.])
    """
    delivered_kw = np.asarray(delivered_kw, dtype=np.float64)
    metered_kw = np.asarray(metered_kw, dtype=np.float64)
    n_assets = delivered_kw.shape[1]
    per_hour = max(int(round(1.0 / grid.cell_hours)), 1)
    shifts = np.arange(-max_hours, max_hours + 1) * per_hour
    nominal = int(round(24 / grid.cell_hours))
    min_cells = np.full(grid.n_days, max(nominal // 2, 1))
    residuals = []
    for s in shifts:  # a handful of shifts, each over every asset at once
        r = shift_rows(delivered_kw, np.full(n_assets, s)) - metered_kw
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            day = daily_mean(r, grid, min_cells)
        residuals.append(r - day[grid.day_of_cell])
    stack = np.stack(residuals)  # (n_shifts, n_cells, n_assets)
    common = np.isfinite(stack).all(axis=0)
    n = common.sum(axis=0)
    squares = np.where(common[None], stack, 0.0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rss = squares.sum(axis=1) / n[None, :]  # (n_shifts, n_assets), summed row by row
    zero = int(np.flatnonzero(shifts == 0)[0])
    enough = n >= min_days * nominal * 0.5
    best = np.argmin(np.where(np.isfinite(rss), rss, np.inf), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(enough & (rss[zero] > 0),
                         rss[best, np.arange(n_assets)] / rss[zero], np.nan)
    certain = enough & (best != zero) & (np.nan_to_num(ratio, nan=np.inf) <= max_rss_ratio)
    cells = np.where(certain, shifts[best], 0).astype(np.int64)
    return ClockOffsets(cells=cells, hours=cells * grid.cell_hours, rss_ratio=ratio, certain=certain)


@dataclass(frozen=True)
class RatioChanges:
    """A multiplicative step in every asset's upstream measurement.

    Attributes
    ----------
    found : numpy.ndarray of bool, shape (n_assets,)
        The change since ``day`` is a ratio change, not a load.
    factor : numpy.ndarray of float, shape (n_assets,)
        The upstream reading after the change over what it was (``k``) [-].
    day : numpy.ndarray of int, shape (n_assets,)
        Day of the change (-1 when none).
    mar_ratio : numpy.ndarray of float, shape (n_assets,)
        Typical residual after the change under the proportional model over
        that under the constant one [-].
    noise_ratio : numpy.ndarray of float, shape (n_assets,)
        Typical residual after the change under the proportional model over
        that before the change [-].
    possible : numpy.ndarray of bool, shape (n_assets,)
        Not found, but the daily profile of the change looks proportional to
        the load's (``factor`` set): a hint to check the CT ratio.
    """

    found: np.ndarray
    factor: np.ndarray
    day: np.ndarray
    mar_ratio: np.ndarray
    noise_ratio: np.ndarray
    possible: np.ndarray


def ratio_changes(resid_kw: np.ndarray, metered_kw: np.ndarray, scale_kw: np.ndarray,
                  grid: DayGrid, candidate_day: np.ndarray, *, direction: int = 0,
                  max_mar_ratio: float = RATIO_MAX_MAR_RATIO,
                  max_noise: float = RATIO_MAX_NOISE,
                  min_change: float = RATIO_MIN_CHANGE) -> RatioChanges:
    """Tell a ratio change of the upstream measurement from a new load, at each asset's candidate day.

    Two models of the hourly residual ``delivered - metered`` are fitted on
    every usable cell but those of the candidate day itself (the change
    happens some time that day): losses ``a + c x + b x^2`` (``x`` the
    metered demand over ``scale_kw``) plus

    - a constant ``s`` from the day on (a load), or
    - ``g x`` from the day on (a ratio change: ``k - 1 = g / scale_kw``).

    It is a ratio change when, on the cells after the day, the typical
    (median absolute) residual of the proportional model is at most
    ``max_mar_ratio`` of the constant model's and at most ``max_noise``
    times the residual before the day, and ``|k - 1| >= min_change``. A
    whole-house bypass follows the household's own shape, which the asset's
    load does not predict: neither model leaves it at the noise level.

    Parameters
    ----------
    resid_kw : numpy.ndarray of shape (n_cells, n_assets)
        Delivered minus metered demand [kW], NaN where unusable.
    metered_kw : numpy.ndarray of shape (n_cells, n_assets)
        Metered demand [kW].
    scale_kw : numpy.ndarray of shape (n_assets,)
        Typical size of the flow [kW] (> 0).
    grid : DayGrid
    candidate_day : numpy.ndarray of int, shape (n_assets,)
        Day of each asset's candidate change; -1 when none.
    direction : {0, 1, -1}, default 0
        The candidate is a rise (1: only ``k > 1`` is a ratio change) or a
        fall (-1: only ``k < 1``) of the residual; 0 either.

    Returns
    -------
    RatioChanges
    """
    resid_kw = np.asarray(resid_kw, dtype=np.float64)
    candidate_day = np.asarray(candidate_day, dtype=np.int64)
    day = grid.day_of_cell[:, None]
    x = np.asarray(metered_kw, dtype=np.float64) / scale_kw[None, :]
    post = (day > candidate_day[None, :]) & (candidate_day[None, :] >= 0)
    # judged against the weeks just before the change: the noise of a balance moves
    # with its meters' gaps and fills over a season
    ok = (np.isfinite(resid_kw) & np.isfinite(x) & (day != candidate_day[None, :])
          & (day >= candidate_day[None, :] - RATIO_PRE_DAYS))
    y = np.where(ok, resid_kw, 0.0)
    xs = np.where(ok, x, 0.0)
    base = [ok * 1.0, xs, xs * xs]
    post_ok = post & ok
    fits = []
    for extra in (post_ok * 1.0, post_ok * xs):  # the load model, then the ratio model
        design = np.stack([*base, extra], axis=2)  # (T, A, 4)
        beta = batched_least_squares(design, y)
        fitted = (design * beta[None, :, :]).sum(axis=2)
        fits.append((beta, np.where(ok, y - fitted, np.nan)))
    (_, r_load), (beta_ratio, r_ratio) = fits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mar_load = np.nanmedian(np.where(post_ok, np.abs(r_load), np.nan), axis=0)
        mar_ratio_post = np.nanmedian(np.where(post_ok, np.abs(r_ratio), np.nan), axis=0)
        mar_pre = np.nanmedian(np.where(ok & ~post & (day < candidate_day[None, :]),
                                        np.abs(r_ratio), np.nan), axis=0)
        mar_ratio = mar_ratio_post / mar_load
        noise_ratio = mar_ratio_post / mar_pre
    k_minus_1 = beta_ratio[:, 3] / scale_kw  # the extra g x is (k - 1) x metered
    starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
    n_post_days = (np.add.reduceat(post_ok.astype(np.int32), starts, axis=0) > 0).sum(axis=0)
    # the hours after the change are as quiet as the weeks before it: no household's
    # own noise came with it (a bypassed house brings its kettle)
    quiet = np.nan_to_num(noise_ratio, nan=np.inf) <= max_noise
    hourly = np.nan_to_num(mar_ratio, nan=np.inf) <= max_mar_ratio
    profile_g, profile, strong = _proportional_profile(resid_kw, metered_kw, ok, post_ok, grid)
    k_minus_1 = np.where(hourly, k_minus_1, profile_g)
    testable = ((candidate_day >= 0) & (n_post_days >= RATIO_MIN_DAYS) & quiet
                & (np.abs(k_minus_1) >= min_change)
                & ((direction == 0) | (np.sign(k_minus_1) == np.sign(direction))))
    # A steady rig and a bypassed household can look proportional in a noisy profile:
    # the profile alone names a ratio change only when it is unmistakable, else it is a
    # hint for the analyst beside the hidden load.
    found = testable & (hourly | strong)
    possible = testable & profile & ~found
    return RatioChanges(found=found, factor=np.where(found | possible, 1.0 + k_minus_1, np.nan),
                        possible=possible,
                        day=np.where(found, candidate_day, -1), mar_ratio=mar_ratio,
                        noise_ratio=noise_ratio)


def _hour_profile(values, use, grid):
    """Median of each column at each local hour of day over the ``use`` cells: ``(24, n)``."""
    n_days, n = grid.n_days, values.shape[1]
    cube = np.full((n_days, 24, n), np.nan)
    cube[grid.day_of_cell, grid.hour_of_cell] = np.where(use, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(cube, axis=0)


def _proportional_profile(resid_kw, metered_kw, ok, post_ok, grid):
    """Whether the change of the residual's daily profile is proportional to the load's profile.

    The hour-of-day medians average the noise of single hours away (a meter
    filled for weeks, a household's kettle). After a ratio change the
    residual rose by ``(k - 1) x load`` at each hour: a line through the
    origin of the load's profile, its slope clearly non-zero and the same as
    the origin line's. A load adds the same at every hour (an intercept, no
    slope); a bypassed household its own, peakier shape (a slope with a
    negative intercept) and the noise of its appliances, which the caller's
    quiet-hours test catches.

    Returns ``(k - 1, proportional, strong)`` per asset: ``strong`` when the
    origin line leaves at most :data:`PROFILE_STRONG_RSS_SHARE` of a flat
    change, with a steep, clearly non-zero slope.
    """
    pre = ok & ~post_ok
    change = _hour_profile(resid_kw, post_ok, grid) - _hour_profile(resid_kw, pre, grid)
    load = _hour_profile(np.asarray(metered_kw, dtype=np.float64), post_ok, grid)
    both = np.isfinite(change) & np.isfinite(load)
    n = both.sum(axis=0)
    c = np.where(both, change, 0.0)
    m = np.where(both, load, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (c * m).sum(axis=0) / (m * m).sum(axis=0)  # through the origin
        mean_c, mean_m = c.sum(axis=0) / n, m.sum(axis=0) / n
        dm = np.where(both, load - mean_m, 0.0)
        slope = (dm * np.where(both, change - mean_c, 0.0)).sum(axis=0) / (dm * dm).sum(axis=0)
        intercept = mean_c - slope * mean_m
        rss_free = (np.where(both, change - mean_c - slope * (load - mean_m), 0.0) ** 2).sum(axis=0)
        rss_flat = (np.where(both, change - mean_c, 0.0) ** 2).sum(axis=0)
        rss_origin = (np.where(both, change - g * load, 0.0) ** 2).sum(axis=0)
        spread = np.sqrt((dm * dm).sum(axis=0) / n) / np.abs(mean_m)
        slope_t = slope / np.sqrt(rss_free / np.maximum(n - 2, 1) / (dm * dm).sum(axis=0))
    proportional = ((n >= PROFILE_MIN_HOURS) & (np.nan_to_num(spread) >= PROFILE_MIN_LOAD_SPREAD)
                    & (np.abs(np.nan_to_num(slope_t)) >= PROFILE_MIN_SLOPE_T)
                    & (rss_free <= PROFILE_MAX_RSS_SHARE * rss_flat)
                    & (np.abs(intercept) <= PROFILE_MAX_INTERCEPT * np.abs(mean_c))
                    & (np.abs(slope - g) <= PROFILE_MAX_SLOPE_GAP * np.abs(g)))
    strong = (proportional & (rss_origin <= PROFILE_STRONG_RSS_SHARE * rss_flat)
              & (np.abs(np.nan_to_num(slope_t)) >= PROFILE_STRONG_SLOPE_T)
              & (np.abs(intercept) <= 0.5 * PROFILE_MAX_INTERCEPT * np.abs(mean_c)))
    return np.where(np.isfinite(g), g, 0.0), proportional, strong
