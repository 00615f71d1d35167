"""Partition by partition, the analysis gives each meter and asset what the all-at-once one gives."""

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.config import Config
from gridwatch.days import day_grid, window_bounds
from gridwatch.decisions import merge_suspects
from gridwatch.outputs import format_flags, format_transformers
from gridwatch.partition import Partition, partitions_of
from gridwatch.partitions import plan_partitions
from gridwatch.resample import analysis_index
from gridwatch.runner import analyse, combine
from gridwatch.simulate import simulate_dataset
from gridwatch.sources import read_dataset
from gridwatch.sources.partitioned import PlannedFiles

AS_OF = "2026-03-31"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=400, days=35, as_of=AS_OF, seed=11)
    config = Config()
    start, end = window_bounds(pd.Timestamp(AS_OF).date(), 35, config.data.timezone)
    index = analysis_index(start, end, config.analysis.grid_minutes)
    return path, config, index, day_grid(index, config.data.timezone)


def _partitions(meters, upstream_ids, n_parts, seed):
    """Whole feeders (their transformers and upstream), shuffled into ``n_parts`` uneven partitions.

    Whole feeders, as the run plans them: the topology check compares each
    meter with every transformer of its feeder.
    """
    tx = meters[col.TRANSFORMER_ID].astype(str)
    feeder = meters[col.FEEDER_ID].astype(str)
    names = np.array(sorted(feeder.unique()))
    part_of = dict(zip(names, np.random.default_rng(seed).permutation(len(names)) % n_parts,
                       strict=True))
    parts = []
    for p in range(n_parts):
        own = feeder.isin([f for f in names if part_of[f] == p])
        own_tx = set(tx[own])
        parts.append(Partition(meter_ids=tuple(meters.loc[own, col.METER_ID].astype(str)),
                               asset_ids=tuple(a for a in upstream_ids if a in own_tx)))
    return [p for p in parts if p.meter_ids]


@pytest.mark.parametrize("n_parts", [3, 8])
def test_partitions_give_the_all_at_once_flags_balance_and_issues(dataset, n_parts):
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    meter_order = ds.meters[col.METER_ID].astype(str)
    asset_order = pd.unique(ds.upstream[col.ASSET_ID].astype(str))
    (whole,) = analyse(ds, index=index, grid=grid, config=config)
    parts = _partitions(ds.meters, asset_order, n_parts, seed=n_parts)
    assert len(parts) >= 3
    together = combine(analyse(ds, index=index, grid=grid, config=config, partitions=parts),
                       meter_order, asset_order)

    # Every figure agrees to the last few bits (numpy's summation order may depend on
    # how many columns are summed together) and every output file is identical.
    close = {"check_exact": False, "rtol": 1e-9, "atol": 1e-9}
    pd.testing.assert_frame_equal(together.table, whole.table, **close)
    pd.testing.assert_frame_equal(together.balance_table, whole.balance.table, **close)
    pd.testing.assert_frame_equal(together.suspects, whole.balance.suspects, **close)
    assert (together.issues.to_frame().to_csv(index=False)
            == whole.issues.to_frame().to_csv(index=False))
    flags = format_flags(merge_suspects(together.table, together.suspects))
    expected = format_flags(merge_suspects(whole.table, whole.balance.suspects))
    assert flags.to_csv(index=False) == expected.to_csv(index=False)
    assert (format_transformers(together.balance_table).to_csv(index=False)
            == format_transformers(whole.balance.table).to_csv(index=False))
    assert (flags[col.FLAGGED] == "true").sum() >= 10  # flagged meters are part of the comparison


def _planned(path, config, ds, meters_per_partition):
    plan = plan_partitions(ds.meters, budget_bytes=meters_per_partition * 1000.0,
                           bytes_per_meter=1000.0,
                           upstream_asset_ids=pd.unique(ds.upstream[col.ASSET_ID].astype(str)))
    return PlannedFiles(path, plan, config.data), partitions_of(plan)


def _csv_outputs(analyses, ds):
    together = combine(analyses, ds.meters[col.METER_ID].astype(str),
                       pd.unique(ds.upstream[col.ASSET_ID].astype(str)))
    return (format_flags(merge_suspects(together.table, together.suspects)).to_csv(index=False),
            format_transformers(together.balance_table).to_csv(index=False))


def test_partitions_streamed_from_the_files_give_the_in_memory_outputs(dataset):
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    loader, parts = _planned(path, config, ds, meters_per_partition=60)
    assert len(parts) >= 5
    options = {"index": index, "grid": grid, "config": config}
    with loader:
        streamed = _csv_outputs(analyse(loader, partitions=parts, **options), ds)
    assert streamed == _csv_outputs(analyse(ds, **options), ds)


def test_each_pass_keeps_only_what_the_later_passes_read(dataset, tmp_path, monkeypatch):
    import tempfile

    from gridwatch.runner import serial_map

    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    parts = _partitions(ds.meters, pd.unique(ds.upstream[col.ASSET_ID].astype(str)), 3, seed=3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run's cache goes here
    stages_after_each_pass = []

    def recording_map(func, items):
        results = serial_map(func, items)
        files = list(tmp_path.glob("gridwatch-partitions-*/*.pkl"))
        stages_after_each_pass.append(sorted({f.name.split(".")[1] for f in files}))
        return results

    analyse(ds, index=index, grid=grid, config=config, partitions=parts,
            map_partitions=recording_map)
    assert stages_after_each_pass == [
        ["gridded", "to_measure"],  # the spread and daily figures: for the measurement only
        ["gridded", "measured"],
        ["balance_measured", "detected", "gridded", "measured"],
        ["balance_measured", "detected", "gridded", "measured"],
    ]
    assert not list(tmp_path.glob("gridwatch-partitions-*"))  # removed at the end
