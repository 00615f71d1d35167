"""Visible load: a new (or long-running) flat, round-the-clock draw on a meter.

The detector works on the whole ``(n_cells, n_meters)`` demand matrix:

1. cells in runs of identical readings (stuck registers) are masked and
   reported as data quality, never scored as load;
2. each local day is summarised per meter by its *floor* (25th percentile of
   the day's cells: robust to up to six hours of peak-time curtailment), its
   mean and its 75th percentile;
3. the daily floor is modelled jointly with the covariates that explain
   ordinary variation (weekend, heating/cooling degree-days when weather is
   given, the peer group's daily index) and a single upward level shift,
   scanned over every candidate onset day (:mod:`gridwatch.levelshift`);
4. the shift must look like mining: the floor rises as much as the mean
   (unlike night storage heating, EV charging or cycling loads), the rise is
   the same in every hour of the day (unlike a household that grows with its
   own daily shape), it is present on most days since the onset, and it does
   not follow temperature;
5. a load already running before the window shows as a floor that is high
   and steady compared with the meter's own variable part and with its
   class peers;
6. significance is calibrated on the population itself (robust scale of
   natural level changes among all meters of the class), and flags are
   controlled with Benjamini-Hochberg at ``fdr_alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from gridwatch import columns as col
from gridwatch.days import DayGrid, by_day_any, daily_mean, daily_quantiles
from gridwatch.features import (
    HourOfDaySums,
    TemperatureResponse,
    degree_days,
    flat_increment_kw,
    hourly_spread,
    nanmedian_columns,
    nanquantile_columns,
    on_state,
    onset_cell,
    repeated_value_runs,
)
from gridwatch.issues import IssueLog
from gridwatch.levelshift import scan_level_shift, shift_at
from gridwatch.peers import PeerCounts, peer_counts, peer_index

FLOOR_QUANTILE = 0.25
MID_QUANTILE = 0.5  # the day's median cell: lifted by a load that runs most of the day
HEATING_MIN_T = 3.0  # a load that rises with degree-days this clearly (t-statistic) ...
HEATING_MAX_WARM_SHARE = 0.45  # ... and keeps less than this share of it when no heating is
# needed is heating (heat pumps, heaters); a rig that heats the house keeps more
HIGH_FLOOR_Z = 0.674  # a household floor at the upper quartile of its peers' (in z)
MIN_PRE_DAYS_FOR_HEATING = 10  # days before a load needed to fit its baseline alone
MAX_FLOOR_CV = 0.25  # day-to-day variation of a long-running floor, weather aside
STOPS_MIN_T = 4.0  # a clear step (t-statistic) before its on-state is looked at
MIN_UPTIME = 0.6  # a new load that runs this share of the hours is judged on its on-state ...
RIG_ON_NOISE = 0.1  # an on-state this steady (interquartile range over level) is a rig's
MAX_WITHIN_NOISE = 0.2  # ... when it adds less variability than this within a typical hour
# (a thermostat cycling within the hour adds much more; a rig none) [share of its size]
PEER_MULTIPLE = 2.0  # similar-premises sign: at least this many times their mean demand ...
PEER_FLAT_SHARE = 0.6  # ... with a floor at least this share of its own mean (flat) ...
PEER_MIN_EXCESS_SHARE = 0.5  # ... and the always-on excess at least this share of it
ON_DAY_SHARE = 0.5  # a long-running load is judged on the days its floor reaches this share of
ON_DAY_QUANTILE = 0.9  # ... its good days' (this quantile of its daily floors): outages and
# curtailment leave days below it, and a load that ran a tenth of the window has good days
STAGE_MIN_T = 4.0  # t-statistic an earlier install stage needs to move the onset
PROVISIONAL_DAYS = 3  # full days since the onset below which a flag is provisional
ENDED_DAYS = 2  # full days without the load at the end that make it "not seen since"
CONSTANT_FLOOR_SHARE = 0.8  # a long-running X kW keeps the day's median cell above the
# household's floor plus 0.8 X on min_persistence of the days: outages and curtailment of
# hours (pools, prices, peak hours) must not hide a rig that ran before the window


@dataclass
class Detection:
    """Per-meter detection results and the arrays behind them.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per meter (index ``meter_id``): the flags.csv fields plus
        diagnostics (``p_value``, ``q_value``, ``flatness``, ...).
    floor_kw, mean_kw : numpy.ndarray of shape (n_days, n_meters)
        Daily floor and mean demand [kW] (NaN on unusable days).
    expected_floor_kw, expected_mean_kw : numpy.ndarray of shape (n_days, n_meters)
        What they would have been without the detected shift [kW].
    masked : numpy.ndarray of bool, shape (n_cells, n_meters)
        Cells hidden from detection (frozen or zero runs).
    onset_cell : numpy.ndarray of int, shape (n_meters,)
        Grid cell at which a flagged new load switched on; -1 for none.
    """

    table: pd.DataFrame
    floor_kw: np.ndarray
    mean_kw: np.ndarray
    expected_floor_kw: np.ndarray
    expected_mean_kw: np.ndarray
    masked: np.ndarray
    onset_cell: np.ndarray


@dataclass
class Measurement:
    """What the detector measured on some meters, before judging significance.

    Made by :func:`measure_visible_load`, finished by :func:`decide_visible_load`;
    picklable, so a partitioned run can keep it on disk between its passes.
    Arrays are ``(n_days, n_meters)`` (``run``: ``(n_cells, n_meters)``) or
    ``(n_meters,)``, in the order of ``meters``.

    Attributes
    ----------
    evidence : pandas.DataFrame
        The figures :meth:`Calibration.fit` takes, one row per meter (index ``meter_id``).
    issues : IssueLog
        Data-quality findings of the measurement (stuck registers, zero runs,
        short histories).
    """

    evidence: pd.DataFrame
    issues: IssueLog
    meters: pd.DataFrame
    grid: DayGrid
    detection: object  # gridwatch.config.DetectionConfig
    has_weather: bool
    frozen: np.ndarray
    analysed: np.ndarray
    base_floor: np.ndarray
    base_mean: np.ndarray
    cell: np.ndarray
    flat: np.ndarray
    floor: np.ndarray
    floor_cv: np.ndarray
    floor_level: np.ndarray
    floor_ratio: np.ndarray
    heat_t: np.ndarray
    level_kw: np.ndarray
    mean: np.ndarray
    mid: np.ndarray
    n_post_valid: np.ndarray
    noise_ratio: np.ndarray
    onset: np.ndarray
    persistence: np.ndarray
    post_day: np.ndarray
    pre_heat: TemperatureResponse | None
    present: np.ndarray
    resid_floor: np.ndarray
    run: np.ndarray
    run_end: np.ndarray
    from_start: np.ndarray  # a long-running load there when the data start, on enough days
    uptime: np.ndarray
    on_noise: np.ndarray
    within_noise: np.ndarray
    shift_floor: np.ndarray
    shift_mean: np.ndarray
    unsteadiness: np.ndarray
    valid_days: np.ndarray
    warm_share: np.ndarray


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' / 'Mean of empty slice' warnings locally."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def detect_visible_load(kw, grid: DayGrid, meters: pd.DataFrame, *, temperature_c=None,
                        spread_kw=None, detection, analysis, frozen_hours=24,
                        peers: PeerCounts | None = None,
                        calibration: Calibration | None = None) -> tuple[Detection, IssueLog]:
    """Score every meter for a mining-like visible load.

    Called on all meters at once, the population that calibrates the
    significance is the meters given. A run cut into partitions passes the
    peer counts and the calibration of all meters (see :func:`detection_evidence`
    and :meth:`Calibration.fit`), and gets the same result for each meter as
    the all-at-once call.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Mean demand per grid cell [kW], NaN where missing.
    grid : DayGrid
        Local days of the grid.
    meters : pandas.DataFrame
        One row per column of ``kw`` (same order), with at least
        ``meter_id``, ``customer_class``, ``transformer_id``, ``region``,
        ``tariff_per_kwh``.
    temperature_c : numpy.ndarray of shape (n_days, n_meters), optional
        Daily mean outdoor temperature at each meter [degrees C].
    spread_kw : numpy.ndarray of shape (n_cells, n_meters), optional
        Spread of the meter's own sub-interval demands within each cell [kW]
        (:func:`gridwatch.resample.to_grid` with ``with_spread``); lets a
        thermostat cycling faster than the grid be told from a steady rig.
    detection : gridwatch.config.DetectionConfig
    analysis : gridwatch.config.AnalysisConfig
    frozen_hours : int, default 24
        Identical readings for this long are a stuck meter [h].
    peers : PeerCounts, optional
        Peer-group counts of every meter of the run (default: of these meters).
    calibration : Calibration, optional
        Significance calibrated on every meter of the run (default: on these meters).

    Returns
    -------
    Detection, IssueLog
    """
    measured = measure_visible_load(kw, grid, meters, temperature_c=temperature_c,
                                    spread_kw=spread_kw, detection=detection, analysis=analysis,
                                    frozen_hours=frozen_hours, peers=peers)
    return decide_visible_load(measured, calibration)


def measure_visible_load(kw, grid: DayGrid, meters: pd.DataFrame, *, peers: PeerCounts | None = None,
                         temperature_c=None, spread_kw=None, detection, analysis,
                         frozen_hours=24, daily: DailyFigures | None = None) -> Measurement:
    """Everything the detector measures on some meters before it judges significance.

    The expensive part of :func:`detect_visible_load`: the floors, the
    level-shift scans, the shape of each candidate load. A run cut into
    partitions measures each partition once (with ``peers`` the counts of
    every meter of the run), concatenates the partitions'
    :attr:`Measurement.evidence`, fits one :class:`Calibration` and then
    finishes each partition with :func:`decide_visible_load`.

    Parameters are those of :func:`detect_visible_load`, and ``daily``: the
    meters' :func:`daily_figures` when already computed (same ``kw``, grid
    and settings), so that a partitioned run computes them once.

    Returns
    -------
    Measurement
        Picklable; ``evidence`` has one row per meter (index ``meter_id``).
    """
    return _measure(kw, grid, meters, temperature_c=temperature_c, spread_kw=spread_kw,
                    detection=detection, analysis=analysis, frozen_hours=frozen_hours, peers=peers,
                    daily=daily)


def detection_evidence(kw, grid: DayGrid, meters: pd.DataFrame, *, peers: PeerCounts,
                       temperature_c=None, spread_kw=None, detection, analysis,
                       frozen_hours=24) -> pd.DataFrame:
    """The per-meter figures that calibrate significance (:attr:`Measurement.evidence`).

    Concatenate the frames of all partitions and pass them to :meth:`Calibration.fit`.
    """
    return measure_visible_load(kw, grid, meters, peers=peers, temperature_c=temperature_c,
                                spread_kw=spread_kw, detection=detection, analysis=analysis,
                                frozen_hours=frozen_hours).evidence


def decide_visible_load(measured: Measurement,
                        calibration: Calibration | None = None) -> tuple[Detection, IssueLog]:
    """Finish a detection: significance, decisions, estimates and reasons.

    Parameters
    ----------
    measured : Measurement
        From :func:`measure_visible_load`.
    calibration : Calibration, optional
        Significance calibrated on every meter of the run (default: on the
        measured meters alone).

    Returns
    -------
    Detection, IssueLog
        As :func:`detect_visible_load`.
    """
    return _decide(measured, calibration)


@dataclass
class DailyFigures:
    """The day-by-day figures of some meters that the detector and the peer groups start from.

    Attributes
    ----------
    masked : numpy.ndarray of bool, shape (n_cells, n_meters)
        Cells in runs of one repeated value for ``frozen_hours`` or more
        (stuck registers, zero runs): not load, left out of the figures below.
    floor_kw, mid_kw, mean_kw : numpy.ndarray, shape (n_days, n_meters)
        Each day's floor (:data:`FLOOR_QUANTILE`), median cell and mean
        demand [kW]; NaN on days with too few cells. The quantiles are taken over ``floor_cells``
        only. The median is what a load that runs most of the day (a rig
        with outages and curtailment) lifts even on days its floor does not
        show it.
    floor_cells : numpy.ndarray of bool, shape (n_cells, n_meters), or None
        The cells each meter's floor and shape are judged on: the dark ones
        for a meter behind rooftop PV (:func:`gridwatch.solar.floor_cells`),
        all of them for the others; None when that is every meter.
    dark_mean_kw : numpy.ndarray of shape (n_meters,), or None
        Each meter's mean demand over its dark cells [kW]: what its
        household draws in the evening and at night, which tells the size
        of a household behind PV (None without PV in the run's partition).
    """

    masked: np.ndarray
    floor_kw: np.ndarray
    mid_kw: np.ndarray
    mean_kw: np.ndarray
    floor_cells: np.ndarray | None = None
    dark_mean_kw: np.ndarray | None = None


def daily_figures(kw, grid: DayGrid, *, analysis, frozen_hours=24,
                  floor_cells: np.ndarray | None = None,
                  dark: np.ndarray | None = None) -> DailyFigures:
    """Mask repeated-value runs, then take each day's floor, median cell and mean.

    A partitioned run computes them once per partition, when it grids it:
    they give the peer groups' counts (:func:`peer_counts_of`) and the
    detector's measurement (``daily`` of :func:`measure_visible_load`).

    Parameters
    ----------
    kw : array-like of shape (n_cells, n_meters)
        Mean demand per grid cell [kW], NaN where missing.
    grid : DayGrid
    analysis : gridwatch.config.AnalysisConfig
        ``min_day_coverage``: the share of a day's cells a day needs.
    frozen_hours : float, default 24
        A repeated value lasting this long is masked [h].
    floor_cells : numpy.ndarray of bool, shape (n_cells, n_meters), optional
        Cells the floor and the median cell are taken over (default: all);
        a day needs ``min_day_coverage`` of its own such cells.
    dark : numpy.ndarray of bool, shape (n_cells, n_meters), optional
        Every meter's dark cells (:func:`gridwatch.solar.dark_cells`), for
        ``dark_mean_kw``.

    Returns
    -------
    DailyFigures
    """
    kw = np.asarray(kw, dtype=np.float64)
    run = repeated_value_runs(kw, min_cells=int(round(frozen_hours / grid.cell_hours)))
    kw = np.where(run, np.nan, kw)
    nominal_cells = 24 / grid.cell_hours  # a partial edge day must not pass as a full one
    min_cells = np.full(grid.n_days, int(np.ceil(nominal_cells * analysis.min_day_coverage)))
    min_cells = np.maximum(min_cells, 1)
    mean = daily_mean(kw, grid, min_cells)
    quantiles = [FLOOR_QUANTILE, MID_QUANTILE]
    if floor_cells is None:
        floor, mid = daily_quantiles(kw, grid, quantiles, min_cells)
    else:
        starts = np.concatenate([[0], np.cumsum(grid.cells_per_day)[:-1]])
        per_day = np.add.reduceat(floor_cells.astype(np.int32), starts, axis=0)  # (n_days, n_meters)
        own_min = np.maximum(np.ceil(per_day * analysis.min_day_coverage), 1).astype(np.int64)
        floor, mid = daily_quantiles(np.where(floor_cells, kw, np.nan), grid, quantiles, own_min)
        # a day needs its whole-day coverage too (a partial edge day is not a full one)
        floor, mid = (np.where(np.isnan(mean), np.nan, a) for a in (floor, mid))
    dark_mean = None
    if dark is not None:
        sel = dark & ~np.isnan(kw)
        with np.errstate(invalid="ignore", divide="ignore"):
            dark_mean = np.where(sel, kw, 0.0).sum(axis=0) / sel.sum(axis=0)
    return DailyFigures(masked=run, floor_kw=floor, mid_kw=mid, mean_kw=mean,
                        floor_cells=floor_cells, dark_mean_kw=dark_mean)


def peer_counts_of(kw, grid: DayGrid, meters: pd.DataFrame, *, analysis, frozen_hours=24,
                   daily: DailyFigures | None = None) -> PeerCounts:
    """Peer-group counts of one partition's daily floors (first pass of a partitioned run).

    ``daily``: the partition's :func:`daily_figures`, when already computed.
    """
    if daily is None:
        daily = daily_figures(kw, grid, analysis=analysis, frozen_hours=frozen_hours)
    return peer_counts(daily.floor_kw, meters)


def _measure(kw, grid, meters, *, temperature_c, spread_kw, detection, analysis, frozen_hours,
             peers, daily=None) -> Measurement:
    kw = np.asarray(kw, dtype=np.float64)
    n_cells, n_meters = kw.shape
    if len(meters) != n_meters:
        raise ValueError(f"meters has {len(meters)} rows but kw has {n_meters} columns")
    ids = meters[col.METER_ID].astype(str).to_numpy()
    issues = IssueLog()
    n_days = grid.n_days

    # 1. stuck registers and long zero runs are not load; 2. daily floor, median and mean.
    if daily is None:
        daily = daily_figures(kw, grid, analysis=analysis, frozen_hours=frozen_hours)
    elif daily.masked.shape != kw.shape:
        raise ValueError(f"daily figures of {daily.masked.shape} cells x meters, kw {kw.shape}")
    run, floor, mid, mean = daily.masked, daily.floor_kw, daily.mid_kw, daily.mean_kw
    zero_run = (kw == 0) & run
    kw = np.where(run, np.nan, kw)
    frozen = run & ~zero_run
    # The shape of a load is judged on the cells its floor is: the dark ones behind PV.
    pv = daily.floor_cells is not None
    kw_shape = np.where(daily.floor_cells, kw, np.nan) if pv else kw
    behind_pv = ~daily.floor_cells.all(axis=0) if pv else np.zeros(n_meters, dtype=bool)
    issues.add_per_meter("readings.frozen_value", "readings",
                         pd.Series(frozen.sum(axis=0), index=ids), "masked",
                         detail=f"same non-zero reading repeated for >= {frozen_hours} h: "
                                "stuck register or head-end repeating a value; check the meter "
                                "(count = grid hours masked)",
                         severity="warning")
    issues.add_per_meter("readings.zero_run", "readings",
                         pd.Series(zero_run.sum(axis=0), index=ids), "masked",
                         detail=f"zero consumption for >= {frozen_hours} h (vacancy, disconnection "
                                "or bypass); not used to model the meter (count = grid hours masked)",
                         severity="info")
    valid_days = (~np.isnan(mean)).sum(axis=0)
    analysed = valid_days >= min(analysis.min_history_days, n_days)
    issues.add_per_meter("baseline.insufficient_history", "model",
                         pd.Series(np.where(analysed, 0, n_days - valid_days), index=ids), "excluded",
                         detail=f"fewer than {analysis.min_history_days} usable days in the window; "
                                "meter not scored (count = unusable days)")

    # 3. covariates and the level-shift scan on the floor.
    covariates = [np.ones((n_days, n_meters)), np.repeat(grid.weekend[:, None], n_meters, 1) * 1.0]
    hdd = cdd = None
    if temperature_c is not None:
        hdd, cdd = degree_days(np.asarray(temperature_c, dtype=np.float64))
        for dd in (hdd, cdd):
            if dd.size and np.nanstd(dd) > 0.5:
                covariates.append(dd)
    covariates.append(peer_index(meters, peers if peers is not None else peer_counts(floor, meters)))
    X = np.stack(covariates, axis=2).transpose(1, 0, 2)  # (M, D, p)
    min_pre = max(5, min(7, n_days // 3))
    scan = scan_level_shift(floor, X, min_pre=min_pre, min_post=detection.min_post_onset_days)
    day_onset = np.where(analysed, scan.onset, -1)
    first_size = np.nan_to_num(scan.shift)
    # Rigs are often installed in stages: look for an earlier, smaller step
    # before the biggest one, so that the onset is the first unit's day.
    before_step = np.arange(n_days)[:, None] >= (day_onset - 1)[None, :]
    earlier = scan_level_shift(np.where(before_step, np.nan, floor), X, min_pre=min_pre, min_post=3)
    staged = ((day_onset >= 0) & (earlier.onset >= 0) & (earlier.t >= STAGE_MIN_T)
              & (earlier.shift >= np.maximum(detection.min_excess_kw, 0.15 * first_size)))
    day_onset = np.where(staged, earlier.onset, day_onset)
    first_size = np.where(staged, earlier.shift, first_size)

    # 4. date the switch-on to the cell: a rig is installed during a day, so
    # that day is partial; it is the onset, and the shape of the new load is
    # judged on the full days after it.
    candidate = (day_onset >= 0) & (scan.shift >= 0.5 * detection.min_excess_kw)
    settled = (np.arange(n_days)[:, None] < day_onset[None, :] - 1)[grid.day_of_cell]
    hour_sums = HourOfDaySums(kw_shape, grid.hour_of_cell)
    usual_kw, _ = hour_sums.increment(~settled)
    cell = onset_cell(kw_shape, grid.slots, grid.hour_of_cell, np.where(candidate, day_onset, -1),
                      usual_kw, 0.5 * first_size)
    onset = np.where(cell >= 0, grid.day_of_cell[np.maximum(cell, 0)], day_onset)
    partial = (cell >= 0) & (cell != grid.slots[np.maximum(onset, 0), 0])
    first_full = np.where(onset >= 0, onset + partial, -1)
    first_full = np.where(first_full >= n_days, -1, first_full)
    onset = np.where(first_full >= 0, onset, -1)
    install_day = np.zeros_like(floor, dtype=bool)
    install_day[np.maximum(onset, 0), np.arange(n_meters)] = partial & (onset >= 0)
    floor_full, mean_full = (np.where(install_day, np.nan, a) for a in (floor, mean))

    shift_floor, base_floor = shift_at(floor_full, X, first_full)
    shift_mean, base_mean = shift_at(mean_full, X, first_full)

    day_idx = np.arange(n_days)
    post_day = (day_idx[:, None] >= first_full[None, :]) & (first_full[None, :] >= 0)
    resid_floor = floor_full - base_floor
    # A day has the load when its floor shows it, or, for a load that runs most
    # of the day but stops for hours (outages, curtailment), its median cell does.
    pre_full = (day_idx[:, None] < first_full[None, :]) & (first_full[None, :] >= 0)
    mid_gap = _nanmedian_where(mid - floor, pre_full)  # the household's median above its floor
    resid_mid = np.where(install_day, np.nan, mid) - base_floor - np.nan_to_num(mid_gap)[None, :]
    with np.errstate(invalid="ignore"):
        present_kw = 0.5 * np.fmin(shift_floor, np.where(staged, first_size, np.inf))
        present = ((resid_floor > present_kw[None, :]) | (resid_mid > present_kw[None, :])) & post_day
    n_post_valid = (post_day & ~np.isnan(resid_floor)).sum(axis=0)
    persistence = np.where(n_post_valid > 0, present.sum(axis=0) / np.maximum(n_post_valid, 1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        floor_ratio = shift_floor / shift_mean
    cell_idx = np.arange(n_cells)[:, None]
    post_cell = np.where(cell[None, :] >= 0, cell_idx >= cell[None, :], post_day[grid.day_of_cell])
    full_cell = post_day[grid.day_of_cell]  # post cells on full days only
    before_kw, after_kw = hour_sums.increment(full_cell)
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = np.clip(flat_increment_kw(before_kw, after_kw) / shift_floor, 0.0, 1.5)
    flat = np.where(n_post_valid >= 3, flat, np.nan)  # too noisy on 1-2 days
    # A rig adds a level, not variance; a thermostat cycling a heater adds both.
    before_kw, _ = hour_sums.increment(post_cell)
    del hour_sums
    with np.errstate(invalid="ignore", divide="ignore"):
        shape_mean = daily_mean(kw_shape, grid, np.ones(n_days, dtype=np.int64)) if pv else mean
        day_level = shape_mean[grid.day_of_cell]
        noise_ratio = (hourly_spread(kw_shape, grid.hour_of_cell, full_cell, after_kw, day_level)
                       - hourly_spread(kw_shape, grid.hour_of_cell, ~post_cell, before_kw, day_level)
                       ) / np.where(behind_pv, np.fmax(shift_mean, shift_floor), shift_mean)
    if spread_kw is not None:
        spread_kw = np.where(run, np.nan, np.asarray(spread_kw, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan():
            within = (np.nanmean(np.where(full_cell, spread_kw, np.nan), axis=0)
                      - np.nanmean(np.where(~post_cell, spread_kw, np.nan), axis=0)) / shift_mean
        noise_ratio = np.fmax(noise_ratio, within)
        # ... and in a typical hour (a GPU rig's few restarts a day aside), for the
        # meters with a candidate load and readings finer than the grid
        within_noise = np.full(n_meters, np.nan)
        sel = np.flatnonzero((onset >= 0) & np.isfinite(within))
        if len(sel):
            sub = spread_kw[:, sel]
            within_noise[sel] = (nanmedian_columns(np.where(full_cell[:, sel], sub, np.nan))
                                 - nanmedian_columns(np.where(~post_cell[:, sel], sub, np.nan))
                                 ) / shift_mean[sel]
    else:
        within_noise = np.full(n_meters, np.nan)
    # Cycling loads raise the mean more than the floor and add variability.
    with np.errstate(invalid="ignore"):
        unsteadiness = np.clip(noise_ratio, 0, None) + np.clip(1 - floor_ratio, 0, None)
        # A load that stops for hours adds variability too: judge it while it runs.
        stops = ((onset >= 0) & (unsteadiness > detection.max_unsteadiness)
                 & (shift_floor >= detection.min_excess_kw) & (scan.t >= STOPS_MIN_T))
    uptime = np.full(n_meters, np.nan)
    on_noise = np.full(n_meters, np.nan)
    if stops.any():
        sel = np.flatnonzero(stops)
        # its size: what the floor, or on days with hours off the median cell, rose by
        shift_mid, _ = shift_at(np.where(install_day, np.nan, mid)[:, sel], X[sel], first_full[sel])
        uptime[sel], _, on_noise[sel] = on_state(
            kw_shape[:, sel], grid.hour_of_cell, usual_kw[:, sel], post_cell[:, sel],
            np.fmax(shift_floor[sel], shift_mid))
    with np.errstate(invalid="ignore"):
        # ... when its stops last hours: no new variability within the hour (what a
        # thermostat cycling adds), or, read hourly, a floor that rose more than the
        # mean, or an on-state as steady as a rig's (a duty cycle seen hourly is not)
        hours_off = np.where(np.isnan(within_noise),
                             (floor_ratio >= 1.0) | (on_noise <= RIG_ON_NOISE),
                             within_noise <= MAX_WITHIN_NOISE)
        runs = (stops & (uptime >= MIN_UPTIME) & (on_noise <= detection.max_unsteadiness)
                & hours_off)
        unsteadiness = np.where(runs, np.clip(on_noise, 0, None), unsteadiness)
    # Heating follows temperature and falls to nothing when it is warm; a rig
    # does not (beyond a few % of drift), and a rig that heats the house keeps
    # most of its power when throttled. The load is judged against the floor
    # expected from the days before it alone, so that the joint fit's
    # degree-day term cannot absorb a heater's dependence on temperature.
    warm_share = np.full(n_meters, np.nan)
    heat_t = np.full(n_meters, np.nan)
    pre_heat = None
    sel = np.flatnonzero(first_full >= 0)  # the meters with a new load
    if hdd is not None and len(sel):
        floor_sel = floor_full[:, sel]
        _, base_pre = shift_at(np.where(pre_full[:, sel], floor_sel, np.nan), X[sel],
                               np.full(len(sel), -1))
        # (with too few days before it, the joint fit is all there is)
        n_pre_valid = (pre_full[:, sel] & ~np.isnan(floor_sel)).sum(axis=0)
        base_pre = np.where((n_pre_valid >= MIN_PRE_DAYS_FOR_HEATING)[None, :], base_pre,
                            base_floor[:, sel])
        step_heat = TemperatureResponse(floor_sel - base_pre, hdd[:, sel],
                                        post_day[:, sel] & (n_post_valid[sel] >= 5)[None, :])
        warm_share[sel], heat_t[sel] = step_heat.warm_share(), step_heat.slope_t

    pre_day = (day_idx[:, None] < onset[None, :]) | (onset[None, :] < 0)
    level_kw = _nanmedian_where(mean, pre_day)  # ordinary mean demand before the onset
    with _quiet_nan():
        level_kw = np.where(np.isnan(level_kw), nanmedian_columns(mean), level_kw)

    # 5. long-running load: floor high and steady vs own variable part and class peers,
    # judged on the days it ran: outages of hours leave days with a low floor, and a
    # load that was there when the data start may have stopped since (removed, or a
    # rig run in the cold months only).
    valid_floor = ~np.isnan(floor)
    with _quiet_nan():
        on_day = floor >= ON_DAY_SHARE * nanquantile_columns(floor, ON_DAY_QUANTILE)[None, :]
    first_valid = np.where(valid_floor.any(axis=0), np.argmax(valid_floor, axis=0), n_days)
    first_on = np.where(on_day.any(axis=0), np.argmax(on_day, axis=0), n_days)
    last_on = np.where(on_day.any(axis=0), n_days - 1 - np.argmax(on_day[::-1], axis=0), -1)
    from_start = first_on <= first_valid + 2
    run_end = np.where(from_start & (last_on < n_days - 1 - ENDED_DAYS), last_on + 1, n_days)
    ran = day_idx[:, None] < run_end[None, :]  # the days a long-running load had (if any)
    # ... on enough days with data to judge it (a meter with weeks of zeros has few)
    long_enough = (valid_floor & ran).sum(axis=0) >= min(analysis.min_history_days, n_days)
    with _quiet_nan():
        floor_level = nanmedian_columns(np.where(on_day & ran, floor, np.nan))
        mean_level = nanmedian_columns(np.where(on_day & ran, mean, np.nan))
    # Behind PV the daytime import is the sun's, not the household's: its variable
    # part is not seen (the calibration predicts it from its evening and night demand).
    variable_kw = np.where(behind_pv, np.nan, np.maximum(mean_level - floor_level, 0.02))
    if hdd is not None:
        pre_heat = TemperatureResponse(floor, hdd, valid_floor & ran)
        wobble = pre_heat.residual_kw
        mid_wobble = TemperatureResponse(mid, hdd, valid_floor & ran).residual_kw
    else:
        wobble, mid_wobble = floor, mid
    # Day-to-day variation of the floor, weather aside (or of the median cell, which
    # a load with outages of hours keeps steadier).
    floor_cv = np.fmin(_robust_cv(np.where(on_day & ran, wobble, np.nan), floor_level),
                       _robust_cv(np.where(on_day & ran, mid_wobble, np.nan), floor_level))

    # 6. significance against the population's own changes (calibrated on every
    # meter of the run, which may be more than these).
    evidence = pd.DataFrame({
        col.CUSTOMER_CLASS: meters[col.CUSTOMER_CLASS].astype("string").fillna("other").to_numpy(),
        "analysed": analysed,
        col.REGION: meters[col.REGION].astype("string").fillna("").to_numpy(),
        "floor_level_kw": floor_level,
        "mean_level_kw": mean_level,
        "variable_kw": variable_kw,
        "dark_mean_kw": (daily.dark_mean_kw if daily.dark_mean_kw is not None
                         else np.full(n_meters, np.nan)),
        "rel_shift": shift_floor / np.maximum(level_kw, 1e-3),
        "shift_floor_kw": shift_floor,
        "shift_se_kw": scan.shift / np.where(np.isfinite(scan.t) & (scan.t > 0), scan.t, np.inf),
        "level_kw": level_kw,
    }, index=pd.Index(ids, name=col.METER_ID))
    return Measurement(
        evidence=evidence, issues=issues, meters=meters, grid=grid, detection=detection,
        has_weather=hdd is not None, frozen=frozen.any(axis=0),
        analysed=analysed, base_floor=base_floor, base_mean=base_mean, cell=cell,
        heat_t=heat_t, mid=mid, flat=flat, floor=floor, floor_cv=floor_cv,
        floor_level=floor_level, floor_ratio=floor_ratio, level_kw=level_kw, mean=mean,
        n_post_valid=n_post_valid, noise_ratio=noise_ratio, onset=onset, persistence=persistence,
        post_day=post_day, pre_heat=pre_heat, present=present, resid_floor=resid_floor,
        run_end=run_end, from_start=from_start & long_enough, uptime=uptime, on_noise=on_noise,
        within_noise=within_noise,
        run=run, shift_floor=shift_floor, shift_mean=shift_mean, warm_share=warm_share,
        unsteadiness=unsteadiness, valid_days=valid_days,
    )


def _decide(m: Measurement, calibration: Calibration | None) -> tuple[Detection, IssueLog]:
    """The detector's decisions, estimates and reasons, given the significance calibration."""
    detection, grid, meters = m.detection, m.grid, m.meters
    issues = IssueLog().extend(m.issues)
    ids = m.evidence.index.to_numpy()
    n_days = grid.n_days
    hours = grid.cells_per_day * grid.cell_hours
    day_idx = np.arange(n_days)
    if calibration is None:
        calibration = Calibration.fit(m.evidence, detection)
    # daily (n_days, n_meters)
    floor, mean, mid = m.floor, m.mean, m.mid
    resid_floor, base_floor, base_mean = m.resid_floor, m.base_floor, m.base_mean
    post_day, present = m.post_day, m.present
    # per meter
    analysed, valid_days, n_post_valid = m.analysed, m.valid_days, m.n_post_valid
    onset, cell = m.onset, m.cell
    shift_floor, shift_mean, floor_ratio = m.shift_floor, m.shift_mean, m.floor_ratio
    flat, noise_ratio, unsteadiness = m.flat, m.noise_ratio, m.unsteadiness
    persistence, warm_share, heat_t = m.persistence, m.warm_share, m.heat_t
    level_kw, floor_level, floor_cv = m.level_kw, m.floor_level, m.floor_cv
    # (n_cells, n_meters)
    run = m.run
    cal = calibration.table.reindex(ids)
    p_step, p_pre, p_value, q_value = (cal[name].to_numpy() for name in
                                       ("p_step", "p_pre", "p_value", "q_value"))
    typical_floor = cal["typical_floor_kw"].to_numpy()
    excess_pre = floor_level - typical_floor
    # A long-running load has no before to compare with: its size must hold even
    # if the household's own floor is at the high end of its peers'.
    excess_low = floor_level - cal["high_floor_kw"].to_numpy()
    cutoff = calibration.cutoff
    if m.pre_heat is not None:
        pre_warm_share, pre_heat_t = m.pre_heat.warm_share(typical_floor), m.pre_heat.slope_t
    else:
        pre_warm_share = pre_heat_t = np.full(len(ids), np.nan)

    # 7. decisions, estimates, reasons.
    step_sig = np.minimum(1.0, 2.0 * p_step) <= cutoff
    # The load's size: its level over the last (up to) seven days on which it ran.
    present_rank = np.cumsum(present[::-1], axis=0)[::-1]  # present days from here to the end
    recent = present & (present_rank <= 7)
    excess_kw_step = _nanmedian_where(resid_floor, recent)
    excess_kw_step = np.where(np.isnan(excess_kw_step), shift_floor, excess_kw_step)
    step_shape = {
        "big": (shift_floor >= detection.min_excess_kw)
        & (shift_floor >= detection.min_relative_excess * level_kw),
        "steady": ~(unsteadiness > detection.max_unsteadiness) & ~(m.within_noise > MAX_WITHIN_NOISE),
        "flat_hour": ~(flat < detection.min_flatness),  # NaN (too few days) passes
        "persistent": persistence >= detection.min_persistence,
        "not_heating": ~_heating(heat_t, warm_share),
    }
    step_ok = step_sig & np.logical_and.reduce(list(step_shape.values()))

    pre_sig = (np.minimum(1.0, 2.0 * p_pre) <= cutoff) & ~step_ok
    # A load of X kW that runs most of every day keeps the day's median hour
    # above the household's floor plus most of X (outages and curtailment of a
    # few hours aside).
    ran = day_idx[:, None] < m.run_end[None, :]  # the days a long-running load had
    with np.errstate(invalid="ignore"):
        below = (mid < (typical_floor + CONSTANT_FLOOR_SHARE * excess_pre)[None, :]) & ~np.isnan(mid)
    days_valid = (~np.isnan(mid) & ran).sum(axis=0)
    days_above = days_valid - (below & ran).sum(axis=0)
    pre_shape = {
        "big": excess_low >= detection.min_excess_kw,
        "steady": floor_cv <= MAX_FLOOR_CV,
        "constant": days_above >= detection.min_persistence * days_valid,
        "not_heating": ~_heating(pre_heat_t, pre_warm_share),
    }
    pre_class = meters[col.CUSTOMER_CLASS].astype("string").fillna("other").isin(
        list(detection.preexisting_classes)).to_numpy()
    pre_shaped = (np.logical_and.reduce(list(pre_shape.values())) & analysed & pre_class & ~step_ok
                  & m.from_start)
    # The similar-premises signs (Irkutsk's official procedure, 2025: at least twice
    # what similar premises draw, stable, no seasonal drop), on a flat floor: a line
    # of evidence of its own, so that what a utility's spreadsheet finds is found.
    mean_level = m.evidence["mean_level_kw"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        peer_multiple = mean_level / cal["peer_mean_kw"].to_numpy()
        peer_signs = ((peer_multiple >= PEER_MULTIPLE) & (floor_level >= PEER_FLAT_SHARE * mean_level)
                      & (excess_pre >= PEER_MIN_EXCESS_SHARE * mean_level))
    peer_ok = peer_signs & pre_shaped
    pre_ok = (pre_sig & pre_shaped) | peer_ok

    flagged = (step_ok | pre_ok) & analysed
    kind = np.where(flagged, col.KIND_VISIBLE, "")
    onset_date = np.where(step_ok, onset, -1)

    base_mean_resid = mean - base_mean
    energy_day = (day_idx[:, None] >= onset[None, :]) & (onset[None, :] >= 0)  # incl. install day
    post_hours = np.where(energy_day, hours[:, None], 0.0)
    # A day without data inside the run (a gap) is valued at the mean shift; a
    # day masked as a zero run or a frozen register is not: nothing was drawn.
    masked_day = by_day_any(run, grid)
    fill = np.where(masked_day, 0.0, shift_mean[None, :])
    daily_excess_kwh = np.where(np.isnan(base_mean_resid), fill, base_mean_resid) * post_hours
    excess_kwh_step = np.nansum(daily_excess_kwh, axis=0)
    # A load running before the window is counted from the meter's first day with
    # data (to its last day, for one that stopped).
    has_data = ~np.isnan(mean)
    first_day = np.where(has_data.any(axis=0), np.argmax(has_data, axis=0), n_days)
    window_hours = np.where((day_idx[:, None] >= first_day[None, :]) & ran, hours[:, None],
                            0.0).sum(axis=0)
    excess_kw = np.where(step_ok, excess_kw_step, np.where(pre_ok, excess_pre, 0.0))
    excess_kwh = np.where(step_ok, excess_kwh_step, np.where(pre_ok, excess_pre * window_hours, 0.0))
    excess_kw = np.maximum(np.nan_to_num(excess_kw), 0.0)
    excess_kwh = np.maximum(np.nan_to_num(excess_kwh), 0.0)
    tariff = pd.to_numeric(meters[col.TARIFF_PER_KWH], errors="coerce").to_numpy(dtype=np.float64)
    est_loss = excess_kwh * tariff

    strength = np.clip(-np.log10(np.maximum(np.nan_to_num(q_value, nan=1.0), 1e-300))
                       / (2 * -np.log10(detection.fdr_alpha)), 0, 1)
    shape_step = _geo_mean([
        np.clip(1 - np.nan_to_num(unsteadiness, nan=1.0), 0, 1),
        np.clip(np.nan_to_num(flat, nan=1.0), 0, 1),
        np.nan_to_num(persistence),
        _not_heating_factor(heat_t, warm_share),
    ])
    shape_pre = _geo_mean([
        np.clip(1 - np.nan_to_num(floor_cv, nan=1.0), 0, 1),
        _not_heating_factor(pre_heat_t, pre_warm_share),
        np.clip(np.nan_to_num(excess_pre) / max(detection.min_excess_kw, 1e-3), 0, 1),
    ])
    use_pre = pre_ok | (~step_ok & (np.nan_to_num(p_pre, nan=1) < np.nan_to_num(p_step, nan=1)))
    size = np.where(use_pre, excess_pre, shift_floor) / max(detection.min_excess_kw, 1e-3)
    raw = strength * np.where(use_pre, shape_pre, shape_step) * np.clip(np.nan_to_num(size), 0, 1)
    # Little evidence yet: an onset seen on one or two full days is provisional.
    provisional = step_ok & (n_post_valid < PROVISIONAL_DAYS)
    raw = np.where(provisional, raw * (n_post_valid + 1) / (PROVISIONAL_DAYS + 1), raw)
    # The score says the decision: flagged meters score 0.5..1, the others 0..0.5.
    score = np.where(flagged, 0.5 + 0.5 * raw, np.minimum(0.5 * raw, 0.499))
    score = np.where(analysed, score, np.nan)
    # A load that was there but has not been seen on the last days.
    last_days = (day_idx[:, None] >= n_days - ENDED_DAYS) & post_day
    with np.errstate(invalid="ignore"):
        low = (resid_floor < 0.3 * shift_floor[None, :]) & last_days
    ended = step_ok & (low.sum(axis=0) >= ENDED_DAYS) & (n_post_valid > ENDED_DAYS)
    last_present = np.where(present.any(axis=0), n_days - 1 - np.argmax(present[::-1], axis=0), -1)
    ended_day = np.where(ended & (last_present >= 0), last_present + 1, -1)
    # ... or a long-running one that stopped (removed, or run in the cold months only).
    ended_day = np.where(pre_ok & (m.run_end < n_days), m.run_end, ended_day)

    dates = grid.dates
    reasons = _reasons(
        flagged=flagged, step_ok=step_ok, pre_ok=pre_ok, analysed=analysed, dates=dates,
        onset=onset, shift_floor=shift_floor, excess_kw=excess_kw,
        persistence=persistence, n_post=n_post_valid, floor_ratio=floor_ratio, flat=flat,
        has_weather=m.has_weather, typical_floor=typical_floor, step_shape=step_shape,
        step_sig=step_sig, frozen=m.frozen,
        detection=detection, class_names=meters[col.CUSTOMER_CLASS].astype("string").fillna("other"),
        provisional=provisional, ended_day=ended_day, days_above=days_above, days_valid=days_valid,
        pre_sig=pre_sig, pre_shape=pre_shape, pre_class=pre_class, excess_pre=excess_pre,
        level_kw=level_kw, peer_ok=peer_ok & ~(pre_sig & pre_shaped), peer_multiple=peer_multiple,
        from_start=m.from_start, warm_share=np.where(step_ok, warm_share, pre_warm_share),
        heat_t=np.where(step_ok, heat_t, pre_heat_t),
    )

    table = pd.DataFrame(
        {
            col.METER_ID: ids,
            col.TRANSFORMER_ID: meters[col.TRANSFORMER_ID].astype("string").fillna("").to_numpy(),
            col.SCORE: score,
            col.FLAGGED: flagged,
            col.KIND: kind,
            col.ONSET: [dates[i].date().isoformat() if i >= 0 else "" for i in onset_date],
            col.EXCESS_KW: excess_kw,
            col.EXCESS_KWH: excess_kwh,
            col.EST_LOSS: est_loss,
            col.REASONS: reasons,
            "analysed": analysed,
            "p_value": p_value,
            "q_value": q_value,
            "candidate_onset": [dates[i].date().isoformat() if i >= 0 else "" for i in onset],
            "shift_floor_kw": shift_floor,
            "shift_mean_kw": shift_mean,
            "floor_ratio": floor_ratio,
            "flat_fraction": flat,
            "noise_ratio": noise_ratio,
            "unsteadiness": unsteadiness,
            "uptime": m.uptime,
            "on_state_noise": m.on_noise,
            "within_hour_noise": m.within_noise,
            "persistence": persistence,
            "warm_share": np.where(step_ok | ~pre_ok, warm_share, pre_warm_share),
            "heating_t": np.where(step_ok | ~pre_ok, heat_t, pre_heat_t),
            "floor_level_kw": floor_level,
            "excess_preexisting_kw": excess_pre,
            "valid_days": valid_days,
            "not_seen_since": [dates[i].date().isoformat() if i >= 0 and f else ""
                               for i, f in zip(ended_day, flagged, strict=True)],
        }
    ).set_index(col.METER_ID, drop=False)
    detection_result = Detection(
        table=table,
        floor_kw=floor,
        mean_kw=mean,
        expected_floor_kw=base_floor,
        expected_mean_kw=base_mean,
        masked=run,
        onset_cell=np.where(step_ok, np.where(cell >= 0, cell, grid.slots[np.maximum(onset, 0), 0]), -1),
    )
    return detection_result, issues


@dataclass
class Calibration:
    """Significance of every meter's evidence, calibrated on the whole population.

    Attributes
    ----------
    table : pandas.DataFrame
        Per meter (index ``meter_id``): ``typical_floor_kw`` (what meters of
        its class with its variable demand, the mean above the floor, draw at
        their floor; behind PV, where the variable demand is not seen, from
        its evening and night demand) [kW], ``high_floor_kw`` (what a quarter
        of them draw at their floor or more) [kW], ``peer_mean_kw`` (the median
        mean demand of similar premises: same class and region, or class
        when fewer than 10) [kW], ``p_step`` (new load), ``p_pre``
        (long-running load), ``p_value`` (both, Bonferroni) and ``q_value``
        (Benjamini-Hochberg across all meters).
    cutoff : float
        BH's threshold at the size of the rejection set: a meter is
        significant for one test (onset, or long-running) when that test's own
        p-value (x2) passes it; -1 when nothing is rejected.
    """

    table: pd.DataFrame
    cutoff: float

    @classmethod
    def fit(cls, evidence: pd.DataFrame, detection) -> Calibration:
        """Calibrate on the evidence of every meter of the run.

        Parameters
        ----------
        evidence : pandas.DataFrame
            :func:`detection_evidence` of all partitions, concatenated (any order).
        detection : gridwatch.config.DetectionConfig

        Returns
        -------
        Calibration
        """
        analysed = evidence["analysed"].to_numpy(dtype=bool)
        classes = pd.factorize(evidence[col.CUSTOMER_CLASS])[0]
        # A meter behind PV has no visible variable part: what meters of its class
        # with its evening and night demand have stands in (its class's median
        # without that figure).
        variable_kw = np.where(analysed, evidence["variable_kw"].to_numpy(dtype=np.float64), np.nan)
        dark_mean = evidence["dark_mean_kw"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_dark = np.log(np.where(dark_mean > 0, dark_mean, np.nan))
            predicted, _, _ = _robust_line(log_dark, np.log(variable_kw), classes)
        variable_kw = np.where(np.isnan(variable_kw), np.exp(predicted), variable_kw)
        variable_kw = np.where(np.isnan(variable_kw), _group_median(variable_kw, classes), variable_kw)
        floor_level = evidence["floor_level_kw"].to_numpy(dtype=np.float64)
        log_floor = np.where(analysed, np.log(np.maximum(floor_level, 1e-3)), np.nan)
        rel_shift = np.where(analysed, evidence["rel_shift"].to_numpy(dtype=np.float64), np.nan)
        shift_floor, se, level_kw = (evidence[name].to_numpy(dtype=np.float64)
                                     for name in ("shift_floor_kw", "shift_se_kw", "level_kw"))
        # a long-running load: floor high for a meter of its variable part, by class
        # (bigger households have both bigger floors and bigger variable parts; a load
        # running all the time raises the floor alone)
        typical_log_floor, z_pre, floor_scale = _robust_line(np.log(variable_kw), log_floor, classes)
        # ... and the similar premises' (class and region) typical consumption
        premises = pd.factorize(evidence[col.CUSTOMER_CLASS].astype(str) + "|"
                                + evidence[col.REGION].astype(str))[0]
        mean_level = np.where(analysed, evidence["mean_level_kw"].to_numpy(dtype=np.float64), np.nan)
        peer_mean = _group_median(mean_level, premises)
        class_mean = _group_median(mean_level, classes)
        small = np.bincount(premises, weights=np.isfinite(mean_level))[premises] < 10
        peer_mean = np.where(small, class_mean, peer_mean)
        # a new load: the step against the spread of the class's natural level changes
        tau = np.exp(_group_median(np.log(np.maximum(rel_shift, 1e-4)), classes))
        z_step = shift_floor / np.sqrt(se**2 + (tau * level_kw) ** 2)
        p_step = _empirical_null_sf(np.where(analysed, z_step, np.nan))
        p_pre = np.where(analysed, stats.norm.sf(z_pre), np.nan)
        p_value = np.minimum(1.0, 2.0 * np.fmin(p_step, p_pre))
        q_value = np.full(len(evidence), np.nan)
        ok = ~np.isnan(p_value)
        if ok.any():
            q_value[ok] = multipletests(p_value[ok], alpha=detection.fdr_alpha, method="fdr_bh")[1]
        rejected = q_value <= detection.fdr_alpha
        cutoff = detection.fdr_alpha * rejected.sum() / max(ok.sum(), 1) if rejected.any() else -1.0
        table = pd.DataFrame({"typical_floor_kw": np.exp(typical_log_floor),
                              "high_floor_kw": np.exp(typical_log_floor + HIGH_FLOOR_Z * floor_scale),
                              "peer_mean_kw": peer_mean, "p_step": p_step, "p_pre": p_pre, "p_value": p_value,
                              "q_value": q_value}, index=evidence.index)
        return cls(table=table, cutoff=float(cutoff))


def _robust_cv(values, level):
    """1.4826 MAD over days of each column, relative to ``level`` [-]."""
    with _quiet_nan():
        spread = nanmedian_columns(np.abs(values - nanmedian_columns(values)))
    return 1.4826 * spread / np.maximum(level, 1e-6)


def _heating(slope_t, warm_share):
    """A load that rises with the cold and fades when it is warm (NaN: no evidence)."""
    with np.errstate(invalid="ignore"):
        return (slope_t > HEATING_MIN_T) & (warm_share < HEATING_MAX_WARM_SHARE)


def _not_heating_factor(slope_t, warm_share):
    """1 for a load that ignores the weather, falling to 0 for pure heating."""
    follows = np.clip((np.nan_to_num(slope_t) - 1.0) / (HEATING_MIN_T - 1.0), 0, 1)
    return 1 - follows * (1 - np.nan_to_num(warm_share, nan=1.0))


def _geo_mean(factors):
    stacked = np.stack([np.clip(f, 1e-6, 1) for f in factors])
    return np.exp(np.log(stacked).mean(axis=0))


def _nanmedian_where(values, mask):
    return nanmedian_columns(np.where(mask, values, np.nan))


def _group_median(values, groups, min_group=10):
    out = np.full(values.shape, np.nan)
    with _quiet_nan():
        out[:] = np.nanmedian(values)
        for g in np.unique(groups):
            sel = groups == g
            if np.sum(sel & ~np.isnan(values)) >= min_group:
                out[sel] = np.nanmedian(values[sel])
    return out


def _robust_line(x, y, groups, *, min_group=30, iterations=8):
    """A robust straight line of ``y`` on ``x`` per group: the fitted values and z-scores.

    Fitted with Huber weights (iteratively reweighted least squares) on the
    points where both are finite, so that the few loads being looked for do
    not bend the line; groups with fewer than ``min_group`` points use the
    fit of all points. The sums are taken in one order whatever the order of
    the points, so a run cut into partitions fits the same line.

    Returns
    -------
    fitted : numpy.ndarray
        ``a + b * x`` of each point's group (NaN where ``x`` is not finite).
    z : numpy.ndarray
        ``(y - fitted)`` over the group's robust scale [-].
    scale : numpy.ndarray
        The robust scale (1.4826 MAD of the residuals) of each point's group.
    """
    fitted = np.full(x.shape, np.nan)
    z = np.full(x.shape, np.nan)
    scales = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)

    def fit(sel):
        xs, ys = x[sel], y[sel]
        order = np.lexsort((ys, xs))
        xs, ys = xs[order], ys[order]
        w = np.ones(len(xs))
        a, b, scale = np.median(ys), 0.0, 1.0
        for _ in range(iterations):  # a handful of weighted 2-parameter fits
            sw = w.sum()
            mx, my = (w * xs).sum() / sw, (w * ys).sum() / sw
            sxx = (w * (xs - mx) ** 2).sum()
            b = (w * (xs - mx) * (ys - my)).sum() / sxx if sxx > 1e-12 else 0.0
            a = my - b * mx
            r = ys - a - b * xs
            scale = max(1.4826 * np.median(np.abs(r - np.median(r))), 1e-6)
            w = np.minimum(1.0, 1.5 * scale / np.maximum(np.abs(r), 1e-12))
        return a, b, scale

    if ok.sum() < 3:
        return fitted, z, scales
    fits = {None: fit(ok)}
    for g in np.unique(groups):  # a few customer classes
        sel = ok & (groups == g)
        fits[g] = fit(sel) if sel.sum() >= min_group else fits[None]
    for g in np.unique(groups):
        a, b, scale = fits[g]
        sel = groups == g
        fitted[sel] = a + b * x[sel]
        z[sel] = (y[sel] - fitted[sel]) / scale
        scales[sel] = scale
    return fitted, z, scales


def _empirical_null_sf(z):
    """Upper-tail p-values of ``z`` under a normal null fitted robustly to the bulk."""
    out = np.full(z.shape, np.nan)
    ok = np.isfinite(z)
    if ok.sum() < 3:
        out[ok] = stats.norm.sf(z[ok])
        return out
    med = np.median(z[ok])
    mad = 1.4826 * np.median(np.abs(z[ok] - med))
    out[ok] = stats.norm.sf((z[ok] - med) / max(mad, 1e-9))
    return out


def _fmt_kw(x):
    """kW for people: two decimals below 10 kW (1.35 kW stays 1.35), one above."""
    return f"{x:.2f} kW" if abs(x) < 10 else f"{x:.1f} kW"


_HEATING_REASON = "it rises with the cold and fades when it is warm (heating)"


def _weather_reason(slope_t, warm_share):
    """What the weather says of a flagged load."""
    if slope_t > HEATING_MIN_T:
        return (f"draws more when it is cold but keeps {min(warm_share, 1):.0%} of it when no "
                "heating is needed (a rig that also heats the house?)")
    return "not explained by temperature"


def _reasons(*, flagged, step_ok, pre_ok, analysed, dates, onset, shift_floor, excess_kw,
             persistence, n_post, floor_ratio, flat, has_weather, typical_floor, step_shape,
             step_sig, frozen, detection, class_names, provisional, ended_day, days_above,
             days_valid, pre_sig, pre_shape, pre_class, excess_pre, level_kw, warm_share, heat_t,
             peer_ok, peer_multiple, from_start):
    """Short human reasons per meter (a loop over meters, but only to format text)."""
    out = []
    for m in range(len(flagged)):
        parts = []
        if not analysed[m]:
            out.append("not scored: too little usable data in the window (see data_quality.csv)")
            continue
        if frozen[m]:
            parts.append("readings frozen at one value for a day or more (data quality, not load)")
        if step_ok[m]:
            day = dates[onset[m]].date().isoformat()
            parts.append(f"new steady load of {_fmt_kw(excess_kw[m])} since {day}")
            days = int(round(persistence[m] * n_post[m]))
            if provisional[m]:
                full = "1 full day" if n_post[m] == 1 else f"{int(n_post[m])} full days"
                parts.append(f"provisional: seen on {full} so far; confirm on the next runs")
            else:
                parts.append(f"present on {days} of the {int(n_post[m])} full days with data since")
            if ended_day[m] >= 0:
                parts.append(f"not seen since {dates[ended_day[m]].date().isoformat()} "
                             "(removed, switched off, or an outage): check before sending a crew")
            if not np.isnan(flat[m]):
                parts.append(f"same size at every hour of the day ({min(flat[m], 1):.0%} flat)")
            else:
                parts.append("night-time floor rose as much as the daily mean")
            if has_weather:
                parts.append(_weather_reason(heat_t[m], warm_share[m]))
        elif pre_ok[m]:
            parts.append(
                f"already running when the data start: about {_fmt_kw(excess_kw[m])} more than "
                f"{class_names.iloc[m]} meters of its size draw at their quietest "
                f"({_fmt_kw(max(typical_floor[m], 0.0))})"
            )
            parts.append(f"ran through most of the day on {int(days_above[m])} of "
                         f"{int(days_valid[m])} days (the median hour above "
                         f"{_fmt_kw(typical_floor[m] + CONSTANT_FLOOR_SHARE * excess_kw[m])})")
            if ended_day[m] >= 0:
                parts.append(f"not seen since {dates[ended_day[m]].date().isoformat()} (removed, "
                             "switched off, or run in the cold months only): check before "
                             "sending a crew")
            if peer_ok[m]:
                parts.append(f"similar-premises signs: {peer_multiple[m]:.1f}x the consumption of "
                             f"similar {class_names.iloc[m]} premises, flat, stable from day to day, "
                             "no drop when it is warm")
            if has_weather:
                parts.append(_weather_reason(heat_t[m], warm_share[m]))
        elif pre_sig[m] and from_start[m] and excess_pre[m] >= detection.min_excess_kw:
            why = []
            if not pre_class[m]:
                why.append(f"a 24/7 base load is ordinary for {class_names.iloc[m]} customers")
            if not pre_shape["big"][m]:
                why.append(f"a household whose own floor is high for its size could draw it "
                           f"(it would leave less than the {detection.min_excess_kw:g} kW minimum)")
            if not pre_shape["steady"][m]:
                why.append("its floor changes from day to day")
            if not pre_shape["constant"][m]:
                why.append(f"it ran through most of the day on only {int(days_above[m])} of "
                           f"{int(days_valid[m])} days")
            if not pre_shape["not_heating"][m]:
                why.append(_HEATING_REASON)
            parts.append(f"not flagged: a floor {_fmt_kw(excess_pre[m])} above {class_names.iloc[m]} "
                         "meters of its size all window, but " + ", ".join(why))
        elif onset[m] >= 0 and shift_floor[m] >= 0.5 * detection.min_excess_kw:
            day = dates[onset[m]].date().isoformat()
            why = []
            if shift_floor[m] < detection.min_excess_kw:
                why.append(f"below the {detection.min_excess_kw:g} kW minimum")
            elif not step_shape["big"][m]:
                why.append(f"below {detection.min_relative_excess:.0%} of the meter's usual "
                           f"{_fmt_kw(level_kw[m])}")
            if not step_shape["steady"][m]:
                why.append("the mean rose more than the floor (not round the clock)"
                           if floor_ratio[m] < 0.75 else "it switches on and off (cycling load)")
            if not step_shape["flat_hour"][m]:
                why.append("the rise follows the household's daily shape")
            if not step_shape["persistent"][m]:
                why.append(f"present on only {persistence[m]:.0%} of days")
            if not step_shape["not_heating"][m]:
                why.append(_HEATING_REASON)
            if not step_sig[m]:
                why.append("within the meter's normal variation")
            parts.append(f"not flagged: the floor rose {_fmt_kw(shift_floor[m])} on {day} but "
                         + ", ".join(why))
        out.append("; ".join(parts))
    return out
