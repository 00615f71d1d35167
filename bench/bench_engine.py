"""Issue 6: the analysis streamed partition by partition (and on Dask) beside all at once.

Run: ``.venv/bin/python bench/bench_engine.py [--data bench/data/core_10000x90] [--budget-mb 600]
[--dask]``

Each mode runs in a fresh child process (peak memory is the child's
``ru_maxrss``; a Dask run adds its workers' peaks) on the same Parquet
dataset, from the read to the per-meter and per-asset tables (no report):

* ``memory``: the whole dataset read, gridded and analysed at once (what
  ``gridwatch run`` does today);
* ``streaming``: partitions of whole transformers planned for a memory budget
  (:mod:`gridwatch.partitions`), each read from its own row groups
  (:class:`gridwatch.sources.partitioned.PlannedFiles`), four passes (peer figures,
  detector calibration, balance calibration, results);
* ``dask`` (``--dask``): the same partitions as tasks of a 2-worker local
  ``dask.distributed`` cluster on 127.0.0.1, the workers reading their own
  partitions.

It prints readings per second, peak memory and the ratios, and checks that
the three give the same flags.

Measured at 10,000 meters x 90 days hourly (21.6 M readings), budget 600 MB,
2 cores (2026-11-29, after the detector and the balance were split into a
measurement made once per partition and cached, and the partitions' results
cut to the sites worth drawing):

=========  ==========  ======  =========  =======  =====================
mode       partitions  time s  M rows/s   peak MB  vs all at once
=========  ==========  ======  =========  =======  =====================
memory              1    17.7       1.22     2,311
streaming           6    10.1       2.15       876  x0.57 time, x0.38 mem
dask                6     9.4       2.29     2,049  x0.53 time (x0.94 vs
                                                    streaming), same flags
=========  ==========  ======  =========  =======  =====================

(Earlier the same day, before those changes: memory 15.4 s, streaming 18.5 s,
Dask 19.3 s; all at once varies 13.8-17.7 s between runs on this machine.)
Partitions of a few thousand meters are faster than one matrix of 10,000:
their arrays stay in cache. For `gridwatch run` end to end at 100,000
meters, see bench/bench_scale.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

CHILD = r"""
import json, resource, sys, time
import pandas as pd
from gridwatch import columns as col
from gridwatch.config import Config
from gridwatch.days import day_grid
from gridwatch.outputs import format_flags
from gridwatch.partitions import bytes_per_meter, plan_partitions
from gridwatch.days import last_full_day, window_bounds
from gridwatch.decisions import merge_suspects
from gridwatch.partition import partitions_of
from gridwatch.runner import analyse, combine
from gridwatch.sources.partitioned import PlannedFiles
from gridwatch.resample import analysis_index
from gridwatch.sources import files, read_dataset

data, mode, budget_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
config = Config()
t0 = time.perf_counter()
meters, _, _ = files._read_meters(files.find_table(data, "meters"))
as_of = pd.Timestamp(json.load(open(f"{data}/labels.json"))["as_of"]).date()
start, end = window_bounds(as_of, config.analysis.history_days, config.data.timezone)
index = analysis_index(start, end, config.analysis.grid_minutes)
grid = day_grid(index, config.data.timezone)
workers_peak_mb = 0.0
if mode == "memory":
    ds = read_dataset(data, data_config=config.data)
    n_readings = len(ds.readings)
    asset_order = pd.unique(ds.upstream[col.ASSET_ID].astype(str))
    analyses = analyse(ds, index=index, grid=grid, config=config, release_readings=True)
    n_parts = 1
else:
    import pyarrow.parquet as pq
    n_readings = pq.ParquetFile(f"{data}/readings.parquet").metadata.num_rows
    asset_order = pd.unique(pq.read_table(f"{data}/upstream.parquet", columns=["asset_id"])
                            .column(0).to_pandas().astype(str))
    per_meter = bytes_per_meter(config.analysis.history_days, config.analysis.grid_minutes)
    plan = plan_partitions(meters, budget_bytes=budget_mb * 2**20, bytes_per_meter=per_meter,
                           upstream_asset_ids=asset_order)
    parts = partitions_of(plan)
    n_parts = len(parts)
    loader = PlannedFiles(data, plan, config.data)
    if mode == "streaming":
        analyses = analyse(loader, index=index, grid=grid, config=config, partitions=parts)
    else:
        from gridwatch.cluster import dask_executor
        with dask_executor(n_workers=2) as map_partitions:
            analyses = analyse(loader, index=index, grid=grid, config=config, partitions=parts,
                               map_partitions=map_partitions)
            from distributed import get_client
            peaks = get_client().run(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            workers_peak_mb = sum(peaks.values())
together = combine(analyses, meters[col.METER_ID].astype(str), asset_order)
flags = format_flags(merge_suspects(together.table, together.suspects))
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"elapsed_s": elapsed, "peak_mb": peak, "workers_peak_mb": workers_peak_mb,
                  "readings": int(n_readings), "partitions": n_parts,
                  "flags_csv": flags.to_csv(index=False)}))
"""


def run_mode(data: Path, mode: str, budget_mb: float) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), mode, str(budget_mb)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE / "data" / "core_10000x90"))
    parser.add_argument("--budget-mb", type=float, default=600.0)
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--skip-memory", action="store_true",
                        help="do not run the all-at-once mode (too big for this machine)")
    args = parser.parse_args()
    modes = ([] if args.skip_memory else ["memory"]) + ["streaming"] + (["dask"] if args.dask else [])
    results = {mode: run_mode(Path(args.data), mode, args.budget_mb) for mode in modes}
    base = results.get("memory")
    for mode, r in results.items():
        total_mb = r["peak_mb"] + r["workers_peak_mb"]
        line = (f"{mode:10s} {r['partitions']:4d} partitions  {r['elapsed_s']:7.1f} s  "
                f"{r['readings'] / r['elapsed_s'] / 1e6:5.2f} M readings/s  peak {total_mb:7.0f} MB")
        if r["workers_peak_mb"]:
            line += f" (client {r['peak_mb']:.0f} + workers {r['workers_peak_mb']:.0f})"
        if base is not None and mode != "memory":
            line += (f"  time x{r['elapsed_s'] / base['elapsed_s']:.2f}, "
                     f"memory x{total_mb / base['peak_mb']:.2f} vs all at once")
            line += "  same flags" if r["flags_csv"] == base["flags_csv"] else "  FLAGS DIFFER"
        print(line)
    if "dask" in results:
        s, d = results["streaming"], results["dask"]
        print(f"dask vs streaming in process: time x{d['elapsed_s'] / s['elapsed_s']:.2f}"
              + ("  same flags" if d["flags_csv"] == s["flags_csv"] else "  FLAGS DIFFER"))


if __name__ == "__main__":
    main()
