"""The utility's spreadsheet rule: at least 2x similar homes, and flat.

This is the baseline every GridWatch change is measured beside: the rule an
analyst applies with a spreadsheet (and the official Irkutsk procedure of
June 2025 applies to monthly bills). A rig this rule finds and GridWatch
misses is a bug (tests and ``bench/realdata_field.py`` check it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridwatch import columns as col

__all__ = ["RULE_MIN_FLATNESS", "RULE_MIN_PEER_MULTIPLE", "RULE_WINDOW_DAYS", "peer_multiple_rule"]

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
