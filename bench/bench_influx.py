"""Reading the inputs from InfluxDB: GridWatch's chunked reader beside one query per meter.

Run: ``.venv/bin/python bench/bench_influx.py [--meters 1000] [--days 90]``

1. Writes (once, cached under bench/data/) a simulated dataset of N meters x
   D days, hourly, as Parquet.
2. Starts a throwaway ``influxd`` (``tests/influxdb_server.py``) and loads
   the dataset with ``gridwatch ingest``'s library function (points/s).
3. In child processes, reads the analysis window back with the project's
   reader, chunked by ids and days: the raw frame
   (:func:`gridwatch.influx.source.read_table`) and the whole cleaned input
   (:func:`gridwatch.influx.read_influx_dataset`): readings per second and
   the child's peak memory (VmHWM).
4. In another child, the obvious alternative: one InfluxQL query per meter
   (JSON, a Python loop over the rows), into the same raw long frame.
5. Prints them and the ratios (raw reader against the naive read: like for
   like).
6. ``gridwatch run`` from the server (report off), all at once and
   ``--engine streaming`` (partitions read by their meters' ids, budget
   ``--budget-mb``): time, peak memory and whether flags.csv is the same.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import make_dataset  # noqa: E402
from bench.process_tree import run_measured  # noqa: E402
from tests.influxdb_server import influx_config, start_influxd  # noqa: E402

AS_OF = "2026-03-31"

CHILD_PREAMBLE = (
    "import json, sys, time\n"
    f"sys.path.insert(0, {str(ROOT)!r})\n"
    "import pandas as pd\n"
    "from tests.influxdb_server import influx_config\n"
    "from gridwatch.days import window_bounds\n"
    "def peak_mb():\n"
    "    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.\n"
    "    with open('/proc/self/status') as f:\n"
    "        return next(int(l.split()[1]) for l in f if l.startswith('VmHWM')) / 1024\n"
)

OURS = CHILD_PREAMBLE + (
    "from gridwatch.influx import read_influx_dataset\n"
    "url, db, meters, days, ids, per = sys.argv[1:7]\n"
    "config = influx_config(url, db, analysis={'history_days': int(days)},\n"
    "    source={'meters_file': meters}, data={'timezone': 'Europe/London'},\n"
    "    influxdb={'ids_per_query': int(ids), 'days_per_query': int(per),\n"
    "              'upstream': {'measurement': ''}, 'weather': {'measurement': ''}})\n"
    f"start, end = window_bounds(pd.Timestamp({AS_OF!r}).date(), int(days), 'Europe/London')\n"
    "before = peak_mb()\n"
    "t0 = time.perf_counter()\n"
    "ds = read_influx_dataset(config, start=start, end=end)\n"
    "elapsed = time.perf_counter() - t0\n"
    "print(json.dumps({'elapsed_s': elapsed, 'readings': ds.row_counts['readings']['in'],\n"
    "                  'peak_mb': peak_mb(), 'baseline_mb': before,\n"
    "                  'frame_mb': ds.readings.memory_usage(deep=True).sum() / 2**20}))\n"
)

RAW = CHILD_PREAMBLE + (
    "from gridwatch.influx.backend import connect\n"
    "from gridwatch.influx.source import read_table\n"
    "url, db, meters, days, ids, per = sys.argv[1:7]\n"
    "config = influx_config(url, db, influxdb={'ids_per_query': int(ids),\n"
    "                                          'days_per_query': int(per)})\n"
    f"start, end = window_bounds(pd.Timestamp({AS_OF!r}).date(), int(days), 'Europe/London')\n"
    "before = peak_mb()\n"
    "t0 = time.perf_counter()\n"
    "frame = read_table(connect(config.influxdb), config.influxdb.readings, start_ns=start.value,\n"
    "                   end_ns=end.value, value_column='kwh', id_column='meter_id',\n"
    "                   config=config.influxdb)\n"
    "elapsed = time.perf_counter() - t0\n"
    "print(json.dumps({'elapsed_s': elapsed, 'readings': len(frame), 'peak_mb': peak_mb(),\n"
    "                  'baseline_mb': before}))\n"
)

NAIVE = CHILD_PREAMBLE + (
    "import urllib3\n"
    "url, db, meters, days = sys.argv[1:5]\n"
    "ids = pd.read_csv(meters, dtype=str)['meter_id'].tolist()\n"
    f"start, end = window_bounds(pd.Timestamp({AS_OF!r}).date(), int(days), 'Europe/London')\n"
    "http = urllib3.PoolManager()\n"
    "before = peak_mb()\n"
    "t0 = time.perf_counter()\n"
    "rows = []\n"
    "for meter in ids:\n"
    "    q = (\"SELECT kwh FROM readings WHERE meter_id = '\" + meter.replace(\"'\", \"\\\\'\")\n"
    "         + f\"' AND time >= {start.value} AND time < {end.value}\")\n"
    "    r = http.request('POST', url + '/query', fields={'db': db, 'q': q, 'epoch': 'u'},\n"
    "                     encode_multipart=False)\n"
    "    for s in json.loads(r.data)['results'][0].get('series', []):\n"
    "        for t, v in s['values']:\n"
    "            rows.append((meter, t, v))\n"
    "frame = pd.DataFrame(rows, columns=['meter_id', 'timestamp', 'kwh'])\n"
    "frame['meter_id'] = frame['meter_id'].astype('category')\n"
    "frame['timestamp'] = pd.to_datetime(frame['timestamp'], unit='us', utc=True)\n"
    "elapsed = time.perf_counter() - t0\n"
    "print(json.dumps({'elapsed_s': elapsed, 'readings': len(frame), 'peak_mb': peak_mb(),\n"
    "                  'baseline_mb': before}))\n"
)


def child(code: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--budget-mb", type=int, default=50,
                        help="engine.memory_budget_mb of the partitioned run")
    parser.add_argument("--chunks", default="500x7,100x30",
                        help="ids_per_query x days_per_query of each reader run (500x7: defaults)")
    args = parser.parse_args()

    from gridwatch.influx import ingest_dataset

    data = make_dataset(HERE / "data" / f"influx_{args.meters}x{args.days}", args.meters,
                        args.days)
    with tempfile.TemporaryDirectory(prefix="gridwatch-bench-influxd-") as tmp, \
            start_influxd(Path(tmp)) as server:
        config = influx_config(server.url, "bench", data={"timezone": "Europe/London"},
                               influxdb={"upstream": {"measurement": ""},
                                         "weather": {"measurement": ""}})
        t0 = time.perf_counter()
        counts = ingest_dataset(data, config)
        ingest_s = time.perf_counter() - t0
        print(f"ingest: {counts['readings']:,} readings in {ingest_s:.1f} s "
              f"({counts['readings'] / ingest_s:,.0f} points/s)")

        meters = data / "meters.csv"
        raw, cleaned = {}, {}
        for chunk in args.chunks.split(","):
            ids, days = chunk.split("x")
            name = f"{ids} ids x {days} days per query"
            raw[name] = child(RAW, server.url, "bench", meters, args.days, ids, days)
            cleaned[name] = child(OURS, server.url, "bench", meters, args.days, ids, days)
        naive = child(NAIVE, server.url, "bench", meters, args.days)
        runs = {engine: gridwatch_run(server.url, meters, engine, args.budget_mb, Path(tmp))
                for engine in ("memory", "streaming")}

    rows = [(f"reader, {k}", v) for k, v in raw.items()]
    rows += [("naive: one query per meter", naive)]
    rows += [(f"reader + cleaning, {k}", v) for k, v in cleaned.items()]
    for name, r in rows:
        print(f"{name:45s} {r['readings']:>10,} readings in {r['elapsed_s']:6.2f} s = "
              f"{r['readings'] / r['elapsed_s']:>9,.0f} readings/s, peak {r['peak_mb']:5.0f} MB "
              f"(after imports {r['baseline_mb']:.0f} MB)")
    frame_mb = next(iter(cleaned.values()))["frame_mb"]
    print(f"(the cleaned readings frame itself: {frame_mb:.0f} MB)")
    for name, r in raw.items():
        print(f"ratio, reader with {name} / one query per meter: "
              f"{naive['elapsed_s'] / r['elapsed_s']:.2f}x the speed, "
              f"{r['peak_mb'] / naive['peak_mb']:.2f}x the peak memory")
    whole, parts = runs["memory"], runs["streaming"]
    for engine, r in runs.items():
        print(f"gridwatch run from InfluxDB, engine {engine:9s} {r['partitions']:3d} partitions "
              f"{r['elapsed_s']:6.1f} s, peak {r['peak_mb']:5.0f} MB")
    print(f"streaming / all at once: x{parts['elapsed_s'] / whole['elapsed_s']:.2f} the time, "
          f"x{parts['peak_mb'] / whole['peak_mb']:.2f} the peak memory, "
          + ("same flags.csv" if parts["flags"] == whole["flags"] else "FLAGS DIFFER"))


def gridwatch_run(url: str, meters: Path, engine: str, budget_mb: int, tmp: Path) -> dict:
    """``gridwatch run`` from the server in a child process: time, peak RSS of its tree, flags."""
    config = tmp / f"run_{engine}.toml"
    config.write_text(
        f'[data]\ntimezone = "Europe/London"\n[report]\nenabled = false\n'
        f'[cases]\nenabled = false\n[source]\nkind = "influxdb"\nmeters_file = "{meters}"\n'
        f'[influxdb]\nurl = "{url}"\ndatabase = "bench"\n'
        f'[influxdb.upstream]\nmeasurement = ""\n[influxdb.weather]\nmeasurement = ""\n'
        f"[engine]\nmemory_budget_mb = {budget_mb}\n")
    out = tmp / f"out_{engine}"
    run = run_measured([sys.executable, "-m", "gridwatch", "run", "--config", str(config),
                        "--output", str(out), "--as-of", AS_OF, "--engine", engine, "--quiet"])
    if run.returncode != 0:
        raise SystemExit(f"gridwatch run --engine {engine} failed: {run.stderr}")
    info = json.loads((out / "run.json").read_text())
    return {"elapsed_s": run.elapsed_s, "peak_mb": run.peak_mb,
            "partitions": info["engine"]["partitions"], "flags": (out / "flags.csv").read_bytes()}


if __name__ == "__main__":
    main()
