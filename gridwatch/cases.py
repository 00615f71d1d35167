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
By convention the database is ``<output parent>/state/cases.sqlite``: a
``state`` directory beside the run's output directory, so that successive
nightly runs writing ``out/2024-05-01``, ``out/2024-05-02`` ... share one
history (:func:`default_db_path`). The path is configurable: pass any path to
:class:`CaseStore`; parent directories are created.

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
import math
import sqlite3
import time
from pathlib import Path

import pandas as pd

from gridwatch import columns as col
from gridwatch.errors import InputError

SCHEMA_VERSION = 1
DEFAULT_DB_NAME = "cases.sqlite"
STATE_DIR_NAME = "state"

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


def default_db_path(output_dir) -> Path:
    """Return the conventional database path for a run writing to ``output_dir``.

    Parameters
    ----------
    output_dir : str or os.PathLike
        The run's output directory (``OUT_DIR``).

    Returns
    -------
    pathlib.Path
        ``<parent of output_dir>/state/cases.sqlite``.
    """
    return Path(output_dir).resolve().parent / STATE_DIR_NAME / DEFAULT_DB_NAME


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


class CaseStore:
    """The case-history database.

    Parameters
    ----------
    path : str or os.PathLike
        The SQLite file; created (with its parent directories) if missing.
        By convention :func:`default_db_path` of the output directory.
    timeout_s : float, default 30
        How long a writer waits for another writer's transaction [s] before
        ``sqlite3.OperationalError: database is locked``.

    Raises
    ------
    gridwatch.errors.InputError
        The file is not a GridWatch case database, or a newer schema.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> store = CaseStore(Path(tempfile.mkdtemp()) / "state" / "cases.sqlite")
    >>> flags = pd.DataFrame({"meter_id": ["M-1"], "flagged": ["true"], "excess_kw": [2.0]})
    >>> store.record_run("2024-05-01", flags, None)[["case_id", "status", "flagged"]]
      case_id status  flagged
    0     M-1    new     True
    """

    def __init__(self, path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self):
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

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
            try:
                self._ensure_wal(con)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                raise InputError(
                    f"not an SQLite database: {exc}", file=self.path,
                    hint="point the case database at a new file",
                ) from exc
            con.execute("BEGIN IMMEDIATE")
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    tables = con.execute(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                    ).fetchone()[0]
                    if tables:
                        raise InputError(
                            "has tables but no GridWatch schema version", file=self.path,
                            hint="point the case database at a new file",
                        )
                    # Statement by statement: executescript() would COMMIT first.
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise InputError(
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
            ``as_of`` is earlier than the latest recorded run (history is
            recorded in date order; re-running the latest as-of is fine and
            idempotent), or a table lacks its id/flag column.

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
        -> ``cleared``.
        """
        as_of = _iso_date(as_of, "as_of")
        sites = _sites(flags, transformers)
        now = _now_utc()
        with self._write() as con:
            latest = con.execute("SELECT max(as_of) FROM runs").fetchone()[0]
            if latest is not None and as_of < latest:
                raise InputError(
                    f"as_of {as_of} is before the latest recorded run ({latest})",
                    file=self.path,
                    hint="case history is recorded in date order; re-run the latest day "
                    "or use another case database",
                )
            con.execute(
                "INSERT INTO runs (as_of, created_utc, updated_utc, n_flagged, n_withheld) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT (as_of) DO UPDATE SET "
                "updated_utc = excluded.updated_utc, n_flagged = excluded.n_flagged",
                (as_of, now, now, len(sites)),
            )
            run_id = con.execute("SELECT run_id FROM runs WHERE as_of = ?", (as_of,)).fetchone()[0]
            cases = {r["case_id"]: dict(r) for r in con.execute("SELECT * FROM cases")}
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
