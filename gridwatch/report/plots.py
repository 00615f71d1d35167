"""The investigator's plots: one PNG per site, readable without knowing the tool.

Every function is a pure function of a :class:`gridwatch.pipeline.RunResult`.
Matplotlib and pandas are imported lazily, inside the functions (so a helper
process that only draws starts without pandas), and figures are built as
plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas:
nothing goes through ``pyplot``, no window is opened, the user's backend and
``rcParams`` are left alone (no global style), and no figure is kept alive by
a figure manager. PNGs are written through the atomic writer.

This module holds the public API: which sites are drawn, and where. The
work is split over four modules, each importing only public names of the
ones before it (no cycle):

- :mod:`gridwatch.report.data`: what each plot shows, as plain data
  computed from the run;
- :mod:`gridwatch.report.figures`: the figure templates and how they are
  rendered from that data;
- :mod:`gridwatch.report.png`: the PNG encoder and the encoder thread;
- :mod:`gridwatch.report.helpers`: the helper processes that draw some of
  the sites on other cores.

How a plot is made (and why it is fast enough for hundreds of sites)
--------------------------------------------------------------------
Drawing text and axes dominates the cost of a plot, not the data. So each
plot is split in two:

1. ``meter_data`` / ``asset_data`` (:mod:`~gridwatch.report.data`): a pure
   function of the run that returns the small arrays and strings one site
   needs (``MeterData``, ``AssetData``), limits included;
2. ``MeterFigure`` / ``AssetFigure`` (:mod:`~gridwatch.report.figures`): a
   *template* that builds the figure's layout once (axes, labels, titles,
   tick locators, colour bar, empty artists) and, for each site, only sets
   the artists' data, limits and texts.

A template renders through ``_Layers``: the artists that cannot change
between sites of the same date window (axes backgrounds, panel titles, the
date axes, the hour axis) are drawn once into a cached background, the meter
legend once per set of labels; for each site the background is restored and
only the other artists are drawn on top, in the order a full draw would use,
so the pixels equal those of a full ``savefig`` of the same figure (the tests
check this, and that a template reused for site A then site B draws B
exactly as a fresh one does). The three title lines, different for every
site, are drawn as paths from cached glyph outlines (``_Glyphs``), ten
times faster than matplotlib's glyph-by-glyph text. PNGs are compressed
without row filters at zlib level 1 (:mod:`~gridwatch.report.png`), on a
second thread, and :func:`plot_sites` shares the sites with helper processes
(:mod:`~gridwatch.report.helpers`) when the machine has CPUs to spare.

Public API
----------
plot_meter(result, meter_id, *, weeks=6, fig=None) -> Figure
plot_asset(result, asset_id, *, fig=None) -> Figure
plot_site(result, site_id, path) -> Path
plot_sites(result, site_ids, output_dir, *, processes=None) -> dict[str, str]
write_plots(result, output_dir) -> dict[str, str]
flagged_sites(result) -> list[str]
Plotter(result): .kind(site_id), .data(site_id), .render(data)
safe_plot_name(site_id) -> str
save_plot(fig, path) -> None
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import deque
from pathlib import Path

import numpy as np

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.report.data import (
    RunContext,
    analysed_meter_ids,
    asset_data,
    balanced_asset_ids,
    meter_data,
    unknown_site_message,
)
from gridwatch.report.figures import (
    DPI,
    AssetFigure,
    MeterFigure,
    Renderer,
    close_figure,
    layout_key,
    local_rc,
)
from gridwatch.report.helpers import helper_count, helper_pool
from gridwatch.report.png import PNG_COMPRESS_LEVEL, encoder, write_png

PLOTS_DIR = "plots"
_SLUG_MAX = 60


# =====================================================================================
# file names and saving
# =====================================================================================
def safe_plot_name(site_id) -> str:
    """A PNG file name for a site id that cannot escape ``plots/``.

    The name is a readable ASCII slug of the id (letters, digits, ``_`` and
    ``-`` only: no path separator, no ``..``, no leading dot or dash, no
    control or shell-special character) followed by a short hash of the exact
    id, so distinct ids always give distinct names (``"a/b"`` and ``"a_b"``
    share the slug but not the hash).

    Parameters
    ----------
    site_id : str
        A meter or asset id, as found in the input (possibly hostile).

    Returns
    -------
    str
        e.g. ``"M000110-3f2a9c0d1e.png"``.
    """
    text = str(site_id)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_text)
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")[:_SLUG_MAX].strip("-_") or "site"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}.png"


def save_plot(fig, path) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically, then close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
        Destination; its directory is created if missing.
    """
    from gridwatch.atomic import atomic_path

    try:
        with local_rc(), atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi,
                        pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    finally:
        close_figure(fig)


# =====================================================================================
# entry points
# =====================================================================================
def plot_site(result, site_id, path) -> Path:
    """Plot one meter or asset by id and save it as a PNG.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    site_id : str
        A ``meter_id`` (flagged or not) or an ``asset_id`` with upstream data.
    path : str or os.PathLike
        Where to write the PNG.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        When the id is neither an analysed meter nor a balanced asset of the run.
    """
    path = Path(path)
    plotter = Plotter(result)
    data = plotter.data(site_id)
    with local_rc():
        write_png(plotter.render(data), path, dpi=DPI)
    return path


def plot_sites(result, site_ids, output_dir, *, processes=None) -> dict[str, str]:
    """One PNG per site under ``output_dir/plots/``, reusing one figure per kind.

    The figure of each kind (meter, asset) is built once and redrawn for
    every site; sites that share a layout (date window, legend) are drawn one
    after another so that the layout is drawn once. With more than one
    process, helper processes draw some of the sites from the small per-site
    arrays this process computes (see Notes); the files are the same
    whichever process draws them.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    site_ids : iterable of str
        Meter ids and/or asset ids; a repeated id is drawn once.
    output_dir : str or os.PathLike
    processes : int, optional
        Processes that draw, this one included. By default one per available
        CPU, at most ``MAX_PROCESSES``, and one helper per
        ``SITES_PER_HELPER`` sites at most (starting one costs about half a
        second of CPU; both are in :mod:`gridwatch.report.helpers`). ``1``
        draws everything in this process.

    Returns
    -------
    dict of str to str
        Site id -> path relative to ``output_dir`` (``"plots/<name>.png"``).

    Raises
    ------
    InputError
        When an id is neither an analysed meter nor a balanced asset of the
        run (checked before anything is drawn).

    Notes
    -----
    A helper (:mod:`gridwatch.report.helpers`) is a fresh interpreter (``python -c``, this process's
    ``sys.path``) that reads pickled per-site data on its standard input and
    answers with the PNG's bytes; this process writes every file. It is not
    started through :mod:`multiprocessing`: nothing is forked from this
    process (whose threads may hold locks), and, unlike the ``spawn`` and
    ``forkserver`` methods, it does not re-import the caller's ``__main__``
    script, which would run an unguarded script a second time. A site a
    helper fails to draw, or that it has not answered within
    ``HELPER_TIMEOUT_S``, is drawn in this process.
    """
    out = Path(output_dir)
    plotter = Plotter(result)
    ids = list(dict.fromkeys(str(s) for s in site_ids))
    for site_id in ids:
        plotter.kind(site_id)  # refuse an unknown id before writing anything
    written = {site_id: f"{PLOTS_DIR}/{safe_plot_name(site_id)}" for site_id in ids}
    n_helpers = helper_count(len(ids)) if processes is None else max(0, min(int(processes) - 1,
                                                                              len(ids) - 1))
    queue = deque()  # this process takes jobs from the left, helpers from the right
    failed = []
    with helper_pool(n_helpers, queue, failed) as start_feeding, encoder(dpi=DPI) as encode, \
            local_rc():
        # the helpers start up while the data is computed
        jobs = [(plotter.data(site_id), out / written[site_id]) for site_id in ids]
        queue.extend(sorted(jobs, key=lambda job: layout_key(job[0])))
        start_feeding()
        while queue:
            try:
                data, path = queue.popleft()
            except IndexError:  # a helper took the last one
                break
            encode(plotter.render(data), path)
    with local_rc():
        for data, path in failed:
            write_png(plotter.render(data), path, dpi=DPI)
    return written


def write_plots(result, output_dir) -> dict[str, str]:
    """One PNG per flagged meter and per flagged asset under ``output_dir/plots/``.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    output_dir : str or os.PathLike

    Returns
    -------
    dict of str to str
        Site id -> path relative to ``output_dir`` (``"plots/<name>.png"``).
    """
    return plot_sites(result, flagged_sites(result), output_dir)


def plot_meter(result, meter_id, *, weeks=6, fig=None):
    """A meter's demand against its expected consumption and its peers, and its day x hour map.

    Top panel: hourly demand [kW] over the last ``weeks`` weeks of the run,
    the expected consumption (what the meter would draw without the detected
    load, fitted before the onset), the peer band (10th-90th percentile of
    the daily mean demand of the meters of the same customer class, scaled to
    this meter's own level before the onset; the factor is in the summary
    line) and the onset. Bottom panel: a day x local hour heat map of demand
    where a round-the-clock load shows as a band across all 24 hours.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    meter_id : str
        An analysed meter, flagged or not.
    weeks : int, default 6
        Weeks shown, ending at the run's as-of day.
    fig : matplotlib.figure.Figure, optional
        An empty figure to draw into; a new one when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    The three title lines are path artists in ``fig.artists`` (with
    ``get_text()``), not ``fig.texts``; see :class:`gridwatch.report.figures._Glyphs`.
    """
    ctx = RunContext(result)
    data = meter_data(ctx, str(meter_id), weeks=weeks)
    with local_rc():
        template = MeterFigure(fig)
        template.update(data)
    return template.fig


def plot_asset(result, asset_id, *, fig=None):
    """An asset's energy balance and its suspects' consumption.

    Top panel: daily mean power delivered into the asset (upstream meter)
    against what its customer meters record, the modelled technical losses
    and the unexplained load, with the onset. Bottom panel: the daily mean
    demand of the top suspects (up to 5).

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    asset_id : str
        An asset with upstream data (``transformers.csv``).
    fig : matplotlib.figure.Figure, optional
        An empty figure to draw into; a new one when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    As in :func:`plot_meter`, the title lines are in ``fig.artists``.
    """
    ctx = RunContext(result)
    data = asset_data(ctx, str(asset_id))
    with local_rc():
        template = AssetFigure(fig)
        template.update(data)
    return template.fig


def flagged_sites(result) -> list[str]:
    """The sites :func:`write_plots` draws: flagged meters, then flagged assets.

    Only sites the run holds arrays for: analysed meters (in a partitioned
    run, those it kept) and assets with upstream data. Each id once, in the
    order of ``flags.csv`` then ``transformers.csv``.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult

    Returns
    -------
    list of str
    """
    meters = set(analysed_meter_ids(result))
    assets = set(balanced_asset_ids(result))
    flags = result.flags
    ids = [m for m in flags.loc[_is_true(flags[col.FLAGGED]), col.METER_ID].astype(str) if m in meters]
    tr = result.transformers
    if tr is not None and not tr.empty:
        ids += [a for a in tr.loc[_is_true(tr[col.FLAGGED]), col.ASSET_ID].astype(str) if a in assets]
    return list(dict.fromkeys(ids))


def _is_true(values) -> np.ndarray:
    return values.astype(str).str.lower().isin(["true", "1"]).to_numpy()


class Plotter:
    """Draws the plots of one run: one :class:`~gridwatch.report.data.RunContext`, one renderer.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
    """

    def __init__(self, result):
        self.ctx = RunContext(result)
        self.renderer = Renderer()

    def kind(self, site_id) -> str:
        """``"meter"`` or ``"asset"``; :class:`InputError` for an unknown id."""
        site_id = str(site_id)
        if site_id in self.ctx.position:
            return "meter"
        if site_id in self.ctx.assets:
            return "asset"
        raise InputError(unknown_site_message(self.ctx.result, site_id),
                         hint="pass a meter_id from flags.csv or an asset_id from transformers.csv")

    def data(self, site_id):
        """What the site's plot shows (a ``MeterData`` or ``AssetData`` of :mod:`gridwatch.report.data`)."""
        site_id = str(site_id)
        if self.kind(site_id) == "meter":
            return meter_data(self.ctx, site_id, weeks=6)
        return asset_data(self.ctx, site_id)

    def render(self, data) -> np.ndarray:
        """The site's image, ``(height, width, 3)`` uint8 (a view, valid until the next call).

        Call it inside :func:`gridwatch.report.figures.local_rc`.
        """
        return self.renderer.render(data)
