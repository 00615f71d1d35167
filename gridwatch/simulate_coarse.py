"""Simulated meters read once a day or once a month (issue 16, items 3, 4 and 6).

A Siberian-like population of a partial AMI rollout: residential and
commercial premises in two continental regions (January about -18 C, July
about +18 C), some electrically heated (a load proportional to heating
degree-days, and for some an electric water heater all year), a share with
the heating type recorded in the meters table, and mining rigs (a steady
``rig_kw`` x 24 h x uptime every day from their onset). Daily meters also
have a look-alike: a new electric vehicle, charged on most days.

Energy is simulated per day (no within-day shape: these meters cannot show
one); a monthly meter's billing read is the sum of its days over each
calendar month, stamped at the START of the month (local midnight of the
1st), a daily meter's read is its day, stamped at local midnight.

:func:`simulate_coarse` returns the tables in memory (the quality tests use
it at scale); :func:`add_coarse_meters` appends them to a dataset written by
:func:`gridwatch.simulate.simulate_dataset` (its ``daily_meters`` and
``monthly_meters`` options): a population that mixes interval, daily and
monthly meters in one run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.atomic import atomic_path

REGIONS = (("irkutsk", 0.0), ("bratsk", -2.0))  # name, temperature offset [degrees C]
HEATING_BASE_C = 15.5
COARSE_TYPES = ("normal", "rig", "ev_new")


def _local_days(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    return pd.date_range(first, last, freq="D")


def simulate_coarse(*, n_daily=0, n_monthly=0, as_of="2026-03-31", months=14, seed=0,
                    timezone="Asia/Irkutsk", electric_heating_share=0.3, heating_known_share=0.7,
                    rig_share=0.1, ev_share=0.05, daily_window_days=120,
                    rig_kw_range=(0.3, 3.0), missing_share=0.02):
    """Daily and monthly meters with labelled rigs, in memory.

    Parameters
    ----------
    n_daily, n_monthly : int
        Meters read daily / monthly.
    as_of : str or datetime.date
        Last simulated day (local).
    months : int, default 14
        Complete calendar months simulated before ``as_of``'s month (and the
        days of that month up to ``as_of``).
    seed : int
    timezone : str
    electric_heating_share : float
        Share of residential premises heated electrically.
    heating_known_share : float
        Share of premises whose ``heating_type`` the meters table holds.
    rig_share, ev_share : float
        Share of meters with a rig; of daily meters with a new electric vehicle.
    daily_window_days : int
        A daily meter's rig starts 25-85 % into its last ``daily_window_days``
        days (a fifth ran before them).
    rig_kw_range : tuple of float
        Rig power drawn uniformly in this range [kW].
    missing_share : float
        Share of daily reads missing.

    Returns
    -------
    meters, readings, weather : pandas.DataFrame
        Contract tables (``readings.timestamp`` UTC; ``meters`` has ``heating_type``).
    labels : dict
        ``{meter_id: {"resolution", "type", "rig_kw", "onset", "heating"}}``,
        ``heating`` ``"electric"`` or ``"other"`` (the truth, known or not).
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(16, 3)))
    as_of = pd.Timestamp(str(as_of))
    first = (as_of.to_period("M") - months).start_time
    days = _local_days(first, as_of)
    n_days, n = len(days), int(n_daily) + int(n_monthly)
    resolution = np.array(["daily"] * int(n_daily) + ["monthly"] * int(n_monthly), dtype=object)
    ids = np.array([f"D{i + 1:05d}" for i in range(int(n_daily))]
                   + [f"Y{i + 1:05d}" for i in range(int(n_monthly))], dtype=object)

    # weather: continental seasons, fronts as an AR(1)
    doy = days.day_of_year.to_numpy(dtype=np.float64)
    climate = 0.0 - 18.0 * np.cos(2 * np.pi * (doy - 15.0) / 365.25)
    temp = np.empty((n_days, len(REGIONS)))
    for r, (_, offset) in enumerate(REGIONS):  # two regions
        noise = np.zeros(n_days)
        e = rng.normal(0, 2.0, n_days)
        for d in range(1, n_days):  # a short recursion over days, not meters
            noise[d] = 0.8 * noise[d - 1] + e[d]
        temp[:, r] = climate + offset + noise
    region = rng.integers(0, len(REGIONS), n)
    t_m = temp[:, region]  # (n_days, n)
    hdd = np.maximum(HEATING_BASE_C - t_m, 0.0)

    commercial = rng.random(n) < 0.15
    base = np.where(commercial, rng.lognormal(np.log(30.0), 0.4, n),
                    rng.lognormal(np.log(7.0), 0.35, n))
    electric = ~commercial & (rng.random(n) < electric_heating_share)
    heat_coef = np.where(electric, rng.lognormal(np.log(0.9), 0.3, n), 0.0)
    water = electric & (rng.random(n) < 0.4)
    water_kwh = np.where(water, rng.lognormal(np.log(6.0), 0.3, n), 0.0)
    known = rng.random(n) < heating_known_share
    weekend = (days.day_of_week.to_numpy() >= 5)[:, None]
    season = 1.0 + 0.15 * np.cos(2 * np.pi * (doy - 15.0) / 365.25)[:, None]  # lighting
    day_factor = np.where(commercial[None, :], np.where(weekend, 0.6, 1.05),
                          np.where(weekend, 1.08, 0.97))
    noise = np.exp(_ar1(rng, (n_days, n), 0.6, 0.15))
    kwh = (base[None, :] * season * day_factor + heat_coef[None, :] * hdd
           + water_kwh[None, :]) * noise

    # scenarios
    kind = np.full(n, "normal", dtype=object)
    order = rng.permutation(n)
    n_rig = int(round(rig_share * n))
    kind[order[:n_rig]] = "rig"
    daily_idx = np.flatnonzero((resolution == "daily") & (kind == "normal"))
    n_ev = int(round(ev_share * int(n_daily)))
    kind[rng.permutation(daily_idx)[:n_ev]] = "ev_new"
    rig_kw = np.where(kind == "rig", rng.uniform(*rig_kw_range, n), 0.0)
    onset = np.full(n, -1, dtype=np.int64)  # day position; -1: before the simulated days
    last_summer = pd.Timestamp(year=as_of.year if as_of.month >= 9 else as_of.year - 1, month=6,
                               day=1)
    june = int((last_summer - first).days)
    for res in ("daily", "monthly"):  # two groups, vectorised within each
        sel = np.flatnonzero((resolution == res) & (kind != "normal"))
        if res == "monthly":
            lo, hi = 90, max(june, 91)
            pre = rng.random(len(sel)) < 0.35
        else:
            lo = n_days - daily_window_days + int(0.25 * daily_window_days)
            hi = n_days - daily_window_days + int(0.85 * daily_window_days)
            pre = (rng.random(len(sel)) < 0.2) & (kind[sel] == "rig")
        onset[sel] = np.where(pre, -1, rng.integers(lo, hi, len(sel)))
    running = (np.arange(n_days)[:, None] >= onset[None, :])
    uptime = rng.uniform(0.9, 1.0, n)
    rig_day = rig_kw[None, :] * 24.0 * uptime[None, :] * rng.normal(1.0, 0.03, (n_days, n))
    kwh += np.where(running & (kind == "rig")[None, :], rig_day, 0.0)
    ev_day = rng.uniform(8.0, 14.0, (n_days, n)) * (rng.random((n_days, n)) < 0.6)
    kwh += np.where(running & (kind == "ev_new")[None, :], ev_day, 0.0)

    readings = _reads(kwh, days, ids, resolution, timezone, as_of, rng, missing_share)
    classes = np.where(commercial, "commercial", "residential")
    meters = pd.DataFrame({
        col.METER_ID: ids,
        col.TRANSFORMER_ID: [f"T{m[0]}{i // 20 + 1:04d}" for i, m in enumerate(ids)],
        col.CUSTOMER_CLASS: classes,
        col.REGION: np.array([r[0] for r in REGIONS], dtype=object)[region],
        col.TARIFF_PER_KWH: np.where(commercial, 0.12, 0.08),
        col.HEATING_TYPE: np.where(known, np.where(electric, "electric", "district"), ""),
    })
    stamps = pd.date_range(first + pd.Timedelta(hours=12), periods=n_days, freq="D").tz_localize(
        timezone).tz_convert("UTC")
    weather = pd.DataFrame({
        col.REGION: np.repeat([r[0] for r in REGIONS], n_days),
        col.TIMESTAMP: np.tile(stamps, len(REGIONS)),
        col.TEMPERATURE_C: np.round(temp.T.ravel(), 1),
    })
    labels = {
        m: {"resolution": res, "type": k, "rig_kw": float(kw) if k == "rig" else None,
            "onset": days[o].date().isoformat() if o >= 0 and k != "normal" else None,
            "heating": "electric" if e else "other", "heating_known": bool(kn)}
        for m, res, k, kw, o, e, kn in zip(ids, resolution, kind, rig_kw, onset, electric, known,
                                            strict=True)}
    return meters, readings, weather, labels


def _ar1(rng, shape, rho, sd):
    e = rng.normal(0, sd * np.sqrt(1 - rho**2), shape)
    out = np.empty(shape)
    out[0] = rng.normal(0, sd, shape[1:])
    for d in range(1, shape[0]):  # over days, all meters at once
        out[d] = rho * out[d - 1] + e[d]
    return out


def _reads(kwh, days, ids, resolution, timezone, as_of, rng, missing_share):
    """Daily reads of the daily meters, month sums of the monthly ones (complete months only)."""
    frames = []
    daily = np.flatnonzero(resolution == "daily")
    if len(daily):
        keep = rng.random((len(days), len(daily))) >= missing_share
        d, m = np.nonzero(keep)
        utc = days.tz_localize(timezone).tz_convert("UTC")
        frames.append(pd.DataFrame({col.METER_ID: ids[daily][m], col.TIMESTAMP: utc[d],
                                    col.KWH: np.round(kwh[d, daily[m]], 2)}))
    monthly = np.flatnonzero(resolution == "monthly")
    if len(monthly):
        period = days.to_period("M")
        complete = period <= (as_of.to_period("M") if as_of.day == as_of.days_in_month
                              else as_of.to_period("M") - 1)
        months = period[complete].unique()
        code = pd.Index(months).get_indexer(period[complete])
        sums = np.zeros((len(months), len(monthly)))
        np.add.at(sums, code, kwh[complete][:, monthly])
        starts = months.to_timestamp().tz_localize(timezone).tz_convert("UTC")
        mm, mi = np.meshgrid(np.arange(len(months)), np.arange(len(monthly)), indexing="ij")
        frames.append(pd.DataFrame({col.METER_ID: ids[monthly][mi.ravel()],
                                    col.TIMESTAMP: starts[mm.ravel()],
                                    col.KWH: np.round(sums.ravel(), 1)}))
    return pd.concat(frames, ignore_index=True)


def add_coarse_meters(out_dir, *, n_daily, n_monthly, as_of, seed, fmt, **options) -> dict:
    """Append simulated daily and monthly meters to a dataset directory.

    ``meters.csv`` gains their rows (and a ``heating_type`` column, empty for
    the interval meters), ``readings`` their reads, ``weather.csv`` their
    regions' temperature over the months simulated. Returns their labels
    (:func:`simulate_coarse`).
    """
    out = Path(out_dir)
    meters, readings, weather, labels = simulate_coarse(
        n_daily=n_daily, n_monthly=n_monthly, as_of=as_of, seed=seed, **options)
    listed = pd.read_csv(out / "meters.csv", dtype={col.METER_ID: str, col.TRANSFORMER_ID: str})
    listed = pd.concat([listed.assign(**{col.HEATING_TYPE: ""}), meters], ignore_index=True)
    with atomic_path(out / "meters.csv", suffix=".csv") as tmp:
        listed.to_csv(tmp, index=False, lineterminator="\n")
    tz = options.get("timezone", "Asia/Irkutsk")
    if fmt == "parquet":
        path = out / "readings.parquet"
        table = pd.read_parquet(path)
        reads = readings.astype({col.METER_ID: str})
        reads[col.TIMESTAMP] = reads[col.TIMESTAMP].dt.as_unit("us")
        table = pd.concat([table, reads], ignore_index=True)
        with atomic_path(path, suffix=".parquet") as tmp:
            table.to_parquet(tmp, index=False)
    else:
        path = out / "readings.csv"
        local = readings[col.TIMESTAMP].dt.tz_convert(tz).dt.strftime("%Y-%m-%dT%H:%M:%S%z")
        with path.open(encoding="utf-8") as handle:
            header = [name.strip('"') for name in handle.readline().rstrip("\n").split(",")]
        rows = pd.DataFrame({name: "" for name in header}, index=readings.index)
        rows[col.METER_ID] = readings[col.METER_ID]
        rows[col.TIMESTAMP] = local.str[:-2] + ":" + local.str[-2:]
        rows[col.KWH] = readings[col.KWH].map("{:.2f}".format)
        with path.open("a", encoding="utf-8") as handle:
            rows.to_csv(handle, index=False, header=False, lineterminator="\n")
    local = weather[col.TIMESTAMP].dt.tz_convert(tz).dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    weather = weather.assign(**{col.TIMESTAMP: local.str[:-2] + ":" + local.str[-2:]})
    known = pd.read_csv(out / "weather.csv", dtype=str)
    with atomic_path(out / "weather.csv", suffix=".csv") as tmp:
        pd.concat([known, weather.astype(str)], ignore_index=True).to_csv(
            tmp, index=False, lineterminator="\n")
    return labels
