"""Report and plots for flagged sites beside the detection time at 10,000 meters.

Run: ``.venv/bin/python bench/bench_report.py [--sites 200]`` (after
``bench/bench_core.py`` has generated bench/data/core_10000x90).

Issue 4's target: the report and plots for 200 flagged sites take less than
the detection itself at 10,000 meters.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main():
    from gridwatch.config import config_from_dict
    from gridwatch.pipeline import run
    from gridwatch.report.html import write_report
    from gridwatch.report.plots import plot_site, safe_plot_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--data", default=str(HERE / "data" / "core_10000x90"))
    args = parser.parse_args()

    cfg = config_from_dict({"report": {"enabled": False}, "cases": {"enabled": False}})
    result = run(args.data, None, config=cfg)
    detect_s = result.info["timings_s"]["detect_s"]
    sites = result.flags["meter_id"].head(args.sites).tolist()  # flagged first, then the next ranks
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "plots").mkdir()
        t0 = time.perf_counter()
        plots = {}
        for site in sites:  # one figure per site: matplotlib draws them one by one
            name = f"plots/{safe_plot_name(site)}"
            plot_site(result, site, out / name)
            plots[site] = name
        plots_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(result, out, plots=plots)
        report_s = time.perf_counter() - t0
    print(f"detection at {result.kw.shape[1]:,} meters: {detect_s:.1f} s")
    print(f"plots for {len(sites)} sites: {plots_s:.1f} s ({plots_s / len(sites) * 1000:.0f} ms each)")
    print(f"report.html: {report_s:.1f} s")
    ratio = (plots_s + report_s) / detect_s
    print(f"report + plots = {ratio:.1f}x the detection time (target < 1x)")


if __name__ == "__main__":
    main()
