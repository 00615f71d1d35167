"""The utility's spreadsheet rule: at least 2x similar homes, and flat.

This is the baseline every GridWatch change is measured beside: the rule an
analyst applies with a spreadsheet (and the official Irkutsk procedure of
June 2025 applies to monthly bills). A rig this rule finds and GridWatch
misses is a bug (tests and ``bench/realdata_field.py`` check it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gridwatch import columns as col

__all__ = ["RULE_MIN_FLATNESS", "RULE_MIN_PEER_MULTIPLE", "RULE_WINDOW_DAYS", "hourly_import_kw",
           "peer_multiple_rule"]

RULE_MIN_PEER_MULTIPLE = 2.0
"""Mean demand at least this many times the median of similar meters [-]."""
RULE_MIN_FLATNESS = 0.5
"""Flat: on a typical day, the quietest hour draws at least this share of the day's mean [-]."""
RULE_WINDOW_DAYS = 28
"""Days the rule looks at, ending on the last day of the data [days]."""


def peer_multiple_rule(kw: pd.DataFrame, meters: pd.DataFrame, *, timezone: str = "UTC",
                       window_days: int = RULE_WINDOW_DAYS,
                       min_multiple: float = RULE_MIN_PEER_MULTIPLE,
                       min_flatness: float = RULE_MIN_FLATNESS) -> pd.DataFrame:
    """Apply the spreadsheet rule to hourly demand.

    Parameters
    ----------
    kw : pandas.DataFrame of shape (n_hours, n_meters)
        Mean demand per hour [kW] (import register), tz-aware index, one
        column per meter; NaN where missing.
    meters : pandas.DataFrame
        ``meter_id`` and, when known, ``customer_class`` and ``region``:
        similar meters share both.
    timezone : str, default "UTC"
        Local days are taken in this zone.
    window_days : int, default :data:`RULE_WINDOW_DAYS`
    min_multiple : float, default :data:`RULE_MIN_PEER_MULTIPLE`
    min_flatness : float, default :data:`RULE_MIN_FLATNESS`

    Returns
    -------
    pandas.DataFrame
        Indexed by ``meter_id`` (the columns of ``kw``): ``mean_kw`` [kW],
        ``peer_median_kw`` [kW], ``multiple`` [-], ``flatness`` (median over
        days of the quietest hour over the day's mean) [-] and ``flagged``
        (bool).

    Examples
    --------
    >>> index = pd.date_range("2024-01-01", periods=24 * 28, freq="h", tz="UTC")
    >>> kw = pd.DataFrame({"a": 0.3, "b": 0.3, "c": 0.3, "rig": 1.5}, index=index)
    >>> peer_multiple_rule(kw, pd.DataFrame({"meter_id": ["a", "b", "c", "rig"]}))["flagged"].tolist()
    [False, False, False, True]
    """
    local = kw.index.tz_convert(timezone)
    day = local.normalize()
    last = day.max()
    recent = kw.loc[np.asarray(day > last - pd.Timedelta(days=window_days))]
    recent_day = day[np.asarray(day > last - pd.Timedelta(days=window_days))]
    mean_kw = recent.mean(axis=0)
    daily = recent.groupby(recent_day)
    flatness = (daily.min() / daily.mean().where(lambda x: x > 0)).median(axis=0)

    info = meters.set_index(col.METER_ID).reindex(kw.columns)
    group = [info[c].astype("string").fillna("") if c in info else pd.Series("", index=info.index)
             for c in (col.CUSTOMER_CLASS, col.REGION)]
    key = group[0] + "|" + group[1]
    peer_median = mean_kw.groupby(key.to_numpy()).transform("median")
    multiple = mean_kw / peer_median.where(peer_median > 0)
    flagged = (multiple >= min_multiple) & (flatness >= min_flatness)
    out = pd.DataFrame({"mean_kw": mean_kw, "peer_median_kw": peer_median, "multiple": multiple,
                        "flatness": flatness, "flagged": flagged.fillna(False).astype(bool)})
    out.index.name = col.METER_ID
    return out


def hourly_import_kw(dataset_dir) -> pd.DataFrame:
    """Hourly mean import demand per meter, read plainly from a dataset's readings.

    What an analyst's spreadsheet starts from: the ``kwh`` of each interval
    summed per clock hour and divided by the hours the readings cover (each
    meter's usual number of readings in an hour), with none of GridWatch's
    reading or cleaning.

    Parameters
    ----------
    dataset_dir : str or os.PathLike
        A directory holding ``readings.parquet`` or ``readings.csv``.

    Returns
    -------
    pandas.DataFrame of shape (n_hours, n_meters)
        [kW], indexed by the hour (UTC), one column per meter; NaN where no reading.
    """
    path = Path(dataset_dir)
    names = [col.METER_ID, col.TIMESTAMP, col.KWH]
    if (path / "readings.parquet").exists():
        r = pq.read_table(path / "readings.parquet", columns=names,
                          read_dictionary=[col.METER_ID]).to_pandas()
        t = pd.DatetimeIndex(r[col.TIMESTAMP])
    else:
        r = pd.read_csv(path / "readings.csv", usecols=names, dtype={col.METER_ID: "category"})
        t = pd.DatetimeIndex(pd.to_datetime(r[col.TIMESTAMP], utc=True, format="ISO8601"))
    ids = r[col.METER_ID].cat.categories.astype(str)
    meter = r[col.METER_ID].cat.codes.to_numpy().astype(np.int64)
    us = t.tz_convert("UTC").as_unit("us").asi8
    first = us.min() // 3_600_000_000
    hour = us // 3_600_000_000 - first
    hours = pd.date_range(pd.Timestamp(first * 3600, unit="s", tz="UTC"), periods=int(hour.max()) + 1,
                          freq="h")
    kwh = r[col.KWH].to_numpy(dtype=np.float64)
    ok = ~np.isnan(kwh)
    flat = hour[ok] * len(ids) + meter[ok]
    size = len(hours) * len(ids)
    energy = np.bincount(flat, weights=kwh[ok], minlength=size).reshape(len(hours), len(ids))
    count = np.bincount(flat, minlength=size).reshape(len(hours), len(ids))
    # each meter's interval: one hour over its usual number of readings in an hour
    per_hour = np.nanmedian(np.where(count > 0, count, np.nan), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        kw = np.where(count > 0, energy / (count / per_hour[None, :]), np.nan)
    return pd.DataFrame(kw, index=pd.DatetimeIndex(hours, name="hour"),
                        columns=pd.Index(ids, name=col.METER_ID))
