"""Hidden load: the energy balance of transformers, feeders and substations.

A rig wired around its meter is invisible to the meter but not to the asset
that feeds it. For every asset with upstream data this module compares what
the asset delivers with what the meters below it record, removes the
technical losses, finds a new steady unexplained load (or one running since
before the window), dates it, sizes it and names the meters most likely to
hide it (issue 3).

The steps, all vectorised over assets (``(n_cells, n_assets)`` matrices built
with one sparse ``meters x assets`` product; no Python loop over cells or
assets except to format text):

1. **Alignment.** Missing meter cells, and runs of frozen (identical,
   non-zero) readings, are filled from each meter's expected demand;
   ``coverage`` is the share of an asset's metered energy that was measured.
   Asset-cells below ``min_coverage`` are dropped and counted.
2. **Losses and a level shift, fitted together.** The daily mean residual
   ``delivered - metered`` is modelled as ``a + c m + b m^2`` (no-load
   losses; a proportional term that absorbs a CT or meter ratio error; load
   losses; ``m`` the metered demand over its mean) plus one upward step,
   scanned over every onset day (:func:`gridwatch.levelshift.scan_level_shift`),
   so the step never contaminates the loss model. An earlier, smaller and
   steady step moves the onset to the first install stage, and the switch-on
   is dated to the hour (:func:`gridwatch.features.onset_cell`).
3. **Loss curve on hourly cells.** ``a``, ``b``, ``c`` are refitted on the
   hourly cells, where ``m`` varies over the day enough to tell them apart
   (batched ``n_assets x 4 x 4`` normal equations, Huber-reweighted so that
   peak-hour curtailment or a badly filled cell does not bend the curve).
   Where the scan found a candidate load the curve is fitted on the cells
   before it only (a bypassed household has a daily shape of its own); else
   on all cells with the step as a regressor.
4. **Decision.** The step's z-score divides its size by its standard error,
   by the change an asset of that size shows without a new load (fitted
   across the population) and by the uncertainty of the filled cells; its
   null is the same statistic for every asset's best *downward* step, which
   hidden loads never produce; Benjamini-Hochberg controls the false
   discoveries across assets. With few assets a fixed, conservative z
   threshold is used. The load must be present on most days since the onset
   and at least ``min_unexplained_kw``. A load running before the window
   shows as a no-load term ``a`` far above what a transformer of that size
   loses (``max_no_load_share`` of its load plus a floor) and far above the
   other assets'.
5. **Suspects.** Each meter of a flagged asset is scored by the evidence that
   it hides the load: its consumption fell (to near zero, or by an amount
   that matches the unexplained load) at the onset, its readings froze then,
   or a flat part of the load appeared on it. A rig on a separate line leaves
   no trace on any meter: the asset is flagged and says so.

References: ``docs/data-contract.md §upstream``, ``§transformers.csv``; issue 3.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse, stats
from statsmodels.stats.multitest import multipletests

from gridwatch import columns as col
from gridwatch import topology_check
from gridwatch.days import DayGrid, by_day_any, daily_mean, daily_quantiles, sum_by_slot
from gridwatch.features import hourly_increment, nanmedian_columns, onset_cell, repeated_value_runs
from gridwatch.issues import IssueLog
from gridwatch.levelshift import scan_level_shift
from gridwatch.lstsq import batched_least_squares
from gridwatch.metering_faults import clock_offsets, ratio_changes, shift_rows
from gridwatch.solar import dark_cells
from gridwatch.topology import LEVELS, asset_members, feeder_of_transformers, membership_matrix

__all__ = ["Balance", "TABLE_COLUMNS", "SUSPECTS_COLUMNS", "energy_balance"]

#: Columns of :attr:`Balance.table`, contract-facing ones first.
TABLE_COLUMNS = (
    col.ASSET_ID, "level", col.FLAGGED, col.KIND, col.UNEXPLAINED_KW, col.ONSET, col.SUSPECTS, col.REASONS,
    col.COVERAGE, "n_meters", "loss_kw",
    # diagnostics
    "excess_kwh", "load_type", "clock_offset_h", "ratio_factor", "ratio_mar", "ratio_noise",
    "n_meters_without_data", "mean_delivered_kw", "mean_metered_kw",
    "loss_share", "no_load_kw", "ratio_error", "load_loss_kw", "step_kw", "step_t", "step_z",
    "candidate_onset", "persistence", "excess_preexisting_kw", "p_value", "q_value",
    "valid_days", "low_coverage_cells",
)
#: Columns of :attr:`Balance.suspects`.
SUSPECTS_COLUMNS = (
    col.ASSET_ID, col.METER_ID, col.RANK, "evidence", "strong", col.REASONS, col.EXCESS_KW,
    col.EXCESS_KWH, col.EST_LOSS, col.ONSET, "before_kw", "after_kw", "fell_share",
)

KIND_ONSET = "new_load"
KIND_PREEXISTING = "preexisting_load"

MIN_PRE_DAYS = 5  # valid days before a candidate onset
MIN_POST_DAYS = 2  # valid days from a candidate onset on
STAGE_MIN_T = 4.0  # t an earlier install stage needs to move the onset
STAGE_MAX_SPREAD = 0.35  # day-to-day spread of a stage, relative to its size [-]
CANDIDATE_T = 3.0  # t of a daily step from which the loss curve is fitted before it only
RECENT_DAYS = 7  # the load's size is its median over this many last days
MIN_PERSISTENCE = 0.75  # share of days since the onset on which the load is present
HUBER_K = 2.0  # Huber weight cut-off of the hourly loss fit [robust sigmas]
IRLS_ITERATIONS = 4
TYPICAL_NO_LOAD_SHARE = 0.01  # no-load losses of mean delivered, when the population is small
NO_LOAD_SHARE_SCALE_FLOOR = 0.005  # smallest spread of a/delivered across assets [-]
SUSPECT_WINDOW_DAYS = 7  # days before / after an onset compared for each meter
SCAN_WINDOW_DAYS = 12  # a meter's own change is looked for this close to the onset
TIMING_DAYS = 2  # a meter's own change this close to the asset's onset is "at the onset"
NEAR_ZERO_KW = 0.05  # recorded demand at or below this is "near zero" [kW]
NEAR_ZERO_SHARE = 0.15  # ... or at or below this share of what it was
NIGHT_LAST_HOUR = 4  # a meter behind PV is judged on the local hours 0..4 [h]
MAX_MATCH = 1.5  # a fall bigger than this many times the unexplained load did not hide it
SIBLING_T = 4.0  # t of a rise and of a sibling's fall that are matched as a map error
MIN_EVIDENCE = 0.1  # suspects with less evidence are not listed
UNIT_FACTOR = 1000.0  # Wh vs kWh, kWh vs MWh
UNIT_TOLERANCE = 3.0  # an upstream within this factor of UNIT_FACTOR x its meters is a unit error
FILL_REL_ERROR = 0.25  # relative error of a filled meter's daily mean [-]
TOPOLOGY_PASSES = 2  # looks at the map, each with the meters found before moved
DOUBTFUL_DETAIL = ("its consumption does not appear in its listed transformer's upstream energy "
                   "(see topology.csv for the likely transformer); check the network map")


@dataclass
class Balance:
    """Energy balance of every asset with upstream data, and the suspects of the flagged ones.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per asset with upstream data (:data:`TABLE_COLUMNS`):
        ``asset_id``, ``level`` (``transformer``, ``feeder``, ``substation`` or
        ``unknown``), ``flagged`` (bool), ``unexplained_kw`` (steady load
        delivered but not metered, above modelled losses [kW]; 0 when not
        flagged), ``onset`` (``YYYY-MM-DD``, empty when none or when the load
        ran before the window), ``suspects`` (meter ids, most likely first,
        ``;``-separated), ``reasons``, ``coverage`` (mean share of the metered
        energy that was measured [-]), ``n_meters``, ``loss_kw`` (mean
        modelled technical losses [kW]) and diagnostics.
    suspects : pandas.DataFrame
        One row per (flagged asset, suspect meter) (:data:`SUSPECTS_COLUMNS`):
        ``rank`` (1 = most likely), ``evidence`` (0..1), ``strong`` (the
        meter's own data carry strong evidence: its consumption fell by at
        least half the unexplained load, or to near zero, within
        ``TIMING_DAYS`` of the onset), ``reasons``, ``excess_kw`` and
        ``excess_kwh`` (the asset's unexplained load [kW] and energy since
        the onset [kWh]), ``est_loss`` (``excess_kwh`` x the meter's tariff).
    delivered_kw, metered_kw, loss_kw, unexplained_kw : numpy.ndarray of shape (n_days, n_assets)
        Daily means over the usable cells of each balanced asset [kW]:
        delivered, metered (measured + filled), modelled technical losses
        and the rest. Columns follow :attr:`asset_ids`; NaN on unusable days.
    asset_ids : list of str
        Columns of the daily arrays (the balanced assets).
    dates : pandas.DatetimeIndex
        Rows of the daily arrays (local days).
    topology : pandas.DataFrame
        The meters whose listed transformer is doubtful
        (:data:`gridwatch.topology_check.TOPOLOGY_COLUMNS`, ``topology.csv``).
    """

    table: pd.DataFrame
    suspects: pd.DataFrame
    delivered_kw: np.ndarray
    metered_kw: np.ndarray
    loss_kw: np.ndarray
    unexplained_kw: np.ndarray
    asset_ids: list = field(default_factory=list)
    dates: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))
    topology: pd.DataFrame = field(default_factory=topology_check.empty_topology)


_MEASURED = (
    "a_kw", "allowed", "b_kw", "c_kw", "complete", "day_onset", "delivered_day", "loss_day",
    "mean_delivered", "mean_metered", "metered_day", "min_cells", "n_post", "onset",
    "persistence", "scan", "size_step", "step_kw", "testable", "unexplained_day", "y",
)
"""Names of :attr:`BalanceMeasurement.arrays`."""


@dataclass
class BalanceMeasurement:
    """What the energy balance measured on some assets, before judging significance.

    Made by :func:`measure_balance`, finished by :func:`decide_balance`;
    picklable, so a partitioned run keeps it on disk between its passes.

    Attributes
    ----------
    evidence : pandas.DataFrame
        The figures :meth:`BalanceCalibration.fit` takes, one row per balanced
        asset (index ``asset_id``).
    issues : IssueLog
        Data-quality findings of the measurement.
    options : dict
        The thresholds :func:`decide_balance` applies.
    aligned : None
        When no asset can be balanced.
    arrays : dict of str to numpy.ndarray
        Daily ``(n_days, n_assets)``, per-cell ``(n_cells, n_assets)`` and
        per-asset series of the measurement, by name.
    """

    evidence: pd.DataFrame
    issues: IssueLog
    grid: DayGrid
    options: dict
    topo: _Topology
    aligned: _Aligned | None = None
    arrays: dict = field(default_factory=dict)
    topology: pd.DataFrame = field(default_factory=topology_check.empty_topology)


class _quiet:
    """Silence numpy's 'All-NaN slice' / 'Mean of empty slice' warnings locally."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# =====================================================================================
# public API
# =====================================================================================
def energy_balance(upstream_kw: pd.DataFrame, meter_kw: pd.DataFrame, expected_kw: pd.DataFrame | None,
                   meters: pd.DataFrame, grid: DayGrid, *, min_coverage: float = 0.8,
                   fdr_alpha: float = 0.01, min_unexplained_kw: float = 0.5,
                   max_no_load_share: float = 0.03, no_load_floor_kw: float = 0.2,
                   min_day_coverage: float = 0.5, frozen_hours: int = 24,
                   min_population: int = 20, fixed_z: float = 6.0,
                   frozen_mask: np.ndarray | None = None,
                   unmetered_pv: pd.Series | None = None,
                   calibration: BalanceCalibration | None = None,
                   evidence_only: bool = False, check_topology: bool = True,
                   use_inferred_topology: bool = False) -> tuple[Balance, IssueLog]:
    """Balance every asset with upstream data against its meters; flag hidden loads.

    Called on all assets at once, the assets given are the population that
    calibrates significance. A run cut into partitions (whole assets each)
    calls it with ``evidence_only=True`` on every partition, fits one
    :class:`BalanceCalibration` on the concatenated evidence, and calls it
    again with that calibration: each asset gets the all-at-once result.

    Parameters
    ----------
    upstream_kw : pandas.DataFrame of shape (n_cells, n_upstream)
        Mean demand delivered by each asset per grid cell [kW], columns
        ``asset_id``, NaN where missing (:func:`gridwatch.resample.to_grid`
        with ``id_column="asset_id"``).
    meter_kw : pandas.DataFrame of shape (n_cells, n_meters)
        Mean demand recorded by each meter per grid cell [kW], columns
        ``meter_id``, NaN where missing; same index as ``upstream_kw``.
    expected_kw : pandas.DataFrame of shape (n_cells, n_meters) or None
        Expected demand of each meter [kW] used to fill its missing cells.
        Meters absent from it (or ``None``) are filled with their own mean
        per hour of day on weekdays and weekends (48 slots) over the window.
    meters : pandas.DataFrame
        The meters table (``meter_id``, ``transformer_id``, ``feeder_id``,
        ``substation_id``, ``customer_class``, ``tariff_per_kwh`` ...).
    grid : DayGrid
        Local days of the grid (``grid.index`` must equal the frames' index).
    min_coverage : float, default 0.8
        Asset-cells whose measured share of metered energy is lower are
        dropped and counted as ``balance.low_coverage`` [-].
    fdr_alpha : float, default 0.01
        False-discovery rate across assets (Benjamini-Hochberg).
    min_unexplained_kw : float, default 0.5
        Smaller unexplained loads are never flagged [kW].
    max_no_load_share : float, default 0.03
        A no-load term above this share of mean delivered demand (plus
        ``no_load_floor_kw``) is not a transformer's loss: it is a load that
        ran before the window [-].
    no_load_floor_kw : float, default 0.2
        Absolute allowance added to ``max_no_load_share`` [kW].
    min_day_coverage : float, default 0.5
        Days with fewer usable cells than this share are missing [-].
    frozen_hours : int, default 24
        Identical non-zero meter readings for this long are a stuck register;
        they are filled like missing cells [h].
    min_population : int, default 20
        With fewer assets to compare, significance falls back to ``fixed_z``.
    fixed_z : float, default 6.0
        t-statistic a step needs when the population is too small.
    frozen_mask : numpy.ndarray of bool, shape (n_cells, n_meters), optional
        Cells of ``meter_kw`` already found to be stuck registers (e.g.
        :attr:`gridwatch.detect.Detection.masked`, same columns as
        ``meter_kw``); zero cells in it are ignored. Computed here when omitted.
    unmetered_pv : pandas.Series of bool, optional
        Meters behind rooftop PV whose export is not read, by ``meter_id``: their
        assets are balanced on the dark hours (:func:`measure_balance`).
    calibration : BalanceCalibration, optional
        Significance calibrated on every asset of the run (default: on these).
    evidence_only : bool, default False
        Return only the per-asset evidence (a DataFrame, index ``asset_id``)
        and the issues, for :meth:`BalanceCalibration.fit`.
    check_topology : bool, default True
        List the meters whose listed transformer is doubtful
        (:attr:`Balance.topology`; :mod:`gridwatch.topology_check`).
    use_inferred_topology : bool, default False
        Balance the confidently misplaced meters under their likely transformer.

    Returns
    -------
    Balance
    IssueLog
        ``upstream.asset_unknown_topology``, ``balance.no_meter_data``,
        ``balance.meter_without_data``, ``balance.low_coverage``,
        ``balance.frozen_reading_filled``, ``upstream.missing_cells``,
        ``upstream.asset_ambiguous_level``.

    Raises
    ------
    ValueError
        When the frames' index differs from ``grid.index``.

    Notes
    -----
    A meter listed below an asset but with no data at all in the window
    makes the asset's metered energy incomplete: the asset is still tested
    for a new load (a constant gap does not make a step) but not for a load
    running before the window (``balance.meter_without_data``).

    Examples
    --------
    >>> balance, issues = energy_balance(upstream_kw, kw, None, meters, grid)  # doctest: +SKIP
    >>> balance.table.loc[balance.table["flagged"], ["asset_id", "unexplained_kw", "onset"]]  # doctest: +SKIP
    """
    measured = measure_balance(
        upstream_kw, meter_kw, expected_kw, meters, grid, min_coverage=min_coverage,
        fdr_alpha=fdr_alpha, min_unexplained_kw=min_unexplained_kw,
        max_no_load_share=max_no_load_share, no_load_floor_kw=no_load_floor_kw,
        min_day_coverage=min_day_coverage, frozen_hours=frozen_hours,
        min_population=min_population, fixed_z=fixed_z, frozen_mask=frozen_mask,
        unmetered_pv=unmetered_pv, check_topology=check_topology,
        use_inferred_topology=use_inferred_topology)
    if evidence_only:
        return measured.evidence, measured.issues
    return decide_balance(measured, meter_kw, meters, calibration)


def measure_balance(upstream_kw: pd.DataFrame, meter_kw: pd.DataFrame,
                    expected_kw: pd.DataFrame | None, meters: pd.DataFrame, grid: DayGrid, *,
                    min_coverage: float = 0.8, fdr_alpha: float = 0.01,
                    min_unexplained_kw: float = 0.5, max_no_load_share: float = 0.03,
                    no_load_floor_kw: float = 0.2, min_day_coverage: float = 0.5,
                    frozen_hours: int = 24, min_population: int = 20, fixed_z: float = 6.0,
                    frozen_mask: np.ndarray | None = None,
                    unmetered_pv: pd.Series | None = None, check_topology: bool = True,
                    use_inferred_topology: bool = False) -> BalanceMeasurement:
    """Everything the energy balance measures before it judges significance.

    The expensive part of :func:`energy_balance` (parameters as there): the
    alignment of meters under their assets, the daily series, the loss fit
    and the onset scan. A run cut into partitions measures each partition
    once, fits one :class:`BalanceCalibration` on every partition's
    :attr:`BalanceMeasurement.evidence`, and finishes each partition with
    :func:`decide_balance`.

    ``unmetered_pv`` (bool per ``meter_id``) names the meters behind rooftop PV
    whose export is not read (an import-only meter): the asset delivers less
    than its meters record whenever the sun shines on them, by an amount the
    clouds change every day. The balance of an asset with such a meter is
    judged on the hours when the sun is down at its meters.

    ``check_topology`` tests every meter against the transformers of its
    feeder (:func:`gridwatch.topology_check.check_topology`) and lists the
    meters whose listed transformer is doubtful; with
    ``use_inferred_topology`` the balance is measured again with the
    confidently misplaced meters moved to their likely transformer.

    Returns
    -------
    BalanceMeasurement
        Picklable; ``evidence`` has one row per balanced asset (index ``asset_id``).
    """
    issues = IssueLog()
    _check_frames(upstream_kw, meter_kw, expected_kw, grid)
    topo = _topology(upstream_kw, meter_kw, meters, issues)
    options = {"fdr_alpha": fdr_alpha, "fixed_z": fixed_z, "max_no_load_share": max_no_load_share,
               "min_population": min_population, "min_coverage": min_coverage,
               "min_unexplained_kw": min_unexplained_kw}
    if not topo.balanced:
        return _nothing_measured(issues, grid, options, topo)
    align_issues = IssueLog()
    al = _align(upstream_kw, meter_kw, expected_kw, topo, grid, align_issues,
                min_coverage=min_coverage, frozen_hours=frozen_hours, frozen_mask=frozen_mask)
    if _without_unit_errors(al, topo, issues):
        if not topo.balanced:
            return _nothing_measured(issues, grid, options, topo)
        align_issues = IssueLog()
        al = _align(upstream_kw, meter_kw, expected_kw, topo, grid, align_issues,
                    min_coverage=min_coverage, frozen_hours=frozen_hours, frozen_mask=frozen_mask)
    issues.extend(align_issues)
    clock = clock_offsets(al.delivered, al.metered, grid)
    _correct_clocks(al, clock, topo, min_coverage, issues)
    n_days = grid.n_days
    day_idx = np.arange(n_days)
    balanced, n_without = topo.balanced, topo.n_without
    cell_h = grid.cell_hours
    nominal = 24 / cell_h
    min_cells = np.full(n_days, max(int(np.ceil(nominal * min_day_coverage)), 1))
    asset_min_cells = _dark_hours_only(al, topo, meters, grid, unmetered_pv, min_cells,
                                       min_day_coverage, issues)
    # the map is checked on the cells the balance uses (dark hours behind unmetered PV)
    mapping = topology_check.empty_topology()
    if check_topology:
        map_issues = IssueLog()
        mapping = _check_membership(al, topo, meter_kw, meters, grid, map_issues)
        if use_inferred_topology and len(mapping):
            moved_meters, n_moved = topology_check.inferred_meters(meters, mapping)
            if n_moved:
                again = measure_balance(
                    upstream_kw, meter_kw, expected_kw, moved_meters, grid,
                    min_coverage=min_coverage, fdr_alpha=fdr_alpha,
                    min_unexplained_kw=min_unexplained_kw, max_no_load_share=max_no_load_share,
                    no_load_floor_kw=no_load_floor_kw, min_day_coverage=min_day_coverage,
                    frozen_hours=frozen_hours, min_population=min_population, fixed_z=fixed_z,
                    frozen_mask=frozen_mask, unmetered_pv=unmetered_pv, check_topology=False)
                moved = mapping[(mapping["confidence"] >= topology_check.MIN_INFERRED_CONFIDENCE)
                                & (mapping["likely_transformer_id"] != "")]
                map_issues.add_per_meter(
                    "meters.transformer_inferred", "meters",
                    pd.Series(1, index=moved[col.METER_ID].astype(str).to_numpy()), "resolved",
                    detail="balance.use_inferred_topology: balanced under its likely transformer "
                           "(topology.csv), not the one listed in meters", severity="info")
                again.issues = IssueLog().extend(map_issues).extend(again.issues)
                again.topology = mapping
                return again
        issues.extend(map_issues)
    valid, x, resid = al.valid, al.x, al.resid

    # --- daily series over the usable cells ---------------------------------------------
    y = daily_mean(resid, grid, asset_min_cells)  # delivered - metered [kW]
    x1 = daily_mean(np.where(valid, x, np.nan), grid, asset_min_cells)
    x2 = daily_mean(np.where(valid, x * x, np.nan), grid, asset_min_cells)
    delivered_day = daily_mean(np.where(valid, al.delivered, np.nan), grid, asset_min_cells)
    metered_day = daily_mean(np.where(valid, al.metered, np.nan), grid, asset_min_cells)
    filled_day = daily_mean(np.where(valid, al.filled, np.nan), grid, asset_min_cells)

    # --- losses and a level shift, jointly, on daily means ---------------------------
    X = np.stack([np.ones_like(y), x1, x2], axis=2).transpose(1, 0, 2)  # (A, D, 3)
    X[np.isnan(y).T] = np.nan
    min_pre = max(3, min(MIN_PRE_DAYS, n_days // 3))
    on = _onset(y, X, resid, grid, min_pre=min_pre, min_unexplained_kw=min_unexplained_kw)
    # The best fall of every asset (the null of the step test, and a sibling's fall that
    # matches a rise: a meter on the wrong transformer), measured before any correction.
    down_kw, se_down, fill_down, down_onset = _downward_step(y, X, on.scan, filled_day,
                                                             min_pre=min_pre)
    with np.errstate(divide="ignore", invalid="ignore"):
        down_t = np.where(se_down > 0, down_kw / se_down, np.nan)
    down_persistence = _fall_persistence(y, on.scan, down_onset, down_kw)
    fall_kw = -_local_step_kw(y, down_onset)  # its size where it happens
    feeder = _feeders_of_assets(topo, meters)
    map_fall = _map_error_falls(balanced, feeder, on.scan, down_onset, fall_kw,
                                np.where(down_persistence >= MIN_PERSISTENCE, down_t, np.nan),
                                min_unexplained_kw)
    if map_fall.found.any():
        # a fall that a sibling's rise accounts for is a meter's load moving between the
        # listings, not a change of this asset: taken out, the asset's own step shows
        y, resid = _without_falls(y, resid, grid, map_fall)
        on = _onset(y, X, resid, grid, min_pre=min_pre, min_unexplained_kw=min_unexplained_kw)
    scan, day_onset, onset, first_full = on.scan, on.day_onset, on.onset, on.first_full
    partial_day, install_cell, post_cell = on.partial_day, on.install_cell, on.post_cell
    staged, stage_kw = on.staged, on.stage_kw

    # --- technical losses, refitted on hourly cells ------------------------------------
    # Where the scan found a candidate load, the loss curve is fitted on the cells
    # before it only: a hidden load with a daily shape (a whole house bypassed)
    # must not bend it. Elsewhere all cells are used, with the step as a regressor.
    candidate = ((day_onset >= 0) & (first_full >= 0)
                 & (np.nan_to_num(scan.shift) >= 0.5 * min_unexplained_kw)
                 & (np.nan_to_num(scan.t) >= CANDIDATE_T))
    reference = ~(candidate[None, :] & (post_cell | install_cell))
    beta = _hourly_loss_fit(np.where(install_cell | ~reference, np.nan, resid), x,
                            post_cell & ~candidate[None, :])
    a_kw, c_kw, b_kw = beta[:, 0], beta[:, 1], beta[:, 2]
    loss_cell = a_kw + c_kw * x + b_kw * x * x
    loss_day = daily_mean(np.where(valid, loss_cell, np.nan), grid, asset_min_cells)
    unexplained_day = y - loss_day
    post_day = (day_idx[:, None] >= first_full[None, :]) & (first_full[None, :] >= 0)
    full_day = ~((day_idx[:, None] == onset[None, :]) & partial_day[None, :])
    with _quiet():
        step_kw = np.where(candidate, nanmedian_columns(np.where(post_day, unexplained_day, np.nan))
                           - nanmedian_columns(np.where(~post_day & full_day, unexplained_day, np.nan)),
                           beta[:, 3])

    # Size: the median of the last RECENT_DAYS days on which the load ran.
    first_stage_kw = np.where(staged, np.fmin(stage_kw, step_kw), step_kw)
    with np.errstate(invalid="ignore"):
        present = (unexplained_day > 0.5 * first_stage_kw[None, :]) & post_day & full_day
    n_post = (post_day & full_day & ~np.isnan(unexplained_day)).sum(axis=0)
    persistence = np.where(n_post > 0, present.sum(axis=0) / np.maximum(n_post, 1), np.nan)
    recent = present & (np.cumsum(present[::-1], axis=0)[::-1] <= RECENT_DAYS)
    with _quiet():
        size_step = nanmedian_columns(np.where(recent, unexplained_day, np.nan))
    size_step = np.where(np.isnan(size_step), step_kw, size_step)

    # --- the no-load term: a load running before the window ---------------------------
    with _quiet():
        mean_delivered = np.nanmean(delivered_day, axis=0)
        mean_metered = np.nanmean(metered_day, axis=0)
    share = a_kw / np.maximum(mean_delivered, 1e-6)
    complete = (n_without.reindex(balanced).to_numpy() == 0)
    allowed = max_no_load_share * mean_delivered + no_load_floor_kw

    # --- significance against the population of assets (maybe more than these) -------
    with np.errstate(divide="ignore", invalid="ignore"):
        se_step = np.where(np.isfinite(scan.t) & (scan.t > 0), scan.shift / scan.t, np.inf)
    testable = (onset >= 0) & np.isfinite(step_kw)
    # Filled cells are estimates: a change in how much is filled at the onset (a meter
    # that stops reporting, or freezes) could make a step of its own.
    fill_unc = FILL_REL_ERROR * _change_at(filled_day, onset)

    # --- a ratio change of the upstream measurement is not a load ----------------------
    ratio = _ratio_change(al, grid, scan.onset, scan.t, down_onset, down_t, issues, topo,
                          mapping, meter_kw)
    fault = ratio.found | clock.certain
    evidence = pd.DataFrame({
        "share": share, "mean_delivered_kw": mean_delivered, "complete": complete,
        "testable": testable, "step_kw": step_kw, "se_step_kw": se_step, "fill_unc_kw": fill_unc,
        "down_kw": down_kw, "se_down_kw": se_down, "fill_down_kw": fill_down,
        "ratio_change": ratio.found,
    }, index=pd.Index(list(balanced), name=col.ASSET_ID))
    return BalanceMeasurement(
        evidence=evidence, issues=issues, grid=grid, options=options, topo=topo, aligned=al,
        topology=mapping,
        arrays={"a_kw": a_kw, "allowed": allowed, "b_kw": b_kw, "c_kw": c_kw, "complete": complete,
                "day_onset": day_onset, "delivered_day": delivered_day, "loss_day": loss_day,
                "mean_delivered": mean_delivered, "mean_metered": mean_metered,
                "metered_day": metered_day, "min_cells": min_cells, "n_post": n_post,
                "onset": onset, "persistence": persistence, "scan": scan, "size_step": size_step,
                "step_kw": step_kw, "testable": testable, "unexplained_day": unexplained_day,
                "y": y, "clock_hours": clock.hours, "clock_certain": clock.certain,
                "clock_rss_ratio": clock.rss_ratio, "ratio_found": ratio.found,
                "ratio_factor": ratio.factor, "ratio_day": ratio.day, "fault": fault,
                "ratio_mar": ratio.mar_ratio, "ratio_noise": ratio.noise_ratio,
                "ratio_possible": ratio.possible,
                "down_onset": down_onset, "down_kw": down_kw,
                "down_persistence": down_persistence, "fall_kw": fall_kw,
                "map_fall_kw": map_fall.kw, "map_fall_day": map_fall.day,
                "map_fall_partner": map_fall.partner, "feeder": feeder})


def _nothing_measured(issues, grid, options, topo) -> BalanceMeasurement:
    """The measurement of a partition without a balanced asset."""
    return BalanceMeasurement(
        evidence=pd.DataFrame(columns=list(BalanceCalibration.EVIDENCE),
                              index=pd.Index([], name=col.ASSET_ID)),
        issues=issues, grid=grid, options=options, topo=topo)


def decide_balance(measured: BalanceMeasurement, meter_kw: pd.DataFrame, meters: pd.DataFrame,
                   calibration: BalanceCalibration | None = None) -> tuple[Balance, IssueLog]:
    """Finish an energy balance: significance, flags, estimates, suspects and reasons.

    Parameters
    ----------
    measured : BalanceMeasurement
        From :func:`measure_balance`.
    meter_kw, meters : pandas.DataFrame
        As given to :func:`measure_balance` (the suspects are ranked on them).
    calibration : BalanceCalibration, optional
        Significance calibrated on every asset of the run (default: on the
        measured assets alone).

    Returns
    -------
    Balance, IssueLog
        As :func:`energy_balance`.
    """
    m, grid, topo, al = measured, measured.grid, measured.topo, measured.aligned
    issues = IssueLog().extend(m.issues)
    if al is None:
        return _empty_balance(topo.up_ids, topo.meta, topo.why_not, grid), issues
    fdr_alpha, fixed_z, max_no_load_share, min_population, min_coverage, min_unexplained_kw = (
        m.options[k] for k in ("fdr_alpha", "fixed_z", "max_no_load_share", "min_population",
                               "min_coverage", "min_unexplained_kw"))
    balanced, up_ids, n_without = topo.balanced, topo.up_ids, topo.n_without
    evidence = m.evidence
    n_days = grid.n_days
    day_idx = np.arange(n_days)
    cell_h = grid.cell_hours
    (a_kw, allowed, b_kw, c_kw, complete, day_onset, delivered_day, loss_day, mean_delivered,
     mean_metered, metered_day, min_cells, n_post, onset, persistence, scan, size_step, step_kw,
     testable, unexplained_day, y) = (
        m.arrays[name] for name in _MEASURED)
    valid, has_up, coverage, x = al.valid, al.has_up, al.coverage, al.x
    if calibration is None:
        calibration = BalanceCalibration.fit(evidence, fdr_alpha=fdr_alpha,
                                             max_no_load_share=max_no_load_share,
                                             min_population=min_population, fixed_z=fixed_z)
    cal = calibration.table.reindex(list(balanced))
    z_step, p_value, q_value = (cal[name].to_numpy(dtype=np.float64)
                                for name in ("z_step", "p_value", "q_value"))
    step_sig, pre_sig = (cal[name].to_numpy(dtype=bool) for name in ("step_sig", "pre_sig"))
    typical_share = calibration.typical_share
    excess_pre = a_kw - typical_share * mean_delivered
    # ... and the asset must deliver that much more than its meters record, on average: a
    # no-load term bent by a misplaced big customer's shape is no load
    with _quiet():
        mean_excess = (mean_delivered - mean_metered - typical_share * mean_delivered
                       - np.nanmean(np.where(valid, b_kw * x * x, np.nan), axis=0))
    pre_big = (complete & (a_kw > allowed) & (excess_pre >= min_unexplained_kw)
               & (np.nan_to_num(mean_excess) >= 0.5 * excess_pre))

    # a ratio change is never a hidden load; a clock offset was corrected before the balance
    fault = m.arrays["ratio_found"]
    step_ok = (testable & step_sig & (size_step >= min_unexplained_kw)
               & (step_kw >= min_unexplained_kw) & (persistence >= MIN_PERSISTENCE)) & ~fault
    pre_ok = pre_big & pre_sig & ~step_ok & ~fault
    # energy a sibling transformer misses: a meter on the wrong transformer, not a theft
    with _quiet():
        deficit_kw = -np.nanmean(y, axis=0)  # its meters record more than it delivers
    twins = topology_check.matched_by_siblings(
        balanced, m.arrays["feeder"], new_load=step_ok, onset=onset, step_kw=size_step,
        down_onset=np.where(m.arrays["down_persistence"] >= MIN_PERSISTENCE,
                            m.arrays["down_onset"], -1),
        down_kw=np.nan_to_num(m.arrays["fall_kw"]),
        preexisting=pre_ok, excess_kw=excess_pre, deficit_kw=np.nan_to_num(deficit_kw),
        min_kw=min_unexplained_kw)
    lone = step_ok & ~pd.Index(balanced).isin(twins[col.ASSET_ID])
    if lone.any():  # ... or a meter listed under a sibling whose own load rose as much
        twins = pd.concat([twins.assign(meter_id=""),
                           _misplaced_meter_twins(lone, onset, m.arrays, topo, meter_kw, grid,
                                                  min_cells, min_unexplained_kw)],
                          ignore_index=True)
    twin = pd.Index(balanced).isin(twins[col.ASSET_ID])
    step_twin, pre_twin = step_ok & twin, pre_ok & twin
    # a sibling's fall that accounts for part of a rise leaves the rest unexplained
    rest_kw = np.where(step_twin, _unmatched_rest_kw(twins, balanced, size_step, evidence,
                                                     min_unexplained_kw), 0.0)
    partly = rest_kw > 0
    step_ok, pre_ok = step_ok & (~twin | partly), pre_ok & ~twin
    size_matched = size_step
    size_step = np.where(partly, rest_kw, size_step)
    flagged = step_ok | pre_ok
    unexplained_kw = np.where(step_ok, size_step, np.where(pre_ok, excess_pre, 0.0))
    unexplained_kw = np.maximum(np.nan_to_num(unexplained_kw), 0.0)

    # A flagged pre-existing load is not a loss: draw it as unexplained.
    no_load_shown = np.where(pre_ok, typical_share * mean_delivered, a_kw)
    loss_day = loss_day - (a_kw - no_load_shown)[None, :]
    unexplained_day = y - loss_day
    hours = grid.cells_per_day * cell_h
    energy_day = (day_idx[:, None] >= onset[None, :]) & (onset[None, :] >= 0)
    daily_kwh = np.where(np.isnan(unexplained_day), step_kw[None, :], unexplained_day) * hours[:, None]
    excess_kwh_step = np.nansum(np.where(energy_day, daily_kwh, 0.0), axis=0)
    window_hours = np.where(~np.isnan(y), hours[:, None], 0.0).sum(axis=0)
    excess_kwh = np.where(step_ok, excess_kwh_step, np.where(pre_ok, excess_pre * window_hours, 0.0))
    excess_kwh = np.maximum(np.nan_to_num(excess_kwh), 0.0)
    with _quiet():
        loss_mean = np.nanmean(loss_day, axis=0)
        load_loss = np.nanmean(np.where(valid, b_kw * x * x, np.nan), axis=0)
    onset_out = np.where(step_ok, onset, -1)

    # --- suspects ------------------------------------------------------------------------
    asset_ids = list(balanced)
    suspects = _suspects(meter_kw, al.stuck, al.used, al.A, meters, grid, asset_ids, flagged, onset_out,
                         unexplained_kw, excess_kwh, min_cells)
    names = suspects.groupby(col.ASSET_ID, sort=False)[col.METER_ID].agg(";".join)
    strong_n = suspects.groupby(col.ASSET_ID, sort=False)["strong"].sum()

    dates = grid.dates
    onset_text = np.array([dates[i].date().isoformat() if i >= 0 else "" for i in onset_out])
    reasons = _asset_reasons(
        asset_ids=asset_ids, flagged=flagged, step_ok=step_ok, pre_ok=pre_ok, onset_text=onset_text,
        unexplained_kw=unexplained_kw, persistence=persistence, n_post=n_post, a_kw=a_kw,
        allowed=allowed, mean_delivered=mean_delivered, step_kw=step_kw, day_onset=day_onset,
        dates=dates, complete=complete, n_without=n_without.reindex(balanced).to_numpy(),
        strong_n=strong_n, names=names, min_unexplained_kw=min_unexplained_kw, step_sig=step_sig,
        coverage=_masked_mean(coverage, has_up), min_coverage=min_coverage,
    )
    reasons = _with_fault_reasons(reasons, m.arrays, dates)
    reasons = _with_twin_reasons(reasons, asset_ids, twins, step_twin, pre_twin, partly,
                                 size_matched, excess_pre, onset, dates)
    with _quiet():
        valid_days = (~np.isnan(y)).sum(axis=0)
    body = pd.DataFrame({
        col.ASSET_ID: asset_ids,
        col.FLAGGED: flagged,
        col.UNEXPLAINED_KW: unexplained_kw,
        col.ONSET: onset_text,
        col.SUSPECTS: [names.get(a, "") for a in asset_ids],
        col.REASONS: reasons,
        col.COVERAGE: _masked_mean(coverage, has_up),
        "loss_kw": loss_mean,
        "excess_kwh": excess_kwh,
        col.KIND: np.where(flagged, col.KIND_HIDDEN_LOAD,
                           np.where(m.arrays["fault"], col.KIND_METERING_FAULT, "")),
        "load_type": np.where(step_ok, KIND_ONSET, np.where(pre_ok, KIND_PREEXISTING, "")),
        "clock_offset_h": m.arrays["clock_hours"],
        "ratio_factor": m.arrays["ratio_factor"],
        "ratio_mar": m.arrays["ratio_mar"],
        "ratio_noise": m.arrays["ratio_noise"],
        "mean_delivered_kw": mean_delivered,
        "mean_metered_kw": mean_metered,
        "loss_share": loss_mean / np.maximum(mean_delivered, 1e-6),
        "no_load_kw": a_kw,
        "ratio_error": c_kw / al.scale_kw,
        "load_loss_kw": load_loss,
        "step_kw": np.where(testable, step_kw, np.nan),
        "step_t": scan.t,
        "step_z": z_step,
        "candidate_onset": [dates[i].date().isoformat() if i >= 0 else "" for i in onset],
        "persistence": persistence,
        "excess_preexisting_kw": excess_pre,
        "p_value": p_value,
        "q_value": q_value,
        "valid_days": valid_days,
        "low_coverage_cells": al.low.sum(axis=0),
    }).set_index(col.ASSET_ID, drop=False)
    table = _assemble_table(up_ids, topo.meta, topo.why_not, body)
    balance = Balance(table=table, suspects=suspects, delivered_kw=delivered_day,
                      metered_kw=metered_day, loss_kw=loss_day, unexplained_kw=unexplained_day,
                      asset_ids=asset_ids, dates=dates,
                      topology=_with_stepped_meters(m.topology, twins, step_twin, onset, topo,
                                                    meter_kw, al, grid, min_cells, issues))
    return balance, issues


# =====================================================================================
# stages
# =====================================================================================
@dataclass
class _Topology:
    """Which upstream assets can be balanced, and over which meters."""

    up_ids: pd.Index  # every upstream asset, in upstream order
    balanced: list  # the ones balanced here
    members: pd.DataFrame  # (asset_id, level, meter_id) of the balanced assets, meters with data
    meta: pd.DataFrame  # level, n_meters, n_meters_without_data per upstream asset
    why_not: pd.Series  # reason an upstream asset is not balanced ("" when it is)
    n_without: pd.Series  # meters without data per known asset


def _topology(upstream_kw, meter_kw, meters, issues) -> _Topology:
    """Resolve each upstream asset to its meters; count what cannot be balanced."""
    up_ids = pd.Index(upstream_kw.columns.astype(str))
    members = asset_members(meters)
    known = members.drop_duplicates([col.ASSET_ID, "level"])
    levels_of = known.groupby(col.ASSET_ID, sort=False)["level"].agg(list)
    unknown = up_ids[~up_ids.isin(levels_of.index)]
    n_cells_up = upstream_kw.notna().sum(axis=0).set_axis(up_ids)
    issues.add_per_meter("upstream.asset_unknown_topology", "upstream",
                         n_cells_up[unknown].clip(lower=1), "excluded",
                         detail="asset_id matches no transformer_id, feeder_id or substation_id in "
                                "meters; not balanced (count = cells with data)")
    ambiguous = levels_of[levels_of.str.len() > 1].index.intersection(up_ids)
    issues.add_per_meter("upstream.asset_ambiguous_level", "upstream",
                         pd.Series(1, index=ambiguous), "resolved",
                         detail="the id names assets at two levels; balanced at the lowest",
                         severity="info")
    level_rank = {lv: i for i, lv in enumerate(LEVELS)}
    members = members[members[col.ASSET_ID].isin(up_ids)]
    members = members.assign(_r=members["level"].map(level_rank))
    lowest = members.groupby(col.ASSET_ID)["_r"].transform("min")
    members = members[members["_r"] == lowest].drop(columns="_r")

    meter_cols = pd.Index(meter_kw.columns.astype(str))
    has_data = meter_kw.notna().any(axis=0).to_numpy()
    with_data = members[col.METER_ID].isin(meter_cols[has_data]).to_numpy()
    n_members = members.groupby(col.ASSET_ID).size()
    n_without = members[~with_data].groupby(col.ASSET_ID).size()
    assets = [a for a in up_ids if a in n_members.index]
    n_members = n_members.reindex(assets).fillna(0).astype(int)
    n_without = n_without.reindex(assets).fillna(0).astype(int)
    no_data = n_without[n_without >= n_members].index
    issues.add_per_meter("balance.no_meter_data", "upstream", n_cells_up[no_data].clip(lower=1),
                         "excluded", detail="none of the asset's meters has data in the window; "
                                            "not balanced (count = upstream cells)")
    partial = n_without[(n_without > 0) & (n_without < n_members)]
    issues.add_per_meter("balance.meter_without_data", "upstream", partial, "kept",
                         detail="meters below the asset without data in the window (count = meters): "
                                "their consumption is unknown, so a load running before the window "
                                "is not tested there")
    balanced = [a for a in assets if a not in set(no_data)]
    members = members[with_data & members[col.ASSET_ID].isin(balanced).to_numpy()]

    level = members.drop_duplicates(col.ASSET_ID).set_index(col.ASSET_ID)["level"]
    meta = pd.DataFrame({"level": [level.get(a, "unknown") for a in up_ids],
                         "n_meters": n_members.reindex(up_ids).fillna(0).astype(int).to_numpy(),
                         "n_meters_without_data": n_without.reindex(up_ids).fillna(0).astype(int)
                         .to_numpy()}, index=up_ids)
    why_not = pd.Series("", index=up_ids)
    why_not[unknown] = ("not balanced: the asset id matches no transformer_id, feeder_id or "
                        "substation_id in meters")
    why_not[no_data] = "not balanced: none of its meters has data in the window"

    return _Topology(up_ids=up_ids, balanced=balanced, members=members, meta=meta, why_not=why_not,
                     n_without=n_without)


@dataclass
class _Aligned:
    """Delivered and metered demand of the balanced assets on the grid, ``(n_cells, n_assets)`` [kW]."""

    delivered: np.ndarray
    metered: np.ndarray  # measured + filled
    filled: np.ndarray  # the filled part
    coverage: np.ndarray  # measured share of metered [-]
    has_up: np.ndarray  # upstream present
    valid: np.ndarray  # usable: upstream present and coverage high enough
    low: np.ndarray  # upstream present but coverage too low
    scale_kw: np.ndarray  # mean metered demand per asset (n_assets,)
    x: np.ndarray  # metered / scale_kw [-]
    resid: np.ndarray  # delivered - metered on usable cells, NaN elsewhere
    stuck: np.ndarray  # frozen meter cells (n_cells, n_used)
    used: pd.Index  # meters summed (rows of A)
    A: sparse.csr_matrix  # (n_used, n_assets)


def _align(upstream_kw, meter_kw, expected_kw, topo, grid, issues, *, min_coverage, frozen_hours,
           frozen_mask) -> _Aligned:
    """Fill missing and frozen meter cells, sum meters into assets, keep covered cells."""
    members, balanced, up_ids = topo.members, topo.balanced, topo.up_ids
    meter_cols = pd.Index(meter_kw.columns.astype(str))
    used = pd.Index(pd.unique(members[col.METER_ID]))
    A = membership_matrix(members, used, balanced)  # (n_used, n_assets)
    K = meter_kw.set_axis(meter_cols, axis=1)[used].to_numpy(dtype=np.float64, copy=True)
    cell_h = grid.cell_hours
    if frozen_mask is None:
        stuck = repeated_value_runs(K, min_cells=max(int(round(frozen_hours / cell_h)), 2))
    else:
        frozen_mask = np.asarray(frozen_mask, dtype=bool)
        if frozen_mask.shape != meter_kw.shape:
            raise ValueError(f"frozen_mask must have the shape of meter_kw {meter_kw.shape}, "
                             f"got {frozen_mask.shape}")
        stuck = frozen_mask[:, meter_cols.get_indexer(used)]
    stuck &= K != 0  # long zero runs are what the meter recorded (vacancy or a whole-house bypass)
    issues.add_per_meter("balance.frozen_reading_filled", "readings",
                         pd.Series(stuck.sum(axis=0), index=used), "masked",
                         detail=f"same non-zero reading for >= {frozen_hours} h: filled from the "
                                "meter's expected demand in the energy balance (count = cells)",
                         severity="info")
    K[stuck] = np.nan
    missing = np.isnan(K)
    fill_values = _fill_values(K, missing, expected_kw, used, grid)
    t_miss, m_miss = np.nonzero(missing)
    del missing
    filled = np.asarray((sparse.csr_matrix((fill_values, (t_miss, m_miss)), shape=K.shape) @ A).todense())
    filled_size = np.asarray((sparse.csr_matrix((np.abs(fill_values), (t_miss, m_miss)),
                                                shape=K.shape) @ A).todense())
    any_missing = np.asarray((sparse.csr_matrix((np.ones(len(t_miss)), (t_miss, m_miss)), shape=K.shape)
                              @ A).todense()) > 0
    K[t_miss, m_miss] = 0.0  # in place: K now holds the measured part only
    measured = _dense_times_sparse(K, A)
    # the share measured, of the energy flowing either way (exports are negative)
    measured_size = _dense_times_sparse(np.abs(K), A) if (K < 0).any() else measured
    del K, fill_values, t_miss, m_miss
    metered = measured + filled
    total_size = measured_size + filled_size
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = np.where(total_size > 0, measured_size / total_size,
                            np.where(any_missing, 0.0, 1.0))
    delivered = upstream_kw.set_axis(up_ids, axis=1)[balanced].to_numpy(dtype=np.float64)
    has_up = ~np.isnan(delivered)
    low = has_up & (coverage < min_coverage)
    valid = has_up & ~low
    issues.add_per_meter("balance.low_coverage", "upstream", pd.Series(low.sum(axis=0), index=balanced),
                         "masked", detail=f"asset-cells where less than {min_coverage:.0%} of the "
                                          "metered energy was measured (the rest filled from "
                                          "expected demand): left out of the balance (count = cells)")
    issues.add_per_meter("upstream.missing_cells", "upstream",
                         pd.Series((~has_up).sum(axis=0), index=balanced), "kept",
                         detail="grid cells without upstream data (count = cells)", severity="info")

    # The size of the flow, whichever way it goes (reverse flow from PV at midday).
    scale_kw = _masked_mean(np.abs(metered), valid)
    scale_kw = np.where(np.isfinite(scale_kw) & (scale_kw > 0), scale_kw, 1.0)
    return _Aligned(delivered=delivered, metered=metered, filled=filled, coverage=coverage,
                    has_up=has_up, valid=valid, low=low, scale_kw=scale_kw, x=metered / scale_kw,
                    resid=np.where(valid, delivered - metered, np.nan), stuck=stuck, used=used, A=A)


def _without_unit_errors(al, topo, issues) -> bool:
    """Take the assets whose upstream is in the wrong unit out of ``topo``; True if any.

    An upstream series a thousand times (or a thousandth of) what its meters
    record is a unit error (Wh or W given as kWh, MWh as kWh), not a load: no
    transformer delivers a thousand times what its customers draw.
    """
    with _quiet():
        ratio = (_masked_mean(np.abs(al.delivered), al.valid)
                 / _masked_mean(np.abs(al.metered), al.valid))
        off = np.log10(ratio)
    wrong = np.isfinite(off) & (np.abs(np.abs(off) - np.log10(UNIT_FACTOR))
                                < np.log10(UNIT_TOLERANCE))
    if not wrong.any():
        return False
    assets = pd.Index(topo.balanced)[wrong]
    n_cells = al.has_up.sum(axis=0)[wrong]
    for asset, times, cells in zip(assets, ratio[wrong], n_cells, strict=True):
        unit = "Wh or W" if times > 1 else "MWh or MW"
        text = (f"its upstream is {_fmt_ratio(times)} what its meters record ({unit} given as "
                "kWh?): a unit error, not a load; fix the unit of the upstream table")
        topo.why_not[asset] = f"not balanced: {text}"
        issues.add("upstream.unit_suspect", "upstream",
                   max(int(cells), 1),
                   "excluded", meter_id=str(asset), detail=f"{text} (count = cells)")
    topo.balanced = [a for a in topo.balanced if a not in set(assets)]
    topo.members = topo.members[~topo.members[col.ASSET_ID].isin(assets)]
    return True


def _fmt_ratio(times):
    return f"{times:,.0f}x" if times >= 1 else f"1/{1 / times:,.0f} of"


def _dark_hours_only(al, topo, meters, grid, unmetered_pv, min_cells, min_day_coverage, issues):
    """Keep only the dark cells of the assets with unmetered PV export; the cells a day needs.

    Updates ``al.valid`` and ``al.resid`` in place; returns the minimum count of
    usable cells of each day and asset, ``(n_days, n_assets)``.
    """
    n_assets = len(topo.balanced)
    out = np.broadcast_to(min_cells[:, None], (grid.n_days, n_assets))
    if unmetered_pv is None:
        return out
    flag = unmetered_pv.reindex(al.used).fillna(False).to_numpy(dtype=np.float64)
    affected = np.asarray(al.A.T @ flag).ravel() > 0
    if not affected.any():
        return out
    cols = np.flatnonzero(affected)
    where = topo.members.merge(meters[[col.METER_ID, *[c for c in (col.LAT, col.LON)
                                                          if c in meters]]],
                               on=col.METER_ID, how="left")
    place = where.groupby(col.ASSET_ID, sort=False)[[c for c in (col.LAT, col.LON)
                                                      if c in where]].median()
    asset_ids = pd.Index(topo.balanced)[cols]
    lat = (place[col.LAT].reindex(asset_ids) if col.LAT in place else
           pd.Series(np.nan, index=asset_ids)).to_numpy(dtype=np.float64)
    lon = (place[col.LON].reindex(asset_ids) if col.LON in place else
           pd.Series(np.nan, index=asset_ids)).to_numpy(dtype=np.float64)
    dark = dark_cells(grid.index, lat, lon, local_hour=grid.hour_of_cell,
                      cell_hours=grid.cell_hours)
    use = np.ones(al.valid.shape, dtype=bool)
    use[:, cols] = dark
    al.valid &= use
    al.resid = np.where(use, al.resid, np.nan)
    starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
    per_day = np.add.reduceat(use.astype(np.int32), starts, axis=0)
    out = np.where(affected[None, :], np.maximum(np.ceil(per_day * min_day_coverage), 1),
                   min_cells[:, None]).astype(np.int64)
    issues.add_per_meter(
        "balance.dark_hours_only", "upstream",
        pd.Series(affected.astype(int), index=topo.balanced), "kept", severity="info",
        detail="meters behind rooftop PV read import-only (their export is not metered): "
               "the balance is judged on the hours the sun is down")
    return out


def _correct_clocks(al, clock, topo, min_coverage, issues):
    """Shift the upstream series of the assets with a certain clock offset; say so.

    Updates ``al.delivered``, ``has_up``, ``low``, ``valid`` and ``resid`` in place.
    """
    if not clock.certain.any():
        return
    before = al.has_up.sum(axis=0)
    al.delivered = np.where(clock.certain[None, :], shift_rows(al.delivered, clock.cells),
                            al.delivered)
    al.has_up = ~np.isnan(al.delivered)
    al.low = al.has_up & (al.coverage < min_coverage)
    al.valid = al.has_up & ~al.low
    al.resid = np.where(al.valid, al.delivered - al.metered, np.nan)
    lost = before - al.has_up.sum(axis=0)
    hours = clock.hours
    for code, sign in (("upstream.clock_ahead", 1), ("upstream.clock_behind", -1)):
        which = clock.certain & (np.sign(hours) == sign)
        if not which.any():
            continue
        issues.add_per_meter(
            code, "upstream",
            pd.Series(np.abs(hours[which]).round().astype(int), index=pd.Index(topo.balanced)[which]),
            "resolved",
            detail=f"the upstream clock runs {'ahead of' if sign > 0 else 'behind'} its meters' by "
                   "whole hours (count = hours): its series was shifted back before the energy "
                   f"balance ({int(lost[which].sum())} cells at the window's edge left without data); "
                   "reported as a metering_fault in transformers.csv")


def _check_membership(al, topo, meter_kw, meters, grid, issues):
    """The meters whose listed transformer is doubtful (:mod:`gridwatch.topology_check`)."""
    level = topo.members.drop_duplicates(col.ASSET_ID).set_index(col.ASSET_ID)["level"]
    is_tx = level.reindex(topo.balanced).to_numpy() == "transformer"
    if not is_tx.any():
        return topology_check.empty_topology()
    ids = pd.Index(meter_kw.columns.astype(str))
    K = meter_kw.to_numpy()  # the check reads each feeder's columns; no copy of all
    tx_ids = pd.Index(topo.balanced)[is_tx]
    table = topology_check.check_topology(
        al.resid[:, is_tx], tx_ids, K, ids, meters, metered_kw=al.metered[:, is_tx],
        hour_of_cell=grid.hour_of_cell)
    for _ in range(TOPOLOGY_PASSES - 1):
        # Misplaced meters are noise in the residuals the others are judged on: with the
        # ones found moved, a second look finds meters the first one could not see.
        if table.empty:
            break
        moved, _n = topology_check.inferred_meters(meters, table)
        resid, metered = _membership_corrected(al, topo, table, meter_kw)
        again = topology_check.check_topology(
            resid[:, is_tx], tx_ids, K, ids, moved, metered_kw=metered[:, is_tx],
            hour_of_cell=grid.hour_of_cell)
        new = again[~again[col.METER_ID].isin(table[col.METER_ID])]
        if new.empty:
            break
        table = pd.concat([table, new], ignore_index=True)
        order = ids.get_indexer(table[col.METER_ID])
        table = table.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    issues.add_per_meter(
        "meters.doubtful_transformer", "meters",
        pd.Series(1, index=table[col.METER_ID].astype(str).to_numpy()), "kept",
        detail=DOUBTFUL_DETAIL)
    return table


def _membership_corrected(al, topo, mapping, meter_kw):
    """``(resid, metered)`` of the assets with the doubtful meters under their likely transformer.

    A misplaced meter's load is noise in two balances, enough to hide the
    shape of a ratio change; the fault tests judge the membership the data
    support, whatever ``use_inferred_topology`` says.
    """
    move = mapping[(mapping["confidence"] >= topology_check.MIN_INFERRED_CONFIDENCE)
                   & (mapping["likely_transformer_id"].astype(str) != "")]
    assets = pd.Index(topo.balanced)
    src = assets.get_indexer(move["listed_transformer_id"].astype(str))
    dst = assets.get_indexer(move["likely_transformer_id"].astype(str))
    ok = (src >= 0) & (dst >= 0)
    if not ok.any():
        return al.resid, al.metered
    ids = pd.Index(meter_kw.columns.astype(str)).get_indexer(move[col.METER_ID].astype(str)[ok])
    K = np.nan_to_num(meter_kw.to_numpy(dtype=np.float64)[:, ids])  # (n_cells, n_moved)
    n = int(ok.sum())
    change = sparse.csr_matrix((np.r_[-np.ones(n), np.ones(n)],
                                (np.r_[np.arange(n), np.arange(n)], np.r_[src[ok], dst[ok]])),
                               shape=(n, len(assets)))
    moved_kw = _dense_times_sparse(K, change)  # metered gained (+) or lost (-) per asset
    metered = al.metered + moved_kw
    return np.where(al.valid, al.delivered - metered, np.nan), metered


def _ratio_change(al, grid, up_day, up_t, down_day, down_t, issues, topo, mapping, meter_kw):
    """A ratio change of the upstream measurement at the upward or downward candidate day.

    Only assets whose candidate step stands out (``t >= CANDIDATE_T``) are
    tested: a ratio change too small to move the balance needs no name.
    """
    resid, metered = _membership_corrected(al, topo, mapping, meter_kw)
    n = len(topo.balanced)
    found = None
    for day, t, direction in ((up_day, up_t, 1), (down_day, down_t, -1)):  # rise, then fall
        cols = np.flatnonzero((day >= 0) & (np.nan_to_num(t) >= CANDIDATE_T))
        # A single column would be summed in another order than a column among others
        # (numpy sums a contiguous column pairwise): it goes in twice, so that an asset's
        # result does not depend on how many others are tested with it.
        use = np.repeat(cols, 2) if len(cols) == 1 else cols
        sub = ratio_changes(resid[:, use], metered[:, use], al.scale_kw[use], grid, day[use],
                            direction=direction)
        if len(cols) == 1:
            sub = type(sub)(**{name: getattr(sub, name)[:1] for name in
                               ("found", "factor", "day", "mar_ratio", "noise_ratio", "possible")})
        r = type(sub)(**{name: _scatter(getattr(sub, name), cols, n, fill)
                         for name, fill in (("found", False), ("factor", np.nan), ("day", -1),
                                            ("mar_ratio", np.nan), ("noise_ratio", np.nan),
                                            ("possible", False))})
        if found is None:
            found = r
        else:
            take = r.found & ~found.found
            found = type(r)(found=found.found | r.found,
                            **{name: np.where(take, getattr(r, name), getattr(found, name))
                               for name in ("factor", "day", "mar_ratio", "noise_ratio")},
                            possible=(found.possible | r.possible) & ~(found.found | r.found))
    if found.found.any():
        issues.add_per_meter(
            "upstream.ratio_change", "upstream",
            pd.Series(1, index=pd.Index(topo.balanced)[found.found]), "kept",
            detail="the upstream reading changed in proportion to the load from one day on (a CT "
                   "or meter ratio change): reported as a metering_fault in transformers.csv, not "
                   "as a hidden load")
    return found


def _scatter(values, cols, n, fill):
    """``values`` of the columns ``cols`` placed in an array of ``n`` (``fill`` elsewhere)."""
    out = np.full(n, fill, dtype=np.asarray(values).dtype if len(cols) else type(fill))
    out[cols] = values
    return out


@dataclass
class _MapFalls:
    """Falls of an asset's residual that a sibling's rise accounts for (a map error)."""

    found: np.ndarray  # (n_assets,) bool
    kw: np.ndarray  # size of the fall [kW], 0 where none
    day: np.ndarray  # day of the fall, -1 where none
    partner: np.ndarray  # the sibling whose rise matches it ("" where none)


def _map_error_falls(asset_ids, feeder, scan, down_onset, down_kw, down_t, min_kw) -> _MapFalls:
    """The falls, matched one to one with a sibling's rise of the same size and day.

    A meter listed under B but fed by A whose own load rises (a licensed data
    room, a heat pump) lifts A's residual and lowers B's by the same amount on
    the same day. B's fall is no change of B: left in, it hides a load that B
    itself carries (the median after B's onset is pulled down by it).
    """
    n = len(asset_ids)
    rise_kw = np.nan_to_num(scan.shift)
    rises = (scan.onset >= 0) & (np.nan_to_num(scan.t) >= SIBLING_T) & (rise_kw >= min_kw)
    falls = (down_onset >= 0) & (np.nan_to_num(down_t) >= SIBLING_T)
    pairs = topology_check.matched_by_siblings(
        asset_ids, feeder, new_load=rises, onset=scan.onset, step_kw=rise_kw,
        down_onset=np.where(falls, down_onset, -1), down_kw=np.where(falls, down_kw, 0.0),
        preexisting=np.zeros(n, dtype=bool), excess_kw=np.zeros(n),
        deficit_kw=np.zeros(n), min_kw=min_kw)
    at = pd.Index([str(a) for a in asset_ids]).get_indexer(pairs["partner"])
    found = np.zeros(n, dtype=bool)
    found[at] = True
    partner = np.full(n, "", dtype=object)
    partner[at] = pairs["asset_id"].to_numpy()
    return _MapFalls(found=found, kw=np.where(found, down_kw, 0.0),
                     day=np.where(found, down_onset, -1), partner=partner)


def _local_step_kw(y, day, window_days=SUSPECT_WINDOW_DAYS):
    """The change of each column of ``y`` at ``day``: median of the days from it on minus before.

    Over ``window_days`` each side, so that other steps further away do not
    bend it; NaN where ``day`` is -1.
    """
    d = np.arange(y.shape[0])[:, None]
    after = (d >= day[None, :]) & (d < day[None, :] + window_days)
    before = (d < day[None, :]) & (d >= day[None, :] - window_days)
    with _quiet():
        change = (nanmedian_columns(np.where(after, y, np.nan))
                  - nanmedian_columns(np.where(before, y, np.nan)))
    return np.where(day >= 0, change, np.nan)


def _fall_persistence(y, scan, day, fall_kw):
    """Share of the days from ``day`` on below the level before it by half of ``fall_kw``.

    Judged, as the fall was found, with the asset's best upward step taken out.
    """
    d = np.arange(y.shape[0])[:, None]
    y = y - _up_step(scan, y.shape[0])
    after = d >= day[None, :]
    with _quiet():
        before = nanmedian_columns(np.where(~after, y, np.nan))
        low = np.where(np.isnan(y), np.nan, y < (before - 0.5 * fall_kw)[None, :])
        share = np.nanmean(np.where(after, low, np.nan), axis=0)
    return np.where(day >= 0, np.nan_to_num(share), 0.0)


def _without_falls(y, resid, grid, falls: _MapFalls):
    """The daily and hourly residuals with each matched fall added back from its day on."""
    after = (np.arange(grid.n_days)[:, None] >= falls.day[None, :]) & falls.found[None, :]
    y = y + np.where(after, falls.kw[None, :], 0.0)
    cols = np.flatnonzero(falls.found)
    resid = resid.copy()
    resid[:, cols] += np.where(after[grid.day_of_cell][:, cols], falls.kw[cols][None, :], 0.0)
    return y, resid


@dataclass
class _Onset:
    """The dated candidate step of every asset."""

    scan: object  # LevelShift of the daily residual
    staged: np.ndarray  # an earlier install stage moved the onset
    stage_kw: np.ndarray  # size of that stage [kW]
    day_onset: np.ndarray  # day of the step (after the stage search), -1 if none
    onset: np.ndarray  # day of the switch-on cell, -1 if none
    first_full: np.ndarray  # first full day with the load, -1 if none
    partial_day: np.ndarray  # the onset day is partial (switch-on during the day)
    install_cell: np.ndarray  # (n_cells, n_assets) cells of a partial onset day
    post_cell: np.ndarray  # (n_cells, n_assets) cells from the first full day on


def _onset(y, X, resid, grid, *, min_pre, min_unexplained_kw) -> _Onset:
    """Scan the daily residual for a step, look for an earlier stage, date it to the cell."""
    n_days = grid.n_days
    scan = scan_level_shift(y, X, min_pre=min_pre, min_post=MIN_POST_DAYS)
    day_onset = scan.onset
    # Rigs are often installed in stages: an earlier, smaller step before the biggest
    # one moves the onset to the first stage (as in the visible-load detector).
    before_step = np.arange(n_days)[:, None] >= (day_onset - 1)[None, :]
    earlier = scan_level_shift(np.where(before_step, np.nan, y), X, min_pre=min_pre, min_post=3)
    staged = ((day_onset >= 0) & (earlier.onset >= 0) & (np.nan_to_num(earlier.t) >= STAGE_MIN_T)
              & (np.nan_to_num(earlier.shift) >= np.maximum(0.5 * min_unexplained_kw,
                                                            0.15 * np.nan_to_num(scan.shift))))
    # ... and a stage is a steady load: present on most days until the next one, flat.
    days_col = np.arange(n_days)[:, None]
    between = (days_col >= earlier.onset[None, :]) & (days_col < day_onset[None, :] - 1)
    # (judged against the main scan's loss baseline: losses that grow with the load
    # in a cold spell are not a stage)
    stage_resid = np.where(between, y - scan.fitted_baseline, np.nan)
    with np.errstate(invalid="ignore"), _quiet():
        stage_present = np.nanmean(np.where(np.isnan(stage_resid), np.nan,
                                            stage_resid > 0.5 * earlier.shift[None, :]), axis=0)
        stage_med = nanmedian_columns(stage_resid)
        stage_spread = 1.4826 * nanmedian_columns(np.abs(stage_resid - stage_med))
    staged &= (np.nan_to_num(stage_present) >= MIN_PERSISTENCE) & (
        np.nan_to_num(stage_spread, nan=np.inf) <= STAGE_MAX_SPREAD * earlier.shift)
    day_onset = np.where(staged, earlier.onset, day_onset)

    # Date the switch-on to the cell (the install day is partial), as the detector does.
    day_idx = np.arange(n_days)
    settled = (day_idx[:, None] < day_onset[None, :] - 1)[grid.day_of_cell]
    usual_kw, _ = hourly_increment(resid, grid.hour_of_cell, ~settled)
    margin = 0.5 * np.nan_to_num(np.where(staged, earlier.shift, scan.shift))
    cell = onset_cell(resid, grid.slots, grid.hour_of_cell, day_onset, usual_kw, margin)
    onset = np.where(cell >= 0, grid.day_of_cell[np.maximum(cell, 0)], day_onset)
    partial_day = (cell >= 0) & (cell != grid.slots[np.maximum(onset, 0), 0])
    first_full = np.where(onset >= 0, onset + partial_day, -1)
    first_full = np.where(first_full >= n_days, -1, first_full)
    onset = np.where(first_full >= 0, onset, -1)
    install_cell = (grid.day_of_cell[:, None] == onset[None, :]) & partial_day[None, :]
    post_cell = (grid.day_of_cell[:, None] >= first_full[None, :]) & (first_full[None, :] >= 0)

    return _Onset(scan=scan, staged=staged, stage_kw=earlier.shift, day_onset=day_onset, onset=onset,
                  first_full=first_full, partial_day=partial_day, install_cell=install_cell,
                  post_cell=post_cell)


# =====================================================================================
# helpers: inputs and alignment
# =====================================================================================
def _check_frames(upstream_kw, meter_kw, expected_kw, grid):
    for name, frame in (("upstream_kw", upstream_kw), ("meter_kw", meter_kw),
                        ("expected_kw", expected_kw)):
        if frame is None:
            continue
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"{name} must be a pandas DataFrame (cells x ids), got {type(frame).__name__}")
        if len(frame.index) != len(grid.index) or not frame.index.equals(grid.index):
            raise ValueError(f"{name} must be on the analysis grid: its index ({len(frame.index)} cells) "
                             f"differs from grid.index ({len(grid.index)} cells)")
    if not meter_kw.columns.is_unique:
        raise ValueError("meter_kw has repeated meter ids in its columns")


def _slot_means(K, grid):
    """Mean demand per (weekday/weekend, hour of day) slot [kW], ``(48, n_meters)``.

    Falls back to the hour-of-day mean, then the meter's mean, where a slot has no data.
    """
    slot = (grid.weekday_of_cell >= 5) * 24 + grid.hour_of_cell
    valid = ~np.isnan(K)
    s = sum_by_slot(np.where(valid, K, 0.0), slot, 48)
    n = sum_by_slot(valid, slot, 48)
    s_h, n_h = s[:24] + s[24:], n[:24] + n[24:]
    with np.errstate(invalid="ignore", divide="ignore"):
        by_slot = s / n
        by_hour = np.tile(s_h / n_h, (2, 1))
        overall = s.sum(axis=0) / n.sum(axis=0)
    out = np.where(n > 0, by_slot, np.where(np.tile(n_h, (2, 1)) > 0, by_hour, overall[None, :]))
    return np.nan_to_num(out), slot


def _fill_values(K, missing, expected_kw, used, grid):
    """Values for the missing cells of ``K`` (in ``np.nonzero(missing)`` order) [kW]."""
    t, m = np.nonzero(missing)
    if len(t) == 0:
        return np.zeros(0)
    values = np.full(len(t), np.nan)
    if expected_kw is not None:
        exp = expected_kw.set_axis(expected_kw.columns.astype(str), axis=1).reindex(columns=used)
        exp = exp.to_numpy(dtype=np.float64)[t, m]
        values = np.where(np.isfinite(exp), exp, np.nan)  # net: negative behind PV
    need = np.isnan(values)  # no expected consumption: the meter's own slot means
    if need.any():
        cols, pos = np.unique(m[need], return_inverse=True)  # only meters that need them
        slot_kw, slot = _slot_means(K[:, cols], grid)
        values[need] = slot_kw[slot[t[need]], pos]
    return values


def _dense_times_sparse(dense, A):
    """``dense @ A`` for a dense ``(n, m)`` array and a sparse ``(m, k)`` matrix -> dense ``(n, k)``."""
    return np.asarray(dense @ A)


def _masked_mean(values, mask):
    n = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(mask, values, 0.0).sum(axis=0) / n, np.nan)


# =====================================================================================
# helpers: models and statistics
# =====================================================================================
def _hourly_loss_fit(resid, x, post):
    """Robust fit of ``resid = a + c x + b x^2 + s post`` per asset on hourly cells.

    Parameters
    ----------
    resid : numpy.ndarray of shape (n_cells, n_assets)
        Delivered minus metered demand [kW]; NaN where unusable.
    x : numpy.ndarray of shape (n_cells, n_assets)
        Metered demand over its mean [-].
    post : numpy.ndarray of bool, shape (n_cells, n_assets)
        Cells at or after the onset (all False without one).

    Returns
    -------
    numpy.ndarray of shape (n_assets, 4)
        ``a`` (no-load) [kW], ``c`` (proportional: ratio error) [kW per unit x],
        ``b`` (load losses) [kW per unit x^2], ``s`` (step) [kW].

    Notes
    -----
    Batched weighted normal equations (``n_assets x 4 x 4``), iteratively
    reweighted with Huber weights (cut-off ``HUBER_K`` robust sigmas) so that
    peak-hour curtailment of a rig or a badly filled cell does not bend the
    loss curve.
    """
    ok = np.isfinite(resid) & np.isfinite(x)
    y = np.where(ok, resid, 0.0)
    xs = np.where(ok, x, 0.0)
    Xc = np.stack([ok * 1.0, xs, xs * xs, (post & ok) * 1.0], axis=2)  # (T, A, 4)
    w = ok * 1.0
    beta = np.zeros((resid.shape[1], 4))
    for it in range(IRLS_ITERATIONS):  # a few reweighting passes, all assets at once
        beta = batched_least_squares(Xc, y, w)
        if it == IRLS_ITERATIONS - 1:
            break
        r = y - (Xc[:, :, 0] * beta[:, 0] + Xc[:, :, 1] * beta[:, 1] + Xc[:, :, 2] * beta[:, 2]
                 + Xc[:, :, 3] * beta[:, 3])
        with _quiet():
            med = nanmedian_columns(np.where(ok, r, np.nan))
            s = 1.4826 * nanmedian_columns(np.where(ok, np.abs(r - med), np.nan))
        s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
        u = np.abs(r) / (HUBER_K * s)
        w = ok * np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    beta[:, 3] = np.where(post.any(axis=0), beta[:, 3], 0.0)
    return beta


def _change_at(daily, onset):
    """Absolute change of each column's mean across its onset (0 where none) [units of daily]."""
    d = np.arange(daily.shape[0])[:, None]
    with _quiet():
        before = np.nanmean(np.where(d < onset[None, :], daily, np.nan), axis=0)
        after = np.nanmean(np.where(d >= onset[None, :], daily, np.nan), axis=0)
    return np.where(onset >= 0, np.nan_to_num(np.abs(after - before)), 0.0)


def _up_step(scan, n_days):
    """Each asset's best upward step as a daily series ``(n_days, n_assets)`` [kW]."""
    d = np.arange(n_days)[:, None]
    return np.nan_to_num(scan.shift) * ((d >= scan.onset[None, :]) & (scan.onset[None, :] >= 0))


def _downward_step(y, X, scan, filled_day, *, min_pre):
    """Each asset's best DOWNWARD step: the null of the step test (hidden loads only add).

    Each asset's best upward step is taken out first, so that an asset that
    does carry a load gives the null the same clean residual as the others.

    Returns
    -------
    down_kw, se_down_kw, fill_down_kw : numpy.ndarray of shape (n_assets,)
        Its size, standard error and the uncertainty of filled cells across it [kW].
    down_onset : numpy.ndarray of int, shape (n_assets,)
        Its day (-1 when none).
    """
    down = scan_level_shift(-(y - _up_step(scan, y.shape[0])), X, min_pre=min_pre,
                            min_post=MIN_POST_DAYS)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_down = np.where(np.isfinite(down.t) & (down.t > 0), down.shift / down.t, np.inf)
    fill_down = FILL_REL_ERROR * _change_at(filled_day, down.onset)
    return np.where(down.onset >= 0, down.shift, np.nan), se_down, fill_down, down.onset


@dataclass
class BalanceCalibration:
    """Significance of every asset's evidence, calibrated on the whole population of assets.

    Attributes
    ----------
    table : pandas.DataFrame
        Per asset (index ``asset_id``): ``z_step``, ``p_value``, ``q_value``,
        ``step_sig`` and ``pre_sig`` (significant at the Benjamini-Hochberg
        cut-off, per test).
    typical_share : float
        The population's typical no-load term over delivered demand [-].

    Notes
    -----
    The step's z-score divides its size by its own standard error, the size of
    change an asset of that size shows with no new load
    (:func:`_natural_step_kw`) and the uncertainty of filled cells. Its null is
    the mirror image: the same statistic for the best *downward* step of every
    asset, which hidden loads never produce. The no-load share is scored by a
    robust z across assets. The two tests are combined per asset (Bonferroni)
    before Benjamini-Hochberg. With fewer than ``min_population`` assets a
    step needs ``fixed_z`` and the no-load test is the physical gate alone.
    """

    EVIDENCE = ("share", "mean_delivered_kw", "complete", "testable", "step_kw", "se_step_kw",
                "fill_unc_kw", "down_kw", "se_down_kw", "fill_down_kw", "ratio_change")

    table: pd.DataFrame
    typical_share: float

    @classmethod
    def fit(cls, evidence: pd.DataFrame, *, fdr_alpha: float, max_no_load_share: float,
            min_population: int = 20, fixed_z: float = 6.0) -> BalanceCalibration:
        """Calibrate on the evidence of every asset of the run (``evidence_only`` frames, concatenated)."""
        get = {name: evidence[name].to_numpy(dtype=np.float64) for name in cls.EVIDENCE
               if name not in ("complete", "testable", "ratio_change")}
        complete = evidence["complete"].to_numpy(dtype=bool)
        testable = evidence["testable"].to_numpy(dtype=bool)
        # a ratio change's fall is no asset's natural change: left out of the null
        fault = (evidence["ratio_change"].to_numpy(dtype=bool) if "ratio_change" in evidence
                 else np.zeros(len(evidence), dtype=bool))
        get["down_kw"] = np.where(fault, np.nan, get["down_kw"])
        share, step_kw = get["share"], get["step_kw"]
        n_assets = len(evidence)
        big_population = int(np.isfinite(share).sum()) >= min_population
        if not big_population:
            z_step = step_kw / np.sqrt(get["se_step_kw"]**2 + get["fill_unc_kw"]**2)
            table = pd.DataFrame({
                "z_step": z_step, "p_value": np.nan, "q_value": np.nan,
                "step_sig": np.nan_to_num(z_step) >= fixed_z,
                "pre_sig": np.ones(n_assets, dtype=bool),  # the physical gate alone (conservative)
            }, index=evidence.index)
            return cls(table=table, typical_share=TYPICAL_NO_LOAD_SHARE)
        with _quiet():
            typical_share = float(np.clip(np.nanmedian(share), 0.0, max_no_load_share))
        natural_kw = _natural_step_kw(get["mean_delivered_kw"], get["down_kw"])
        z_step = step_kw / np.sqrt(get["se_step_kw"]**2 + natural_kw**2 + get["fill_unc_kw"]**2)
        z_down = get["down_kw"] / np.sqrt(get["se_down_kw"]**2 + natural_kw**2
                                          + get["fill_down_kw"]**2)
        p_step = _null_sf(np.where(testable, z_step, np.nan), z_down[np.isfinite(z_down)])
        with _quiet():
            med = np.nanmedian(share)
            mad = 1.4826 * np.nanmedian(np.abs(share - med))
        z_pre = (share - med) / max(mad, NO_LOAD_SHARE_SCALE_FLOOR)
        p_pre = np.where(complete, stats.norm.sf(z_pre), np.nan)
        p_value = np.minimum(1.0, 2.0 * np.fmin(p_step, p_pre))
        q_value = np.full(n_assets, np.nan)
        ok = np.isfinite(p_value)
        if ok.any():
            q_value[ok] = multipletests(p_value[ok], alpha=fdr_alpha, method="fdr_bh")[1]
        rejected = q_value <= fdr_alpha
        cutoff = fdr_alpha * rejected.sum() / max(ok.sum(), 1) if rejected.any() else -1.0
        table = pd.DataFrame({
            "z_step": z_step, "p_value": p_value, "q_value": q_value,
            "step_sig": np.nan_to_num(np.minimum(1.0, 2.0 * p_step), nan=1.0) <= cutoff,
            "pre_sig": np.nan_to_num(np.minimum(1.0, 2.0 * p_pre), nan=1.0) <= cutoff,
        }, index=evidence.index)
        return cls(table=table, typical_share=typical_share)


def _natural_step_kw(size_kw, change_kw):
    """Typical size of the changes assets of each size show with no new load [kW].

    A robust (Theil-Sen) line of ``log(change)`` on ``log(size)`` across the
    population: the changes of big assets are bigger in kW but much smaller
    in share than those of small ones, so neither a fixed kW nor a fixed
    share fits both.

    Parameters
    ----------
    size_kw : numpy.ndarray of shape (n_assets,)
        Mean delivered demand [kW].
    change_kw : numpy.ndarray of shape (n_assets,)
        Each asset's natural change (its best downward step) [kW]; NaN when none.

    Returns
    -------
    numpy.ndarray of shape (n_assets,)
        [kW]; 0 where it cannot be estimated.
    """
    ok = np.isfinite(size_kw) & (size_kw > 0) & np.isfinite(change_kw)
    if ok.sum() < 3:
        return np.zeros(size_kw.shape)
    lx = np.log(size_kw[ok])
    ly = np.log(np.maximum(change_kw[ok], 1e-4))
    if np.ptp(lx) > 0.5:
        slope, intercept, _, _ = stats.theilslopes(ly, lx)
        slope = float(np.clip(slope, 0.0, 1.0))
        intercept = float(np.median(ly - slope * lx))
    else:
        slope, intercept = 0.0, float(np.median(ly))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(intercept + slope * np.log(size_kw))
    return np.where(np.isfinite(out), out, 0.0)


def _null_sf(z, null_z):
    """Upper-tail p-values of ``z`` under a normal fitted robustly to ``null_z``.

    The null's scale is never below 1 (the theoretical one): a population of
    very quiet assets must not make every small change significant. With
    fewer than three null values the standard normal is used.
    """
    out = np.full(z.shape, np.nan)
    ok = np.isfinite(z)
    if len(null_z) < 3:
        out[ok] = stats.norm.sf(z[ok])
        return out
    med = np.median(null_z)
    mad = 1.4826 * np.median(np.abs(null_z - med))
    out[ok] = stats.norm.sf((z[ok] - med) / max(mad, 1.0))
    return out


# =====================================================================================
# helpers: suspects
# =====================================================================================
def _suspects(meter_kw, stuck, used, A, meters, grid, asset_ids, flagged, onset, unexplained_kw,
              excess_kwh, min_cells):
    """Rank the meters of every flagged asset by the evidence that they hide its load."""
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in SUSPECTS_COLUMNS})
    fl = np.flatnonzero(flagged)
    if len(fl) == 0:
        return empty
    sub = A[:, fl].tocoo()
    meter_pos, asset_pos = sub.row, fl[sub.col]  # one entry per (meter, flagged asset) pair
    if len(meter_pos) == 0:
        return empty
    uniq, inverse = np.unique(meter_pos, return_inverse=True)
    # What the meters recorded (frozen values and zeros included), for these meters only.
    recorded = meter_kw.set_axis(meter_kw.columns.astype(str), axis=1)[used[uniq]].to_numpy(
        dtype=np.float64)
    # A meter behind PV (it exports: negative net cells) imports less as spring comes,
    # which is no bypass: its level is judged on the night hours.
    behind_pv = (recorded < 0).any(axis=0)
    if behind_pv.any():
        night = (grid.hour_of_cell <= NIGHT_LAST_HOUR)[:, None]
        day_kw = daily_mean(np.where(behind_pv[None, :] & ~night, np.nan, recorded), grid,
                            np.where(behind_pv[None, :],
                                     max(NIGHT_LAST_HOUR // 2, 1), min_cells[:, None]))
        day_kw = day_kw[:, inverse]  # (D, P)
    else:
        day_kw = daily_mean(recorded, grid, min_cells)[:, inverse]  # (D, P)
    (floor_kw,) = daily_quantiles(recorded, grid, [0.25], min_cells)
    floor_kw = floor_kw[:, inverse]
    frozen_day = by_day_any(stuck[:, uniq], grid, share=0.0)[:, inverse]
    n_days = grid.n_days
    d = np.arange(n_days)[:, None]
    on = onset[asset_pos][None, :]
    size = unexplained_kw[asset_pos]
    has_onset = on[0] >= 0

    pre = has_onset & (d < on - 1) & (d >= on - 1 - SUSPECT_WINDOW_DAYS)
    post = has_onset & (d > on) & (d <= on + SUSPECT_WINDOW_DAYS)
    with _quiet():
        before = nanmedian_columns(np.where(pre, day_kw, np.nan))
        after = nanmedian_columns(np.where(post, day_kw, np.nan))
        floor_before = nanmedian_columns(np.where(pre, floor_kw, np.nan))
        floor_after = nanmedian_columns(np.where(post, floor_kw, np.nan))
        level_all = nanmedian_columns(day_kw)
    drop = np.nan_to_num(before - after)
    t_on = _two_sample_t(day_kw, pre, post)  # how clearly the level differs across the onset
    # Each meter's own best downward step, all pairs at once: is it at the onset (or is
    # the change at the onset most of it)?
    X = np.stack([np.ones((n_days, len(uniq))), np.repeat(grid.weekend[:, None] * 1.0, len(uniq), 1)],
                 axis=2).transpose(1, 0, 2)[inverse]
    local = np.where(np.abs(d - on) <= SCAN_WINDOW_DAYS, day_kw, np.nan)  # other events stay out
    own = scan_level_shift(-local, X, min_pre=3, min_post=1)
    aligned = (own.onset >= 0) & (np.abs(own.onset - on[0]) <= TIMING_DAYS)
    timed = has_onset & (aligned | ((t_on >= 3.0) & (drop >= 0.7 * np.nan_to_num(own.shift))))
    with np.errstate(invalid="ignore", divide="ignore"):
        fell = np.where(before > 0, drop / before, 0.0)
        match = np.where(size > 0, drop / size, 0.0)  # a fall bigger than the load did not hide it
    match_score = np.where(match > 1, 1 / np.maximum(match, 1e-12), match)
    near_zero = (has_onset & (before >= 2 * NEAR_ZERO_KW) & (drop > 0)
                 & (after <= np.maximum(NEAR_ZERO_KW, NEAR_ZERO_SHARE * before)))
    strong = timed & (drop > 0) & (match <= MAX_MATCH) & ((match >= 0.5) | near_zero)
    # A drop counts by its size against the unexplained load or against the meter's
    # own level, and by how clearly it stands out of the meter's daily variation.
    clear = np.clip(np.nan_to_num(t_on) / 4.0, 0, 1)
    e_drop = np.where(timed & (drop > 0),
                      np.clip(np.maximum(np.maximum(match_score, 0.8 * fell * (match <= MAX_MATCH)),
                                         near_zero * (match <= MAX_MATCH)), 0, 1) * clear,
                      0.0)
    e_drop = np.where(~timed & has_onset & (match >= 0.3), 0.3 * np.clip(match_score, 0, 1), e_drop)
    near = (d >= on - TIMING_DAYS) & (d <= on + TIMING_DAYS)
    frozen_new = has_onset & (frozen_day & near).any(axis=0) & ~(frozen_day & (d < on - TIMING_DAYS)).any(
        axis=0)
    frozen_later = has_onset & ~frozen_new & (frozen_day & (d > on)).any(axis=0)
    rise = after - before
    flat_rise = floor_after - floor_before
    own_up = scan_level_shift(local, X, min_pre=3, min_post=1)
    flat_new = (has_onset & (own_up.onset >= 0) & (np.abs(own_up.onset - on[0]) <= TIMING_DAYS)
                & (rise > 0) & (flat_rise >= np.maximum(0.1, 0.15 * size)) & (flat_rise >= 0.6 * rise))
    e_flat = np.where(flat_new, 0.5 * np.clip(np.nan_to_num(flat_rise) / np.maximum(size, 1e-6), 0, 1),
                      0.0)
    cls = meters.drop_duplicates(col.METER_ID).set_index(meters.drop_duplicates(col.METER_ID)[
        col.METER_ID].astype(str))
    ids = used[meter_pos].astype(str)
    klass = (cls[col.CUSTOMER_CLASS].astype("string").reindex(ids).fillna("").to_numpy()
             if col.CUSTOMER_CLASS in cls.columns else np.full(len(ids), ""))
    home = np.isin(klass, ["residential", ""])
    zero_all = ~has_onset & home & (np.nan_to_num(level_all, nan=1.0) <= NEAR_ZERO_KW)
    frozen_all = ~has_onset & (frozen_day.mean(axis=0) >= 0.5)
    evidence = 1 - ((1 - e_drop) * (1 - 0.5 * frozen_new) * (1 - 0.15 * frozen_later) * (1 - e_flat)
                    * (1 - 0.4 * zero_all) * (1 - 0.4 * frozen_all))
    keep = evidence >= MIN_EVIDENCE
    if not keep.any():
        return empty
    tariff = (pd.to_numeric(cls[col.TARIFF_PER_KWH], errors="coerce").reindex(ids).to_numpy(
        dtype=np.float64) if col.TARIFF_PER_KWH in cls.columns else np.full(len(ids), np.nan))
    frame = pd.DataFrame({
        col.ASSET_ID: np.asarray(asset_ids, dtype=object)[asset_pos],
        col.METER_ID: ids,
        "evidence": evidence,
        "strong": strong,
        col.EXCESS_KW: size,
        col.EXCESS_KWH: excess_kwh[asset_pos],
        col.EST_LOSS: excess_kwh[asset_pos] * tariff,
        "before_kw": before,
        "after_kw": after,
        "fell_share": fell,
        "w_drop": drop,
        "w_onset": on[0],
        "w_own": own.onset,
        "w_timed": timed,
        "w_aligned": aligned,
        "w_near_zero": near_zero,
        "w_frozen_new": frozen_new,
        "w_frozen_later": frozen_later,
        "w_flat": flat_new,
        "w_flat_kw": flat_rise,
        "w_zero_all": zero_all,
        "w_frozen_all": frozen_all,
        "w_level": level_all,
    })[keep]
    frame = frame.sort_values([col.ASSET_ID, "strong", "evidence", "w_drop"],
                              ascending=[True, False, False, False], kind="stable")
    frame[col.RANK] = frame.groupby(col.ASSET_ID).cumcount() + 1
    dates = grid.dates
    frame[col.ONSET] = [dates[i].date().isoformat() if i >= 0 else "" for i in frame["w_onset"]]
    frame[col.REASONS] = _suspect_reasons(frame, dates)
    # Assets in table order, suspects by rank within each.
    order = {a: i for i, a in enumerate(asset_ids)}
    frame = frame.assign(_a=frame[col.ASSET_ID].map(order)).sort_values(["_a", col.RANK], kind="stable")
    return frame[list(SUSPECTS_COLUMNS)].reset_index(drop=True)


def _two_sample_t(values, first, second):
    """Welch t of ``mean(first) - mean(second)`` per column (NaN-aware; NaN under 2 + 2 values)."""
    out = []
    for mask in (first, second):
        ok = mask & ~np.isnan(values)
        n = ok.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(ok, values, 0.0).sum(axis=0) / n
            var = np.where(ok, (values - mean) ** 2, 0.0).sum(axis=0) / (n - 1)
        out.append((mean, var, n))
    (m1, v1, n1), (m2, v2, n2) = out
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (m1 - m2) / np.sqrt(v1 / n1 + v2 / n2)
    return np.where((n1 >= 2) & (n2 >= 2), t, np.nan)


# =====================================================================================
# helpers: text and tables
# =====================================================================================
def _fmt_kw(x):
    """kW for people: two decimals below 10 kW, one above."""
    return f"{x:.2f} kW" if abs(x) < 10 else f"{x:.1f} kW"


def _suspect_reasons(frame, dates):
    """One reason string per suspect row (a loop over suspects, only to format text)."""
    out = []
    for r in frame.itertuples(index=False):
        asset = getattr(r, col.ASSET_ID)
        parts = []
        if r.w_onset >= 0:
            day = dates[r.w_onset].date().isoformat()
            # The meter's own date when it differs (a fall a day or two off the onset).
            own_day = (dates[r.w_own].date().isoformat()
                       if r.w_aligned and abs(r.w_own - r.w_onset) > 1 else day)
            load = f"when {asset} began delivering {_fmt_kw(getattr(r, col.EXCESS_KW))} more than its " \
                   "meters record"
            if r.w_timed and r.w_drop > 0:
                if r.w_near_zero:
                    parts.append(f"consumption fell {r.fell_share:.0%} on {own_day}, to near zero "
                                 f"({_fmt_kw(r.after_kw)}), {load}")
                else:
                    parts.append(f"consumption fell {r.fell_share:.0%} ({_fmt_kw(r.w_drop)}) on {own_day} "
                                 f"{load}")
                if not r.strong:
                    parts.append("the drop is smaller than the unexplained load (weak evidence: part of "
                                 "the load may be on another line)")
            elif r.w_drop > 0 and r.fell_share > 0:
                parts.append(f"consumption {r.fell_share:.0%} lower after {day} {load}, but the fall is "
                             "not dated to the onset (weak evidence)")
            if r.w_frozen_new:
                parts.append(f"readings froze at one value around {day}")
            elif r.w_frozen_later:
                parts.append(f"readings froze at one value after {day} (weak evidence)")
            if r.w_flat:
                parts.append(f"a flat {_fmt_kw(r.w_flat_kw)} appeared on the meter after {day}: part of the "
                             "load may be metered (weak evidence)")
        else:
            if r.w_zero_all:
                parts.append(f"records almost nothing all window ({_fmt_kw(r.w_level)} a day on median) "
                             f"while {asset} delivers a steady load its meters do not record "
                             "(weak evidence)")
            if r.w_frozen_all:
                parts.append("readings frozen at one value for most of the window (weak evidence)")
        out.append("; ".join(parts))
    return out


def _asset_reasons(*, asset_ids, flagged, step_ok, pre_ok, onset_text, unexplained_kw, persistence,
                   n_post, a_kw, allowed, mean_delivered, step_kw, day_onset, dates, complete,
                   n_without, strong_n, names, min_unexplained_kw, step_sig, coverage, min_coverage):
    """Short human reasons per balanced asset (a loop over assets, only to format text)."""
    out = []
    for i, asset in enumerate(asset_ids):
        parts = []
        if step_ok[i]:
            parts.append(f"delivers {_fmt_kw(unexplained_kw[i])} more than its meters record, above "
                         f"modelled losses, since {onset_text[i]}")
            days = int(round(persistence[i] * n_post[i]))
            parts.append(f"present on {days} of the {int(n_post[i])} full days with data since")
        elif pre_ok[i]:
            parts.append(f"already running when the data start: its no-load term is {_fmt_kw(a_kw[i])}, "
                         f"{a_kw[i] / max(mean_delivered[i], 1e-6):.0%} of the "
                         f"{_fmt_kw(mean_delivered[i])} it delivers (a transformer of that size loses "
                         f"at most about {_fmt_kw(allowed[i])} with no load): about "
                         f"{_fmt_kw(unexplained_kw[i])} unexplained")
        if flagged[i]:
            n_sus = len(names.get(asset, "").split(";")) if names.get(asset, "") else 0
            if strong_n.get(asset, 0) > 0:
                parts.append(f"{int(strong_n.get(asset, 0))} meter(s) below it show a matching fall")
            elif step_ok[i]:
                parts.append("no meter below it shows a fall at the onset: the load is probably on a "
                             "separate line before the meters (or a partial bypass); "
                             + (f"{n_sus} suspect(s) on weak evidence only" if n_sus
                                else "no meter carries evidence, inspect the service cables"))
            else:
                parts.append(f"{n_sus} suspect(s) on weak evidence only" if n_sus
                             else "no meter carries evidence")
        elif day_onset[i] >= 0 and step_kw[i] >= 0.5 * min_unexplained_kw:
            why = []
            if step_kw[i] < min_unexplained_kw:
                why.append(f"below the {min_unexplained_kw:g} kW minimum")
            if not step_sig[i]:
                why.append("within the asset population's normal variation")
            if not persistence[i] >= MIN_PERSISTENCE:
                why.append("not present on most days since")
            parts.append(f"not flagged: unexplained load rose {_fmt_kw(step_kw[i])} around "
                         f"{dates[day_onset[i]].date().isoformat()} but " + ", ".join(why or ["too small"]))
        if not complete[i]:
            parts.append(f"{int(n_without[i])} meter(s) below it have no data: the level before the "
                         "window is not tested")
        if coverage[i] < min_coverage:
            parts.append(f"only {coverage[i]:.0%} of its metered energy was measured")
        out.append("; ".join(parts))
    return out


def _with_stepped_meters(topology, twins, step_twin, onset, topo, meter_kw, al, grid, min_cells,
                         issues):
    """The topology rows, and the meters whose own new load a matched step points to."""
    stepped = twins[twins[col.ASSET_ID].isin(pd.Index(topo.balanced)[step_twin])]
    if stepped.empty:
        return topology
    partners = topo.members[topo.members[col.ASSET_ID].isin(stepped["partner"])]
    ids = pd.Index(pd.unique(partners[col.METER_ID].astype(str)))
    recorded = meter_kw.set_axis(meter_kw.columns.astype(str), axis=1)[ids].to_numpy(
        dtype=np.float64)
    day_kw = daily_mean(recorded, grid, min_cells)
    at = dict(zip(topo.balanced, onset, strict=True))
    rows = topology_check.meters_that_stepped(stepped, partners, day_kw, ids, at, grid.dates)
    rows = rows[~rows[col.METER_ID].isin(topology[col.METER_ID])]
    if rows.empty:
        return topology
    issues.add_per_meter(
        "meters.doubtful_transformer", "meters",
        pd.Series(1, index=rows[col.METER_ID].astype(str).to_numpy()), "kept",
        detail=DOUBTFUL_DETAIL)
    out = pd.concat([topology, rows], ignore_index=True)
    order = pd.Index(al.used).get_indexer(out[col.METER_ID])
    return out.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def _misplaced_meter_twins(lone, onset, arrays, topo, meter_kw, grid, min_cells, min_kw):
    """:func:`topology_check.steps_of_misplaced_meters` over the siblings of ``lone`` assets."""
    feeder = arrays["feeder"]
    near = np.isin(feeder, feeder[lone & (feeder != "")])
    members = topo.members[topo.members[col.ASSET_ID].isin(pd.Index(topo.balanced)[near])]
    ids = pd.Index(pd.unique(members[col.METER_ID].astype(str)))
    recorded = meter_kw.set_axis(meter_kw.columns.astype(str), axis=1)[ids].to_numpy(
        dtype=np.float64)
    return topology_check.steps_of_misplaced_meters(
        topo.balanced, feeder, lone, onset, arrays["y"], members,
        daily_mean(recorded, grid, min_cells), ids, min_kw=min_kw)


def _feeders_of_assets(topo, meters):
    """The feeder of each balanced transformer ("" for other levels or when unknown)."""
    level = topo.members.drop_duplicates(col.ASSET_ID).set_index(col.ASSET_ID)["level"]
    feeder = feeder_of_transformers(meters, topo.balanced)
    return np.where(level.reindex(topo.balanced).to_numpy() == "transformer", feeder, "")


def _unmatched_rest_kw(twins, asset_ids, size_kw, evidence, min_kw):
    """The part of each matched rise its sibling's fall leaves unexplained [kW] (0 when none).

    Kept when it is at least ``min_kw``, 30 % of the rise and three standard
    errors of the difference between the rise and the fall.
    """
    rest = np.zeros(len(asset_ids))
    if twins.empty:
        return rest
    at = pd.Index(list(asset_ids)).get_indexer(twins[col.ASSET_ID])
    se_rise = evidence["se_step_kw"].to_numpy(dtype=np.float64)[at]
    se_fall = evidence["se_down_kw"].reindex(twins["partner"]).to_numpy(dtype=np.float64)
    left = size_kw[at] - twins["partner_kw"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        enough = ((left >= min_kw) & (left >= 0.3 * size_kw[at])
                  & (left >= 3 * np.hypot(se_rise, se_fall)))
    rest[at] = np.where(enough, left, 0.0)
    return rest


def _with_twin_reasons(reasons, asset_ids, twins, step_twin, pre_twin, partly, size_kw, excess_kw,
                       onset, dates):
    """Say why an unexplained load matched by a sibling's missing energy is not flagged.

    Where the sibling accounts for only part of the rise (``partly``), say
    which part, beside the reasons of the flag.
    """
    out = list(reasons)
    partner = twins.set_index(col.ASSET_ID)
    for i in np.flatnonzero(step_twin | pre_twin):  # a loop over the few such assets, for text
        p = partner.loc[asset_ids[i]]
        meter = p.get("meter_id", "")
        meter = meter if isinstance(meter, str) else ""
        if partly[i]:
            cause = (f"the new load of meter {meter}, listed under {p['partner']} on the same "
                     "feeder (probably fed by this transformer" if meter else
                     f"matched by a fall of {p['partner']} on the same feeder (a meter listed "
                     f"under {p['partner']} is probably fed by this transformer")
            out[i] = (f"{out[i]}; of its rise of {_fmt_kw(size_kw[i])} on "
                      f"{dates[onset[i]].date().isoformat()}, {_fmt_kw(p['partner_kw'])} is "
                      f"{cause}; see topology.csv): only the rest is unexplained")
            continue
        if step_twin[i] and meter:
            text = (f"not flagged: its unexplained load rose {_fmt_kw(size_kw[i])} on "
                    f"{dates[onset[i]].date().isoformat()}, when meter {meter}, listed under "
                    f"{p['partner']} on the same feeder, started drawing "
                    f"{_fmt_kw(p['partner_kw'])} more and {p['partner']}'s balance fell: the "
                    "meter is probably fed by this transformer (a map error, not a theft; see "
                    "topology.csv)")
        elif step_twin[i]:
            text = (f"not flagged: its unexplained load rose {_fmt_kw(size_kw[i])} on "
                    f"{dates[onset[i]].date().isoformat()}, and {p['partner']} on the same feeder "
                    f"fell by {_fmt_kw(p['partner_kw'])} then: a meter listed under {p['partner']} "
                    "is probably fed by this transformer (a map error, not a theft; see "
                    "topology.csv)")
        else:
            text = (f"not flagged: it delivers about {_fmt_kw(excess_kw[i])} more than its meters "
                    f"record, and the meters of {p['partner']} on the same feeder record "
                    f"{_fmt_kw(p['partner_kw'])} more than it delivers: a meter listed under "
                    f"{p['partner']} is probably fed by this transformer (a map error, not a "
                    "theft; see topology.csv)")
        out[i] = text
    return out


def _with_fault_reasons(reasons, arrays, dates):
    """Put the metering fault of each asset first in its reasons."""
    out = list(reasons)
    hours, certain = arrays["clock_hours"], arrays["clock_certain"]
    found, factor, day = arrays["ratio_found"], arrays["ratio_factor"], arrays["ratio_day"]
    possible = arrays["ratio_possible"]
    for i in np.flatnonzero(possible):  # a hint beside whatever else the asset shows
        out[i] = "; ".join(p for p in (out[i], (
            f"its unexplained load follows the transformer's load hour by hour (about "
            f"x{factor[i]:.3f}): check the CT ratio and the meter constant before sending a "
            "crew")) if p)
    for i in np.flatnonzero(certain | found):  # a loop over the faulty assets, to format text
        parts = []
        if certain[i]:
            h = abs(float(hours[i]))
            parts.append(f"metering fault: the upstream clock is {h:g} h "
                         f"{'ahead of' if hours[i] > 0 else 'behind'} the meters' (the residual "
                         f"vanishes with the series shifted by {h:g} h); corrected before the balance")
        if found[i]:
            parts.append(f"metering fault: the upstream reading is x{factor[i]:.3f} of what it was "
                         f"from {dates[day[i]].date().isoformat()} on, in proportion to the load at "
                         "every hour (a CT or meter ratio change, not a load); check the CT ratio "
                         "and the meter constant")
        # what the fault makes of the residual is no load: its "not flagged" lines go
        parts += [p for p in out[i].split("; ") if p and not p.startswith("not flagged:")]
        out[i] = "; ".join(parts)
    return out


def _assemble_table(up_ids, meta, why_not, body):
    """Every upstream asset, balanced or not, in the upstream order, with :data:`TABLE_COLUMNS`."""
    table = pd.DataFrame(index=up_ids)
    table[col.ASSET_ID] = up_ids.to_numpy()
    table = table.join(meta).join(body.drop(columns=[col.ASSET_ID]))
    table[col.FLAGGED] = table[col.FLAGGED].fillna(False).astype(bool)
    table[col.UNEXPLAINED_KW] = table[col.UNEXPLAINED_KW].fillna(0.0).astype(float)
    table["excess_kwh"] = table["excess_kwh"].fillna(0.0).astype(float)
    for name in (col.ONSET, col.SUSPECTS, col.KIND, "load_type", "candidate_onset"):
        table[name] = table[name].fillna("").astype(str)
    reasons = table[col.REASONS].fillna("").astype(str)
    table[col.REASONS] = np.where(why_not.reindex(up_ids).to_numpy() != "", why_not.reindex(up_ids),
                                  reasons)
    table[col.COVERAGE] = table[col.COVERAGE].astype(float)
    return table[list(TABLE_COLUMNS)].reset_index(drop=True)


def _empty_balance(up_ids, meta, why_not, grid):
    body = pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_COLUMNS
                         if c not in meta.columns}).set_index(col.ASSET_ID, drop=False)
    table = _assemble_table(up_ids, meta, why_not, body)
    suspects = pd.DataFrame({c: pd.Series(dtype=object) for c in SUSPECTS_COLUMNS})
    empty = np.zeros((grid.n_days, 0))
    return Balance(table=table, suspects=suspects, delivered_kw=empty, metered_kw=empty.copy(),
                   loss_kw=empty.copy(), unexplained_kw=empty.copy(), asset_ids=[], dates=grid.dates)
