"""Case history: what happened to each flagged site from one run to the next.

Each nightly run records its flagged sites (meters from ``flags.csv``, assets
from ``transformers.csv``) in an embedded SQLite database. A *case* is one
site, identified by its site id (``meter_id`` or ``asset_id``). Its status is

``new``
    flagged in this run and not in the run before (first time, or again after
    it had cleared, or reopened after a closure/suppression because its load
    changed materially);
``ongoing``
    flagged in this run and in an earlier run of the same episode;
``cleared``
    was ``new``/``ongoing`` but is no longer flagged (no longer anomalous);
``closed``
    an analyst recorded an inspection outcome (:data:`OUTCOMES`);
``suppressed``
    an analyst keeps a known legitimate load out of the flagged list, for good
    or until a date.

A site closed as ``legitimate_load``, or suppressed until a date on or after
the run's as-of date (or with no end date), is *not re-flagged*: the table
:meth:`CaseStore.record_run` returns says ``flagged = False`` with the reason
in ``note``, and the pipeline turns the site's flag off. The exception is a
material change of load: when ``excess_kw`` differs from the level recorded
at closure/suppression by more than ``reopen_rel_change`` (50 %) *and* at
least ``reopen_min_kw`` (0.5 kW), the case reopens as ``new``. Sites closed
with another outcome stay ``closed`` and keep their flag.

Where the database lives
------------------------
A history belongs to one output (issue 14, item 5), never to a directory that
several outputs share (:func:`locate_history`):

* ``--output-root ROOT``: ``ROOT/state/cases.sqlite``, shared by the nights
  ``ROOT/<as-of>/`` of that root;
* ``--output OUT_DIR``: ``.OUT_DIR.state/cases.sqlite`` beside ``OUT_DIR``
  (:func:`default_db_path`), like its lock ``.OUT_DIR.lock``;
* ``cases.database`` in the config: that file, for whichever output uses it.

Earlier versions kept ``<parent of OUT_DIR>/state/cases.sqlite`` for every
``OUT_DIR`` in that parent. A run finding such a file and no history of its
own copies it (the old file stays) when ``OUT_DIR`` was published before and
is the only published output in that parent; refuses (exit 3) when siblings
were published too, as the old file mixes their cases; and starts a new
history, saying so, when ``OUT_DIR`` is new (:func:`open_history`).

A database is never created silently where one was expected (an output
published before): the run says so in ``data_quality.csv`` and the log. A
database that is empty (0 bytes), damaged, a directory or read-only stops
the run with :class:`CaseDatabaseError` (exit 3), naming the file and what
to do. New files are built aside and linked into place, so a zero-length
file is never one of ours.

Back-fills
----------
A night older than the newest recorded one (``--as-of`` an earlier day) is
recorded in its place in time (:meth:`CaseStore.record_run`): its events are
dated that night, ``first_seen``/``last_seen`` and the episode
(``opened``/``cleared_on``, hence ``new``/``ongoing``/``cleared``) are
recomputed from the nights each case was flagged on, and the statuses
returned for that night are those of that night (an analyst's closure or
suppression dated later does not apply to it). Events of the other nights
are kept as recorded: they are what those nights published.

Concurrency
-----------
Every public method opens its own short-lived connection (so a store may be
shared by threads and by processes), uses WAL journal mode and a busy timeout
(30 s by default), and does each write inside one ``BEGIN IMMEDIATE``
transaction: two runs, or a run and an analyst closing a case, are
serialised by SQLite and never see or leave a half-written state.

The schema version is kept in ``PRAGMA user_version``
(:data:`SCHEMA_VERSION`); a database written by a newer GridWatch is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gridwatch import columns as col
from gridwatch.errors import InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_DB_NAME = "cases.sqlite"
STATE_DIR_NAME = "state"
LATEST = "latest"  # the link to the newest night under an output root (gridwatch.publish)
_NIGHT = re.compile(r"\d{4}-\d{2}-\d{2}")

STATUSES = ("new", "ongoing", "cleared", "closed", "suppressed")
OUTCOMES = ("confirmed_mining", "legitimate_load", "meter_fault", "no_access")
SITE_KINDS = ("meter", "asset")
ASSET_KIND = "unexplained_load"  # the ``kind`` recorded for a flagged asset

#: Columns of the table :meth:`CaseStore.record_run` returns.
RUN_STATUS_COLUMNS = (
    "case_id",
    "site_kind",
    "status",
    "flagged",
    "excess_kw",
    "first_seen",
    "last_seen",
    "n_events",
    "note",
)

_SCHEMA = """
CREATE TABLE cases (
    case_id            TEXT PRIMARY KEY,
    site_kind          TEXT NOT NULL CHECK (site_kind IN ('meter', 'asset')),
    transformer_id     TEXT,
    status             TEXT NOT NULL
                       CHECK (status IN ('new', 'ongoing', 'cleared', 'closed', 'suppressed')),
    note               TEXT NOT NULL DEFAULT '',
    first_seen         TEXT NOT NULL,   -- as-of date first flagged [YYYY-MM-DD]
    last_seen          TEXT NOT NULL,   -- as-of date last flagged
    opened             TEXT NOT NULL,   -- as-of date the current episode began
    cleared_on         TEXT,            -- as-of date of the run that cleared it
    last_flag_run      INTEGER REFERENCES runs (run_id),
    onset              TEXT,
    excess_kw          REAL,            -- latest flagged level [kW]
    kind               TEXT,
    suppressed_until   TEXT,            -- NULL with status 'suppressed': no end date
    suppression_reason TEXT,
    suppressed_on      TEXT,
    suppressed_kw      REAL,            -- level at suppression [kW]
    outcome            TEXT CHECK (outcome IS NULL OR outcome IN
                       ('confirmed_mining', 'legitimate_load', 'meter_fault', 'no_access')),
    outcome_note       TEXT,
    outcome_date       TEXT,
    closed_kw          REAL,            -- level at closure [kW]
    updated_utc        TEXT NOT NULL
);
CREATE TABLE runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    as_of       TEXT NOT NULL UNIQUE,
    created_utc TEXT NOT NULL,
    updated_utc TEXT NOT NULL,
    n_flagged   INTEGER NOT NULL,       -- sites flagged by the detector
    n_withheld  INTEGER NOT NULL        -- of which not re-flagged (closed/suppressed)
);
CREATE TABLE events (
    event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id     TEXT NOT NULL REFERENCES cases (case_id),
    run_id      INTEGER REFERENCES runs (run_id),
    as_of       TEXT,                   -- run as-of date, or the analyst's date
    event       TEXT NOT NULL,          -- 'run', 'close', 'suppress'
    details     TEXT NOT NULL,          -- JSON
    created_utc TEXT NOT NULL
);
CREATE UNIQUE INDEX events_one_per_run ON events (case_id, as_of) WHERE event = 'run';
CREATE INDEX events_case ON events (case_id, event_id);
CREATE INDEX cases_status ON cases (status);
"""


class CaseDatabaseError(InputError):
    """The case database cannot be used (exit code 3).

    Missing where it must exist, empty, damaged, a directory, read-only, or
    shared by several outputs.
    """


def default_db_path(output_dir) -> Path:
    """Return the history of a run writing to ``--output OUT_DIR``.

    Parameters
    ----------
    output_dir : str or os.PathLike
        The run's output directory (``OUT_DIR``).

    Returns
    -------
    pathlib.Path
        ``<parent of OUT_DIR>/.<name of OUT_DIR>.state/cases.sqlite``: beside
        ``OUT_DIR``, outside it (a run replaces ``OUT_DIR`` as a whole), and
        its own, not shared with the other outputs of that parent.
    """
    out = Path(output_dir).expanduser().absolute()
    return out.parent / f".{out.name}.{STATE_DIR_NAME}" / DEFAULT_DB_NAME


def legacy_db_path(output_dir) -> Path:
    """The history earlier versions kept for ``OUT_DIR``: ``<parent>/state/cases.sqlite``."""
    return Path(output_dir).expanduser().absolute().parent / STATE_DIR_NAME / DEFAULT_DB_NAME


def root_db_path(output_root) -> Path:
    """The history of the nights under an output root: ``ROOT/state/cases.sqlite``."""
    return Path(output_root).expanduser().absolute() / STATE_DIR_NAME / DEFAULT_DB_NAME


def published_nights(output_root) -> list[str]:
    """The as-of days published under an output root (``ROOT/YYYY-MM-DD/run.json``), oldest first."""
    root = Path(output_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if _NIGHT.fullmatch(p.name) and (p / "run.json").is_file())


@dataclass(frozen=True)
class HistoryLocation:
    """Where one output's case history is, and what the run should find there.

    Attributes
    ----------
    path : pathlib.Path
        The database file.
    expected : bool
        An earlier run of this output was published, so a history should exist.
    output_dir : pathlib.Path or None
        ``OUT_DIR`` of an ``--output`` run without a configured database
        (the only kind of output an old shared history can belong to).
    """

    path: Path
    expected: bool = False
    output_dir: Path | None = None

    @property
    def legacy_path(self) -> Path | None:
        """The old shared history beside ``OUT_DIR``, if this location may inherit it."""
        return None if self.output_dir is None else legacy_db_path(self.output_dir)


def locate_history(output_dir=None, *, output_root=None, database="") -> HistoryLocation:
    """The case history of the output a run publishes to.

    Parameters
    ----------
    output_dir : str or os.PathLike, optional
        ``--output OUT_DIR`` (wins over ``output_root``).
    output_root : str or os.PathLike, optional
        ``--output-root ROOT``.
    database : str or os.PathLike, optional
        ``cases.database`` of the config; wins when given.

    Returns
    -------
    HistoryLocation
    """
    if output_dir:
        out = Path(output_dir).expanduser().absolute()
        path, expected = default_db_path(out), (out / "run.json").is_file()
    elif output_root:
        root = Path(output_root).expanduser().absolute()
        path = root_db_path(root)
        expected = (root / LATEST).is_symlink() or bool(published_nights(root))
        out = None
    else:
        raise ValueError("locate_history needs output_dir or output_root")
    if database:
        return HistoryLocation(Path(database).expanduser(), expected=expected)
    return HistoryLocation(path, expected=expected, output_dir=out if output_dir else None)


def history_for_output(output, *, database="") -> Path:
    """The history ``gridwatch cases --output DIR`` reads; never creates anything.

    ``DIR`` may be an output root (it holds a ``latest`` link), one night
    under a root (``ROOT/2024-05-01`` or ``ROOT/latest``) or an ``OUT_DIR``.

    Raises
    ------
    CaseDatabaseError
        ``DIR`` does not exist, or only the old shared history exists for it.
    """
    given = Path(output).expanduser()
    if not given.is_dir():
        raise CaseDatabaseError("no such output directory", file=given,
                                hint="pass the --output or --output-root of the runs, or --db FILE")
    if database:
        return Path(database).expanduser()
    if (given / LATEST).is_symlink():
        return root_db_path(given)
    night = given.resolve()
    if _NIGHT.fullmatch(night.name) and (night.parent / LATEST).is_symlink():
        return root_db_path(night.parent)
    path, legacy = default_db_path(given), legacy_db_path(given)
    if not path.exists() and legacy.is_file():
        raise CaseDatabaseError(
            f"no case history of its own yet (it is at {path} since GridWatch keeps one "
            "history per output)", file=given,
            hint=f"the old shared history is {legacy}: pass --db {legacy}, or run "
                 "gridwatch run on this output once to migrate it")
    return path


def _sibling_outputs(out: Path) -> list[str]:
    """Other published outputs (directories with a ``run.json``) beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name != out.name and p.is_dir() and (p / "run.json").is_file())


def open_history(location: HistoryLocation, *, timeout_s: float = 30.0):
    """Open (or create, migrate) a run's case history; say what was done.

    Parameters
    ----------
    location : HistoryLocation
    timeout_s : float, default 30
        See :class:`CaseStore`.

    Returns
    -------
    store : CaseStore
    notes : list of (str, str)
        ``(issue code, detail)`` for ``data_quality.csv``:
        ``cases.history_created`` when a new history was started where one
        was expected, or beside an old shared one it does not inherit;
        ``cases.history_migrated`` when the old shared history was copied.

    Raises
    ------
    CaseDatabaseError
        The database cannot be used (see :class:`CaseStore`), or the old
        shared history beside ``OUT_DIR`` was written by several outputs.

    Notes
    -----
    Migration rule (issue 14, item 5): with no history at ``location.path``
    and an old ``<parent>/state/cases.sqlite``, a published ``OUT_DIR`` (it
    has a ``run.json``) that is the only published output of its parent
    inherits a copy (the old file is kept, unused); with published siblings
    the run is refused, since the file mixes their cases; a new ``OUT_DIR``
    starts its own history.
    """
    path, legacy, notes = location.path, location.legacy_path, []
    if not path.exists() and not path.is_symlink() and legacy is not None and legacy.is_file():
        out = location.output_dir
        if (out / "run.json").is_file():
            siblings = _sibling_outputs(out)
            if siblings:
                raise CaseDatabaseError(
                    f"is the case history that {out.name} shared with {', '.join(siblings)} "
                    "under the old layout, which keeps one history per output", file=legacy,
                    hint=f"copy it to {path} if it belongs to {out.name} (or set "
                         "cases.database), then rerun")
            store = CaseStore(legacy, timeout_s=timeout_s, create=False)
            store.copy_to(path)
            notes.append(("cases.history_migrated",
                          f"copied the case history from {legacy} (the old shared place) to "
                          f"{path}; the old file is kept and no longer used"))
        else:
            notes.append(("cases.history_created",
                          f"started a new case history at {path}; {legacy} belongs to the "
                          "outputs run there before and was not used"))
    elif not path.exists() and location.expected:
        notes.append(("cases.history_created",
                      f"no case history at {path} although this output was published before; "
                      "a new one was started (its cases show as new; restore the old file from "
                      "a backup to keep their history)"))
    for _, detail in notes:
        log.warning("%s", detail)
    return CaseStore(path, timeout_s=timeout_s), notes


def episode(flagged_nights, nights) -> dict:
    """A case's episode fields from the nights it was flagged on.

    Parameters
    ----------
    flagged_nights : collection of str
        Nights (``YYYY-MM-DD``) the detector flagged the site on; not empty.
    nights : sequence of str
        Every recorded night, oldest first (``flagged_nights`` among them).

    Returns
    -------
    dict
        ``first_seen``, ``last_seen``; ``opened``: the first night of the
        unbroken run of flagged nights that ends at ``last_seen``;
        ``cleared_on``: the first recorded night after ``last_seen`` (None
        when ``last_seen`` is the newest night).

    Examples
    --------
    >>> episode({"05-01", "05-03", "05-04"}, ["05-01", "05-02", "05-03", "05-04", "05-05"])
    {'first_seen': '05-01', 'last_seen': '05-04', 'opened': '05-03', 'cleared_on': '05-05'}
    """
    flagged = set(flagged_nights)
    last = max(flagged)
    i = list(nights).index(last)
    j = i
    while j > 0 and nights[j - 1] in flagged:
        j -= 1
    return {"first_seen": min(flagged), "last_seen": last, "opened": nights[j],
            "cleared_on": nights[i + 1] if i + 1 < len(nights) else None}


_DB_HINTS = (
    ("readonly", "is read-only", "make it and its directory writable by the user running "
     "gridwatch"),
    ("unable to open", "cannot be opened", "check that it and its directory exist and are "
     "writable by the user running gridwatch"),
    ("malformed", "is damaged (database disk image is malformed)", "restore it from a backup, "
     "or move it aside to start a new history"),
    ("not a database", "is not an SQLite database", "restore it from a backup, or move it aside "
     "to start a new history"),
)


def _database_error(exc: BaseException, path) -> CaseDatabaseError | None:
    """The :class:`CaseDatabaseError` of an SQLite failure; None for a lock timeout."""
    cause = exc if isinstance(exc, sqlite3.DatabaseError) else exc.__cause__
    if not isinstance(cause, sqlite3.DatabaseError):
        return None
    text = str(cause)
    if "locked" in text or "busy" in text:
        return None
    for key, what, hint in _DB_HINTS:
        if key in text:
            return CaseDatabaseError(f"the case database {what}", file=path, hint=hint)
    return CaseDatabaseError(f"the case database cannot be used: {text}", file=path,
                             hint="check the file, or restore it from a backup")


@contextlib.contextmanager
def _translated(path):
    """Turn SQLite failures (not lock timeouts) into one-line :class:`CaseDatabaseError`."""
    try:
        yield
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        error = _database_error(exc, path)
        if error is None:
            raise
        raise error from exc


def _iso_date(value, what: str) -> str:
    """Normalise a date-like value to ``YYYY-MM-DD``."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from exc
    if pd.isna(ts):
        raise ValueError(f"{what} must be a date (YYYY-MM-DD), got {value!r}")
    return ts.strftime("%Y-%m-%d")


def _now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _float_or_none(value):
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _text_or_none(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    s = str(value)
    return s or None


def _is_flagged(series: pd.Series) -> pd.Series:
    """``flagged`` as written by outputs.py ("true"/"false") or as bool."""
    if series.dtype == bool:
        return series
    return series.astype("string").str.strip().str.lower().isin(["true", "1"]).fillna(False)


def materially_changed(excess_kw, reference_kw, *, rel_change=0.5, min_kw=0.5) -> bool:
    """Whether a load differs materially from the level recorded earlier.

    Parameters
    ----------
    excess_kw : float
        Today's flagged level [kW].
    reference_kw : float
        The level recorded at closure or suppression [kW].
    rel_change : float, default 0.5
        Relative change that counts, as a fraction of ``reference_kw``.
    min_kw : float, default 0.5
        Absolute change that counts at least [kW].

    Returns
    -------
    bool
        ``|excess_kw - reference_kw| > rel_change * |reference_kw|`` and
        ``>= min_kw``. False when either level is unknown (NaN/None): the
        earlier decision stands until a comparable level is recorded.
    """
    x, ref = _float_or_none(excess_kw), _float_or_none(reference_kw)
    if x is None or ref is None:
        return False
    diff = abs(x - ref)
    return diff > rel_change * abs(ref) and diff >= min_kw


def _sites(flags: pd.DataFrame | None, transformers: pd.DataFrame | None) -> list[dict]:
    """The flagged sites of a run, meters then assets, as plain dicts."""
    out: list[dict] = []
    if flags is not None and len(flags):
        missing = {col.METER_ID, col.FLAGGED} - set(flags.columns)
        if missing:
            raise InputError(f"flags table lacks column(s) {sorted(missing)}", file="flags.csv")
        f = flags[_is_flagged(flags[col.FLAGGED]).to_numpy(dtype=bool)]
        for row in f.to_dict("records"):
            out.append({
                "case_id": str(row[col.METER_ID]),
                "site_kind": "meter",
                "transformer_id": _text_or_none(row.get(col.TRANSFORMER_ID)),
                "excess_kw": _float_or_none(row.get(col.EXCESS_KW)),
                "onset": _text_or_none(row.get(col.ONSET)),
                "kind": _text_or_none(row.get(col.KIND)),
            })
    if transformers is not None and len(transformers):
        missing = {col.ASSET_ID, col.FLAGGED} - set(transformers.columns)
        if missing:
            raise InputError(
                f"transformers table lacks column(s) {sorted(missing)}", file="transformers.csv"
            )
        t = transformers[_is_flagged(transformers[col.FLAGGED]).to_numpy(dtype=bool)]
        for row in t.to_dict("records"):
            out.append({
                "case_id": str(row[col.ASSET_ID]),
                "site_kind": "asset",
                "transformer_id": None,
                "excess_kw": _float_or_none(row.get(col.UNEXPLAINED_KW)),
                "onset": _text_or_none(row.get(col.ONSET)),
                "kind": ASSET_KIND,
            })
    seen: dict[str, str] = {}
    for s in out:
        if s["case_id"] in seen:
            raise InputError(
                f"site id {s['case_id']!r} is flagged twice in one run "
                f"(as {seen[s['case_id']]} and as {s['site_kind']})",
                hint="meter and asset ids must be distinct for case history",
            )
        seen[s["case_id"]] = s["site_kind"]
    return out


def _withheld_on(case: dict, as_of: str) -> bool:
    """Whether a closure as legitimate or a suppression dated on or before ``as_of`` holds then."""
    if case["status"] == "closed":
        return (case["outcome"] == "legitimate_load" and case["outcome_date"] is not None
                and case["outcome_date"] <= as_of)
    if case["status"] == "suppressed":
        until = case["suppressed_until"]
        return (case["suppressed_on"] is not None and case["suppressed_on"] <= as_of
                and (until is None or until >= as_of))
    return False


def _status_then(case, site, as_of, flagged_before, rel, min_kw) -> tuple[str, bool, str]:
    """Status, kept flag and note of a site flagged on a back-filled night.

    ``new`` or ``ongoing`` after the nearest earlier recorded night
    (``flagged_before``); an analyst's closure or suppression counts only
    when dated on or before ``as_of``, with the rules of
    :meth:`CaseStore.record_run` (withheld unless the load changed
    materially; another outcome stays ``closed`` and keeps its flag).
    """
    if case is None:
        return "new", True, "first flagged"
    level = site["excess_kw"]
    if case["status"] == "closed" and (case["outcome_date"] or "9999") <= as_of:
        when = case["outcome_date"]
        if case["outcome"] != "legitimate_load":
            return "closed", True, f"closed as {case['outcome']} on {when}; flagged again"
        if materially_changed(level, case["closed_kw"], rel_change=rel, min_kw=min_kw):
            return "new", True, (f"reopened: load {level:.2f} kW differs materially from "
                                 f"{case['closed_kw']:.2f} kW at closure as legitimate_load "
                                 f"on {when}")
        return "closed", False, (f"not re-flagged: closed as legitimate_load on {when}"
                                 + (f" ({case['outcome_note']})" if case["outcome_note"] else ""))
    if _withheld_on(case, as_of):  # suppressed then
        if materially_changed(level, case["suppressed_kw"], rel_change=rel, min_kw=min_kw):
            return "new", True, (f"reopened: load {level:.2f} kW differs materially from "
                                 f"{case['suppressed_kw']:.2f} kW at suppression on "
                                 f"{case['suppressed_on']}")
        until = case["suppressed_until"]
        return "suppressed", False, (
            f"not re-flagged: suppressed {'until ' + until if until else 'with no end date'}"
            f" ({case['suppression_reason']})")
    return ("ongoing" if flagged_before else "new"), True, ""


@dataclass
class PendingRun:
    """A night's case statuses, computed but not recorded until :meth:`commit`.

    Attributes
    ----------
    store : CaseStore
    as_of : str
    flags, transformers : pandas.DataFrame or None
        The tables given to :meth:`CaseStore.prepare_run`.
    options : dict
        Its keyword arguments (the reopening thresholds).
    table : pandas.DataFrame
        The statuses as computed then (what the night's outputs show).
    """

    store: CaseStore
    as_of: str
    flags: pd.DataFrame | None
    transformers: pd.DataFrame | None
    options: dict = field(default_factory=dict)
    table: pd.DataFrame | None = None

    def commit(self) -> pd.DataFrame:
        """Record the night; returns :meth:`CaseStore.record_run`'s table.

        Statuses that differ from :attr:`table` (an analyst closed or
        suppressed a case while the outputs were written) are logged: the
        history records the night as it is now, the outputs show it as it was.
        """
        table = self.store.record_run(self.as_of, self.flags, self.transformers, **self.options)
        if self.table is not None:
            key = ["case_id", "status", "flagged"]
            before = set(map(tuple, self.table[key].to_numpy().tolist()))
            after = set(map(tuple, table[key].to_numpy().tolist()))
            changed = sorted({row[0] for row in before ^ after})
            if changed:
                log.warning("case history of %s changed while its outputs were written (%s); "
                            "recorded as it is now", self.as_of, ", ".join(changed[:10]))
        return table


class CaseStore:
    """The case-history database.

    Parameters
    ----------
    path : str or os.PathLike
        The SQLite file; created (with its parent directories) if missing.
        By convention :func:`locate_history` of the output.
    timeout_s : float, default 30
        How long a writer waits for another writer's transaction [s] before
        ``sqlite3.OperationalError: database is locked``.
    create : bool, default True
        Create a missing file; False (the ``cases`` commands): a missing
        file is an error.

    Raises
    ------
    CaseDatabaseError
        The file is missing (``create=False``), empty (0 bytes), a
        directory, damaged, read-only, not a GridWatch case database, or of
        a newer schema; every SQLite failure later (but a lock timeout) too.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> store = CaseStore(Path(tempfile.mkdtemp()) / "state" / "cases.sqlite")
    >>> flags = pd.DataFrame({"meter_id": ["M-1"], "flagged": ["true"], "excess_kw": [2.0]})
    >>> store.record_run("2024-05-01", flags, None)[["case_id", "status", "flagged"]]
      case_id status  flagged
    0     M-1    new     True
    """

    def __init__(self, path, *, timeout_s: float = 30.0, create: bool = True):
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        if self.path.is_dir():
            raise CaseDatabaseError("is a directory, not a case database", file=self.path,
                                    hint="remove it, or point cases.database at a file")
        if not self.path.exists():
            if not create:
                raise CaseDatabaseError(
                    "no case history here", file=self.path,
                    hint="check the path; a history appears with the first gridwatch run "
                         "on that output")
            self._create()
        elif self.path.stat().st_size == 0:
            raise CaseDatabaseError(
                "is empty (0 bytes): the case history it held is lost", file=self.path,
                hint="restore it from a backup, or delete it to start a new history")
        with _translated(self.path):
            self._init_schema()

    # --- connection and transactions -------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        con.execute("PRAGMA foreign_keys = ON")
        return con

    @contextlib.contextmanager
    def _read(self):
        with _translated(self.path):
            con = self._connect()
            try:
                yield con
            finally:
                con.close()

    @contextlib.contextmanager
    def _write(self, *, commit: bool = True):
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back.

        ``commit=False`` rolls back a successful block too (a dry run).
        """
        with _translated(self.path):
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT" if commit else "ROLLBACK")
            finally:
                con.close()

    def _create(self) -> None:
        """Build a new database aside and link it into place (never a 0-byte file at ``path``).

        When several processes create the same file at once, the first link
        wins and the others use it.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new",
                                       dir=self.path.parent)
        except OSError as exc:
            raise CaseDatabaseError(f"cannot be created: {exc.strerror}", file=self.path,
                                    hint="check that its directory is writable by the user "
                                         "running gridwatch, or set cases.database") from exc
        os.close(fd)
        try:
            with _translated(self.path):
                con = sqlite3.connect(tmp, isolation_level=None)
                try:
                    con.execute("PRAGMA journal_mode = WAL")
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                finally:
                    con.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; analysts close cases too
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use that one
            except OSError:  # a file system without hard links
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def copy_to(self, path) -> CaseStore:
        """Copy the whole history, consistently, to a new file ``path`` (made like a new one).

        Returns
        -------
        CaseStore
            The copy.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.copy")
        with self._read() as con:
            target = sqlite3.connect(tmp)
            try:
                con.backup(target)
            finally:
                target.close()
        os.replace(tmp, path)
        return CaseStore(path, timeout_s=self.timeout_s)

    def _ensure_wal(self, con: sqlite3.Connection) -> None:
        """Switch the file to WAL journal mode (persistent: done once per file).

        Changing the journal mode does not wait on SQLite's busy handler, so
        when several processes open a new file at once the switch is retried
        here until ``timeout_s``.
        """
        deadline = time.monotonic() + self.timeout_s
        delay = 0.005
        while True:
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                    return
                con.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _init_schema(self) -> None:
        con = self._connect()
        try:
            self._ensure_wal(con)
            con.execute("BEGIN IMMEDIATE")
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    tables = con.execute(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                    ).fetchone()[0]
                    if tables:
                        raise CaseDatabaseError(
                            "has tables but no GridWatch schema version", file=self.path,
                            hint="point the case database at a new file",
                        )
                    # Statement by statement: executescript() would COMMIT first.
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise CaseDatabaseError(
                        f"case database schema version {version} is newer than this "
                        f"GridWatch's ({SCHEMA_VERSION})", file=self.path,
                        hint="upgrade GridWatch",
                    )
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # --- runs -------------------------------------------------------------------------
    def record_run(
        self,
        as_of,
        flags: pd.DataFrame | None,
        transformers: pd.DataFrame | None = None,
        *,
        reopen_rel_change: float = 0.5,
        reopen_min_kw: float = 0.5,
        dry_run: bool = False,
    ) -> pd.DataFrame:
        """Record a run's flagged sites and return each site's case status.

        Parameters
        ----------
        as_of : date-like
            The run's as-of date (last local day analysed).
        flags : pandas.DataFrame or None
            ``flags.csv`` rows (columns :data:`gridwatch.columns.FLAGS_COLUMNS`;
            at least ``meter_id`` and ``flagged``, "true"/"false" or bool).
        transformers : pandas.DataFrame or None
            ``transformers.csv`` rows (at least ``asset_id`` and ``flagged``;
            ``unexplained_kw`` is the asset's level [kW]).
        reopen_rel_change : float, default 0.5
            A closed-as-legitimate or suppressed site reopens when its
            ``excess_kw`` differs from the level at closure/suppression by more
            than this fraction of that level ...
        reopen_min_kw : float, default 0.5
            ... and by at least this much [kW].
        dry_run : bool, default False
            Compute the statuses in the same transaction and roll it back:
            nothing is recorded (:meth:`prepare_run`).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`RUN_STATUS_COLUMNS`, one row per site flagged in
            this run plus one per case this run cleared. ``flagged`` is the
            flag after case history: False for a site closed as
            ``legitimate_load`` or suppressed (``note`` says why), and for
            cleared cases. ``n_events`` counts the case's history events.

        Raises
        ------
        gridwatch.errors.InputError
            A table lacks its id/flag column, or an id is both a meter and an asset.
        CaseDatabaseError
            The database cannot be used.

        Notes
        -----
        Rules (issue 4), for a site flagged on ``as_of``: no case -> ``new``;
        ``new``/``ongoing`` -> ``ongoing`` (``new`` while the episode began on
        this as-of); ``cleared`` -> ``new`` (a new episode); ``closed`` ->
        stays ``closed``, flag withheld if the outcome is ``legitimate_load``;
        ``suppressed`` with no end date or ``suppressed_until >= as_of`` ->
        stays ``suppressed``, flag withheld; expired suppression ->
        ``ongoing``. A withheld site whose load changed materially
        (:func:`materially_changed`) reopens as ``new``. A ``new``/``ongoing``
        case not flagged -> ``cleared``; an expired suppression not flagged
        -> ``cleared``. Re-running any recorded as-of is idempotent.

        An ``as_of`` earlier than the newest recorded run is a back-fill
        (issue 14, item 4), recorded in its place in time: see
        :meth:`_record_backfill`.
        """
        as_of = _iso_date(as_of, "as_of")
        sites = _sites(flags, transformers)
        now = _now_utc()
        with self._write(commit=not dry_run) as con:
            latest = con.execute("SELECT max(as_of) FROM runs").fetchone()[0]
            con.execute(
                "INSERT INTO runs (as_of, created_utc, updated_utc, n_flagged, n_withheld) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT (as_of) DO UPDATE SET "
                "updated_utc = excluded.updated_utc, n_flagged = excluded.n_flagged",
                (as_of, now, now, len(sites)),
            )
            run_id = con.execute("SELECT run_id FROM runs WHERE as_of = ?", (as_of,)).fetchone()[0]
            cases = {r["case_id"]: dict(r) for r in con.execute("SELECT * FROM cases")}
            flagged_ids = {site["case_id"] for site in sites}
            if latest is not None and as_of < latest:
                results = self._record_backfill(con, cases, sites, as_of, run_id, now,
                                                reopen_rel_change, reopen_min_kw)
            else:
                results = self._record_newest(con, cases, sites, as_of, run_id, now,
                                              reopen_rel_change, reopen_min_kw)
            n_withheld = sum(
                1 for r in results if r["case_id"] in flagged_ids and not r["flagged"]
            )
            con.execute("UPDATE runs SET n_withheld = ? WHERE run_id = ?", (n_withheld, run_id))
            counts = dict(con.execute(
                "SELECT case_id, count(*) FROM events GROUP BY case_id"
            ).fetchall())
        for r in results:
            r["n_events"] = int(counts.get(r["case_id"], 0))
        table = pd.DataFrame(results, columns=list(RUN_STATUS_COLUMNS))
        table["flagged"] = table["flagged"].astype(bool)
        table["n_events"] = table["n_events"].astype("int64")
        table["excess_kw"] = table["excess_kw"].astype(float)
        return table

    def prepare_run(self, as_of, flags, transformers=None, **options) -> PendingRun:
        """The statuses a run would get, to be recorded once its outputs are published.

        Parameters
        ----------
        as_of, flags, transformers, **options
            As for :meth:`record_run`.

        Returns
        -------
        PendingRun
            ``table``: what :meth:`record_run` returns now, recorded by
            nothing; ``commit()`` records the night (issue 14, item 3: the
            history never runs ahead of what was published).
        """
        table = self.record_run(as_of, flags, transformers, dry_run=True, **options)
        return PendingRun(self, _iso_date(as_of, "as_of"), flags, transformers, options, table)

    def _record_newest(self, con, cases, sites, as_of, run_id, now, reopen_rel_change,
                       reopen_min_kw) -> list[dict]:
        """Record the newest night (or a re-run of it): the rules of :meth:`record_run`."""
        flagged_ids = set()
        results: list[dict] = []
        for site in sites:
            flagged_ids.add(site["case_id"])
            case = cases.get(site["case_id"])
            new_case, keep_flag = self._apply_flagged(
                case, site, as_of, run_id, now, reopen_rel_change, reopen_min_kw
            )
            results.append(self._save(con, case, new_case, keep_flag, run_id, as_of, now))
        for case in cases.values():
            if case["case_id"] in flagged_ids:
                continue
            new_case = self._apply_not_flagged(case, as_of, now)
            if new_case is not None:
                results.append(self._save(con, case, new_case, False, run_id, as_of, now))
        return results

    def _record_backfill(self, con, cases, sites, as_of, run_id, now, rel, min_kw) -> list[dict]:
        """Record a night older than the newest one in its place in time (issue 14, item 4).

        The night's events replace any it had (a re-run of it is
        idempotent). Each site flagged on it gets the status it had then
        (:func:`_status_then`); a case flagged on the nearest earlier
        recorded night and not on this one is ``cleared`` on it. Then every
        case the night touches has ``first_seen``/``last_seen`` spanning all
        its flagged nights and, unless closed or suppressed, its episode and
        status recomputed (:func:`episode`): a site flagged only on the
        back-filled night is ``cleared`` on the next recorded night.
        """
        nights = [r[0] for r in con.execute("SELECT as_of FROM runs ORDER BY as_of")]
        i = nights.index(as_of)
        before = nights[i - 1] if i else None
        con.execute("DELETE FROM events WHERE event = 'run' AND as_of = ?", (as_of,))
        flagged_on: dict[str, set] = {}
        for case_id, night in con.execute(
                "SELECT case_id, as_of FROM events WHERE event = 'run' "
                "AND json_extract(details, '$.status') != 'cleared'"):
            flagged_on.setdefault(case_id, set()).add(night)
        touched = {cid for cid, c in cases.items()
                   if c["status"] in ("new", "ongoing", "cleared") and c["opened"] <= as_of
                   and (c["cleared_on"] is None or as_of < c["cleared_on"])}
        results, inserted, levels = [], set(), {}
        for site in sites:
            cid = site["case_id"]
            case = cases.get(cid)
            if case is not None and case["site_kind"] != site["site_kind"]:
                raise InputError(
                    f"site id {cid!r} is flagged as {site['site_kind']} but its case is a "
                    f"{case['site_kind']}", hint="meter and asset ids must be distinct for case "
                    "history")
            status, keep, note = _status_then(case, site, as_of,
                                              before in flagged_on.get(cid, ()), rel, min_kw)
            if status == "new" and not note and not any(
                    night < as_of for night in flagged_on.get(cid, ())):
                note = "first flagged"
            flagged_on.setdefault(cid, set()).add(as_of)
            levels[cid] = {"transformer_id": site["transformer_id"], "onset": site["onset"],
                           "excess_kw": site["excess_kw"], "kind": site["kind"],
                           "last_flag_run": run_id}
            if case is None:
                case = {"case_id": cid, "site_kind": site["site_kind"], "status": "cleared",
                        "note": "", "first_seen": as_of, "last_seen": as_of, "opened": as_of,
                        "cleared_on": None, **levels[cid], "updated_utc": now}
                names = list(case)
                con.execute(f"INSERT INTO cases ({', '.join(names)}) VALUES "
                            f"({', '.join('?' * len(names))})", [case[n] for n in names])
                cases[cid] = case
                inserted.add(cid)
            touched.add(cid)
            results.append(self._backfill_event(con, case, status, keep, site["excess_kw"],
                                                site["onset"], site["kind"], note, run_id,
                                                as_of, now))
        for cid, case in cases.items():
            if (before is None or cid in levels or before not in flagged_on.get(cid, ())
                    or _withheld_on(case, as_of)):
                continue
            note = f"not flagged on {as_of}; last flagged on {before}"
            results.append(self._backfill_event(con, case, "cleared", False, case["excess_kw"],
                                                case["onset"], case["kind"], note, run_id,
                                                as_of, now))
        newest = nights[-1]
        for cid in touched:
            case, flagged = cases[cid], flagged_on.get(cid)
            if not flagged:
                continue
            ep = episode(flagged, nights)
            c = dict(case, first_seen=ep["first_seen"], last_seen=ep["last_seen"])
            if case["status"] in ("new", "ongoing", "cleared"):
                c.update(opened=ep["opened"], cleared_on=ep["cleared_on"],
                         status="cleared" if ep["cleared_on"] else
                         "new" if ep["opened"] == newest else "ongoing")
            if cid in inserted:
                c["note"] = f"flagged on the back-filled night {as_of}; not on {ep['cleared_on']}"
            elif c["status"] != case["status"]:
                c["note"] = f"history back-filled with {as_of}"
            if cid in levels and ep["last_seen"] == as_of:
                c.update(levels[cid])
            names = [n for n in c if c[n] != case.get(n)]
            if names:
                c["updated_utc"] = now
                names.append("updated_utc")
                con.execute(f"UPDATE cases SET {', '.join(f'{n} = ?' for n in names)} "
                            "WHERE case_id = ?", [c[n] for n in names] + [cid])
            cases[cid] = c
        for r in results:
            r.update(first_seen=cases[r["case_id"]]["first_seen"],
                     last_seen=cases[r["case_id"]]["last_seen"])
        return results

    @staticmethod
    def _backfill_event(con, case, status, keep, excess_kw, onset, kind, note, run_id, as_of,
                        now) -> dict:
        """Write the back-filled night's event of one case; return its status row."""
        details = {"status": status, "flagged": bool(keep), "excess_kw": excess_kw,
                   "onset": onset, "kind": kind, "note": note}
        con.execute(
            "INSERT INTO events (case_id, run_id, as_of, event, details, created_utc) "
            "VALUES (?, ?, ?, 'run', ?, ?)",
            (case["case_id"], run_id, as_of, json.dumps(details), now),
        )
        return {"case_id": case["case_id"], "site_kind": case["site_kind"], "status": status,
                "flagged": bool(keep), "excess_kw": excess_kw, "note": note}

    @staticmethod
    def _apply_flagged(case, site, as_of, run_id, now, rel, min_kw):
        """New case row (dict) and whether the site keeps its flag."""
        fresh = {
            "transformer_id": site["transformer_id"],
            "onset": site["onset"],
            "excess_kw": site["excess_kw"],
            "kind": site["kind"],
            "last_seen": as_of,
            "last_flag_run": run_id,
            "updated_utc": now,
        }
        if case is None:
            return {
                "case_id": site["case_id"], "site_kind": site["site_kind"], "status": "new",
                "note": "first flagged", "first_seen": as_of, "opened": as_of,
                "cleared_on": None, **fresh,
            }, True
        c = dict(case)
        if c["site_kind"] != site["site_kind"]:
            raise InputError(
                f"site id {site['case_id']!r} is flagged as {site['site_kind']} but its "
                f"case is a {c['site_kind']}",
                hint="meter and asset ids must be distinct for case history",
            )
        already = c["last_seen"] == as_of  # a re-run of this as-of
        status = c["status"]

        def reopen(reference_kw, why):
            c.update(fresh, status="new", opened=as_of, cleared_on=None, note=(
                f"reopened: load {site['excess_kw']:.2f} kW differs materially from "
                f"{reference_kw:.2f} kW at {why}"
            ))
            return c, True

        if status in ("new", "ongoing"):
            if not already:
                c["note"] = ""
            c.update(fresh, status="new" if c["opened"] == as_of else "ongoing")
            return c, True
        if status == "cleared":
            if c["cleared_on"] == as_of:  # a re-run that flags it after all
                c.update(fresh, cleared_on=None,
                         status="new" if c["opened"] == as_of else "ongoing")
            else:
                c.update(fresh, status="new", opened=as_of, cleared_on=None,
                         note=f"flagged again; cleared on {c['cleared_on']}")
            return c, True
        if status == "closed":
            if c["outcome"] == "legitimate_load":
                if materially_changed(site["excess_kw"], c["closed_kw"], rel_change=rel,
                                      min_kw=min_kw):
                    return reopen(c["closed_kw"], f"closure as legitimate_load on "
                                  f"{c['outcome_date']}")
                c.update(fresh, note=(
                    f"not re-flagged: closed as legitimate_load on {c['outcome_date']}"
                    + (f" ({c['outcome_note']})" if c["outcome_note"] else "")
                ))
                return c, False
            c.update(fresh, note=f"closed as {c['outcome']} on {c['outcome_date']}; "
                     "flagged again")
            return c, True
        # suppressed
        until = c["suppressed_until"]
        if until is None or until >= as_of:
            if materially_changed(site["excess_kw"], c["suppressed_kw"], rel_change=rel,
                                  min_kw=min_kw):
                out = reopen(c["suppressed_kw"], f"suppression on {c['suppressed_on']}")
                c.update(suppressed_until=None, suppression_reason=None)
                return out
            c.update(fresh, note=(
                f"not re-flagged: suppressed {'until ' + until if until else 'with no end date'}"
                f" ({c['suppression_reason']})"
            ))
            return c, False
        c.update(fresh, status="ongoing", cleared_on=None,
                 note=f"suppression until {until} expired ({c['suppression_reason']})")
        if c["opened"] == as_of:
            c["status"] = "new"
        return c, True

    @staticmethod
    def _apply_not_flagged(case, as_of, now):
        """New case row for a case not flagged in this run, or None if unchanged."""
        c = dict(case)
        if c["status"] in ("new", "ongoing"):
            c.update(status="cleared", cleared_on=as_of, updated_utc=now,
                     note=f"not flagged on {as_of}; last flagged on {c['last_seen']}")
            return c
        if c["status"] == "cleared" and c["cleared_on"] == as_of:
            return c  # a re-run: report it again, unchanged
        if (c["status"] == "suppressed" and c["suppressed_until"] is not None
                and c["suppressed_until"] < as_of):
            c.update(status="cleared", cleared_on=as_of, updated_utc=now,
                     note=f"suppression until {c['suppressed_until']} expired; not flagged")
            return c
        return None

    @staticmethod
    def _save(con, old, c, keep_flag, run_id, as_of, now) -> dict:
        """Write case row ``c`` and its run event; return its status row."""
        if old is None:
            names = list(c)
            con.execute(
                f"INSERT INTO cases ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [c[n] for n in names],
            )
        elif c != old:
            names = [n for n in c if n != "case_id" and c[n] != old.get(n)]
            con.execute(
                f"UPDATE cases SET {', '.join(f'{n} = ?' for n in names)} WHERE case_id = ?",
                [c[n] for n in names] + [c["case_id"]],
            )
        details = {
            "status": c["status"], "flagged": bool(keep_flag), "excess_kw": c["excess_kw"],
            "onset": c["onset"], "kind": c["kind"], "note": c["note"],
        }
        con.execute(
            "INSERT INTO events (case_id, run_id, as_of, event, details, created_utc) "
            "VALUES (?, ?, ?, 'run', ?, ?) "
            "ON CONFLICT (case_id, as_of) WHERE event = 'run' DO UPDATE SET "
            "details = excluded.details, run_id = excluded.run_id",
            (c["case_id"], run_id, as_of, json.dumps(details), now),
        )
        return {
            "case_id": c["case_id"], "site_kind": c["site_kind"], "status": c["status"],
            "flagged": bool(keep_flag), "excess_kw": c["excess_kw"],
            "first_seen": c["first_seen"], "last_seen": c["last_seen"], "note": c["note"],
        }

    # --- analyst actions --------------------------------------------------------------
    @staticmethod
    def _get(con, case_id) -> dict:
        row = con.execute("SELECT * FROM cases WHERE case_id = ?", (str(case_id),)).fetchone()
        if row is None:
            raise InputError(
                f"unknown case {case_id!r}",
                hint="list the cases with `gridwatch cases list`",
            )
        return dict(row)

    def close(self, case_id, outcome: str, note: str = "", date=None) -> dict:
        """Close a case with an inspection outcome.

        Parameters
        ----------
        case_id : str
            The site id (``meter_id`` or ``asset_id``).
        outcome : {"confirmed_mining", "legitimate_load", "meter_fault", "no_access"}
            What the inspection found.
        note : str, optional
            Free text for the record.
        date : date-like, optional
            Date of the inspection; today (UTC) by default.

        Returns
        -------
        dict
            The case row after closing. Its current ``excess_kw`` [kW] is
            recorded as ``closed_kw``, the level a later flag is compared with.

        Raises
        ------
        ValueError
            ``outcome`` is not one of :data:`OUTCOMES`.
        gridwatch.errors.InputError
            No case has this id.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome!r}")
        date = _iso_date(dt.date.today() if date is None else date, "date")
        now = _now_utc()
        with self._write() as con:
            c = self._get(con, case_id)
            con.execute(
                "UPDATE cases SET status = 'closed', outcome = ?, outcome_note = ?, "
                "outcome_date = ?, closed_kw = excess_kw, suppressed_until = NULL, "
                "suppression_reason = NULL, note = ?, updated_utc = ? WHERE case_id = ?",
                (outcome, note or "", date, f"closed as {outcome} on {date}", now, c["case_id"]),
            )
            self._event(con, c["case_id"], date, "close", {
                "outcome": outcome, "note": note or "", "excess_kw": c["excess_kw"],
                "previous_status": c["status"],
            }, now)
            return self._get(con, case_id)

    def suppress(self, case_id, reason: str, until=None) -> dict:
        """Keep a known legitimate load out of the flagged list.

        Parameters
        ----------
        case_id : str
            The site id.
        reason : str
            Why (shown in the report and in the run's ``note``).
        until : date-like, optional
            Last as-of date the suppression applies to; None: no end date.

        Returns
        -------
        dict
            The case row. Its current ``excess_kw`` [kW] is recorded as
            ``suppressed_kw``, the level a later flag is compared with.

        Raises
        ------
        ValueError
            ``reason`` is empty or ``until`` is not a date.
        gridwatch.errors.InputError
            No case has this id.
        """
        if not reason or not str(reason).strip():
            raise ValueError("a suppression needs a reason")
        until = None if until is None else _iso_date(until, "until")
        today = dt.date.today().isoformat()
        now = _now_utc()
        with self._write() as con:
            c = self._get(con, case_id)
            con.execute(
                "UPDATE cases SET status = 'suppressed', suppressed_until = ?, "
                "suppression_reason = ?, suppressed_on = ?, suppressed_kw = excess_kw, "
                "note = ?, updated_utc = ? WHERE case_id = ?",
                (until, str(reason), today,
                 f"suppressed {'until ' + until if until else 'with no end date'}",
                 now, c["case_id"]),
            )
            self._event(con, c["case_id"], today, "suppress", {
                "reason": str(reason), "until": until, "excess_kw": c["excess_kw"],
                "previous_status": c["status"],
            }, now)
            return self._get(con, case_id)

    @staticmethod
    def _event(con, case_id, as_of, event, details, now) -> None:
        con.execute(
            "INSERT INTO events (case_id, run_id, as_of, event, details, created_utc) "
            "VALUES (?, NULL, ?, ?, ?, ?)",
            (case_id, as_of, event, json.dumps(details), now),
        )

    # --- reading ----------------------------------------------------------------------
    def list_cases(self, status: str | None = None) -> pd.DataFrame:
        """All cases (or those with one status), most recently flagged first.

        Parameters
        ----------
        status : {"new", "ongoing", "cleared", "closed", "suppressed"}, optional

        Returns
        -------
        pandas.DataFrame
            One row per case, the ``cases`` table's columns plus ``n_events``.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        sql = (
            "SELECT c.*, (SELECT count(*) FROM events e WHERE e.case_id = c.case_id) "
            "AS n_events FROM cases c"
        )
        params: tuple = ()
        if status is not None:
            sql += " WHERE c.status = ?"
            params = (status,)
        sql += " ORDER BY c.last_seen DESC, c.case_id"
        with self._read() as con:
            return pd.read_sql_query(sql, con, params=params)

    def show(self, case_id) -> dict:
        """One case and its history.

        Returns
        -------
        dict
            The case row's fields plus ``events``: a list of dicts (``as_of``,
            ``event``, ``run_id``, ``details`` decoded from JSON,
            ``created_utc``), oldest first.

        Raises
        ------
        gridwatch.errors.InputError
            No case has this id.
        """
        with self._read() as con:
            case = self._get(con, case_id)
            case["events"] = [
                {**dict(r), "details": json.loads(r["details"])}
                for r in con.execute(
                    "SELECT event_id, run_id, as_of, event, details, created_utc "
                    "FROM events WHERE case_id = ? ORDER BY event_id",
                    (case["case_id"],),
                )
            ]
        return case

    def runs(self) -> pd.DataFrame:
        """The recorded runs, oldest first."""
        with self._read() as con:
            return pd.read_sql_query("SELECT * FROM runs ORDER BY as_of", con)
