"""Detection on REAL households (EDRP, 622 Scottish homes) with rigs and look-alikes injected here.

Run: ``.venv/bin/python bench/realdata_edrp.py [--seed 0] [--out /tmp/edrp_check]``

The data stay outside the repository (``../shared/realdata``; licence: internal
evaluation only). The script writes a contract dataset (meters.csv,
readings.parquet, labels.json) built from the real half-hourly demand of every
household, with, chosen at random:

* ``rig``: a steady 0.5-3.5 kW draw from a mid-window onset (a third of them
  curtailed 17:00-20:00, one in ten installed in two stages);
* look-alikes: ``storage`` heating (3 kW at night), ``ev`` charging (7 kW on
  most evenings), ``grow`` (the household's own shape x 1.8), ``holiday``
  (two weeks at a fifth of the usual demand);
* ``rig_preexisting``: a rig running the whole window;
* ``untouched``: the real household as recorded.

It runs GridWatch on it and prints recall, false alarms per kind, onset and
kW errors, and the untouched households that were flagged (look at their
plots in the report: they are real homes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
EDRP = HERE.parent.parent / "shared" / "realdata" / "edrp_scotland_622hh" / \
    "edrp_622hh_halfhourly_2009-03_2009-05.csv.gz"
SHARES = {"rig": 0.25, "storage": 0.04, "ev": 0.04, "grow": 0.04, "holiday": 0.04,
          "rig_preexisting": 0.01}


def build(path_in: Path, out: Path, seed: int) -> dict:
    """Write the dataset with injected loads; returns the labels."""
    wide = pd.read_csv(path_in, parse_dates=["timestamp"]).set_index("timestamp")
    kw = wide.to_numpy(dtype=np.float64) * 2.0  # kWh per half hour -> kW
    n_steps, n = kw.shape
    rng = np.random.default_rng(seed)
    ts = wide.index
    day = ((ts - ts[0]).days).to_numpy()
    hour = ts.hour.to_numpy()
    n_days = day.max() + 1
    kinds = np.full(n, "untouched", dtype=object)
    order = rng.permutation(n)
    start = 0
    for kind, share in SHARES.items():
        count = int(round(share * n))
        kinds[order[start:start + count]] = kind
        start += count
    labels = {}
    for m in range(n):
        kind = kinds[m]
        onset = int(rng.integers(25, n_days - 4)) if kind not in ("untouched",
                                                                    "rig_preexisting") else None
        step = None if onset is None else onset * 48 + int(rng.integers(16, 44))
        after = np.arange(n_steps) >= (step if step is not None else 0)
        rig_kw = None
        if kind in ("rig", "rig_preexisting"):
            rig_kw = float(rng.uniform(0.5, 3.5))
            load = rig_kw * (1 + 0.02 * rng.standard_normal(n_steps))
            if kind == "rig" and rng.random() < 0.1:  # two stages, a week apart
                load = np.where(np.arange(n_steps) < step + 7 * 48, 0.5 * load, load)
            if rng.random() < 1 / 3:
                load = load * ~((hour >= 17) & (hour < 20))
            kw[:, m] += np.where(after, load, 0.0)
        elif kind == "storage":
            kw[:, m] += np.where(after & (hour < 7), 3.0, 0.0)
        elif kind == "ev":
            on = rng.random(n_days) < 0.7
            kw[:, m] += np.where(after & on[day] & (hour >= 19) & (hour < 23), 7.0, 0.0)
        elif kind == "grow":
            kw[after, m] *= 1.8
        elif kind == "holiday":
            away = after & (np.arange(n_steps) < step + 14 * 48)
            kw[away, m] *= 0.2
        labels[f"hh{m + 1:03d}"] = {
            "type": kind, "rig_kw": rig_kw,
            "onset": None if onset is None or kind not in ("rig",) else str(ts[step].date()),
        }
    ids = np.array([f"hh{m + 1:03d}" for m in range(n)])
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"meter_id": ids, "transformer_id": [f"T{m // 20:03d}" for m in range(n)],
                  "customer_class": "residential", "region": "scotland",
                  "tariff_per_kwh": 0.3}).to_csv(out / "meters.csv", index=False)
    readings = pd.DataFrame({
        "meter_id": np.tile(ids, n_steps),
        "timestamp": np.repeat(ts.tz_localize("UTC"), n),
        "kwh": (kw / 2.0).ravel(),
    })
    readings.to_parquet(out / "readings.parquet", index=False)
    (out / "labels.json").write_text(json.dumps(labels, indent=1))
    return labels


def score(flags: pd.DataFrame, labels: dict) -> None:
    """Print recall, false alarms per kind, onset and kW errors."""
    table = flags.set_index("meter_id")
    kind = pd.Series({m: v["type"] for m, v in labels.items()})
    flagged = table["flagged"].astype(str).eq("true").reindex(kind.index, fill_value=False)
    print(f"{'kind':18s} {'flagged':>8s} {'of':>5s} {'rate':>6s}")
    for k in ["rig", "rig_preexisting", "untouched", "storage", "ev", "grow", "holiday"]:
        sel = kind == k
        print(f"{k:18s} {int(flagged[sel].sum()):8d} {int(sel.sum()):5d} "
              f"{flagged[sel].mean():6.3f}")
    rigs = [m for m, v in labels.items() if v["type"] == "rig" and flagged[m]]
    onset_err = [abs((pd.Timestamp(table.loc[m, "onset"]) - pd.Timestamp(labels[m]["onset"])).days)
                 for m in rigs if isinstance(table.loc[m, "onset"], str) and table.loc[m, "onset"]]
    kw_err = [abs(float(table.loc[m, "excess_kw"]) / labels[m]["rig_kw"] - 1) for m in rigs]
    if rigs:
        print(f"rig onset within 1 day: {np.mean(np.array(onset_err) <= 1):.3f} "
              f"(n={len(onset_err)}); median excess-kW rel. error {np.median(kw_err):.3f}")
    fa = [m for m in kind.index if kind[m] == "untouched" and flagged[m]]
    for m in fa:
        print(f"untouched but flagged: {m} {table.loc[m, 'excess_kw']:.2f} kW onset "
              f"{table.loc[m, 'onset'] or '-'}: {table.loc[m, 'reasons']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/edrp_check")
    parser.add_argument("--edrp", default=str(EDRP))
    args = parser.parse_args()
    from gridwatch.config import config_from_dict
    from gridwatch.pipeline import run

    data = Path(args.out) / f"data_seed{args.seed}"
    labels = build(Path(args.edrp), data, args.seed)
    config = config_from_dict({"data": {"timezone": "UTC"}, "cases": {"enabled": False}})
    result = run(data, Path(args.out) / f"out_seed{args.seed}", config=config)
    print(f"seed {args.seed}: {result.info['counts']['meters_analysed']} households analysed, "
          f"as of {result.as_of}; report: {result.paths.get('report')}")
    score(result.flags, labels)


if __name__ == "__main__":
    main()
