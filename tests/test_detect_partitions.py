"""Scoring meters partition by partition gives exactly what scoring them all at once gives."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.config import Config
from gridwatch.days import day_grid
from gridwatch.detect import Calibration, detect_visible_load, detection_evidence, peer_counts_of
from gridwatch.peers import N_BINS, NORM_MAX, PeerCounts, peer_counts

N_DAYS, N_METERS = 35, 360


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(7)
    index = pd.date_range("2026-01-05", periods=N_DAYS * 24, freq="1h", tz="UTC")
    grid = day_grid(index, "UTC")
    hour, day = grid.hour_of_cell, grid.day_of_cell
    shape = 0.15 + 0.5 * np.exp(-((hour - 8) ** 2) / 4) + 0.9 * np.exp(-((hour - 19) ** 2) / 6)
    level = rng.lognormal(np.log(0.45), 0.4, N_METERS)
    kw = shape[:, None] * level[None, :] * rng.lognormal(0, 0.45, (len(index), N_METERS))
    temperature_c = 6 + 4 * np.sin(np.arange(N_DAYS) / 5)[:, None] + rng.normal(0, 1, (N_DAYS, 3))
    region = rng.integers(0, 3, N_METERS)
    kw += 0.04 * np.clip(15 - temperature_c[day][:, region], 0, None)  # some heating
    for i in range(0, N_METERS, 23):  # rigs of 0.5-4 kW from mid-window
        kw[:, i] += np.where(day >= 20 + i % 9, 0.5 + (i % 8) / 2, 0.0)
    kw[rng.random(kw.shape) < 0.02] = np.nan
    meters = pd.DataFrame({
        "meter_id": [f"M{i:03d}" for i in range(N_METERS)],
        "transformer_id": [f"T{i // 12}" for i in range(N_METERS)],
        "customer_class": np.where(np.arange(N_METERS) % 5 == 0, "commercial", "residential"),
        "region": [f"R{r}" for r in region],
        "tariff_per_kwh": 0.2,
    })
    return kw, grid, meters, temperature_c[:, region]


def _partitions(meters, n_parts, seed):
    """Whole transformers, shuffled into ``n_parts`` partitions of uneven size."""
    tx = meters["transformer_id"].unique()
    part_of_tx = dict(zip(tx, np.random.default_rng(seed).integers(0, n_parts, len(tx)), strict=True))
    part = meters["transformer_id"].map(part_of_tx).to_numpy()
    return [np.flatnonzero(part == p) for p in range(n_parts) if (part == p).any()]


@pytest.mark.parametrize("n_parts", [2, 7])
def test_partitioned_scoring_equals_scoring_all_meters_at_once(population, n_parts):
    kw, grid, meters, temperature_c = population
    cfg = Config()
    options = {"detection": cfg.detection, "analysis": cfg.analysis}
    whole, _ = detect_visible_load(kw, grid, meters, temperature_c=temperature_c, **options)
    assert whole.table["flagged"].sum() >= 10  # the comparison covers flagged meters too

    parts = _partitions(meters, n_parts, seed=n_parts)
    sub = [(kw[:, p], meters.iloc[p].reset_index(drop=True), temperature_c[:, p]) for p in parts]
    # pass 1: peer figures; pass 2: evidence -> one calibration; pass 3: decisions
    peers = sum((peer_counts_of(k, grid, m, analysis=cfg.analysis) for k, m, _ in sub[1:]),
                peer_counts_of(sub[0][0], grid, sub[0][1], analysis=cfg.analysis))
    evidence = pd.concat([detection_evidence(k, grid, m, peers=peers, temperature_c=t, **options)
                          for k, m, t in sub])
    calibration = Calibration.fit(evidence, cfg.detection)
    tables = [detect_visible_load(k, grid, m, temperature_c=t, peers=peers,
                                  calibration=calibration, **options)[0].table for k, m, t in sub]
    partitioned = pd.concat(tables).loc[whole.table.index]
    pd.testing.assert_frame_equal(partitioned, whole.table, check_exact=True)


def test_peer_counts_add_up_to_the_counts_of_all_meters(population):
    kw, grid, meters, _ = population
    floor = np.nanquantile(kw.reshape(N_DAYS, 24, -1), 0.25, axis=1)
    halves = peer_counts(floor[:, :100], meters.iloc[:100]) + peer_counts(floor[:, 100:],
                                                                          meters.iloc[100:])
    whole = peer_counts(floor, meters)
    assert whole.members == halves.members and whole.members["*"] == N_METERS
    for key, hist in whole.counts.items():
        np.testing.assert_array_equal(hist, halves.counts[key])


def test_histogram_medians_are_within_a_bin_of_the_exact_median():
    rng = np.random.default_rng(3)
    values = rng.lognormal(0, 0.3, (20, 101))  # an odd count: one middle value per day
    hist = np.zeros((20, N_BINS), dtype=np.int64)
    bins = np.clip((values * N_BINS / NORM_MAX).astype(int), 0, N_BINS - 1)
    for d in range(20):
        hist[d] = np.bincount(bins[d], minlength=N_BINS)
    counts = PeerCounts(n_days=20, counts={"g": hist}, members={"g": 101})
    np.testing.assert_allclose(counts.medians()["g"], np.median(values, axis=1),
                               atol=NORM_MAX / N_BINS)
