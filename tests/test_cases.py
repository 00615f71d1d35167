"""Tests for gridwatch.cases: case statuses across runs, analyst actions, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from gridwatch import cases
from gridwatch.cases import CaseStore, default_db_path, materially_changed
from gridwatch.errors import InputError


def _flags(levels: dict[str, float], unflagged=()) -> pd.DataFrame:
    """A flags.csv-shaped frame: ``levels`` flagged at excess_kw [kW], ``unflagged`` not."""
    ids = list(levels) + list(unflagged)
    return pd.DataFrame({
        "meter_id": ids,
        "transformer_id": ["T-1"] * len(ids),
        "rank": np.arange(1, len(ids) + 1),
        "score": [0.9] * len(levels) + [0.1] * len(unflagged),
        "flagged": ["true"] * len(levels) + ["false"] * len(unflagged),
        "kind": ["visible_load"] * len(ids),
        "onset": ["2024-04-20"] * len(ids),
        "excess_kw": list(levels.values()) + [0.0] * len(unflagged),
        "excess_kwh": [100.0] * len(ids),
        "est_loss": [20.0] * len(ids),
        "reasons": ["flat round-the-clock load"] * len(ids),
    })


def _status(table: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    return {r.case_id: (r.status, bool(r.flagged)) for r in table.itertuples()}


@pytest.fixture
def store(tmp_path):
    return CaseStore(tmp_path / "state" / "cases.sqlite")


def test_store_creates_versioned_wal_database(tmp_path):
    path = tmp_path / "deep" / "state" / "cases.sqlite"
    CaseStore(path)
    CaseStore(path)  # re-opening an existing database is fine
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == cases.SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_newer_schema_and_foreign_file_are_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    CaseStore(newer)
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="version 99 is newer"):
        CaseStore(newer)
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="no GridWatch schema version"):
        CaseStore(foreign)


def test_each_output_has_its_own_history_beside_it(tmp_path):
    # issue 14, item 5: siblings under one parent never share a history
    assert default_db_path(tmp_path / "runs" / "a") == tmp_path / "runs" / ".a.state" / "cases.sqlite"
    assert default_db_path(tmp_path / "runs" / "a") != default_db_path(tmp_path / "runs" / "b")
    root = cases.locate_history(output_root=tmp_path / "root")
    assert root.path == tmp_path / "root" / "state" / "cases.sqlite" and not root.expected
    configured = cases.locate_history(tmp_path / "runs" / "a", database=tmp_path / "h.sqlite")
    assert configured.path == tmp_path / "h.sqlite" and configured.legacy_path is None


def test_episode_of_flagged_nights():
    nights = ["05-01", "05-02", "05-03", "05-04", "05-05"]
    assert cases.episode({"05-02", "05-03"}, nights) == {
        "first_seen": "05-02", "last_seen": "05-03", "opened": "05-02", "cleared_on": "05-04"}
    assert cases.episode({"05-01", "05-04", "05-05"}, nights)["opened"] == "05-04"
    assert cases.episode({"05-05"}, nights)["cleared_on"] is None


def test_new_then_ongoing_then_cleared(store):
    day1 = store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-2": 3.0}, ["M-3"]), None)
    assert _status(day1) == {"M-1": ("new", True), "M-2": ("new", True)}
    assert list(day1.columns) == list(cases.RUN_STATUS_COLUMNS)
    assert (day1["first_seen"] == "2024-05-01").all()

    day2 = store.record_run("2024-05-02", _flags({"M-1": 2.1}, ["M-2", "M-3"]), None)
    assert _status(day2) == {"M-1": ("ongoing", True), "M-2": ("cleared", False)}
    row = day2.set_index("case_id").loc["M-1"]
    assert row["first_seen"] == "2024-05-01" and row["last_seen"] == "2024-05-02"
    assert row["n_events"] == 2
    assert "not flagged on 2024-05-02" in day2.set_index("case_id").loc["M-2", "note"]

    # A cleared site flagged again starts a new episode.
    day3 = store.record_run("2024-05-03", _flags({"M-1": 2.0, "M-2": 3.0}), None)
    assert _status(day3) == {"M-1": ("ongoing", True), "M-2": ("new", True)}
    assert "cleared on 2024-05-02" in day3.set_index("case_id").loc["M-2", "note"]
    assert day3.set_index("case_id").loc["M-2", "first_seen"] == "2024-05-01"
    assert store.runs()["n_flagged"].tolist() == [2, 1, 2]


def test_assets_are_cases_too(store):
    transformers = pd.DataFrame({
        "asset_id": ["T-9", "T-8"], "flagged": [True, False],
        "unexplained_kw": [4.0, 0.1], "onset": ["2024-04-28", ""], "suspects": ["M-1", ""],
    })
    table = store.record_run("2024-05-01", _flags({"M-1": 2.0}), transformers)
    assert _status(table) == {"M-1": ("new", True), "T-9": ("new", True)}
    case = store.show("T-9")
    assert case["site_kind"] == "asset" and case["excess_kw"] == 4.0
    assert case["kind"] == cases.ASSET_KIND


def test_rerun_same_as_of_is_idempotent(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-2": 3.0}), None)
    store.close("M-2", "legitimate_load", "heat pump", "2024-05-01")
    args = ("2024-05-02", _flags({"M-1": 2.0, "M-2": 3.1}), None)
    first = store.record_run(*args)
    n_events = len(store.show("M-1")["events"]) + len(store.show("M-2")["events"])
    for _ in range(2):
        again = store.record_run(*args)
        pd.testing.assert_frame_equal(again, first)
    assert len(store.show("M-1")["events"]) + len(store.show("M-2")["events"]) == n_events
    assert len(store.runs()) == 2

    # The first day re-run before the second day: still `new`, with its note.
    store2 = CaseStore(store.path.parent / "other.sqlite")
    a = store2.record_run("2024-05-01", _flags({"M-1": 2.0}, ["M-2"]), None)
    b = store2.record_run("2024-05-01", _flags({"M-1": 2.0}, ["M-2"]), None)
    pd.testing.assert_frame_equal(a, b)
    assert _status(b) == {"M-1": ("new", True)}


def test_a_backfilled_night_is_recorded_in_its_place_in_time(store):
    # issue 14, item 4: nights 05-01 and 05-03 recorded, then 05-02 back-filled
    store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-3": 1.0}), None)
    store.record_run("2024-05-03", _flags({"M-1": 2.0, "M-2": 3.0}), None)
    assert store.show("M-2")["status"] == "new"
    back = store.record_run("2024-05-02", _flags({"M-1": 2.2, "M-2": 3.0, "M-4": 5.0}), None)
    # statuses of that night, against 05-01: M-3 was flagged then and is cleared on 05-02
    assert _status(back) == {"M-1": ("ongoing", True), "M-2": ("new", True),
                             "M-4": ("new", True), "M-3": ("cleared", False)}
    assert store.runs()["as_of"].tolist() == ["2024-05-01", "2024-05-02", "2024-05-03"]
    now = store.list_cases().set_index("case_id")
    # the cases now: M-2 began on 05-02, so it is ongoing on 05-03; M-4 (only 05-02) is cleared
    assert now.loc["M-2", ["status", "first_seen", "opened"]].tolist() == [
        "ongoing", "2024-05-02", "2024-05-02"]
    assert now.loc["M-4", ["status", "first_seen", "last_seen", "cleared_on"]].tolist() == [
        "cleared", "2024-05-02", "2024-05-02", "2024-05-03"]
    assert now.loc["M-3", ["status", "cleared_on"]].tolist() == ["cleared", "2024-05-02"]
    assert now.loc["M-1", ["first_seen", "last_seen", "excess_kw"]].tolist() == [
        "2024-05-01", "2024-05-03", 2.0]  # the newest night's level stays
    assert [e["as_of"] for e in store.show("M-1")["events"]] == [
        "2024-05-01", "2024-05-03", "2024-05-02"]
    # a re-run of the back-filled night is idempotent; the next night follows on
    pd.testing.assert_frame_equal(
        store.record_run("2024-05-02", _flags({"M-1": 2.2, "M-2": 3.0, "M-4": 5.0}), None), back)
    assert len(store.show("M-1")["events"]) == 3
    nxt = store.record_run("2024-05-04", _flags({"M-2": 3.0, "M-4": 5.0}), None)
    assert _status(nxt) == {"M-2": ("ongoing", True), "M-4": ("new", True),
                            "M-1": ("cleared", False)}


def test_a_backfill_honours_only_decisions_dated_before_it(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-2": 2.0}), None)
    store.record_run("2024-05-05", _flags({"M-1": 2.0, "M-2": 2.0}), None)
    store.close("M-1", "legitimate_load", "greenhouse", "2024-05-02")
    store.close("M-2", "legitimate_load", "bakery", "2024-05-04")
    back = store.record_run("2024-05-03", _flags({"M-1": 2.0, "M-2": 2.0}), None)
    assert _status(back) == {"M-1": ("closed", False), "M-2": ("ongoing", True)}
    assert store.runs().set_index("as_of").loc["2024-05-03", "n_withheld"] == 1
    assert store.show("M-2")["status"] == "closed"  # the decision stands for the cases now


def test_a_dry_run_records_nothing_and_commit_records_it(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    pending = store.prepare_run("2024-05-02", _flags({"M-1": 2.0, "M-2": 1.0}), None)
    assert _status(pending.table) == {"M-1": ("ongoing", True), "M-2": ("new", True)}
    assert store.runs()["as_of"].tolist() == ["2024-05-01"]
    assert set(store.list_cases()["case_id"]) == {"M-1"}
    pd.testing.assert_frame_equal(pending.commit(), pending.table)
    assert store.runs()["as_of"].tolist() == ["2024-05-01", "2024-05-02"]


@pytest.mark.parametrize(
    ("level_kw", "expected"),
    [
        pytest.param(2.4, ("closed", False), id="similar-level-not-reflagged"),
        pytest.param(1.2, ("closed", False), id="drop-within-50pct"),
        pytest.param(3.5, ("new", True), id="materially-higher-reopens"),
        pytest.param(0.9, ("new", True), id="materially-lower-reopens"),
    ],
)
def test_closed_as_legitimate_load(store, level_kw, expected):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    closed = store.close("M-1", "legitimate_load", "greenhouse lights", "2024-05-03")
    assert closed["status"] == "closed" and closed["closed_kw"] == 2.0
    table = store.record_run("2024-05-04", _flags({"M-1": level_kw}), None)
    assert _status(table) == {"M-1": expected}
    note = table.loc[0, "note"]
    if expected[0] == "closed":
        assert "not re-flagged: closed as legitimate_load on 2024-05-03" in note
        assert "greenhouse lights" in note
    else:
        assert note.startswith("reopened:") and "2.00 kW" in note
        # Reopened: the next day it is an ongoing case again.
        nxt = store.record_run("2024-05-05", _flags({"M-1": level_kw}), None)
        assert _status(nxt) == {"M-1": ("ongoing", True)}


def test_material_change_thresholds_are_keyword_arguments(store):
    store.record_run("2024-05-01", _flags({"M-1": 0.6}), None)
    store.close("M-1", "legitimate_load", "", "2024-05-02")
    # +0.4 kW is +67 % but under the 0.5 kW floor ...
    assert _status(store.record_run("2024-05-03", _flags({"M-1": 1.0}), None)) == {
        "M-1": ("closed", False)
    }
    # ... and counts with a lower floor.
    table = store.record_run("2024-05-04", _flags({"M-1": 1.0}), None, reopen_min_kw=0.3)
    assert _status(table) == {"M-1": ("new", True)}


def test_materially_changed_rule():
    assert materially_changed(3.1, 2.0)
    assert not materially_changed(3.0, 2.0)  # exactly 50 %: not more than
    assert not materially_changed(0.9, 0.5)  # 80 % but 0.4 kW
    assert not materially_changed(float("nan"), 2.0)
    assert not materially_changed(5.0, None)
    assert materially_changed(2.5, 2.0, rel_change=0.2)


@pytest.mark.parametrize("outcome", ["confirmed_mining", "meter_fault", "no_access"])
def test_other_outcomes_stay_closed_and_keep_their_flag(store, outcome):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    store.close("M-1", outcome, "crew report 17", "2024-05-02")
    table = store.record_run("2024-05-03", _flags({"M-1": 2.0}), None)
    assert _status(table) == {"M-1": ("closed", True)}
    assert f"closed as {outcome} on 2024-05-02" in table.loc[0, "note"]
    # Not flagged: stays closed, not cleared, not listed.
    assert store.record_run("2024-05-04", _flags({}), None).empty
    assert store.show("M-1")["status"] == "closed"


def test_suppression_until_a_date_is_honoured_then_expires(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    case = store.suppress("M-1", "bakery ovens, confirmed by phone", until="2024-05-03")
    assert case["status"] == "suppressed" and case["suppressed_kw"] == 2.0
    for day in ("2024-05-02", "2024-05-03"):  # until is inclusive
        table = store.record_run(day, _flags({"M-1": 2.2}), None)
        assert _status(table) == {"M-1": ("suppressed", False)}
        assert "suppressed until 2024-05-03 (bakery ovens" in table.loc[0, "note"]
    table = store.record_run("2024-05-04", _flags({"M-1": 2.2}), None)
    assert _status(table) == {"M-1": ("ongoing", True)}
    assert "suppression until 2024-05-03 expired" in table.loc[0, "note"]
    assert store.runs()["n_withheld"].tolist() == [0, 1, 1, 0]


def test_suppression_without_end_date_and_material_change(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-2": 2.0}), None)
    store.suppress("M-1", "known EV charger")
    store.suppress("M-2", "known EV charger", until="2024-05-02")
    table = store.record_run("2024-06-30", _flags({"M-1": 2.5}), None)
    # M-1 never expires; M-2's suppression expired and it is not flagged: cleared.
    assert _status(table) == {"M-1": ("suppressed", False), "M-2": ("cleared", False)}
    table = store.record_run("2024-07-01", _flags({"M-1": 6.0}), None)
    assert _status(table) == {"M-1": ("new", True)}
    case = store.show("M-1")
    assert case["suppressed_until"] is None and case["suppression_reason"] is None


def test_close_refuses_unknown_outcome(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    with pytest.raises(ValueError, match="confirmed_mining, legitimate_load, meter_fault, no_access"):
        store.close("M-1", "mining", "", "2024-05-02")
    assert store.show("M-1")["status"] == "new"


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda s: s.close("M-404", "meter_fault", "", "2024-05-02"), id="close"),
        pytest.param(lambda s: s.suppress("M-404", "reason"), id="suppress"),
        pytest.param(lambda s: s.show("M-404"), id="show"),
    ],
)
def test_unknown_case_id(store, action):
    store.record_run("2024-05-01", _flags({"M-1": 2.0}), None)
    with pytest.raises(InputError, match="unknown case 'M-404'"):
        action(store)


def test_list_and_show(store):
    store.record_run("2024-05-01", _flags({"M-1": 2.0, "M-2": 3.0}), None)
    store.close("M-2", "confirmed_mining", "6 GPUs in the garage", "2024-05-02")
    everything = store.list_cases()
    assert set(everything["case_id"]) == {"M-1", "M-2"}
    assert store.list_cases("closed")["case_id"].tolist() == ["M-2"]
    assert store.list_cases("cleared").empty
    with pytest.raises(ValueError, match="status must be one of"):
        store.list_cases("open")
    case = store.show("M-2")
    assert case["outcome"] == "confirmed_mining" and case["outcome_date"] == "2024-05-02"
    assert [e["event"] for e in case["events"]] == ["run", "close"]
    assert case["events"][1]["details"]["note"] == "6 GPUs in the garage"
    json.dumps(case)  # the CLI can print it as JSON


def test_hostile_ids_are_stored_verbatim(store):
    ids = {"<script>alert(1)</script>": 2.0, "=HYPERLINK(\"x\")": 3.0, "M'; DROP TABLE cases;--": 1.0}
    table = store.record_run("2024-05-01", _flags(ids), None)
    assert set(table["case_id"]) == set(ids)
    assert store.show("M'; DROP TABLE cases;--")["status"] == "new"


def test_same_id_as_meter_and_asset_is_refused(store):
    transformers = pd.DataFrame({"asset_id": ["X"], "flagged": ["true"], "unexplained_kw": [1.0]})
    with pytest.raises(InputError, match="'X' is flagged twice"):
        store.record_run("2024-05-01", _flags({"X": 2.0}), transformers)


# --- concurrency ---------------------------------------------------------------------

N_METERS = 30
N_DAYS = 40


def _day_flags(day: int) -> pd.DataFrame:
    """Deterministic flags for day ``day``: about two thirds of the meters, churning."""
    levels = {f"M-{i}": 1.0 + i for i in range(N_METERS) if (i + day) % 3 != 0}
    return _flags(levels, [f"M-{i}" for i in range(N_METERS) if (i + day) % 3 == 0])


def _as_of(day: int) -> str:
    return (pd.Timestamp("2024-01-01") + pd.Timedelta(days=day)).strftime("%Y-%m-%d")


def _wait_until(start_at: float) -> None:
    """Let every worker start at once (spawned processes take a while to import)."""
    time.sleep(max(0.0, start_at - time.time()))


def _runner(path: str, start_at: float) -> dict:
    """Record all days in order; a day the other runner overtook is recorded as a back-fill."""
    _wait_until(start_at)
    store = CaseStore(path)
    out = {"recorded": 0, "out_of_order": 0, "errors": []}
    for day in range(N_DAYS):
        try:
            store.record_run(_as_of(day), _day_flags(day), None)
            out["recorded"] += 1
        except InputError as exc:
            if "before the latest recorded run" not in str(exc):
                out["errors"].append(repr(exc))
            out["out_of_order"] += 1
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out["errors"].append(repr(exc))
    return out


def _analyst(path: str, seed: int, start_at: float) -> dict:
    """Close and suppress random cases, as an analyst at the console would."""
    _wait_until(start_at)
    rng = np.random.default_rng(seed)
    store = CaseStore(path)
    out = {"close": 0, "suppress": 0, "unknown": 0, "errors": []}
    for _ in range(100):
        case_id = f"M-{rng.integers(N_METERS)}"
        try:
            if rng.random() < 0.5:
                store.close(case_id, cases.OUTCOMES[rng.integers(4)], "crew", "2024-01-15")
                out["close"] += 1
            else:
                store.suppress(case_id, "known load", until=_as_of(int(rng.integers(N_DAYS))))
                out["suppress"] += 1
            store.list_cases()
        except InputError:
            out["unknown"] += 1  # not yet recorded by any run
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out["errors"].append(repr(exc))
    return out


@pytest.mark.slow
def test_concurrent_runs_and_analysts_leave_a_consistent_database(tmp_path):
    path = str(tmp_path / "state" / "cases.sqlite")  # created by the workers, concurrently
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 4.0
    with ctx.Pool(4) as pool:
        runners = [pool.apply_async(_runner, (path, start_at)) for _ in range(2)]
        analysts = [pool.apply_async(_analyst, (path, seed, start_at)) for seed in (1, 2)]
        runs = [r.get(timeout=300) for r in runners]
        acts = [a.get(timeout=300) for a in analysts]

    assert [e for r in runs + acts for e in r["errors"]] == []
    assert sum(r["recorded"] + r["out_of_order"] for r in runs) == 2 * N_DAYS
    assert all(r["out_of_order"] == 0 for r in runs)  # an overtaken day is a back-fill now
    assert sum(a["close"] + a["suppress"] + a["unknown"] for a in acts) == 200

    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        # Every day was recorded exactly once, by one runner or both.
        n_days = con.execute("SELECT count(*), count(DISTINCT as_of) FROM runs").fetchone()
        assert n_days == (N_DAYS, N_DAYS)
        # Analyst events: one per successful action.
        events = dict(con.execute("SELECT event, count(*) FROM events GROUP BY event"))
        assert events.get("close", 0) == sum(a["close"] for a in acts)
        assert events.get("suppress", 0) == sum(a["suppress"] for a in acts)
        # Run events: exactly one per flagged site per day, whatever the interleaving.
        per_day = dict(con.execute(
            "SELECT as_of, count(*) FROM events WHERE event = 'run' "
            "AND json_extract(details, '$.status') != 'cleared' GROUP BY as_of"
        ))
        flagged = dict(con.execute("SELECT as_of, n_flagged FROM runs"))
        assert per_day == flagged
        assert flagged[_as_of(0)] == len(_day_flags(0).query("flagged == 'true'"))
        assert con.execute("SELECT count(*) FROM cases").fetchone()[0] == N_METERS
    finally:
        con.close()
