"""Daily register reads: what one value per meter per day can show (issue 16, item 3).

A rig adds about 24 x its power [kWh] to every day it runs. On a meter read
once a day, that is a step in daily energy that persists, and its size,
its onset to the day, the meter's level against similar premises and the
part temperature explains are all visible. What is not visible is the load
within the day: whether it is flat day and night (the interval detector's
strongest sign) or the evening peak of a bigger household. The score of a
daily meter is capped (:data:`MAX_SCORE`) and every reason says so.

One model for all daily meters at once (:func:`daily_step_signs`)::

    kwh[d, m] = b0 + b1 * HDD[d, m] + b2 * CDD[d, m] + b3 * weekend[d] + c_m * 1[d >= onset_m] + e

scanned over every candidate onset day by
:func:`gridwatch.levelshift.scan_level_shift` (batched normal equations,
no per-meter fit).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.levelshift import scan_level_shift

HEATING_BASE_C = 15.5
"""Heating degree-day base [degrees C]."""
COOLING_BASE_C = 22.0
"""Cooling degree-day base [degrees C]."""
MAX_SCORE = 0.85
"""Highest score of a daily meter: the load's shape within the day is unknown."""


@dataclass(frozen=True)
class DailyParams:
    """Thresholds of the daily rules (``[coarse]`` of the config).

    Attributes
    ----------
    min_t : float
        t-statistic of the step (jointly fitted with temperature and weekday) [-].
    min_excess_kw : float
        Size of the step / 24 h [kW].
    min_relative : float
        The step over the meter's expected daily energy [-].
    min_persistence : float
        Share of the days since the onset with at least half the step [-].
    min_post_days : int
        Valid days since the onset.
    min_pre_days : int
        Valid days before a candidate onset.
    """

    min_t: float = 8.0
    min_excess_kw: float = 0.5
    min_relative: float = 0.3
    min_persistence: float = 0.8
    min_post_days: int = 7
    min_pre_days: int = 14


def daily_kwh(coarse: pd.DataFrame, meter_ids, timezone: str,
              days: pd.DatetimeIndex) -> pd.DataFrame:
    """Energy per local day of every daily meter.

    Parameters
    ----------
    coarse : pandas.DataFrame
        Daily reads (:func:`gridwatch.resolution.split_coarse`), stamped at
        the START of the day they cover.
    meter_ids : sequence of str
    timezone : str
    days : pandas.DatetimeIndex
        The local days (naive dates at midnight).

    Returns
    -------
    pandas.DataFrame of shape (n_days, n_meters)
        [kWh]; NaN where there is no read. A read covering more than about
        a day (a missed read caught up) is spread evenly over its days.
    """
    c = coarse[coarse[col.KWH].notna()]
    hours = c["period_hours"].to_numpy(dtype=np.float64)
    n_days = np.maximum(np.rint(hours / 24.0), 1).astype(np.int64)
    start = c[col.TIMESTAMP].dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    rep = np.repeat(np.arange(len(c)), n_days)
    offset = np.arange(len(rep)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    frame = pd.DataFrame({
        "day": start.to_numpy()[rep] + offset.astype("timedelta64[D]"),
        col.METER_ID: c[col.METER_ID].to_numpy()[rep],
        col.KWH: (c[col.KWH].to_numpy() / n_days)[rep],
    })
    wide = frame.pivot_table(index="day", columns=col.METER_ID, values=col.KWH, aggfunc="sum")
    return wide.reindex(index=days, columns=list(meter_ids))


def daily_step_signs(kwh: np.ndarray, temperature_c: np.ndarray | None, weekend: np.ndarray,
                     group: np.ndarray, params: DailyParams = DailyParams()) -> pd.DataFrame:
    """A persisting step in daily energy, its size, onset and the peers, for every meter.

    Parameters
    ----------
    kwh : numpy.ndarray of shape (n_days, n_meters)
        Daily energy [kWh]; NaN: no read.
    temperature_c : numpy.ndarray of shape (n_days, n_meters) or None
        Daily mean temperature of the meter's region [degrees C].
    weekend : numpy.ndarray of bool, shape (n_days,)
    group : numpy.ndarray of int, shape (n_meters,)
        Peer groups (:func:`gridwatch.monthly.peer_groups`).
    params : DailyParams

    Returns
    -------
    pandas.DataFrame
        One row per meter (positional index): ``onset`` (day position, -1
        none), ``t``, ``excess_kw`` (step / 24 h) [kW], ``expected_kwh``
        (mean expected day without the step) [kWh], ``persistence``,
        ``n_post``, ``peer_ratio`` (days since the onset against the
        peers' median), ``has_weather``, ``flagged`` and ``evidence`` (0..1).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> kwh = rng.normal(8, 1, (60, 5)); kwh[40:, 0] += 24.0  # a 1 kW rig from day 40
    >>> signs = daily_step_signs(kwh, None, np.zeros(60, bool), np.zeros(5, int))
    >>> int(signs["onset"][0]), bool(signs["flagged"][0]), bool(signs["flagged"][1:].any())
    (40, True, False)
    """
    y = np.asarray(kwh, dtype=np.float64)
    n_days, n_meters = y.shape
    has_weather = temperature_c is not None
    covariates = [np.ones((n_meters, n_days)), np.broadcast_to(weekend.astype(float)[None, :],
                                                               (n_meters, n_days))]
    if has_weather:
        t = np.asarray(temperature_c, dtype=np.float64).T
        covariates += [np.maximum(HEATING_BASE_C - t, 0.0), np.maximum(t - COOLING_BASE_C, 0.0)]
    X = np.stack(covariates, axis=2)
    p = params
    scan = scan_level_shift(y, X, min_pre=p.min_pre_days, min_post=p.min_post_days)
    days = np.arange(n_days)[:, None]
    after = (days >= scan.onset[None, :]) & (scan.onset[None, :] >= 0)
    valid = np.isfinite(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a meter without a step or a read
        lift = y - scan.fitted_baseline
        above = np.where(after & valid, lift >= 0.5 * scan.shift[None, :], False)
        n_post = (after & valid).sum(axis=0)
        persistence = above.sum(axis=0) / np.maximum(n_post, 1)
        expected = np.nanmean(np.where(after, scan.fitted_baseline, np.nan), axis=0)
        level = np.nanmedian(np.where(after, y, np.nan), axis=0)
        window_level = np.nanmedian(y, axis=0)
        peer = np.full(n_meters, np.nan)
        for g in np.unique(group):  # the few peer groups, not the meters
            members = group == g
            peer[members] = np.nanmedian(window_level[members])
    excess_kw = scan.shift / 24.0
    peer_ratio = level / np.where(peer > 0, peer, np.nan)
    relative = scan.shift / np.where(expected > 0, expected, np.nan)
    flagged = ((scan.onset >= 0) & (scan.t >= p.min_t) & (excess_kw >= p.min_excess_kw)
               & (relative >= p.min_relative) & (persistence >= p.min_persistence)
               & (n_post >= p.min_post_days))
    with np.errstate(invalid="ignore"):
        evidence = np.nan_to_num((np.clip(scan.t / (2 * p.min_t), 0, 1)
                                  * np.clip(persistence, 0, 1)
                                  * np.clip(excess_kw / (2 * p.min_excess_kw), 0, 1)) ** (1 / 3))
    return pd.DataFrame({
        "onset": scan.onset,
        "t": scan.t,
        "excess_kw": excess_kw,
        "expected_kwh": expected,
        "persistence": persistence,
        "n_post": n_post,
        "peer_ratio": peer_ratio,
        "has_weather": np.full(n_meters, has_weather),
        "flagged": flagged,
        "evidence": evidence,
    })
