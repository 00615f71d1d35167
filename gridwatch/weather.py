"""Temperature at each meter: the weather of its region on the analysis grid's local days."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.days import DayGrid, daily_mean
from gridwatch.issues import IssueLog
from gridwatch.resample import weather_to_grid

NEUTRAL_TEMPERATURE_C = 15.5
"""Temperature of a meter whose region has no weather at all [degrees C]: no heating, no cooling."""


def meter_temperature(weather: pd.DataFrame | None, meters: pd.DataFrame,
                      index: pd.DatetimeIndex, grid: DayGrid, issues: IssueLog):
    """Daily mean temperature at each meter.

    Parameters
    ----------
    weather : pandas.DataFrame or None
        Cleaned weather (``region``, ``timestamp`` UTC, ``temperature_c`` [degrees C]).
    meters : pandas.DataFrame
        The analysed meters (``meter_id``, ``region``), in column order.
    index : pandas.DatetimeIndex
        The analysis grid (UTC cell starts).
    grid : DayGrid
        Its local days.
    issues : IssueLog
        Gains ``weather.region_missing`` per meter whose region has no weather.

    Returns
    -------
    numpy.ndarray of shape (n_days, n_meters) or None
        [degrees C]; None without weather. A day without a temperature gets
        the region's mean; a region without any, :data:`NEUTRAL_TEMPERATURE_C`.
    """
    if weather is None or weather.empty:
        return None
    regions = sorted(weather[col.REGION].astype(str).unique())
    temp = weather_to_grid(weather, regions=regions, index=index)
    nominal = 24 / grid.cell_hours
    daily = daily_mean(temp.to_numpy(dtype=np.float64), grid, np.full(grid.n_days, int(nominal // 2)))
    region = meters[col.REGION].astype("string").fillna("")
    if len(regions) == 1:
        position = np.zeros(len(meters), dtype=int)  # one region serves every meter
    else:
        lookup = {r: i for i, r in enumerate(regions)}
        position = region.map(lookup).fillna(-1).astype(int).to_numpy()
        issues.add_per_meter(
            "weather.region_missing", "weather",
            pd.Series((position < 0).astype(int), index=meters[col.METER_ID].to_numpy()), "kept",
            detail="no weather for the meter's region: modelled without temperature",
            severity="info")
    padded = np.concatenate([daily, np.full((grid.n_days, 1), np.nan)], axis=1)
    per_meter = padded[:, position]
    # A missing temperature must not void a day: use the region's mean for it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a region without any temperature
        fill = np.nanmean(per_meter, axis=0)
    per_meter = np.where(np.isnan(per_meter), fill[None, :], per_meter)
    return np.nan_to_num(per_meter, nan=NEUTRAL_TEMPERATURE_C)
