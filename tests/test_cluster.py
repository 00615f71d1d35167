"""The partitions of a run as tasks of a real Dask cluster (2 workers on 127.0.0.1)."""

import os
import socket

import pytest

from gridwatch import allocator
from gridwatch.cluster import PartitionFailed, dask_executor
from gridwatch.errors import SourceUnreachable
from gridwatch.runner import analyse
from gridwatch.sources import read_dataset
from gridwatch.sources.partitioned import PlannedFiles
from tests.test_engine import _csv_outputs, _planned, dataset  # noqa: F401 - the shared fixture

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def cluster_map():
    with dask_executor(n_workers=2) as map_partitions:
        yield map_partitions


def test_a_local_cluster_gives_the_in_process_outputs(dataset, cluster_map):  # noqa: F811
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    loader, parts = _planned(path, config, ds, meters_per_partition=100)
    assert len(parts) >= 3
    options = {"index": index, "grid": grid, "config": config}
    # the workers read their own partitions from the files: no data travel from here
    with loader:
        on_cluster = _csv_outputs(analyse(loader, partitions=parts, map_partitions=cluster_map,
                                          **options), ds)
    assert on_cluster == _csv_outputs(analyse(ds, **options), ds)
    assert "true" in on_cluster[0]


def _allocator_environ(_):
    return {name: os.environ.get(name) for name in allocator.ENVIRON}


def test_the_local_workers_keep_freed_memory_for_the_next_partition(cluster_map):
    assert cluster_map(_allocator_environ, [0, 1, 2]) == [allocator.ENVIRON] * 3


class _Broken(PlannedFiles):
    """A loader that cannot read one partition (a corrupt file on that worker)."""

    victim = None

    def __call__(self, part):
        if part.number == self.victim:
            raise OSError("disk read error")
        return super().__call__(part)


def test_a_failing_partition_stops_the_run_naming_it(dataset, cluster_map):  # noqa: F811
    path, config, index, grid = dataset
    ds = read_dataset(path, data_config=config.data)
    good, parts = _planned(path, config, ds, meters_per_partition=100)
    loader = _Broken(path, good.plan, config.data)
    loader.victim = 2
    first = parts[2].meter_ids[0]
    with pytest.raises(PartitionFailed, match=rf"partition 2 \(\d+ meters from {first}\) "
                                              r"failed: OSError: disk read error"):
        analyse(loader, index=index, grid=grid, config=config, partitions=parts,
                map_partitions=cluster_map)


def test_an_unreachable_scheduler_is_a_clear_error():
    import dask

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(SourceUnreachable, match=f"cannot reach the Dask scheduler at {address}"), \
            dask_executor(address) as map_partitions:
        map_partitions(len, ["one"])



def test_a_local_cluster_starts_when_another_service_holds_port_8787():
    other = socket.socket()
    try:
        other.bind(("127.0.0.1", 8787))
    except OSError:
        pass  # something holds it already: the same situation
    other.listen(1)
    try:
        with dask_executor(n_workers=1) as map_partitions:
            assert map_partitions(abs, [-1, -2]) == [1, 2]
    finally:
        other.close()
