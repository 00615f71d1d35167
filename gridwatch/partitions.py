"""Plan the nightly run as partitions of whole transformers that fit a memory budget.

Issue 6: the run streams its work partition by partition so that its peak
memory follows the partition size, not the number of meters. A partition
must hold every meter an energy balance sums: all meters of a transformer,
and all meters of a feeder or substation that has upstream data of its own.
:func:`plan_partitions` finds those groups (connected components of the
meter-asset graph, so a transformer listed under two feeders joins both) and
packs them, in a deterministic order, into partitions of at most
``budget_bytes / bytes_per_meter`` meters.

The memory a meter costs grows with the analysis grid:
:func:`bytes_per_meter` is :data:`BYTES_PER_METER_CELL` times the number of
cells of the analysis grid (:func:`analysis_cells`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

from gridwatch import columns as col
from gridwatch.topology import asset_members

BYTES_PER_METER_CELL = 160
"""Peak resident memory of ``gridwatch run`` per meter and analysis cell [bytes].

Measured with ``bench/bench_scale_io.py --fit-memory``: ``pipeline.run`` on
cuts of ``bench/data/core_10000x90`` at whole transformers (simulated,
90 days hourly, upstream per transformer; 2,160 cells per meter), each in a
fresh child process, peak from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(imports alone: 176 MB), two runs [MB]:

=======  =======  =======
meters    run 1    run 2
=======  =======  =======
  1,014      549      553
  2,006      740      774
  5,009    1,282    1,482
  7,506    2,087    2,095
 10,000    2,697    2,215
=======  =======  =======

Least-squares slopes: 117 and 96 bytes per meter-cell; marginal slopes
between neighbouring sizes 23-157 bytes (the allocator returns memory
unevenly). The constant is the highest marginal slope rounded up, so that a
partition sized from it does not exceed its budget: at the peak the long
readings table with its Arrow buffers and about a dozen float64
``cells x meters`` matrices are alive. With :data:`BASE_BYTES` it
overestimates every measured peak (by 25-35 %).
"""

BASE_BYTES = 350 * 2**20
"""Memory a run needs whatever its size [bytes]: interpreter and libraries (176 MB
measured) and the fixed part of the fit above; not included in a partition's budget."""


def analysis_cells(history_days: int, grid_minutes: int) -> int:
    """Number of cells per meter of the analysis grid.

    Parameters
    ----------
    history_days : int
        Days analysed [days].
    grid_minutes : int
        Analysis grid [min]: 15, 30 or 60.

    Returns
    -------
    int
        ``history_days * 24 * 60 / grid_minutes``.

    Examples
    --------
    >>> analysis_cells(90, 60)
    2160
    """
    if history_days < 1 or grid_minutes < 1 or (24 * 60) % grid_minutes:
        raise ValueError(f"need history_days >= 1 and a grid dividing a day, not "
                         f"{history_days} days of {grid_minutes} min")
    return int(history_days) * (24 * 60 // int(grid_minutes))


def bytes_per_meter(history_days: int, grid_minutes: int, *,
                    bytes_per_cell: float = BYTES_PER_METER_CELL) -> float:
    """Estimated peak memory one meter adds to a run [bytes].

    Parameters
    ----------
    history_days : int
        Days analysed [days] (``config.analysis.history_days``).
    grid_minutes : int
        Analysis grid [min] (``config.analysis.grid_minutes``).
    bytes_per_cell : float, default :data:`BYTES_PER_METER_CELL`
        Measured peak memory per meter and cell [bytes].

    Returns
    -------
    float
        ``analysis_cells(history_days, grid_minutes) * bytes_per_cell``.

    Examples
    --------
    >>> round(bytes_per_meter(90, 60) / 2**20, 2)  # MB per meter, 90 days hourly
    0.33
    """
    return analysis_cells(history_days, grid_minutes) * float(bytes_per_cell)


@dataclass(frozen=True)
class PartitionPlan:
    """Which partition each meter (and each whole asset) belongs to.

    Attributes
    ----------
    meter_partition : pandas.Series of int64
        Partition number (0, 1, ...) of each meter, indexed by ``meter_id``
        in the order of the meters table.
    asset_partition : pandas.Series of int64
        Partition number of each asset (transformer, feeder or substation
        id) whose meters all lie in one partition, indexed by ``asset_id``;
        upstream rows of these assets go with that partition. Assets split
        over partitions (a feeder without upstream data) are absent.
    partitions : pandas.DataFrame
        One row per partition (index ``partition``): ``n_meters``,
        ``n_groups`` (whole asset groups packed into it) and ``oversized``
        (True when it is a single group larger than the budget).
    max_meters : int
        Meters that fit the budget in one partition.
    """

    meter_partition: pd.Series
    asset_partition: pd.Series
    partitions: pd.DataFrame
    max_meters: int

    @property
    def n_partitions(self) -> int:
        """Number of partitions."""
        return len(self.partitions)

    def meter_ids(self, partition: int) -> pd.Index:
        """Meter ids of one partition, in the order of the meters table."""
        return self.meter_partition.index[self.meter_partition.to_numpy() == partition]

    def asset_ids(self, partition: int) -> pd.Index:
        """Ids of the whole assets of one partition (for its upstream rows)."""
        return self.asset_partition.index[self.asset_partition.to_numpy() == partition]

    @property
    def oversized(self) -> pd.DataFrame:
        """The partitions that are one asset group larger than the budget."""
        return self.partitions[self.partitions["oversized"]]


def asset_groups(meters: pd.DataFrame, *, upstream_asset_ids=()) -> pd.Series:
    """Group meters that must stay together: whole transformers, and whole upstream assets.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters table: ``meter_id`` and any of ``transformer_id``,
        ``feeder_id``, ``substation_id``.
    upstream_asset_ids : iterable of str, default ()
        Assets with upstream data. A feeder or substation among them keeps
        all its meters together (its balance sums them); other feeders and
        substations may be split. Transformers are always kept whole.

    Returns
    -------
    pandas.Series of int64
        Group number of each meter, indexed by ``meter_id`` (first occurrence
        kept when an id repeats). Groups are numbered in the order of their
        smallest ``meter_id``, so the numbering does not depend on the row
        order of ``meters``. A meter without any such asset is a group of
        its own.

    Notes
    -----
    The groups are the connected components of the bipartite meter-asset
    graph: when the table places one transformer under two feeders that both
    have upstream data, both feeders end up in one group.

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3", "M4"],
    ...                        "transformer_id": ["T1", "T2", "T1", None],
    ...                        "feeder_id": ["F1", "F2", "F2", "F2"]})
    >>> asset_groups(meters).tolist()
    [0, 1, 0, 2]
    >>> asset_groups(meters, upstream_asset_ids=["F2"]).tolist()
    [0, 0, 0, 0]
    """
    ids = meters[col.METER_ID].astype("string").str.strip()
    first = ~ids.duplicated().to_numpy() & ids.notna().to_numpy()
    meter_ids = pd.Index(ids[first].astype(str).to_numpy(), name=col.METER_ID)
    members = asset_members(meters)
    whole = (members["level"] == "transformer").to_numpy() | \
        members[col.ASSET_ID].isin(pd.Index(list(upstream_asset_ids), dtype=object)).to_numpy()
    members = members[whole]
    rows = meter_ids.get_indexer(members[col.METER_ID])
    assets, cols = np.unique(members[col.ASSET_ID].to_numpy(dtype=str), return_inverse=True)
    n, k = len(meter_ids), len(assets)
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(n + k, n + k))
    _, component = csgraph.connected_components(graph, directed=False)
    component = component[:n]
    # Renumber by each group's smallest meter id: independent of the table's row order.
    order = np.argsort(meter_ids.to_numpy(dtype=str), kind="stable")
    _, first_seen = np.unique(component[order], return_index=True)
    rank = np.empty(len(first_seen), dtype=np.int64)
    rank[np.argsort(first_seen)] = np.arange(len(first_seen))
    _, dense = np.unique(component, return_inverse=True)
    return pd.Series(rank[dense], index=meter_ids, name="group")


def plan_partitions(meters: pd.DataFrame, *, budget_bytes: float, bytes_per_meter: float,
                    upstream_asset_ids=()) -> PartitionPlan:
    """Split the meters into partitions of whole asset groups within a memory budget.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters table (``meter_id``, and the topology columns
        ``transformer_id``, ``feeder_id``, ``substation_id`` where known).
    budget_bytes : float
        Memory one partition may use for its meters [bytes] (the process's
        fixed :data:`BASE_BYTES` not included).
    bytes_per_meter : float
        Peak memory per meter [bytes], usually :func:`bytes_per_meter`.
    upstream_asset_ids : iterable of str, default ()
        Assets with upstream data; feeders and substations among them are
        kept whole (see :func:`asset_groups`).

    Returns
    -------
    PartitionPlan

    Raises
    ------
    ValueError
        When the budget does not hold a single meter, or ``meters`` has no
        ``meter_id`` column.

    Notes
    -----
    Groups are packed in the order of :func:`asset_groups` (smallest meter
    id first, which keeps neighbouring meters together) into partitions of
    at most ``max_meters = budget_bytes // bytes_per_meter`` meters, aiming
    at equal sizes: with ``n`` meters, a partition is closed once it holds
    ``ceil(n / ceil(n / max_meters))`` meters or the next group would not fit.
    A group larger than ``max_meters`` is never split: it becomes a
    partition of its own, marked ``oversized``. Same meters (in any row
    order), same budget: same plan.

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3", "M4", "M5"],
    ...                        "transformer_id": ["T1", "T1", "T2", "T2", "T3"]})
    >>> plan = plan_partitions(meters, budget_bytes=3e6, bytes_per_meter=1e6)
    >>> plan.meter_partition.tolist()
    [0, 0, 1, 1, 1]
    >>> list(plan.meter_ids(1))
    ['M3', 'M4', 'M5']
    """
    if col.METER_ID not in meters.columns:
        raise ValueError("meters has no 'meter_id' column; cannot plan partitions")
    max_meters = int(budget_bytes // bytes_per_meter) if bytes_per_meter > 0 else 0
    if max_meters < 1:
        raise ValueError(f"a budget of {budget_bytes:.0f} bytes holds no meter of "
                         f"{bytes_per_meter:.0f} bytes; raise the budget")
    group = asset_groups(meters, upstream_asset_ids=upstream_asset_ids)
    sizes = np.bincount(group.to_numpy())
    n_meters = int(sizes.sum())
    target = math.ceil(n_meters / max(1, math.ceil(n_meters / max_meters)))

    part_of_group = np.empty(len(sizes), dtype=np.int64)
    oversized = []
    part, filled = -1, max_meters  # forces a new partition for the first group
    for g, size in enumerate(sizes.tolist()):  # one step per asset group, not per meter
        if size > max_meters:
            part += 1
            part_of_group[g] = part
            oversized.append(part)
            filled = max_meters
            continue
        if filled >= target or filled + size > max_meters:
            part, filled = part + 1, 0
        part_of_group[g] = part
        filled += size

    meter_partition = pd.Series(part_of_group[group.to_numpy()], index=group.index,
                                name="partition")
    n_parts = part + 1
    partitions = pd.DataFrame({
        "n_meters": np.bincount(meter_partition.to_numpy(), minlength=n_parts),
        "n_groups": np.bincount(part_of_group, minlength=n_parts),
        "oversized": np.isin(np.arange(n_parts), oversized),
    }, index=pd.RangeIndex(n_parts, name="partition"))
    return PartitionPlan(meter_partition=meter_partition,
                         asset_partition=_asset_partition(meters, meter_partition),
                         partitions=partitions, max_meters=max_meters)


def _asset_partition(meters: pd.DataFrame, meter_partition: pd.Series) -> pd.Series:
    """Partition of every asset whose meters all lie in one partition."""
    members = asset_members(meters)
    part = meter_partition.reindex(members[col.METER_ID]).to_numpy()
    spread = pd.DataFrame({"asset_id": members[col.ASSET_ID].to_numpy(), "partition": part})
    span = spread.groupby("asset_id", sort=True)["partition"].agg(["min", "max"])
    whole = span[span["min"] == span["max"]]["min"].astype(np.int64)
    whole.index.name = col.ASSET_ID
    return whole.rename("partition")
