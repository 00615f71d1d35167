"""One run path: the passes over a source's partitions, their cache, and the merge.

:func:`analyse_source` is what ``gridwatch run`` does, whatever the engine:
it opens the configured :class:`gridwatch.sources.Source` (files or
InfluxDB: :func:`open_source`), plans partitions of whole transformers
(:func:`plan_for`: one partition with ``engine.kind = "memory"`` or when the
whole dataset fits ``engine.memory_budget_mb``), analyses them with
:func:`analyse` and merges the results as if all meters had been analysed
at once. "All at once" is a plan of one partition, not a second code path.

A partition's analysis (:mod:`gridwatch.partition`) needs nothing from the
others except three small figures computed across all of them first:

1. the peer groups' daily figures (:class:`gridwatch.peers.PeerCounts`, additive);
2. the detector's calibration (:class:`gridwatch.detect.Calibration`, fitted on
   every meter's evidence: a few numbers per meter);
3. the energy balance's calibration (:class:`gridwatch.balance.BalanceCalibration`,
   fitted on every asset's evidence).

So a run of several partitions makes three passes for these and a final one
for the results (each partition's reading, gridding and detection is done
once and kept on disk between the passes: :class:`PassCache`); each meter's
and each asset's row is then what the all-at-once run gives, every output
file identical (``tests/test_engine.py``; internal figures may differ in the
last bits where numpy's summation order depends on how many columns are
summed together). With a single partition the calibrations come from the
partition itself, in one pass.

The passes run on an executor, ``map_partitions(func, partitions)``: in this
process (:func:`serial_map`) or as the tasks of a Dask cluster
(:func:`gridwatch.cluster.dask_executor`), chosen by :func:`executor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.balance import Balance, BalanceCalibration, decide_balance
from gridwatch.baseline import ExpectedConsumption
from gridwatch.cluster import dask_executor
from gridwatch.config import Config
from gridwatch.days import (
    DayGrid,
    Window,
    add_day_counts,
    day_grid,
    default_as_of,
    meters_by_last_day,
    parse_as_of,
    yesterday,
)
from gridwatch.detect import Calibration, Detection
from gridwatch.errors import ConfigError, InputError, NoUsableReadings
from gridwatch.influx.source import InfluxSource
from gridwatch.issues import IssueLog
from gridwatch.partition import (
    Gridded,
    Partition,
    PartitionAnalysis,
    Shared,
    decide,
    grid_partition,
    keep_only,
    measure,
    measure_partition_balance,
    partitions_of,
    peer_counts,
)
from gridwatch.partitions import PartitionPlan, bytes_per_meter, plan_partitions
from gridwatch.peers import PeerCounts, demand_bands
from gridwatch.sources import Dataset
from gridwatch.sources.partitioned import FileSource
from gridwatch.topology import feeders_of

log = logging.getLogger(__name__)


# --- the source, the plan, the executor ------------------------------------------------------
def open_source(input_dir, as_of, config: Config):
    """The configured source: a dataset directory, or InfluxDB for the as-of day's window.

    Parameters
    ----------
    input_dir : str or os.PathLike or None
        The dataset directory; None with ``source.kind = "influxdb"``.
    as_of : str or datetime.date or None
        ``--as-of``. None: a directory's as-of is found in its readings, a
        live source's is yesterday in ``data.timezone``.
    config : Config

    Returns
    -------
    gridwatch.sources.Source

    Raises
    ------
    ConfigError
        ``--input`` with an InfluxDB source, or no input at all.
    InputError
        ``as_of`` is not a date; the source's tables cannot be used.
    """
    influx = config.source.kind == "influxdb"
    if influx and input_dir is not None:
        raise ConfigError("--input names a directory but source.kind is 'influxdb'",
                          hint="drop --input, or set source.kind = 'files'")
    if not influx and input_dir is None:
        raise ConfigError("no input given", hint="pass --input DATASET_DIR, or a --config with "
                          "source.kind = 'influxdb'")
    as_of = None if as_of is None else parse_as_of(as_of)
    if influx:
        return InfluxSource(config, as_of=yesterday(config.data.timezone) if as_of is None
                            else as_of)
    return FileSource(input_dir, config, as_of=as_of)


def plan_for(source, config: Config) -> PartitionPlan:
    """The partitions of a run: whole transformers (and feeders with upstream data) in the budget.

    ``engine.kind = "memory"``: one partition of every meter, whatever the
    budget. Otherwise partitions sized by ``engine.memory_budget_mb``; a
    dataset that fits is one partition, which is the all-at-once run.
    """
    meters = source.meters
    per_meter = bytes_per_meter(config.analysis.history_days, config.analysis.grid_minutes)
    budget = config.engine.memory_budget_mb * 2**20
    if config.engine.kind == "memory":
        budget = per_meter * max(1, len(meters))
    return plan_partitions(
        meters, budget_bytes=budget, bytes_per_meter=per_meter,
        # whole feeders: the topology check compares a meter with its feeder's transformers
        upstream_asset_ids=with_feeders(meters, source.upstream_asset_ids()))


def with_feeders(meters: pd.DataFrame, upstream_asset_ids) -> list:
    """The assets with upstream data and the feeders of those among them that are transformers."""
    ids = list(upstream_asset_ids)
    return sorted(set(ids) | set(feeders_of(meters, ids)))


def serial_map(func, items) -> list:
    """Run ``func`` on each item in turn, in this process (the default executor)."""
    return [func(item) for item in items]


@contextlib.contextmanager
def executor(config: Config):
    """The ``map_partitions`` of the configured engine (a cluster is closed on exit)."""
    if config.engine.kind == "dask":
        with dask_executor(config.engine.scheduler or None, n_workers=config.engine.workers,
                           reuse_freed_memory=config.engine.reuse_freed_memory) as map_partitions:
            yield map_partitions
    else:
        yield serial_map


# --- a run on a source -----------------------------------------------------------------------
@dataclass
class SourceAnalysis:
    """What :func:`analyse_source` gives the pipeline.

    Attributes
    ----------
    dataset : Dataset
        The small tables, the run's input issues and row counts (no readings).
    as_of : datetime.date
    analysis : PartitionAnalysis
        Every partition merged, in input order.
    n_partitions : int
    window : tuple of pandas.Timestamp
        UTC start (inclusive) and end (exclusive) of the analysis window.
    grid : DayGrid
    """

    dataset: Dataset
    as_of: object
    analysis: PartitionAnalysis
    n_partitions: int
    window: tuple
    grid: DayGrid


def analyse_source(input_dir, as_of, config: Config, *, keep=(),
                   keep_flagged: bool = True) -> SourceAnalysis:
    """Analyse a dataset directory, or an InfluxDB source, partition by partition.

    With several partitions each keeps the demand of its flagged meters,
    its suspects and the meters in ``keep`` only; with ``keep_flagged=False``
    (no plots) only those in ``keep`` (see :func:`analyse`). A plan of one
    partition keeps every meter.

    Raises
    ------
    InputError
        The source's refusals; no usable reading (named by the source); no
        reading in the analysis window.
    """
    window = Window.of(config)
    # A Dask cluster starts in the background while the small tables are read and planned.
    with executor(config) as map_partitions:
        source = open_source(input_dir, as_of, config)
        meters = source.meters
        plan = plan_for(source, config)
        for number, row in plan.oversized.iterrows():  # the run's business, not the data's
            log.warning("partition %d: one asset group of %d meters is larger than "
                        "engine.memory_budget_mb; it is analysed whole", number,
                        int(row["n_meters"]))
        parts = partitions_of(plan)
        log.info("%d meters in %d partitions (budget %d MB)", len(meters), len(parts),
                 config.engine.memory_budget_mb)
        index = grid = None  # the default as-of of files: found while the partitions are read
        if source.as_of is not None:
            index, grid = window(source.as_of)
        with contextlib.closing(source.open(plan)) as loader:  # a CSV's spill is removed
            unplanned = loader.unplanned(meters)
            issues = IssueLog().extend(source.issues).extend(unplanned.issues)
            try:
                analyses = analyse(loader, index=index, grid=grid, config=config,
                                   partitions=parts, map_partitions=map_partitions, keep=keep,
                                   keep_flagged=keep_flagged, window=window,
                                   release_readings=True)
            except NoUsableReadings as exc:
                raise source.no_readings(issues.extend(exc.issues or IssueLog())) from None
    grid = day_grid(analyses[0].kw.index, config.data.timezone)
    as_of_date = grid.dates[-1].date()
    if len(analyses) == 1:
        part = analyses[0]
    else:
        asset_order = sorted({a for x in analyses if x.balance is not None
                              for a in x.balance.asset_ids})
        part = merge(analyses, meters[col.METER_ID].astype(str), asset_order)
    totals = {table: Counter(part.row_counts.get(table, {})) + Counter(unplanned.row_counts[table])
              for table in ("readings", "upstream")}
    source.check(totals)
    issues.extend(part.input_issues)
    if part.row_counts.get("readings", {}).get("used", 0) == 0:
        raise source.no_readings(issues)
    if part.readings_in_window == 0:
        raise InputError(f"no readings in the analysis window ending {as_of_date}",
                         file=source.name, hint="check --as-of against the dates in the data")
    counts = {**source.counts,
              **{table: {"in": totals[table]["in"], "used": part.row_counts.get(table, {}).get(
                  "used", 0)} for table in ("readings", "upstream")}}
    ds = Dataset(meters=meters, readings=None, interval_minutes=None, upstream=None,
                 upstream_interval_minutes=None, weather=source.weather, issues=issues,
                 row_counts=counts)
    return SourceAnalysis(dataset=ds, as_of=as_of_date, analysis=part, n_partitions=len(parts),
                          window=window.bounds(as_of_date), grid=grid)


# --- the passes ------------------------------------------------------------------------------
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
        The analysis grid (UTC cell starts). None, with a ``window``: the
        as-of day is the default as-of of the partitions' readings, found
        while they are read (see Notes).
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
    NoUsableReadings
        With ``index=None``, when no partition has a usable reading (with
        the one partition's issues when there is one).

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
    if len(parts) == 1:
        t0 = time.perf_counter()
        sub = load(parts[0])  # read once: the day, then the analysis
        read_s = time.perf_counter() - t0
        if index is None:
            if sub.readings is None or sub.readings.empty:
                raise NoUsableReadings(issues=sub.issues,
                                       hint="check the readings table and data_quality.csv")
            index, grid = window(default_as_of(meters_by_last_day(
                sub.readings, sub.interval_minutes, config.data.timezone)))
        log.info("read %d readings of %d meters (as of %s) in %.1f s",
                 0 if sub.readings is None else len(sub.readings), len(sub.meters),
                 grid.dates[-1].date(), read_s)
        (whole,) = [_final_pass(parts[0], load=lambda _part: sub, index=index, grid=grid,
                                config=config, shared=Shared(), cache_dir=None,
                                release=release_readings)]
        whole.timings = {"read_and_clean_s": read_s, **whole.timings}
        return [whole]
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
    passes_s = {}  # wall time of each pass: the stages of the final pass alone miss the rest
    t0 = time.perf_counter()
    log.info("pass 1 of 4: reading and gridding %d partitions", n)
    if index is None:
        index, grid, shared.peers = _first_pass_by_own_day(
            parts, load=load, config=config, map_partitions=map_partitions, cache_dir=cache_dir,
            window=window)
    common = {"load": load, "index": index, "grid": grid, "config": config, "cache_dir": cache_dir}
    if shared.peers is None:
        shared.peers = _sum(map_partitions(functools.partial(_peer_pass, **common), parts))
    passes_s["pass_1_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    log.info("pass 2 of 4: the detector's evidence")
    evidence = map_partitions(functools.partial(_evidence_pass, **common, shared=shared), parts)
    shared.calibration = Calibration.fit(pd.concat(evidence), config.detection)
    passes_s["pass_2_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    log.info("pass 3 of 4: detection and the energy balance's evidence")
    measured = map_partitions(functools.partial(_balance_evidence_pass, **common, shared=shared),
                              parts)
    evidence = [e for e, _ in measured if e is not None]
    passes_s["balance_measure_s"] = sum(seconds for _, seconds in measured)
    if evidence:
        b = config.balance
        shared.balance_calibration = BalanceCalibration.fit(
            pd.concat(evidence), fdr_alpha=b.fdr_alpha, max_no_load_share=b.max_no_load_share)
    passes_s["pass_3_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    log.info("pass 4 of 4: energy balance and results")
    results = map_partitions(functools.partial(_final_pass, **common, shared=shared, keep=keep,
                                               keep_flagged=keep_flagged), parts)
    passes_s["pass_4_s"] = time.perf_counter() - t0
    if results:  # the run's figures, once (the merge adds the partitions' timings up)
        results[0].timings = {**results[0].timings, **passes_s}
    return results


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



# --- one partition's stages, made once and cached between the passes --------------------------
def release_arrow_memory() -> None:
    """Return memory that pyarrow's allocator keeps after reading a big table."""
    try:
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except (ImportError, AttributeError):  # pragma: no cover - older pyarrow
        pass


def _inputs(part, *, load, index, grid, config, cache: PassCache,
            release=False) -> tuple[Dataset, Gridded]:
    """The partition's tables and gridded demand: read once, then from the run's cache."""
    cached = cache.get("gridded")
    if cached is not None:
        return cached
    sub = load(part)
    gridded = grid_partition(sub, index, grid, config, release=release or cache.enabled,
                             on_release=release_arrow_memory)
    cache.put_gridded(sub, gridded)
    return sub, gridded


def _measured(g: Gridded, *, grid, config, shared, cache: PassCache):
    measured = cache.get("measured")
    if measured is None:
        if g.spread is None:  # read from the cache: the measurement's own inputs are apart
            spread, daily = cache.get("to_measure")
            g = dataclasses.replace(g, spread=spread, daily=daily)
        measured = measure(g, grid, config, shared)
        cache.put("measured", measured)
        cache.drop("to_measure")
    return measured


def _detected(g: Gridded, *, index, grid, config, shared, cache: PassCache):
    """The partition's detection, its issues and its expected consumption (decided once)."""
    detected = cache.get("detected")
    if detected is None:
        measured = _measured(g, grid=grid, config=config, shared=shared, cache=cache)
        detected = decide(measured, g, index, grid, shared)
        cache.put("detected", detected)
    return detected


def _balance_measured(sub: Dataset, g: Gridded, *, index, grid, config, shared,
                      cache: PassCache):
    """The energy balance's measurement of the partition's assets (made once, then cached)."""
    measured = cache.get("balance_measured")
    if measured is None:
        detection, _, expected = _detected(g, index=index, grid=grid, config=config,
                                           shared=shared, cache=cache)
        measured = measure_partition_balance(sub, g, detection, expected, index, grid, config)
        cache.put("balance_measured", measured)
    return measured


def _peer_pass(part, *, load, index, grid, config, cache_dir) -> PeerCounts:
    _, g = _inputs(part, load=load, index=index, grid=grid, config=config,
                   cache=PassCache(cache_dir, part, index))
    return peer_counts(g, grid, config)


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
    cache = PassCache(cache_dir, part, index)
    g = grid_partition(sub, index, grid, config, release=cache.enabled,
                       on_release=release_arrow_memory)
    cache.put_gridded(sub, g)
    return ends, peer_counts(g, grid, config)


def _evidence_pass(part, *, load, index, grid, config, shared, cache_dir) -> pd.DataFrame:
    cache = PassCache(cache_dir, part, index)
    _, g = _inputs(part, load=load, index=index, grid=grid, config=config, cache=cache)
    return _measured(g, grid=grid, config=config, shared=shared, cache=cache).evidence


def _balance_evidence_pass(part, *, load, index, grid, config, shared,
                           cache_dir) -> tuple[pd.DataFrame | None, float]:
    """The partition's balance evidence (None without upstream) and the seconds it took."""
    cache = PassCache(cache_dir, part, index)
    sub, g = _inputs(part, load=load, index=index, grid=grid, config=config, cache=cache)
    if not g.has_upstream:
        return None, 0.0
    t0 = time.perf_counter()
    evidence = _balance_measured(sub, g, index=index, grid=grid, config=config, shared=shared,
                                 cache=cache).evidence
    return evidence, time.perf_counter() - t0


def _final_pass(part, *, load, index, grid, config, shared, cache_dir, keep=None,
                keep_flagged=True, release=False) -> PartitionAnalysis:
    timings = {}
    t0 = time.perf_counter()
    cache = PassCache(cache_dir, part, index)
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
    if g.has_upstream:
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
        bands=demand_bands(detection.mean_kw, g.meters), coarse=sub.coarse)
    return analysis if keep is None else keep_only(analysis, keep, flagged=keep_flagged)


class PassCache:
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
        """A partition's cache in ``cache_dir`` (None: the stages kept in memory only)."""
        self.root = None
        self._memory = {}
        if cache_dir is not None and part is not None and Path(cache_dir).is_dir():
            self.root = Path(cache_dir)
            window = f"{index[0].isoformat()}/{len(index)}"  # a partition gridded on another day's
            self.key = hashlib.sha1("\0".join([window, *part.meter_ids]).encode()).hexdigest()

    @property
    def enabled(self) -> bool:
        """Whether the stages go to disk (several partitions) or stay in memory (one)."""
        return self.root is not None

    def get(self, stage):
        """The stage kept for this partition, or None."""
        if self.root is None:
            return self._memory.get(stage)
        path = self.root / f"{self.key}.{stage}.pkl"
        if not path.exists():
            return None
        with path.open("rb") as handle:
            return pickle.load(handle)

    def put(self, stage, value) -> None:
        """Keep a stage for the later passes (in memory: only :attr:`IN_MEMORY`)."""
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
        """Forget a stage no later pass reads."""
        self._memory.pop(stage, None)
        if self.root is not None:
            (self.root / f"{self.key}.{stage}.pkl").unlink(missing_ok=True)

    def put_gridded(self, sub: Dataset, g: Gridded) -> None:
        """Keep a gridded partition; what only the measurement reads goes to ``"to_measure"``.

        The later passes read the partition's demand again but not its
        spread and daily figures: a third of the gridded bytes, and of the
        run's peak temporary disk.
        """
        # "to_measure" first: a cached "gridded" then always has it until measured
        # (a task that died between the two is retried from the start).
        self.put("to_measure", (g.spread, g.daily))
        self.put("gridded", (sub, dataclasses.replace(g, spread=None, daily=None)))



# --- the merge -------------------------------------------------------------------------------
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
        bands=_sum([a.bands for a in analyses if a.bands is not None]),
        coarse=_concat_coarse([a.coarse for a in analyses]))


def _concat_coarse(frames):
    """The partitions' daily and monthly reads as one frame (None: there are none)."""
    frames = [f for f in frames if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


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
