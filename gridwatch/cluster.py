"""Run the partitions of an analysis as tasks of a Dask cluster (``dask.distributed``).

:func:`dask_executor` gives the ``map_partitions`` of
:func:`gridwatch.runner.analyse`: each partition becomes one task; the task
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
from concurrent.futures import ThreadPoolExecutor

from gridwatch import allocator
from gridwatch.errors import GridwatchError, SourceUnreachable
from gridwatch.sources.partitioned import close_opened

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


class _Connection:
    """A cluster started (or an existing scheduler reached) in a background thread.

    The caller reads its small tables and plans its partitions meanwhile;
    the workers import the analysis's modules before their first task.
    :meth:`client` waits for it; :meth:`close` waits too, then closes what
    was started.
    """

    def __init__(self, scheduler, n_workers, threads_per_worker):
        self.cluster = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gridwatch-dask-start")
        self._started = self._pool.submit(self._connect, scheduler, n_workers, threads_per_worker)

    def _connect(self, scheduler, n_workers, threads_per_worker):
        from dask.distributed import Client, LocalCluster

        if scheduler:
            try:
                client = Client(scheduler)
            except OSError as exc:
                raise SourceUnreachable(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                                        hint="check engine.scheduler or --scheduler, and that "
                                             "the scheduler is running") from None
        else:
            # The scheduler serves HTTP even without a dashboard (on 8787 unless told):
            # a free port on loopback, so that another service on 8787 cannot stop the run.
            self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                        processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0")
            client = Client(self.cluster)
        # Best effort: a worker that cannot import the analysis fails its first task,
        # which names the partition and the error (PartitionFailed).
        with contextlib.suppress(Exception):
            client.run(_import_analysis)
        return client

    def client(self):
        """The connected client (waits for the start; raises its error)."""
        return self._started.result()

    def close(self) -> None:
        """Remove the workers' own spills, then close the client and the cluster started here."""
        self._pool.shutdown(wait=True)
        client = None if self._started.exception() else self._started.result()
        if client is not None:
            with contextlib.suppress(Exception):  # a worker that could not see the client's spill
                client.run(close_opened)
            client.close()
        if self.cluster is not None:
            self.cluster.close()


def _import_analysis():
    import gridwatch.partition  # noqa: F401 - pandas, pyarrow, scipy, statsmodels: seconds, once


@contextlib.contextmanager
def dask_executor(scheduler: str | None = None, *, n_workers: int = 2, threads_per_worker: int = 1,
                  reuse_freed_memory: bool = True):
    """A ``map_partitions`` that runs each partition as a task on a Dask cluster.

    The cluster starts (or the scheduler is reached) in the background, so
    that the caller can plan its partitions meanwhile: the first map waits
    for it.

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
        workers keep their own (all workers give freed memory back after
        each pass).

    Yields
    ------
    callable
        ``map_partitions(func, partitions) -> list`` (results in partition order).

    Raises
    ------
    PartitionFailed
        From the map, when a partition fails after :data:`TASK_RETRIES` retries.
    SourceUnreachable
        From the map, when the scheduler cannot be reached.
    """
    import dask
    import distributed  # noqa: F401 - its config defaults, before the settings below and the thread

    with contextlib.ExitStack() as stack:
        if not scheduler:
            # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which
            # makes the analysis's allocation-heavy numpy/pandas code about 1.5x
            # slower (measured; see docs/scale.md): keep glibc's own default, or
            # keep freed memory in the worker altogether. Set for the cluster's
            # life: a worker restarted by its nanny gets it too.
            environ = allocator.ENVIRON if reuse_freed_memory else {"MALLOC_TRIM_THRESHOLD_": None}
            stack.enter_context(dask.config.set(
                {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}))
        connection = _Connection(scheduler, n_workers, threads_per_worker)
        stack.callback(connection.close)

        def map_partitions(func, partitions):
            client = connection.client()
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
                # What the pass freed goes back: not held while the client gathers and merges.
                with contextlib.suppress(Exception):
                    client.run(allocator.release_freed_memory)

        yield map_partitions
