"""The ``gridwatch`` command line: a thin layer over the library.

Each command parses its options, calls one library function and maps
:class:`gridwatch.errors.GridwatchError` to a one-line message on stderr and
its exit code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from gridwatch import __version__

EXIT_OK = 0
EXIT_FAILURE = 1


def _errors_to_exit(func):
    """Turn library errors into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from gridwatch.errors import GridwatchError

        try:
            return func(*args, **kwargs)
        except GridwatchError as exc:
            click.echo(f"gridwatch: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("gridwatch: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for cron
            if kwargs.get("debug") or click.get_current_context().find_root().params.get("debug"):
                raise
            click.echo(f"gridwatch: internal error: {type(exc).__name__}: {exc} "
                       "(rerun with --debug for the traceback)", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gridwatch")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def main(debug):
    """GridWatch: find steady, mining-like loads in smart-meter and transformer data.

    \b
    Example:
      gridwatch run --input sample_data --output out/sample
    """


@main.command()
@click.option("--input", "input_dir", default=None, type=click.Path(file_okay=False),
              help="Dataset directory laid out as in docs/data-contract.md (not with an InfluxDB "
                   "source).")
@click.option("--output", "output_dir", default=None, type=click.Path(file_okay=False),
              help="OUT_DIR: flags.csv, transformers.csv, data_quality.csv, report.html, plots/, "
                   "run.json; replaced as a whole when the run is complete.")
@click.option("--output-root", "output_root", default=None, type=click.Path(file_okay=False),
              help="For scheduled runs: write ROOT/<as-of>/ and point ROOT/latest at it "
                   "(default: output.root in the config).")
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD",
              help="Last day analysed (default: the last full day in the files; yesterday for "
                   "InfluxDB).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="TOML configuration (default: built-in defaults, see configs/default.toml).")
@click.option("--log-file", "log_file", default=None, type=click.Path(dir_okay=False),
              help="Append the run's log to this file (default: output.log_file in the config).")
@click.option("--engine", default=None, type=click.Choice(["memory", "streaming", "dask"]),
              help="All meters at once, partitions one after another (bounded memory), or "
                   "partitions on a Dask cluster (default: engine.kind in the config).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="With --engine dask: an existing Dask scheduler (default: a local cluster).")
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron).")
@_errors_to_exit
def run(input_dir, output_dir, output_root, as_of, config_path, log_file, engine, scheduler,
        quiet):
    """Analyse a dataset and publish the ranked flags, report and plots.

    Outputs appear all at once when the run is complete; a second run on the
    same output while one is going exits at once with code 5. Exit codes: 0
    success, 1 internal failure, 2 bad configuration, 3 unusable input, 4 data
    source unreachable, 5 locked by another run.

    \b
    Example:
      gridwatch run --input sample_data --output out/sample --as-of 2026-03-31
      gridwatch run --config configs/influxdb.toml --output-root /var/lib/gridwatch --quiet
    """
    from gridwatch.config import load_config
    from gridwatch.errors import GridwatchError
    from gridwatch.publish import run_published

    config = load_config(config_path)
    overrides = {k: v for k, v in (("kind", engine), ("scheduler", scheduler)) if v is not None}
    if overrides:
        config = config.model_copy(update={"engine": config.engine.model_copy(update=overrides)})
    if config.engine.reuse_freed_memory and config.engine.kind != "dask":
        from gridwatch.allocator import reuse_freed_memory

        # This process analyses the partitions: keep freed memory for the next one. A Dask
        # client only merges (its workers get the setting): it would hold its peak for nothing.
        reuse_freed_memory()
    with _logging_to(log_file or config.output.log_file, progress=not quiet and _stderr_is_tty()):
        log = logging.getLogger("gridwatch")
        log.info("gridwatch %s run started (source %s)", __version__, config.source.kind)
        try:
            result = run_published(input_dir, output_dir=output_dir, output_root=output_root,
                                   as_of=as_of, config=config)
        except GridwatchError as exc:
            log.error("exit %d: %s", exc.exit_code, exc)
            raise
        except Exception:
            log.exception("internal error")
            raise
        log.info("run finished: %s", json.dumps(result.info["counts"]))
    if not quiet:
        counts = result.info["counts"]
        click.echo(
            f"as of {result.as_of}: {counts['meters_analysed']} meters analysed, "
            f"{counts['meters_flagged']} flagged, {counts['assets_flagged']} of "
            f"{counts['assets_with_upstream']} assets with unexplained load, "
            f"{counts['data_quality_issues']} data-quality issues -> "
            f"{result.paths.get('report') or result.paths.get('flags')}"
        )


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def _logging_to(log_file, *, progress: bool):
    """Send the ``gridwatch`` log to a file (appended) and, on a terminal, to stderr as progress.

    Errors are not repeated on stderr (the one-line reason is printed there).
    """
    logger = logging.getLogger("gridwatch")
    logger.setLevel(logging.INFO)
    handlers = []
    if log_file:
        path = Path(log_file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s pid={os.getpid()} %(levelname)s %(name)s: %(message)s"))
        handlers.append(handler)
    if progress:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("gridwatch: %(message)s"))
        handler.addFilter(lambda record: record.levelno < logging.ERROR)
        handlers.append(handler)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


@main.command()
@click.option("--input", "input_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset directory laid out as in docs/data-contract.md.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="TOML configuration: the [influxdb] server and schema (see "
                   "configs/influxdb.toml).")
@click.option("--meter-tags/--no-meter-tags", default=True, show_default=True,
              help="Tag readings with their meter's columns (needed by runs without "
                   "source.meters_file; writing is ~2.5x faster without).")
@_errors_to_exit
def ingest(input_dir, config_path, meter_tags):
    """Load a dataset into InfluxDB (creates the v1 database if missing).

    Readings, upstream and weather are written as line protocol in batches,
    in the measurements, tags, fields and units of the config's [influxdb]
    section; readings carry the meters' columns as tags (--no-meter-tags:
    not).

    \b
    Example:
      gridwatch ingest --input sample_data --config configs/influxdb.toml
    """
    from gridwatch.config import load_config
    from gridwatch.influx import ingest_dataset

    counts = ingest_dataset(input_dir, load_config(config_path), meter_tags=meter_tags)
    skipped = f" ({counts['skipped']} rows without a value skipped)" if counts["skipped"] else ""
    click.echo(f"wrote {counts['readings']} readings, {counts['upstream']} upstream and "
               f"{counts['weather']} weather points to database '{counts['database']}' at "
               f"{counts['url']}{skipped}")


def _case_store(db, output, config_path):
    from gridwatch.cases import CaseStore
    from gridwatch.config import load_config
    from gridwatch.errors import ConfigError
    from gridwatch.pipeline import case_db_path

    if db:
        return CaseStore(db)
    if output:
        return CaseStore(case_db_path(output, load_config(config_path)))
    config = load_config(config_path)
    if config.cases.database:
        return CaseStore(config.cases.database)
    raise ConfigError("which case history?", hint="pass --db FILE, --output OUT_DIR of the runs, "
                      "or a --config with cases.database")


def _case_options(func):
    func = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                        help="TOML configuration with cases.database.")(func)
    func = click.option("--output", default=None, type=click.Path(file_okay=False),
                        help="OUT_DIR of the runs (history in state/cases.sqlite beside it).")(func)
    func = click.option("--db", default=None, type=click.Path(dir_okay=False),
                        help="The case-history SQLite file.")(func)
    return func


@main.group()
def cases():
    """Case history: list, show, close with an inspection outcome, suppress.

    \b
    Example:
      gridwatch cases list --output out/sample --status new
    """


@cases.command("list")
@_case_options
@click.option("--status", default=None,
              type=click.Choice(["new", "ongoing", "cleared", "closed", "suppressed"]))
@_errors_to_exit
def cases_list(db, output, config_path, status):
    """List cases (all, or one status).

    \b
    Example:
      gridwatch cases list --output out/sample --status ongoing
    """
    frame = _case_store(db, output, config_path).list_cases(status)
    shown = ["case_id", "site_kind", "status", "first_seen", "last_seen", "kind", "excess_kw",
             "outcome", "note"]
    frame = frame[[c for c in shown if c in frame.columns]]
    if "excess_kw" in frame:
        frame = frame.assign(excess_kw=frame["excess_kw"].astype(float).round(2))
    click.echo(frame.to_string(index=False, max_colwidth=60) if len(frame) else "no cases")


@cases.command("show")
@click.argument("case_id")
@_case_options
@_errors_to_exit
def cases_show(case_id, db, output, config_path):
    """Show one case and its history as JSON.

    \b
    Example:
      gridwatch cases show M000068 --output out/sample
    """
    click.echo(json.dumps(_case_store(db, output, config_path).show(case_id), indent=2,
                          default=str))


@cases.command("close")
@click.argument("case_id")
@click.option("--outcome", required=True,
              type=click.Choice(["confirmed_mining", "legitimate_load", "meter_fault", "no_access"]))
@click.option("--note", default="", help="What the crew found.")
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="Inspection date.")
@_case_options
@_errors_to_exit
def cases_close(case_id, outcome, note, date, db, output, config_path):
    """Close a case with the inspection's outcome.

    \b
    Example:
      gridwatch cases close M000068 --outcome confirmed_mining --note "S19 x2 in garage" --output out/sample
    """
    case = _case_store(db, output, config_path).close(case_id, outcome, note, date)
    click.echo(f"closed {case_id}: {case.get('outcome', outcome)}")


@cases.command("suppress")
@click.argument("case_id")
@click.option("--reason", required=True, help="Why the load is legitimate.")
@click.option("--until", default=None, metavar="YYYY-MM-DD", help="Last day of the suppression.")
@_case_options
@_errors_to_exit
def cases_suppress(case_id, reason, until, db, output, config_path):
    """Keep a known legitimate load out of the flagged list (still listed as suppressed).

    \b
    Example:
      gridwatch cases suppress M000068 --reason "licensed data room" --until 2026-12-31 --output out/sample
    """
    _case_store(db, output, config_path).suppress(case_id, reason, until)
    click.echo(f"suppressed {case_id}" + (f" until {until}" if until else ""))


@main.command()
@click.argument("site_id")
@click.option("--input", "input_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset directory laid out as in docs/data-contract.md.")
@click.option("-o", "--output", "output_file", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD",
              help="Last day analysed (default: the last full day in the data).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="TOML configuration (the same as the nightly run's).")
@_errors_to_exit
def plot(site_id, input_dir, output_file, as_of, config_path):
    """Plot one meter or asset, flagged or not, for an investigator.

    \b
    Example:
      gridwatch plot M000068 --input sample_data --config configs/sample.toml -o M000068.png
    """
    from gridwatch.config import load_config
    from gridwatch.pipeline import run as run_pipeline
    from gridwatch.report.plots import plot_site

    config = load_config(config_path)
    result = run_pipeline(input_dir, None, as_of=as_of, config=config, keep_sites=[site_id])
    path = plot_site(result, site_id, output_file)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--meters", "n_meters", default=300, show_default=True, type=click.IntRange(10),
              help="Number of meters.")
@click.option("--days", default=60, show_default=True, type=click.IntRange(14),
              help="Days of data ending on the as-of day.")
@click.option("--as-of", "as_of", default="2026-03-31", show_default=True, metavar="YYYY-MM-DD")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--timezone", default="Europe/London", show_default=True)
@click.option("--format", "fmt", default="parquet", show_default=True,
              type=click.Choice(["parquet", "csv"]))
@click.option("--clean", is_flag=True, help="Do not inject gaps, duplicates and bad values.")
@click.option("--field", is_flag=True,
              help="A field population: rigs of every behaviour (already running, stopping for "
                   "hours, heating the house, behind PV...) at about 1 in 70 meters, heat pumps, "
                   "PV inverter failures, small constant loads, move-ins, new freezers.")
@click.option("--pv-share", default=None, type=click.FloatRange(0, 1),
              help="Share of the ordinary homes with rooftop PV (import and export registers) "
                   "[default: 0.2 with --field, else 0].")
@click.option("--network-faults", is_flag=True,
              help="Add labelled metering faults and mapping errors: CT ratio changes and SCADA "
                   "clock offsets on about 3 % of transformers each, 72 h SCADA outages on about "
                   "2 %, and meters listed under another transformer of their feeder.")
@click.option("--mismap-share", default=None, type=click.FloatRange(0, 1),
              help="With --network-faults: share of meters listed under a wrong transformer, a "
                   "third of them in swaps [default: 0.05].")
@_errors_to_exit
def simulate(output_dir, n_meters, days, as_of, seed, timezone, fmt, clean, field, pv_share,
             network_faults, mismap_share):
    """Write a realistic labelled dataset (with labels.json) in the contract layout.

    \b
    Example:
      gridwatch simulate out/sim --meters 2000 --days 60 --seed 7
      gridwatch simulate out/field --field --meters 4000 --days 90 --as-of 2026-05-15
      gridwatch simulate out/network --meters 2000 --network-faults --mismap-share 0.05
    """
    from gridwatch.simulate import FIELD_RIG_TYPE_MIX, FIELD_SCENARIO_MIX, simulate_dataset

    if mismap_share is not None and not network_faults:
        from gridwatch.errors import ConfigError

        raise ConfigError("--mismap-share needs --network-faults",
                          hint="add --network-faults or drop --mismap-share")
    if pv_share is None:
        pv_share = 0.2 if field else 0.0
    labels = simulate_dataset(output_dir, n_meters=n_meters, days=days, as_of=as_of, seed=seed,
                              timezone=timezone, fmt=fmt, dirty=not clean,
                              scenario_mix=FIELD_SCENARIO_MIX if field else None,
                              rig_type_mix=FIELD_RIG_TYPE_MIX if field else None,
                              pv_share=pv_share, network_faults=network_faults,
                              mismap_share=mismap_share)
    types = {}
    for meter in labels["meters"].values():
        types[meter["type"]] = types.get(meter["type"], 0) + 1
    click.echo(f"wrote {n_meters} meters x {days} days to {output_dir} "
               f"({', '.join(f'{k}: {v}' for k, v in sorted(types.items()))})")
    if network_faults:
        n = labels["network_faults"]
        click.echo(f"network faults: {n['ct_ratio']} CT ratio changes, {n['clock_offset']} clock "
                   f"offsets, {n['scada_outage']} SCADA outages (transformers); "
                   f"{n['mismapped']} mismapped meters ({n['swap_pairs']} swaps)")


@main.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@_errors_to_exit
def evaluate(output_dir, labels, as_json):
    """Score a run's flags.csv, transformers.csv and topology.csv against a labels.json.

    transformers.csv and topology.csv are scored when present; with labels of
    mismapped meters (simulate --network-faults), a run with transformers.csv
    but no topology.csv listed no meter.

    \b
    Example:
      gridwatch evaluate out/sim-run out/sim/labels.json
    """
    from pathlib import Path

    import pandas as pd

    from gridwatch.errors import InputError
    from gridwatch.evaluation import evaluate as evaluate_flags
    from gridwatch.evaluation import format_evaluation

    flags_path = Path(output_dir) / "flags.csv"
    if not flags_path.exists():
        raise InputError("no flags.csv here", file=output_dir,
                         hint="pass the --output directory of a gridwatch run")
    flags = pd.read_csv(flags_path, dtype={"meter_id": str, "transformer_id": str,
                                           "onset": str, "kind": str, "reasons": str},
                        keep_default_na=False, na_values=[""])
    with open(labels, encoding="utf-8") as handle:
        label_data = json.load(handle)
    transformers_path = Path(output_dir) / "transformers.csv"
    transformers = None
    if transformers_path.exists():
        transformers = pd.read_csv(transformers_path, dtype=str, keep_default_na=False)
    topology_path = Path(output_dir) / "topology.csv"
    topology = None
    if topology_path.exists():
        topology = topology_path  # may be empty: no meter listed
    elif transformers is not None and any("listed_transformer_id" in m
                                          for m in label_data["meters"].values()):
        topology = pd.DataFrame(columns=["meter_id", "likely_transformer_id"])
    metrics = evaluate_flags(flags, label_data, transformers=transformers, topology=topology)
    click.echo(json.dumps(metrics, indent=2) if as_json else format_evaluation(metrics))
