"""Which meters are read daily or monthly, and their reads cleaned (issue 16, items 3 and 4).

Utilities with a partial AMI rollout hold a mix: interval data for some
meters, one register read per day for many, a monthly billing read for the
rest. The ``readings`` table of ``docs/data-contract.md`` carries all of
them (one row per period, stamped at the START of the period, ``kwh`` the
energy of the period). A meter's resolution is inferred from its own
readings, like an interval meter's length (:func:`split_coarse`):

* the median step between its distinct timestamps is 23-25 h: **daily**
  (a local day is 23 or 25 h long on a DST change);
* 27-32 days: **monthly** (a billing period of 28-31 days, read on about the
  same day each month);
* anything else is left to :func:`gridwatch.cleaning.clean_readings`, which
  analyses 5-60 min meters and refuses every other step
  (``readings.unsupported_interval``).

Daily and monthly meters never enter the interval detector: their reads are
cleaned here (sorted, de-duplicated, negative and implausible values set
missing, each counted as an :class:`~gridwatch.issues.Issue` with the same
codes as interval readings) and judged by :mod:`gridwatch.daily` and
:mod:`gridwatch.monthly`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.issues import IssueLog

DAILY = "daily"
MONTHLY = "monthly"

DAILY_STEP_HOURS = (23.0, 25.0)
"""Median step between a daily meter's reads [h] (DST days are 23 or 25 h)."""
MONTHLY_STEP_DAYS = (27.0, 32.0)
"""Median step between a monthly meter's billing reads [days]."""
MAX_COARSE_ROWS = 2000
"""Meters with more rows than this are interval meters, not looked at (5+ years of daily reads)."""

PERIOD_HOURS = "period_hours"  # length of the period a coarse read covers [h]
RESOLUTION = "resolution"  # "daily" or "monthly"

_US_PER_H = 3_600_000_000


def empty_coarse() -> pd.DataFrame:
    """A coarse reads frame without rows (see :func:`split_coarse`)."""
    return pd.DataFrame({col.METER_ID: pd.Series([], dtype=object),
                         col.TIMESTAMP: pd.Series([], dtype="datetime64[us, UTC]"),
                         col.KWH: pd.Series([], dtype=np.float64),
                         PERIOD_HOURS: pd.Series([], dtype=np.float64),
                         RESOLUTION: pd.Series([], dtype=object)})


def split_coarse(readings: pd.DataFrame, meters: pd.DataFrame, *, max_plausible_kw: float,
                 not_after=None) -> tuple[pd.DataFrame, pd.DataFrame, IssueLog]:
    """Take the daily and monthly meters' reads out of the readings, cleaned.

    Parameters
    ----------
    readings : pandas.DataFrame
        Raw readings (``meter_id`` Categorical or str, ``timestamp`` tz-aware
        UTC, ``kwh`` [kWh]), as the readers return them.
    meters : pandas.DataFrame
        The meters table: only its meters' rows are looked at (the others are
        the interval cleaning's ``readings.unknown_meter``).
    max_plausible_kw : float
        A read whose mean demand over its period is above this is set missing
        (``readings.implausible_kwh``) [kW].
    not_after : pandas.Timestamp, optional
        A read that starts later is in the future (``readings.future_timestamp``, dropped).

    Returns
    -------
    interval : pandas.DataFrame
        ``readings`` without the coarse meters' rows (the same object when there are none).
    coarse : pandas.DataFrame
        ``meter_id`` (str), ``timestamp`` (UTC period start), ``kwh`` [kWh],
        ``period_hours`` (up to the meter's next read; the last read: the
        meter's median step) [h] and ``resolution`` (``"daily"`` /
        ``"monthly"``), sorted by meter and time, one row per (meter, timestamp).
    issues : IssueLog
        ``readings.daily_reads`` / ``readings.monthly_reads`` (info, one per
        meter) and the repairs.

    Notes
    -----
    Vectorised: rows per meter are counted with one ``bincount``; only the
    meters with at most :data:`MAX_COARSE_ROWS` rows (few rows: a coarse
    meter, or an interval meter with little data) have their steps measured.

    Examples
    --------
    >>> t = pd.date_range("2025-01-01", periods=14, freq="MS", tz="UTC")
    >>> r = pd.DataFrame({"meter_id": "M1", "timestamp": t, "kwh": 300.0})
    >>> interval, coarse, _ = split_coarse(r, pd.DataFrame({"meter_id": ["M1"]}),
    ...                                    max_plausible_kw=100.0)
    >>> len(interval), coarse["resolution"].iloc[0]
    (0, 'monthly')
    """
    issues = IssueLog()
    ids = readings[col.METER_ID]
    ids = ids if isinstance(ids.dtype, pd.CategoricalDtype) else ids.astype("category")
    cats = ids.cat.categories.astype(str)
    codes = ids.cat.codes.to_numpy()
    n_ids = len(cats)
    known = cats.isin(meters[col.METER_ID].astype(str))
    rows = np.bincount(codes[codes >= 0], minlength=n_ids)
    candidate = known & (rows >= 2) & (rows <= MAX_COARSE_ROWS)
    if not candidate.any():
        return readings, empty_coarse(), issues
    take = np.flatnonzero(candidate[np.maximum(codes, 0)] & (codes >= 0))
    stamps = readings[col.TIMESTAMP]
    t = (stamps.dt.tz_convert("UTC").dt.as_unit("us").array.asi8 if hasattr(stamps, "dt")
         else pd.DatetimeIndex(stamps).as_unit("us").asi8)[take]
    c = codes[take]
    order = np.lexsort((take, t, c))  # by meter, time, then file order (the last is kept)
    c, t, take = c[order], t[order], take[order]
    step_h = np.diff(t) / _US_PER_H
    same = c[1:] == c[:-1]
    steps = pd.Series(step_h[same & (step_h > 0)]).groupby(c[1:][same & (step_h > 0)]).median()
    median_h = np.full(n_ids, np.nan)
    median_h[steps.index.to_numpy()] = steps.to_numpy()
    daily = (median_h >= DAILY_STEP_HOURS[0]) & (median_h <= DAILY_STEP_HOURS[1])
    monthly = (median_h >= 24 * MONTHLY_STEP_DAYS[0]) & (median_h <= 24 * MONTHLY_STEP_DAYS[1])
    coarse_id = daily | monthly
    if not coarse_id.any():
        return readings, empty_coarse(), issues
    mine = coarse_id[c]
    c, t, take = c[mine], t[mine], take[mine]
    kwh = readings[col.KWH].to_numpy(dtype=np.float64, na_value=np.nan)[take]

    # The future, then repeats of (meter, timestamp): the last in file order is kept.
    future = np.zeros(len(t), bool)
    if not_after is not None:
        future = t > pd.Timestamp(not_after).tz_convert("UTC").as_unit("us").value
    issues.add_per_meter("readings.future_timestamp", "readings", per_id_of(c, future, cats), "dropped",
                         detail="read starts after the wall-clock time of the run (a clock set "
                                "wrong); fix the clock at the head-end")
    c, t, kwh = c[~future], t[~future], kwh[~future]
    repeat = np.zeros(len(t), bool)
    repeat[:-1] = (c[1:] == c[:-1]) & (t[1:] == t[:-1])  # a later row of the same read follows
    nxt = np.append(kwh[1:], np.nan)
    same_value = (nxt == kwh) | (np.isnan(nxt) & np.isnan(kwh))
    issues.add_per_meter("readings.duplicate_row", "readings", per_id_of(c, repeat & same_value,
                                                                         cats), "dropped",
                         detail="repeated (meter_id, timestamp) with the same kwh")
    issues.add_per_meter("readings.conflicting_duplicate", "readings",
                         per_id_of(c, repeat & ~same_value, cats), "dropped",
                         detail="repeated (meter_id, timestamp) with a different kwh; the last "
                                "row in file order is kept")
    c, t, kwh = c[~repeat], t[~repeat], kwh[~repeat]

    # Period of each read: up to the meter's next read; the last one, its median step.
    last = np.append(c[1:] != c[:-1], True)
    period_h = np.append(np.diff(t) / _US_PER_H, np.nan)
    period_h[last] = np.where(daily[c[last]], 24.0, median_h[c[last]])
    negative = kwh < 0
    issues.add_per_meter("readings.negative_kwh", "readings", per_id_of(c, negative, cats),
                         "set_missing", detail="negative kwh set missing")
    implausible = kwh / period_h > max_plausible_kw
    issues.add_per_meter("readings.implausible_kwh", "readings", per_id_of(c, implausible, cats),
                         "set_missing", detail=f"mean demand over the read's period above "
                                               f"{max_plausible_kw:g} kW; set missing")
    kwh = np.where(negative | implausible, np.nan, kwh)
    for name, which in ((DAILY, daily), (MONTHLY, monthly)):
        issues.add_per_meter(f"readings.{name}_reads", "readings",
                             pd.Series(which.astype(int), index=cats), "kept", severity="info",
                             detail=f"{name} reads (median step "
                                    f"{'about a day' if name == DAILY else 'about a month'}): "
                                    f"judged by the {name} rules, not the interval detector")
    coarse = pd.DataFrame({
        col.METER_ID: np.asarray(cats)[c].astype(object),
        col.TIMESTAMP: pd.to_datetime(t, unit="us", utc=True),
        col.KWH: kwh,
        PERIOD_HOURS: period_h,
        RESOLUTION: np.where(daily[c], DAILY, MONTHLY).astype(object),
    })
    interval = readings[~coarse_id[np.maximum(codes, 0)] | (codes < 0)]
    return interval, coarse, issues


def per_id_of(codes: np.ndarray, mask: np.ndarray, cats: pd.Index) -> pd.Series:
    """Count of ``mask`` per id code, indexed by the ids."""
    return pd.Series(np.bincount(codes[mask], minlength=len(cats)), index=cats)
