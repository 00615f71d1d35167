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

import pandas as pd

from gridwatch import columns as col
from gridwatch.atomic import write_json
from gridwatch.balance import Balance
from gridwatch.baseline import ExpectedConsumption
from gridwatch.coarse import judge_coarse
from gridwatch.config import Config
from gridwatch.days import DayGrid
from gridwatch.decisions import apply_suppressions, hold_back, merge_suspects
from gridwatch.detect import Detection
from gridwatch.errors import InputError
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
from gridwatch.report.places import crew_plan_of
from gridwatch.resolution import MONTHLY, RESOLUTION
from gridwatch.runner import analyse_source
from gridwatch.sources import Dataset
from gridwatch.version import __version__

log = logging.getLogger(__name__)


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
    monthly_suspects : pandas.DataFrame or None
        ``monthly_suspects.csv`` rows: the flagged monthly meters ranked by
        money (None: the run has no monthly meter).
    all_meters : pandas.DataFrame or None
        The meters table as read, every meter (also in a partitioned run):
        the network and coordinates for the map and the crew plan.
    resolution : pandas.Series or None
        ``"daily"`` or ``"monthly"`` by ``meter_id``, for the meters read
        once a day or a month (None: every meter has interval data).
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
    monthly_suspects: pd.DataFrame | None = None
    all_meters: pd.DataFrame | None = None
    resolution: pd.Series | None = None


def _has_monthly(part) -> bool:
    """Whether the run has monthly meters (it then writes ``monthly_suspects.csv``)."""
    return part.coarse is not None and bool((part.coarse[RESOLUTION] == MONTHLY).any())


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
    started = time.perf_counter()
    # A run that draws nothing keeps no meter's arrays (but those asked for).
    draws = output_dir is None or (config.report.enabled and config.report.plots)
    done = analyse_source(input_dir, as_of, config, keep=keep_sites, keep_flagged=draws)
    ds, as_of_date, part, grid = done.dataset, done.as_of, done.analysis, done.grid
    start, end = done.window
    issues = IssueLog().extend(ds.issues)
    # Daily and monthly meters, each judged at its own resolution (issue 16, items 3-4).
    coarse = judge_coarse(part.coarse, ds.meters, ds.weather, as_of_date,
                          timezone=config.data.timezone, config=config.coarse)
    n_used = part.readings_in_window + coarse.rows_used
    _record_outside_window(issues, ds.row_counts["readings"]["used"] - n_used, start, as_of_date,
                           config)
    kw, meters, detection, expected, balance = (part.kw, part.meters, part.detection,
                                                part.expected, part.balance)
    _record_no_window(ds, part.no_window, issues)
    issues.extend(part.issues)
    table = detection.table
    if len(coarse.table):
        table = pd.concat([table, coarse.table])
    table = apply_suppressions(table, config.suppress)
    timings = dict(part.timings)
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
        "engine": {"kind": config.engine.kind, "partitions": done.n_partitions},
    }
    result = RunResult(flags=flags, transformers=transformers, issues=issues, detection=detection,
                       expected=expected, kw=kw, grid=grid, as_of=as_of_date, info=info,
                       balance=balance, meters=meters, cases=cases, peer_bands=part.bands,
                       topology=topology, pending_cases=pending,
                       monthly_suspects=coarse.monthly_suspects if _has_monthly(part) else None,
                       all_meters=ds.meters,
                       resolution=coarse.table[RESOLUTION] if len(coarse.table) else None)
    if output_dir is not None:
        result.paths = write_outputs(output_dir, flags=flags, transformers=transformers,
                                     data_quality=issues.to_frame(), topology=topology,
                                     monthly_suspects=result.monthly_suspects,
                                     inspections=crew_plan_of(result))
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


def _record_outside_window(issues: IssueLog, count: int, start, as_of_date, config: Config):
    issues.add("readings.outside_window", "readings", count, "excluded",
               detail=f"readings outside the analysis window {start.date()}..{as_of_date} "
                      f"({config.analysis.history_days} days)", severity="info")


def _record_no_window(ds: Dataset, no_window: list, issues: IssueLog) -> None:
    already = set(ds.issues.to_frame().query("code == 'meters.no_readings'")["meter_id"])
    issues.add_per_meter("meters.no_data_in_window", "meters",
                         pd.Series(1, index=[m for m in no_window if m not in already]),
                         "excluded", detail="no readings in the analysis window; not analysed")


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
