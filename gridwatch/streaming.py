"""A run in partitions of whole transformers: read, clean and analyse one partition at a time.

:func:`analyse_partitioned` is what ``gridwatch run`` does with
``engine.kind = "streaming"`` or ``"dask"``: it reads the small tables
(meters, weather) whole, plans partitions for the memory budget
(:mod:`gridwatch.partitions`), reads each partition's readings and upstream
on its own (from files: :class:`gridwatch.engine.PlannedFiles`; from
InfluxDB, by the partition's ids: :class:`gridwatch.influx.source.InfluxPartitions`),
counts the rows of no partition once, and returns the analysis as if all
meters had been analysed at once (:func:`gridwatch.engine.merge`).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

import pyarrow as pa

from gridwatch import columns as col
from gridwatch.cleaning import clean_weather
from gridwatch.config import Config
from gridwatch.days import day_grid
from gridwatch.engine import PlannedFiles, Window, analyse, merge, partitions_of, serial_map
from gridwatch.errors import ConfigError, InputError
from gridwatch.issues import IssueLog
from gridwatch.partitions import bytes_per_meter, plan_partitions
from gridwatch.sources import Dataset, files
from gridwatch.sources.partitioned import check_whole_table
from gridwatch.topology import feeders_of

log = logging.getLogger(__name__)


@contextlib.contextmanager
def executor(config: Config):
    """The ``map_partitions`` of the configured engine (a cluster is closed on exit)."""
    if config.engine.kind == "dask":
        from gridwatch.cluster import dask_executor

        with dask_executor(config.engine.scheduler or None, n_workers=config.engine.workers,
                           reuse_freed_memory=config.engine.reuse_freed_memory) as map_partitions:
            yield map_partitions
    else:
        yield serial_map


def analyse_partitioned(input_dir, as_of, config: Config, *, keep=(), keep_flagged=True):
    """Analyse a dataset directory, or an InfluxDB source, partition by partition.

    Each partition keeps the demand of its flagged meters, its suspects and
    the meters in ``keep`` only; with ``keep_flagged=False`` (no plots) only
    those in ``keep`` (see :func:`gridwatch.engine.analyse`).

    Returns
    -------
    ds : Dataset
        The small tables and the run's input issues and row counts (no readings).
    as_of : datetime.date
    analysis : gridwatch.engine.PartitionAnalysis
        All partitions merged, in input order.
    n_partitions : int
    """
    from gridwatch.pipeline import parse_as_of, yesterday

    tz = config.data.timezone
    window = Window(config.analysis.history_days, config.analysis.grid_minutes, tz)
    influx = config.source.kind == "influxdb"
    if influx and input_dir is not None:
        raise ConfigError("--input names a directory but source.kind is 'influxdb'",
                          hint="drop --input, or set source.kind = 'files'")
    if not influx and input_dir is None:
        raise ConfigError("no input given", hint="pass --input DATASET_DIR")
    # A Dask cluster starts in the background while the small tables are read and planned.
    with executor(config) as map_partitions:
        if influx:
            as_of = yesterday(tz) if as_of is None else parse_as_of(as_of)  # a live source
            source = _InfluxSource(config, window(as_of)[0])
        else:
            source = _FileSource(input_dir, config)
        meters = source.meters
        plan = plan_partitions(
            meters, budget_bytes=config.engine.memory_budget_mb * 2**20,
            bytes_per_meter=bytes_per_meter(config.analysis.history_days,
                                            config.analysis.grid_minutes),
            # whole feeders: the topology check compares a meter with its feeder's transformers
            upstream_asset_ids=_with_feeders(meters, source.upstream_asset_ids()))
        for number, row in plan.oversized.iterrows():  # the run's business, not the data's
            log.warning("partition %d: one asset group of %d meters is larger than "
                        "engine.memory_budget_mb; it is analysed whole", number,
                        int(row["n_meters"]))
        parts = partitions_of(plan)
        log.info("%d meters in %d partitions (budget %d MB)", len(meters), len(parts),
                 config.engine.memory_budget_mb)
        index = grid = None  # the default as-of of files: found while the partitions are read
        if as_of is not None:
            index, grid = window(parse_as_of(as_of))
        with contextlib.closing(source.loader(plan)) as loader:  # a CSV's spill is removed
            unplanned = loader.unplanned(meters)
            issues = IssueLog().extend(source.issues).extend(unplanned.issues)
            try:
                analyses = analyse(loader, index=index, grid=grid, config=config,
                                   partitions=parts, map_partitions=map_partitions, keep=keep,
                                   keep_flagged=keep_flagged, window=window)
            except InputError as exc:
                if exc.file != "readings":
                    raise
                raise source.no_readings(issues) from None
    as_of_date = day_grid(analyses[0].kw.index, tz).dates[-1].date()
    asset_order = sorted({a for x in analyses if x.balance is not None for a in x.balance.asset_ids})
    part = merge(analyses, meters[col.METER_ID].astype(str), asset_order)
    totals = {table: Counter(part.row_counts.get(table, {})) + Counter(unplanned.row_counts[table])
              for table in ("readings", "upstream")}
    source.check(totals)
    if part.readings_in_window == 0:
        raise InputError(f"no readings in the analysis window ending {as_of_date}",
                         file=source.readings_name, hint="check --as-of against the dates in the data")
    issues.extend(part.input_issues)
    counts = {**source.counts,
              **{table: {"in": totals[table]["in"], "used": part.row_counts.get(table, {}).get(
                  "used", 0)} for table in ("readings", "upstream")}}
    ds = Dataset(meters=meters, readings=None, interval_minutes=None, upstream=None,
                 upstream_interval_minutes=None, weather=source.weather, issues=issues,
                 row_counts=counts)
    return ds, as_of_date, part, len(parts)


class _FileSource:
    """A dataset directory: its small tables read whole, its long ones by partition."""

    def __init__(self, input_dir, config: Config):
        tz = config.data.timezone
        self.input_dir, self.config = input_dir, config
        self.paths = paths = {name: files.find_table(input_dir, name) for name in col.TABLES}
        for name in ("meters", "readings"):
            if paths[name] is None:
                raise InputError(f"no {name} table", file=input_dir,
                                 hint=f"add {name}.csv or {name}.parquet")
        self.readings_name = paths["readings"]
        self.issues = IssueLog()
        self.meters, log_meters, meters_in = files._read_meters(paths["meters"])
        self.issues.extend(log_meters)
        self.counts = {"meters": {"in": meters_in, "used": len(self.meters)},
                       "weather": {"in": 0, "used": 0}}
        self.weather = None
        if paths["weather"] is not None:
            raw, log_weather, self.counts["weather"]["in"] = files._read_weather(
                paths["weather"], timezone=tz)
            self.issues.extend(log_weather)
            if raw is not None:
                self.weather, log_clean = clean_weather(raw)
                self.issues.extend(log_clean)
                self.counts["weather"]["used"] = len(self.weather)

    def upstream_asset_ids(self) -> list:
        return _upstream_asset_ids(self.paths["upstream"])

    def loader(self, plan) -> PlannedFiles:
        return PlannedFiles(self.input_dir, plan, self.config.data, meters=self.meters,
                            weather=self.weather)

    def check(self, totals: dict) -> None:
        """The full reader's refusals of a whole file, on the summed parts."""
        for table in ("readings", "upstream"):
            if self.paths[table] is not None:
                total = totals[table]
                check_whole_table(self.paths[table], table=table, rows_in=total["in"],
                                  bad_timestamps=total["bad_timestamps"], numbers=total["numbers"])

    def no_readings(self, issues=None) -> InputError:
        from gridwatch.errors import no_usable_readings

        return no_usable_readings(self.paths["readings"], issues or self.issues)


class _InfluxSource:
    """An InfluxDB source: meters and weather read once, each partition's series by its ids."""

    def __init__(self, config: Config, index):
        from gridwatch.influx.source import InfluxTables

        self.config = config
        self.start, self.end = index[0], index[-1] + (index[1] - index[0])
        self.tables = tables = InfluxTables(config, start=self.start, end=self.end)
        self.readings_name = f"measurement '{config.influxdb.readings.measurement}'"
        self.meters = tables.meters
        if tables.upstream_ids is not None:  # the notes in the order of the full read
            tables.note_upstream(tables.issues, found=bool(tables.upstream_asset_ids()))
        raw = tables.read_weather()
        self.issues = IssueLog().extend(tables.issues)
        self.counts = {"meters": {"in": tables.rows_in["meters"], "used": len(self.meters)},
                       "weather": {"in": tables.rows_in["weather"], "used": 0}}
        self.weather = None
        if raw is not None:
            self.weather, log_clean = clean_weather(raw)
            self.issues.extend(log_clean)
            self.counts["weather"]["used"] = len(self.weather)

    def upstream_asset_ids(self) -> list:
        return self.tables.upstream_asset_ids()

    def loader(self, plan):
        from gridwatch.influx.source import InfluxPartitions

        return InfluxPartitions(self.config, start=self.start, end=self.end, tables=self.tables,
                                weather=self.weather)

    def check(self, totals: dict) -> None:
        """Refused as the full read is: no reading of a known meter in the window."""
        if totals["readings"]["in"] == 0:
            raise self.no_readings()

    def no_readings(self, issues=None) -> InputError:
        return self.tables.no_readings()


def _upstream_asset_ids(path) -> list:
    """The asset ids of the upstream table, normalised as the reader does (its id column only)."""
    if path is None:
        return []
    ids = pa.dictionary(pa.int32(), pa.string())
    table, _ = files._read(path, [col.ASSET_ID], {col.ASSET_ID: ids}, dictionary=(col.ASSET_ID,))
    return list(files._ids(table.column(col.ASSET_ID)).categories)


def _with_feeders(meters, upstream_asset_ids):
    """The assets with upstream data and the feeders of those among them that are transformers."""
    ids = list(upstream_asset_ids)
    return sorted(set(ids) | set(feeders_of(meters, ids)))
