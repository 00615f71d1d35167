"""The energy balance on small synthetic cases built here with numpy.

Each case is a set of transformers of 20 households on an hourly UTC grid.
Upstream is the households' true demand plus no-load and quadratic load
losses, times a CT ratio error, plus noise:

    delivered = (true + no_load_kw + k * true**2) * (1 + ct_error) + noise

so the loss model's coefficients and the hidden loads are known by
construction, independently of the code under test.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from gridwatch.balance import SUSPECTS_COLUMNS, TABLE_COLUMNS, BalanceCalibration, energy_balance
from gridwatch.days import day_grid

N_DAYS = 42
METERS_PER_TX = 20


@dataclass
class Case:
    grid: object
    meters: pd.DataFrame
    true_kw: np.ndarray  # what each household draws (n_cells, n_meters)
    recorded_kw: np.ndarray  # what each meter records
    hidden_kw: np.ndarray  # drawn through each transformer but through no meter (n_cells, n_tx)
    tx_ids: list
    no_load_kw: np.ndarray
    ct_error: np.ndarray
    rng: np.random.Generator

    def cols(self, tx):
        return np.arange(tx * METERS_PER_TX, (tx + 1) * METERS_PER_TX)

    def frames(self, *, upstream_ids=None):
        """(upstream_kw, meter_kw) frames: upstream from true demand plus hidden loads."""
        total = np.stack([self.true_kw[:, self.cols(t)].sum(axis=1) for t in range(len(self.tx_ids))],
                         axis=1) + self.hidden_kw
        mean = total.mean(axis=0)
        k = 0.012 / mean  # load losses of 1.2 % at mean load
        delivered = (total + self.no_load_kw + k * total**2) * (1 + self.ct_error)
        delivered += 0.002 * mean * self.rng.standard_normal(delivered.shape)
        index = self.grid.index
        upstream = pd.DataFrame(delivered, index=index, columns=self.tx_ids)
        if upstream_ids is not None:
            upstream = upstream.reindex(columns=upstream_ids)
        meter_kw = pd.DataFrame(self.recorded_kw, index=index, columns=self.meters["meter_id"])
        return upstream, meter_kw


def make_case(n_tx=1, seed=0, ct_error=None):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-02-02", periods=N_DAYS * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    n = n_tx * METERS_PER_TX
    hour = grid.hour_of_cell
    shape = 0.15 + 0.5 * np.exp(-((hour - 8) ** 2) / 4) + 0.9 * np.exp(-((hour - 19) ** 2) / 6)
    level = rng.lognormal(np.log(0.45), 0.4, n)
    day_factor = 1 + 0.12 * rng.standard_normal((N_DAYS, 1)) + 0.1 * grid.weekend[:, None]
    noise = rng.lognormal(0, 0.45, (len(index), n))
    kw = shape[:, None] * level[None, :] * day_factor[grid.day_of_cell] * noise
    kw += rng.exponential(0.05, (len(index), n))
    tx_ids = [f"TX-{t + 1:03d}" for t in range(n_tx)]
    meters = pd.DataFrame({
        "meter_id": [f"M{i + 1:04d}" for i in range(n)],
        "transformer_id": np.repeat(tx_ids, METERS_PER_TX),
        "feeder_id": np.repeat([f"FD-{t // 4 + 1}" for t in range(n_tx)], METERS_PER_TX),
        "substation_id": "SS-1",
        "customer_class": "residential",
        "tariff_per_kwh": 0.25,
    })
    if ct_error is None:
        ct_error = rng.uniform(-0.005, 0.005, n_tx)
    mean_tx = np.array([kw[:, t * METERS_PER_TX:(t + 1) * METERS_PER_TX].sum(axis=1).mean()
                        for t in range(n_tx)])
    return Case(grid=grid, meters=meters, true_kw=kw, recorded_kw=kw.copy(),
                hidden_kw=np.zeros((len(index), n_tx)), tx_ids=tx_ids,
                no_load_kw=rng.uniform(0.005, 0.02, n_tx) * mean_tx,
                ct_error=np.broadcast_to(np.asarray(ct_error, dtype=float), (n_tx,)).copy(), rng=rng)


def add_rig(case, tx, rig_kw, day, hour=14, *, curtail=False, outages=()):
    """A steady rig on a separate line under transformer ``tx`` from ``day`` at ``hour``."""
    t = np.arange(len(case.grid.index))
    load = np.where(t >= day * 24 + hour, rig_kw, 0.0) * (1 + 0.01 * case.rng.standard_normal(len(t)))
    if curtail:  # off 17:00-20:00 on weekdays
        h = case.grid.hour_of_cell
        load *= ~((h >= 17) & (h < 20) & ~case.grid.weekend[case.grid.day_of_cell])
    for start, hours in outages:
        load[start:start + hours] = 0.0
    case.hidden_kw[:, tx] += load


def bypass_house(case, meter, day, hour=14, keep=0.02):
    """The whole house goes around its meter from ``day``: the meter records ``keep`` of it."""
    start = day * 24 + hour
    case.recorded_kw[start:, meter] = keep * case.true_kw[start:, meter]


def row(balance, asset):
    return balance.table.set_index("asset_id").loc[asset]


# --- hidden load ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_tx", [pytest.param(1, id="one-transformer-fixed-threshold"),
                                  pytest.param(30, id="population-of-30")])
def test_hidden_two_kw_load_is_flagged_dated_and_sized(n_tx):
    case = make_case(n_tx, seed=1, ct_error=0.005)
    add_rig(case, 0, 2.0, day=20)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"]
    assert r["load_type"] == "new_load"
    onset = pd.Timestamp(r["onset"])
    assert abs((onset - case.grid.dates[20]).days) <= 1
    assert r["unexplained_kw"] == pytest.approx(2.0, rel=0.25)
    assert r["excess_kwh"] == pytest.approx(2.0 * 24 * (N_DAYS - 20), rel=0.25)
    assert "more than its meters record" in r["reasons"]
    if n_tx > 1:
        assert balance.table["flagged"].sum() == 1  # the 29 clean ones are not flagged
        assert r["q_value"] <= 0.01


@pytest.mark.parametrize("n_tx", [pytest.param(1, id="one-transformer-fixed-threshold"),
                                  pytest.param(30, id="population-of-30")])
def test_losses_and_ct_error_raise_no_alarm_and_are_recovered(n_tx):
    case = make_case(n_tx, seed=2)
    case.ct_error[0] = -0.005
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    table = balance.table.set_index("asset_id")
    assert not table["flagged"].any()
    assert (table["unexplained_kw"] == 0).all()
    # The proportional term is the CT error, the constant the no-load losses (within noise).
    np.testing.assert_allclose(table["ratio_error"], case.ct_error, atol=0.002)
    np.testing.assert_allclose(table["no_load_kw"], case.no_load_kw * (1 + case.ct_error), atol=0.05)


def test_peak_hour_curtailment_and_short_outages_do_not_hide_the_load():
    case = make_case(1, seed=3)
    add_rig(case, 0, 3.0, day=15, curtail=True, outages=[(25 * 24 + 3, 5), (33 * 24 + 10, 4)])
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"]
    assert abs((pd.Timestamp(r["onset"]) - case.grid.dates[15]).days) <= 1
    assert r["unexplained_kw"] == pytest.approx(3.0, rel=0.25)


def test_population_where_half_the_transformers_hide_a_load():
    # The null is taken from the assets' downward changes, so it stays clean however
    # many assets carry a load.
    case = make_case(30, seed=20)
    hidden = np.arange(0, 30, 2)
    for tx, rig_kw in zip(hidden, np.linspace(1.0, 3.0, len(hidden)), strict=True):
        add_rig(case, tx, rig_kw, day=int(10 + tx))
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    flagged = balance.table["flagged"].to_numpy()
    assert flagged[hidden].all()
    assert not np.delete(flagged, hidden).any()


def test_whole_house_bypass_of_a_storage_heated_home_keeps_its_onset():
    # The hidden household draws 4 kW every night: the loss curve must be fitted
    # before the onset only, or it bends to the night-time shape of the hidden load.
    case = make_case(1, seed=21)
    culprit = 9
    night = case.grid.hour_of_cell < 7
    case.true_kw[:, culprit] += 4.0 * night
    case.recorded_kw[:, culprit] = case.true_kw[:, culprit]
    bypass_house(case, culprit, day=20)
    add_rig(case, 0, 1.5, day=20)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"] and r["load_type"] == "new_load"
    assert abs((pd.Timestamp(r["onset"]) - case.grid.dates[20]).days) <= 1
    truth = 1.5 + case.true_kw[-7 * 24:, culprit].mean()
    assert r["unexplained_kw"] == pytest.approx(truth, rel=0.25)
    assert abs(r["ratio_error"]) < 0.02  # the loss curve stayed physical


def test_a_meter_that_stops_reporting_is_not_a_hidden_load():
    # Its consumption after it went silent is a guess (filled from its usual profile);
    # a change in how much is guessed is not evidence of theft.
    case = make_case(1, seed=22)
    big = 0
    case.true_kw[:, big] += 3.0
    case.true_kw[30 * 24:, big] += 0.8  # it grows, unseen, after it stopped reporting
    case.recorded_kw[:, big] = case.true_kw[:, big]
    case.recorded_kw[30 * 24:, big] = np.nan
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid, min_coverage=0.5)
    r = row(balance, "TX-001")
    assert r["step_kw"] > 0.5  # the guess is 0.8 kW short ...
    assert not r["flagged"]  # ... but within what a guess of 3.4 kW can miss


def test_whole_days_without_upstream_data_are_tolerated():
    case = make_case(1, seed=23)
    add_rig(case, 0, 2.0, day=24)
    upstream, meter_kw = case.frames()
    for day in (5, 23, 26, 27):  # SCADA outages, one just before and two just after the onset
        upstream.iloc[day * 24:(day + 1) * 24, 0] = np.nan
    balance, issues = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"] and r["valid_days"] == N_DAYS - 4
    assert abs((pd.Timestamp(r["onset"]) - case.grid.dates[24]).days) <= 1
    assert r["unexplained_kw"] == pytest.approx(2.0, rel=0.25)
    assert issues.total("upstream.missing_cells") == 4 * 24
    assert np.isnan(balance.unexplained_kw[[5, 23, 26, 27], 0]).all()


def test_load_running_before_the_window_in_a_population():
    case = make_case(30, seed=24)
    add_rig(case, 3, 2.0, day=0, hour=0)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    flagged = balance.table.loc[balance.table["flagged"], "asset_id"].tolist()
    assert flagged == ["TX-004"]
    r = row(balance, "TX-004")
    assert r["load_type"] == "preexisting_load" and r["onset"] == ""
    assert r["unexplained_kw"] == pytest.approx(2.0, rel=0.25)


def test_load_running_before_the_window_is_flagged_without_onset():
    case = make_case(1, seed=4)
    add_rig(case, 0, 2.0, day=0, hour=0)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"]
    assert r["load_type"] == "preexisting_load"
    assert r["onset"] == ""
    assert r["unexplained_kw"] == pytest.approx(2.0, rel=0.25)
    assert "already running when the data start" in r["reasons"]


def test_preexisting_test_is_skipped_when_a_meter_has_no_data():
    case = make_case(1, seed=4)
    add_rig(case, 0, 2.0, day=0, hour=0)
    case.recorded_kw[:, 5] = np.nan  # this meter's consumption is unknown: so is the level
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert not row(balance, "TX-001")["flagged"]
    assert issues.total("balance.meter_without_data") == 1
    assert "have no data" in row(balance, "TX-001")["reasons"]


# --- suspects ----------------------------------------------------------------------------
def test_whole_house_bypass_meter_is_suspect_one_and_strong():
    case = make_case(1, seed=5)
    culprit = 7
    bypass_house(case, culprit, day=20)
    add_rig(case, 0, 2.0, day=20)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"]
    house_kw = case.true_kw[-7 * 24:, culprit].mean()
    assert r["unexplained_kw"] == pytest.approx(2.0 + house_kw, rel=0.25)
    sus = balance.suspects
    assert list(sus.columns) == list(SUSPECTS_COLUMNS)
    first = sus.iloc[0]
    assert first["meter_id"] == case.meters["meter_id"][culprit]
    assert first["rank"] == 1
    assert bool(first["strong"])
    assert first["evidence"] > 0.8
    assert "consumption fell" in first["reasons"] and "TX-001 began delivering" in first["reasons"]
    assert r["suspects"].split(";")[0] == first["meter_id"]
    assert first["excess_kw"] == pytest.approx(r["unexplained_kw"])
    assert first["est_loss"] == pytest.approx(first["excess_kwh"] * 0.25)
    assert sus["strong"].sum() == 1  # no other meter carries strong evidence


def test_separate_line_gives_no_strong_suspect_and_says_so():
    case = make_case(1, seed=6)
    add_rig(case, 0, 2.5, day=18)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert r["flagged"]
    assert not balance.suspects["strong"].any()
    assert "separate line" in r["reasons"]


def test_partial_bypass_ranks_the_meter_whose_consumption_fell():
    case = make_case(1, seed=7)
    culprit = 11
    case.true_kw[:, culprit] += 0.6  # a household with enough load to lose half of it
    case.recorded_kw[:, culprit] = case.true_kw[:, culprit]
    bypass_house(case, culprit, day=22, keep=0.5)
    add_rig(case, 0, 1.5, day=22)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert row(balance, "TX-001")["flagged"]
    top = balance.suspects.iloc[0]
    assert top["meter_id"] == case.meters["meter_id"][culprit]
    assert not top["strong"]  # half of a household is less than half of the 2+ kW unexplained
    assert "weak evidence" in top["reasons"]


def test_no_suspects_for_an_unflagged_asset():
    case = make_case(1, seed=8)
    bypass_house(case, 3, day=20)  # a household leaves (vacancy): nothing is delivered unmetered
    case.true_kw[20 * 24 + 14:, 3] *= 0.02
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert not row(balance, "TX-001")["flagged"]
    assert balance.suspects.empty
    assert list(balance.suspects.columns) == list(SUSPECTS_COLUMNS)


# --- alignment, coverage and data quality ----------------------------------------------------
def test_meter_gaps_of_one_to_three_days_are_filled_and_not_flagged():
    case = make_case(1, seed=9)
    case.true_kw[:, 16] += 0.6  # a big household: unfilled, its gap would look like 1 kW unmetered
    case.recorded_kw[:, 16] = case.true_kw[:, 16]
    for meter, day, days in ((2, 10, 1), (8, 20, 2), (15, 30, 3), (16, N_DAYS - 2, 2)):
        case.recorded_kw[day * 24 + 5:(day + days) * 24 + 5, meter] = np.nan
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    r = row(balance, "TX-001")
    assert not r["flagged"]
    assert 0.9 < r["coverage"] < 1.0
    # At night the big household is over a fifth of the load: a few of its gap hours fall
    # below the coverage threshold and are left out, but the days stay usable.
    assert issues.total("balance.low_coverage") < 12
    assert r["valid_days"] == N_DAYS


def test_low_coverage_cells_are_dropped_and_counted():
    case = make_case(1, seed=10)
    case.recorded_kw[12 * 24:13 * 24, :14] = np.nan  # 14 of 20 meters silent for a day
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert issues.total("balance.low_coverage") == 24
    assert row(balance, "TX-001")["low_coverage_cells"] == 24
    assert np.isnan(balance.delivered_kw[12, 0])
    assert not row(balance, "TX-001")["flagged"]


def test_frozen_register_is_filled_not_taken_as_a_load():
    case = make_case(1, seed=11)
    case.true_kw[:, 4] += 1.0
    case.recorded_kw[:, 4] = case.true_kw[:, 4]
    case.recorded_kw[25 * 24:, 4] = 0.2  # stuck at 0.2 kW while the house draws ~1.5 kW
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert not row(balance, "TX-001")["flagged"]
    assert issues.total("balance.frozen_reading_filled") == (N_DAYS - 25) * 24


def test_expected_demand_fills_gaps_when_given():
    case = make_case(1, seed=12)
    start, stop = 20 * 24, 23 * 24
    case.recorded_kw[start:stop, :10] = np.nan
    upstream, meter_kw = case.frames()
    expected = pd.DataFrame(case.true_kw, index=meter_kw.index, columns=meter_kw.columns)
    balance, _ = energy_balance(upstream, meter_kw, expected, case.meters, case.grid,
                                min_coverage=0.0)
    np.testing.assert_allclose(balance.metered_kw[20:23, 0], case.true_kw[start:stop, :20].reshape(
        3, 24, 20).sum(axis=2).mean(axis=1), rtol=1e-9)


def test_upstream_id_without_meters_is_an_issue_not_a_crash():
    case = make_case(1, seed=13)
    upstream, meter_kw = case.frames(upstream_ids=["TX-001", "TX-GHOST"])
    upstream["TX-GHOST"] = 5.0
    balance, issues = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    assert list(balance.table["asset_id"]) == ["TX-001", "TX-GHOST"]
    ghost = row(balance, "TX-GHOST")
    assert not ghost["flagged"] and ghost["level"] == "unknown" and ghost["suspects"] == ""
    assert "matches no transformer_id" in ghost["reasons"]
    assert issues.total("upstream.asset_unknown_topology") == len(upstream)


def test_asset_whose_meters_have_no_data_is_an_issue_not_a_crash():
    case = make_case(2, seed=14)
    case.recorded_kw[:, case.cols(1)] = np.nan
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    dead = row(balance, "TX-002")
    assert not dead["flagged"] and "none of its meters has data" in dead["reasons"]
    assert issues.total("balance.no_meter_data") == len(case.grid.index)
    assert balance.asset_ids == ["TX-001"]


def test_only_unknown_assets_give_an_empty_balance():
    case = make_case(1, seed=15)
    upstream = pd.DataFrame({"X": 1.0, "Y": 2.0}, index=case.grid.index)
    balance, issues = energy_balance(upstream, case.frames()[1], None, case.meters, case.grid)
    assert list(balance.table.columns) == list(TABLE_COLUMNS)
    assert not balance.table["flagged"].any()
    assert balance.delivered_kw.shape == (N_DAYS, 0)
    assert issues.total("upstream.asset_unknown_topology") == 2 * len(case.grid.index)


def test_no_upstream_at_all_runs():
    case = make_case(1, seed=16)
    upstream = pd.DataFrame(index=case.grid.index)
    balance, issues = energy_balance(upstream, case.frames()[1], None, case.meters, case.grid)
    assert balance.table.empty and list(balance.table.columns) == list(TABLE_COLUMNS)
    assert balance.suspects.empty and len(issues) == 0


def test_feeder_is_balanced_when_its_transformers_have_no_upstream():
    case = make_case(4, seed=17)  # four transformers on feeder FD-1
    add_rig(case, 2, 2.0, day=21)
    bypass_house(case, case.cols(2)[3], day=21)
    upstream_tx, meter_kw = case.frames()
    upstream = pd.DataFrame({"FD-1": upstream_tx.sum(axis=1)})
    balance, _ = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    r = row(balance, "FD-1")
    assert r["level"] == "feeder" and r["n_meters"] == 4 * METERS_PER_TX
    assert r["flagged"]
    assert abs((pd.Timestamp(r["onset"]) - case.grid.dates[21]).days) <= 1
    assert r["suspects"].split(";")[0] == case.meters["meter_id"][case.cols(2)[3]]


def test_frames_off_the_grid_are_refused():
    case = make_case(1, seed=18)
    upstream, meter_kw = case.frames()
    with pytest.raises(ValueError, match="upstream_kw must be on the analysis grid"):
        energy_balance(upstream.iloc[:-1], meter_kw, None, case.meters, case.grid)


def test_daily_arrays_add_up_for_plots():
    case = make_case(3, seed=19)
    add_rig(case, 1, 1.5, day=25)
    balance, _ = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert balance.delivered_kw.shape == (N_DAYS, 3) and balance.asset_ids == case.tx_ids
    np.testing.assert_allclose(balance.delivered_kw,
                               balance.metered_kw + balance.loss_kw + balance.unexplained_kw,
                               rtol=1e-9, atol=1e-9)
    # Before the onset the unexplained part is ~0; after it ~the rig.
    assert np.abs(balance.unexplained_kw[:24, 1]).max() < 0.3
    assert np.median(balance.unexplained_kw[27:, 1]) == pytest.approx(1.5, rel=0.2)


# --- partitions ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_parts", [2, 5])
def test_balancing_partitions_of_whole_transformers_equals_balancing_all(n_parts):
    case = make_case(30, seed=4)
    add_rig(case, 2, 2.0, day=18)
    add_rig(case, 17, 1.2, day=25, curtail=True)
    bypass_house(case, case.cols(9)[3], day=22)
    upstream, meter_kw = case.frames()
    whole, _ = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    assert whole.table["flagged"].sum() >= 2  # the comparison covers flagged assets

    part_of_tx = np.random.default_rng(n_parts).integers(0, n_parts, len(case.tx_ids))
    parts = []
    for p in range(n_parts):
        tx = [t for t, q in zip(case.tx_ids, part_of_tx, strict=True) if q == p]
        in_part = case.meters["transformer_id"].isin(tx).to_numpy()
        parts.append((upstream[tx], meter_kw.loc[:, in_part],
                      case.meters[in_part].reset_index(drop=True)))
    options = {"fdr_alpha": 0.01, "max_no_load_share": 0.03}
    evidence = pd.concat([energy_balance(u, m, None, mt, case.grid, evidence_only=True)[0]
                          for u, m, mt in parts])
    calibration = BalanceCalibration.fit(evidence, **options)
    results = [energy_balance(u, m, None, mt, case.grid, calibration=calibration)[0]
               for u, m, mt in parts]
    table = pd.concat([r.table for r in results]).set_index("asset_id").loc[whole.table["asset_id"]]
    pd.testing.assert_frame_equal(table, whole.table.set_index("asset_id"), check_exact=True)
    suspects = pd.concat([r.suspects for r in results]).reset_index(drop=True)
    pd.testing.assert_frame_equal(suspects.sort_values(["asset_id", "rank"]).reset_index(drop=True),
                                  whole.suspects.sort_values(["asset_id", "rank"])
                                  .reset_index(drop=True), check_exact=True)


def _unmetered_pv(case, tx, n_homes, seed=5):
    """``n_homes`` of transformer ``tx`` with 4 kWp PV read import-only: the asset sees
    their net, the meters only their import; clouds change the sun every day."""
    rng = np.random.default_rng(seed)
    hour = case.grid.hour_of_cell
    sun = np.clip(np.sin((hour - 6) / 12 * np.pi), 0, None)  # 06-18 UTC at 0 E
    cloud = rng.uniform(0.1, 1.0, N_DAYS)[case.grid.day_of_cell]
    homes = case.cols(tx)[:n_homes]
    gen = 4.0 * 0.8 * (sun * cloud)[:, None] * np.ones((1, n_homes))
    net = case.true_kw[:, homes] - gen
    case.true_kw[:, homes] = net  # what the transformer delivers to them
    case.recorded_kw[:, homes] = np.maximum(net, 0.0)  # what their import registers read
    case.meters["lat"], case.meters["lon"] = 0.0, 0.0
    return pd.Series(case.meters["meter_id"].isin(case.meters["meter_id"].iloc[homes]).to_numpy(),
                     index=case.meters["meter_id"])


def test_unmetered_pv_export_is_left_out_by_balancing_the_dark_hours():
    case = make_case(30, seed=4)
    unmetered = _unmetered_pv(case, 0, 8)
    add_rig(case, 0, 1.5, day=21)
    upstream, meter_kw = case.frames()
    # over all hours, the sun's daily swing buries the 1.5 kW
    plain, _ = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    dark, issues = energy_balance(upstream, meter_kw, None, case.meters, case.grid,
                                  unmetered_pv=unmetered)
    r = row(dark, "TX-001")
    assert r["flagged"] and r["unexplained_kw"] == pytest.approx(1.5, rel=0.25)
    assert abs((pd.Timestamp(r["onset"]) - case.grid.dates[21]).days) <= 1
    assert dark.table["flagged"].sum() == 1
    assert issues.total("balance.dark_hours_only") == 1
    assert not row(plain, "TX-001")["flagged"]  # what the balance did before


def test_upstream_in_wh_is_a_unit_error_not_a_hidden_load():
    case = make_case(2, seed=18)
    upstream, meter_kw = case.frames()
    upstream["TX-002"] *= 1000.0  # delivered in Wh, read as kWh
    balance, issues = energy_balance(upstream, meter_kw, None, case.meters, case.grid)
    wrong = row(balance, "TX-002")
    assert not wrong["flagged"] and wrong["kind"] == ""
    assert "unit error" in wrong["reasons"] and "Wh or W given as kWh" in wrong["reasons"]
    assert issues.total("upstream.unit_suspect") == len(case.grid.index)
    assert balance.asset_ids == ["TX-001"]
    assert not row(balance, "TX-001")["flagged"]


def test_a_thousand_times_less_upstream_is_a_unit_error_too():
    case = make_case(1, seed=19)
    upstream, meter_kw = case.frames()
    balance, issues = energy_balance(upstream / 1000.0, meter_kw, None, case.meters, case.grid)
    assert "MWh or MW given as kWh" in row(balance, "TX-001")["reasons"]
    assert issues.total("upstream.unit_suspect") == len(case.grid.index)


def test_a_big_hidden_load_is_not_mistaken_for_a_unit_error():
    case = make_case(1, seed=20)
    add_rig(case, 0, 60.0, day=21)  # a mining container behind 20 homes: ~6x their demand
    balance, issues = energy_balance(*case.frames(), None, case.meters, case.grid)
    assert row(balance, "TX-001")["flagged"]
    assert issues.total("upstream.unit_suspect") == 0
