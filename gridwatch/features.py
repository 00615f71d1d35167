"""Pure, vectorised features of many meters' demand.

Each function takes whole arrays, ``(n_cells, n_meters)`` or
``(n_days, n_meters)``, and returns one value (or mask) per meter or cell.
"""

from __future__ import annotations

import warnings

import numpy as np

from gridwatch.days import SlotOrder


def nanmedian_columns(values) -> np.ndarray:
    """Median of each column ignoring NaN (NaN when a column has none), without a loop per column.

    ``numpy.nanmedian(..., axis=0)`` falls back to one Python call per column
    when NaNs are present; this sorts once instead. An even count takes the
    mean of the two middle values, as numpy does.

    Parameters
    ----------
    values : array-like of shape (n_rows, n_columns) or (n_rows,)

    Returns
    -------
    numpy.ndarray of shape (n_columns,) (a float for 1-D input)

    Examples
    --------
    >>> nanmedian_columns(np.array([[1.0, np.nan], [2.0, 5.0], [4.0, np.nan]])).tolist()
    [2.0, 5.0]
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return nanmedian_columns(values[:, None])[0]
    ordered = np.sort(values, axis=0)  # NaN sorts last
    n = np.sum(~np.isnan(values), axis=0)
    lo = np.clip((n - 1) // 2, 0, None)
    hi = np.clip(n // 2, 0, None)
    cols = np.arange(values.shape[1])
    with np.errstate(invalid="ignore"):
        med = 0.5 * (ordered[lo, cols] + ordered[hi, cols])
    return np.where(n > 0, med, np.nan)


def nanquantile_columns(values, q) -> np.ndarray:
    """Quantile ``q`` of each column ignoring NaN, linear between order statistics.

    The sorting counterpart of ``numpy.nanquantile(values, q, axis=0)`` (see
    :func:`nanmedian_columns`); ``q`` may be a sequence, giving one row per
    quantile.

    Examples
    --------
    >>> nanquantile_columns(np.array([[0.0], [1.0], [2.0], [np.nan]]), 0.25).tolist()
    [0.5]
    """
    values = np.asarray(values, dtype=np.float64)
    ordered = np.sort(values, axis=0)
    n = np.sum(~np.isnan(values), axis=0)
    cols = np.arange(values.shape[1])
    out = []
    for quantile in np.atleast_1d(q):  # a few quantiles
        pos = quantile * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        with np.errstate(invalid="ignore"):
            a, b = ordered[lo, cols], ordered[hi, cols]
            out.append(np.where(n > 0, a + (b - a) * (pos - lo), np.nan))
    return np.stack(out) if np.ndim(q) else out[0]


def _run_lengths(flags: np.ndarray) -> np.ndarray:
    """Length of the run of consecutive True values ending at each position, along axis 0."""
    flags = flags.astype(bool)
    cum = np.cumsum(flags, axis=0, dtype=np.int32)
    reset = np.where(flags, 0, cum)
    np.maximum.accumulate(reset, axis=0, out=reset)
    cum -= reset
    return cum


def repeated_value_runs(kw: np.ndarray, *, min_cells: int, atol: float = 1e-9) -> np.ndarray:
    """Cells that belong to a run of at least ``min_cells`` identical readings.

    A real load is never exactly constant for a day; a stuck register or a
    head-end that repeats its last value is.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW]; NaN breaks a run.
    min_cells : int
        Shortest run reported.
    atol : float, default 1e-9
        Readings closer than this are identical [kW].

    Returns
    -------
    numpy.ndarray of bool, shape (n_cells, n_meters)
    """
    same = np.zeros(kw.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        same[1:] = np.abs(np.diff(kw, axis=0)) <= atol  # NaN compares False
    out = np.zeros(kw.shape, dtype=bool)
    # Cheap pre-filter: only columns with min_cells - 1 equal pairs in a row
    # somewhere (a window sum of the pairs reaching its length) have a run.
    need = min_cells - 1
    if need <= 0:
        return ~np.isnan(kw)
    if len(kw) <= need:
        return out
    cum = np.cumsum(same, axis=0, dtype=np.int32)
    window = cum[need:] - cum[:-need]
    cols = np.flatnonzero((window >= need).any(axis=0))
    if len(cols) == 0:
        return out
    sub = same[:, cols]
    forward = _run_lengths(sub)  # equal pairs ending at t
    backward = _run_lengths(np.concatenate([sub[1:], np.zeros((1, len(cols)), bool)])[::-1])[::-1]
    out[:, cols] = (forward + backward + 1) >= min_cells
    return out


def degree_days(temperature_c: np.ndarray, *, heating_base_c=15.5, cooling_base_c=22.0):
    """Heating and cooling degree-days from daily mean temperature.

    Parameters
    ----------
    temperature_c : numpy.ndarray
        Daily mean outdoor temperature [degrees C].
    heating_base_c, cooling_base_c : float
        Balance points [degrees C].

    Returns
    -------
    hdd, cdd : numpy.ndarray
        [K day], same shape as ``temperature_c``.
    """
    return np.maximum(heating_base_c - temperature_c, 0.0), np.maximum(temperature_c - cooling_base_c, 0.0)


class HourOfDaySums:
    """Sums of one demand matrix by local hour of day, before and after per-meter onsets.

    Sorts the cells by hour once (:class:`gridwatch.days.SlotOrder`), so that
    several splits of the same matrix (:meth:`increment`) cost one pass each;
    a meter's sums do not depend on the other meters in the matrix.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW], NaN where missing.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
        Local hour 0..23.
    """

    def __init__(self, kw: np.ndarray, hour_of_cell: np.ndarray):
        self.hours = SlotOrder(hour_of_cell, 24)
        kw = self.hours.sort(kw)
        self.valid = ~np.isnan(kw)
        self.filled = np.where(self.valid, kw, 0.0)
        del kw
        self.s_all = self.hours.sums(self.filled)
        self.n_all = self.hours.sums(self.valid)

    def increment(self, post: np.ndarray):
        """Mean demand by hour of day before and after an onset, per meter.

        Parameters
        ----------
        post : numpy.ndarray of bool, shape (n_cells, n_meters)
            Cells at or after each meter's onset.

        Returns
        -------
        before_kw, after_kw : numpy.ndarray of shape (24, n_meters)
            Mean demand per hour of day [kW]; NaN where no data.
        """
        sel = self.valid & self.hours.sort(post)
        s_post = self.hours.sums(np.where(sel, self.filled, 0.0))
        n_post = self.hours.sums(sel)
        out = []
        for total, n in ((self.s_all - s_post, self.n_all - n_post), (s_post, n_post)):
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(n > 0.5, total / n, np.nan))
        return out[0], out[1]


def hourly_increment(kw: np.ndarray, hour_of_cell: np.ndarray, post: np.ndarray):
    """Mean demand by hour of day before and after an onset, per meter.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW], NaN where missing.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
        Local hour 0..23.
    post : numpy.ndarray of bool, shape (n_cells, n_meters)
        Cells at or after each meter's onset.

    Returns
    -------
    before_kw, after_kw : numpy.ndarray of shape (24, n_meters)
        See :meth:`HourOfDaySums.increment`, which does several splits of one
        matrix faster.
    """
    return HourOfDaySums(kw, hour_of_cell).increment(post)


def hourly_spread(kw: np.ndarray, hour_of_cell: np.ndarray, sel: np.ndarray, profile_kw: np.ndarray,
                  day_level_kw: np.ndarray | None = None):
    """Standard deviation of demand around its hour-of-day profile, per meter.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW], NaN where missing.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
    sel : numpy.ndarray of bool, shape (n_cells, n_meters)
        Cells to use.
    profile_kw : numpy.ndarray of shape (24, n_meters)
        Mean demand per hour of day over the same cells [kW].
    day_level_kw : numpy.ndarray of shape (n_cells, n_meters), optional
        Each cell's own day's mean demand [kW]. When given, day-to-day level
        changes (a second rig added, a day-long outage, a cold day) are
        removed first, so that only variability within the day remains.

    Returns
    -------
    numpy.ndarray of shape (n_meters,)
        [kW]; NaN with fewer than 24 cells.
    """
    dev = kw.astype(np.float32) - profile_kw.astype(np.float32)[hour_of_cell]
    if day_level_kw is not None:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dev -= day_level_kw.astype(np.float32) - np.nanmean(profile_kw, axis=0).astype(np.float32)
    ok = sel & ~np.isnan(dev)
    n = ok.sum(axis=0)
    dev[~ok] = 0.0
    np.square(dev, out=dev)
    sq = dev.sum(axis=0, dtype=np.float64)  # row by row per meter: independent of the other meters
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 24, np.sqrt(sq / n), np.nan)


def flat_increment_kw(before_kw: np.ndarray, after_kw: np.ndarray) -> np.ndarray:
    """The part of an increase that is the same in every hour of the day.

    Regresses the hour-of-day increment ``after - before`` on the
    hour-of-day profile ``before``: ``inc_h = a + b * before_h`` and returns
    ``a`` [kW]. A load added round the clock is all ``a`` (``b`` is near 0,
    or negative when it is curtailed at peak hours); a household that grows
    with its own daily shape is all ``b`` and has ``a`` near 0; a rig on a
    business whose profile also changed with the season keeps its ``a``.

    Parameters
    ----------
    before_kw, after_kw : numpy.ndarray of shape (24, n_meters)
        Mean demand per hour of day before and after an onset [kW].

    Returns
    -------
    numpy.ndarray of shape (n_meters,)
        [kW]; NaN with fewer than 12 hours of both or no increase.
    """
    inc = after_kw - before_kw
    ok = ~np.isnan(inc) & ~np.isnan(before_kw)
    n = ok.sum(axis=0)
    x = np.where(ok, before_kw, 0.0)
    y = np.where(ok, inc, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = x.sum(axis=0) / n
        my = y.sum(axis=0) / n
        sxx = np.where(ok, (x - mx) ** 2, 0.0).sum(axis=0)
        sxy = np.where(ok, (x - mx) * (y - my), 0.0).sum(axis=0)
        # Keep the shape term only when the data support it: a profile that
        # barely varies (relative spread below 10 %) carries no information on
        # b, and a slope within two standard errors of 0 is noise (busy
        # commercial profiles otherwise lend a flat rig a spurious shape).
        spread = np.sqrt(sxx / n) / np.maximum(np.abs(mx), 1e-9)
        b = sxy / sxx
        resid = np.where(ok, y - my - b * (x - mx), 0.0)
        se_b = np.sqrt((resid**2).sum(axis=0) / np.maximum(n - 2, 1) / sxx)
        b = np.where((spread > 0.1) & (np.abs(b) > 2 * se_b), b, 0.0)
        a = my - b * mx
    return np.where((n >= 12) & (my > 0), a, np.nan)


def onset_cell(kw: np.ndarray, slots: np.ndarray, hour_of_cell: np.ndarray, onset_day: np.ndarray,
               profile_kw: np.ndarray, margin_kw: np.ndarray, *, days_before: int = 2,
               days_after: int = 1) -> np.ndarray:
    """The grid cell at which a load switched on, refined around a day-level onset.

    Within the days ``onset_day - days_before .. onset_day + days_after`` each
    cell is marked "on" when demand exceeds the meter's usual demand at that
    hour of day (``profile_kw``) by ``margin_kw``. The switch-on cell
    maximises the CUSUM ``sum(on[s] - 1/2 for s >= t)``: after it the load is
    on most of the time, before it only chance excursions cross the line.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW], NaN where missing.
    slots : numpy.ndarray of int, shape (n_days, width)
        Cells of each day, padded with -1 (:attr:`gridwatch.days.DayGrid.slots`).
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
    onset_day : numpy.ndarray of int, shape (n_meters,)
        Day-level onset per meter; -1 for none.
    profile_kw : numpy.ndarray of shape (24, n_meters)
        Usual mean demand per hour of day before the onset [kW].
    margin_kw : numpy.ndarray of shape (n_meters,)
        Excess over the profile that counts as "load on" [kW] (half the load).

    Returns
    -------
    numpy.ndarray of int, shape (n_meters,)
        Cell position of the switch-on; -1 where ``onset_day`` is -1.
    """
    n_days, width = slots.shape
    n_meters = kw.shape[1]
    out = np.full(n_meters, -1, dtype=np.int64)
    has = onset_day >= 0
    if not has.any():
        return out
    offsets = np.arange(-days_before, days_after + 1)
    days = np.clip(onset_day[None, :] + offsets[:, None], 0, n_days - 1)  # (k, M)
    cells = slots[days]  # (k, M, width)
    cells = cells.transpose(0, 2, 1).reshape(-1, n_meters)  # (k*width, M) in time order
    # Clipping can repeat a day at the edges; repeated cells are neutralised below.
    dup = np.zeros_like(cells, dtype=bool)
    dup[1:] = cells[1:] <= np.maximum.accumulate(cells, axis=0)[:-1]
    valid = (cells >= 0) & ~dup
    safe = np.where(valid, cells, 0)
    cols = np.broadcast_to(np.arange(n_meters), cells.shape)
    values = np.where(valid, kw[safe, cols], np.nan)
    thresh = profile_kw[hour_of_cell[safe], cols] + margin_kw[None, :]
    with np.errstate(invalid="ignore"):
        step = np.where(np.isnan(values) | np.isnan(thresh), 0.0,
                        np.where(values >= thresh, 0.5, -0.5))
    cusum = np.cumsum(step[::-1], axis=0)[::-1]  # sum over s >= t
    cusum = np.where(valid, cusum, -np.inf)
    best = np.argmax(cusum, axis=0)
    out[has] = cells[best, np.arange(n_meters)][has]
    return out


class TemperatureResponse:
    """How a daily series follows heating degree-days: ``y[d] = a + b * hdd[d]`` per meter.

    Heating (heat pumps, resistive heaters) is a load proportional to the
    degree-days, which falls to nothing when it is warm: its ``a`` is near
    0. A rig draws the same whatever the weather (``b`` near 0), and a rig
    that heats the house (a "crypto heater") is throttled when it is warm but
    keeps a large ``a``. :meth:`warm_share` compares the two ends.

    Parameters
    ----------
    y : numpy.ndarray of shape (n_days, n_meters)
        Daily series [kW] (e.g. a load's daily floor above its baseline), NaN where missing.
    hdd : numpy.ndarray of shape (n_days, n_meters)
        Heating degree-days of each meter's region [K day].
    mask : numpy.ndarray of bool, shape (n_days, n_meters)
        Days to fit on (e.g. the days after an onset).

    Attributes
    ----------
    intercept_kw, slope_kw_per_k, slope_t : numpy.ndarray of shape (n_meters,)
        ``a`` [kW], ``b`` [kW/K] and ``b`` over its standard error; NaN with
        fewer than 5 days or no spread of degree-days.
    cold_hdd : numpy.ndarray of shape (n_meters,)
        90th percentile of the degree-days over ``mask`` [K day].
    residual_kw : numpy.ndarray of shape (n_days, n_meters)
        ``y - a - b * hdd`` [kW].
    """

    def __init__(self, y: np.ndarray, hdd: np.ndarray, mask: np.ndarray):
        ok = mask & ~np.isnan(y) & ~np.isnan(hdd)
        n = ok.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mx = np.where(ok, hdd, 0).sum(axis=0) / n
            my = np.where(ok, y, 0).sum(axis=0) / n
            dx = np.where(ok, hdd - mx, 0.0)
            dy = np.where(ok, y - my, 0.0)
            sxx = (dx**2).sum(axis=0)
            b = (dx * dy).sum(axis=0) / sxx
            a = my - b * mx
            resid = np.where(ok, dy - b * dx, 0.0)
            se = np.sqrt((resid**2).sum(axis=0) / np.maximum(n - 2, 1) / sxx)
            usable = (n >= 5) & (sxx > 1e-9)
            self.intercept_kw = np.where(usable, a, np.nan)
            self.slope_kw_per_k = np.where(usable, b, np.nan)
            self.slope_t = np.where(usable & (se > 0), b / se, np.where(usable, np.inf * np.sign(b), np.nan))
        sorted_hdd = np.sort(np.where(ok, hdd, np.nan), axis=0)  # NaN sorts last
        pos = np.clip(np.floor(0.9 * (n - 1)).astype(np.int64), 0, None)
        self.cold_hdd = np.where(n > 0, sorted_hdd[pos, np.arange(y.shape[1])], np.nan)
        self.residual_kw = y - (np.nan_to_num(self.intercept_kw)[None, :]
                                + np.nan_to_num(self.slope_kw_per_k)[None, :] * hdd)

    def warm_share(self, above_kw=0.0) -> np.ndarray:
        """Level with no heating demand over level on cold days, above ``above_kw``.

        Parameters
        ----------
        above_kw : float or numpy.ndarray of shape (n_meters,), default 0
            A baseline subtracted from both levels [kW] (the household's own floor).

        Returns
        -------
        numpy.ndarray of shape (n_meters,)
            ``(a - above) / (a + b * cold_hdd - above)``, clipped to 0..1
            (1 for a load that does not rise with the cold); NaN where not fitted.
        """
        warm = self.intercept_kw - above_kw
        cold = self.intercept_kw + self.slope_kw_per_k * self.cold_hdd - above_kw
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(cold > warm, warm / cold, 1.0)
        return np.where(np.isnan(self.intercept_kw), np.nan, np.clip(share, 0.0, 1.0))


def on_state(kw: np.ndarray, hour_of_cell: np.ndarray, usual_kw: np.ndarray, post: np.ndarray,
             step_kw: np.ndarray):
    """A new load judged while it runs: how often it runs, its level and its steadiness.

    A rig that stops for hours (pool outages, price curtailment, demand
    response) adds its full power in the hours it runs and nothing in the
    others. Its on-state is what identifies it: a steady level, not its
    presence in every hour. A thermostatic load seen hour by hour is never
    steady: its hourly draw is its duty cycle times its power.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Demand [kW], NaN where missing.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,)
    usual_kw : numpy.ndarray of shape (24, n_meters)
        The meter's mean demand by hour of day before the load [kW].
    post : numpy.ndarray of bool, shape (n_cells, n_meters)
        Cells from the load's onset.
    step_kw : numpy.ndarray of shape (n_meters,)
        The load's estimated size [kW]; a cell is "on" above half of it.

    Returns
    -------
    uptime : numpy.ndarray of shape (n_meters,)
        Share of the post cells with the load on [-].
    level_kw : numpy.ndarray of shape (n_meters,)
        Median demand above usual in the on cells [kW].
    noise : numpy.ndarray of shape (n_meters,)
        Interquartile range of the demand above usual in the on cells, less
        that of the cells before the onset (the household's own), over
        ``level_kw`` [-]; NaN with fewer than 24 on cells.
    """
    above = kw - usual_kw[hour_of_cell]
    valid = ~np.isnan(above)
    with np.errstate(invalid="ignore"):
        on = post & valid & (above > 0.5 * step_kw[None, :])
    n_post = (post & valid).sum(axis=0)
    n_on = on.sum(axis=0)
    q_on = nanquantile_columns(np.where(on, above, np.nan), [0.25, 0.5, 0.75])
    q_pre = nanquantile_columns(np.where(~post & valid, above, np.nan), [0.25, 0.75])
    level = q_on[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        uptime = np.where(n_post > 0, n_on / np.maximum(n_post, 1), np.nan)
        noise = ((q_on[2] - q_on[0]) - np.nan_to_num(q_pre[1] - q_pre[0])) / level
    enough = n_on >= 24
    return uptime, level, np.where(enough, noise, np.nan)
