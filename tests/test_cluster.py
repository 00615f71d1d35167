"""The partitions of a run as tasks of a real Dask cluster (2 workers on 127.0.0.1)."""

import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.cluster import PartitionFailed, dask_executor
from gridwatch.engine import FromFiles, analyse, combine
from gridwatch.outputs import format_flags, format_transformers
from gridwatch.pipeline import merge_suspects
from gridwatch.sources import read_dataset
from tests.test_engine import _partitions, dataset  # noqa: F401 - the shared fixture

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def cluster_map():
    with dask_executor(n_workers=2) as map_partitions:
        yield map_partitions


def _outputs(analyses, meter_order, asset_order):
    together = combine(analyses, meter_order, asset_order)
    flags = format_flags(merge_suspects(together.table, together.suspects))
    return (flags.to_csv(index=False), format_transformers(together.balance_table).to_csv(index=False),
            together.issues.to_frame().to_csv(index=False))


def test_a_local_cluster_gives_the_in_process_outputs(dataset, cluster_map):  # noqa: F811
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    meter_order = ds.meters[col.METER_ID].astype(str)
    asset_order = pd.unique(ds.upstream[col.ASSET_ID].astype(str))
    parts = _partitions(ds.meters, asset_order, 4, seed=1)
    options = {"index": index, "grid": grid, "config": config, "partitions": parts}
    in_process = _outputs(analyse(ds, **options), meter_order, asset_order)
    on_cluster = _outputs(analyse(FromFiles(path, config.data), map_partitions=cluster_map,
                                  **options), meter_order, asset_order)
    assert on_cluster == in_process
    assert "true" in in_process[0]


class _Broken(FromFiles):
    """A loader that cannot read one partition (a corrupt file on that worker)."""

    victim = None

    def __call__(self, part):
        if part is not None and part.meter_ids[0] == self.victim:
            raise OSError("disk read error")
        return super().__call__(part)


def test_a_failing_partition_stops_the_run_naming_it(dataset, cluster_map):  # noqa: F811
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    parts = _partitions(ds.meters, pd.unique(ds.upstream[col.ASSET_ID].astype(str)), 4, seed=1)
    loader = _Broken(path, config.data)
    loader.victim = parts[2].meter_ids[0]
    with pytest.raises(PartitionFailed, match=rf"partition 2 \(\d+ meters from {loader.victim}\) "
                                              r"failed: OSError: disk read error"):
        analyse(loader, index=index, grid=grid, config=config, partitions=parts,
                map_partitions=cluster_map)
