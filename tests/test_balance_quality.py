"""Energy-balance quality on labelled simulated populations (fixed seeds).

Thresholds are issue 3's acceptance criteria. The populations come from
``gridwatch.simulate.simulate_dataset``, read back and put on the analysis
grid exactly as ``gridwatch.pipeline.run`` does for the meters, and the
upstream table gridded the way the pipeline will grid it.

The simulator labels one kind of hidden load only (``bypass``: a rig on a
separate line, the household's meter untouched; ``labels["transformers"]``
carries ``hidden_kw``, ``onset`` and ``culprit`` but no bypass kind). The two
other kinds of the issue are injected here on clean, mostly residential
transformers, on the gridded data, with a seeded generator independent of
the code under test:

- *whole house*: from a random hour the meter records 2 % of its household
  and a 1-4 kW rig draws through the transformer;
- *partial*: 30-70 % of the household's circuits go around the meter, plus a
  rig.

The household's energy was delivered before the bypass too, so upstream only
gains the rig; the unexplained load (the truth for the kW error) is the rig
plus what the meter stopped recording, over the last seven days.
"""

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.balance import energy_balance
from gridwatch.config import config_from_dict
from gridwatch.days import day_grid
from gridwatch.pipeline import last_full_day, window_bounds
from gridwatch.resample import analysis_index, to_grid
from gridwatch.simulate import simulate_dataset
from gridwatch.sources import read_dataset

SEEDS = (31, 47)
N_METERS = 1500
DAYS = 60
N_INJECTED = 6  # per kind and seed


def _gridded(path, labels):
    """Meters and upstream on the analysis grid, as the pipeline builds them."""
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]},
                            "analysis": {"history_days": DAYS}})
    ds = read_dataset(path, data_config=cfg.data)
    tz = cfg.data.timezone
    start, end = window_bounds(last_full_day(ds.readings, ds.interval_minutes, tz), DAYS, tz)
    index = analysis_index(start, end, cfg.analysis.grid_minutes)
    meter_ids = pd.Index(ds.meters[col.METER_ID].astype(str))
    kw, _ = to_grid(ds.readings, ds.interval_minutes, meter_ids=meter_ids, index=index)
    asset_ids = sorted(ds.upstream[col.ASSET_ID].astype(str).unique())
    upstream_kw, _ = to_grid(ds.upstream, ds.upstream_interval_minutes, meter_ids=asset_ids,
                             index=index, id_column="asset_id")
    return ds.meters, kw, upstream_kw, day_grid(index, tz)


def _inject(meters, kw, upstream_kw, grid, labels, rng):
    """Whole-house and partial bypasses on clean, mostly residential transformers."""
    truth = {a: dict(v, kind="separate_line" if v["hidden_kw"] else None)
             for a, v in labels["transformers"].items()}
    res = meters[meters[col.CUSTOMER_CLASS] == "residential"]
    share = (meters[col.CUSTOMER_CLASS] == "residential").groupby(meters[col.TRANSFORMER_ID]).mean()
    clean = sorted(a for a, v in truth.items()
                   if v["hidden_kw"] is None and share.get(a, 0) >= 0.5 and a in upstream_kw.columns)
    chosen = rng.choice(clean, size=2 * N_INJECTED, replace=False)
    K = kw.to_numpy(copy=True)
    U = upstream_kw.to_numpy(copy=True)
    n_days = grid.n_days
    for j, tx in enumerate(chosen):  # a few dozen injections
        kind = "whole_house" if j < N_INJECTED else "partial"
        meter = str(rng.choice(res.loc[res[col.TRANSFORMER_ID] == tx, col.METER_ID].to_numpy()))
        day = int(rng.integers(int(0.25 * n_days), int(0.85 * n_days)))
        cells = np.flatnonzero(grid.day_of_cell == day)
        start = cells[min(int(rng.uniform(8, 22)), len(cells) - 1)]
        rig_kw = rng.uniform(1.0, 4.0)
        gone = 0.98 if kind == "whole_house" else rng.uniform(0.3, 0.7)
        i = kw.columns.get_loc(meter)
        removed = np.nan_to_num(K[start:, i]) * gone
        K[start:, i] -= removed
        U[start:, upstream_kw.columns.get_loc(tx)] += rig_kw * (1 + 0.01 * rng.standard_normal(len(removed)))
        truth[tx] = {"hidden_kw": float(rig_kw + removed[-7 * 24:].mean()),
                     "onset": grid.dates[day].date().isoformat(), "culprit": meter, "kind": kind}
    return (pd.DataFrame(K, index=kw.index, columns=kw.columns),
            pd.DataFrame(U, index=upstream_kw.index, columns=upstream_kw.columns), truth)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    rows = []
    for seed in SEEDS:
        path = tmp_path_factory.mktemp(f"balance{seed}")
        labels = simulate_dataset(path, n_meters=N_METERS, days=DAYS, seed=seed)
        meters, kw, upstream_kw, grid = _gridded(path, labels)
        kw, upstream_kw, truth = _inject(meters, kw, upstream_kw, grid, labels,
                                         np.random.default_rng(seed + 1000))
        balance, _ = energy_balance(upstream_kw, kw, None, meters, grid)
        table = balance.table.set_index("asset_id")
        n_meters = meters.groupby(col.TRANSFORMER_ID).size()
        for asset, t in truth.items():
            r = table.loc[asset]
            names = [m for m in r["suspects"].split(";") if m]
            rows.append({
                "seed": seed, "asset": asset, "kind": t["kind"], "hidden_kw": t["hidden_kw"],
                "n_meters": int(n_meters[asset]), "flagged": bool(r["flagged"]),
                "unexplained_kw": r["unexplained_kw"], "onset": r["onset"], "true_onset": t["onset"],
                "culprit_rank": names.index(t["culprit"]) + 1 if t["culprit"] in names else np.nan,
            })
    frame = pd.DataFrame(rows)
    frame["hidden_kw"] = frame["hidden_kw"].astype(float)
    return frame


def _hidden(results):
    return results[results["hidden_kw"].notna()]


def test_populations_are_big_enough(results):
    hidden = _hidden(results)
    assert len(hidden) >= 40
    assert (results["kind"].isna()).sum() >= 60
    assert results["n_meters"].max() <= 40  # the population: transformers of <= 40 meters


def test_recall_of_hidden_loads_of_one_kw_or_more(results):
    hidden = _hidden(results)
    hidden = hidden[(hidden["hidden_kw"] >= 1.0) & (hidden["n_meters"] <= 40)]
    assert hidden["flagged"].mean() >= 0.9


def test_false_alarms_at_most_five_percent_of_clean_transformers(results):
    clean = results[results["kind"].isna()]
    assert clean["flagged"].mean() <= 0.05


def test_median_unexplained_kw_error_at_most_25_percent(results):
    found = _hidden(results)
    found = found[found["flagged"]]
    error = (found["unexplained_kw"] - found["hidden_kw"]).abs() / found["hidden_kw"]
    assert error.median() <= 0.25


def test_onset_within_one_day_for_80_percent(results):
    found = _hidden(results)
    found = found[found["flagged"]]
    delay = (pd.to_datetime(found["onset"].replace("", None)) - pd.to_datetime(found["true_onset"])).dt.days
    assert (delay.abs() <= 1).mean() >= 0.8


def test_culprit_in_top_three_for_whole_house_and_partial_bypasses(results):
    found = _hidden(results)
    found = found[found["flagged"] & found["kind"].isin(["whole_house", "partial"])]
    assert len(found) >= 2 * N_INJECTED * len(SEEDS) * 0.9
    assert (found["culprit_rank"] <= 3).mean() >= 0.8
    whole = found[found["kind"] == "whole_house"]
    assert (whole["culprit_rank"] == 1).mean() >= 0.8


@pytest.mark.xfail(strict=True, reason=(
    "measured 1 of 30 (3 %) on these seeds: the simulator's bypass is a rig on a separate line with the "
    "household's meter untouched, so no meter's own data carry any evidence; the ranking can "
    "only name meters on chance coincidences"))
def test_culprit_in_top_three_for_separate_line_bypasses(results):
    found = _hidden(results)
    found = found[found["flagged"] & (found["kind"] == "separate_line")]
    assert (found["culprit_rank"] <= 3).mean() >= 0.8
