"""Monthly billing reads: the Irkutsk signs of a mining rig (issue 16, item 4).

Irkutsk's official procedure (June 2025) finds illegal miners in the
supplier's monthly consumption analysis by three signs, which this module
computes for every monthly meter at once on a ``months x meters`` array of
mean daily energy [kWh/day]:

1. **at least 2x similar premises**: the ratio of a meter's consumption to
   the median of its peers in the same month (same customer class and
   region, and the same heating type where the meters table says it:
   :func:`peer_groups`);
2. **high especially in summer**: the ratio holds in the warm months, when
   no heating can explain it, and does not drop from the cold months to the
   warm ones (an electrically heated home's excess falls in summer);
3. **stable month to month**: the warm months' consumption varies little
   (a rig runs day and night, every day).

A rise that persists is located with the level-shift scan of
:mod:`gridwatch.levelshift` (on the log of the peer ratio); the signs are
judged on the months from that onset (from the first month when the meter
was already high). Nothing here loops over meters: a loop over the few peer
groups takes each group's monthly median.

What monthly data cannot show is said in every reason: the daily and
hourly shape of the load (flatness within the day, the hour of an onset).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.levelshift import scan_level_shift

HEATING_TYPE = col.HEATING_TYPE
"""Optional ``meters`` column: ``electric`` or another heating type (a contract extra column)."""
MIN_MONTH_COVERAGE = 0.5
"""Share of a month's days the reads must cover for the month to count [-]."""
STEP_MIN_T = 4.0
"""t-statistic of a rise of the monthly peer ratio that dates an onset [-]."""
STEP_MIN_RATIO = 1.5
"""The peer ratio must rise at least this many times to date an onset [-]."""
THROUGHOUT_FACTOR = 1.25
"""A meter high from its first month (no rise seen) needs this many times sign 1's ratio [-].

A rise to 2x similar premises that persists is a change at the premises; a
level of 2x throughout the history is also what a large household or a
busy shop shows (with the simulated spread of similar premises, 4 % of the
commercial ones), so the procedure's 2x is asked 1.25 times over there (2.5x).
"""


@dataclass(frozen=True)
class MonthlyParams:
    """Thresholds of the Irkutsk signs (``[coarse]`` of the config).

    Attributes
    ----------
    min_months : int
        Valid months needed to judge a meter.
    min_peer_ratio : float
        Sign 1 and 2: times the peers' median in the warm months [-].
    max_summer_drop : float
        Sign 2: the warm months' ratio may fall at most this share below the cold months' [-].
    max_cv : float
        Sign 3: coefficient of variation of the warm months' consumption [-].
    min_excess_kw : float
        Mean draw above the peers in the warm months [kW].
    min_peers : int
        Smallest peer group; smaller ones widen to class and region, then class, then all.
    """

    min_months: int = 12
    min_peer_ratio: float = 2.0
    max_summer_drop: float = 0.3
    max_cv: float = 0.25
    min_excess_kw: float = 0.5
    min_peers: int = 10


def monthly_kwh_per_day(coarse: pd.DataFrame, meter_ids, timezone: str, last_month: pd.Period,
                        n_months: int) -> pd.DataFrame:
    """Mean daily energy per calendar month of every monthly meter.

    Parameters
    ----------
    coarse : pandas.DataFrame
        Monthly reads (:func:`gridwatch.resolution.split_coarse`): ``meter_id``,
        ``timestamp`` (UTC START of the period), ``kwh`` [kWh], ``period_hours`` [h].
    meter_ids : sequence of str
        The columns, in order.
    timezone : str
        Local time zone: a read belongs to the month of its period's midpoint.
    last_month : pandas.Period
        Last month of the array (freq ``M``).
    n_months : int

    Returns
    -------
    pandas.DataFrame of shape (n_months, n_meters)
        [kWh/day], indexed by month; NaN where the reads cover less than
        :data:`MIN_MONTH_COVERAGE` of the month.
    """
    months = pd.period_range(end=last_month, periods=n_months, freq="M")
    ok = coarse[col.KWH].notna().to_numpy()
    c = coarse[ok]
    period_h = c["period_hours"].to_numpy(dtype=np.float64)
    mid = (c[col.TIMESTAMP] + pd.to_timedelta(period_h / 2, unit="h")).dt.tz_convert(timezone)
    month = mid.dt.tz_localize(None).dt.to_period("M")
    frame = pd.DataFrame({"month": month.to_numpy(), col.METER_ID: c[col.METER_ID].to_numpy(),
                          col.KWH: c[col.KWH].to_numpy(), "days": period_h / 24.0})
    sums = frame.groupby(["month", col.METER_ID])[[col.KWH, "days"]].sum()
    kwh = sums[col.KWH].unstack(col.METER_ID).reindex(index=months, columns=list(meter_ids))
    days = sums["days"].unstack(col.METER_ID).reindex(index=months, columns=list(meter_ids))
    in_month = months.days_in_month.to_numpy(dtype=np.float64)[:, None]
    per_day = kwh / days
    return per_day.where(days.to_numpy() >= MIN_MONTH_COVERAGE * in_month)


def peer_groups(meters: pd.DataFrame, min_peers: int) -> tuple[np.ndarray, np.ndarray]:
    """The peer group of each meter: similar premises, widened until the group is big enough.

    Levels, the first with at least ``min_peers`` meters: class, region and
    heating type (when the meter's is known); class and region; class; all.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters judged (``customer_class``, ``region``, optional ``heating_type``).
    min_peers : int

    Returns
    -------
    group : numpy.ndarray of int, shape (n_meters,)
    label : numpy.ndarray of str, shape (n_meters,)
        What the peers share, for the reasons (e.g. ``residential, irkutsk, electric heating``).
    """
    n = len(meters)

    def text(name):
        if name not in meters:
            return pd.Series([""] * n, index=meters.index, dtype=object)
        return meters[name].astype("string").fillna("").str.strip().str.lower().astype(object)

    cls, region, heating = text(col.CUSTOMER_CLASS), text(col.REGION), text(HEATING_TYPE)
    cls = cls.where(cls != "", "other")
    heat_label = np.where(heating == "electric", "electric heating",
                          np.where(heating != "", "non-electric heating", ""))
    levels = [
        (cls + "|" + region + "|" + heating).where(heating != "", None),
        cls + "|" + region,
        cls,
        pd.Series("all", index=meters.index, dtype=object),
    ]
    labels = [
        cls + ", " + region + ", " + pd.Series(heat_label, index=meters.index),
        cls + ", " + region,
        cls,
        pd.Series("all premises", index=meters.index, dtype=object),
    ]
    key = pd.Series([None] * n, index=meters.index, dtype=object)
    label = pd.Series([""] * n, index=meters.index, dtype=object)
    for i, (level, name) in enumerate(zip(levels, labels, strict=True)):
        size = level.map(level.value_counts())
        take = key.isna() & level.notna() & (size >= min_peers)
        if i == len(levels) - 1:
            take = key.isna()
        key[take], label[take] = f"L{i}:" + level[take], name[take]
    label = label.str.replace(r", $", "", regex=True).str.replace(r", ,", ",", regex=True)
    return pd.factorize(key)[0], label.to_numpy(dtype=object)


def season_masks(months: pd.PeriodIndex, temperature_c: np.ndarray | None,
                 southern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warm and cold months of each meter.

    Parameters
    ----------
    months : pandas.PeriodIndex
    temperature_c : numpy.ndarray of shape (n_months, n_meters) or None
        Mean temperature of the meter's region per month [degrees C]; NaN unknown.
    southern : numpy.ndarray of bool, shape (n_meters,)
        Southern hemisphere (``lat < 0``): calendar seasons swapped.

    Returns
    -------
    warm, cold : numpy.ndarray of bool, shape (n_months, n_meters)
        The three warmest and three coldest months of the year (by month of
        the year, from the last 12 months' temperatures when at least 10 of
        them are known; else June-August and December-February, swapped south).
    """
    moy = months.month.to_numpy()
    n_months, n_meters = len(months), len(southern)
    north_warm, north_cold = np.isin(moy, (6, 7, 8)), np.isin(moy, (12, 1, 2))
    warm = np.where(southern[None, :], north_cold[:, None], north_warm[:, None])
    cold = np.where(southern[None, :], north_warm[:, None], north_cold[:, None])
    if temperature_c is None or n_months < 12:
        return warm, cold
    recent = temperature_c[-12:]  # one of each month of the year
    known = np.isfinite(recent).sum(axis=0) >= 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a meter without any temperature
        fill = np.nanmean(recent, axis=0)
    filled = np.where(np.isfinite(recent), recent, np.nan_to_num(fill)[None, :])
    rank = np.argsort(np.argsort(filled, axis=0, kind="stable"), axis=0)  # 0 = coldest
    by_moy_warm = np.zeros((13, n_meters), bool)
    by_moy_cold = np.zeros((13, n_meters), bool)
    by_moy_warm[moy[-12:]] = rank >= 9
    by_moy_cold[moy[-12:]] = rank <= 2
    return (np.where(known[None, :], by_moy_warm[moy], warm),
            np.where(known[None, :], by_moy_cold[moy], cold))


def _nan_reduce(func, values, mask):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a meter without such a month
        return func(np.where(mask, values, np.nan), axis=0)


def irkutsk_signs(kwh_per_day: np.ndarray, group: np.ndarray, warm: np.ndarray,
                  cold: np.ndarray, params: MonthlyParams = MonthlyParams()) -> pd.DataFrame:
    """The three Irkutsk signs, a decision and a score for every monthly meter.

    Parameters
    ----------
    kwh_per_day : numpy.ndarray of shape (n_months, n_meters)
        Mean daily energy per month [kWh/day]; NaN: unknown.
    group : numpy.ndarray of int, shape (n_meters,)
        Peer group (:func:`peer_groups`).
    warm, cold : numpy.ndarray of bool, shape (n_months, n_meters)
        :func:`season_masks`.
    params : MonthlyParams

    Returns
    -------
    pandas.DataFrame
        One row per meter (positional index): ``valid_months``, ``onset_month``
        (position, -1: high from the first month or no rise), ``stepped``,
        ``peer_kwh_per_day`` and ``kwh_per_day`` (warm months since onset),
        ``peer_ratio`` (last 12 months), ``summer_ratio``, ``winter_ratio``
        (NaN: no cold month since onset), ``stability_cv``, ``n_summer``,
        ``excess_kw`` [kW], the signs
        ``sign_peers``, ``sign_summer``, ``sign_stable``, ``judged``,
        ``flagged`` and ``evidence`` (0..1).

    Examples
    --------
    >>> kpd = np.full((14, 20), 8.0); kpd[:, 0] += 24.0  # one meter with a 1 kW rig
    >>> warm = np.zeros((14, 20), bool); warm[5:8] = True
    >>> signs = irkutsk_signs(kpd, np.zeros(20, int), warm, ~warm & False)
    >>> bool(signs["flagged"][0]), bool(signs["flagged"][1:].any())
    (True, False)
    """
    y = np.asarray(kwh_per_day, dtype=np.float64)
    n_months, n_meters = y.shape
    valid = np.isfinite(y) & (y >= 0)
    peer = np.full_like(y, np.nan)
    for g in np.unique(group):  # the few peer groups, not the meters
        members = group == g
        peer[:, members] = _nan_reduce(np.nanmedian, y[:, members].T, valid[:, members].T)[:, None]
    ratio = np.where(valid & (peer > 0), y / np.where(peer > 0, peer, 1.0), np.nan)

    # A persisting rise of the peer ratio dates the onset.
    log_ratio = np.log(np.clip(ratio, 0.05, None))
    scan = scan_level_shift(log_ratio, np.ones((n_meters, n_months, 1)), min_pre=3, min_post=3)
    stepped = (scan.onset >= 0) & (scan.t >= STEP_MIN_T) & (scan.shift >= np.log(STEP_MIN_RATIO))
    first_valid = np.where(valid.any(axis=0), np.argmax(valid, axis=0), 0)
    onset = np.where(stepped, scan.onset, first_valid)
    since = np.arange(n_months)[:, None] >= onset[None, :]
    use = valid & since

    summer = use & warm
    n_summer = summer.sum(axis=0)
    summer_ratio = _nan_reduce(np.nanmedian, ratio, summer)
    winter_ratio = _nan_reduce(np.nanmedian, ratio, use & cold)
    last12 = valid & (np.arange(n_months)[:, None] >= n_months - 12)
    peer_ratio = _nan_reduce(np.nanmedian, ratio, last12)
    mean_summer = _nan_reduce(np.nanmean, y, summer)
    cv = _nan_reduce(np.nanstd, y, summer) / np.where(mean_summer > 0, mean_summer, np.nan)
    excess_kw = _nan_reduce(np.nanmedian, y - peer, summer) / 24.0

    p = params
    judged = (valid.sum(axis=0) >= p.min_months) & (n_summer >= 2)
    sign_peers = judged & (summer_ratio >= p.min_peer_ratio
                           * np.where(stepped, 1.0, THROUGHOUT_FACTOR))
    sign_summer = judged & (np.isnan(winter_ratio)
                            | (summer_ratio >= (1 - p.max_summer_drop) * winter_ratio))
    sign_stable = judged & (cv <= p.max_cv)
    flagged = sign_peers & sign_summer & sign_stable & (excess_kw >= p.min_excess_kw)

    with np.errstate(invalid="ignore", divide="ignore"):
        e_peers = np.clip(np.log2(summer_ratio) / 2, 0, 1)
        e_summer = np.where(np.isnan(winter_ratio), 1.0,
                            np.clip(summer_ratio / winter_ratio, 0, 1))
        e_stable = np.clip(1 - cv / (2 * p.max_cv), 0, 1)
        e_excess = np.clip(excess_kw / (2 * p.min_excess_kw), 0, 1)
    evidence = np.nan_to_num((e_peers * e_summer * e_stable * e_excess) ** 0.25)
    return pd.DataFrame({
        "valid_months": valid.sum(axis=0),
        "onset_month": np.where(stepped, onset, -1),
        "first_month": first_valid,
        "stepped": stepped,
        "kwh_per_day": mean_summer,
        "peer_kwh_per_day": _nan_reduce(np.nanmedian, peer, summer),
        "peer_ratio": peer_ratio,
        "summer_ratio": summer_ratio,
        "winter_ratio": winter_ratio,
        "stability_cv": cv,
        "n_summer": n_summer,
        "excess_kw": excess_kw,
        "sign_peers": sign_peers,
        "sign_summer": sign_summer,
        "sign_stable": sign_stable,
        "judged": judged,
        "flagged": flagged,
        "evidence": evidence,
    })
