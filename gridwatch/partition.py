"""The analysis of one partition: grid, measure, decide, expected consumption, balance.

A partition is a set of whole transformers (and whole feeders / substations
where their balance needs them). Its analysis is a chain of pure functions
of the partition's cleaned tables (:class:`gridwatch.sources.Dataset`) and
of the figures shared by all partitions (:class:`Shared`):

1. :func:`grid_partition`: demand and the assets' delivered demand on the
   analysis grid, the meters' temperature and their daily figures;
2. :func:`measure`: the detector's measurement (needs ``shared.peers``);
3. :func:`decide`: the detector's decisions (``shared.calibration``) and
   each meter's expected consumption;
4. :func:`measure_partition_balance` and :func:`gridwatch.balance.decide_balance`
   (``shared.balance_calibration``): the energy balance of its assets.

Which figures are shared, how the passes over the partitions are made and
cached, and how the partitions' results are merged is
:mod:`gridwatch.runner`'s business: with ``Shared()`` (no figure from
outside) each step calibrates on the partition itself, which is the
all-at-once analysis of a plan of one partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.balance import Balance, BalanceCalibration, BalanceMeasurement, measure_balance
from gridwatch.baseline import ExpectedConsumption
from gridwatch.config import Config
from gridwatch.days import DayGrid
from gridwatch.detect import (
    Calibration,
    DailyFigures,
    Detection,
    Measurement,
    daily_figures,
    decide_visible_load,
    measure_visible_load,
    peer_counts_of,
)
from gridwatch.issues import IssueLog
from gridwatch.peers import DemandBands, PeerCounts
from gridwatch.resample import to_grid
from gridwatch.solar import floor_cells
from gridwatch.sources import Dataset
from gridwatch.weather import meter_temperature


@dataclass(frozen=True)
class Partition:
    """Meters and the assets with upstream data that are balanced with them.

    Attributes
    ----------
    meter_ids : tuple of str
    asset_ids : tuple of str
        Every meter below these assets is in ``meter_ids``.
    number : int
        Its number in a :class:`gridwatch.partitions.PartitionPlan` (-1: none).
    """

    meter_ids: tuple
    asset_ids: tuple = ()
    number: int = -1


def partitions_of(plan) -> list[Partition]:
    """The partitions of a :class:`gridwatch.partitions.PartitionPlan`."""
    return [Partition(meter_ids=tuple(plan.meter_ids(p)), asset_ids=tuple(plan.asset_ids(p)),
                      number=p) for p in range(plan.n_partitions)]


@dataclass
class Shared:
    """The figures every partition needs from all of them (``None``: from the partition itself)."""

    peers: PeerCounts | None = None
    calibration: Calibration | None = None
    balance_calibration: BalanceCalibration | None = None


@dataclass
class PartitionAnalysis:
    """Everything the final pass produced for one partition (or, merged, for all of them)."""

    table: pd.DataFrame
    detection: Detection
    expected: ExpectedConsumption
    kw: pd.DataFrame
    meters: pd.DataFrame
    balance: Balance | None
    issues: IssueLog
    no_window: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    input_issues: IssueLog = field(default_factory=IssueLog)
    row_counts: dict = field(default_factory=dict)
    readings_in_window: int = 0
    bands: DemandBands | None = None
    coarse: pd.DataFrame | None = None  # the daily and monthly meters' reads (gridwatch.resolution)


@dataclass
class Gridded:
    """A partition on the analysis grid: what every later step reads.

    Attributes
    ----------
    kw : pandas.DataFrame
        Net demand of the meters with data in the window [kW] (cells x meters).
    spread : numpy.ndarray or None
        Sub-cell spread of the demand (the detector's measurement only).
    meters : pandas.DataFrame
        The meters of ``kw``'s columns.
    no_window : list of str
        The partition's meters without a reading in the window.
    temperature : numpy.ndarray or None
        Daily mean temperature at each meter [degrees C].
    issues : IssueLog
    readings_in_window : int
    upstream_kw : pandas.DataFrame or None
        The assets' delivered demand [kW], when given.
    daily : gridwatch.detect.DailyFigures or None
        The meters' daily figures: the peer counts, then the detector.
    unmetered_pv : pandas.Series or None
        Meters behind PV read import-only (by ``meter_id``).
    """

    kw: pd.DataFrame
    spread: np.ndarray | None
    meters: pd.DataFrame
    no_window: list
    temperature: np.ndarray | None
    issues: IssueLog
    readings_in_window: int = 0
    upstream_kw: pd.DataFrame | None = None
    daily: DailyFigures | None = None
    unmetered_pv: pd.Series | None = None

    @property
    def has_upstream(self) -> bool:
        """Whether any asset of the partition has upstream data (an energy balance)."""
        return self.upstream_kw is not None


def grid_partition(sub: Dataset, index: pd.DatetimeIndex, grid: DayGrid, config: Config, *,
                   release: bool = False, on_release=None) -> Gridded:
    """The partition's demand and its assets' on the grid, its meters with data, their temperature.

    Also their daily figures, computed once for the peer counts of the first
    pass and the detector's measurement of the second.

    Parameters
    ----------
    sub : Dataset
        The partition's cleaned tables (readings may extend beyond the window).
    index : pandas.DatetimeIndex
        The analysis grid (UTC cell starts).
    grid : DayGrid
    config : Config
    release : bool, default False
        Drop ``sub.readings`` and ``sub.upstream`` once gridded (memory for
        the detection); ``on_release()`` is then called (e.g. to hand
        Arrow's freed buffers back).
    """
    interval_meters = sub.meters
    if sub.coarse is not None:  # daily and monthly meters: judged at their own resolution
        interval_meters = sub.meters[~sub.meters[col.METER_ID].astype(str).isin(
            sub.coarse[col.METER_ID])]
    meter_ids = pd.Index(interval_meters[col.METER_ID].astype(str))
    # to_grid ignores rows outside the index: no filtered copy of the readings.
    kw, _, spread = to_grid(sub.readings, sub.interval_minutes, meter_ids=meter_ids, index=index,
                            with_spread=True)
    export_kw = None
    if col.KWH_EXPORT in sub.readings.columns:
        export_kw, _ = to_grid(sub.readings, sub.interval_minutes, meter_ids=meter_ids,
                               index=index, value_column=col.KWH_EXPORT)
    ts = sub.readings[col.TIMESTAMP]
    in_window = int(((ts >= index[0]) & (ts < index[-1] + (index[1] - index[0]))).sum())
    upstream_kw = None
    if sub.upstream is not None and not sub.upstream.empty:
        asset_ids = ids_in_order(sub.upstream[col.ASSET_ID])
        upstream_kw, _ = to_grid(sub.upstream, sub.upstream_interval_minutes, meter_ids=asset_ids,
                                 index=index, id_column=col.ASSET_ID)
    if release:  # the long tables are not needed any more; free them before detection
        sub.readings = sub.upstream = None
        if on_release is not None:
            on_release()
    has_data = kw.notna().any(axis=0).to_numpy()
    meters = interval_meters[has_data].reset_index(drop=True)
    if not has_data.all():
        kw = kw.loc[:, has_data]
        spread = spread.loc[:, has_data]
        export_kw = None if export_kw is None else export_kw.loc[:, has_data]
    issues = IssueLog()
    temperature = meter_temperature(sub.weather, meters, index, grid, issues)
    demand = kw.to_numpy(dtype=np.float64)  # imported
    cells, pv, dark = floor_cells(demand, index, meters, local_hour=grid.hour_of_cell,
                                 cell_hours=grid.cell_hours,
                                 export_kw=None if export_kw is None else export_kw.to_numpy())
    if export_kw is not None:  # net: what the home draws beyond its own generation
        kw = kw - export_kw.fillna(0.0)
        demand = kw.to_numpy(dtype=np.float64)
    daily = daily_figures(demand, grid, analysis=config.analysis,
                          frozen_hours=config.data.frozen_hours, floor_cells=cells, dark=dark)
    return Gridded(kw=kw, spread=spread.to_numpy(), meters=meters,
                   no_window=list(meter_ids[~has_data]), temperature=temperature, issues=issues,
                   readings_in_window=in_window, upstream_kw=upstream_kw, daily=daily,
                   unmetered_pv=pd.Series(pv.import_only, index=meters[col.METER_ID].astype(str))
                   if pv.import_only.any() else None)


def ids_in_order(ids: pd.Series) -> pd.Index:
    """The distinct ids in order of appearance, as str (no string per row for a Categorical)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = ids.cat.codes.to_numpy()
        if len(codes) == 0 or codes.min() >= 0:
            return pd.Index(ids.cat.categories[pd.unique(codes)].astype(str))
    return pd.Index(pd.unique(ids.astype(str)))


def peer_counts(g: Gridded, grid: DayGrid, config: Config) -> PeerCounts:
    """The partition's contribution to the peer groups' daily figures (they add up)."""
    return peer_counts_of(g.kw, grid, g.meters, analysis=config.analysis,
                          frozen_hours=config.data.frozen_hours, daily=g.daily)


def measure(g: Gridded, grid: DayGrid, config: Config, shared: Shared) -> Measurement:
    """The detector's measurement of the partition's meters (``g.spread`` and ``g.daily`` needed)."""
    return measure_visible_load(
        g.kw.to_numpy(dtype=np.float64), grid, g.meters, peers=shared.peers,
        temperature_c=g.temperature, spread_kw=g.spread, detection=config.detection,
        analysis=config.analysis, frozen_hours=config.data.frozen_hours, daily=g.daily)


def decide(measured: Measurement, g: Gridded, index: pd.DatetimeIndex, grid: DayGrid,
           shared: Shared) -> tuple[Detection, IssueLog, ExpectedConsumption]:
    """The detector's decisions, their issues, and each meter's expected consumption."""
    detection, issues = decide_visible_load(measured, shared.calibration)
    return detection, issues, expected_consumption(g, detection, index, grid)


def expected_consumption(g: Gridded, detection: Detection, index: pd.DatetimeIndex,
                         grid: DayGrid) -> ExpectedConsumption:
    """Expected demand of each meter, fitted on the cells before its flagged onset."""
    cells = np.arange(len(index))[:, None]
    reference = (detection.onset_cell[None, :] < 0) | (cells < detection.onset_cell[None, :])
    return ExpectedConsumption().fit(g.kw.to_numpy(dtype=np.float64), grid, reference,
                                     np.nan_to_num(detection.expected_mean_kw))


def measure_partition_balance(sub: Dataset, g: Gridded, detection: Detection,
                              expected: ExpectedConsumption, index: pd.DatetimeIndex,
                              grid: DayGrid, config: Config) -> BalanceMeasurement:
    """The energy balance's measurement of the partition's assets (``g.has_upstream``)."""
    # Gaps in a meter are filled with what it would draw, visible rigs included
    # (a rig left out of the fill would look like energy the meters miss).
    fill = expected.predict(grid)
    cells = np.arange(len(index))[:, None]
    onset = detection.onset_cell[None, :]
    rig_kw = detection.table[col.EXCESS_KW].to_numpy(dtype=np.float64)[None, :]
    fill += np.where((onset >= 0) & (cells >= onset), rig_kw, 0.0)
    expected_kw = pd.DataFrame(fill, index=g.kw.index, columns=g.kw.columns)
    b = config.balance
    return measure_balance(
        g.upstream_kw, g.kw, expected_kw, sub.meters, grid, min_coverage=b.min_coverage,
        fdr_alpha=b.fdr_alpha, min_unexplained_kw=b.min_unexplained_kw,
        max_no_load_share=b.max_no_load_share, no_load_floor_kw=b.no_load_floor_kw,
        min_day_coverage=config.analysis.min_day_coverage, frozen_hours=config.data.frozen_hours,
        frozen_mask=detection.masked, unmetered_pv=g.unmetered_pv,
        use_inferred_topology=b.use_inferred_topology)


def keep_only(a: PartitionAnalysis, keep, *, flagged: bool = True) -> PartitionAnalysis:
    """The analysis with the arrays of the meters worth drawing only; every table kept whole.

    Kept: meters flagged by the detector, every suspect of the energy balance
    (unless ``flagged`` is False: a run without plots), and the ids in
    ``keep``. The rest of a partitioned run's demand matrices is dropped
    here, so that the end of the run holds O(flagged), not O(all meters).
    """
    ids = a.kw.columns.astype(str)
    wanted = ids.isin(list(keep))
    if flagged:
        wanted = wanted | a.table[col.FLAGGED].to_numpy(dtype=bool)
    if flagged and a.balance is not None and len(a.balance.suspects):
        wanted = wanted | ids.isin(a.balance.suspects[col.METER_ID].astype(str))
    pos = np.flatnonzero(wanted)
    d = a.detection
    a.detection = Detection(
        table=d.table, **{name: getattr(d, name)[:, pos] for name in
                          ("floor_kw", "mean_kw", "expected_floor_kw", "expected_mean_kw", "masked")},
        onset_cell=d.onset_cell[pos])
    a.expected = a.expected.select(pos)
    a.kw = a.kw.iloc[:, pos]
    a.meters = a.meters.iloc[pos].reset_index(drop=True)
    return a
