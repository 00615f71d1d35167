"""Report and plots for flagged sites beside the detection time at 10,000 meters.

Run: ``.venv/bin/python bench/bench_report.py [--sites 200]`` (after
``bench/bench_core.py`` has generated bench/data/core_10000x90).

Issue 4's target: the report and plots for 200 flagged sites take less than
the detection itself at 10,000 meters.

The plots are drawn as the nightly run draws them (:func:`plot_sites`: one
figure per kind reused for every site, helper processes on a machine with
several CPUs). For comparison the script also times, on the first sites, the
same reused figure in one process, and a fresh figure per site
(:func:`plot_site`, as ``gridwatch plot`` draws one site).
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
    from gridwatch.report.plots import plot_site, plot_sites, safe_plot_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--data", default=str(HERE / "data" / "core_10000x90"))
    parser.add_argument("--processes", type=int, default=None,
                        help="processes that draw plots (default: one per CPU)")
    parser.add_argument("--compare", type=int, default=20,
                        help="sites drawn again one process / fresh figure each, for comparison "
                             "(0: skip)")
    args = parser.parse_args()

    cfg = config_from_dict({"report": {"enabled": False}, "cases": {"enabled": False}})
    result = run(args.data, None, config=cfg)
    detect_s = result.info["timings_s"]["detect_s"]
    sites = result.flags["meter_id"].head(args.sites).tolist()  # flagged first, then the next ranks
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        plots = plot_sites(result, sites, out, processes=args.processes)
        plots_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(result, out, plots=plots)
        report_s = time.perf_counter() - t0
        png_kb = sum((out / rel).stat().st_size for rel in plots.values()) / len(plots) / 1024
        compare = sites[:args.compare]
        if compare:
            t0 = time.perf_counter()
            plot_sites(result, compare, out / "one", processes=1)
            one_s = (time.perf_counter() - t0) / len(compare)
            t0 = time.perf_counter()
            for site in compare:  # a fresh figure (and run context) per site
                plot_site(result, site, out / "fresh" / safe_plot_name(site))
            fresh_s = (time.perf_counter() - t0) / len(compare)
    print(f"detection at {result.kw.shape[1]:,} meters: {detect_s:.1f} s")
    print(f"plots for {len(sites)} sites: {plots_s:.1f} s ({plots_s / len(sites) * 1000:.0f} ms each)")
    print(f"report.html: {report_s:.1f} s")
    ratio = (plots_s + report_s) / detect_s
    print(f"report + plots = {ratio:.1f}x the detection time (target < 1x)")
    print(f"PNG size: {png_kb:.0f} KB per plot on average")
    if compare:
        print(f"first {len(compare)} sites, one process: reused figure {one_s * 1000:.0f} ms each, "
              f"fresh figure per site {fresh_s * 1000:.0f} ms each "
              f"(reused is {fresh_s / one_s:.1f}x faster)")


if __name__ == "__main__":
    main()
