"""Put cleaned long tables on the analysis grid: a time x meter matrix of demand.

Energy is turned into mean demand over what was measured, never summed over
what was not: a grid cell with half its sub-intervals present gets the mean
kW of that half and a coverage of 0.5; a cell with none is NaN, never 0.
Aggregation is one ``np.bincount`` over flat cell indices (cell x n_meters +
meter), so there is no loop over meters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridwatch import columns as col

MAX_WEATHER_GAP_HOURS = 3.0
"""Weather gaps up to this long are interpolated linearly; longer ones stay NaN [h]."""

_US_PER_MIN = 60_000_000


def analysis_index(start, end, grid_minutes: int) -> pd.DatetimeIndex:
    """Build the analysis grid: cell starts from ``start`` (inclusive) to ``end`` (exclusive).

    Parameters
    ----------
    start, end : str, datetime or pandas.Timestamp
        Bounds; naive values are read as UTC. ``start`` fixes the phase of the
        cells (pass local midnight in UTC to align cells with local hours).
    grid_minutes : int
        Cell length [min].

    Returns
    -------
    pandas.DatetimeIndex
        ``datetime64[us, UTC]`` with frequency ``grid_minutes``.

    Examples
    --------
    >>> analysis_index("2024-01-01", "2024-01-01 03:00", 60).size
    3
    """
    start, end = (_utc(value) for value in (start, end))
    return pd.date_range(start, end, freq=pd.Timedelta(minutes=grid_minutes),
                         inclusive="left", unit="us", name=col.TIMESTAMP)


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _grid(index: pd.DatetimeIndex) -> tuple[int, int]:
    """(start [us UTC], cell length [us]) of a regular, tz-aware index."""
    if not isinstance(index.dtype, pd.DatetimeTZDtype):
        raise ValueError("index must be tz-aware (use analysis_index)")
    stamps = index.tz_convert("UTC").as_unit("us").asi8
    if len(stamps) == 0 or (len(stamps) == 1 and index.freq is None):
        raise ValueError("index needs a frequency or at least two cells (use analysis_index)")
    if index.freq is not None:
        cell_us = pd.Timedelta(index.freq) // pd.Timedelta(1, "us")
    else:
        cell_us = int(stamps[1] - stamps[0])
    if cell_us <= 0 or (np.diff(stamps) != cell_us).any():
        raise ValueError("index must be regular and increasing (use analysis_index)")
    return int(stamps[0]), int(cell_us)


def _positions(ids, names) -> np.ndarray:
    """Column position in ``names`` of each row's id; -1 when not in ``names``."""
    ids = ids.array if isinstance(ids.dtype, pd.CategoricalDtype) else pd.Categorical(ids)
    lookup = np.append(pd.Index(names).get_indexer(ids.categories), -1).astype(np.int32)
    return lookup[ids.codes]


def to_grid(readings: pd.DataFrame, interval_minutes: pd.Series, *, meter_ids,
            index: pd.DatetimeIndex, id_column: str = col.METER_ID, with_spread: bool = False,
            value_column: str = col.KWH):
    """Mean demand and coverage per grid cell and meter.

    Each reading falls in the cell that contains its START. Within a cell,
    ``kw`` is the sum of the ``kwh`` of the sub-intervals present (non-NaN)
    divided by their total duration in hours, so a partly covered cell is not
    biased low; ``coverage`` is the present duration over the cell length.

    Parameters
    ----------
    readings : pandas.DataFrame
        Cleaned long frame: ``id_column``, ``timestamp`` (UTC), ``kwh`` [kWh];
        unique per (id, timestamp) (see :func:`gridwatch.cleaning.clean_readings`).
    interval_minutes : pandas.Series of int
        Interval of each id [min], indexed by id. Ids with an interval longer
        than the cell are returned all-NaN (a reading would span several cells;
        they are not split).
    meter_ids : sequence of str
        Columns of the result, in this order; ids without data are all-NaN.
    index : pandas.DatetimeIndex
        The grid (:func:`analysis_index`). Readings outside it are ignored.
    id_column : str, default "meter_id"
    with_spread : bool, default False
        Also return the spread of demand within each cell.
    value_column : str, default "kwh"
        The energy column gridded (``kwh_export`` for the export register).

    Returns
    -------
    kw : pandas.DataFrame of shape (len(index), len(meter_ids))
        Mean demand over the present sub-intervals [kW]; NaN where none.
    coverage : pandas.DataFrame of shape (len(index), len(meter_ids))
        Present sub-interval minutes / cell minutes [-], 0..1 (clipped at 1:
        a 10-min meter on a 15-min grid can put 20 min in one cell).
    spread_kw : pandas.DataFrame of shape (len(index), len(meter_ids))
        Only with ``with_spread``: standard deviation of the sub-interval
        demands within the cell [kW]; NaN with fewer than two sub-intervals
        (so always NaN for meters whose interval is the cell). A steady load
        adds none; a heater cycling on a thermostat adds a lot.

    Examples
    --------
    >>> readings = pd.DataFrame({
    ...     "meter_id": pd.Categorical(["A", "A"]),
    ...     "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 00:15"], utc=True),
    ...     "kwh": [0.25, 0.5]})
    >>> grid = analysis_index("2024-01-01", "2024-01-01 01:00", 60)
    >>> kw, coverage = to_grid(readings, pd.Series({"A": 15}), meter_ids=["A"], index=grid)
    >>> float(kw.iloc[0, 0]), float(coverage.iloc[0, 0])
    (1.5, 0.5)
    """
    start_us, cell_us = _grid(index)
    columns = pd.Index(meter_ids, name=id_column)
    if not columns.is_unique:
        raise ValueError("meter_ids must be unique")
    n_cells, n_meters = len(index), len(columns)
    minutes = interval_minutes.reindex(columns).to_numpy(dtype=np.float64, na_value=np.nan,
                                                         copy=True)
    minutes[minutes * _US_PER_MIN > cell_us] = np.nan  # longer than a cell: not handled
    minutes[np.isnan(minutes)] = 0.0

    position = _positions(readings[id_column], columns)
    t = pd.DatetimeIndex(readings[col.TIMESTAMP]).tz_convert("UTC").as_unit("us").asi8
    cell = (t - start_us) // cell_us
    kwh = readings[value_column].to_numpy(dtype=np.float64, na_value=np.nan)
    use = (cell >= 0) & (cell < n_cells) & (position >= 0) & ~np.isnan(kwh)
    if not use.all():
        cell, position, kwh = cell[use], position[use], kwh[use]
    flat = cell  # reuse the buffer: flat index = cell x n_meters + meter position
    flat *= n_meters
    flat += position
    shape = (n_cells, n_meters)
    kw = np.bincount(flat, weights=kwh, minlength=n_cells * n_meters)  # [kWh]
    kw = kw.astype(np.float64, copy=False).reshape(shape)  # (bincount of nothing is int)
    count = np.bincount(flat, minlength=n_cells * n_meters).reshape(shape)
    spread = None
    if with_spread:
        spread = _within_cell_spread(flat, position, kwh, kw, count, minutes, cell_us, shape)
    present_min = count * minutes
    del flat, position, kwh, count
    with np.errstate(invalid="ignore", divide="ignore"):
        kw /= present_min  # [kWh/min], in place to spare memory on big grids
    kw *= 60.0  # [kW]
    kw[present_min == 0] = np.nan
    coverage = present_min
    coverage /= cell_us / _US_PER_MIN
    np.minimum(coverage, 1.0, out=coverage)
    frames = (pd.DataFrame(kw, index=index, columns=columns, copy=False),
              pd.DataFrame(coverage, index=index, columns=columns, copy=False))
    if with_spread:
        frames += (pd.DataFrame(spread, index=index, columns=columns, copy=False),)
    return frames


def _within_cell_spread(flat, position, kwh, kwh_sum, count, minutes, cell_us, shape):
    """Standard deviation of sub-interval demand within each cell [kW] (see :func:`to_grid`).

    Only meters read more often than the grid have one; when they all are (the
    usual case: half-hourly meters on an hourly grid) nothing is masked or
    gathered, and the per-cell arithmetic runs in place on the whole grid.
    """
    finer_meter = (minutes > 0) & (minutes * _US_PER_MIN < cell_us)
    finer = finer_meter[position]
    if not finer.any():  # every meter reads once per cell: no within-cell spread to see
        return np.full(shape, np.nan)
    every_row = bool(finer.all())
    if not every_row:
        flat, position, kwh = flat[finer], position[finer], kwh[finer]
    del finer
    row_minutes = minutes[position]
    if (row_minutes == row_minutes[0]).all():
        row_minutes = row_minutes[0]  # one interval: a scalar, no array per row
    sub_kw = kwh * 60.0
    sub_kw /= row_minutes
    del row_minutes
    sub_kw **= 2
    sq = np.bincount(flat, weights=sub_kw, minlength=shape[0] * shape[1]).reshape(shape)
    del sub_kw
    # The columns of meters with finer readings (a meter without rows has n = 0: NaN below).
    cols = np.flatnonzero(finer_meter)
    whole = len(cols) == shape[1]
    n = count if whole else count[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sub = kwh_sum * 60.0 if whole else kwh_sum[:, cols] * 60.0
        mean_sub /= n * minutes[cols]
        mean_sub **= 2
        var = sq if whole else sq[:, cols]
        var /= n
        var -= mean_sub
        del mean_sub
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var[n < 2] = np.nan
    if whole:
        return var
    spread = np.full(shape, np.nan)
    spread[:, cols] = var
    return spread


def weather_to_grid(weather: pd.DataFrame, *, regions, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Mean temperature per grid cell and region, short gaps interpolated.

    Parameters
    ----------
    weather : pandas.DataFrame
        Cleaned weather: ``region``, ``timestamp`` (UTC), ``temperature_c``.
    regions : sequence of str
        Columns of the result, in this order; regions without data are all-NaN.
    index : pandas.DatetimeIndex
        The grid (:func:`analysis_index`).

    Returns
    -------
    pandas.DataFrame of shape (len(index), len(regions))
        Mean of the observations in each cell [degrees C]. Runs of empty cells
        lasting at most :data:`MAX_WEATHER_GAP_HOURS` between two values are
        filled by linear interpolation; longer runs, and runs at either end,
        stay NaN.
    """
    start_us, cell_us = _grid(index)
    columns = pd.Index(regions, name=col.REGION)
    n_cells, n_regions = len(index), len(columns)
    position = _positions(weather[col.REGION].astype("str"), columns)
    t = pd.DatetimeIndex(weather[col.TIMESTAMP]).tz_convert("UTC").as_unit("us").asi8
    cell = (t - start_us) // cell_us
    value = weather[col.TEMPERATURE_C].to_numpy(dtype=np.float64, na_value=np.nan)
    use = (cell >= 0) & (cell < n_cells) & (position >= 0) & ~np.isnan(value)
    flat = cell[use] * n_regions + position[use]
    total = np.bincount(flat, weights=value[use], minlength=n_cells * n_regions).astype(np.float64)
    count = np.bincount(flat, minlength=n_cells * n_regions)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan).reshape(n_cells, n_regions)
    frame = pd.DataFrame(mean, index=index, columns=columns)
    max_cells = int(MAX_WEATHER_GAP_HOURS * 3_600_000_000 // cell_us)
    return frame.interpolate(method="linear", limit_area="inside").where(
        ~_long_gaps(frame.isna().to_numpy(), max_cells))


def _long_gaps(missing: np.ndarray, max_cells: int) -> np.ndarray:
    """Mask of missing cells lying in runs longer than ``max_cells`` (per column)."""
    n_columns = missing.shape[1]
    run = np.cumsum(~missing, axis=0) * n_columns + np.arange(n_columns)  # run id per column
    length = np.bincount(run[missing], minlength=run.max(initial=0) + 1)[run]
    return missing & (length > max_cells)
