"""End-to-end speed and memory of GridWatch beside a per-meter statsmodels fit.

Run: ``.venv/bin/python bench/bench_core.py [--meters 10000] [--days 90]``

1. Writes (once, cached under bench/data/) a simulated dataset of N meters x
   D days, hourly, as Parquet.
2. Runs ``gridwatch run`` on it in a child process (CSV outputs; the report and plots
   are measured by bench_report.py) and reports readings per
   second and the child's peak memory (ru_maxrss).
3. Runs the obvious alternative in this process: one statsmodels OLS
   (hour-of-week dummies + heating degree-hours) per meter, on a sample of
   meters, and extrapolates to N meters.
4. Prints both and the ratio.

With ``--against DIR`` (the checkout of an earlier GridWatch, e.g. from
``git worktree add /tmp/before <commit>``) it also runs that version on the
same data, alternating with this one, and prints this version's time over
that one's: the check that a change made nothing slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def make_dataset(path: Path, n_meters: int, days: int, seed: int = 0) -> Path:
    from gridwatch.simulate import simulate_dataset

    marker = path / "labels.json"
    if not marker.exists():
        t0 = time.perf_counter()
        simulate_dataset(path, n_meters=n_meters, days=days, seed=seed, fmt="parquet",
                         interval_minutes=60, dirty=True)
        print(f"simulated {n_meters} meters x {days} days in {time.perf_counter() - t0:.1f} s")
    return path


def run_gridwatch(data: Path, out: Path, source: Path | None = None) -> dict:
    code = (
        "import resource, time, json, sys\n"
        "from gridwatch.pipeline import run\n"
        "from gridwatch.config import config_from_dict\n"
        "cfg = config_from_dict({'report': {'enabled': False}, 'cases': {'enabled': False}})\n"
        "t0 = time.perf_counter()\n"
        f"r = run({str(data)!r}, {str(out)!r}, config=cfg)\n"
        "elapsed = time.perf_counter() - t0\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'elapsed_s': elapsed, 'peak_mb': peak, "
        "'readings_used': r.info['counts']['readings']['used'], "
        "'readings_in': r.info['counts']['readings']['in'], "
        "'timings': r.info['timings_s'], 'flagged': r.info['counts']['meters_flagged']}))\n"
    )
    env = None
    if source is not None:  # another checkout of GridWatch, imported first
        import os

        env = {**os.environ, "PYTHONPATH": str(source)}
        code = f"import sys; sys.path.insert(0, {str(source)!r})\n" + code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env, cwd=None if source is None else str(source))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hourly_frames(data: Path, sample: int, seed: int = 0):
    """Hourly kW series (with HDD) of a random sample of meters, ready for per-meter fits."""
    import pyarrow.parquet as pq

    meters = pd.read_csv(data / "meters.csv", dtype=str)
    rng = np.random.default_rng(seed)
    chosen = list(rng.choice(meters["meter_id"], size=sample, replace=False))
    readings = pq.read_table(data / "readings.parquet",
                             filters=[("meter_id", "in", chosen)]).to_pandas()
    weather = pd.read_csv(data / "weather.csv")
    weather["timestamp"] = pd.to_datetime(weather["timestamp"], utc=True, format="ISO8601")
    temp = weather.groupby("timestamp")["temperature_c"].mean()
    frames = []
    for _meter_id, frame in readings.groupby("meter_id", observed=True):
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        hourly = frame.set_index(ts)["kwh"].resample("1h").sum(min_count=1).interpolate()
        df = pd.DataFrame({"kw": hourly})
        df["how"] = (df.index.day_of_week * 24 + df.index.hour).astype(str)
        df["hdd"] = np.maximum(15.5 - temp.reindex(df.index).interpolate().fillna(10).to_numpy(), 0)
        frames.append(df.dropna())
    return frames


def per_meter_ols(frames) -> float:
    """Seconds per meter: statsmodels OLS, hour-of-week dummies + heating degree-hours."""
    import statsmodels.formula.api as smf

    t0 = time.perf_counter()
    for df in frames:
        smf.ols("kw ~ C(how) + hdd", data=df).fit()
    return (time.perf_counter() - t0) / len(frames)


def per_meter_mstl(frames) -> float:
    """Seconds per meter: statsmodels MSTL with daily and weekly seasonality."""
    from statsmodels.tsa.seasonal import MSTL

    t0 = time.perf_counter()
    for df in frames:
        MSTL(df["kw"].to_numpy(), periods=(24, 168)).fit()
    return (time.perf_counter() - t0) / len(frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--sample", type=int, default=40, help="meters fitted by the alternative")
    parser.add_argument("--repeat", type=int, default=3, help="GridWatch runs; the fastest counts")
    parser.add_argument("--against", type=Path, default=None,
                        help="an earlier GridWatch checkout to time beside this one")
    args = parser.parse_args()

    data = make_dataset(HERE / "data" / f"core_{args.meters}x{args.days}", args.meters, args.days)
    # Best of --repeat runs, each in a fresh process (first-touch page faults and
    # other load on a shared machine only ever add time); with --against, the two
    # versions alternate so that both meet the same load.
    runs, theirs = [], []
    for _ in range(args.repeat):
        runs.append(run_gridwatch(data, HERE / "data" / "out_core"))
        if args.against is not None:
            theirs.append(run_gridwatch(data, HERE / "data" / "out_core_against", args.against))
    ours = min(runs, key=lambda r: r["elapsed_s"])
    if theirs:
        best = min(r["elapsed_s"] for r in theirs)
        print(f"this version {ours['elapsed_s']:.1f} s, {args.against} {best:.1f} s (best of "
              f"{args.repeat} each): ratio {ours['elapsed_s'] / best:.2f}x")
    frames = _hourly_frames(data, args.sample)
    alternatives = {
        "statsmodels OLS per meter (hour of week + HDD)": per_meter_ols(frames),
        "statsmodels MSTL per meter (24 h, 168 h)": per_meter_mstl(frames[: max(5, args.sample // 4)]),
    }
    # a partitioned run measures the balance in pass 3 and decides it in the final pass
    balance_s = ours["timings"].get("balance_s", 0.0) + ours["timings"].get("balance_measure_s", 0.0)
    core_s = ours["elapsed_s"] - balance_s
    rate = ours["readings_in"] / core_s
    model_s = ours["timings"]["detect_s"]
    print(f"\nGridWatch end to end ({args.meters} meters x {args.days} days, Parquet, "
          f"best of {args.repeat}):")
    print(f"  readings in        {ours['readings_in']:,}")
    print(f"  wall time          {ours['elapsed_s']:.1f} s   stages {ours['timings']}")
    print(f"  throughput         {rate / 1e6:.2f} M readings/s without the energy balance "
          f"({core_s:.1f} s), {ours['readings_in'] / ours['elapsed_s'] / 1e6:.2f} with it "
          "(target >= 2)")
    print(f"  peak memory        {ours['peak_mb'] / 1024:.2f} GB   (target < 3)")
    print(f"  flagged            {ours['flagged']}")
    if balance_s:
        print(f"  energy balance     {balance_s:.1f} s = {balance_s / core_s:.0%} on top of the core "
              "run (target < 25 %)")
    for name, per_meter_s in alternatives.items():
        total = per_meter_s * args.meters
        print(f"\nAlternative: {name}, timed on a sample, fit only")
        print(f"  {per_meter_s * 1000:.1f} ms per meter -> {total:.0f} s for {args.meters} meters")
        print(f"  ratio vs GridWatch end to end (read, clean, grid, model, detect, write): "
              f"{total / ours['elapsed_s']:.0f}x")
        print(f"  ratio vs GridWatch's modelling and detection stage ({model_s:.1f} s): "
              f"{total / model_s:.0f}x   (target >= 100x)")


if __name__ == "__main__":
    main()
