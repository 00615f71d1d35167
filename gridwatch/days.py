"""Local calendar days over the UTC analysis grid, and per-day statistics.

Hours are UTC inside GridWatch; days are local (the configured zone), so a
day has 23, 24 or 25 hours around DST changes. :class:`DayGrid` maps every
grid cell to its local day once, and the reducers here work on whole
``(n_cells, n_meters)`` arrays at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.errors import InputError, NoUsableReadings
from gridwatch.resample import analysis_index


@dataclass(frozen=True)
class DayGrid:
    """Where each grid cell falls in local time.

    Attributes
    ----------
    index : pandas.DatetimeIndex
        The UTC grid.
    dates : pandas.DatetimeIndex
        The local days covered, one per day (naive, midnight).
    day_of_cell : numpy.ndarray of int, shape (n_cells,)
        Position in ``dates`` of each cell.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
        Local hour of day 0..23.
    weekday_of_cell : numpy.ndarray of int, shape (n_cells,)
        Local day of week, Monday = 0.
    cells_per_day : numpy.ndarray of int, shape (n_days,)
        Number of grid cells in each local day.
    slots : numpy.ndarray of int, shape (n_days, max_cells_per_day)
        Cell positions of each day, padded with ``-1``.
    """

    index: pd.DatetimeIndex
    dates: pd.DatetimeIndex
    day_of_cell: np.ndarray
    hour_of_cell: np.ndarray
    weekday_of_cell: np.ndarray
    cells_per_day: np.ndarray
    slots: np.ndarray

    @property
    def n_days(self) -> int:
        """Number of local days."""
        return len(self.dates)

    @property
    def weekend(self) -> np.ndarray:
        """Boolean per day: Saturday or Sunday."""
        return self.dates.day_of_week.to_numpy() >= 5

    @property
    def cell_hours(self) -> float:
        """Length of one grid cell [h]."""
        return (self.index[1] - self.index[0]).total_seconds() / 3600 if len(self.index) > 1 else 1.0


def day_grid(index: pd.DatetimeIndex, timezone: str) -> DayGrid:
    """Map a UTC grid to local days.

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Tz-aware UTC grid (regular).
    timezone : str
        IANA zone that defines days and hours.

    Returns
    -------
    DayGrid
    """
    if index.tz is None:
        raise ValueError("the analysis grid must be tz-aware (UTC); got a naive index")
    local = index.tz_convert(timezone)
    day_start = local.normalize().tz_localize(None)
    dates, day_of_cell = np.unique(day_start.to_numpy(), return_inverse=True)
    cells_per_day = np.bincount(day_of_cell, minlength=len(dates))
    width = int(cells_per_day.max()) if len(dates) else 0
    slots = np.full((len(dates), width), -1, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(cells_per_day)[:-1]])
    pos = np.arange(len(index)) - first[day_of_cell]
    slots[day_of_cell, pos] = np.arange(len(index))
    return DayGrid(
        index=index,
        dates=pd.DatetimeIndex(dates),
        day_of_cell=day_of_cell,
        hour_of_cell=local.hour.to_numpy(),
        weekday_of_cell=local.day_of_week.to_numpy(),
        cells_per_day=cells_per_day,
        slots=slots,
    )


def by_day(values: np.ndarray, grid: DayGrid) -> np.ndarray:
    """Regroup cells into days: ``(n_cells, n_meters)`` -> ``(n_days, width, n_meters)``.

    Padding cells (short DST days) are NaN.
    """
    padded = np.concatenate([values, np.full((1,) + values.shape[1:], np.nan, values.dtype)])
    return padded[grid.slots]


def daily_quantiles(kw: np.ndarray, grid: DayGrid, quantiles, min_cells: np.ndarray):
    """Per-day quantiles of demand for every meter at once.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Mean demand per cell [kW], NaN where missing.
    grid : DayGrid
    quantiles : sequence of float
        Quantiles in 0..1 (e.g. 0.25 for the daily floor).
    min_cells : numpy.ndarray of shape (n_days,) or (n_days, n_meters)
        Days with fewer valid cells are NaN.

    Returns
    -------
    list of numpy.ndarray of shape (n_days, n_meters)
        One array per quantile [kW] (lower interpolation, so a value is always
        an observed cell).
    """
    cube = np.sort(by_day(kw, grid), axis=1)  # NaN sorts last
    n_valid = np.sum(~np.isnan(cube), axis=1)  # (n_days, n_meters)
    min_cells = np.asarray(min_cells)
    ok = n_valid >= (min_cells[:, None] if min_cells.ndim == 1 else min_cells)
    out = []
    for q in quantiles:
        pos = np.clip(np.floor(q * (n_valid - 1)).astype(np.int64), 0, cube.shape[1] - 1)
        val = np.take_along_axis(cube, pos[:, None, :], axis=1)[:, 0, :]
        out.append(np.where(ok, val, np.nan))
    return out


def daily_mean(kw: np.ndarray, grid: DayGrid, min_cells: np.ndarray) -> np.ndarray:
    """Per-day mean demand [kW] ``(n_days, n_meters)``; NaN on days with too few cells.

    ``min_cells`` is ``(n_days,)``, or ``(n_days, n_meters)`` for a count per column.
    """
    valid = ~np.isnan(kw)
    starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
    n = np.add.reduceat(valid.astype(np.float64), starts, axis=0)
    s = np.add.reduceat(np.where(valid, kw, 0.0), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    min_cells = np.asarray(min_cells)
    return np.where(n >= (min_cells[:, None] if min_cells.ndim == 1 else min_cells), mean, np.nan)


def by_day_any(mask: np.ndarray, grid: DayGrid, share: float = 0.5) -> np.ndarray:
    """Days on which more than ``share`` of the cells are True: ``(n_days, n_meters)``."""
    starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
    n = np.add.reduceat(mask.astype(np.float32), starts, axis=0)
    return n > share * grid.cells_per_day[:, None]


class SlotOrder:
    """The rows of a matrix grouped by slot (hour of day, hour of week...), sorted once.

    Sums over the rows of each slot (:meth:`sums`) add the rows one after
    another in a fixed order for every column, so a column's sums are the
    same bits whatever the other columns are: a meter scores the same alone,
    in a partition or among all meters (a BLAS product's blocking would change
    the last bits with the number of columns). Sort a matrix once
    (:meth:`sort`) to take several sums of it.

    Parameters
    ----------
    slot : numpy.ndarray of int, shape (n_rows,)
        Slot of each row, ``0 .. n_slots - 1``.
    n_slots : int
    """

    def __init__(self, slot: np.ndarray, n_slots: int):
        self.order = np.argsort(slot, kind="stable")
        sorted_slot = slot[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_slot[1:] != sorted_slot[:-1]])
        self.slots = sorted_slot[self.starts]
        self.n_slots = n_slots

    def sort(self, values: np.ndarray) -> np.ndarray:
        """The rows of ``values`` (or a mask) in slot order."""
        return values[self.order]

    def sums(self, sorted_values: np.ndarray) -> np.ndarray:
        """Column sums per slot of rows already in slot order, ``(n_slots, n_columns)``.

        Values must be finite (fill missing ones with 0 first); a boolean
        mask gives counts. Slots without rows are 0.
        """
        out = np.zeros((self.n_slots, sorted_values.shape[1]))
        dtype = np.int64 if sorted_values.dtype == bool else np.float64
        out[self.slots] = np.add.reduceat(sorted_values, self.starts, axis=0, dtype=dtype)
        return out


def sum_by_slot(values: np.ndarray, slot: np.ndarray, n_slots: int) -> np.ndarray:
    """Column sums of ``values`` over the rows of each slot (see :class:`SlotOrder`).

    Parameters
    ----------
    values : numpy.ndarray of shape (n_rows, n_columns)
        Finite values (fill missing ones with 0 first), or a mask to count.
    slot : numpy.ndarray of int, shape (n_rows,)
        Slot of each row, ``0 .. n_slots - 1``.
    n_slots : int

    Returns
    -------
    numpy.ndarray of shape (n_slots, n_columns)
        float64; 0 for slots without rows.
    """
    slots = SlotOrder(slot, n_slots)
    return slots.sums(slots.sort(values))


# --- the analysis window ---------------------------------------------------------------
AS_OF_METER_SHARE = 0.5
"""The default as-of is the latest local day fully covered by at least this share of the meters."""


def last_full_day(readings: pd.DataFrame, interval_minutes: pd.Series, timezone: str) -> dt.date:
    """The default ``--as-of`` of a dataset: the last full day that most meters reach.

    Parameters
    ----------
    readings : pandas.DataFrame
        Canonical readings (``meter_id``, ``timestamp`` UTC).
    interval_minutes : pandas.Series
        Interval length per meter [min].
    timezone : str

    Returns
    -------
    datetime.date
        :func:`default_as_of` of :func:`meters_by_last_day`.

    Raises
    ------
    NoUsableReadings
        When there is no reading.
    """
    return default_as_of(meters_by_last_day(readings, interval_minutes, timezone))


def meters_by_last_day(readings: pd.DataFrame, interval_minutes: pd.Series,
                       timezone: str) -> pd.Series:
    """How many meters' data end on each local day.

    A meter's last full day is the local day before the one in which its
    last interval ends (the START of its latest reading plus its interval).

    Parameters
    ----------
    readings : pandas.DataFrame
        Canonical readings (``meter_id``, ``timestamp`` UTC).
    interval_minutes : pandas.Series
        Interval length per meter [min], indexed by ``meter_id``.
    timezone : str

    Returns
    -------
    pandas.Series of int64
        Meters (values) per last full day (index: naive local midnights,
        sorted). Partitions' counts add up (:func:`add_day_counts`).
    """
    if readings.empty:
        return pd.Series([], index=pd.DatetimeIndex([]), dtype=np.int64)
    last = _last_per_meter(readings)
    step = interval_minutes.reindex(last.index.astype(str)).fillna(0.0).to_numpy(dtype="float64")
    last_end = pd.DatetimeIndex(last + pd.to_timedelta(step, unit="min")).tz_convert(timezone)
    days = last_end.normalize().tz_localize(None) - pd.Timedelta(days=1)
    return pd.Series(1, index=days).groupby(level=0).sum().astype(np.int64)


def add_day_counts(counts) -> pd.Series:
    """Sum several :func:`meters_by_last_day` counts (one per partition) into one."""
    counts = [c for c in counts if c is not None and len(c)]
    if not counts:
        return pd.Series([], index=pd.DatetimeIndex([]), dtype=np.int64)
    return pd.concat(counts).groupby(level=0).sum().astype(np.int64)


def default_as_of(meters_by_day: pd.Series, *, share: float = AS_OF_METER_SHARE) -> dt.date:
    """The latest day that at least ``share`` of the meters reach: the default ``--as-of``.

    One meter whose clock is wrong (a reading in 2099) cannot move it; a
    day that half the meters have not delivered yet is not analysed.

    Parameters
    ----------
    meters_by_day : pandas.Series of int
        Meters per last full day (:func:`meters_by_last_day`).
    share : float, default :data:`AS_OF_METER_SHARE`
        Share of the meters that must reach the day, in (0, 1].

    Returns
    -------
    datetime.date

    Raises
    ------
    NoUsableReadings
        When there is no meter.

    Examples
    --------
    >>> days = pd.to_datetime(["2026-03-30", "2026-03-31", "2099-01-01"])
    >>> default_as_of(pd.Series([10, 30, 1], index=days))
    datetime.date(2026, 3, 31)
    """
    counts = meters_by_day[meters_by_day > 0].sort_index(ascending=False)
    if counts.empty:
        raise NoUsableReadings("no usable readings",
                               hint="check the readings table and data_quality.csv")
    reached = counts.cumsum().to_numpy()  # meters whose data reach each day, latest day first
    needed = np.ceil(share * reached[-1])
    return counts.index[int(np.searchsorted(reached, needed))].date()


def _last_per_meter(readings: pd.DataFrame) -> pd.Series:
    """The latest timestamp of each meter (index ``meter_id``)."""
    ids = readings[col.METER_ID]
    if isinstance(ids.dtype, pd.CategoricalDtype) and len(ids) and isinstance(
            readings[col.TIMESTAMP].dtype, pd.DatetimeTZDtype):
        codes = ids.cat.codes.to_numpy()
        t = readings[col.TIMESTAMP].array.asi8  # int64 [us]: no object array of Timestamps
        new_meter = codes[1:] != codes[:-1]
        if codes.min() >= 0 and (codes[1:] >= codes[:-1]).all() and \
                ((t[1:] >= t[:-1]) | new_meter).all():
            # Sorted by meter, then time (as cleaned readings are): a group's last row.
            ends = np.append(np.flatnonzero(new_meter), len(codes) - 1)
            return pd.Series(readings[col.TIMESTAMP].array[ends],
                             index=pd.Index(ids.cat.categories[codes[ends]], name=col.METER_ID))
    return readings.groupby(col.METER_ID, observed=True, sort=False)[col.TIMESTAMP].max()


def window_bounds(as_of: dt.date, history_days: int, timezone: str):
    """UTC start (inclusive) and end (exclusive) of the analysis window."""
    first = pd.Timestamp(as_of) - pd.Timedelta(days=history_days - 1)
    start = first.tz_localize(timezone, nonexistent="shift_forward", ambiguous=False)
    end = (pd.Timestamp(as_of) + pd.Timedelta(days=1)).tz_localize(
        timezone, nonexistent="shift_forward", ambiguous=False)
    return start.tz_convert("UTC"), end.tz_convert("UTC")


# --- the as-of day and its window ------------------------------------------------------------
def parse_as_of(as_of) -> dt.date:
    """``--as-of`` as a date; an :class:`InputError` naming the value when it is not one.

    Examples
    --------
    >>> parse_as_of("2026-03-31")
    datetime.date(2026, 3, 31)
    """
    try:
        return pd.Timestamp(str(as_of)).date()
    except ValueError:
        raise InputError(f"--as-of {as_of!r} is not a date", hint="use YYYY-MM-DD") from None


def yesterday(timezone: str) -> dt.date:
    """The last complete local day in ``timezone``: the default as-of of a live source."""
    return (pd.Timestamp.now(tz=timezone) - pd.Timedelta(days=1)).date()


@dataclass(frozen=True)
class Window:
    """The analysis grid ending on an as-of day: ``Window(...)(as_of) -> (index, grid)``.

    Attributes
    ----------
    history_days, grid_minutes : int
        ``analysis.history_days`` and ``analysis.grid_minutes``.
    timezone : str
        ``data.timezone``: the local days.
    """

    history_days: int
    grid_minutes: int
    timezone: str

    @classmethod
    def of(cls, config) -> Window:
        """The window of a :class:`gridwatch.config.Config`."""
        return cls(config.analysis.history_days, config.analysis.grid_minutes,
                   config.data.timezone)

    def bounds(self, as_of: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
        """UTC start (inclusive) and end (exclusive) of the window ending on ``as_of``."""
        return window_bounds(as_of, self.history_days, self.timezone)

    def __call__(self, as_of) -> tuple[pd.DatetimeIndex, DayGrid]:
        """The UTC grid of the window ending on ``as_of`` (a date), and its local days."""
        start, end = self.bounds(as_of)
        index = analysis_index(start, end, self.grid_minutes)
        return index, day_grid(index, self.timezone)
