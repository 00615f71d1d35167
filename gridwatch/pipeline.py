"""The nightly run, stage by stage: read, clean, grid, detect, write.

This is the only module that knows the order of the stages. It holds no
maths: each stage is a function of its own module.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import __version__
from gridwatch import columns as col
from gridwatch.atomic import write_json
from gridwatch.balance import Balance
from gridwatch.baseline import ExpectedConsumption
from gridwatch.config import Config
from gridwatch.days import DayGrid, day_grid, last_full_day, window_bounds
from gridwatch.detect import Detection
from gridwatch.engine import analyse
from gridwatch.errors import ConfigError, InputError
from gridwatch.issues import IssueLog
from gridwatch.outputs import (
    empty_transformers,
    format_flags,
    format_topology,
    format_transformers,
    write_outputs,
)
from gridwatch.peers import DemandBands
from gridwatch.redact import redact_data
from gridwatch.resample import analysis_index
from gridwatch.sources import Dataset, read_dataset

log = logging.getLogger(__name__)

UNFLAGGED_MAX_SCORE = 0.499
"""A site not recommended for investigation scores below 0.5, whatever held it back."""


@dataclass
class RunResult:
    """Everything a run produced, for the report, the plots and the tests.

    Attributes
    ----------
    flags : pandas.DataFrame
        ``flags.csv`` rows.
    transformers : pandas.DataFrame
        ``transformers.csv`` rows.
    topology : pandas.DataFrame
        ``topology.csv`` rows: meters whose listed transformer is doubtful.
    issues : IssueLog
        Every data-quality finding.
    detection : Detection
        The detector's per-meter table and daily arrays.
    expected : ExpectedConsumption
        Each analysed meter's expected demand per cell, fitted on the cells
        before a flagged onset (``expected.predict(grid)`` [kW]).
    kw : pandas.DataFrame
        Demand on the analysis grid [kW] (cells x meters). All analysed
        meters in an all-at-once run; in a partitioned run only the meters
        worth drawing (flagged, energy-balance suspects, ``keep_sites``; only
        ``keep_sites`` when it writes outputs without plots), the same
        columns as ``detection``'s and ``expected``'s arrays and ``meters``.
    grid : DayGrid
    as_of : datetime.date
    info : dict
        The content of ``run.json``.
    balance : Balance or None
        The energy balance of the assets with upstream data (None without).
    meters : pandas.DataFrame
        The analysed meters (same order as the columns of ``kw``).
    cases : pandas.DataFrame or None
        Case status of every flagged site after this run (None without a case store).
    pending_cases : gridwatch.cases.PendingRun or None
        This night's case history, computed but not yet recorded: recorded
        once the outputs are published (issue 14, item 3), by :func:`run`
        itself or, with ``record_history=False``, by the caller.
    peer_bands : gridwatch.peers.DemandBands or None
        Daily mean demand of every analysed meter, counted per customer class
        (the plots' peer bands).
    """

    flags: pd.DataFrame
    transformers: pd.DataFrame
    issues: IssueLog
    detection: Detection
    expected: ExpectedConsumption
    kw: pd.DataFrame
    grid: DayGrid
    as_of: dt.date
    info: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    balance: Balance | None = None
    meters: pd.DataFrame | None = None
    cases: pd.DataFrame | None = None
    peer_bands: DemandBands | None = None
    topology: pd.DataFrame | None = None
    pending_cases: object | None = None


def parse_as_of(as_of) -> dt.date:
    """``--as-of`` as a date; an :class:`InputError` naming the value when it is not one."""
    try:
        return pd.Timestamp(str(as_of)).date()
    except ValueError:
        raise InputError(f"--as-of {as_of!r} is not a date", hint="use YYYY-MM-DD") from None


def yesterday(timezone: str) -> dt.date:
    """The last complete local day in ``timezone``: the default as-of of a live source."""
    return (pd.Timestamp.now(tz=timezone) - pd.Timedelta(days=1)).date()


def read_inputs(input_dir, as_of, config: Config) -> tuple[Dataset, dt.date]:
    """Read the configured source; returns the cleaned dataset and the as-of day.

    Files are read whole and the as-of day defaults to the last full day in
    them; a live source (InfluxDB) is read for the analysis window only, so
    its as-of defaults to yesterday in the configured time zone.
    """
    tz = config.data.timezone
    if config.source.kind == "influxdb":
        if input_dir is not None:
            raise ConfigError("--input names a directory but source.kind is 'influxdb'",
                              hint="drop --input, or set source.kind = 'files'")
        from gridwatch.influx import read_influx_dataset

        as_of_date = yesterday(tz) if as_of is None else parse_as_of(as_of)
        start, end = window_bounds(as_of_date, config.analysis.history_days, tz)
        return read_influx_dataset(config, start=start, end=end), as_of_date
    if input_dir is None:
        raise ConfigError("no input given", hint="pass --input DATASET_DIR, or a --config with "
                          "source.kind = 'influxdb'")
    ds = read_dataset(input_dir, data_config=config.data)
    if ds.readings.empty:  # the cause, not a pointer to a data_quality.csv a failed run lacks
        from gridwatch.errors import no_usable_readings
        from gridwatch.sources.files import find_table

        raise no_usable_readings(find_table(input_dir, "readings") or "readings", ds.issues)
    if as_of is None:
        return ds, last_full_day(ds.readings, ds.interval_minutes, tz)
    return ds, parse_as_of(as_of)


def run(input_dir=None, output_dir=None, *, as_of=None, config: Config | None = None,
        keep_sites=(), history=None, record_history=True) -> RunResult:
    """Analyse a dataset directory and write the outputs.

    Parameters
    ----------
    input_dir : str or os.PathLike, optional
        A dataset laid out as in ``docs/data-contract.md``; ``None`` when the
        config's source is InfluxDB.
    output_dir : str or os.PathLike, optional
        Where to write ``flags.csv``, ``transformers.csv``,
        ``data_quality.csv`` and ``run.json``; ``None`` writes nothing.
    as_of : str or datetime.date, optional
        Last day analysed (local); default: the last full day in the data.
    config : Config, optional
        Defaults when omitted.
    keep_sites : collection of str, default ()
        Meters whose demand a partitioned run keeps for plotting even when
        not flagged (``gridwatch plot``).
    history : gridwatch.cases.HistoryLocation, optional
        The output's case history; default :func:`gridwatch.cases.locate_history`
        of ``output_dir`` (a staging directory needs its destination's).
    record_history : bool, default True
        Record the night once ``run.json`` is written; False leaves it in
        ``result.pending_cases`` for a caller that publishes later.

    Returns
    -------
    RunResult

    Raises
    ------
    InputError
        When an input table cannot be used at all.
    """
    config = config or Config()
    tz = config.data.timezone
    timings = {}
    started = time.perf_counter()

    n_partitions = 1
    if config.engine.kind != "memory":
        from gridwatch.streaming import analyse_partitioned

        # A run that draws nothing keeps no meter's arrays (but those asked for).
        draws = output_dir is None or (config.report.enabled and config.report.plots)
        ds, as_of_date, part, n_partitions = analyse_partitioned(
            input_dir, as_of, config, keep=keep_sites, keep_flagged=draws)
        grid = day_grid(part.kw.index, tz)
        start, end = window_bounds(as_of_date, config.analysis.history_days, tz)
        issues = IssueLog().extend(ds.issues)
        n_used = part.readings_in_window
        _record_outside_window(issues, ds.row_counts["readings"]["used"] - n_used, start,
                               as_of_date, config)
    else:
        t0 = time.perf_counter()
        ds, as_of_date = read_inputs(input_dir, as_of, config)
        timings["read_and_clean_s"] = time.perf_counter() - t0
        log.info("read %d readings of %d meters (as of %s) in %.1f s", len(ds.readings),
                 len(ds.meters), as_of_date, timings["read_and_clean_s"])
        issues = IssueLog().extend(ds.issues)
        start, end = window_bounds(as_of_date, config.analysis.history_days, tz)

        t0 = time.perf_counter()
        ts = ds.readings[col.TIMESTAMP]
        inside = (ts >= start) & (ts < end)
        _record_outside_window(issues, int((~inside).sum()), start, as_of_date, config)
        n_used = int(inside.sum())
        _check_window(n_used, as_of_date, input_dir)
        index = analysis_index(start, end, config.analysis.grid_minutes)
        grid = day_grid(index, tz)
        timings["window_s"] = time.perf_counter() - t0
        (part,) = analyse(ds, index=index, grid=grid, config=config, release_readings=True)
    kw, meters, detection, expected, balance = (part.kw, part.meters, part.detection,
                                                part.expected, part.balance)
    _record_no_window(ds, part.no_window, issues)
    issues.extend(part.issues)
    table = _apply_suppressions(detection.table, config)
    timings.update(part.timings)
    log.info("detection: %d of %d meters flagged", int(detection.table["flagged"].sum()),
             len(detection.table))

    transformers = empty_transformers()
    if balance is not None:
        transformers = format_transformers(balance.table)
        table = merge_suspects(table, balance.suspects)
        log.info("energy balance: %d of %d assets flagged", int(balance.table["flagged"].sum()),
                 len(balance.table))

    analysed = table[table["analysed"]]
    cases = pending = None
    if output_dir is not None and config.cases.enabled:
        analysed, balance_table, cases, pending = _record_cases(
            analysed, balance.table if balance is not None else None, output_dir, as_of_date,
            config, issues, history)
        if balance is not None:
            balance.table = balance_table
            transformers = format_transformers(balance_table)
    flags = format_flags(analysed)
    topology = format_topology(balance.topology if balance is not None else None)
    timings["total_s"] = time.perf_counter() - started

    info = {
        "gridwatch_version": __version__,
        "python": platform.python_version(),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": config.source.kind,
        "input_dir": str(Path(input_dir).resolve()) if input_dir is not None else None,
        "as_of": as_of_date.isoformat(),
        "window": {"start_utc": start.isoformat(), "end_utc": end.isoformat(),
                   "days": config.analysis.history_days},
        "config": config.to_dict(),
        "counts": {**_counts(ds, issues, n_used, flags),
                   "assets_with_upstream": int(len(transformers)),
                   "assets_flagged": int((transformers[col.FLAGGED] == "true").sum()),
                   "metering_faults": int((transformers[col.KIND] == col.KIND_METERING_FAULT).sum()),
                   "meters_doubtful_transformer": int(len(topology))},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "engine": {"kind": config.engine.kind, "partitions": n_partitions},
    }
    result = RunResult(flags=flags, transformers=transformers, issues=issues, detection=detection,
                       expected=expected, kw=kw, grid=grid, as_of=as_of_date, info=info,
                       balance=balance, meters=meters, cases=cases, peer_bands=part.bands,
                       topology=topology, pending_cases=pending)
    if output_dir is not None:
        result.paths = write_outputs(output_dir, flags=flags, transformers=transformers,
                                     data_quality=issues.to_frame(), topology=topology)
        if config.report.enabled:
            log.info("writing report.html and plots")
            t0 = time.perf_counter()
            result.paths.update(_write_report(result, output_dir, config))
            info["timings_s"]["report_s"] = round(time.perf_counter() - t0, 3)
        # run.json last: its presence says the run's other files are complete.
        result.paths["run"] = str(Path(output_dir) / "run.json")
        write_json(result.paths["run"], redact_data(info))  # no credential, whatever its source
        if pending is not None and record_history:  # the outputs are complete: record the night
            pending.commit()
            result.pending_cases = None
    return result


def case_db_path(output_dir, config: Config) -> Path:
    """The case-history database: the configured file, else ``.OUT_DIR.state/cases.sqlite``."""
    from gridwatch.cases import locate_history

    return locate_history(output_dir, database=config.cases.database).path


def _record_cases(meters_table, asset_table, output_dir, as_of, config: Config, issues: IssueLog,
                  history=None):
    """Compute the night's case statuses; hold back sites closed as legitimate or suppressed.

    Returns the meter table and asset table with held-back flags turned off
    (their reason says why), the case status of every flagged site, and the
    :class:`gridwatch.cases.PendingRun` that records the night once the
    outputs are published. A database that cannot be used stops the run
    (:class:`gridwatch.cases.CaseDatabaseError`, exit 3).
    """
    from gridwatch.cases import CaseDatabaseError, locate_history, open_history

    store, notes = open_history(history or locate_history(output_dir,
                                                          database=config.cases.database))
    for code, detail in notes:
        issues.add(code, "cases", 1, "kept", detail=detail)
    try:
        pending = store.prepare_run(as_of, meters_table, asset_table,
                                    reopen_rel_change=config.cases.reopen_rel_change,
                                    reopen_min_kw=config.cases.reopen_min_kw)
    except CaseDatabaseError:
        raise
    except InputError as exc:  # e.g. one id flagged as a meter and as an asset
        issues.add("cases.not_recorded", "cases", 1, "kept", detail=str(exc))
        return meters_table, asset_table, None, None
    cases = pending.table
    cases = cases.assign(history=[_case_history(store, r.case_id, pending.as_of, r.status)
                                  for r in cases.itertuples()])
    held = cases[~cases["flagged"].astype(bool)].set_index("case_id")
    if held.empty:
        return meters_table, asset_table, cases, pending

    why = held["note"].fillna("held back by the case history")
    return (hold_back(meters_table, why, id_column=col.METER_ID, only_flagged=True),
            hold_back(asset_table, why, id_column=col.ASSET_ID, only_flagged=True), cases,
            pending)


def _case_history(store, case_id: str, as_of: str, status: str) -> str:
    """A case's events in one line for the report: runs up to night ``as_of``, closures, suppressions.

    The night itself (``status``) is not recorded yet (it is once published): it comes last.
    """
    try:
        events = store.show(case_id)["events"]
    except InputError:  # first flagged tonight: not in the history yet
        events = []
    events = [e for e in events if e["event"] != "run" or e["as_of"] < as_of]
    events.append({"event": "run", "as_of": as_of, "details": {"status": status}})
    parts = []
    for event in events:
        details = event.get("details") or {}
        if event["event"] == "run":
            parts.append(f"{event['as_of']} {details.get('status', 'run')}")
        elif event["event"] == "close":
            note = f": {details['note']}" if details.get("note") else ""
            parts.append(f"{event['as_of']} closed as {details.get('outcome')}{note}")
        else:
            parts.append(f"{event['as_of']} {event['event']} ({details.get('reason', '')})")
    return "; ".join(parts)


def _write_report(result: RunResult, output_dir, config: Config) -> dict:
    """Plots for every flagged site and the self-contained report.html."""
    from gridwatch.report.html import write_report
    from gridwatch.report.plots import write_plots

    plots = write_plots(result, output_dir) if config.report.plots else {}
    path = write_report(result, output_dir, plots=plots, cases=result.cases,
                        embed_limit=config.report.embedded_plots)
    return {"report": str(path), "plots": str(Path(output_dir) / "plots")}


def merge_suspects(table: pd.DataFrame, suspects: pd.DataFrame) -> pd.DataFrame:
    """Add the energy balance's suspects to the per-meter table.

    A suspect whose own data carry strong evidence (its consumption fell when
    the asset's unexplained load began) is flagged ``hidden_load_suspect``
    with the asset's estimates; a weak suspect is listed with its reasons but
    not flagged (docs/data-contract.md: a crew is not sent to every meter under a
    transformer). A meter already flagged for a visible load keeps that flag
    and gains the reason. Meters suspected under several assets keep their
    strongest case.

    Parameters
    ----------
    table : pandas.DataFrame
        The detector's per-meter table (index ``meter_id``).
    suspects : pandas.DataFrame
        :attr:`gridwatch.balance.Balance.suspects`.

    Returns
    -------
    pandas.DataFrame
    """
    if suspects.empty:
        return table
    best = (suspects.sort_values(["strong", "evidence"], ascending=[False, False])
            .drop_duplicates(col.METER_ID).set_index(col.METER_ID))
    best = best[best.index.isin(table.index)]
    if best.empty:
        return table
    table = table.copy()
    ids = best.index
    visible = table.loc[ids, col.FLAGGED].to_numpy(dtype=bool)
    strong = best["strong"].to_numpy(dtype=bool) & ~visible
    weak = ~best["strong"].to_numpy(dtype=bool) & ~visible
    evidence = best["evidence"].to_numpy(dtype=np.float64)
    table.loc[ids, "analysed"] = True  # scored by the balance even if too little data for the detector
    table.loc[ids[visible], col.REASONS] = (table.loc[ids[visible], col.REASONS] + "; also "
                                            + best.loc[ids[visible], col.REASONS])
    hit = ids[strong]
    for name in (col.ONSET, col.EXCESS_KW, col.EXCESS_KWH, col.EST_LOSS, col.REASONS):
        table.loc[hit, name] = best.loc[hit, name].to_numpy()
    table.loc[hit, col.FLAGGED] = True
    table.loc[hit, col.KIND] = col.KIND_HIDDEN
    table.loc[hit, col.SCORE] = 0.5 + 0.5 * np.clip(evidence[strong], 0, 1)
    listed = ids[weak]
    prior = table.loc[listed, col.REASONS].astype("string").fillna("")
    table.loc[listed, col.REASONS] = ("possible hidden-load suspect (weak evidence): "
                                      + best.loc[listed, col.REASONS]
                                      + np.where(prior != "", "; " + prior, ""))
    table.loc[listed, col.SCORE] = np.fmax(table.loc[listed, col.SCORE].to_numpy(dtype=float),
                                           0.49 * np.clip(evidence[weak], 0, 1))
    return table


def _record_outside_window(issues: IssueLog, count: int, start, as_of_date, config: Config):
    issues.add("readings.outside_window", "readings", count, "excluded",
               detail=f"readings outside the analysis window {start.date()}..{as_of_date} "
                      f"({config.analysis.history_days} days)", severity="info")


def _check_window(n_used: int, as_of_date, input_dir) -> None:
    if n_used == 0:
        raise InputError(f"no readings in the analysis window ending {as_of_date}",
                         file=Path(input_dir) / "readings" if input_dir else None,
                         hint="check --as-of against the dates in the data")


def _record_no_window(ds: Dataset, no_window: list, issues: IssueLog) -> None:
    already = set(ds.issues.to_frame().query("code == 'meters.no_readings'")["meter_id"])
    issues.add_per_meter("meters.no_data_in_window", "meters",
                         pd.Series(1, index=[m for m in no_window if m not in already]),
                         "excluded", detail="no readings in the analysis window; not analysed")


def _apply_suppressions(table: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Keep meters suppressed in the config out of the flagged list, saying why."""
    if not config.suppress:
        return table
    why = pd.Series({s.meter_id: f"suppressed in config ({s.reason})" for s in config.suppress})
    return hold_back(table, why, id_column=col.METER_ID)


def hold_back(table: pd.DataFrame | None, why: pd.Series, *, id_column: str,
              only_flagged: bool = False) -> pd.DataFrame | None:
    """Turn flags off for the sites in ``why`` (site id -> reason) and say why.

    The one mechanism behind config suppressions and the case history's
    hold-backs: the row stays listed, ``flagged`` becomes false, ``kind``
    empty, the score at most 0.499 (the score says the decision, so ranks
    follow it), and the reason leads with ``why``, followed by "would be
    flagged (score S):" and the original reasons when the site was flagged.

    Parameters
    ----------
    table : pandas.DataFrame or None
        Per-site table with ``flagged`` and optionally ``kind`` and ``reasons``.
    why : pandas.Series
        Reason text indexed by site id.
    id_column : str
        ``meter_id`` or ``asset_id``.
    only_flagged : bool, default False
        Touch only rows that are flagged.
    """
    if table is None:
        return None
    ids = table[id_column].astype(str)
    was = table[col.FLAGGED].astype(bool)
    hit = ids.isin(why.index) & (was if only_flagged else True)
    if not hit.any():
        return table
    table = table.copy()
    lead = ids[hit].map(why)
    if col.REASONS in table:
        old = table.loc[hit, col.REASONS].astype(str)
        would = "; would be flagged: "
        if col.SCORE in table:
            would = ("; would be flagged (score "
                     + table.loc[hit, col.SCORE].astype(float).map("{:.2f}".format) + "): ")
        table.loc[hit, col.REASONS] = lead + np.where(was[hit], would + old, "")
    if col.SCORE in table:
        table.loc[hit & was, col.SCORE] = np.minimum(table.loc[hit & was, col.SCORE].astype(float),
                                                     UNFLAGGED_MAX_SCORE)
    table.loc[hit, col.FLAGGED] = False
    if col.KIND in table:
        table.loc[hit, col.KIND] = ""
    return table


def _counts(ds: Dataset, issues: IssueLog, readings_in_window: int, flags: pd.DataFrame) -> dict:
    """Rows in / used / dropped per reason, per table, and the headline numbers."""
    frame = issues.to_frame()
    out = {}
    for table, counts in ds.row_counts.items():
        rows = frame[(frame["table"] == table) & frame["action"].isin(["dropped", "excluded"])]
        if table == "meters":
            rows = rows[rows["code"].str.startswith("meters.") & (rows["action"] == "dropped")]
        out[table] = {
            "in": int(counts.get("in", 0)),
            "used": int(readings_in_window) if table == "readings" else int(counts.get("used", 0)),
            "dropped_by_reason": {k: int(v) for k, v in rows.groupby("code")["count"].sum().items()},
        }
    out["meters_analysed"] = int(len(flags))
    out["meters_flagged"] = int((flags[col.FLAGGED] == "true").sum())
    out["data_quality_issues"] = int(len(frame))
    return out
