"""The energy balance on simulated network data as utilities hold it (issue 13), end to end.

Two fixed seeds of 1,200 meters x 45 days from
``gridwatch.simulate.simulate_dataset(..., network_faults=True)``: rooftop PV
on 20 % of homes (a quarter of them import-only), reverse flow, SCADA gaps
and 72 h outages, CT ratio changes and clock offsets on 10 % of the
transformers each (raised from the simulator's 3 % to measure them on more
cases), 5 % of the meters listed under another transformer of their feeder
(a third in swaps), and about one transformer in five with a hidden load.
Each population is run through ``gridwatch.pipeline.run`` as the nightly job
runs it, with the map as listed and with ``balance.use_inferred_topology``,
and scored by ``gridwatch.evaluation.evaluate`` on both seeds pooled.

The thresholds are what this version measures with a margin (issue 13's
targets, where not met, are in the closing note and ``docs/balance.md``):
a change that loses detection quality fails here.
"""

import pandas as pd
import pytest

from gridwatch.config import config_from_dict
from gridwatch.evaluation import evaluate
from gridwatch.pipeline import run
from gridwatch.simulate import simulate_dataset

SEEDS = (5, 6)
N_METERS = 1200
DAYS = 45


def _read(path):
    return pd.read_csv(path, keep_default_na=False)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Pooled counts per map (listed, inferred) over both seeds."""
    pooled = {}
    for seed in SEEDS:
        path = tmp_path_factory.mktemp(f"net{seed}")
        labels = simulate_dataset(path, n_meters=N_METERS, days=DAYS, seed=seed, pv_share=0.2,
                                  network_faults=True, metering_fault_share=0.1)
        for inferred in (False, True):
            config = config_from_dict({
                "data": {"timezone": labels["timezone"]}, "analysis": {"history_days": DAYS},
                "report": {"enabled": False}, "cases": {"enabled": False},
                "balance": {"use_inferred_topology": inferred}})
            out = path / f"out-{inferred}"
            run(path, out, config=config)
            m = evaluate(_read(out / "flags.csv"), labels,
                         transformers=_read(out / "transformers.csv"),
                         topology=_read(out / "topology.csv"))
            t, topo = m["transformers"], m["topology"]
            faults = t["metering_faults"]
            kinds = t["by_kind"]
            counts = {
                "hidden": t["n_hidden_ge_1kw"], "hidden_found": t["detected_ge_1kw"],
                "clean": t["n_clean"], "false_alarms": t["false_alarms"],
                "faults": sum(faults[k]["n"] for k in ("ct_ratio", "clock_offset")),
                "faults_reported": sum(faults[k]["reported"] for k in ("ct_ratio", "clock_offset")),
                "faults_as_hidden": sum(faults[k]["flagged_hidden"]
                                        for k in ("ct_ratio", "clock_offset")),
                "clean_as_fault": faults["clean_reported"],
                "hidden_as_fault": faults["hidden_reported"],
                "culprit_scored": sum(kinds[k]["detected"] for k in ("whole_house", "partial")),
                "culprit_top3": sum(kinds[k]["n_culprit_in_top3"]
                                    for k in ("whole_house", "partial")),
                "mismapped": topo["n_mismapped"], "mismapped_found": topo["found"],
                "correct": topo["n_correct"], "false_listings": topo["false_listings"],
            }
            total = pooled.setdefault(inferred, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    return pooled


@pytest.mark.parametrize("inferred, min_recall", [(False, 0.85), (True, 0.92)])
def test_hidden_loads_of_a_kilowatt_are_found_among_mismapped_meters(scored, inferred, min_recall):
    c = scored[inferred]
    assert c["hidden"] >= 20
    assert c["hidden_found"] / c["hidden"] >= min_recall, c


@pytest.mark.parametrize("inferred, max_rate", [(False, 0.1), (True, 0.06)])
def test_clean_transformers_are_rarely_flagged(scored, inferred, max_rate):
    c = scored[inferred]
    assert c["false_alarms"] / c["clean"] <= max_rate, c


@pytest.mark.parametrize("inferred", [False, True])
def test_metering_faults_are_reported_as_such_and_rarely_as_theft(scored, inferred):
    c = scored[inferred]
    assert c["faults"] >= 16
    assert c["faults_reported"] / c["faults"] >= 0.8, c
    assert c["faults_as_hidden"] / c["faults"] <= 0.15, c
    assert c["clean_as_fault"] <= 1 and c["hidden_as_fault"] == 0, c


def test_the_culprit_of_a_whole_house_or_partial_bypass_is_in_the_top_three(scored):
    c = scored[True]
    assert c["culprit_scored"] >= 10
    assert c["culprit_top3"] / c["culprit_scored"] >= 0.85, c


def test_mismapped_meters_are_listed_and_correct_ones_are_not(scored):
    c = scored[False]
    assert c["mismapped"] >= 100
    assert c["mismapped_found"] / c["mismapped"] >= 0.7, c
    assert c["false_listings"] / c["correct"] <= 0.01, c
