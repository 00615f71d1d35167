"""Data as utilities hold it: turn a table's exported form into the contract's (issue 16).

Few utilities export the contract's exact shape. A per-table section of the
config (``[data.readings]``, ``[data.upstream]``, ``[data.meters]``,
``[data.weather]``; :class:`gridwatch.config.TableForm`) says how a file
differs, and the readers of :mod:`gridwatch.sources.files` apply it at their
boundary, so that everything after them sees the contract:

* **column names** -- ``columns = {MeterNo = "meter_id"}`` maps a file column
  to the contract name it holds (:func:`contract_columns`,
  :func:`rename_columns`); a mapped column missing from the file is refused
  naming the file's own column;
* **units** -- energy per interval in Wh, kWh or MWh, or mean power over the
  interval in W, kW or MW (:func:`to_kwh`);
* **end-of-interval stamps** -- ``timestamp_marks = "end"``: each stamp is
  moved back by its meter's interval (:func:`shift_end_stamps`), in UTC, after
  the local time has been read (so DST is resolved on the stamps as written);
* **register reads** -- ``value = "register"``: a cumulative ``register_kwh``
  read at each timestamp is differenced per meter (and per ``device_id``) into
  the energy of the interval it closes (:func:`register_to_interval_kwh`),
  with the rules below, each counted as a data-quality issue.

Every function is vectorised over all meters (sorts and ``diff`` over whole
arrays; no Python loop per row or per meter).

Register rules
--------------
A register read at time ``t`` is the count at the instant ``t``; the
difference from the meter's previous read is the energy of the interval that
ends at ``t``. Reads are ordered by (meter, device, time); within that order:

``readings.register_first_read`` (dropped, table-wide count)
    The first read of a register opens it: there is no interval before it.
``readings.register_duplicate_read`` (dropped)
    A second read of one register at one instant: the LAST in file order is
    kept (a re-sent correction), as cleaning does for interval rows.
``readings.register_exchange`` (resolved)
    A meter (``meter_id``, the metering point) read from a second
    ``device_id``: the meter was exchanged. Each device is differenced on its
    own, so nothing is lost when the old device's last read and the new one's
    first share an instant (the removal and installation reads).
``readings.register_rollover`` (resolved)
    A fall from the top :data:`ROLLOVER_BAND` of ``rollover_kwh`` to its
    bottom band is a register that wrapped: the step is
    ``new + rollover_kwh - old``.
``readings.register_negative_step`` (set_missing)
    Any other fall, where the read after it is back at or above the read
    before it (or nothing follows): one bad read. Both intervals it touches
    are left missing (their sum is right, their split is not known).
``readings.register_reset`` (set_missing)
    Any other fall that stays down: the register restarted (a meter exchange
    without a ``device_id``, a cleared register). Differencing goes on from
    the new count; the interval across the fall is missing, as its energy is
    not known.
``readings.register_missed_reads`` (set_missing; the count is reads missed)
    More than 1.5 intervals since the previous read: the energy since then is
    NOT spread over the intervals it covers (a spread is a flat load, the very
    shape the detector looks for). The intervals are a gap, as in interval
    data: the read's own interval is kept empty, the others have no row.

A register read that is empty (``readings.missing_register_kwh``) is kept as
an empty interval and skipped when differencing, so that the next read spans
a missed read. A read too HIGH shows as a large step followed by a reset;
cleaning's plausibility and spike rules then judge the large step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.issues import IssueLog

ENERGY_PER_KWH = {"Wh": 1000.0, "kWh": 1.0, "MWh": 0.001}
"""Units of energy per interval and how many of them make one kWh."""

POWER_PER_KW = {"W": 1000.0, "kW": 1.0, "MW": 0.001}
"""Units of mean power over an interval and how many of them make one kW."""

ROLLOVER_BAND = 0.1
"""A rollover falls from the top 10 % of the register's range to its bottom 10 %."""

MISSED_READ_STEPS = 1.5
"""A step between reads longer than this many intervals has missed reads."""

DEFAULT_INTERVAL_MINUTES = 60
"""Interval assumed for a table in which no meter has two timestamps [min]."""

_US_PER_MIN = 60_000_000


# --- column names ----------------------------------------------------------------------------
def _map_of(form) -> dict:
    return dict(getattr(form, "columns", None) or {})


def _check_mapped(columns, column_map: dict, file, table: str) -> None:
    for source, target in column_map.items():
        if source not in columns:
            found = ", ".join(map(str, columns)) if columns else "none"
            raise InputError(
                f"missing column {source!r}, which data.{table}.columns maps to {target!r} "
                f"(found: {found})", file=file, column=source,
                hint=f"fix [data.{table}] columns in the config, or the file's header "
                     "(names are case-sensitive)")


def contract_columns(columns, form, file, *, table: str) -> list[str]:
    """The columns of a file under the names the contract checks see.

    Parameters
    ----------
    columns : list of str
        The file's own column names, in file order.
    form : gridwatch.config.TableForm or None
        The table's export form (``None``: the contract's names).
    file : str or os.PathLike
        The file, named in errors.
    table : str
        ``meters``, ``readings``, ``upstream`` or ``weather`` (named in errors).

    Returns
    -------
    list of str
        ``columns`` with every mapped column renamed; a column of the file
        that already has a contract name a mapped column takes is left out
        (the mapped one wins).

    Raises
    ------
    InputError
        A mapped column is not in the file; the message names it as the
        file does.

    Examples
    --------
    >>> from gridwatch.config import ReadingsForm
    >>> form = ReadingsForm(columns={"MeterNo": "meter_id", "Wh": "kwh"})
    >>> contract_columns(["MeterNo", "timestamp", "Wh", "kwh"], form, "r.csv", table="readings")
    ['meter_id', 'timestamp', 'kwh']
    """
    column_map = _map_of(form)
    _check_mapped(columns, column_map, file, table)
    taken = set(column_map.values())
    return [column_map.get(c, c) for c in columns if c in column_map or c not in taken]


def file_names(names, form) -> list[str]:
    """The file's names of contract columns ``names`` (the inverse of the form's map)."""
    inverse = {target: source for source, target in _map_of(form).items()}
    return [inverse.get(name, name) for name in names]


def file_types(types: dict, form) -> dict:
    """Arrow read types of contract columns, keyed by the file's names; ``device_id`` is text."""
    types = {**types, **({col.DEVICE_ID: pa.string()} if col.DEVICE_ID in types else {})}
    return dict(zip(file_names(types, form), types.values(), strict=True))


def rename_columns(table: pa.Table, form, file=None, *, table_name: str = "table") -> pa.Table:
    """Rename a raw Arrow table's columns from the file's names to the contract's.

    Parameters
    ----------
    table : pyarrow.Table
        Columns as read from the file.
    form : gridwatch.config.TableForm, dict or None
        The export form, or a plain ``{file column: contract name}`` mapping.
    file : str or os.PathLike, optional
        Named in errors.
    table_name : str, default "table"
        Named in errors (``readings``...).

    Returns
    -------
    pyarrow.Table
        Same data; mapped columns renamed, shadowed contract-named columns
        dropped.

    Raises
    ------
    InputError
        A mapped column is missing from ``table``.
    """
    column_map = form if isinstance(form, dict) else _map_of(form)
    if not column_map:
        return table
    _check_mapped(table.column_names, column_map, file, table_name)
    taken = set(column_map.values())
    keep = [c for c in table.column_names if c in column_map or c not in taken]
    table = table.select(keep)
    return table.rename_columns([column_map.get(c, c) for c in keep])


class ReadPlan(NamedTuple):
    """What a reader reads of an interval table's file, and under which names.

    Attributes
    ----------
    columns : list of str
        The file's columns under their contract names (:func:`contract_columns`).
    value_column : str
        The contract column holding the values: ``kwh``, or ``register_kwh``
        for register reads (``temperature_c`` for weather).
    optional : tuple of str
        Further contract columns the form reads when present (``device_id``).
    form : gridwatch.config.TableForm or None
    """

    columns: list
    value_column: str
    optional: tuple
    form: object

    def file_names(self, names) -> list[str]:
        """The file's names of the contract columns ``names``."""
        return file_names(names, self.form)

    def file_types(self, types: dict) -> dict:
        """Arrow read types keyed by the file's names; ``device_id`` is text."""
        return file_types(types, self.form)

    def rename(self, table: pa.Table, file=None, table_name: str = "table") -> pa.Table:
        """The raw table under contract names (:func:`rename_columns`)."""
        return rename_columns(table, self.form, file, table_name=table_name)


def plan_read(columns, form, file, *, table: str, value_column: str) -> ReadPlan:
    """Plan the read of an interval table's file in its export form.

    Parameters
    ----------
    columns : list of str
        The file's own column names.
    form : gridwatch.config.TableForm or None
    file : str or os.PathLike
    table : str
    value_column : str
        The contract value column (``kwh``, ``temperature_c``).

    Returns
    -------
    ReadPlan
    """
    register = reads_register(form)
    return ReadPlan(contract_columns(columns, form, file, table=table),
                    col.REGISTER_KWH if register else value_column,
                    (col.DEVICE_ID,) if register else (), form)


def reads_register(form) -> bool:
    """Whether ``form`` reads cumulative register reads (``register_kwh``), not interval values."""
    return getattr(form, "value", "interval") == "register"


def encode_devices(data: pa.Table) -> pa.Table:
    """Replace a raw ``device_id`` text column by integer codes (nulls stay null).

    The reader then carries it through its row filters as one more numeric
    column; :func:`to_contract` reads it back as the device of each read.
    """
    if col.DEVICE_ID not in data.column_names:
        return data
    values = data.column(col.DEVICE_ID)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)
            or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    values = pc.utf8_trim_whitespace(values) if not pa.types.is_binary(values.type) else values
    codes = pc.index_in(values, value_set=pc.unique(values.drop_null()))
    i = data.column_names.index(col.DEVICE_ID)
    return data.set_column(i, col.DEVICE_ID, codes.cast(pa.int64()))


# --- values ----------------------------------------------------------------------------------
def to_kwh(values, unit: str, interval_minutes=None):
    """Energy per interval [kWh] from values in ``unit``.

    Parameters
    ----------
    values : array-like or pandas.Series
        Energy per interval (``Wh``, ``kWh``, ``MWh``) or mean power over the
        interval (``W``, ``kW``, ``MW``).
    unit : str
        One of the keys of :data:`ENERGY_PER_KWH` or :data:`POWER_PER_KW`.
    interval_minutes : float or array-like, optional
        Interval of each value [min]; needed for power units.

    Returns
    -------
    numpy.ndarray or pandas.Series
        Same shape (and index) as ``values`` [kWh].

    Raises
    ------
    ValueError
        Unknown unit, or a power unit without ``interval_minutes``.

    Notes
    -----
    Wh are divided by 1000, not multiplied by 0.001, so that a whole number of
    Wh gives exactly the kWh a contract file writes with three decimals.

    Examples
    --------
    >>> to_kwh([250.0, 1000.0], "Wh").tolist()
    [0.25, 1.0]
    >>> to_kwh([2.0], "kW", interval_minutes=15).tolist()
    [0.5]
    """
    series = isinstance(values, pd.Series)
    v = values if series else np.asarray(values, dtype=np.float64)
    if unit in ENERGY_PER_KWH:
        per = ENERGY_PER_KWH[unit]
        return v / per if per >= 1 else v * (1 / per)
    if unit in POWER_PER_KW:
        if interval_minutes is None:
            raise ValueError(f"values in {unit} (power) need interval_minutes to become energy")
        per = POWER_PER_KW[unit]
        kw = v / per if per >= 1 else v * (1 / per)
        hours = np.asarray(interval_minutes, dtype=np.float64) / 60.0
        return kw * hours
    raise ValueError(f"unknown unit {unit!r}; use one of "
                     f"{', '.join([*ENERGY_PER_KWH, *POWER_PER_KW])}")


def shift_end_stamps(timestamps, interval_minutes):
    """START-of-interval stamps from END-of-interval stamps: ``t - interval``.

    Parameters
    ----------
    timestamps : pandas.Series, pandas.DatetimeIndex or numpy.ndarray of datetime64
        Instants that END their intervals (tz-aware: shift in UTC).
    interval_minutes : float or array-like
        Interval of each stamp [min].

    Returns
    -------
    Same type as ``timestamps``.

    Examples
    --------
    >>> stamps = pd.DatetimeIndex(["2024-03-01 00:15", "2024-03-01 00:30"], tz="UTC")
    >>> shift_end_stamps(stamps, 15).strftime("%H:%M").tolist()
    ['00:00', '00:15']
    """
    n = len(timestamps)
    minutes = np.broadcast_to(np.asarray(interval_minutes, dtype=np.float64), (n,))
    delta = pd.to_timedelta(minutes, unit="min")
    if isinstance(timestamps, pd.Series):
        return timestamps - pd.Series(delta, index=timestamps.index)
    if isinstance(timestamps, pd.Index):
        return timestamps - delta
    return np.asarray(timestamps) - delta.to_numpy()


def meter_interval_minutes(meter_codes, timestamps_us, *, interval_minutes: int = 0,
                           valid=None) -> np.ndarray:
    """Interval of each row's meter [min]: configured, or its most common step.

    Parameters
    ----------
    meter_codes : numpy.ndarray of int
        Meter of each row (codes >= 0).
    timestamps_us : numpy.ndarray of int64
        Row instants [us since the epoch].
    interval_minutes : int, default 0
        A configured interval for every meter; 0: inferred per meter as the
        most common positive step between its consecutive distinct
        timestamps, rounded to whole minutes (ties: the shortest), from the
        ``valid`` rows, or from all its rows when those give no step. A
        meter with a single timestamp takes the table's most common step
        (:data:`DEFAULT_INTERVAL_MINUTES` when there is none).
    valid : numpy.ndarray of bool, optional
        Rows to infer from (default all).

    Returns
    -------
    numpy.ndarray of float64
        One value per row [min].

    Notes
    -----
    Every meter with two timestamps gets its interval from its own rows, so
    a table read in partitions of whole meters gives each the interval the
    whole table gives it. Only a meter with one timestamp depends on the
    others, and cleaning drops it (``readings.unsupported_interval``).
    """
    codes = np.asarray(meter_codes, dtype=np.int64)
    n = len(codes)
    if interval_minutes:
        return np.full(n, float(interval_minutes))
    n_meters = int(codes.max()) + 1 if n else 0
    t_all = np.asarray(timestamps_us)
    per_meter, minutes = _most_common_steps(codes, t_all, n_meters, valid)
    if valid is not None and np.isnan(per_meter).any():
        own, _ = _most_common_steps(codes, t_all, n_meters, None)  # empty reads' stamps too
        per_meter = np.where(np.isnan(per_meter), own, per_meter)
    if len(minutes):
        table_mode = float(pd.Series(minutes).value_counts().sort_index().idxmax())
    else:
        table_mode = float(DEFAULT_INTERVAL_MINUTES)
    per_meter[np.isnan(per_meter)] = table_mode
    return per_meter[codes] if n else np.zeros(0)


def _most_common_steps(codes, t_all, n_meters: int, valid):
    """Each meter's most common positive step [min] (NaN: none), and every step of the rows."""
    rows = np.arange(len(codes)) if valid is None else np.flatnonzero(valid)
    order = rows[np.lexsort((t_all[rows], codes[rows]))]
    c, t = codes[order], t_all[order]
    step = np.diff(t)
    same = (c[1:] == c[:-1]) & (step > 0)
    minutes = np.round(step[same] / _US_PER_MIN).astype(np.int64)
    per_meter = np.full(n_meters, np.nan)
    if len(minutes):
        pairs = pd.DataFrame({"c": c[1:][same], "m": minutes}).value_counts().reset_index(name="k")
        pairs = pairs.sort_values(["c", "k", "m"], ascending=[True, False, True])
        first = pairs.drop_duplicates("c")
        per_meter[first["c"].to_numpy()] = first["m"].to_numpy()
    return per_meter, minutes


class RegisterSteps(NamedTuple):
    """Register reads differenced into interval energy (:func:`register_to_interval_kwh`).

    Every array has one entry per read, in the reads' order.

    Attributes
    ----------
    kwh : numpy.ndarray of float64
        Energy of the interval that ENDS at the read [kWh]; NaN where unknown.
    interval_minutes : numpy.ndarray of float64
        The meter's interval [min]: the read's interval STARTS this long before it.
    drop : numpy.ndarray of bool
        Reads that are no interval: first reads and duplicates.
    first_read, duplicate, exchange, rollover, reset, negative_step : numpy.ndarray of bool
        Reads each rule applied to (``negative_step``: both intervals set missing).
    missed_reads : numpy.ndarray of int64
        Reads missed before this read (its interval is set missing when > 0).
    """

    kwh: np.ndarray
    interval_minutes: np.ndarray
    drop: np.ndarray
    first_read: np.ndarray
    duplicate: np.ndarray
    exchange: np.ndarray
    rollover: np.ndarray
    reset: np.ndarray
    negative_step: np.ndarray
    missed_reads: np.ndarray


def register_to_interval_kwh(meter_codes, timestamps_us, register_kwh, *, device_codes=None,
                             rollover_kwh: float = 0.0,
                             interval_minutes: int = 0) -> RegisterSteps:
    """Difference cumulative register reads into the energy of the intervals they close.

    Parameters
    ----------
    meter_codes : numpy.ndarray of int of shape (n_reads,)
        Meter (metering point) of each read, codes >= 0.
    timestamps_us : numpy.ndarray of int64 of shape (n_reads,)
        Instant of each read [us since the epoch].
    register_kwh : numpy.ndarray of float64 of shape (n_reads,)
        The register at that instant [kWh]; NaN: no read.
    device_codes : numpy.ndarray of shape (n_reads,), optional
        The physical meter read (codes; negative or NaN: unknown). A meter
        read from a second device was exchanged; each device is differenced
        on its own.
    rollover_kwh : float, default 0
        Where the register wraps to 0 [kWh]; 0: it never wraps.
    interval_minutes : int, default 0
        The meters' interval [min]; 0: each meter's most common step between
        reads (:func:`meter_interval_minutes`).

    Returns
    -------
    RegisterSteps

    Notes
    -----
    The rules, and why, are in the module notes. Reads are ordered by
    (meter, device, instant, file order) with one stable sort; every rule is
    a comparison of neighbouring reads of one register.

    Examples
    --------
    A five-digit register that wraps, read every 30 minutes:

    >>> t = np.arange(4) * 30 * 60_000_000
    >>> steps = register_to_interval_kwh(np.zeros(4, int), t, np.array([99998.5, 99999.5, 0.3, 1.0]),
    ...                                  rollover_kwh=100000)
    >>> steps.kwh.round(3).tolist()
    [nan, 1.0, 0.8, 0.7]
    >>> steps.rollover.tolist(), steps.first_read.tolist()
    ([False, False, True, False], [True, False, False, False])
    """
    meters = np.asarray(meter_codes, dtype=np.int64)
    t_all = np.asarray(timestamps_us, dtype=np.int64)
    r_all = np.asarray(register_kwh, dtype=np.float64)
    n = len(meters)
    if device_codes is None:
        device = np.zeros(n, np.int64)
    else:
        device = np.asarray(device_codes, dtype=np.float64)
        device = np.where(np.isnan(device), -1, device).astype(np.int64)
    if device_codes is None or not n:
        register = meters
    else:  # one register per (meter, device): devices of a meter in order of first read
        first_seen = pd.DataFrame({"m": meters, "d": device, "t": t_all}).groupby(
            ["m", "d"], sort=False)["t"].transform("min").to_numpy()
        register = pd.MultiIndex.from_arrays([meters, first_seen, device]).factorize(
            sort=True)[0].astype(np.int64)
    valid = ~np.isnan(r_all)

    out = {name: np.zeros(n, bool) for name in ("first_read", "duplicate", "exchange",
                                                 "rollover", "reset", "negative_step")}
    missed_reads = np.zeros(n, np.int64)
    kwh = np.full(n, np.nan)
    iv_min = meter_interval_minutes(meters, t_all, interval_minutes=interval_minutes,
                                    valid=valid) if n else np.zeros(0)

    rows = np.flatnonzero(valid)
    rows = rows[np.lexsort((rows, t_all[rows], register[rows]))]
    # duplicates: the same register at the same instant; the LAST in file order is kept
    k, t = register[rows], t_all[rows]
    again = (k[1:] == k[:-1]) & (t[1:] == t[:-1])
    dup = np.r_[again, False]  # a read followed by another of the same instant
    out["duplicate"][rows[dup]] = True
    rows = rows[~dup]
    k, t, r = register[rows], t_all[rows], r_all[rows]

    opening = np.r_[True, k[1:] != k[:-1]] if len(rows) else np.zeros(0, bool)
    out["first_read"][rows[opening]] = True
    m = meters[rows]
    later_device = opening & np.r_[False, m[1:] == m[:-1]] if len(rows) else opening
    out["exchange"][rows[later_device]] = True
    if len(rows) < 2:
        return RegisterSteps(kwh=kwh, interval_minutes=iv_min, drop=out["first_read"]
                             | out["duplicate"], missed_reads=missed_reads, **out)

    same = ~opening[1:]  # pair j: read j -> read j + 1 of one register
    step = np.diff(r)
    elapsed = np.diff(t).astype(np.float64)
    iv_us = iv_min[rows[1:]] * _US_PER_MIN
    before, after = r[:-1], r[1:]
    if rollover_kwh:
        wrapped = same & (step < 0) & (before >= (1 - ROLLOVER_BAND) * rollover_kwh) \
            & (before <= rollover_kwh) & (after < ROLLOVER_BAND * rollover_kwh)
    else:
        wrapped = np.zeros(len(step), bool)
    fall = same & (step < 0) & ~wrapped
    next_same = np.r_[same[1:], False]
    two_on = np.r_[r[2:], np.nan]
    back_up = ~next_same | (two_on >= before)  # nothing follows, or the next read is back up
    bad_read = fall & back_up
    reset = fall & ~back_up
    after_bad = np.r_[False, bad_read[:-1]] & same
    long = same & (elapsed > MISSED_READ_STEPS * iv_us)
    missed = np.where(long, np.round(elapsed / iv_us).astype(np.int64) - 1, 0)

    value = np.where(wrapped, step + rollover_kwh, step)
    value[bad_read | after_bad | reset | long] = np.nan
    closes = rows[1:][same]
    kwh[closes] = value[same]
    out["rollover"][rows[1:][wrapped]] = True
    out["reset"][rows[1:][reset]] = True
    out["negative_step"][rows[1:][bad_read | after_bad]] = True
    missed_reads[rows[1:][long]] = missed[long]
    drop = out["first_read"] | out["duplicate"]
    return RegisterSteps(kwh=kwh, interval_minutes=iv_min, drop=drop,
                         missed_reads=missed_reads, **out)


# --- the reader's hook -----------------------------------------------------------------------
REGISTER_ISSUES = (
    # (field of RegisterSteps, code, action, detail)
    ("duplicate", "readings.register_duplicate_read", "dropped",
     "the same register read twice at one instant; the last in file order is kept"),
    ("exchange", "readings.register_exchange", "resolved",
     "meter exchange: a new device_id at this meter; each device's register is differenced "
     "on its own"),
    ("rollover", "readings.register_rollover", "resolved",
     "the register wrapped past rollover_kwh to 0; the step is read across the wrap"),
    ("reset", "readings.register_reset", "set_missing",
     "the register fell and stayed down (a meter exchange without device_id, a cleared "
     "register); the interval across the fall is missing"),
    ("negative_step", "readings.register_negative_step", "set_missing",
     "a read below the one before it, the next back above: a bad read; both intervals it "
     "touches are missing"),
    ("missed_reads", "readings.register_missed_reads", "set_missing",
     "reads missed (count: reads): the energy since the last read is not spread; those "
     "intervals are missing"),
)


def is_contract_form(form) -> bool:
    """Whether ``form`` reads a file exactly as the contract lays it out (nothing to do)."""
    if form is None:
        return True
    return (not _map_of(form) and getattr(form, "unit", "kWh") == "kWh"
            and getattr(form, "timestamp_marks", "start") == "start"
            and getattr(form, "value", "interval") == "interval")


def to_contract(frame: pd.DataFrame | None, log: IssueLog, form, *, table: str,
                id_column: str, value_column: str):
    """Turn a raw interval frame read in its export form into the contract's.

    Parameters
    ----------
    frame : pandas.DataFrame or None
        As :mod:`gridwatch.sources.files` converts a raw table: ``id_column``
        (Categorical), ``timestamp`` (UTC, as written), ``value_column``
        (``kwh`` or, for register reads, ``register_kwh``) and the optional
        value columns (``kwh_export``; ``device_id`` codes), in file order.
    log : IssueLog
        The reader's log; the register rules add to it.
    form : gridwatch.config.IntervalForm or None
    table, id_column, value_column : str
        ``value_column`` is the contract's (``kwh``).

    Returns
    -------
    pandas.DataFrame or None
        ``id_column``, ``timestamp`` (START of the interval), ``kwh`` [kWh]
        and ``kwh_export`` [kWh] when read; rows in file order, first and
        duplicate register reads dropped.
    """
    if frame is None or is_contract_form(form) or not hasattr(form, "unit"):
        return frame
    ids = frame[id_column].array
    codes = np.asarray(ids.codes, dtype=np.int64)
    stamps = pd.DatetimeIndex(frame[col.TIMESTAMP])
    t_us = stamps.as_unit("us").asi8
    unit = form.unit
    energy_unit = unit if unit in ENERGY_PER_KWH else None
    if getattr(form, "value", "interval") == "register":
        # Differenced in the file's unit, then converted: whole Wh give exact steps.
        steps = register_to_interval_kwh(
            codes, t_us, frame[col.REGISTER_KWH].to_numpy(),
            device_codes=frame[col.DEVICE_ID].to_numpy() if col.DEVICE_ID in frame else None,
            rollover_kwh=form.rollover_kwh * ENERGY_PER_KWH[unit],
            interval_minutes=form.interval_minutes)
        _log_register(log, steps, ids, table)
        frame = frame.drop(columns=[c for c in (col.REGISTER_KWH, col.DEVICE_ID) if c in frame])
        frame.insert(2, value_column, to_kwh(steps.kwh, unit))
        iv = steps.interval_minutes
        keep = ~steps.drop
    else:
        iv = meter_interval_minutes(codes, t_us, interval_minutes=form.interval_minutes) \
            if (form.timestamp_marks == "end" or energy_unit is None) else None
        frame[value_column] = to_kwh(frame[value_column].to_numpy(), unit, iv)
        keep = None
    for name in col.READINGS_OPTIONAL_VALUES:
        if name in frame:
            frame[name] = to_kwh(frame[name].to_numpy(), unit, iv)
    if form.timestamp_marks == "end":  # in integer microseconds: exact, and the dtype stays
        start = t_us - np.round(iv * _US_PER_MIN).astype(np.int64)
        frame[col.TIMESTAMP] = pd.DatetimeIndex(start.view("M8[us]")).tz_localize("UTC")
    if keep is not None and not keep.all():
        frame = frame[keep].reset_index(drop=True)
    return frame


def _log_register(log: IssueLog, steps: RegisterSteps, ids: pd.Categorical, table: str) -> None:
    log.add(f"{table}.register_first_read", table, int(steps.first_read.sum()), "dropped",
            severity="info", detail="the first read of each register opens it: no interval "
                                    "ends there")
    codes = np.asarray(ids.codes)
    for field, code, action, detail in REGISTER_ISSUES:
        hits = getattr(steps, field).astype(np.int64)
        per_id = np.bincount(codes, weights=hits, minlength=len(ids.categories))
        severity = "info" if action == "resolved" else "warning"
        log.add_per_meter(code.replace("readings.", f"{table}."), table,
                          pd.Series(per_id, index=ids.categories), action, detail=detail,
                          severity=severity)
