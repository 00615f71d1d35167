"""The energy balance in the field (issue 13) on REAL households, beside a spreadsheet rule.

Run: ``.venv/bin/python bench/realdata_network.py [--seeds 0 1] [--out /tmp/realnet]
[--use-inferred-topology] [--report] [--reuse]``

What it measures
----------------
Whether GridWatch finds energy delivered by a transformer but not metered
below it (hidden loads: bypassed meters, rigs on their own line) on real
household load, names the culprit, and keeps metering faults and mapping
errors apart from theft, on a network a utility would hand over:

* the 622 EDRP homes, re-dated and exported as :mod:`realdata_field` does
  (2022-03-01..05-31, local wall time in Europe/London, the real UK
  temperature of that spring, a fifth of the meters hourly, 5 % with a gap
  of up to three days, rooftop PV on about 20 % of the homes with import and
  export registers, a quarter of them import-only), grouped at random into
  transformers of 12-30 homes, 3-5 transformers per feeder, up to 4 feeders
  per substation;
* ``upstream`` per transformer every 15 minutes (each half hour split evenly
  in two): the homes' TRUE net demand (hidden loads included, PV export
  counted negative, so a sunny midday may be reverse flow), no-load losses
  (0.5-2 % of the mean flow), load losses (``k * load**2``, 0.5-2 % at the
  mean), a static CT error of +-0.5 % and 0.3 % noise, as
  :func:`gridwatch.simulate.simulate_dataset` does;
* hidden loads on 25 % of the transformers, one culprit each (a home without
  PV), a third of each kind: ``whole_house`` (the meter keeps 1-3 % of the
  house from the onset; the house and a 1-4 kW rig are delivered upstream),
  ``partial`` (the meter keeps 40-60 %), ``separate_line`` (a 1-4 kW rig, the
  meter untouched); onsets 25-85 % into the 92 days;
* metering faults, never on a hidden-load transformer: CT ratio changes on
  6 % of the transformers (x1.04-1.12 in 70 %, x0.88-0.96 otherwise, from
  one 15-minute step on), clock offsets on 6 % (the whole upstream series
  stamped -2, -1, +1 or +2 h off, rows pushed out of the window dropped);
  a 72 h SCADA outage on 3 % of the others; 5 % of the meters listed in
  ``meters.csv`` under another transformer of their feeder (a third of them
  in swaps, never a culprit).

``labels.json`` has the simulator's format (``gridwatch.simulate._labels``
and ``_add_network_fault_labels``), so ``gridwatch evaluate OUT labels.json``
scores the run. For every seed the script runs ``gridwatch run`` (and, with
``--use-inferred-topology``, again with ``[balance] use_inferred_topology =
true``), ``gridwatch evaluate --json``, and the utility's spreadsheet
energy balance on the same files: a transformer is flagged when its daily
mean ``delivered - metered`` over the last 14 days of the window exceeds its
first 14 days' by at least 1 kW, or its mean residual over the window
exceeds 5 % of its mean delivered energy (days with under 90 % of the
upstream rows left out); its suspects are the listed meters whose mean
demand fell most between those fortnights. Both are scored by
:func:`gridwatch.evaluation.evaluate_transformers`, and the script prints
the transformer-level lines side by side with the ratio ours / rule.

Data
----
EDRP (Energy Demand Research Project, UK, Ofgem / suppliers 2007-2010): 622
households in central Scotland, half-hourly, March-May 2009, as prepared by
the R package ``phovafer`` (``/work/shared/realdata/edrp_scotland_622hh``,
see its SOURCE.md). Redistribution terms are unclear: internal evaluation
only. The files are read at bench time and never copied into the project;
the datasets written under ``--out`` contain the real load and must not
be published. Everything injected (network, PV, loads, faults) is simulated.
A seed takes about a minute to build and a few minutes to run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from realdata_field import EDRP, LAT, LON, STEP_H, TIMEZONE, _temperature, _time_axis

from gridwatch import loads
from gridwatch.evaluation import evaluate_transformers

AS_OF = "2022-05-31"
N_DAYS = 92
HISTORY_DAYS = 90  # gridwatch's analysis.history_days default: the window the rule uses too
QUARTER_H = 0.25  # upstream step [h]
TX_SIZE = (12, 30)  # homes per transformer
FEEDER_SIZE = (3, 5)  # transformers per feeder
FEEDERS_PER_SUBSTATION = 4
PV_SHARE = 0.20
IMPORT_ONLY_SHARE = 0.25  # of the PV homes
HIDDEN_SHARE = 0.25  # of transformers
BYPASS_KINDS = ("separate_line", "whole_house", "partial")  # as gridwatch.simulate
RIG_KW = (1.0, 4.0)
WHOLE_KEPT = (0.01, 0.03)  # share of the house a whole-house bypass meter still records
PARTIAL_KEPT = (0.4, 0.6)
CT_SHARE, CLOCK_SHARE, OUTAGE_SHARE, MISMAP_SHARE = 0.06, 0.06, 0.03, 0.05
CT_UP, CT_DOWN, CT_UP_P = (1.04, 1.12), (0.88, 0.96), 0.7
CLOCK_HOURS, CLOCK_P = (-2, -1, 1, 2), (0.15, 0.35, 0.35, 0.15)
OUTAGE_HOURS = 72
SWAP_SHARE = 1 / 3
RULE_DAYS, RULE_STEP_KW, RULE_SHARE = 14, 1.0, 0.05  # the spreadsheet rule


# --- the network ------------------------------------------------------------------------
def _partition(rng, total, lo, hi):
    """Sizes lo..hi (inclusive) that add up to ``total`` (>= lo)."""
    sizes = []
    while total > hi:
        s = int(rng.integers(lo, hi + 1))
        if total - s < lo:
            s = total - lo
        sizes.append(s)
        total -= s
    return [*sizes, total]


def _network(rng, n):
    """True transformer of each home and the feeder, substation and position of each transformer."""
    order = rng.permutation(n)
    sizes = _partition(rng, n, *TX_SIZE)
    tx = np.empty(n, dtype=np.int64)
    tx[order] = np.repeat(np.arange(len(sizes)), sizes)
    feeder_sizes = _partition(rng, len(sizes), *FEEDER_SIZE)
    feeder_of_tx = np.repeat(np.arange(len(feeder_sizes)), feeder_sizes)
    substation_of_feeder = np.arange(len(feeder_sizes)) // FEEDERS_PER_SUBSTATION
    # Central Scotland: feeders within +-0.25 deg lat / +-0.4 deg lon, transformers ~1 km apart.
    f_lat = LAT + rng.uniform(-0.25, 0.25, len(feeder_sizes))
    f_lon = LON + rng.uniform(-0.4, 0.4, len(feeder_sizes))
    t_lat = f_lat[feeder_of_tx] + rng.normal(0, 0.01, len(sizes))
    t_lon = f_lon[feeder_of_tx] + rng.normal(0, 0.015, len(sizes))
    return {
        "tx": tx, "n_tx": len(sizes), "feeder_of_tx": feeder_of_tx,
        "tx_ids": np.array([f"T{t + 1:03d}" for t in range(len(sizes))]),
        "feeder_ids": np.array([f"F{f + 1:02d}" for f in range(len(feeder_sizes))]),
        "substation_ids": np.array([f"S{s + 1}" for s in substation_of_feeder]),
        "lat": t_lat[tx] + rng.normal(0, 0.001, n), "lon": t_lon[tx] + rng.normal(0, 0.0015, n),
    }


def _count(share, n, n_eligible):
    """About ``share`` of ``n`` (at least 1 from 10 on), as gridwatch.simulate counts faults."""
    k = int(math.floor(share * n + 0.5))
    return min(max(k, 1) if n >= 10 else k, n_eligible)


def _mismaps(rng, net, culprit):
    """Listed transformer of each meter and its swap partner (-1): another of its feeder."""
    tx, feeder_of_tx = net["tx"], net["feeder_of_tx"]
    feeder = feeder_of_tx[tx]
    listed, swap_with = tx.copy(), np.full(len(tx), -1)
    free = ~culprit & (np.bincount(feeder_of_tx)[feeder] >= 2)
    n_mis = min(int(math.floor(MISMAP_SHARE * len(tx) + 0.5)), int(free.sum()))
    n_pairs = int(math.floor(SWAP_SHARE * n_mis / 2 + 0.5))
    pairs = 0
    for a in rng.permutation(np.flatnonzero(free)):  # stops after a handful of pairs
        if pairs == n_pairs:
            break
        if not free[a]:
            continue
        cand = np.flatnonzero(free & (feeder == feeder[a]) & (tx != tx[a]))
        if not len(cand):
            continue
        b = int(rng.choice(cand))
        listed[a], listed[b], swap_with[a], swap_with[b] = tx[b], tx[a], b, a
        free[[a, b]] = False
        pairs += 1
    movers = rng.choice(np.flatnonzero(free), size=n_mis - 2 * pairs, replace=False)
    for m in movers:  # ~20 meters
        others = np.flatnonzero((feeder_of_tx == feeder[m]) & (np.arange(net["n_tx"]) != tx[m]))
        listed[m] = int(rng.choice(others))
    return listed, swap_with


# --- files --------------------------------------------------------------------------------
def _write_readings(out, ids, kwh_import, kwh_export, export_read, local, keep, rng):
    """readings.csv as bench/realdata_field.py writes it: local offsets, a fifth hourly, gaps."""
    n_steps, n = kwh_import.shape
    hourly = rng.random(n) < 0.2
    stamps = local[keep].strftime("%Y-%m-%dT%H:%M:%S%z")
    stamps = np.array([s[:-2] + ":" + s[-2:] for s in stamps], dtype=object)
    kept = np.flatnonzero(keep)
    gap = rng.random(n) < 0.05
    gap_start = rng.integers(0, n_steps - 6 * 48, n)
    gap_len = rng.integers(6, 3 * 48, n)
    rows = []
    for half, sel in ((True, ~hourly), (False, hourly)):  # two interval lengths
        cols = np.flatnonzero(sel)
        if half:
            e_imp, e_exp, st, pos = kwh_import[kept][:, cols], kwh_export[kept][:, cols], stamps, kept
        else:
            pair = kept[(kept % 2 == 0) & np.isin(kept + 1, kept)]
            e_imp = kwh_import[pair][:, cols] + kwh_import[pair + 1][:, cols]
            e_exp = kwh_export[pair][:, cols] + kwh_export[pair + 1][:, cols]
            st, pos = stamps[np.searchsorted(kept, pair)], pair
        ok = ~(gap[cols][None, :] & (pos[:, None] >= gap_start[cols][None, :])
               & (pos[:, None] < (gap_start + gap_len)[cols][None, :]))
        r, c = np.nonzero(ok.T)  # meter-major
        exp_text = np.where(export_read[cols][r], np.char.mod("%.3f", e_exp.T[r, c]), "")
        rows.append(pa.table({
            "meter_id": pa.array(ids[cols][r]), "timestamp": pa.array(st[c]),
            "kwh": pa.array(np.round(e_imp.T[r, c], 3)),
            "kwh_export": pa.array(exp_text.astype(object)),
        }))
    pacsv.write_csv(pa.concat_tables(rows), out / "readings.csv")
    return hourly


def _upstream(rng, net_kw):
    """Delivered energy per 15-min step [kWh] from the homes' true net demand [kW] per step."""
    n_tx = net_kw.shape[1]
    mean_kw = np.maximum(np.abs(net_kw).mean(axis=0), 1e-3)
    no_load_kw = rng.uniform(0.005, 0.02, n_tx) * mean_kw
    k_per_kw = rng.uniform(0.005, 0.02, n_tx) / mean_kw  # load losses 0.5-2 % at the mean flow
    ct_error = rng.uniform(-0.005, 0.005, n_tx)
    delivered = (net_kw + no_load_kw + k_per_kw * net_kw ** 2) * (1 + ct_error)
    delivered += 0.003 * mean_kw * rng.standard_normal(delivered.shape)
    return delivered * QUARTER_H


def build(out: Path, seed: int) -> dict:
    """Write meters, readings, upstream, weather and labels.json into ``out``; return the labels."""
    rng = np.random.default_rng([13, seed])
    wide = pd.read_csv(EDRP, index_col="timestamp")
    consumption = wide.to_numpy(dtype=np.float64) * 2.0  # kWh per half hour -> kW
    n_steps, n = consumption.shape
    slots, local, keep = _time_axis()
    kept = np.flatnonzero(keep)
    utc = local[keep].tz_convert("UTC")
    hourly_temp, temp_kept = _temperature(utc)
    temp_col = np.interp(np.arange(n_steps), kept, temp_kept)[:, None]
    day = np.asarray((slots - slots[0]).days)
    doy = np.asarray(slots.day_of_year)
    # Solar time from the true UTC instant (the DST gap's two slots take wall time as GMT).
    utc_hour = np.asarray(slots.hour + slots.minute / 60.0, dtype=np.float64)
    utc_hour[kept] = np.asarray(utc.hour + utc.minute / 60.0)
    solar_hour = (utc_hour + LON / 15.0) % 24

    net = _network(rng, n)
    tx, n_tx = net["tx"], net["n_tx"]

    # Rooftop PV on ~20 % of the homes, a quarter of them read import-only.
    pv = rng.random(n) < PV_SHARE
    kwp = rng.uniform(2.0, 5.0, n)
    generation = np.zeros_like(consumption)
    generation[:, pv] = loads.pv_kw(kwp[pv], lat_deg=net["lat"][pv], day_of_year=doy,
                                    solar_hour=solar_hour, day=day, rng=rng)
    import_only = pv & (rng.random(n) < IMPORT_ONLY_SHARE)

    # Hidden loads: one culprit (without PV) on 25 % of the transformers.
    n_hidden = _count(HIDDEN_SHARE, n_tx, n_tx)
    hidden_tx = rng.choice(n_tx, size=n_hidden, replace=False)
    culprits = np.array([rng.choice(np.flatnonzero((tx == t) & ~pv)) for t in hidden_tx])
    kind = rng.permutation(np.resize(np.arange(len(BYPASS_KINDS)), n_hidden))
    rig_kw = np.round(rng.uniform(*RIG_KW, n_hidden), 2)
    onset_day = rng.integers(int(0.25 * N_DAYS), int(0.85 * N_DAYS), n_hidden)
    onset_step = onset_day * 48 + rng.integers(16, 44, n_hidden)  # 08:00-21:30 local
    after = np.arange(n_steps)[:, None] >= onset_step[None, :]
    rig = loads.rig_kw(rig_kw, after, temperature_c=temp_col, rng=rng, step_hours=STEP_H)
    kept_share = np.select([kind == 1, kind == 2],
                           [rng.uniform(*WHOLE_KEPT, n_hidden), rng.uniform(*PARTIAL_KEPT, n_hidden)],
                           1.0)
    diverted = consumption[:, culprits] * (1.0 - kept_share)[None, :] * after
    recent = np.maximum(onset_step, (N_DAYS - 7) * 48)  # the simulator's diverted_kw: last 7 days
    last = np.arange(n_steps)[:, None] >= recent[None, :]
    diverted_kw = (diverted * last).sum(axis=0) / last.sum(axis=0)

    metered = consumption.copy()
    metered[:, culprits] -= diverted
    true_net = consumption - generation
    true_net[:, culprits] += rig

    # What the meters record (net of PV: import and export registers).
    imp, exp = loads.import_export_kw(metered, generation)
    ids = np.array([f"hh{m + 1:03d}" for m in range(n)])
    out.mkdir(parents=True, exist_ok=True)
    hourly = _write_readings(out, ids, np.round(imp * STEP_H, 3), np.round(exp * STEP_H, 3),
                             pv & ~import_only, local, keep, rng)

    # Metering faults (never on a hidden-load transformer) and mapping errors.
    eligible = rng.permutation(np.setdiff1d(np.arange(n_tx), hidden_tx))
    n_ct = _count(CT_SHARE, n_tx, len(eligible))
    n_clock = _count(CLOCK_SHARE, n_tx, len(eligible) - n_ct)
    ct_tx, clock_tx = eligible[:n_ct], eligible[n_ct:n_ct + n_clock]
    others = np.setdiff1d(np.arange(n_tx), np.r_[ct_tx, clock_tx])
    outage_tx = rng.choice(others, size=_count(OUTAGE_SHARE, n_tx, len(others)), replace=False)
    culprit_mask = np.zeros(n, dtype=bool)
    culprit_mask[culprits] = True
    listed, swap_with = _mismaps(rng, net, culprit_mask)

    # Upstream: 15-min steps on the true time axis (each half hour split in two).
    tx_net = np.zeros((len(kept), n_tx))
    for t in range(n_tx):  # ~30 transformers
        tx_net[:, t] = true_net[kept][:, tx == t].sum(axis=1)
    energy = _upstream(rng, np.repeat(tx_net, 2, axis=0))
    q_utc = (utc.repeat(2) + pd.to_timedelta(np.tile([0, 15], len(kept)), unit="min"))
    q_day = np.repeat(day[kept], 2)
    n_q = len(q_utc)
    q_local = q_utc.tz_convert(TIMEZONE)
    faults = {t: None for t in range(n_tx)}
    for t in ct_tx:
        d = int(rng.integers(int(0.25 * N_DAYS), int(0.85 * N_DAYS)))
        start = int(np.flatnonzero(q_day == d)[rng.integers(0, (q_day == d).sum())])
        factor = round(float(rng.uniform(*CT_UP) if rng.random() < CT_UP_P
                             else rng.uniform(*CT_DOWN)), 4)
        energy[start:, t] *= factor
        faults[t] = {"kind": "ct_ratio", "factor": factor,
                     "start": q_local[start].strftime("%Y-%m-%dT%H:%M"),
                     "date": str(q_local[start].date())}
    shift = np.zeros(n_tx, dtype=np.int64)
    shift[clock_tx] = rng.choice(CLOCK_HOURS, size=n_clock, p=CLOCK_P)
    for t in clock_tx:
        faults[t] = {"kind": "clock_offset", "hours": int(shift[t])}
    outages = {}
    length = OUTAGE_HOURS * 4
    latest = int(np.flatnonzero(q_day == N_DAYS - 3)[0]) - length
    for t in outage_tx:
        start = int(rng.integers(0, latest + 1))
        outages[t] = (start, {"start": q_local[start].strftime("%Y-%m-%dT%H:%M"),
                              "hours": OUTAGE_HOURS})
    frames, removed = [], {"scada_outage_rows": 0, "clock_offset_dropped_rows": 0}
    first, last_stamp = q_utc[0], q_utc[-1]
    for t in range(n_tx):
        ok = np.ones(n_q, dtype=bool)
        if t in outages:
            ok[outages[t][0]:outages[t][0] + length] = False
            removed["scada_outage_rows"] += int((~ok).sum())
        stamp = q_utc + pd.Timedelta(hours=int(shift[t]))  # energy of true t written at t + h
        inside = (stamp >= first) & (stamp <= last_stamp)
        removed["clock_offset_dropped_rows"] += int((ok & ~inside).sum())
        ok &= inside
        frames.append(pd.DataFrame({"asset_id": net["tx_ids"][t],
                                    "timestamp": stamp[ok].strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "kwh": np.round(energy[ok, t], 3)}))
    pd.concat(frames).to_csv(out / "upstream.csv", index=False)

    pd.DataFrame({
        "meter_id": ids, "transformer_id": net["tx_ids"][listed],
        "feeder_id": net["feeder_ids"][net["feeder_of_tx"][tx]],
        "substation_id": net["substation_ids"][net["feeder_of_tx"][tx]],
        "customer_class": "residential", "region": "scotland", "tariff_per_kwh": 0.28,
        "lat": net["lat"].round(5), "lon": net["lon"].round(5),
    }).to_csv(out / "meters.csv", index=False)
    pd.DataFrame({"region": "scotland",
                  "timestamp": hourly_temp.index.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "temperature_c": hourly_temp.round(1).to_numpy()}).to_csv(out / "weather.csv",
                                                                             index=False)

    # Labels in the simulator's format (gridwatch.simulate._labels, _add_network_fault_labels).
    def date(d):
        return str((slots[0] + pd.Timedelta(days=int(d))).date())

    which = {int(c): j for j, c in enumerate(culprits)}
    meters = {}
    for m in range(n):  # one dict entry per meter
        j = which.get(m)
        meters[str(ids[m])] = {
            "type": "bypass" if j is not None else ("pv_home" if pv[m] else "normal"),
            "onset": date(onset_day[j]) if j is not None else None,
            "rig_kw": float(rig_kw[j]) if j is not None else None,
            "transformer_id": str(net["tx_ids"][tx[m]]),
            "bypass_kind": BYPASS_KINDS[kind[j]] if j is not None else None,
            "diverted_kw": round(float(diverted_kw[j]), 3) if j is not None else None,
            "rig_type": None, "end": None,
            "pv_kwp": round(float(kwp[m]), 2) if pv[m] else None,
            "export_register": bool(not import_only[m]) if pv[m] else None,
            "hourly": bool(hourly[m]),
            "listed_transformer_id": str(net["tx_ids"][listed[m]]),
            "mismapped": bool(listed[m] != tx[m]),
            "swap": bool(swap_with[m] >= 0),
            "swap_with": str(ids[swap_with[m]]) if swap_with[m] >= 0 else None,
        }
    transformers = {}
    for t in range(n_tx):
        entry = {"hidden_kw": None, "onset": None, "culprit": None, "bypass_kind": None}
        hit = np.flatnonzero(hidden_tx == t)
        if len(hit):
            j = int(hit[0])
            entry = {"hidden_kw": round(float(rig_kw[j] + diverted_kw[j]), 3),
                     "onset": date(onset_day[j]), "culprit": str(ids[culprits[j]]),
                     "bypass_kind": BYPASS_KINDS[kind[j]]}
        entry.update({"metering_fault": faults[t],
                      "scada_outage": outages[t][1] if t in outages else None,
                      "feeder_id": str(net["feeder_ids"][net["feeder_of_tx"][t]]),
                      "n_meters": int((tx == t).sum())})
        transformers[str(net["tx_ids"][t])] = entry
    n_swapped = int((swap_with >= 0).sum())
    doc = {
        "as_of": AS_OF, "timezone": TIMEZONE, "seed": seed, "n_meters": int(n), "days": N_DAYS,
        "source": "EDRP 622 households, central Scotland, spring 2009 (internal evaluation only)",
        "meters": meters, "transformers": transformers,
        "network_faults": {"ct_ratio": n_ct, "clock_offset": n_clock,
                           "scada_outage": len(outages), "mismapped": int((listed != tx).sum()),
                           "swapped": n_swapped, "swap_pairs": n_swapped // 2,
                           "mismap_share": MISMAP_SHARE, **removed},
    }
    (out / "labels.json").write_text(json.dumps(doc, indent=1))
    return doc


# --- the spreadsheet rule -------------------------------------------------------------------
def _local_day(stamps: pd.Series) -> pd.Series:
    return pd.to_datetime(stamps, format="ISO8601", utc=True).dt.tz_convert(TIMEZONE).dt.date


def baseline_rule(data: Path) -> pd.DataFrame:
    """The spreadsheet energy balance on the files as written, as a ``transformers.csv`` frame.

    Daily mean ``delivered - metered`` [kW] per listed transformer (metered:
    ``kwh - kwh_export`` summed over the meters ``meters.csv`` lists under it;
    days with under 90 % of the asset's usual upstream rows left out). Flagged
    when the mean over the last 14 days of the window exceeds that of the
    first 14 by >= 1 kW, or the window's mean residual exceeds 5 % of its mean
    delivered. Suspects: listed meters whose mean demand fell most between
    the two fortnights (up to 3, falls only).
    """
    meters = pd.read_csv(data / "meters.csv", dtype=str)
    listed = meters.set_index("meter_id")["transformer_id"]
    r = pd.read_csv(data / "readings.csv", dtype={"meter_id": str})
    r["day"] = r["timestamp"].str.slice(0, 10)  # written in local time with its offset
    r["net"] = r["kwh"] - r["kwh_export"].fillna(0.0)
    per_meter = r.groupby(["meter_id", "day"])["net"].sum().unstack()
    u = pd.read_csv(data / "upstream.csv", dtype={"asset_id": str})
    u["day"] = _local_day(u["timestamp"]).astype(str)
    g = u.groupby(["asset_id", "day"])["kwh"]
    delivered, rows = g.sum().unstack(), g.size().unstack()
    days = pd.date_range(end=AS_OF, periods=HISTORY_DAYS, freq="D")
    names = days.strftime("%Y-%m-%d")
    midnights = pd.date_range(days[0], periods=HISTORY_DAYS + 1, freq="D", tz=TIMEZONE)
    hours = pd.Series((midnights[1:] - midnights[:-1]).total_seconds().to_numpy() / 3600.0,
                      index=names)  # 23 h on the DST day
    per_meter = per_meter.reindex(columns=names)
    delivered = delivered.reindex(columns=names)
    full = rows.reindex(columns=names).ge(0.9 * rows.reindex(columns=names).median(axis=1),
                                          axis=0)
    metered = per_meter.groupby(listed.reindex(per_meter.index)).sum(min_count=1)
    assets = delivered.index
    resid_kw = (delivered - metered.reindex(assets)).where(full.reindex(assets, fill_value=False))
    resid_kw = resid_kw.div(hours, axis=1)
    first, last = names[:RULE_DAYS], names[-RULE_DAYS:]
    step_kw = resid_kw[last].mean(axis=1) - resid_kw[first].mean(axis=1)
    delivered_kw = delivered.where(full.reindex(assets, fill_value=False)).div(hours, axis=1)
    share = resid_kw.mean(axis=1) / delivered_kw.mean(axis=1)
    flagged = (step_kw >= RULE_STEP_KW) | (share > RULE_SHARE)
    fall_kw = (per_meter[first].mean(axis=1) - per_meter[last].mean(axis=1)) / 24.0
    suspects = {}
    for asset in assets:  # ~30 transformers
        falls = fall_kw[listed.index[listed == asset]].dropna()
        suspects[asset] = ";".join(falls[falls > 0].sort_values(ascending=False).index[:3])
    return pd.DataFrame({"asset_id": assets, "flagged": flagged.to_numpy(),
                         "kind": np.where(flagged, "hidden_load", ""),
                         "unexplained_kw": step_kw.round(3).to_numpy(), "onset": "",
                         "suspects": [suspects[a] if f else "" for a, f in
                                      zip(assets, flagged, strict=True)],
                         "step_kw": step_kw.to_numpy(), "residual_share": share.to_numpy()})


# --- running and printing ----------------------------------------------------------------------
def _gridwatch():
    exe = Path(sys.executable).with_name("gridwatch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gridwatch"]


def _run(data: Path, out: Path, *, inferred: bool, report: bool) -> tuple[dict, float]:
    """``gridwatch run`` then ``gridwatch evaluate --json``; the metrics and the run's wall time."""
    cfg = data / ("gridwatch_inferred.toml" if inferred else "gridwatch.toml")
    cfg.write_text(f'[data]\ntimezone = "{TIMEZONE}"\n\n[report]\nenabled = {str(report).lower()}'
                   f"\n\n[cases]\nenabled = false\n\n[balance]\n"
                   f"use_inferred_topology = {str(inferred).lower()}\n")
    t0 = time.perf_counter()
    subprocess.run([*_gridwatch(), "run", "--input", str(data), "--output", str(out),
                    "--as-of", AS_OF, "--config", str(cfg), "--quiet"], check=True)
    elapsed = time.perf_counter() - t0
    done = subprocess.run([*_gridwatch(), "evaluate", "--json", str(out), str(data / "labels.json")],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout), elapsed


def _suspect_meters(out: Path, labels: dict) -> dict:
    """Meters flagged ``hidden_load_suspect``: culprits (of all culprits) and innocent ones."""
    flags = pd.read_csv(out / "flags.csv", dtype={"meter_id": str, "flagged": str})
    named = set(flags.loc[flags["flagged"].str.lower().eq("true")
                          & flags["kind"].eq("hidden_load_suspect"), "meter_id"])
    culprits = {v["culprit"] for v in labels["transformers"].values() if v["culprit"]}
    return {"culprit": (len(named & culprits), len(culprits)),
            "innocent": (len(named - culprits), len(labels["meters"]) - len(culprits))}


def _lines(t: dict, topology: dict | None, meters: dict | None = None) -> dict:
    """The transformer-level counts as (found, of) pairs, in print order."""
    k = t["by_kind"]

    def kind(name, key="detected", of="n_hidden"):
        v = k.get(name, {})
        return v.get(key, 0), v.get(of, 0)

    named = [kind(name, "n_culprit_in_top3", "detected") for name in ("whole_house", "partial")]
    fault = t.get("metering_faults") or {}
    lines = {
        "hidden loads found": (t["detected"], t["n_hidden"]),
        "  >= 1 kW": (t["detected_ge_1kw"], t["n_hidden_ge_1kw"]),
        "  whole_house": kind("whole_house"),
        "  partial": kind("partial"),
        "  separate_line": kind("separate_line"),
        "culprit in top 3 (whole + partial)": (sum(a for a, _ in named), sum(b for _, b in named)),
        "  separate_line (by chance)": kind("separate_line", "n_culprit_in_top3", "detected"),
        "clean transformers flagged": (t["false_alarms"], t["n_clean"]),
    }
    for key, label in (("ct_ratio", "CT ratio"), ("clock_offset", "clock offset")):
        v = fault.get(key, {"n": 0, "reported": 0, "flagged_hidden": 0})
        lines[f"{label}: as metering_fault"] = (v["reported"], v["n"])
        lines[f"{label}: as hidden load"] = (v["flagged_hidden"], v["n"])
    lines["clean reported as metering_fault"] = (fault.get("clean_reported", 0), t["n_clean"])
    for key, v in (t.get("false_alarms_by_group") or {}).items():
        lines[f"  clean, {key.replace('_', ' ')}"] = (v["false_alarms"], v["n"])
    if meters is not None:
        lines["culprit meter flagged hidden_load_suspect"] = meters["culprit"]
        lines["innocent meters flagged hidden_load_suspect"] = meters["innocent"]
    if topology is not None:
        lines["topology: likely = true transformer"] = (topology["found"], topology["n_mismapped"])
        lines["topology: correctly mapped, listed"] = (topology["false_listings"],
                                                        topology["n_correct"])
    return lines


#: Lines whose ratio ours / rule is printed (higher is better for the first three).
RATIO_LINES = ("hidden loads found", "  >= 1 kW", "culprit in top 3 (whole + partial)",
               "clean transformers flagged")


def _table(columns: dict[str, dict]) -> str:
    names = list(columns)
    keys = list(dict.fromkeys(k for c in columns.values() for k in c))
    head = f"{'':<40}" + "".join(f"{n:>16}" for n in names) + f"{'ours / rule':>14}"
    out = [head]
    for key in keys:
        row = f"{key:<40}"
        for n in names:
            v = columns[n].get(key)
            row += f"{'-':>16}" if v is None else f"{f'{v[0]}/{v[1]}':>16}"
        ours, rule = columns[names[0]].get(key), columns["rule"].get(key)
        if key in RATIO_LINES and ours and rule:
            ro = ours[0] / ours[1] if ours[1] else math.nan
            rr = rule[0] / rule[1] if rule[1] else math.nan
            row += f"{ro / rr:>14.2f}" if rr else f"{'inf' if ro else '-':>14}"
        out.append(row)
    return "\n".join(out)


def _add(total: dict, lines: dict) -> None:
    for key, (a, b) in lines.items():
        x, y = total.get(key, (0, 0))
        total[key] = (x + a, y + b)


def _quality(t: dict, label: str) -> str:
    err = t["unexplained_kw_median_rel_error"]
    first = t["culprit_first"]
    return (f"  {label}: unexplained kW median rel. error {'-' if err is None else f'{err:.2f}'}"
            f" (n={t['n_kw_scored']}), onset within 1 day {t['n_onset_within_1d']}/"
            f"{t['n_onset_scored']}, culprit first {'-' if first is None else f'{first:.2f}'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="/tmp/realnet")
    parser.add_argument("--use-inferred-topology", action="store_true",
                        help="also run with [balance] use_inferred_topology = true")
    parser.add_argument("--report", action="store_true", help="write report.html and plots")
    parser.add_argument("--reuse", action="store_true", help="reuse datasets already built")
    args = parser.parse_args()

    totals: dict[str, dict] = {}
    for seed in args.seeds:
        data = Path(args.out) / f"seed{seed}"
        t0 = time.perf_counter()
        if args.reuse and (data / "labels.json").exists():
            labels = json.loads((data / "labels.json").read_text())
        else:
            shutil.rmtree(data, ignore_errors=True)
            labels = build(data, seed)
        t_build = time.perf_counter() - t0
        columns, times = {}, {}
        metrics, times["ours"] = _run(data, data / "out", inferred=False, report=args.report)
        columns["ours"] = _lines(metrics["transformers"], metrics.get("topology"),
                                 _suspect_meters(data / "out", labels))
        quality = [_quality(metrics["transformers"], "ours")]
        if args.use_inferred_topology:
            m2, times["inferred"] = _run(data, data / "out_inferred", inferred=True,
                                         report=args.report)
            columns["ours, inferred"] = _lines(m2["transformers"], m2.get("topology"),
                                               _suspect_meters(data / "out_inferred", labels))
            quality.append(_quality(m2["transformers"], "ours, inferred"))
        t0 = time.perf_counter()
        rule = baseline_rule(data)
        times["rule"] = time.perf_counter() - t0
        rule.to_csv(data / "rule_transformers.csv", index=False)
        rt = evaluate_transformers(rule.drop(columns=["step_kw", "residual_share"]), labels)
        columns["rule"] = _lines(rt, None)
        quality.append(_quality(rt, "rule"))
        nf = labels["network_faults"]
        n_tx = len(labels["transformers"])
        print(f"\n=== seed {seed}: {labels['n_meters']} homes, {n_tx} transformers; "
              f"{sum(v['hidden_kw'] is not None for v in labels['transformers'].values())} hidden "
              f"loads, {nf['ct_ratio']} CT, {nf['clock_offset']} clock, {nf['scada_outage']} "
              f"outage, {nf['mismapped']} mismapped ({nf['swapped']} swapped); build "
              f"{t_build:.0f} s, " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
        print(_table(columns))
        print("\n".join(quality))
        for name, lines in columns.items():
            _add(totals.setdefault(name, {}), lines)
    if len(args.seeds) > 1:
        print(f"\n=== all seeds ({', '.join(map(str, args.seeds))})")
        print(_table(totals))


if __name__ == "__main__":
    main()
