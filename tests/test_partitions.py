"""Partitions of whole transformers within a memory budget."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.partitions import (
    BYTES_PER_METER_CELL,
    analysis_cells,
    asset_groups,
    bytes_per_meter,
    plan_partitions,
)
from gridwatch.simulate import simulate_dataset
from gridwatch.sources import read_meters


@pytest.fixture(scope="module")
def meters(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, n_meters=300, days=3, seed=3, dirty=False, upstream=False)
    return read_meters(out / "meters.csv")[0]


def _plan(meters, max_meters, **kwargs):
    return plan_partitions(meters, budget_bytes=max_meters * 1000, bytes_per_meter=1000, **kwargs)


def test_every_transformer_lies_wholly_in_one_partition(meters):
    plan = _plan(meters, 40)
    assert 8 <= plan.n_partitions <= 15
    part = plan.meter_partition.reindex(meters["meter_id"]).to_numpy()
    per_tx = pd.Series(part).groupby(meters["transformer_id"].to_numpy()).nunique()
    assert (per_tx == 1).all()


def test_partitions_cover_every_meter_once_within_budget(meters):
    plan = _plan(meters, 40)
    ids = np.concatenate([plan.meter_ids(p) for p in range(plan.n_partitions)])
    assert sorted(ids) == sorted(meters["meter_id"])
    assert (plan.partitions["n_meters"] <= 40).all()
    assert plan.partitions["n_meters"].sum() == len(meters)
    assert not plan.partitions["oversized"].any()


def test_plan_is_deterministic_and_ignores_row_order(meters):
    first = _plan(meters, 40)
    shuffled = meters.sample(frac=1, random_state=np.random.default_rng(1).integers(1 << 30))
    again = _plan(shuffled, 40)
    pd.testing.assert_series_equal(first.meter_partition.sort_index(),
                                   again.meter_partition.sort_index())
    pd.testing.assert_frame_equal(first.partitions, again.partitions)


def test_transformer_bigger_than_budget_is_its_own_partition():
    meters = pd.DataFrame({"meter_id": [f"M{i}" for i in range(10)],
                           "transformer_id": ["T1", "T1", "T2", "T2", "T2", "T2", "T2",
                                              "T3", "T3", None]})
    plan = _plan(meters, 3)
    big = plan.meter_partition[["M2", "M3", "M4", "M5", "M6"]]
    assert big.nunique() == 1
    assert (plan.meter_partition == big.iloc[0]).sum() == 5  # nothing else joins it
    assert plan.oversized.index.tolist() == [big.iloc[0]]
    assert plan.oversized["n_meters"].tolist() == [5]
    assert plan.partitions.loc[~plan.partitions["oversized"], "n_meters"].max() <= 3


def test_feeder_with_upstream_is_kept_whole():
    meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3", "M4", "M5", "M6"],
                           "transformer_id": ["T1", "T1", "T2", "T2", "T3", None],
                           "feeder_id": ["F1", "F1", "F1", "F1", "F2", "F1"]})
    split = _plan(meters, 2)
    assert split.meter_partition[["M1", "M3"]].nunique() == 2  # F1 may be split ...
    assert "F1" not in split.asset_partition.index  # ... and then has no partition
    whole = _plan(meters, 2, upstream_asset_ids=["F1"])
    members = whole.meter_partition[["M1", "M2", "M3", "M4", "M6"]]  # M6: no transformer
    assert members.nunique() == 1
    assert whole.asset_partition["F1"] == members.iloc[0]
    assert whole.oversized["n_meters"].tolist() == [5]


def test_transformer_under_two_upstream_feeders_joins_them():
    meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3", "M4"],
                           "transformer_id": ["T1", "T1", "T2", "T3"],
                           "feeder_id": ["F1", "F2", "F2", "F3"]})
    groups = asset_groups(meters, upstream_asset_ids=["F1", "F2"])
    assert groups.tolist() == [0, 0, 0, 1]


def test_meters_without_asset_are_groups_of_their_own():
    meters = pd.DataFrame({"meter_id": ["M3", "M1", "M2"], "transformer_id": [None, "", " "]})
    groups = asset_groups(meters)
    assert groups.to_dict() == {"M3": 2, "M1": 0, "M2": 1}  # numbered by meter id
    plan = _plan(meters, 2)
    assert plan.partitions["n_meters"].tolist() == [2, 1]


def test_asset_partition_names_transformers_and_whole_upper_assets(meters):
    plan = _plan(meters, 40)
    tx = meters.drop_duplicates("transformer_id").set_index("transformer_id")["meter_id"]
    expected = plan.meter_partition[tx.to_numpy()].to_numpy()
    np.testing.assert_array_equal(plan.asset_partition[tx.index].to_numpy(), expected)


def test_budget_below_one_meter_is_refused(meters):
    with pytest.raises(ValueError, match="holds no meter"):
        plan_partitions(meters, budget_bytes=10, bytes_per_meter=1000)


def test_bytes_per_meter_follows_the_analysis_grid():
    assert analysis_cells(90, 60) == 2160
    assert analysis_cells(90, 15) == 8640
    assert bytes_per_meter(90, 15) == 4 * bytes_per_meter(90, 60)
    assert bytes_per_meter(90, 60) == 2160 * BYTES_PER_METER_CELL


def test_analysis_cells_refuses_a_grid_that_does_not_divide_a_day():
    with pytest.raises(ValueError, match="7 min"):
        analysis_cells(90, 7)
