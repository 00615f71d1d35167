"""The analyst's report: report.html and the per-site plots.

Modules, each importing only public names of the ones listed before it (no
import cycle, ``tests/test_imports.py``):

- :mod:`~gridwatch.report.data`: what each plot shows, as plain arrays and
  strings computed from a run (``MeterData``, ``AssetData``);
- :mod:`~gridwatch.report.figures`: the figure templates that draw such data;
- :mod:`~gridwatch.report.png`: PNG encoding and atomic writing;
- :mod:`~gridwatch.report.helpers`: helper processes that draw on other cores;
- :mod:`~gridwatch.report.plots`: which sites are drawn, and where (the public API);
- :mod:`~gridwatch.report.places`: meter and asset positions, the crew plan (``inspections.csv``);
- :mod:`~gridwatch.report.sitemap`: the map of the flagged sites (``map.png``);
- :mod:`~gridwatch.report.html`: report.html.
"""
