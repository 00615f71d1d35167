"""Metering faults and meters on the wrong transformer (issue 13), on cases built here.

The populations are those of ``test_balance`` (transformers of 20 households,
upstream = true demand + losses + noise), with the faults applied to the
upstream series or to the meters table by hand, so the truth is known
independently of the code under test.
"""

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.balance import energy_balance
from gridwatch.metering_faults import clock_offsets, shift_rows
from gridwatch.outputs import format_topology, format_transformers
from gridwatch.topology_check import inferred_meters
from tests.test_balance import add_rig, bypass_house, make_case, row

ONSET_DAY = 20


def _faulty_population(seed, *, ct=(), clock=(), rig=None, bypass=None):
    case = make_case(n_tx=30, seed=seed)
    if rig is not None:
        add_rig(case, rig, 2.0, ONSET_DAY)
    if bypass is not None:  # a big household (about 1.2 kW) goes around its meter
        meter = case.cols(bypass)[0]
        case.true_kw[:, meter] *= 1.2 / case.true_kw[:, meter].mean()
        case.recorded_kw[:, meter] = case.true_kw[:, meter]
        bypass_house(case, meter, ONSET_DAY)
    up, kw = case.frames()
    for tx, factor in ct:  # from 14:00 on the onset day
        up.iloc[ONSET_DAY * 24 + 14:, tx] *= factor
    for tx, hours in clock:  # the reading of true hour t is stamped t + hours
        up.iloc[:, tx] = up.iloc[:, tx].shift(hours)
    return case, up, kw


def _mismap(case, share, seed, *, swaps=0):
    """List ``share`` of the meters under another transformer of their feeder; ``swaps`` pairs too."""
    rng = np.random.default_rng(seed)
    meters = case.meters.copy()
    tx = meters[col.TRANSFORMER_ID].to_numpy().copy()
    feeder = meters[col.FEEDER_ID].to_numpy()
    truth = pd.Series(tx.copy(), index=meters[col.METER_ID])
    moved = rng.choice(len(meters), int(share * len(meters)), replace=False)
    for i in moved:  # a handful of meters, to build the case
        tx[i] = rng.choice(sorted(set(tx[feeder == feeder[i]]) - {truth.iloc[i]}))
    for _ in range(swaps):
        a = rng.choice(np.setdiff1d(np.arange(len(meters)), moved))
        others = np.flatnonzero((feeder == feeder[a]) & (truth.to_numpy() != truth.iloc[a]))
        b = rng.choice(np.setdiff1d(others, moved))
        tx[a], tx[b] = truth.iloc[b], truth.iloc[a]
        moved = np.r_[moved, a, b]
    meters[col.TRANSFORMER_ID] = tx
    return meters, truth, set(meters[col.METER_ID].iloc[moved])


# --- metering faults ---------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1.07, 0.93, 1.05])
def test_ct_ratio_change_is_a_metering_fault_not_a_hidden_load(factor):
    case, up, kw = _faulty_population(seed=1, ct=[(0, factor)], rig=2)
    balance, issues = energy_balance(up, kw, None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["kind"] == "metering_fault" and not r["flagged"] and r["unexplained_kw"] == 0
    assert r["ratio_factor"] == pytest.approx(factor, abs=0.01)
    assert (f"the upstream reading is x{r['ratio_factor']:.3f} of what it was from 2026-02-22 on"
            in r["reasons"]) and "CT" in r["reasons"]
    rig = row(balance, "TX-003")  # the rig in the same population is still a hidden load
    assert rig["flagged"] and rig["kind"] == "hidden_load"
    assert "upstream.ratio_change" in set(issues.to_frame()["code"])
    others = balance.table[~balance.table["asset_id"].isin(["TX-001", "TX-003"])]
    assert not others["flagged"].any() and (others["kind"] == "").all()


def test_whole_house_bypass_is_never_taken_for_a_ratio_change():
    found = []
    for seed in range(3):
        case, up, kw = _faulty_population(seed=seed, bypass=4)
        balance, _ = energy_balance(up, kw, None, case.meters, case.grid)
        found.append(row(balance, "TX-005")["kind"])
    assert "metering_fault" not in found
    assert found.count("hidden_load") >= 2


@pytest.mark.parametrize("hours", [1, -1, 2])
def test_clock_offset_is_found_corrected_and_reported(hours):
    case, up, kw = _faulty_population(seed=2, clock=[(1, hours)], rig=1)
    balance, issues = energy_balance(up, kw, None, case.meters, case.grid)
    r = row(balance, "TX-002")
    assert r["clock_offset_h"] == hours
    # the rig on the same transformer is still found once the clock is corrected
    assert r["flagged"] and r["kind"] == "hidden_load"
    assert f"{abs(hours)} h {'ahead of' if hours > 0 else 'behind'}" in r["reasons"]
    assert "corrected" in r["reasons"]
    code = "upstream.clock_ahead" if hours > 0 else "upstream.clock_behind"
    dq = issues.to_frame()
    assert dq.loc[dq["code"] == code, "meter_id"].tolist() == ["TX-002"]
    assert (balance.table.drop(index=1)["clock_offset_h"] == 0).all()


def test_clock_offsets_need_the_shift_to_explain_the_residual():
    case, up, kw = _faulty_population(seed=3)
    metered = np.stack([kw.to_numpy()[:, case.cols(t)].sum(axis=1) for t in range(30)], axis=1)
    clean = clock_offsets(up.to_numpy(), metered, case.grid)
    assert not clean.certain.any()
    late = clock_offsets(shift_rows(up.to_numpy(), np.full(30, -1)), metered, case.grid)
    assert late.certain.all() and (late.hours == 1).all()


def test_transformers_csv_has_the_kind_column_and_lists_faults_after_flags():
    case, up, kw = _faulty_population(seed=1, ct=[(0, 1.08)], rig=2)
    balance, _ = energy_balance(up, kw, None, case.meters, case.grid)
    out = format_transformers(balance.table)
    assert list(out.columns) == list(col.TRANSFORMERS_COLUMNS)
    assert out["kind"].tolist()[:2] == ["hidden_load", "metering_fault"]
    assert out["asset_id"].tolist()[:2] == ["TX-003", "TX-001"]


# --- topology ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_mismapped_meters_are_listed_with_their_true_transformer(seed):
    case, up, kw = _faulty_population(seed=seed, rig=2)
    meters, truth, moved = _mismap(case, 0.05, seed=10 + seed, swaps=3)
    balance, issues = energy_balance(up, kw, None, meters, case.grid)
    topo = balance.topology
    listed = topo.set_index(col.METER_ID)
    right = (listed["likely_transformer_id"] == truth.reindex(listed.index)).reindex(sorted(moved))
    assert right.fillna(False).mean() >= 0.8
    wrongly = set(listed.index) - moved
    assert len(wrongly) <= 0.01 * (len(meters) - len(moved))
    assert (listed["listed_transformer_id"] == meters.set_index(col.METER_ID)[col.TRANSFORMER_ID]
            .reindex(listed.index)).all()
    assert topo["confidence"].between(0, 1).all()
    assert topo["evidence"].str.contains("moves against").all()
    dq = issues.to_frame()
    assert set(dq.loc[dq["code"] == "meters.doubtful_transformer", "meter_id"]) == set(listed.index)
    assert list(format_topology(topo).columns) == list(col.TOPOLOGY_COLUMNS)


def test_correct_map_gives_no_topology_rows():
    case, up, kw = _faulty_population(seed=4, rig=2, ct=[(0, 1.07)])
    balance, _ = energy_balance(up, kw, None, case.meters, case.grid)
    assert balance.topology.empty


def test_clock_offset_does_not_make_its_meters_look_mismapped():
    case, up, kw = _faulty_population(seed=5, clock=[(3, 1), (7, -2)])
    balance, _ = energy_balance(up, kw, None, case.meters, case.grid)
    assert balance.topology.empty


def test_inferred_topology_balances_the_meters_where_they_are():
    case, up, kw = _faulty_population(seed=6, ct=[(0, 1.07)], rig=2)
    meters, truth, moved = _mismap(case, 0.08, seed=16)
    listed, _ = energy_balance(up, kw, None, meters, case.grid)
    inferred, issues = energy_balance(up, kw, None, meters, case.grid, use_inferred_topology=True)
    corrected, n = inferred_meters(meters, inferred.topology)
    assert n >= 0.7 * len(moved)
    assert (corrected.set_index(col.METER_ID)[col.TRANSFORMER_ID].reindex(sorted(moved))
            == truth.reindex(sorted(moved))).mean() >= 0.7
    moved_codes = issues.to_frame().query("code == 'meters.transformer_inferred'")
    assert len(moved_codes) == n
    # the map the data support explains the balance better: smaller unexplained spread
    spread = {name: np.nanmedian(np.nanstd(b.unexplained_kw, axis=0))
              for name, b in (("listed", listed), ("inferred", inferred))}
    assert spread["inferred"] < 0.8 * spread["listed"]
    assert row(inferred, "TX-003")["flagged"] and not row(inferred, "TX-001")["flagged"]
    assert inferred.table.loc[~inferred.table["asset_id"].isin(["TX-003"]), "flagged"].sum() == 0


def test_a_siblings_fall_explains_one_rise_only():
    from gridwatch.topology_check import matched_by_siblings

    # T1 and T2 both rose on day 10; T3 of the same feeder fell by 2.1 kW that day
    twins = matched_by_siblings(
        ["T1", "T2", "T3", "T4"], ["F1", "F1", "F1", "F2"],
        new_load=np.array([True, True, False, True]), onset=np.array([10, 11, -1, 10]),
        step_kw=np.array([4.5, 2.0, 0.0, 2.0]), down_onset=np.array([-1, -1, 10, -1]),
        down_kw=np.array([0.0, 0.0, 2.1, 0.0]), preexisting=np.zeros(4, dtype=bool),
        excess_kw=np.zeros(4), deficit_kw=np.zeros(4), min_kw=0.5)
    # the closest in size takes it; T4 is on another feeder
    assert twins[["asset_id", "partner"]].values.tolist() == [["T2", "T3"]]


def _steady_load_on_a_misplaced_meter(case, meter, listed_tx, kw, day, hour=10):
    """Meter ``meter`` is fed by its own transformer but listed under ``listed_tx``;
    from ``day`` it draws ``kw`` more (a licensed data room), which it records."""
    start = day * 24 + hour
    case.true_kw[start:, meter] += kw
    case.recorded_kw[start:, meter] += kw
    case.meters.loc[meter, "transformer_id"] = listed_tx


@pytest.mark.parametrize("seed", [31, 32])
def test_a_hidden_load_is_still_found_when_a_misplaced_meter_later_moves_energy_away(seed):
    case = make_case(4, seed=seed)  # four transformers on one feeder
    add_rig(case, 1, 3.0, day=12)  # TX-002: a real hidden load
    # a meter of TX-001 listed under TX-002 starts a 4 kW load ten days later: TX-002's
    # residual falls below where it was, TX-001's rises by as much
    _steady_load_on_a_misplaced_meter(case, 3, "TX-002", 4.0, day=22)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    hidden = row(balance, "TX-002")
    assert hidden["flagged"] and hidden["kind"] == col.KIND_HIDDEN_LOAD
    assert hidden["onset"] == str(case.grid.dates[12].date())
    assert hidden["unexplained_kw"] == pytest.approx(3.0, rel=0.2)
    moved = row(balance, "TX-001")
    assert not moved["flagged"] and "TX-002" in moved["reasons"]
    assert "map error" in moved["reasons"]


@pytest.mark.parametrize("seed", [33, 34])
def test_a_siblings_fall_that_explains_part_of_a_rise_leaves_the_rest_flagged(seed):
    case = make_case(4, seed=seed)
    add_rig(case, 0, 2.5, day=20)  # TX-001: a hidden load ...
    # ... on the same day as a meter of TX-001 listed under TX-003 starts a 3 kW load
    _steady_load_on_a_misplaced_meter(case, 5, "TX-003", 3.0, day=20, hour=14)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    both = row(balance, "TX-001")
    assert both["flagged"], both["reasons"]
    assert both["unexplained_kw"] == pytest.approx(2.5, rel=0.3)
    assert "matched by a fall of TX-003" in both["reasons"]
    assert "only the rest is unexplained" in both["reasons"]
    assert not row(balance, "TX-003")["flagged"]


@pytest.mark.parametrize("seed", [35, 36])
def test_a_meters_new_load_recorded_under_a_sibling_is_not_a_hidden_load(seed):
    case = make_case(4, seed=seed)
    # a meter of TX-001 listed under TX-002 starts a 2 kW rig (which it records) on day 18;
    # on day 28 a meter of TX-003, also listed under TX-002, starts a bigger 4 kW load:
    # TX-002's best fall is the second one, so only the meter itself explains TX-001's rise
    _steady_load_on_a_misplaced_meter(case, 2, "TX-002", 2.0, day=18)
    _steady_load_on_a_misplaced_meter(case, 45, "TX-002", 4.0, day=28)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    first = row(balance, "TX-001")
    assert not first["flagged"], first["reasons"]
    assert "meter M0003, listed under TX-002" in first["reasons"]
    assert not row(balance, "TX-003")["flagged"]
    listed = balance.topology.set_index(col.METER_ID)
    assert listed.loc["M0003", col.LIKELY_TRANSFORMER_ID] == "TX-001"
