"""The analysis of one dataset, all at once or partition by partition, with the same result.

A partition is a set of whole transformers (and whole feeders / substations
where their balance needs them): detection and energy balance of a partition
need nothing from the others except three small figures computed across all
of them first:

1. the peer groups' daily figures (:class:`gridwatch.peers.PeerCounts`, additive);
2. the detector's calibration (:class:`gridwatch.detect.Calibration`, fitted on
   every meter's evidence: a few numbers per meter);
3. the energy balance's calibration (:class:`gridwatch.balance.BalanceCalibration`,
   fitted on every asset's evidence).

So a partitioned run makes three passes for these and a final one for the
results (each partition's reading, gridding and detection is done once and
kept on disk between the passes); each meter's and each asset's row is then
what the all-at-once run gives, every output file identical (``tests/test_engine.py``; internal
figures may differ in the last bits where numpy's summation order depends on
how many columns are summed together). With a single partition the
calibrations come from the partition itself, in one pass.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.balance import (
    Balance,
    BalanceCalibration,
    BalanceMeasurement,
    decide_balance,
    measure_balance,
)
from gridwatch.baseline import ExpectedConsumption
from gridwatch.config import Config
from gridwatch.days import (
    DayGrid,
    add_day_counts,
    daily_mean,
    day_grid,
    default_as_of,
    last_full_day,
    meters_by_last_day,
    window_bounds,
)
from gridwatch.detect import (
    Calibration,
    DailyFigures,
    Detection,
    Measurement,
    daily_figures,
    decide_visible_load,
    measure_visible_load,
    peer_counts_of,
)
from gridwatch.errors import InputError
from gridwatch.issues import IssueLog
from gridwatch.peers import DemandBands, PeerCounts, demand_bands
from gridwatch.resample import analysis_index, to_grid, weather_to_grid
from gridwatch.solar import floor_cells
from gridwatch.sources import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    """Meters and the assets with upstream data that are balanced with them.

    Attributes
    ----------
    meter_ids : tuple of str
    asset_ids : tuple of str
        Every meter below these assets is in ``meter_ids``.
    number : int
        Its number in a :class:`gridwatch.partitions.PartitionPlan` (-1: none).
    """

    meter_ids: tuple
    asset_ids: tuple = ()
    number: int = -1


def partitions_of(plan) -> list[Partition]:
    """The partitions of a :class:`gridwatch.partitions.PartitionPlan`."""
    return [Partition(meter_ids=tuple(plan.meter_ids(p)), asset_ids=tuple(plan.asset_ids(p)),
                      number=p) for p in range(plan.n_partitions)]


@dataclass
class PartitionAnalysis:
    """Everything the final pass produced for one partition."""

    table: pd.DataFrame
    detection: Detection
    expected: ExpectedConsumption
    kw: pd.DataFrame
    meters: pd.DataFrame
    balance: Balance | None
    issues: IssueLog
    no_window: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    input_issues: IssueLog = field(default_factory=IssueLog)
    row_counts: dict = field(default_factory=dict)
    readings_in_window: int = 0
    bands: DemandBands | None = None


@dataclass
class Shared:
    """The figures every partition needs from all of them (``None``: from the partition itself)."""

    peers: PeerCounts | None = None
    calibration: Calibration | None = None
    balance_calibration: BalanceCalibration | None = None


def partition_dataset(ds: Dataset, part: Partition | None) -> Dataset:
    """The rows of ``ds`` that belong to one partition (``None``: all of it, not copied)."""
    if part is None:
        return ds
    meters = ds.meters[ds.meters[col.METER_ID].astype(str).isin(part.meter_ids)].reset_index(drop=True)
    readings = ds.readings[ds.readings[col.METER_ID].isin(part.meter_ids).to_numpy()]
    upstream = up_minutes = None
    if ds.upstream is not None:
        upstream = ds.upstream[ds.upstream[col.ASSET_ID].isin(part.asset_ids).to_numpy()]
        up_minutes = ds.upstream_interval_minutes
    return Dataset(meters=meters, readings=readings, interval_minutes=ds.interval_minutes,
                   upstream=upstream, upstream_interval_minutes=up_minutes, weather=ds.weather,
                   issues=IssueLog(), row_counts={})


class InMemory:
    """Partitions of a dataset already read: ``load(part)`` is the rows of the partition."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __call__(self, part: Partition | None) -> Dataset:
        """The rows of one partition (``None``: the whole dataset)."""
        return partition_dataset(self.ds, part)


class _Read:
    """A loader for a partition already read: ``load(part)`` returns it."""

    def __init__(self, sub: Dataset):
        self.sub = sub

    def __call__(self, part) -> Dataset:
        return self.sub


class PlannedFiles:
    """Partitions of a dataset directory read one at a time with the plan's readers.

    Only the partition's rows are read (Parquet row groups of its meters, or
    its part of a one-off spill for CSV: :mod:`gridwatch.sources.partitioned`)
    and cleaned with the rules of the full read; the meters and weather
    tables are small and read whole. Picklable: a copy sent to a Dask worker
    reads the client's spill when the worker sees it (same host or shared
    disk) and opens the files itself otherwise. :meth:`close` removes the
    spill at the end of the run; only the process that made it removes it.

    Parameters
    ----------
    input_dir : str or os.PathLike
    plan : gridwatch.partitions.PartitionPlan
    data_config : gridwatch.config.DataConfig
    meters, weather : pandas.DataFrame, optional
        The meters table and the cleaned weather, when the caller has read
        them already (default: read from ``input_dir``).
    """

    _opened_here: dict = {}  # token -> tables this process opened itself (its own spill)

    def __init__(self, input_dir, plan, data_config, *, meters=None, weather=None):
        self.input_dir = str(input_dir)
        self.plan = plan
        self.data_config = data_config
        self.token = uuid.uuid4().hex
        self._open = None
        self._small = None if meters is None else {"meters": meters, "weather": weather}

    def _tables(self):
        """The open tables: this loader's, or (on a worker that cannot see them) its own."""
        if self._open is not None and all(t.readable_here() for t in _long_tables(self._open)):
            return self._open  # opened here, or sent by the client with a spill this host sees
        self._open = PlannedFiles._opened_here.get(self.token)
        if self._open is None:
            self._open = self._open_tables()
            close_opened()  # one run's tables per process: an earlier run's spill is removed
            PlannedFiles._opened_here[self.token] = self._open
        return self._open

    def _open_tables(self) -> dict:
        from gridwatch.sources import files
        from gridwatch.sources.partitioned import open_readings, open_upstream

        tz = self.data_config.timezone
        small = self._small or self._read_small()
        up_path = files.find_table(self.input_dir, "upstream")
        return {
            **small,
            "readings": open_readings(files.find_table(self.input_dir, "readings"), self.plan,
                                      timezone=tz),
            "upstream": None if up_path is None else open_upstream(up_path, self.plan,
                                                                   timezone=tz),
        }

    def _read_small(self) -> dict:
        from gridwatch.cleaning import clean_weather
        from gridwatch.sources import files

        meters, _, _ = files._read_meters(files.find_table(self.input_dir, "meters"))
        weather = None
        path = files.find_table(self.input_dir, "weather")
        if path is not None:
            weather, _, _ = files._read_weather(path, timezone=self.data_config.timezone)
            if weather is not None:
                weather, _ = clean_weather(weather)  # its issues: once, by the caller
        return {"meters": meters, "weather": weather}

    def close(self) -> None:
        """Close the files and remove the spill this process made (at the end of a run)."""
        if self._open is not None:
            _close_tables(self._open)
            self._open = None
        PlannedFiles._opened_here.pop(self.token, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, part: Partition) -> Dataset:
        """Read and clean one partition's rows."""
        t = self._tables()
        meters = t["meters"][t["meters"][col.METER_ID].astype(str).isin(part.meter_ids)]
        return self._clean(meters.reset_index(drop=True), part.number)

    def unplanned(self, meters: pd.DataFrame) -> Dataset:
        """The rows of no partition (unknown meters and assets, blank ids), cleaned: counted once."""
        from gridwatch.sources.partitioned import UNPLANNED

        return self._clean(meters.iloc[:0], UNPLANNED)

    def _clean(self, meters: pd.DataFrame, key) -> Dataset:
        """Read and clean the rows of one key; ``row_counts`` carry the whole-table check's counts."""
        from gridwatch.sources import clean_dataset, empty_readings
        from gridwatch.sources.partitioned import part_counts

        t = self._tables()
        readings, issues, rows_in = t["readings"].read(key)
        checks = {"readings": part_counts(readings, issues, table="readings")}
        if readings is None:
            readings = empty_readings()
        upstream, up_rows = None, 0
        if t["upstream"] is not None:
            upstream, up_issues, up_rows = t["upstream"].read(key)
            checks["upstream"] = part_counts(upstream, up_issues, table="upstream")
            issues.extend(up_issues)
        sub = clean_dataset(meters, readings, upstream, None, data_config=self.data_config,
                            issues=issues, rows_in={"readings": rows_in, "upstream": up_rows})
        for table, counts in checks.items():
            sub.row_counts[table].update(counts)
        sub.weather = t["weather"]
        return sub


def _long_tables(tables: dict) -> list:
    return [tables[name] for name in ("readings", "upstream") if tables.get(name) is not None]


def _close_tables(tables: dict) -> None:
    for table in _long_tables(tables):
        table.close()


def close_opened() -> None:
    """Close the tables this process opened for a run, removing their spills (worker teardown)."""
    for tables in PlannedFiles._opened_here.values():
        _close_tables(tables)
    PlannedFiles._opened_here.clear()


def serial_map(func, items) -> list:
    """Run ``func`` on each item in turn, in this process (the default executor)."""
    return [func(item) for item in items]


def analyse(ds, *, index: pd.DatetimeIndex | None, grid: DayGrid | None, config: Config,
            partitions: Sequence[Partition] | None = None,
            release_readings: bool = False, map_partitions=serial_map,
            keep=(), keep_flagged: bool = True,
            window: Window | None = None) -> list[PartitionAnalysis]:
    """Score every meter and balance every asset, all at once or partition by partition.

    Parameters
    ----------
    ds : Dataset or callable
        The cleaned dataset (readings may extend beyond the window), or a
        loader: ``ds(part)`` returns the cleaned :class:`Dataset` of one
        partition (``ds(None)``: all of it), e.g. reading it from files on a
        worker.
    index : pandas.DatetimeIndex or None
        The analysis grid (UTC cell starts). None, with several partitions
        and a ``window``: the as-of day is the latest last full day of the
        partitions, found while they are read (see Notes).
    grid : DayGrid or None
        Its local days.
    config : Config
    partitions : sequence of Partition, optional
        Whole transformers / feeders each; default: one partition of everything.
    release_readings : bool, default False
        With one partition: drop ``ds.readings`` once gridded (memory for detection).
    map_partitions : callable, default :func:`serial_map`
        ``map_partitions(func, partitions)`` runs ``func`` on every partition
        and returns the results in order: here one after another, or as the
        tasks of a cluster (:mod:`gridwatch.cluster`).
    keep : collection of str, default ()
        With several partitions, each partition's demand matrices are cut to
        the meters worth drawing (flagged, suspects) as it finishes; these
        meters are kept too. With one partition every meter is kept.
    keep_flagged : bool, default True
        False: with several partitions keep the arrays of ``keep`` only (a
        run that draws no plots).
    window : Window, optional
        The analysis grid of an as-of day, for ``index=None``.

    Returns
    -------
    list of PartitionAnalysis
        One per partition, in order. Rows of a meter or asset equal those of
        the all-at-once analysis.

    Raises
    ------
    InputError
        With ``index=None``, when no partition has a usable reading.

    Notes
    -----
    Without an as-of day, each partition is gridded in the first pass on
    the window of its own default as-of; the run's as-of is
    :func:`~gridwatch.days.default_as_of` of every partition's meters
    (the full read's default), and the partitions whose own day differs,
    usually none, are read again on the run's window. A separate
    pass to find the day would read every partition twice.
    """
    load = ds if callable(ds) else InMemory(ds)
    parts = list(partitions) if partitions else [None]
    if index is None and window is None:
        raise ValueError("index=None needs a window")
    if index is None and len(parts) == 1:  # read once: the day, then the analysis
        sub = load(parts[0])
        if sub.readings is None or sub.readings.empty:
            raise InputError("no usable readings", file="readings",
                             hint="check the readings table and data_quality.csv")
        index, grid = window(last_full_day(sub.readings, sub.interval_minutes,
                                           config.data.timezone))
        load = _Read(sub)
    if len(parts) == 1:
        return [_final_pass(parts[0], load=load, index=index, grid=grid, config=config,
                            shared=Shared(), cache_dir=None, release=release_readings)]
    with tempfile.TemporaryDirectory(prefix="gridwatch-partitions-") as cache_dir:
        return _analyse_partitions(parts, load=load, index=index, grid=grid, config=config,
                                   map_partitions=map_partitions, cache_dir=cache_dir,
                                   keep=frozenset(str(k) for k in keep),
                                   keep_flagged=keep_flagged, window=window)


def _analyse_partitions(parts, *, load, index, grid, config, map_partitions, cache_dir, keep,
                        keep_flagged,
                        window):
    """Three passes for the shared figures, then the results; each partition's work cached.

    1. read, clean and grid each partition (cached); count its peer groups;
    2. measure the detector's evidence (cached); fit the detector's calibration;
    3. decide the detection and fit expected consumption (cached); measure
       the energy balance (cached); fit the balance's calibration;
    4. decide the energy balance; each partition's results.
    """
    shared = Shared()
    n = len(parts)
    log.info("pass 1 of 4: reading and gridding %d partitions", n)
    if index is None:
        index, grid, shared.peers = _first_pass_by_own_day(
            parts, load=load, config=config, map_partitions=map_partitions, cache_dir=cache_dir,
            window=window)
    common = {"load": load, "index": index, "grid": grid, "config": config, "cache_dir": cache_dir}
    if shared.peers is None:
        shared.peers = _sum(map_partitions(functools.partial(_peer_pass, **common), parts))
    log.info("pass 2 of 4: the detector's evidence")
    evidence = map_partitions(functools.partial(_evidence_pass, **common, shared=shared), parts)
    shared.calibration = Calibration.fit(pd.concat(evidence), config.detection)
    log.info("pass 3 of 4: detection and the energy balance's evidence")
    evidence = [e for e in map_partitions(
        functools.partial(_balance_evidence_pass, **common, shared=shared), parts)
        if e is not None]
    if evidence:
        b = config.balance
        shared.balance_calibration = BalanceCalibration.fit(
            pd.concat(evidence), fdr_alpha=b.fdr_alpha, max_no_load_share=b.max_no_load_share)
    log.info("pass 4 of 4: energy balance and results")
    return map_partitions(functools.partial(_final_pass, **common, shared=shared, keep=keep,
                                            keep_flagged=keep_flagged), parts)


def _first_pass_by_own_day(parts, *, load, config, map_partitions, cache_dir, window):
    """Pass 1 without an as-of day: its index, grid and the peer counts of every partition."""
    firsts = map_partitions(functools.partial(_own_day_pass, load=load, config=config,
                                              cache_dir=cache_dir, window=window), parts)
    as_of = default_as_of(add_day_counts(ends for ends, _ in firsts))  # as the full read's
    index, grid = window(as_of)
    own = [None if ends is None else default_as_of(ends) for ends, _ in firsts]
    again = [part for part, day in zip(parts, own, strict=True) if day != as_of]
    if again:
        log.info("as of %s; %d partitions end on another day and are gridded again", as_of,
                 len(again))
    counts = [c for day, (_, c) in zip(own, firsts, strict=True) if day == as_of]
    counts += map_partitions(functools.partial(_peer_pass, load=load, index=index, grid=grid,
                                               config=config, cache_dir=cache_dir), again)
    return index, grid, _sum(counts)


def _sum(counts):
    total = None
    for c in counts:
        total = c if total is None else total + c
    return total


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

    def __call__(self, as_of) -> tuple[pd.DatetimeIndex, DayGrid]:
        """The UTC grid of the window ending on ``as_of`` (a date), and its local days."""
        start, end = window_bounds(as_of, self.history_days, self.timezone)
        index = analysis_index(start, end, self.grid_minutes)
        return index, day_grid(index, self.timezone)


# --- one partition -------------------------------------------------------------------
@dataclass
class _Gridded:
    kw: pd.DataFrame
    spread: np.ndarray
    meters: pd.DataFrame
    no_window: list
    temperature: np.ndarray | None
    issues: IssueLog
    readings_in_window: int = 0
    upstream_kw: pd.DataFrame | None = None  # the assets' delivered demand, when given
    daily: DailyFigures | None = None  # the meters' daily figures: peer counts, then the detector
    unmetered_pv: pd.Series | None = None  # meters behind PV read import-only (by meter_id)


def _grid(sub: Dataset, index, grid, config: Config, *, release=False) -> _Gridded:
    """The partition's demand and its assets' on the grid, its meters with data, their temperature.

    Also their daily figures, computed once for the peer counts of the first
    pass and the detector's measurement of the second.
    """
    meter_ids = pd.Index(sub.meters[col.METER_ID].astype(str))
    # to_grid ignores rows outside the index: no filtered copy of the readings.
    kw, _, spread = to_grid(sub.readings, sub.interval_minutes, meter_ids=meter_ids, index=index,
                            with_spread=True)
    export_kw = None
    if col.KWH_EXPORT in sub.readings.columns:
        export_kw, _ = to_grid(sub.readings, sub.interval_minutes, meter_ids=meter_ids,
                               index=index, value_column=col.KWH_EXPORT)
    ts = sub.readings[col.TIMESTAMP]
    in_window = int(((ts >= index[0]) & (ts < index[-1] + (index[1] - index[0]))).sum())
    upstream_kw = None
    if sub.upstream is not None and not sub.upstream.empty:
        asset_ids = _ids_in_order(sub.upstream[col.ASSET_ID])
        upstream_kw, _ = to_grid(sub.upstream, sub.upstream_interval_minutes, meter_ids=asset_ids,
                                 index=index, id_column=col.ASSET_ID)
    if release:  # the long tables are not needed any more; free them before detection
        sub.readings = sub.upstream = None
        _release_arrow_memory()
    has_data = kw.notna().any(axis=0).to_numpy()
    meters = sub.meters[has_data].reset_index(drop=True)
    if not has_data.all():
        kw = kw.loc[:, has_data]
        spread = spread.loc[:, has_data]
        export_kw = None if export_kw is None else export_kw.loc[:, has_data]
    issues = IssueLog()
    temperature = meter_temperature(sub.weather, meters, index, grid, issues)
    demand = kw.to_numpy(dtype=np.float64)  # imported
    cells, pv, dark = floor_cells(demand, index, meters, local_hour=grid.hour_of_cell,
                                 cell_hours=grid.cell_hours,
                                 export_kw=None if export_kw is None else export_kw.to_numpy())
    if export_kw is not None:  # net: what the home draws beyond its own generation
        kw = kw - export_kw.fillna(0.0)
        demand = kw.to_numpy(dtype=np.float64)
    daily = daily_figures(demand, grid, analysis=config.analysis,
                          frozen_hours=config.data.frozen_hours, floor_cells=cells, dark=dark)
    return _Gridded(kw=kw, spread=spread.to_numpy(), meters=meters,
                    no_window=list(meter_ids[~has_data]), temperature=temperature, issues=issues,
                    readings_in_window=in_window, upstream_kw=upstream_kw, daily=daily,
                    unmetered_pv=pd.Series(pv.import_only, index=meters[col.METER_ID].astype(str))
                    if pv.import_only.any() else None)


def _ids_in_order(ids: pd.Series) -> pd.Index:
    """The distinct ids in order of appearance, as str (no string per row for a Categorical)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = ids.cat.codes.to_numpy()
        if len(codes) == 0 or codes.min() >= 0:
            return pd.Index(ids.cat.categories[pd.unique(codes)].astype(str))
    return pd.Index(pd.unique(ids.astype(str)))


def _measure(g: _Gridded, grid, config, shared: Shared) -> Measurement:
    return measure_visible_load(
        g.kw.to_numpy(dtype=np.float64), grid, g.meters, peers=shared.peers,
        temperature_c=g.temperature, spread_kw=g.spread, detection=config.detection,
        analysis=config.analysis, frozen_hours=config.data.frozen_hours, daily=g.daily)


class _Cache:
    """One partition's intermediate results, kept on disk between the passes of a run.

    Stages: ``"gridded"`` (its tables and demand on the grid, without the
    long readings table), ``"to_measure"`` (what only the detector's
    measurement reads: the sub-cell spread and the daily figures, removed
    once measured), ``"measured"`` (the detector's measurement),
    ``"detected"`` (the detection and expected consumption) and
    ``"balance_measured"`` (the energy balance's measurement). A worker that
    cannot see the directory (another host) gets nothing back and computes
    again: slower, never different.
    """

    #: Stages kept in memory when there is no cache directory: a pass asks for them
    #: twice (the detection, then the energy balance's fill), and must not compute twice.
    IN_MEMORY = ("measured", "detected")

    def __init__(self, cache_dir, part: Partition | None, index: pd.DatetimeIndex):
        self.root = None
        self._memory = {}
        if cache_dir is not None and part is not None and Path(cache_dir).is_dir():
            self.root = Path(cache_dir)
            window = f"{index[0].isoformat()}/{len(index)}"  # a partition gridded on another day's
            self.key = hashlib.sha1("\0".join([window, *part.meter_ids]).encode()).hexdigest()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def get(self, stage):
        if self.root is None:
            return self._memory.get(stage)
        path = self.root / f"{self.key}.{stage}.pkl"
        if not path.exists():
            return None
        with path.open("rb") as handle:
            return pickle.load(handle)

    def put(self, stage, value) -> None:
        if self.root is None:
            if stage in self.IN_MEMORY:
                self._memory[stage] = value
            return
        path = self.root / f"{self.key}.{stage}.pkl"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    def drop(self, stage) -> None:
        self._memory.pop(stage, None)
        if self.root is not None:
            (self.root / f"{self.key}.{stage}.pkl").unlink(missing_ok=True)

    def put_gridded(self, sub: Dataset, g: _Gridded) -> None:
        """Keep a gridded partition; what only the measurement reads goes to ``"to_measure"``.

        The later passes read the partition's demand again but not its
        spread and daily figures: a third of the gridded bytes, and of the
        run's peak temporary disk.
        """
        # "to_measure" first: a cached "gridded" then always has it until measured
        # (a task that died between the two is retried from the start).
        self.put("to_measure", (g.spread, g.daily))
        self.put("gridded", (sub, dataclasses.replace(g, spread=None, daily=None)))


def _inputs(part, *, load, index, grid, config, cache: _Cache,
            release=False) -> tuple[Dataset, _Gridded]:
    """The partition's tables and gridded demand: read once, then from the run's cache."""
    cached = cache.get("gridded")
    if cached is not None:
        return cached
    sub = load(part)
    gridded = _grid(sub, index, grid, config, release=release or cache.enabled)
    cache.put_gridded(sub, gridded)
    return sub, gridded


def _measured(g: _Gridded, *, grid, config, shared, cache: _Cache) -> Measurement:
    measured = cache.get("measured")
    if measured is None:
        if g.spread is None:  # read from the cache: the measurement's own inputs are apart
            spread, daily = cache.get("to_measure")
            g = dataclasses.replace(g, spread=spread, daily=daily)
        measured = _measure(g, grid, config, shared)
        cache.put("measured", measured)
        cache.drop("to_measure")
    return measured


def _detected(g: _Gridded, *, index, grid, config, shared, cache: _Cache):
    """The partition's detection, its issues and its expected consumption (decided once)."""
    detected = cache.get("detected")
    if detected is None:
        measured = _measured(g, grid=grid, config=config, shared=shared, cache=cache)
        detection, issues = decide_visible_load(measured, shared.calibration)
        detected = (detection, issues, _expected(g, detection, index, grid))
        cache.put("detected", detected)
    return detected


def _peer_pass(part, *, load, index, grid, config, cache_dir) -> PeerCounts:
    _, g = _inputs(part, load=load, index=index, grid=grid, config=config,
                   cache=_Cache(cache_dir, part, index))
    return _peer_counts(g, grid, config)


def _peer_counts(g: _Gridded, grid, config) -> PeerCounts:
    return peer_counts_of(g.kw, grid, g.meters, analysis=config.analysis,
                          frozen_hours=config.data.frozen_hours, daily=g.daily)


def _own_day_pass(part, *, load, config, cache_dir, window):
    """Read a partition, grid it on the window of its own default as-of.

    Returns ``(meters by last day, peer counts)``: the counts of
    :func:`~gridwatch.days.meters_by_last_day`, which add up over partitions
    to the run's default as-of; ``(None, None)`` for a partition without readings.
    """
    sub = load(part)
    if sub.readings is None or sub.readings.empty:
        return None, None
    ends = meters_by_last_day(sub.readings, sub.interval_minutes, config.data.timezone)
    index, grid = window(default_as_of(ends))
    cache = _Cache(cache_dir, part, index)
    g = _grid(sub, index, grid, config, release=cache.enabled)
    cache.put_gridded(sub, g)
    return ends, _peer_counts(g, grid, config)


def _evidence_pass(part, *, load, index, grid, config, shared, cache_dir) -> pd.DataFrame:
    cache = _Cache(cache_dir, part, index)
    _, g = _inputs(part, load=load, index=index, grid=grid, config=config, cache=cache)
    return _measured(g, grid=grid, config=config, shared=shared, cache=cache).evidence


def _expected(g: _Gridded, detection: Detection, index, grid) -> ExpectedConsumption:
    cells = np.arange(len(index))[:, None]
    reference = (detection.onset_cell[None, :] < 0) | (cells < detection.onset_cell[None, :])
    return ExpectedConsumption().fit(g.kw.to_numpy(dtype=np.float64), grid, reference,
                                     np.nan_to_num(detection.expected_mean_kw))


def _balance_measured(sub: Dataset, g: _Gridded, *, index, grid, config, shared,
                      cache: _Cache) -> BalanceMeasurement:
    """The energy balance's measurement of the partition's assets (made once, then cached)."""
    measured = cache.get("balance_measured")
    if measured is not None:
        return measured
    detection, _, expected = _detected(g, index=index, grid=grid, config=config, shared=shared,
                                       cache=cache)
    # Gaps in a meter are filled with what it would draw, visible rigs included
    # (a rig left out of the fill would look like energy the meters miss).
    fill = expected.predict(grid)
    cells = np.arange(len(index))[:, None]
    onset = detection.onset_cell[None, :]
    rig_kw = detection.table[col.EXCESS_KW].to_numpy(dtype=np.float64)[None, :]
    fill += np.where((onset >= 0) & (cells >= onset), rig_kw, 0.0)
    expected_kw = pd.DataFrame(fill, index=g.kw.index, columns=g.kw.columns)
    b = config.balance
    measured = measure_balance(
        g.upstream_kw, g.kw, expected_kw, sub.meters, grid, min_coverage=b.min_coverage,
        fdr_alpha=b.fdr_alpha, min_unexplained_kw=b.min_unexplained_kw,
        max_no_load_share=b.max_no_load_share, no_load_floor_kw=b.no_load_floor_kw,
        min_day_coverage=config.analysis.min_day_coverage, frozen_hours=config.data.frozen_hours,
        frozen_mask=detection.masked, unmetered_pv=g.unmetered_pv,
        use_inferred_topology=b.use_inferred_topology)
    cache.put("balance_measured", measured)
    return measured


def _has_upstream(g: _Gridded) -> bool:
    return g.upstream_kw is not None


def _balance_evidence_pass(part, *, load, index, grid, config, shared,
                           cache_dir) -> pd.DataFrame | None:
    cache = _Cache(cache_dir, part, index)
    sub, g = _inputs(part, load=load, index=index, grid=grid, config=config, cache=cache)
    if not _has_upstream(g):
        return None
    return _balance_measured(sub, g, index=index, grid=grid, config=config, shared=shared,
                             cache=cache).evidence


def _final_pass(part, *, load, index, grid, config, shared, cache_dir, keep=None, keep_flagged=True,
                release=False) -> PartitionAnalysis:
    timings = {}
    t0 = time.perf_counter()
    cache = _Cache(cache_dir, part, index)
    sub, g = _inputs(part, load=load, index=index, grid=grid, config=config, cache=cache,
                     release=release)
    timings["grid_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    issues = IssueLog().extend(g.issues)
    detection, det_issues, expected = _detected(g, index=index, grid=grid, config=config,
                                                shared=shared, cache=cache)
    issues.extend(det_issues)
    timings["detect_s"] = time.perf_counter() - t0
    balance = None
    if _has_upstream(g):
        t0 = time.perf_counter()
        measured = _balance_measured(sub, g, index=index, grid=grid, config=config, shared=shared,
                                     cache=cache)
        balance, bal_issues = decide_balance(measured, g.kw, sub.meters,
                                             shared.balance_calibration)
        issues.extend(bal_issues)
        timings["balance_s"] = time.perf_counter() - t0
    analysis = PartitionAnalysis(
        table=detection.table, detection=detection, expected=expected, kw=g.kw, meters=g.meters,
        balance=balance, issues=issues, no_window=g.no_window, timings=timings,
        input_issues=sub.issues, row_counts=sub.row_counts,
        readings_in_window=g.readings_in_window,
        bands=demand_bands(detection.mean_kw, g.meters))
    return analysis if keep is None else _keep_only(analysis, keep, flagged=keep_flagged)


def _keep_only(a: PartitionAnalysis, keep, *, flagged=True) -> PartitionAnalysis:
    """The analysis with the arrays of the meters worth drawing only; every table kept whole.

    Kept: meters flagged by the detector, every suspect of the energy balance
    (unless ``flagged`` is False: a run without plots), and the ids in
    ``keep``. The rest of a partitioned run's demand matrices is dropped
    here, so that the end of the run holds O(flagged), not O(all meters).
    """
    ids = a.kw.columns.astype(str)
    wanted = ids.isin(list(keep))
    if flagged:
        wanted = wanted | a.table[col.FLAGGED].to_numpy(dtype=bool)
    if flagged and a.balance is not None and len(a.balance.suspects):
        wanted = wanted | ids.isin(a.balance.suspects[col.METER_ID].astype(str))
    pos = np.flatnonzero(wanted)
    d = a.detection
    a.detection = Detection(
        table=d.table, **{name: getattr(d, name)[:, pos] for name in
                          ("floor_kw", "mean_kw", "expected_floor_kw", "expected_mean_kw", "masked")},
        onset_cell=d.onset_cell[pos])
    a.expected = a.expected.select(pos)
    a.kw = a.kw.iloc[:, pos]
    a.meters = a.meters.iloc[pos].reset_index(drop=True)
    return a


def meter_temperature(weather, meters: pd.DataFrame, index, grid: DayGrid, issues: IssueLog):
    """Daily mean temperature at each meter ``(n_days, n_meters)``, or None without weather."""
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
    return np.nan_to_num(per_meter, nan=15.5)  # no data at all: neutral (no heating/cooling)


@dataclass
class Combined:
    """The partitions' results in the all-at-once order.

    Attributes
    ----------
    table : pandas.DataFrame
        The detector's per-meter table (index ``meter_id``), meters in input order.
    balance_table, suspects : pandas.DataFrame or None
        The energy balance's per-asset table (assets in upstream order) and suspects.
    topology : pandas.DataFrame or None
        The meters whose listed transformer is doubtful, meters in input order.
    issues : IssueLog
    no_window : list of str
        Meters without readings in the window.
    """

    table: pd.DataFrame
    balance_table: pd.DataFrame | None
    suspects: pd.DataFrame | None
    issues: IssueLog
    no_window: list
    topology: pd.DataFrame | None = None


def combine(analyses: Sequence[PartitionAnalysis], meter_order, asset_order=None) -> Combined:
    """Put the partitions' rows back in the order of the inputs (as if analysed at once)."""
    position = pd.Series(np.arange(len(meter_order)), index=pd.Index(meter_order).astype(str))
    table = pd.concat([a.table for a in analyses])
    table = table.iloc[np.argsort(position.reindex(table.index).to_numpy(), kind="stable")]
    issues = IssueLog()
    for a in analyses:
        issues.extend(a.issues)
    no_window = [m for a in analyses for m in a.no_window]
    balances = [a.balance for a in analyses if a.balance is not None]
    if not balances:
        return Combined(table, None, None, issues, no_window)
    order = pd.Series(np.arange(len(asset_order)), index=pd.Index(asset_order).astype(str))
    bal = pd.concat([b.table for b in balances], ignore_index=True)
    bal = bal.iloc[np.argsort(order.reindex(bal[col.ASSET_ID].astype(str)).to_numpy(),
                              kind="stable")].reset_index(drop=True)
    listed = [b.suspects for b in balances if len(b.suspects)] or [balances[0].suspects]
    suspects = pd.concat(listed, ignore_index=True)  # empty frames would turn columns to object
    rank = order.reindex(suspects[col.ASSET_ID].astype(str)).to_numpy()
    suspects = suspects.iloc[np.lexsort((suspects["rank"].to_numpy(), rank))].reset_index(drop=True)
    maps = [b.topology for b in balances if len(b.topology)] or [balances[0].topology]
    topology = pd.concat(maps, ignore_index=True)
    topology = topology.iloc[np.argsort(position.reindex(topology[col.METER_ID].astype(str))
                                        .to_numpy(), kind="stable")].reset_index(drop=True)
    return Combined(table, bal, suspects, issues, no_window, topology)


def _release_arrow_memory():
    """Return memory that pyarrow's allocator keeps after reading a big table."""
    try:
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except (ImportError, AttributeError):  # pragma: no cover - older pyarrow
        pass


def merge(analyses: Sequence[PartitionAnalysis], meter_order, asset_order=()) -> PartitionAnalysis:
    """The partitions' analyses as one, in the order of the inputs (as if analysed at once).

    Consumes ``analyses``: each partition's arrays are released as soon as
    they are placed, so the merge needs about one copy of the result, not two.

    Parameters
    ----------
    analyses : sequence of PartitionAnalysis
    meter_order : sequence of str
        Meter ids in the order of the meters table.
    asset_order : sequence of str
        Asset ids in the order of the upstream table.

    Returns
    -------
    PartitionAnalysis
        With the analysed meters' columns (and the balanced assets) in input
        order; issues, counts and timings added up.
    """
    position = pd.Series(np.arange(len(meter_order)), index=pd.Index(meter_order).astype(str))
    ids = np.concatenate([a.kw.columns.astype(str).to_numpy() for a in analyses])
    order = np.argsort(position.reindex(ids).to_numpy(), kind="stable")
    place = _Placer([a.kw.shape[1] for a in analyses], order)
    together = combine(analyses, meter_order, asset_order)
    inputs = IssueLog()
    counts, timings = {}, {}
    for a in analyses:
        inputs.extend(a.input_issues)
        for table, c in a.row_counts.items():
            total = counts.setdefault(table, {"in": 0, "used": 0})
            for key, value in c.items():
                total[key] = total.get(key, 0) + value
        for key, value in a.timings.items():
            timings[key] = timings.get(key, 0.0) + value

    index, name = analyses[0].kw.index, analyses[0].kw.columns.name
    kw = pd.DataFrame(place(analyses, lambda a: a.kw.to_numpy(), "kw"), index=index,
                      columns=pd.Index(ids[order], name=name))
    dets = [a.detection for a in analyses]
    detection = Detection(
        table=together.table,
        **{name: place(dets, lambda d, n=name: getattr(d, n), name)
           for name in ("floor_kw", "mean_kw", "expected_floor_kw", "expected_mean_kw", "masked")},
        onset_cell=np.concatenate([d.onset_cell for d in dets])[order])
    exps = [a.expected for a in analyses]
    expected = ExpectedConsumption(weekly_profile_min_days=exps[0].weekly_profile_min_days)
    expected.weekly_ = exps[0].weekly_
    expected.profile_kw_ = place(exps, lambda e: e.profile_kw_, "profile_kw_")
    expected.expected_daily_kw_ = place(exps, lambda e: e.expected_daily_kw_, "expected_daily_kw_")
    meters = pd.concat([a.meters for a in analyses]).iloc[order].reset_index(drop=True)

    balance = None
    balances = [a.balance for a in analyses if a.balance is not None]
    if balances:
        asset_pos = pd.Series(np.arange(len(asset_order)), index=pd.Index(asset_order).astype(str))
        asset_ids = [x for b in balances for x in b.asset_ids]
        a_order = np.argsort(asset_pos.reindex(asset_ids).to_numpy(), kind="stable")
        balance = Balance(
            table=together.balance_table, suspects=together.suspects,
            **{name: np.concatenate([getattr(b, name) for b in balances], axis=1)[:, a_order]
               for name in ("delivered_kw", "metered_kw", "loss_kw", "unexplained_kw")},
            asset_ids=[asset_ids[i] for i in a_order], dates=balances[0].dates,
            topology=together.topology)
    return PartitionAnalysis(
        table=detection.table, detection=detection, expected=expected, kw=kw, meters=meters,
        balance=balance, issues=together.issues, no_window=together.no_window,
        timings=timings, input_issues=inputs, row_counts=counts,
        readings_in_window=sum(a.readings_in_window for a in analyses),
        bands=_sum([a.bands for a in analyses if a.bands is not None]))


class _Placer:
    """Put each partition's columns at their place in the merged array, releasing them."""

    def __init__(self, widths, order):
        self.bounds = np.concatenate([[0], np.cumsum(widths)])
        self.target = np.empty(len(order), dtype=np.int64)
        self.target[order] = np.arange(len(order))  # merged position of each concatenated column

    def __call__(self, owners, get, name):
        out = None
        for i, owner in enumerate(owners):
            part = get(owner)
            if out is None:
                out = np.empty((part.shape[0], len(self.target)), dtype=part.dtype)
            out[:, self.target[self.bounds[i]:self.bounds[i + 1]]] = part
            setattr(owner, name, None)  # released: the merged array holds it now
        return out
