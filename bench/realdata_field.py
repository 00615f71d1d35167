"""Field-realistic detection on REAL households: EDRP homes as a 2022 AMI export.

Run: ``.venv/bin/python bench/realdata_field.py [--seeds 0 1 2] [--out /tmp/field]``

The 622 real Scottish households of EDRP (half-hourly, 92 days of spring
2009; ``../shared/realdata``, internal evaluation only, never copied into the
project) are re-dated to 2022-03-01..05-31 as local wall-clock time in
Europe/London (the DST day loses its 01:00-02:00 readings) and paired with the
real hourly UK temperature of that spring (the OpenEEmeter sample 0). The
dataset is written as a utility would export it: CSV with local offsets,
a fifth of the meters hourly, gaps, rooftop PV on 12-30 % of homes with import
and export registers (a quarter of them with an old import-only meter), heat
pumps, and the rigs and look-alikes of :mod:`gridwatch.loads` injected at
random (``RIG_TYPES``, ``LOOKALIKES``).

For each seed it runs GridWatch and the utility's spreadsheet rule
(:func:`gridwatch.rules.peer_multiple_rule`: at least 2x similar homes and
flat) on the same files and prints recall per rig type, false alarms per
look-alike type, precision in the top k, onset within a day, and every rig
the rule finds that GridWatch misses (a bug by definition).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from gridwatch import loads

HERE = Path(__file__).parent
REAL = HERE.parent.parent / "shared" / "realdata"
EDRP = REAL / "edrp_scotland_622hh" / "edrp_622hh_halfhourly_2009-03_2009-05.csv.gz"
UK_TEMPERATURE = REAL / "eemeter_uk_samples" / "uk-tempC-sample-0.csv.gz"
TIMEZONE = "Europe/London"
LAT, LON = 56.0, -3.8  # central Scotland
STEP_H = 0.5

#: Rig behaviours injected (label type ``rig`` or ``rig_preexisting``, ``rig_type`` below),
#: and how many of each per seed.
RIG_TYPES = {
    "steady": 3, "preexisting": 4, "intermittent": 3, "crypto_heater": 4, "behind_pv": 3,
    "gpu_small": 3, "staged": 2, "peak_avoiding": 3, "winter_only": 2, "summer_only": 2,
}
#: Look-alike types injected, and how many of each per seed.
LOOKALIKES = {
    "heat_pump": 6, "pv_inverter_failure": 5, "small_constant_load": 6, "move_in": 5,
    "new_freezer": 6, "night_storage_heating": 5, "ev_charging": 5, "growing_household": 5,
}


def _time_axis():
    """EDRP's 4,416 half-hour slots as 2022 local wall time; the DST gap dropped."""
    slots = pd.date_range("2022-03-01", periods=92 * 48, freq="30min")
    local = slots.tz_localize(TIMEZONE, nonexistent="NaT", ambiguous=False)
    keep = ~local.isna()
    return slots, local, keep


def _temperature(utc):
    t = pd.read_csv(UK_TEMPERATURE, usecols=["dt", "tempC"], parse_dates=["dt"])
    series = t.set_index(t["dt"].dt.tz_localize("UTC"))["tempC"].sort_index()
    series = series[~series.index.duplicated()]
    hourly = series.loc["2022-02-28":"2022-06-01"]
    values = np.interp(utc.asi8, hourly.index.asi8, hourly.to_numpy())
    return hourly, values


def _pick(rng, free, count):
    idx = rng.choice(np.flatnonzero(free), size=count, replace=False)
    free[idx] = False
    return idx


def build(out: Path, seed: int) -> dict:
    """Write one dataset (meters.csv, readings.csv, weather.csv, labels.json); return the labels."""
    rng = np.random.default_rng(seed)
    wide = pd.read_csv(EDRP, index_col="timestamp")
    base = wide.to_numpy(dtype=np.float64) * 2.0  # kWh per half hour -> kW
    n_steps, n = base.shape
    slots, local, keep = _time_axis()
    utc = local[keep].tz_convert("UTC")
    hour = np.asarray(slots.hour + slots.minute / 60.0)
    day = np.asarray((slots - slots[0]).days)
    weekend = np.asarray(slots.day_of_week >= 5)
    doy = np.asarray(slots.day_of_year)
    hourly_temp, temp_kept = _temperature(utc)
    temp = np.interp(np.arange(n_steps), np.flatnonzero(keep), temp_kept)
    temp_col = temp[:, None]
    solar_hour = (hour - np.where(slots.month >= 4, 1.0, 0.0) + LON / 15.0) % 24  # BST from 27 Mar
    solar_hour = np.where(slots < pd.Timestamp("2022-03-27 02:00"), (hour + LON / 15.0) % 24,
                          solar_hour)
    n_days = 92
    daily_temp = np.bincount(day, weights=temp) / np.bincount(day)
    warm_day = int(np.argmax(pd.Series(daily_temp).rolling(7).mean().to_numpy() > 10.0))

    consumption = base.copy()
    generation = np.zeros_like(base)
    labels = {}
    free = np.ones(n, dtype=bool)
    kind = np.full(n, "untouched", dtype=object)
    rig_type = np.full(n, None, dtype=object)
    onset = np.full(n, -1)
    rig_kw = np.full(n, np.nan)

    # Rooftop PV on 12-30 % of homes (not on the look-alikes that need their own shape).
    pv_share = float(rng.uniform(0.12, 0.30))
    pv = rng.random(n) < pv_share
    capacity = rng.uniform(2.0, 5.0, n)
    generation[:, pv] = loads.pv_kw(capacity[pv], lat_deg=np.full(pv.sum(), LAT),
                                    day_of_year=doy, solar_hour=solar_hour, day=day, rng=rng)
    import_only = pv & (rng.random(n) < 0.25)  # an old meter: no export register

    def onset_steps(idx, lo=0.25, hi=0.85):
        d = rng.integers(int(lo * n_days), int(hi * n_days), len(idx))
        return d, d * 48 + rng.integers(16, 44, len(idx))

    t = np.arange(n_steps)[:, None]
    for rtype, count in RIG_TYPES.items():
        pool = free & (pv if rtype == "behind_pv" else ~pv)
        idx = rng.choice(np.flatnonzero(pool), size=count, replace=False)
        free[idx] = False
        m = len(idx)
        if rtype in ("preexisting", "winter_only"):
            pre = np.ones(m, dtype=bool)
        elif rtype in ("intermittent", "crypto_heater"):
            pre = rng.random(m) < 0.5  # half of them running before the data
        else:
            pre = np.zeros(m, dtype=bool)
        d, step = onset_steps(idx)
        if rtype == "summer_only":
            d = np.full(m, warm_day)
            step = d * 48 + rng.integers(16, 44, m)
        step = np.where(pre, 0, step)
        if rtype == "staged":
            d = rng.integers(int(0.2 * n_days), int(0.45 * n_days), m)
            step = d * 48 + rng.integers(16, 44, m)
        nominal = rng.choice([1.35, 2.8, 3.1, 3.25, 0.6, 0.9], size=m)
        if rtype == "gpu_small":
            nominal = rng.uniform(0.35, 0.5, m)
        on = t >= step[None, :]
        if rtype == "intermittent":
            on &= loads.uptime_mask(n_steps, m, step_hours=STEP_H, off_share=rng.uniform(0.1, 0.3, m),
                                    rng=rng)
        if rtype == "peak_avoiding":
            on &= ~loads.window_mask(hour, weekend, start_h=16.0, length_h=4.0,
                                     weekdays_only=rng.random(m) < 0.5)
        if rtype == "winter_only":
            on &= t < (warm_day * 48 + rng.integers(0, 96, m))[None, :]
        if rtype == "crypto_heater":
            load = loads.crypto_heater_kw(nominal, on, temperature_c=temp_col,
                                          throttle_share=rng.uniform(0.5, 0.7, m), rng=rng)
        elif rtype == "staged":
            stages = rng.integers(3, 5, m)
            stage_of = np.minimum((t - step[None, :]) // (7 * 48) + 1, stages[None, :])
            level = nominal[None, :] * np.clip(stage_of, 0, None) / stages[None, :]
            load = loads.rig_kw(level, on, temperature_c=temp_col, rng=rng)
        else:
            load = loads.rig_kw(nominal, on, temperature_c=temp_col, rng=rng,
                                ripple=0.05 if rtype == "gpu_small" else 0.01,
                                restarts_per_day=4.0 if rtype == "gpu_small" else 0.0,
                                step_hours=STEP_H)
        consumption[:, idx] += load
        kind[idx] = np.where(pre, "rig_preexisting", "rig")
        rig_type[idx] = rtype
        onset[idx] = np.where(pre, -1, d)
        rig_kw[idx] = nominal

    for ltype, count in LOOKALIKES.items():
        idx = _pick(rng, free & ~pv if ltype != "pv_inverter_failure" else free & pv, count)
        m = len(idx)
        d, step = onset_steps(idx)
        after = t >= step[None, :]
        if ltype == "heat_pump":
            hp = loads.heat_pump_kw(temp_col, hour, rated_kw=rng.uniform(1.0, 2.5, m),
                                    heat_loss_kw_per_k=rng.uniform(0.25, 0.5, m), rng=rng,
                                    step_hours=STEP_H)
            consumption[:, idx] += hp * after
        elif ltype == "pv_inverter_failure":
            generation[:, idx] *= ~after
        elif ltype == "small_constant_load":
            consumption[:, idx] += rng.uniform(0.1, 0.25, m)[None, :] * after
        elif ltype == "move_in":
            vacant = rng.uniform(0.03, 0.08, m)[None, :] * (1 + 0.05 * rng.standard_normal((n_steps, m)))
            consumption[:, idx] = np.where(after, consumption[:, idx], vacant)
        elif ltype == "new_freezer":
            fr = loads.cycling_kw(n_steps, m, power_kw=rng.uniform(0.08, 0.15, m),
                                  duty=rng.uniform(0.3, 0.5, m), mean_on_min=rng.uniform(15, 40, m),
                                  step_hours=STEP_H, rng=rng)
            consumption[:, idx] += fr * after
        elif ltype == "night_storage_heating":
            consumption[:, idx] += np.where(after & (hour < 7)[:, None], 3.0, 0.0)
        elif ltype == "ev_charging":
            on_day = rng.random((n_days, m)) < 0.7
            consumption[:, idx] += np.where(after & on_day[day] & ((hour >= 19) & (hour < 23))[:, None],
                                            7.0, 0.0)
        elif ltype == "growing_household":
            consumption[:, idx] *= np.where(after, rng.uniform(1.5, 2.0, m)[None, :], 1.0)
        kind[idx] = ltype
        onset[idx] = d

    # Existing heat pumps among the untouched homes widen the spread of floors.
    hp_homes = _pick(rng, free & ~pv, int(round(0.03 * n)))
    consumption[:, hp_homes] += loads.heat_pump_kw(
        temp_col, hour, rated_kw=rng.uniform(1.0, 2.5, len(hp_homes)),
        heat_loss_kw_per_k=rng.uniform(0.25, 0.5, len(hp_homes)), rng=rng, step_hours=STEP_H)
    kind[hp_homes] = "heat_pump_existing"
    kind[free & pv & (kind == "untouched")] = "pv_home"

    imp, exp = loads.import_export_kw(consumption, generation)
    kwh_import = np.round(imp * STEP_H, 3)
    kwh_export = np.round(exp * STEP_H, 3)

    ids = np.array([f"hh{m + 1:03d}" for m in range(n)])
    hourly = rng.random(n) < 0.2
    out.mkdir(parents=True, exist_ok=True)
    tx = np.array([f"T{m // 18:03d}" for m in rng.permutation(n)])
    pd.DataFrame({"meter_id": ids, "transformer_id": tx, "customer_class": "residential",
                  "region": "scotland", "tariff_per_kwh": 0.28, "lat": LAT, "lon": LON}
                 ).to_csv(out / "meters.csv", index=False)
    weather = pd.DataFrame({"region": "scotland",
                            "timestamp": hourly_temp.index.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "temperature_c": hourly_temp.round(1).to_numpy()})
    weather.to_csv(out / "weather.csv", index=False)

    stamps = local[keep].strftime("%Y-%m-%dT%H:%M:%S%z")
    stamps = np.array([s[:-2] + ":" + s[-2:] for s in stamps], dtype=object)
    rows = []
    kept = np.flatnonzero(keep)
    gap = rng.random(n) < 0.05
    gap_start = rng.integers(0, n_steps - 6 * 48, n)
    gap_len = rng.integers(6, 3 * 48, n)
    for half, sel in ((True, ~hourly), (False, hourly)):  # two interval lengths
        cols = np.flatnonzero(sel)
        if half:
            e_imp, e_exp = kwh_import[kept][:, cols], kwh_export[kept][:, cols]
            st = stamps
            pos = kept
        else:
            pair = kept[(kept % 2 == 0) & np.isin(kept + 1, kept)]
            e_imp = kwh_import[pair][:, cols] + kwh_import[pair + 1][:, cols]
            e_exp = kwh_export[pair][:, cols] + kwh_export[pair + 1][:, cols]
            st = stamps[np.searchsorted(kept, pair)]
            pos = pair
        ok = ~(gap[cols][None, :] & (pos[:, None] >= gap_start[cols][None, :])
               & (pos[:, None] < (gap_start + gap_len)[cols][None, :]))
        r, c = np.nonzero(ok.T)  # meter-major
        exp_values = e_exp.T[r, c]
        exp_text = np.where(import_only[cols][r] | ~pv[cols][r], "", np.char.mod("%.3f", exp_values))
        rows.append(pa.table({
            "meter_id": pa.array(ids[cols][r]),
            "timestamp": pa.array(st[c]),
            "kwh": pa.array(np.round(e_imp.T[r, c], 3)),
            "kwh_export": pa.array(exp_text.astype(object)),
        }))
    table = pa.concat_tables(rows)
    pacsv.write_csv(table, out / "readings.csv")

    for m in range(n):
        labels[ids[m]] = {
            "type": str(kind[m]), "rig_type": rig_type[m],
            "rig_kw": None if np.isnan(rig_kw[m]) else round(float(rig_kw[m]), 3),
            "onset": None if onset[m] < 0 else str((slots[0] + pd.Timedelta(days=int(onset[m]))).date()),
            "transformer_id": str(tx[m]), "pv": bool(pv[m]), "hourly": bool(hourly[m]),
        }
    doc = {"as_of": "2022-05-31", "timezone": TIMEZONE, "seed": seed, "n_meters": int(n),
           "days": n_days, "meters": labels, "transformers": {}}
    (out / "labels.json").write_text(json.dumps(doc, indent=1))
    return doc


def per_type_table(flags: pd.DataFrame, rule: pd.Series, labels: dict) -> pd.DataFrame:
    """Flag rate of GridWatch and of the rule per rig type and per look-alike type."""
    lab = pd.DataFrame.from_dict(labels["meters"], orient="index")
    flagged = flags.set_index("meter_id")["flagged"].astype(str).eq("true").reindex(lab.index,
                                                                                    fill_value=False)
    group = np.where(lab["rig_type"].notna(), "rig: " + lab["rig_type"].astype(str), lab["type"])
    frame = pd.DataFrame({"group": group, "gridwatch": flagged.to_numpy(),
                          "rule": rule.reindex(lab.index, fill_value=False).to_numpy()})
    return frame.groupby("group").agg(n=("gridwatch", "size"), gridwatch=("gridwatch", "sum"),
                                      rule=("rule", "sum"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="/tmp/field")
    parser.add_argument("--reuse", action="store_true", help="reuse datasets already built")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    from gridwatch.config import config_from_dict
    from gridwatch.evaluation import evaluate, format_evaluation
    from gridwatch.pipeline import run
    from gridwatch.rules import hourly_import_kw, peer_multiple_rule

    tables = []
    for seed in args.seeds:
        data = Path(args.out) / f"data_seed{seed}"
        if args.reuse and (data / "labels.json").exists():
            labels = json.loads((data / "labels.json").read_text())
        else:
            labels = build(data, seed)
        config = config_from_dict({"data": {"timezone": TIMEZONE}, "cases": {"enabled": False},
                                   "report": {"enabled": not args.no_report}})
        t0 = time.perf_counter()
        result = run(data, Path(args.out) / f"out_seed{seed}", config=config)
        elapsed = time.perf_counter() - t0
        rule = peer_multiple_rule(hourly_import_kw(data), pd.read_csv(data / "meters.csv"),
                                  timezone=TIMEZONE)["flagged"]
        metrics = evaluate(result.flags, labels)
        print(f"\n=== seed {seed}: {len(labels['meters'])} homes, run {elapsed:.1f} s, "
              f"report {result.paths.get('report')}")
        print(format_evaluation(metrics))
        table = per_type_table(result.flags, rule, labels)
        print(table.to_string())
        lab = labels["meters"]
        flags = result.flags.set_index("meter_id")
        missed = [m for m in rule.index[rule] if lab[m]["rig_type"] and flags.loc[m, "flagged"] != "true"
                  and flags.loc[m, "flagged"] is not True]
        for m in missed:
            print(f"  BUG rule finds, GridWatch misses: {m} {lab[m]['rig_type']} {lab[m]['rig_kw']} kW "
                  f"rank {flags.loc[m, 'rank']} score {flags.loc[m, 'score']}: {flags.loc[m, 'reasons']}")
        fa = [m for m in flags.index[flags["flagged"].astype(str).eq("true")]
              if not lab[m]["rig_type"]]
        for m in fa:
            print(f"  false alarm: {m} {lab[m]['type']} rank {flags.loc[m, 'rank']} "
                  f"{flags.loc[m, 'excess_kw']} kW: {flags.loc[m, 'reasons']}")
        tables.append(table)
    total = sum(tables[1:], tables[0]) if len(tables) > 1 else tables[0]
    print(f"\n=== all seeds ({len(args.seeds)})")
    print(total.to_string())


if __name__ == "__main__":
    main()
