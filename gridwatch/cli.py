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
EXIT_USAGE = 2
#: Signals that stop a command with one line on stderr and exit 128 + the signal's number
#: (SIGINT arrives as KeyboardInterrupt: 130).
STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_DEBUG = "gridwatch.debug"
#: The stop signals received while the command runs: a :class:`gridwatch.errors.Stopped`
#: raised inside library code may reach the command wrapped in another exception.
_RECEIVED: list[int] = []


def _debug() -> bool:
    """True when ``--debug`` was given, before or after the subcommand."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_DEBUG))


def _set_debug(ctx, _param, value):
    if value:
        ctx.meta[_DEBUG] = True
    return value


def _debug_option():
    return click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_debug, help="Show tracebacks of internal errors.")


class _Command(click.Command):
    """A command that also accepts ``--debug`` after its name (``gridwatch run --debug``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())


class _Group(click.Group):
    """The command group: one-line usage errors, ``--debug`` anywhere, signals stop in one line.

    Every error of the command line (unknown option, bad value, missing
    argument) is one line on stderr, the reason first, and exit 2, instead of
    click's three-line usage block.
    """

    command_class = _Command
    group_class = type  # subgroups (``cases``) are of this class too

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the command line; see :class:`click.Group`."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        with _signals_stop():
            try:
                return super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
            except click.exceptions.Exit as exc:
                sys.exit(exc.exit_code)
            except click.ClickException as exc:
                click.echo(f"gridwatch: error: {_usage_line(exc)}", err=True)
                sys.exit(exc.exit_code)
            except click.Abort:
                click.echo("gridwatch: interrupted (SIGINT)", err=True)
                sys.exit(130)


def _usage_line(exc: click.ClickException) -> str:
    """A click error as one line: the reason, then where to get help."""
    text = " ".join(exc.format_message().split()).rstrip(".")  # a newline in a value: one line
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text


@contextlib.contextmanager
def _signals_stop():
    """While the command runs, SIGTERM and SIGHUP raise :class:`gridwatch.errors.Stopped`.

    The run's clean-up then happens (no staging directory is left, nothing
    is published) and the command ends with one line and exit 128 + the
    signal's number. A second signal during the clean-up is ignored.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        from gridwatch.errors import Stopped

        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        _RECEIVED.append(signum)
        raise Stopped(signum)

    previous = {name: signal.signal(getattr(signal, name), stop) for name in STOP_SIGNALS}
    _RECEIVED.clear()
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def _errors_to_exit(func):
    """Turn library errors into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from gridwatch.errors import GridwatchError, Stopped, storage_error
        from gridwatch.redact import redact

        try:
            try:
                return func(*args, **kwargs)
            except OSError as exc:  # the machine refused a file: not a bug (issue 14, item 14)
                raise storage_error(exc) from exc
        except GridwatchError as exc:
            click.echo(f"gridwatch: error: {redact(exc)}", err=True)
            sys.exit(_exit_code(exc))
        except KeyboardInterrupt:
            click.echo("gridwatch: interrupted (SIGINT)", err=True)
            sys.exit(130)
        except Stopped as exc:
            click.echo(f"gridwatch: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for cron
            if _RECEIVED:  # the signal surfaced as another error (e.g. inside an import)
                stopped = Stopped(_RECEIVED[0])
                click.echo(f"gridwatch: {stopped}", err=True)
                sys.exit(stopped.exit_code)
            if _debug():
                raise
            click.echo(f"gridwatch: internal error: {type(exc).__name__}: {redact(exc)} "
                       "(rerun with --debug for the traceback)", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def _day_option(_ctx, param, value):
    """A ``YYYY-MM-DD`` option: a real calendar day, else a usage error (exit 2)."""
    import datetime as dt
    import re

    if value is None:
        return None
    text = str(value).strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day: use YYYY-MM-DD, e.g. 2026-03-31",
                                 param=param) from None


def _exit_code(exc) -> int:
    """The error's exit code; 4 for an error caused by a full disk or a failing device.

    The case history's errors say what is wrong with the database (exit 3: a
    damaged, read-only or misplaced file is the user's to fix); when the
    cause is a full disk or an I/O error, that is the machine's (4).
    """
    import errno

    cause = exc.__cause__
    machine = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO)
    if (isinstance(cause, OSError) and cause.errno in machine) or (
            type(cause).__module__ == "sqlite3"
            and (getattr(cause, "sqlite_errorname", None) or "").startswith(_SQLITE_MACHINE)):
        from gridwatch.errors import StorageError

        return StorageError.exit_code
    return exc.exit_code


_SQLITE_STORAGE = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR",
                   "SQLITE_PERM")
_SQLITE_MACHINE = ("SQLITE_FULL", "SQLITE_IOERR")


def _case_history_error(exc, output_dir, output_root, config):
    """The case history's SQLite refusal (disk full, read-only) as a one-line storage error.

    Returns None when the refusal is not the machine's (then it is a bug).
    """
    from gridwatch.errors import StorageError

    if not (getattr(exc, "sqlite_errorname", None) or "").startswith(_SQLITE_STORAGE):
        return None
    from gridwatch.cases import locate_history

    return StorageError(f"the case history cannot be written: {exc}",
                        file=locate_history(output_dir, output_root=(
                            output_root or config.output.root or "."),
                            database=config.cases.database).path,
                        hint="free space or make its directory writable, or set cases.database")


@contextlib.contextmanager
def _warnings_to_log():
    """Python warnings of the run go to its log, not to stderr (cron mails stderr)."""
    import warnings

    log = logging.getLogger("gridwatch")

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gridwatch")
def main():
    """GridWatch: find steady, mining-like loads in smart-meter and transformer data.

    \b
    Example:
      gridwatch run --input sample_data --output out/sample --config configs/sample.toml
      gridwatch simulate out/sim
      gridwatch run --input out/sim --config out/sim/gridwatch.toml --output out/sim-run
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
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD", callback=_day_option,
              help="Last day analysed (default: the last full day in the files; yesterday for "
                   "InfluxDB).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="TOML configuration (default: built-in defaults; every key: `gridwatch config "
                   "--defaults`).")
@click.option("--log-file", "log_file", default=None, type=click.Path(dir_okay=False),
              help="Append the run's log to this file (default: output.log_file in the config).")
@click.option("--engine", default=None, type=click.Choice(["memory", "streaming", "dask"]),
              help="All meters at once, partitions one after another within "
                   "engine.memory_budget_mb (one partition when the dataset fits), or partitions "
                   "on a Dask cluster (default: engine.kind in the config, streaming unless set).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="With --engine dask: an existing Dask scheduler (default: a local cluster).")
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron).")
@_errors_to_exit
def run(input_dir, output_dir, output_root, as_of, config_path, log_file, engine, scheduler,
        quiet):
    """Analyse a dataset and publish the ranked flags, report and plots.

    Outputs appear all at once when the run is complete; a second run on the
    same output while one is going exits at once with code 5. Exit codes: 0
    success, 1 internal failure, 2 bad configuration or command line, 3
    unusable input, 4 a file the machine refuses (read-only, disk full) or a
    data source unreachable, 5 locked by another run, 129/130/143 stopped by
    SIGHUP/SIGINT/SIGTERM (nothing published).

    \b
    Example:
      gridwatch run --input sample_data --output out/sample --config configs/sample.toml --as-of 2026-03-31
      gridwatch run --config configs/influxdb.toml --output-root /var/lib/gridwatch --quiet
    """
    import sqlite3

    from gridwatch.config import load_config
    from gridwatch.errors import GridwatchError, Stopped, storage_error
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
            try:
                with _warnings_to_log():
                    result = run_published(input_dir, output_dir=output_dir,
                                           output_root=output_root, as_of=as_of, config=config)
            except OSError as exc:
                raise storage_error(exc) from exc
            except sqlite3.OperationalError as exc:
                error = _case_history_error(exc, output_dir, output_root, config)
                if error is None:
                    raise
                raise error from exc
        except GridwatchError as exc:
            log.error("exit %d: %s", _exit_code(exc), exc)
            raise
        except (KeyboardInterrupt, Stopped) as exc:
            log.error("stopped by %s: nothing published",
                      getattr(exc, "name", "SIGINT"))
            raise
        except Exception:
            if _RECEIVED:
                log.error("stopped by signal %d: nothing published", _RECEIVED[0])
            else:
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

    Errors are not repeated on stderr (the one-line reason is printed there). Every handler
    redacts the run's credentials (:class:`gridwatch.redact.RedactingFilter`).
    """
    from gridwatch.redact import RedactingFilter

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
        handler.addFilter(RedactingFilter())
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
    """The history an analyst names; never created here (issue 14, items 5 and 6)."""
    from gridwatch.cases import CaseStore, history_for_output
    from gridwatch.config import load_config
    from gridwatch.errors import ConfigError

    if db:
        return CaseStore(db, create=False)
    config = load_config(config_path)
    if output:
        return CaseStore(history_for_output(output, database=config.cases.database),
                         create=False)
    if config.cases.database:
        return CaseStore(config.cases.database, create=False)
    raise ConfigError("which case history?", hint="pass --db FILE, --output OUT_DIR of the runs, "
                      "or a --config with cases.database")


def _case_options(func):
    func = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                        help="TOML configuration with cases.database.")(func)
    func = click.option("--output", default=None, type=click.Path(file_okay=False),
                        help="OUT_DIR or --output-root of the runs (history in "
                             ".OUT_DIR.state/ beside it, or ROOT/state/).")(func)
    func = click.option("--db", default=None, type=click.Path(),  # a directory: exit 3, said why
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
@click.option("--from", "run_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="OUT_DIR of a published run: its plot of a flagged site is taken as is (no "
                   "re-analysis); another site is analysed again on that run's input, day and "
                   "configuration.")
@click.option("--input", "input_dir", default=None, type=click.Path(file_okay=False),
              help="Dataset directory laid out as in docs/data-contract.md (not with an "
                   "InfluxDB source).")
@click.option("-o", "--output", "output_file", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD", callback=_day_option,
              help="Last day analysed (default: the run's as-of with --from, else the last full "
                   "day in the data).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="TOML configuration (the same as the nightly run's; with --from: that "
                   "run's own).")
@_errors_to_exit
def plot(site_id, run_dir, input_dir, output_file, as_of, config_path):
    """Plot one meter or asset, flagged or not, for an investigator.

    With --from OUT_DIR, a flagged site's plot comes from the run's plots/ at
    once; any other site is analysed again (as without --from).

    \b
    Example:
      gridwatch plot M000068 --from out/sample -o M000068.png
      gridwatch plot M000068 --input sample_data --config configs/sample.toml -o M000068.png
      gridwatch plot TX-003 --config configs/influxdb.toml --as-of 2026-03-31 -o TX-003.png
    """
    from gridwatch.config import load_config

    config = load_config(config_path) if config_path else None
    if run_dir is not None:
        published = _published_plot(run_dir, site_id)
        if published is not None and as_of in (None, published[1]):
            from gridwatch.atomic import atomic_path

            with atomic_path(output_file, suffix=".png") as tmp:
                tmp.write_bytes(published[0].read_bytes())
            click.echo(f"wrote {output_file} (from {published[0]})")
            return
        info = _run_info(run_dir)
        if config is None:
            from gridwatch.config import config_from_dict

            config = config_from_dict(info.get("config", {}), source=f"{run_dir}/run.json")
        as_of = as_of or info.get("as_of")
        if input_dir is None and config.source.kind == "files":
            input_dir = info.get("input_dir")
    from gridwatch.pipeline import run as run_pipeline
    from gridwatch.report.plots import plot_site

    config = config or load_config(None)
    with _warnings_to_log():
        result = run_pipeline(input_dir, None, as_of=as_of, config=config, keep_sites=[site_id])
        path = plot_site(result, site_id, output_file)
    click.echo(f"wrote {path}")


def _run_info(run_dir) -> dict:
    """A published run's ``run.json``; an :class:`InputError` when it is not a run."""
    from gridwatch.errors import InputError

    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError("not the output of a gridwatch run (no readable run.json)", file=path,
                         hint="pass the --output directory of a complete run to --from") from None


def _published_plot(run_dir, site_id):
    """``(path, as_of)`` of the run's PNG of ``site_id`` (flagged sites have one), or None."""
    from gridwatch.report.plots import PLOTS_DIR, safe_plot_name

    path = Path(run_dir) / PLOTS_DIR / safe_plot_name(site_id)
    if not path.is_file():
        return None
    return path, _run_info(run_dir).get("as_of")


@main.command()
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--meters", "n_meters", default=300, show_default=True, type=click.IntRange(10),
              help="Number of meters.")
@click.option("--days", default=60, show_default=True, type=click.IntRange(14),
              help="Days of data ending on the as-of day.")
@click.option("--as-of", "as_of", default="2026-03-31", show_default=True, metavar="YYYY-MM-DD",
              callback=_day_option)
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
@click.option("--utility-export", "utility_dir", default=None, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Also write the same population as a utility's MDM exports it to DIR: its "
                   "own column names, Wh, END-of-interval stamps, cumulative registers with one "
                   "rollover and one meter exchange, and the DIR/gridwatch.toml that reads it.")
@_errors_to_exit
def simulate(output_dir, n_meters, days, as_of, seed, timezone, fmt, clean, field, pv_share,
             network_faults, mismap_share, utility_dir):
    """Write a realistic labelled dataset (with labels.json) in the contract layout.

    Also writes OUTPUT_DIR/gridwatch.toml, the configuration the dataset needs
    (its time zone and its licensed loads suppressed): run it with --config.

    \b
    Example:
      gridwatch simulate out/sim --meters 2000 --days 60 --seed 7
      gridwatch run --input out/sim --config out/sim/gridwatch.toml --output out/sim-run
      gridwatch simulate out/field --field --meters 4000 --days 90 --as-of 2026-05-15
      gridwatch simulate out/network --meters 2000 --network-faults --mismap-share 0.05
      gridwatch simulate out/sim --clean --utility-export out/sim-utility
      gridwatch run --input out/sim-utility --config out/sim-utility/gridwatch.toml --output out/u
    """
    from gridwatch.simulate import (
        FIELD_RIG_TYPE_MIX,
        FIELD_SCENARIO_MIX,
        export_as_utility,
        simulate_dataset,
        write_config,
    )

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
    config_file = write_config(output_dir, labels)
    click.echo(f"wrote {n_meters} meters x {days} days to {output_dir} "
               f"({', '.join(f'{k}: {v}' for k, v in sorted(types.items()))}); "
               f"run it with --config {config_file}")
    if utility_dir is not None:
        utility_config = export_as_utility(output_dir, utility_dir, seed=seed)
        click.echo(f"wrote the same population as a utility export to {utility_dir}; "
                   f"run it with --config {utility_config}")
    if network_faults:
        n = labels["network_faults"]
        click.echo(f"network faults: {n['ct_ratio']} CT ratio changes, {n['clock_offset']} clock "
                   f"offsets, {n['scada_outage']} SCADA outages (transformers); "
                   f"{n['mismapped']} mismapped meters ({n['swap_pairs']} swaps)")


@main.command("config")
@click.option("--defaults", is_flag=True, required=True,
              help="Print configs/default.toml: every key, its default, unit and range.")
@_errors_to_exit
def config_command(defaults):
    """Print the default configuration, every key documented (a start for your own).

    \b
    Example:
      gridwatch config --defaults > /etc/gridwatch/gridwatch.toml
    """
    click.echo(_default_config_file().read_text(encoding="utf-8"), nl=False)


def _default_config_file():
    """``configs/default.toml``: shipped in the package, or in a source checkout."""
    from importlib import resources

    from gridwatch.errors import InputError

    try:
        shipped = resources.files("gridwatch.configs").joinpath("default.toml")
        if shipped.is_file():
            return shipped
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parent.parent / "configs" / "default.toml"
    if checkout.is_file():
        return checkout
    raise InputError("the default configuration is not installed", file=checkout,
                     hint="reinstall gridwatch (pip install .)")


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
