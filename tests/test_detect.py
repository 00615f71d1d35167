"""The visible-load detector on small synthetic populations built here."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.config import Config
from gridwatch.days import day_grid
from gridwatch.detect import detect_visible_load

N_DAYS = 42


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(42)
    index = pd.date_range("2026-02-01", periods=N_DAYS * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    hour = grid.hour_of_cell
    n = 200
    shape = 0.15 + 0.5 * np.exp(-((hour - 8) ** 2) / 4) + 0.9 * np.exp(-((hour - 19) ** 2) / 6)
    level = rng.lognormal(np.log(0.45), 0.4, n)
    kw = shape[:, None] * level[None, :] * rng.lognormal(0, 0.45, (len(index), n))
    kw += rng.exponential(0.05, (len(index), n))
    day = grid.day_of_cell
    kinds = np.array(["normal"] * n, dtype=object)
    onset_day = 30
    after = day >= onset_day

    def inject(i, kind, load):
        kinds[i] = kind
        kw[:, i] += load

    # All anomalies sit on transformer T0 (meters 0-19): peers there must not
    # make mining look normal.
    for i in range(0, 10):  # rigs 0.5 .. 5 kW, some curtailed at peak hours
        load = np.where(after, 0.5 + 0.5 * i, 0.0)
        if i % 3 == 0:
            load = load * ~((hour >= 17) & (hour < 20))
        inject(i, "rig", load)
    for i in range(10, 15):  # night storage heating from the onset
        inject(i, "storage", np.where(after & ((hour >= 0) & (hour < 7)), 4.0, 0.0))
    for i in range(15, 20):  # a household that grows with its own shape
        kinds[i] = "grow"
        kw[after, i] *= 1.8
    for i in range(20, 25):  # EV charging on most evenings
        on = rng.random(N_DAYS) < 0.7
        inject(i, "ev", np.where(after & on[day] & (hour >= 19) & (hour < 23), 7.0, 0.0))
    for i in range(25, 30):  # frozen register
        kinds[i] = "frozen"
        kw[after, i] = kw[np.argmax(after), i]
    meters = pd.DataFrame({
        "meter_id": [f"M{i:03d}" for i in range(n)],
        "transformer_id": [f"T{i // 20}" for i in range(n)],
        "customer_class": "residential",
        "region": "north",
        "tariff_per_kwh": 0.2,
    })
    cfg = Config()
    det, issues = detect_visible_load(kw, grid, meters, detection=cfg.detection,
                                      analysis=cfg.analysis)
    det.table["truth"] = kinds
    return det, issues, grid


def test_every_rig_is_flagged_with_onset_and_size(population):
    det, _, grid = population
    rigs = det.table[det.table["truth"] == "rig"]
    assert rigs["flagged"].all()
    assert (rigs["kind"] == "visible_load").all()
    assert (rigs["onset"] == "2026-03-03").all()
    true_kw = 0.5 + 0.5 * np.arange(10)
    np.testing.assert_allclose(rigs["excess_kw"], true_kw, rtol=0.2)
    # energy since onset: 12 days; curtailed rigs run 21 of 24 hours
    expected_kwh = true_kw * 24 * 12 * np.where(np.arange(10) % 3 == 0, 21 / 24, 1)
    np.testing.assert_allclose(rigs["excess_kwh"], expected_kwh, rtol=0.2)
    np.testing.assert_allclose(rigs["est_loss"], rigs["excess_kwh"] * 0.2)
    assert rigs["reasons"].str.contains("new steady load").all()


@pytest.mark.parametrize("kind", ["storage", "grow", "ev", "frozen", "normal"])
def test_look_alikes_and_normal_meters_are_not_flagged(population, kind):
    det, _, _ = population
    rows = det.table[det.table["truth"] == kind]
    allowed = 0 if kind != "normal" else 1  # at most one false alarm in 170
    assert rows["flagged"].sum() <= allowed, rows[rows["flagged"]][["reasons"]]


def test_frozen_meters_are_a_data_quality_issue(population):
    _, issues, _ = population
    frame = issues.to_frame()
    frozen = frame[frame["code"] == "readings.frozen_value"]
    assert set(frozen["meter_id"]) == {f"M{i:03d}" for i in range(25, 30)}
    assert (frozen["count"] >= 24 * 11).all()


def test_scores_rank_rigs_above_normal_meters(population):
    det, _, _ = population
    table = det.table
    assert table["score"].between(0, 1).all()
    worst_rig = table.loc[table["truth"] == "rig", "score"].min()
    normal = table.loc[table["truth"] == "normal", "score"]
    assert (normal < worst_rig).mean() >= 0.99


def test_look_alikes_rank_below_rigs(population):
    det, _, _ = population
    table = det.table
    worst_rig = table.loc[table["truth"] == "rig", "score"].min()
    look_alikes = table[table["truth"].isin(["storage", "grow", "ev", "frozen"])]
    assert (look_alikes["score"] < worst_rig).all()




def test_short_history_meter_is_not_scored():
    index = pd.date_range("2026-02-01", periods=20 * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    kw = np.random.default_rng(0).uniform(0.1, 1, (len(index), 12))
    kw[: 10 * 24, 0] = np.nan  # 10 usable days only
    meters = pd.DataFrame({"meter_id": [f"M{i}" for i in range(12)], "transformer_id": "T",
                           "customer_class": "residential", "region": "r", "tariff_per_kwh": 0.1})
    cfg = Config()
    det, issues = detect_visible_load(kw, grid, meters, detection=cfg.detection,
                                      analysis=cfg.analysis)
    assert not det.table["analysed"].iloc[0]
    assert det.table["analysed"].iloc[1:].all()
    assert issues.total("baseline.insufficient_history") == 10


def test_a_meter_alone_in_its_region_is_not_its_own_peer():
    # The only residential meter of region "south" installs a rig: a peer
    # index computed from itself alone would explain the rise away.
    rng = np.random.default_rng(8)
    index = pd.date_range("2026-02-01", periods=30 * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    kw = rng.lognormal(np.log(0.4), 0.5, (len(index), 25))
    kw[grid.day_of_cell >= 20, 0] += 1.0
    meters = pd.DataFrame({"meter_id": [f"M{i}" for i in range(25)], "transformer_id": "T1",
                           "customer_class": "residential",
                           "region": ["south"] + ["north"] * 24, "tariff_per_kwh": 0.2})
    cfg = Config()
    det, _ = detect_visible_load(kw, grid, meters, detection=cfg.detection, analysis=cfg.analysis)
    assert det.table["flagged"].iloc[0]
    assert det.table["onset"].iloc[0] == "2026-02-21"


def _one_meter_population(load_kw_fn, n_days=30, n=30, seed=3):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-02-01", periods=n_days * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    kw = rng.lognormal(np.log(0.4), 0.5, (len(index), n))
    kw[:, 0] += load_kw_fn(grid)
    meters = pd.DataFrame({"meter_id": [f"M{i}" for i in range(n)], "transformer_id": "T1",
                           "customer_class": "residential", "region": "r",
                           "tariff_per_kwh": 0.2})
    cfg = Config()
    det, _ = detect_visible_load(kw, grid, meters, detection=cfg.detection, analysis=cfg.analysis)
    return det.table.iloc[0]


def test_a_rig_seen_on_two_days_only_is_provisional():
    row = _one_meter_population(lambda g: np.where(g.day_of_cell >= 28, 3.0, 0.0))
    assert row["flagged"]
    assert "provisional" in row["reasons"]
    assert row["score"] < 0.9


def test_a_load_that_stopped_says_so():
    row = _one_meter_population(lambda g: np.where((g.day_of_cell >= 10) & (g.day_of_cell < 27),
                                                   3.0, 0.0))
    assert row["flagged"]
    assert "not seen since 2026-02-28" in row["reasons"]


def test_a_long_running_load_must_be_constant():
    def rig(g):
        return np.full(len(g.index), 2.0)

    def busy_household(g):  # high floor from activity, not a constant load
        on = (g.hour_of_cell >= 6) | (g.hour_of_cell < 1)
        return np.where(on, 2.0, 0.0) * (g.day_of_cell % 3 != 0)

    assert _one_meter_population(rig)["flagged"]
    assert not _one_meter_population(busy_household)["flagged"]
