"""Input sources: read a dataset laid out per ``docs/data-contract.md`` into clean frames.

:func:`read_dataset` is the one entry point the pipeline uses for files; the
per-table readers live in :mod:`gridwatch.sources.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.cleaning import clean_readings, clean_weather
from gridwatch.errors import InputError
from gridwatch.issues import IssueLog
from gridwatch.resolution import split_coarse
from gridwatch.sources import files
from gridwatch.sources.files import (
    find_table,
    read_meters,
    read_readings,
    read_table,
    read_upstream,
    read_weather,
)

__all__ = ["Dataset", "Source", "clean_dataset", "empty_readings", "find_table", "read_dataset",
           "read_meters", "read_readings", "read_upstream", "read_weather"]


@dataclass
class Dataset:
    """The cleaned input tables of one run.

    Attributes
    ----------
    meters : pandas.DataFrame
        One row per meter (:func:`gridwatch.sources.files.read_meters`).
    readings : pandas.DataFrame
        Cleaned readings: ``meter_id`` (Categorical), ``timestamp`` (UTC),
        ``kwh`` [kWh]; sorted, unique per (meter_id, timestamp).
    interval_minutes : pandas.Series
        Interval of each meter with readings [min], indexed by ``meter_id``.
    upstream : pandas.DataFrame or None
        Cleaned upstream loads (``asset_id``, ``timestamp``, ``kwh`` [kWh]).
    upstream_interval_minutes : pandas.Series or None
        Interval of each asset [min], indexed by ``asset_id``.
    weather : pandas.DataFrame or None
        Cleaned weather (``region``, ``timestamp``, ``temperature_c`` [degrees C]).
    issues : IssueLog
        Everything the readers and cleaning repaired, dropped or refused.
    row_counts : dict
        ``{table: {"in": rows read, "used": rows kept}}`` for the four tables;
        ``in - used`` equals the rows of that table's ``dropped`` issues.
    coarse : pandas.DataFrame or None
        The cleaned reads of the daily and monthly meters
        (:func:`gridwatch.resolution.split_coarse`), which ``readings`` does not hold.
    """

    meters: pd.DataFrame
    readings: pd.DataFrame
    interval_minutes: pd.Series
    upstream: pd.DataFrame | None
    upstream_interval_minutes: pd.Series | None
    weather: pd.DataFrame | None
    issues: IssueLog
    row_counts: dict
    coarse: pd.DataFrame | None = None


class Source(Protocol):
    """Where a run's inputs come from: the small tables at once, the long ones by partition.

    Implemented by :class:`gridwatch.sources.partitioned.FileSource` (a
    dataset directory) and :class:`gridwatch.influx.source.InfluxSource`;
    :func:`gridwatch.runner.open_source` opens the configured one and
    :func:`gridwatch.runner.analyse_source` runs the analysis on it.

    Attributes
    ----------
    name : str
        What the readings were read from, for messages (a file, a measurement).
    as_of : datetime.date or None
        The last day analysed; None: found in the readings as they are read.
    meters : pandas.DataFrame
        The meters table (:func:`read_meters`).
    weather : pandas.DataFrame or None
        The cleaned weather.
    issues : IssueLog
        What reading the meters and the weather recorded.
    counts : dict
        ``{"meters": {"in", "used"}, "weather": {"in", "used"}}``.
    """

    name: str
    as_of: object
    meters: pd.DataFrame
    weather: pd.DataFrame | None
    issues: IssueLog
    counts: dict

    def upstream_asset_ids(self) -> list:
        """The assets with upstream data (their meters are kept in one partition)."""

    def open(self, plan):
        """The loader of a plan's partitions.

        ``loader(part)`` is the cleaned :class:`Dataset` of one partition,
        ``loader.unplanned(meters)`` the rows of no partition (counted once),
        ``loader.close()`` removes what the loader made (a spill).
        """

    def check(self, totals: dict) -> None:
        """Refuse, on the partitions' summed row counts, what the full read refuses."""

    def no_readings(self, issues=None) -> InputError:
        """The error of a run without a single usable reading."""


def _expected(name: str) -> str:
    return ", ".join(f"{name}{suffix}" for suffix in files.SUFFIXES)


def read_dataset(input_dir, *, data_config) -> Dataset:
    """Read, check and clean every table of a dataset directory.

    Parameters
    ----------
    input_dir : str or os.PathLike
        Directory holding ``meters`` and ``readings`` (required) and
        ``upstream`` and ``weather`` (optional), each as ``.csv``,
        ``.csv.gz`` or ``.parquet``.
    data_config : gridwatch.config.DataConfig
        Time zone for naive timestamps and the cleaning thresholds.

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        When the directory or a required table is missing, or a table cannot
        be used at all (see the readers).

    Notes
    -----
    Upstream loads are cleaned with the meter rules except the plausibility
    caps (``max_plausible_kw`` and ``contracted_kw`` describe a single meter,
    not a substation); their spike rule still applies. Meters with no usable
    reading (none left, or all NaN) are recorded as ``meters.no_readings``
    (action ``excluded``); they stay in ``meters``.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError("input directory not found", file=input_dir,
                         hint="pass a directory holding meters and readings tables")
    paths = {name: find_table(input_dir, name) for name in col.TABLES}
    for name in ("meters", "readings"):
        if paths[name] is None:
            raise InputError(f"no {name} table", file=input_dir,
                             hint=f"add one of {_expected(name)}")
    tz = data_config.timezone
    issues = IssueLog()
    rows_in = dict.fromkeys(col.TABLES, 0)

    frames = dict.fromkeys(col.TABLES)
    for name in col.TABLES:  # meters, readings, upstream, weather: the order of the issues
        if paths[name] is not None:
            frames[name], log, rows_in[name] = read_table(paths[name], name, timezone=tz,
                                                          form=data_config.form_of(name))
            issues.extend(log)
    meters, readings, upstream, weather = (frames[name] for name in
                                           ("meters", "readings", "upstream", "weather"))
    return clean_dataset(meters, readings, upstream, weather, data_config=data_config,
                         issues=issues, rows_in=rows_in)


def empty_readings() -> pd.DataFrame:
    """A raw readings frame without rows: what a reader gives for a partition of silent meters."""
    return pd.DataFrame({col.METER_ID: pd.Categorical([]),
                         col.TIMESTAMP: pd.Series([], dtype=files.TIMESTAMP_DTYPE),
                         col.KWH: pd.Series([], dtype=np.float64)})


def clean_dataset(meters, readings, upstream, weather, *, data_config, issues: IssueLog,
                  rows_in: dict, now=None) -> Dataset:
    """Clean raw tables, whatever source they came from, into a :class:`Dataset`.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters table as :func:`read_meters` returns it.
    readings : pandas.DataFrame
        Raw readings: ``meter_id`` (Categorical), ``timestamp``
        (``datetime64[us, UTC]``, START of the interval), ``kwh`` (float64).
    upstream : pandas.DataFrame or None
        Raw upstream loads: ``asset_id`` (Categorical), ``timestamp``, ``kwh``.
    weather : pandas.DataFrame or None
        Raw weather: ``region`` (str), ``timestamp``, ``temperature_c``.
    data_config : gridwatch.config.DataConfig
        The cleaning thresholds.
    issues : IssueLog
        What the reader already recorded; cleaning adds to it.
    rows_in : dict
        Rows read per table (``meters``, ``readings``, ``upstream``, ``weather``),
        for the row counts.
    now : pandas.Timestamp, optional
        Tz-aware wall-clock time of the run (default: now). Readings and
        upstream loads that start later are in the future: dropped and
        counted (``readings.future_timestamp``, ``upstream.future_timestamp``).

    Returns
    -------
    Dataset
    """
    cleaning = {"max_plausible_kw": data_config.max_plausible_kw,
                "contracted_kw_factor": data_config.contracted_kw_factor,
                "spike_factor": data_config.spike_factor,
                "not_after": pd.Timestamp.now(tz="UTC") if now is None else now}
    counts = {name: {"in": int(rows_in.get(name, 0)), "used": 0} for name in col.TABLES}
    counts["meters"]["used"] = len(meters)

    # Daily and monthly meters are judged at their own resolution (issue 16, items 3-4).
    readings, coarse, log = split_coarse(readings, meters,
                                         max_plausible_kw=data_config.max_plausible_kw,
                                         not_after=cleaning["not_after"])
    issues.extend(log)
    readings, interval_minutes, log = clean_readings(readings, meters, **cleaning)
    issues.extend(log)
    counts["readings"]["used"] = len(readings) + len(coarse)
    _record_meters_without_readings(meters, readings, issues, coarse)

    upstream_interval_minutes = None
    if upstream is not None:
        upstream, upstream_interval_minutes, log = clean_readings(
            upstream, meters, **{**cleaning, "max_plausible_kw": np.inf},
            id_column=col.ASSET_ID, table="upstream", signed=True)
        issues.extend(log)
        counts["upstream"]["used"] = len(upstream)

    if weather is not None:
        weather, log = clean_weather(weather)
        issues.extend(log)
        counts["weather"]["used"] = len(weather)

    return Dataset(meters=meters, readings=readings, interval_minutes=interval_minutes,
                   upstream=upstream, upstream_interval_minutes=upstream_interval_minutes,
                   weather=weather, issues=issues, row_counts=counts,
                   coarse=coarse if len(coarse) else None)


def _record_meters_without_readings(meters, readings, issues: IssueLog, coarse=None) -> None:
    ids = readings[col.METER_ID].array
    usable = np.bincount(ids.codes[~np.isnan(readings[col.KWH].to_numpy())],
                         minlength=len(ids.categories))
    with_data = ids.categories[usable > 0]
    if coarse is not None and len(coarse):
        with_data = with_data.union(pd.Index(coarse.loc[coarse[col.KWH].notna(), col.METER_ID]
                                             .unique()))
    without = ~meters[col.METER_ID].isin(with_data)
    issues.add_per_meter("meters.no_readings", "meters",
                         pd.Series(1, index=meters.loc[without, col.METER_ID]), "excluded",
                         detail="no usable reading; the meter is not analysed")
