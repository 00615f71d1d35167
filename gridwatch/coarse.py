"""Judge the daily and monthly meters of a run, each at its own resolution (issue 16, items 3-4).

:func:`judge_coarse` is the pipeline's stage for the meters whose reads
:func:`gridwatch.resolution.split_coarse` took out of the interval data: it
puts them on a days x meters (:mod:`gridwatch.daily`) or months x meters
(:mod:`gridwatch.monthly`) array with their region's temperature, applies
the rules of their resolution, and returns rows shaped like the interval
detector's (the fields of ``flags.csv``) plus the monthly suspect list
(``monthly_suspects.csv``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.daily import MAX_SCORE, DailyParams, daily_kwh, daily_step_signs
from gridwatch.monthly import (
    MonthlyParams,
    irkutsk_signs,
    monthly_kwh_per_day,
    peer_groups,
    season_masks,
)
from gridwatch.resolution import DAILY, MONTHLY, RESOLUTION

UNFLAGGED_MAX_SCORE = 0.499
MONTHLY_NOT_JUDGED = "daily and hourly shape not judged (monthly data)"
DAILY_NOT_JUDGED = ("flatness within the day not judged (daily reads only), so the score is "
                    f"capped at {MAX_SCORE:g}")


@dataclass
class CoarseResult:
    """What :func:`judge_coarse` gives the pipeline.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per daily or monthly meter (index ``meter_id``) with the
        ``flags.csv`` fields, ``analysed`` and ``resolution``.
    monthly_suspects : pandas.DataFrame
        ``monthly_suspects.csv`` rows (:data:`gridwatch.columns.MONTHLY_SUSPECTS_COLUMNS`),
        ranked by money.
    rows_used : int
        Reads inside the daily and monthly windows.
    """

    table: pd.DataFrame
    monthly_suspects: pd.DataFrame
    rows_used: int = 0


def empty_monthly_suspects() -> pd.DataFrame:
    """A ``monthly_suspects.csv`` frame without rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in col.MONTHLY_SUSPECTS_COLUMNS})


def judge_coarse(coarse: pd.DataFrame | None, meters: pd.DataFrame, weather: pd.DataFrame | None,
                 as_of, *, timezone: str, config) -> CoarseResult:
    """Flags for the daily and monthly meters.

    Parameters
    ----------
    coarse : pandas.DataFrame or None
        Their cleaned reads (:func:`gridwatch.resolution.split_coarse`).
    meters : pandas.DataFrame
        The meters table.
    weather : pandas.DataFrame or None
        Cleaned weather (``region``, ``timestamp`` UTC, ``temperature_c``).
    as_of : datetime.date
        The last day analysed.
    timezone : str
        Local time zone (days and months).
    config : gridwatch.config.CoarseConfig

    Returns
    -------
    CoarseResult
    """
    if coarse is None or coarse.empty:
        return CoarseResult(_empty_table(), empty_monthly_suspects())
    info = meters.assign(**{col.METER_ID: meters[col.METER_ID].astype(str)}).drop_duplicates(
        col.METER_ID).set_index(col.METER_ID)
    tables, suspects, used = [], empty_monthly_suspects(), 0
    for resolution in (DAILY, MONTHLY):
        reads = coarse[coarse[RESOLUTION] == resolution]
        if reads.empty:
            continue
        ids = pd.Index(pd.unique(reads[col.METER_ID].astype(str)))
        who = info.reindex(ids).reset_index().rename(columns={"index": col.METER_ID})
        if resolution == DAILY:
            table, n = _judge_daily(reads, who, weather, as_of, timezone, config)
        else:
            table, suspects, n = _judge_monthly(reads, who, weather, as_of, timezone, config)
        tables.append(table)
        used += n
    return CoarseResult(pd.concat(tables).set_index(col.METER_ID, drop=False), suspects, used)


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in
                         (*col.FLAGS_COLUMNS, "analysed", RESOLUTION)}).set_index(
        col.METER_ID, drop=False)


def _temperature(weather, who: pd.DataFrame, timezone: str, freq: str, periods) -> np.ndarray | None:
    """Mean temperature of each meter's region per local day (``D``) or month (``M``)."""
    if weather is None or weather.empty:
        return None
    local = weather[col.TIMESTAMP].dt.tz_convert(timezone).dt.tz_localize(None)
    key = local.dt.normalize() if freq == "D" else local.dt.to_period("M")
    means = (pd.DataFrame({"key": key.to_numpy(), col.REGION: weather[col.REGION].astype(str),
                           col.TEMPERATURE_C: weather[col.TEMPERATURE_C].to_numpy()})
             .groupby(["key", col.REGION])[col.TEMPERATURE_C].mean().unstack(col.REGION))
    means = means.reindex(periods)
    regions = who[col.REGION].astype("string").fillna("").to_numpy(dtype=object)
    if means.shape[1] == 1:  # one region serves every meter
        regions = np.full(len(who), means.columns[0], dtype=object)
    out = means.reindex(columns=pd.Index(regions)).to_numpy(dtype=np.float64)
    return None if not np.isfinite(out).any() else out


def _money(excess_kwh, who):
    tariff = (who[col.TARIFF_PER_KWH].to_numpy(dtype=np.float64) if col.TARIFF_PER_KWH in who
              else np.full(len(who), np.nan))
    return tariff, excess_kwh * tariff


def _base_rows(who, resolution, *, score, flagged, kind, onset, excess_kw, excess_kwh, est_loss,
               reasons):
    transformer = (who[col.TRANSFORMER_ID].astype("string").fillna("").to_numpy(dtype=object)
                   if col.TRANSFORMER_ID in who else np.full(len(who), "", dtype=object))
    return pd.DataFrame({
        col.METER_ID: who[col.METER_ID].to_numpy(dtype=object),
        col.TRANSFORMER_ID: transformer,
        col.SCORE: score,
        col.FLAGGED: flagged,
        col.KIND: kind,
        col.ONSET: onset,
        col.EXCESS_KW: excess_kw,
        col.EXCESS_KWH: excess_kwh,
        col.EST_LOSS: est_loss,
        col.REASONS: reasons,
        "analysed": True,
        RESOLUTION: resolution,
    })


# --- monthly ---------------------------------------------------------------------------------
def _last_complete_month(as_of) -> pd.Period:
    day = pd.Timestamp(as_of)
    month = day.to_period("M")
    return month if day.day == day.days_in_month else month - 1


def _judge_monthly(reads, who, weather, as_of, timezone, config):
    last = _last_complete_month(as_of)
    n_months = config.monthly_history_months
    kpd = monthly_kwh_per_day(reads, who[col.METER_ID], timezone, last, n_months)
    months = kpd.index
    start = months[0].start_time.tz_localize(timezone).tz_convert("UTC")
    end = (months[-1] + 1).start_time.tz_localize(timezone).tz_convert("UTC")
    used = int(((reads[col.TIMESTAMP] >= start) & (reads[col.TIMESTAMP] < end)).sum())
    group, label = peer_groups(who, config.min_peers)
    temp = _temperature(weather, who, timezone, "M", months)
    lat = (who[col.LAT].to_numpy(dtype=np.float64) if col.LAT in who else np.zeros(len(who)))
    warm, cold = season_masks(months, temp, np.nan_to_num(lat) < 0)
    params = MonthlyParams(
        min_months=config.monthly_min_months, min_peer_ratio=config.monthly_min_peer_ratio,
        max_summer_drop=config.monthly_max_summer_drop, max_cv=config.monthly_max_cv,
        min_excess_kw=config.min_excess_kw, min_peers=config.min_peers)
    s = irkutsk_signs(kpd.to_numpy(dtype=np.float64), group, warm, cold, params)

    flagged = s["flagged"].to_numpy(dtype=bool)
    from_month = np.where(s["onset_month"] >= 0, s["onset_month"], s["first_month"]).astype(int)
    hours = np.cumsum(months.days_in_month.to_numpy()[::-1])[::-1] * 24.0  # from month i to the end
    excess_kw = np.where(flagged, s["excess_kw"], 0.0)
    excess_kwh = excess_kw * hours[from_month]
    tariff, est_loss = _money(excess_kwh, who)
    evidence = s["evidence"].to_numpy(dtype=np.float64)
    score = np.where(flagged, 0.5 + 0.5 * evidence, UNFLAGGED_MAX_SCORE * evidence)
    onset = np.where(flagged & s["stepped"], [m.start_time.date().isoformat()
                                              for m in months[from_month]], "")
    since = [("since " + months[i].strftime("%Y-%m")) if st else "throughout the history"
             for i, st in zip(from_month, s["stepped"], strict=True)]
    reasons = _monthly_reasons(s, label, since)
    table = _base_rows(who, MONTHLY, score=score, flagged=flagged,
                       kind=np.where(flagged, col.KIND_MONTHLY, ""), onset=onset,
                       excess_kw=excess_kw, excess_kwh=excess_kwh, est_loss=est_loss,
                       reasons=reasons)
    listed = pd.DataFrame({
        col.METER_ID: table[col.METER_ID],
        col.TRANSFORMER_ID: table[col.TRANSFORMER_ID],
        col.CUSTOMER_CLASS: _text(who, col.CUSTOMER_CLASS),
        col.REGION: _text(who, col.REGION),
        col.HEATING_TYPE: _text(who, col.HEATING_TYPE),
        "months": s["valid_months"],
        col.ONSET: [months[i].strftime("%Y-%m") if st else "" for i, st in
                    zip(from_month, s["stepped"], strict=True)],
        "kwh_per_day": s["kwh_per_day"].round(1),
        "peer_kwh_per_day": s["peer_kwh_per_day"].round(1),
        "peer_ratio": s["peer_ratio"].round(2),
        "summer_ratio": s["summer_ratio"].round(2),
        "winter_ratio": s["winter_ratio"].round(2),
        "stability_cv": s["stability_cv"].round(3),
        col.EXCESS_KW: np.round(excess_kw, 3),
        col.EXCESS_KWH: np.round(excess_kwh, 1),
        col.TARIFF_PER_KWH: tariff,
        col.EST_LOSS: np.round(est_loss, 2),
        col.SCORE: np.round(score, 4),
        "peers": label,
        col.REASONS: reasons,
    })[flagged]
    order = np.lexsort((listed[col.METER_ID].to_numpy(dtype=str),
                        -np.nan_to_num(listed[col.EXCESS_KWH].to_numpy(dtype=float)),
                        -np.nan_to_num(listed[col.EST_LOSS].to_numpy(dtype=float), nan=-1.0)))
    listed = listed.iloc[order].reset_index(drop=True)
    listed.insert(0, col.RANK, np.arange(1, len(listed) + 1))
    return table, listed[list(col.MONTHLY_SUSPECTS_COLUMNS)], used


def _text(who, name):
    if name not in who:
        return np.full(len(who), "", dtype=object)
    return who[name].astype("string").fillna("").to_numpy(dtype=object)


def _pct(x):
    return "?" if not np.isfinite(x) else f"{100 * x:.0f} %"


def _monthly_reasons(s: pd.DataFrame, label, since) -> list:
    """Short reasons per meter (a loop only to format text)."""
    out = []
    for row, peers, when in zip(s.itertuples(index=False), label, since, strict=True):
        head = f"monthly billing reads ({row.valid_months} months)"
        if not row.judged:
            why = (f"too few months to judge ({row.valid_months})" if row.n_summer >= 2
                   or row.valid_months < 12 else "no warm month since the rise to judge by")
            out.append(f"{head}: {why}; {MONTHLY_NOT_JUDGED}")
            continue
        parts = [f"{row.summer_ratio:.1f}x similar premises in the warm months ({peers}; "
                 f"their median {row.peer_kwh_per_day:.0f} kWh/day), {row.peer_ratio:.1f}x over "
                 "the last 12 months"]
        if np.isfinite(row.winter_ratio):
            parts.append(("no seasonal drop" if row.sign_summer else "drops in the warm months")
                         + f" (warm-month ratio {row.summer_ratio:.1f}x, cold {row.winter_ratio:.1f}x)")
        parts.append(("stable month to month" if row.sign_stable else "varies month to month")
                     + f" (CV {_pct(row.stability_cv)})")
        if row.flagged:
            parts.append(f"about {row.excess_kw:.1f} kW above the peers {when}")
        else:
            missing = [name for name, ok in (("2x similar premises", row.sign_peers),
                                             ("high in summer", row.sign_summer),
                                             ("stable", row.sign_stable)) if not ok]
            parts.append("not flagged: " + (", ".join(missing) + " not met" if missing else
                                            f"draw above the peers only {row.excess_kw:.2f} kW"))
        out.append(f"{head}: " + "; ".join(parts) + f"; {MONTHLY_NOT_JUDGED}")
    return out


# --- daily -----------------------------------------------------------------------------------
def _judge_daily(reads, who, weather, as_of, timezone, config):
    n_days = config.daily_history_days
    days = pd.date_range(end=pd.Timestamp(as_of), periods=n_days, freq="D")
    kwh = daily_kwh(reads, who[col.METER_ID], timezone, days)
    start = days[0].tz_localize(timezone).tz_convert("UTC")
    end = (days[-1] + pd.Timedelta(days=1)).tz_localize(timezone).tz_convert("UTC")
    used = int(((reads[col.TIMESTAMP] >= start) & (reads[col.TIMESTAMP] < end)).sum())
    group, label = peer_groups(who, config.min_peers)
    temp = _temperature(weather, who, timezone, "D", days)
    if temp is not None:  # a day without a temperature: the region's mean
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(temp, axis=0)
        temp = np.where(np.isfinite(temp), temp, np.nan_to_num(fill, nan=15.5)[None, :])
    params = DailyParams(min_t=config.daily_min_t, min_excess_kw=config.min_excess_kw,
                         min_persistence=config.daily_min_persistence)
    s = daily_step_signs(kwh.to_numpy(dtype=np.float64), temp,
                         days.day_of_week.to_numpy() >= 5, group, params)
    flagged = s["flagged"].to_numpy(dtype=bool)
    onset_pos = s["onset"].to_numpy()
    excess_kw = np.where(flagged, s["excess_kw"], 0.0)
    excess_kwh = excess_kw * 24.0 * np.where(flagged, n_days - onset_pos, 0)
    _, est_loss = _money(excess_kwh, who)
    evidence = s["evidence"].to_numpy(dtype=np.float64)
    score = np.where(flagged, 0.5 + (MAX_SCORE - 0.5) * evidence, UNFLAGGED_MAX_SCORE * evidence)
    onset = np.where(flagged, [days[i].date().isoformat() if i >= 0 else "" for i in onset_pos],
                     "")
    valid = np.isfinite(kwh.to_numpy()).sum(axis=0)
    reasons = []
    for row, peers, n, day in zip(s.itertuples(index=False), label, valid, onset, strict=True):
        head = f"daily reads only ({n} days)"
        weather_note = ("heating/cooling degree-days fitted" if row.has_weather
                        else "no temperature")
        if row.flagged:
            body = (f"daily energy rose by {24 * row.excess_kw:.0f} kWh/day (about "
                    f"{row.excess_kw:.1f} kW) from {day} and stayed (on {_pct(row.persistence)} "
                    f"of the days since; t = {row.t:.0f}, {weather_note}); "
                    f"{row.peer_ratio:.1f}x similar premises since ({peers})")
        elif row.onset >= 0 and np.isfinite(row.t):
            body = (f"largest rise {24 * row.excess_kw:.0f} kWh/day (t = {row.t:.1f}, on "
                    f"{_pct(row.persistence)} of the days since; {weather_note}): not a "
                    "persisting step of a rig")
        else:
            body = "no rise in daily energy"
        reasons.append(f"{head}: {body}; {DAILY_NOT_JUDGED}")
    table = _base_rows(who, DAILY, score=score, flagged=flagged,
                       kind=np.where(flagged, col.KIND_VISIBLE, ""), onset=onset,
                       excess_kw=excess_kw, excess_kwh=excess_kwh, est_loss=est_loss,
                       reasons=reasons)
    return table, used
