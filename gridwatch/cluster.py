"""Run the partitions of an analysis as tasks of a Dask cluster (``dask.distributed``).

:func:`dask_executor` gives the ``map_partitions`` of
:func:`gridwatch.engine.analyse`: each partition becomes one task; the task
loads its own partition (the loader is a small picklable object that reads
files, so no data travel from the client), and only the small shared figures
(peer counts, calibrations) and the results travel back. Without a scheduler
address a local cluster is started on 127.0.0.1 and closed afterwards.

A failing task is retried once (a worker lost mid-task is the common case);
if it fails again, the run stops with an error naming the partition, its size
and first meter, and the worker's error: a partition is never silently lost.
"""

from __future__ import annotations

import contextlib

from gridwatch import allocator
from gridwatch.errors import GridwatchError

TASK_RETRIES = 1
"""Extra attempts of a failed partition task before the run fails."""


class PartitionFailed(GridwatchError):
    """A partition's task failed on the cluster (after its retries)."""


def _describe(part) -> str:
    if part is None:
        return "the whole dataset"
    ids = list(part.meter_ids)
    return f"{len(ids)} meters from {ids[0]}" if ids else "no meters"


class _Task:
    """``func`` applied to one numbered partition, failing with the partition's name."""

    def __init__(self, func):
        self.func = func

    def __call__(self, numbered):
        number, part = numbered
        try:
            return self.func(part)
        except Exception as exc:  # noqa: BLE001 - named and re-raised for the client
            raise PartitionFailed(f"partition {number} ({_describe(part)}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc


def _apply(task: _Task, numbered):
    return task(numbered)


@contextlib.contextmanager
def dask_executor(scheduler: str | None = None, *, n_workers: int = 2, threads_per_worker: int = 1,
                  reuse_freed_memory: bool = True):
    """A ``map_partitions`` that runs each partition as a task on a Dask cluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://HOST:PORT``). Default: a
        local cluster of ``n_workers`` processes bound to 127.0.0.1, closed
        on exit.
    n_workers, threads_per_worker : int
        Size of the local cluster.
    reuse_freed_memory : bool, default True
        Start the local cluster's workers with the allocator settings of
        :func:`gridwatch.allocator.reuse_freed_memory`. An existing cluster's
        workers are left as they are.

    Yields
    ------
    callable
        ``map_partitions(func, partitions) -> list`` (results in partition order).

    Raises
    ------
    PartitionFailed
        From the map, when a partition fails after :data:`TASK_RETRIES` retries.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which
            # makes the analysis's allocation-heavy numpy/pandas code about 1.5x
            # slower (measured; see docs/scale.md): keep glibc's own default, or
            # keep freed memory in the worker altogether.
            environ = allocator.ENVIRON if reuse_freed_memory else {"MALLOC_TRIM_THRESHOLD_": None}
            stack.enter_context(dask.config.set(
                {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}))
            cluster = stack.enter_context(LocalCluster(
                n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                host="127.0.0.1", dashboard_address=None))
            client = stack.enter_context(Client(cluster))

        def map_partitions(func, partitions):
            items = list(enumerate(partitions))
            # The function carries the shared figures (calibrations of every meter):
            # sent to each worker once, not embedded in the graph of every task.
            task = client.scatter(_Task(func), broadcast=True, hash=False)
            futures = client.map(_apply, [task] * len(items), items, pure=False,
                                 retries=TASK_RETRIES)
            try:
                return client.gather(futures)
            finally:
                client.cancel([*futures, task])

        try:
            yield map_partitions
        finally:  # a worker that could not see the client's spill made its own: remove it
            with contextlib.suppress(Exception):
                from gridwatch.engine import close_opened

                client.run(close_opened)
