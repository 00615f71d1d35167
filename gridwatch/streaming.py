"""A run in partitions of whole transformers: read, clean and analyse one partition at a time.

:func:`analyse_partitioned` is what ``gridwatch run`` does with
``engine.kind = "streaming"`` or ``"dask"``: it reads the small tables
(meters, weather) whole, plans partitions for the memory budget
(:mod:`gridwatch.partitions`), reads each partition's readings and upstream
on its own (:class:`gridwatch.engine.PlannedFiles`), counts the rows of no
partition once, and returns the analysis as if all meters had been analysed
at once (:func:`gridwatch.engine.merge`).
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

log = logging.getLogger(__name__)


@contextlib.contextmanager
def executor(config: Config):
    """The ``map_partitions`` of the configured engine (a cluster is closed on exit)."""
    if config.engine.kind == "dask":
        from gridwatch.cluster import dask_executor

        with dask_executor(config.engine.scheduler or None,
                           n_workers=config.engine.workers) as map_partitions:
            yield map_partitions
    else:
        yield serial_map


def analyse_partitioned(input_dir, as_of, config: Config, *, keep=()):
    """Analyse a dataset directory partition by partition.

    Each partition keeps the demand of its flagged meters, its suspects and
    the meters in ``keep`` only (see :func:`gridwatch.engine.analyse`).

    Returns
    -------
    ds : Dataset
        The small tables and the run's input issues and row counts (no readings).
    as_of : datetime.date
    analysis : gridwatch.engine.PartitionAnalysis
        All partitions merged, in input order.
    n_partitions : int
    """
    from gridwatch.pipeline import parse_as_of

    if config.source.kind != "files":
        raise ConfigError(f"engine.kind = '{config.engine.kind}' reads files",
                          hint="use engine.kind = 'memory' with an InfluxDB source")
    if input_dir is None:
        raise ConfigError("no input given", hint="pass --input DATASET_DIR")
    tz = config.data.timezone
    paths = {name: files.find_table(input_dir, name) for name in col.TABLES}
    for name in ("meters", "readings"):
        if paths[name] is None:
            raise InputError(f"no {name} table", file=input_dir,
                             hint=f"add {name}.csv or {name}.parquet")
    issues = IssueLog()
    meters, log_meters, meters_in = files._read_meters(paths["meters"])
    issues.extend(log_meters)
    counts = {"meters": {"in": meters_in, "used": len(meters)},
              "weather": {"in": 0, "used": 0}}
    weather = None
    if paths["weather"] is not None:
        raw, log_weather, counts["weather"]["in"] = files._read_weather(paths["weather"], timezone=tz)
        issues.extend(log_weather)
        if raw is not None:
            weather, log_clean = clean_weather(raw)
            issues.extend(log_clean)
            counts["weather"]["used"] = len(weather)
    asset_ids = _upstream_asset_ids(paths["upstream"])
    plan = plan_partitions(
        meters, budget_bytes=config.engine.memory_budget_mb * 2**20,
        bytes_per_meter=bytes_per_meter(config.analysis.history_days,
                                        config.analysis.grid_minutes),
        upstream_asset_ids=asset_ids)
    for number, row in plan.oversized.iterrows():  # the run's business, not the data's quality
        log.warning("partition %d: one asset group of %d meters is larger than "
                    "engine.memory_budget_mb; it is analysed whole", number, int(row["n_meters"]))
    parts = partitions_of(plan)
    log.info("%d meters in %d partitions (budget %d MB)", len(meters), len(parts),
             config.engine.memory_budget_mb)
    loader = PlannedFiles(input_dir, plan, config.data)
    unplanned = loader.unplanned(meters)
    issues.extend(unplanned.issues)

    window = Window(config.analysis.history_days, config.analysis.grid_minutes, tz)
    index = grid = None  # the default as-of: found while the partitions are read
    if as_of is not None:
        index, grid = window(parse_as_of(as_of))
    with executor(config) as map_partitions:
        try:
            analyses = analyse(loader, index=index, grid=grid, config=config, partitions=parts,
                               map_partitions=map_partitions, keep=keep, window=window)
        except InputError as exc:
            if exc.file != "readings":
                raise
            raise InputError("no usable readings", file=paths["readings"],
                             hint="check the readings table and data_quality.csv") from None
    as_of_date = day_grid(analyses[0].kw.index, tz).dates[-1].date()
    asset_order = sorted({a for x in analyses if x.balance is not None for a in x.balance.asset_ids})
    part = merge(analyses, meters[col.METER_ID].astype(str), asset_order)
    for table in ("readings", "upstream"):  # the full reader's refusals, on the summed parts
        if paths[table] is not None:
            total = Counter(part.row_counts.get(table, {})) + Counter(unplanned.row_counts[table])
            check_whole_table(paths[table], table=table, rows_in=total["in"],
                              bad_timestamps=total["bad_timestamps"], numbers=total["numbers"])
    if part.readings_in_window == 0:
        raise InputError(f"no readings in the analysis window ending {as_of_date}",
                         file=paths["readings"], hint="check --as-of against the dates in the data")
    issues.extend(part.input_issues)
    for table in ("readings", "upstream"):
        counts[table] = {
            "in": part.row_counts.get(table, {}).get("in", 0) + unplanned.row_counts[table]["in"],
            "used": part.row_counts.get(table, {}).get("used", 0)}
    ds = Dataset(meters=meters, readings=None, interval_minutes=None, upstream=None,
                 upstream_interval_minutes=None, weather=weather, issues=issues,
                 row_counts=counts)
    return ds, as_of_date, part, len(parts)


def _upstream_asset_ids(path) -> list:
    """The asset ids of the upstream table, normalised as the reader does (its id column only)."""
    if path is None:
        return []
    ids = pa.dictionary(pa.int32(), pa.string())
    table, _ = files._read(path, [col.ASSET_ID], {col.ASSET_ID: ids}, dictionary=(col.ASSET_ID,))
    return list(files._ids(table.column(col.ASSET_ID)).categories)
