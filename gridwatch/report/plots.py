"""The investigator's plots: one PNG per site, readable without knowing the tool.

Every function is a pure function of a :class:`gridwatch.pipeline.RunResult`.
Matplotlib and pandas are imported lazily, inside the functions (so a helper
process that only draws starts without pandas), and figures are built as
plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas:
nothing goes through ``pyplot``, no window is opened, the user's backend and
``rcParams`` are left alone (no global style), and no figure is kept alive by
a figure manager. PNGs are written through the atomic writer.

How a plot is made (and why it is fast enough for hundreds of sites)
--------------------------------------------------------------------
Drawing text and axes dominates the cost of a plot, not the data. So each
plot is split in two:

1. ``_meter_data`` / ``_asset_data``: a pure function of the run that returns
   the small arrays and strings one site needs (:class:`_MeterData`,
   :class:`_AssetData`), limits included;
2. ``_MeterFigure`` / ``_AssetFigure``: a *template* that builds the figure's
   layout once (axes, labels, titles, tick locators, colour bar, empty
   artists) and, for each site, only sets the artists' data, limits and
   texts.

A template renders through :class:`_Layers`: the artists that cannot change
between sites of the same date window (axes backgrounds, panel titles, the
date axes, the hour axis) are drawn once into a cached background, the meter
legend once per set of labels; for each site the background is restored and
only the other artists are drawn on top, in the order a full draw would use,
so the pixels equal those of a full ``savefig`` of the same figure (the tests
check this, and that a template reused for site A then site B draws B
exactly as a fresh one does). The three title lines, different for every
site, are drawn as paths from cached glyph outlines (:class:`_Glyphs`), ten
times faster than matplotlib's glyph-by-glyph text. PNGs are compressed
without row filters at zlib level 1 (:func:`_png_bytes`), on a second thread,
and :func:`plot_sites` shares the sites with helper processes when the
machine has CPUs to spare.

Public API
----------
plot_meter(result, meter_id, *, weeks=6, fig=None) -> Figure
plot_asset(result, asset_id, *, fig=None) -> Figure
plot_site(result, site_id, path) -> Path
plot_sites(result, site_ids, output_dir, *, processes=None) -> dict[str, str]
write_plots(result, output_dir) -> dict[str, str]
safe_plot_name(site_id) -> str
save_plot(fig, path) -> None
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import subprocess
import sys
import threading
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridwatch import columns as col
from gridwatch.errors import InputError

PLOTS_DIR = "plots"
DPI = 80
METER_FIGSIZE = (11.0, 8.0)  # [inch] at DPI -> 880 x 640 px
ASSET_FIGSIZE = (11.0, 7.5)
MAX_SUSPECTS = 5
SUSPECT_COLORS = ("C0", "C2", "C4", "C8", "C9")  # no red or orange: those are the unexplained
# load (crimson) and the modelled losses (orange) in the panel above
PEER_LOW, PEER_HIGH = 10, 90  # percentiles of the peer band
LEGEND_HEADROOM = 1.4  # y-range over the data's range on the suspects panel: its top holds the legend
#: zlib level of the PNGs: on these flat-coloured plots level 1 is about twice as
#: fast as the default (6), for files about 10 % larger.
PNG_COMPRESS_LEVEL = 1
#: rcParams applied while a plot is built and drawn (never globally): FreeType
#: hinting costs about a quarter of a plot's drawing time and, at 80 dpi,
#: changes nothing a reader would notice.
RC_PARAMS = {"text.hinting": "no_hinting"}
_SLUG_MAX = 60
_MAX_BACKGROUNDS = 8  # cached static layers per template (one per date window)
_MAX_STAMPS = 32  # cached looks of the legend below the meter panel
_ENCODE_QUEUE = 2  # drawn images waiting for the PNG encoder thread
#: Most processes that draw plots, this one included.
MAX_PROCESSES = 4
#: At most one helper process per this many sites (a helper costs about half a
#: second of CPU to start: Python, numpy, matplotlib, the templates).
SITES_PER_HELPER = 40
#: A helper that has not answered for this long is stopped; its site is drawn here.
HELPER_TIMEOUT_S = 120.0


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
        with _rc(), atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi,
                        pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    finally:
        _close(fig)


def _write_png(rgb: np.ndarray, path, dpi=DPI) -> None:
    """Write an ``(height, width, 3)`` uint8 image as a PNG at ``path``, atomically."""
    _write_bytes(_png_bytes(rgb, dpi=dpi), path)


def _write_bytes(data: bytes, path) -> None:
    """Write ``data`` to ``path`` atomically."""
    from gridwatch.atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)


def _png_bytes(rgb: np.ndarray, dpi=DPI) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (``(height, width, 3)`` uint8), rows unfiltered.

    Pillow's encoder tries five row filters on every row, which takes two
    thirds of its time on these plots and makes the file no smaller (large
    flat areas deflate well as they are); zlib level 1 is the fastest level
    that still compresses well.

    References
    ----------
    PNG (Third Edition), W3C Recommendation, sections 5.3 (chunk layout),
    11.2.1 (IHDR), 11.3.5.3 (pHYs).
    """
    import struct
    import zlib

    height, width, _ = rgb.shape
    raw = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels_per_metre = round(dpi / 0.0254)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),  # 8-bit RGB
        chunk(b"pHYs", struct.pack(">IIB", pixels_per_metre, pixels_per_metre, 1)),
        chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_COMPRESS_LEVEL)),
        chunk(b"IEND", b""),
    ])


def _close(fig) -> None:
    """Release a figure (a pyplot-managed one is also removed from pyplot)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()


def _rc():
    """The plots' local rcParams (see ``RC_PARAMS``), as a context manager."""
    import matplotlib

    return matplotlib.rc_context(RC_PARAMS)


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
    plotter = _Plotter(result)
    data = plotter.data(site_id)
    with _rc():
        _write_png(plotter.render(data), path)
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
        second of CPU). ``1`` draws everything in this process.

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
    A helper is a fresh interpreter (``python -c``, this process's
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
    plotter = _Plotter(result)
    ids = list(dict.fromkeys(str(s) for s in site_ids))
    for site_id in ids:
        plotter.kind(site_id)  # refuse an unknown id before writing anything
    written = {site_id: f"{PLOTS_DIR}/{safe_plot_name(site_id)}" for site_id in ids}
    n_helpers = _helper_count(len(ids)) if processes is None else max(0, min(int(processes) - 1,
                                                                              len(ids) - 1))
    queue = deque()  # this process takes jobs from the left, helpers from the right
    failed = []
    with _helpers(n_helpers, queue, failed) as start_feeding, _encoder() as encode, _rc():
        # the helpers start up while the data is computed
        jobs = [(plotter.data(site_id), out / written[site_id]) for site_id in ids]
        queue.extend(sorted(jobs, key=lambda job: _layout_key(job[0])))
        start_feeding()
        while queue:
            try:
                data, path = queue.popleft()
            except IndexError:  # a helper took the last one
                break
            encode(plotter.render(data), path)
    with _rc():
        for data, path in failed:
            _write_png(plotter.render(data), path)
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
    return plot_sites(result, _flagged_sites(result), output_dir)


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
    ``get_text()``), not ``fig.texts``; see :class:`_Glyphs`.
    """
    ctx = _Context(result)
    data = _meter_data(ctx, str(meter_id), weeks=weeks)
    with _rc():
        template = _MeterFigure(fig)
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
    ctx = _Context(result)
    data = _asset_data(ctx, str(asset_id))
    with _rc():
        template = _AssetFigure(fig)
        template.update(data)
    return template.fig


def _flagged_sites(result) -> list[str]:
    """Flagged meters (analysed ones), then flagged assets with upstream data."""
    meters = set(_meter_columns(result))
    assets = set(_asset_ids(result))
    flags = result.flags
    ids = [m for m in flags.loc[_is_true(flags[col.FLAGGED]), col.METER_ID].astype(str) if m in meters]
    tr = result.transformers
    if tr is not None and not tr.empty:
        ids += [a for a in tr.loc[_is_true(tr[col.FLAGGED]), col.ASSET_ID].astype(str) if a in assets]
    return list(dict.fromkeys(ids))


class _Plotter:
    """Draws the plots of one run: one context, one reusable template per figure kind."""

    def __init__(self, result):
        self.ctx = _Context(result)
        self._templates = {}

    def kind(self, site_id) -> str:
        """``"meter"`` or ``"asset"``; :class:`InputError` for an unknown id."""
        site_id = str(site_id)
        if site_id in self.ctx.position:
            return "meter"
        if site_id in self.ctx.assets:
            return "asset"
        raise InputError(_unknown_message(self.ctx.result, site_id),
                         hint="pass a meter_id from flags.csv or an asset_id from transformers.csv")

    def data(self, site_id):
        """What the site's plot shows (:class:`_MeterData` or :class:`_AssetData`)."""
        site_id = str(site_id)
        if self.kind(site_id) == "meter":
            return _meter_data(self.ctx, site_id, weeks=6)
        return _asset_data(self.ctx, site_id)

    def render(self, data) -> np.ndarray:
        """The site's image, ``(height, width, 3)`` uint8 (a view, valid until the next call)."""
        return _render(self._templates, data)


def _render(templates: dict, data) -> np.ndarray:
    """Draw ``data`` with the template of its kind from ``templates`` (built on first use).

    Call it inside :func:`_rc`, once for many plots (entering it costs about a
    millisecond).
    """
    kind = _MeterFigure if isinstance(data, _MeterData) else _AssetFigure
    if kind not in templates:
        templates[kind] = kind()
    template = templates[kind]
    template.update(data)
    return template.render()


@contextlib.contextmanager
def _encoder():
    """Yield ``encode(rgb, path)``: write the PNG on a second thread, overlapping the next drawing.

    zlib releases the GIL, so the PNG of one site is compressed while the next
    one is drawn. At most ``_ENCODE_QUEUE`` images wait (each is a copy of the
    canvas, ~1.7 MB). Leaving waits for the last file; an error while writing
    is raised here.
    """
    from concurrent.futures import ThreadPoolExecutor

    pending = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridwatch-png") as pool:

        def encode(rgb, path):
            pending.append(pool.submit(_write_png, rgb.copy(), path))
            while len(pending) > _ENCODE_QUEUE:
                pending.popleft().result()

        yield encode
        while pending:
            pending.popleft().result()


def _layout_key(data) -> tuple:
    """Sites with equal keys share their static layer (date window, legend)."""
    if isinstance(data, _MeterData):
        return ("meter", float(data.edges_day[0]), float(data.edges_day[-1]), data.peer_label,
                data.expected_label, data.onset_day is not None)
    return ("asset", float(data.edges_day[0]), float(data.edges_day[-1]))


def _helper_count(n_sites: int) -> int:
    """Helper processes worth starting for ``n_sites`` plots on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, MAX_PROCESSES - 1, n_sites // SITES_PER_HELPER))


@contextlib.contextmanager
def _helpers(n_helpers: int, queue: deque, failed: list):
    """Start ``n_helpers`` helper processes; yield a function that sets them to work on ``queue``.

    Once set to work, each helper has a thread here that takes
    ``(data, path)`` jobs from the right of ``queue``, sends them to its
    process and waits for the answer; a job the helper could not draw is
    appended to ``failed``. On leaving, the helpers finish their current job
    and stop; on an error, the queue is emptied first.
    """
    processes = [p for p in (_start_helper() for _ in range(n_helpers)) if p is not None]
    threads = [threading.Thread(target=_feed_helper, args=(p, queue, failed),
                                name="gridwatch-plot-helper", daemon=True) for p in processes]

    def start_feeding():
        for thread in threads:
            thread.start()

    try:
        yield start_feeding
    except BaseException:
        queue.clear()
        raise
    finally:
        for thread, process in zip(threads, processes, strict=True):
            if thread.ident is not None:
                thread.join()
            else:  # never set to work
                _stop_helper(process)


def _start_helper():
    """A helper process (see :func:`plot_sites`), or None if it cannot be started."""
    if not sys.executable:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "from gridwatch.report.plots import _helper_main; _helper_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    except OSError:
        return None


def _feed_helper(process, queue: deque, failed: list) -> None:
    """Send jobs from the right of ``queue`` to ``process`` until it is empty or the helper fails."""
    import select

    try:
        while True:
            try:
                job = queue.pop()
            except IndexError:
                return
            data, path = job
            try:
                pickle.dump(data, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.flush()
                if os.name == "posix":
                    ready, _, _ = select.select([process.stdout], [], [], HELPER_TIMEOUT_S)
                    if not ready:
                        raise TimeoutError
                png = pickle.load(process.stdout)
            except (OSError, EOFError, TimeoutError, pickle.UnpicklingError):
                failed.append(job)  # the helper died or hangs: no more jobs for it
                return
            if isinstance(png, bytes):
                _write_bytes(png, path)
            else:
                failed.append(job)  # drawn again here, where the error shows its traceback
    finally:
        _stop_helper(process)


def _stop_helper(process) -> None:
    """Close the helper's input (it then exits); kill it if it does not."""
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


def _helper_main() -> None:
    """The loop of a helper process: read a site's data, answer with its PNG.

    The answer is the PNG's bytes or, if drawing failed, the error's text (a
    str). Anything else printed goes to standard error, so it cannot corrupt
    the answers. Files are written by the calling process only.
    """
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    templates = {}
    with _rc():
        while True:
            try:
                data = pickle.load(jobs)
            except EOFError:
                return
            try:
                answer = _png_bytes(_render(templates, data))
            except Exception as exc:  # noqa: BLE001 - reported; the site is drawn again by the caller
                answer = f"{type(exc).__name__}: {exc}"
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()


# =====================================================================================
# shared state: what every plot of one run needs, computed once
# =====================================================================================
class _Context:
    """Per-run lookups shared by the plots of one run (built once per run)."""

    def __init__(self, result):
        self.result = result
        self.grid = result.grid
        self.position = {m: i for i, m in enumerate(_meter_columns(result))}
        self.assets = {a: i for i, a in enumerate(_asset_ids(result))}
        self.flags = result.flags.set_index(col.METER_ID, drop=False) if len(result.flags) else None
        tz = (result.info or {}).get("config", {}).get("data", {}).get("timezone", "UTC")
        self.local_time = (self.grid.index.tz_convert(tz).tz_localize(None).to_numpy()
                           if self.grid.index.tz is not None else self.grid.index.to_numpy())
        self.dates = self.grid.dates.to_numpy()
        self._classes = None
        self._bands = {}

    # -- peers -------------------------------------------------------------------------
    def classes(self) -> tuple[np.ndarray, str]:
        """Customer class per analysed meter, and how they were found."""
        if self._classes is None:
            self._classes = _customer_classes(self.result, list(self.position))
        return self._classes

    def peer_band(self, meter_class):
        """Daily 10th, 50th and 90th percentile of the class's daily mean demand [kW], and its size.

        From the run's :class:`gridwatch.peers.DemandBands` (every analysed
        meter, also in a partitioned run that kept only the flagged ones).
        """
        if meter_class not in self._bands:
            bands = self.bands()
            q = bands.percentiles(meter_class, [PEER_LOW, 50, PEER_HIGH])
            self._bands[meter_class] = (q, int(bands.members.get(meter_class, 0)))
        return self._bands[meter_class]

    def bands(self):
        """The run's demand counts per class (counted here for a result without them)."""
        bands = getattr(self.result, "peer_bands", None)
        if bands is None:
            import pandas as pd

            from gridwatch.peers import demand_bands

            classes, _ = self.classes()
            bands = demand_bands(self.result.detection.mean_kw,
                                 pd.DataFrame({col.CUSTOMER_CLASS: classes}))
            self.result.peer_bands = bands
        return bands

    def flag_row(self, meter_id) -> dict:
        import pandas as pd

        if self.flags is None or meter_id not in self.flags.index:
            return {}
        row = self.flags.loc[meter_id]
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        return row.to_dict()


def _meter_columns(result) -> list[str]:
    return [str(c) for c in result.kw.columns]


def _asset_ids(result) -> list[str]:
    return [] if result.balance is None else [str(a) for a in result.balance.asset_ids]


def _is_true(values) -> np.ndarray:
    return values.astype(str).str.lower().isin(["true", "1"]).to_numpy()


def _customer_classes(result, meter_ids) -> tuple[np.ndarray, str]:
    """The customer class of each analysed meter: from the run, else the input's meters table."""
    import pandas as pd

    meters = getattr(result, "meters", None)
    if meters is None:
        input_dir = (result.info or {}).get("input_dir")
        if input_dir:
            try:
                from gridwatch.sources.files import find_table, read_meters

                path = find_table(input_dir, "meters")
                if path is not None:
                    meters, _ = read_meters(path)
            except Exception:  # noqa: BLE001 - a missing class only widens the peer group
                meters = None
    if meters is None or col.CUSTOMER_CLASS not in meters:
        return np.full(len(meter_ids), "all", dtype=object), "all meters"
    lookup = pd.Series(meters[col.CUSTOMER_CLASS].astype("string").fillna("other").to_numpy(),
                       index=meters[col.METER_ID].astype(str).to_numpy())
    lookup = lookup[~lookup.index.duplicated()]
    return lookup.reindex(meter_ids).fillna("other").to_numpy(dtype=object), "class"


def _unknown_message(result, site_id) -> str:
    meters = _meter_columns(result)
    assets = _asset_ids(result)

    def some(ids):
        shown = ", ".join(ids[:3])
        return shown + (", ..." if len(ids) > 3 else "")

    have = f"{len(meters)} meters ({some(meters)})"
    have += f" and {len(assets)} assets ({some(assets)})" if assets else " and no upstream assets"
    return f"no meter or asset {site_id!r} in this run; it has {have}"


# =====================================================================================
# small helpers
# =====================================================================================
def _new_figure(figsize, fig):
    """A fresh Agg-backed figure (never through pyplot), or the one given."""
    if fig is not None:
        return fig
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _tx(text) -> str:
    """Text safe for matplotlib: ``$`` would otherwise start mathtext; control characters shown as ``?``."""
    return _plain(text).replace("$", r"\$")  # with every $ escaped the text is never mathtext


def _plain(text) -> str:
    """Text with control characters shown as ``?`` (for :func:`_text_line`, which has no mathtext)."""
    return "".join("?" if unicodedata.category(c)[0] == "C" else c for c in str(text))


def _num(value, default=np.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out


def _onset_date(value):
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    text = str(value).strip()
    if not text or text.lower() in {"nan", "<na>", "none"}:
        return None
    try:
        return np.datetime64(pd.Timestamp(text).date(), "D")
    except ValueError:
        return None


def _day_edges(dates: np.ndarray) -> np.ndarray:
    """Day boundaries (n_days + 1) for a per-day step band."""
    d = dates.astype("datetime64[D]")
    return np.concatenate([d, d[-1:] + 1]).astype("datetime64[s]")


def _step(values: np.ndarray) -> np.ndarray:
    return np.concatenate([values, values[-1:]])


def _date_num(values) -> np.ndarray:
    """Matplotlib date numbers [days since the epoch] of naive datetime64 values."""
    from matplotlib.dates import date2num

    return np.asarray(date2num(np.asarray(values)), dtype=np.float64)


def _reasons(value, limit=150) -> str:
    """The ``reasons`` text, cut to ``limit`` characters; empty when missing."""
    text = str(value or "")
    if text in {"nan", "<NA>", "None"}:
        return ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


# =====================================================================================
# what a plot shows: pure functions of the run
# =====================================================================================
@dataclass(frozen=True)
class _MeterData:
    """Everything a meter's plot shows; dates are matplotlib date numbers [days]."""

    title: str
    summary: str
    reasons: str
    time_day: np.ndarray  # hourly cells, local time
    kw: np.ndarray
    expected_kw: np.ndarray
    expected_label: str
    edges_day: np.ndarray  # n_days + 1 local day boundaries
    peer_low_kw: np.ndarray  # stepped, n_days + 1
    peer_high_kw: np.ndarray
    peer_label: str
    ylim_kw: tuple[float, float]
    heat_kw: np.ndarray  # n_days x 24
    heat_max_kw: float
    onset_day: float | None  # shown on the demand panel when not None
    onset_text: str
    heat_onset_day: float | None  # shown on the heat map when not None
    heat_onset_text: str


def _meter_data(ctx: _Context, meter_id: str, *, weeks) -> _MeterData:
    """What the plot of ``meter_id`` shows (see :func:`plot_meter`)."""
    import pandas as pd

    result, grid = ctx.result, ctx.grid
    if meter_id not in ctx.position:
        raise InputError(_unknown_message(result, meter_id),
                         hint="pass a meter_id from flags.csv")
    pos = ctx.position[meter_id]
    det = result.detection
    flag = ctx.flag_row(meter_id)
    onset = _onset_date(flag.get(col.ONSET))

    # Window: the last `weeks` weeks ending at as-of, trimmed to days with data.
    n_days = grid.n_days
    first = max(0, n_days - int(weeks) * 7)
    has = np.flatnonzero(np.isfinite(det.mean_kw[first:, pos]))
    if has.size:
        first += int(has[0])
    days = np.arange(first, n_days)
    cells = np.flatnonzero(grid.day_of_cell >= first)
    kw = result.kw.iloc[cells, pos].to_numpy(dtype=np.float64)
    expected = result.expected.predict(grid, columns=[pos])[cells, 0]
    dates = ctx.dates[days]

    # Peer band, scaled to this meter by the ratio of its own level to the peers' median
    # over its reference days (before the onset; all days without one).
    classes, source = ctx.classes()
    meter_class = classes[pos]
    (low, mid, high), n_peers = ctx.peer_band(meter_class)
    own = det.mean_kw[:, pos]
    ref = np.ones(n_days, dtype=bool)
    if onset is not None:
        ref = ctx.dates.astype("datetime64[D]") < onset
    ok = ref & np.isfinite(own) & np.isfinite(mid) & (mid > 0)
    scale = float(np.median(own[ok]) / np.median(mid[ok])) if ok.any() and np.median(mid[ok]) > 0 else 1.0
    if onset is None:
        # Without an onset there is no clean reference: scaling the peers to the
        # meter's own level would hide a load that was running all along.
        scale = 1.0
    who = f"{_tx(meter_class)} meters" if source == "class" else "meters (class unknown)"
    # The legend names the peer group; the factor, which differs for every meter,
    # is in the summary line (so the legend can be drawn once for all meters).
    peer_label = (f"peers: {PEER_LOW}th-{PEER_HIGH}th pct of daily mean of {n_peers} {who}, "
                  + ("scaled to this meter's level before onset" if onset is not None
                     else "as measured"))
    top = np.nanpercentile(np.concatenate([kw[np.isfinite(kw)], expected, high[days] * scale]), 99.5) \
        if np.isfinite(kw).any() else 1.0

    # Day x hour means.
    n_hours = 24
    hour = grid.hour_of_cell[cells]
    row = grid.day_of_cell[cells] - first
    finite = np.isfinite(kw)
    idx = row * n_hours + hour
    total = np.bincount(idx[finite], weights=kw[finite], minlength=len(days) * n_hours)
    count = np.bincount(idx[finite], minlength=len(days) * n_hours)
    with np.errstate(invalid="ignore", divide="ignore"):
        heat = (total / count).reshape(len(days), n_hours)
    vmax = float(np.nanpercentile(heat, 99)) if np.isfinite(heat).any() else 1.0

    # Title lines.
    kind = str(flag.get(col.KIND) or "").strip()
    flagged = str(flag.get(col.FLAGGED, "")).lower() == "true"
    transformer = flag.get(col.TRANSFORMER_ID)
    if transformer is None or transformer is pd.NA or str(transformer) in {"", "nan", "<NA>"}:
        transformer = "unknown"
    status = (f"FLAGGED: {kind.replace('_', ' ')}" if flagged
              else ("not flagged" if flag else "not analysed"))
    parts = []
    if flag:
        parts.append(f"score {_num(flag.get(col.SCORE)):.2f}")
    if flagged:
        parts.append(f"excess {_num(flag.get(col.EXCESS_KW)):.2f} kW")
        if onset is not None:
            parts.append(f"since {pd.Timestamp(onset):%Y-%m-%d}")
        kwh = _num(flag.get(col.EXCESS_KWH))
        if np.isfinite(kwh):
            parts.append(f"{kwh:,.0f} kWh")
    if onset is not None:
        parts.append(f"peers scaled x{scale:.2g}")
    parts.append(f"as of {result.as_of}")

    in_top = onset is not None and dates[0] <= onset <= dates[-1] + np.timedelta64(1, "D")
    in_heat = onset is not None and dates[0] <= onset <= dates[-1]
    onset_day = float(_date_num([onset.astype("datetime64[s]")])[0]) if onset is not None else None
    return _MeterData(
        title=_plain(f"Meter {meter_id} | transformer {transformer} | {status}"),
        summary=_plain(" | ".join(parts)),
        reasons=_plain(_reasons(flag.get(col.REASONS))),
        time_day=_date_num(ctx.local_time[cells]),
        kw=kw,
        expected_kw=np.asarray(expected, dtype=np.float64),
        expected_label=("expected without new load (fitted before onset)" if onset is not None
                        else "expected consumption"),
        edges_day=_date_num(_day_edges(dates)),
        peer_low_kw=_step(low[days] * scale),
        peer_high_kw=_step(high[days] * scale),
        peer_label=peer_label,
        ylim_kw=(0.0, max(float(top) * 1.25, 0.1)),
        heat_kw=heat,
        heat_max_kw=max(vmax, 0.1),
        onset_day=onset_day if in_top else None,
        onset_text=f"onset {pd.Timestamp(onset):%d %b %Y}" if onset is not None else "",
        heat_onset_day=onset_day if in_heat else None,
        heat_onset_text=f"onset {pd.Timestamp(onset):%d %b}" if onset is not None else "",
    )


@dataclass(frozen=True)
class _AssetData:
    """Everything an asset's plot shows; dates are matplotlib date numbers [days]."""

    title: str
    summary: str
    reasons: str
    noon_day: np.ndarray  # one point per day, at noon
    edges_day: np.ndarray  # n_days + 1 day boundaries (the x limits)
    delivered_kw: np.ndarray
    metered_kw: np.ndarray
    accounted_kw: np.ndarray  # metered + modelled losses
    loss_kw: np.ndarray
    unexplained_kw: np.ndarray
    ylim_balance_kw: tuple[float, float]
    ylim_unexplained_kw: tuple[float, float]
    onset_day: float | None
    onset_text: str
    suspect_labels: tuple[str, ...]
    suspect_kw: tuple[np.ndarray, ...]
    ylim_suspects_kw: tuple[float, float]
    suspects_title: str
    no_suspects_text: str  # shown instead of suspects when there are none


def _asset_data(ctx: _Context, asset_id: str) -> _AssetData:
    """What the plot of ``asset_id`` shows (see :func:`plot_asset`)."""
    import pandas as pd

    result = ctx.result
    if asset_id not in ctx.assets:
        raise InputError(_unknown_message(result, asset_id),
                         hint="pass an asset_id from transformers.csv")
    bal = result.balance
    j = ctx.assets[asset_id]
    delivered = bal.delivered_kw[:, j]
    metered = bal.metered_kw[:, j]
    loss = bal.loss_kw[:, j]
    unexplained = bal.unexplained_kw[:, j]
    has = np.flatnonzero(np.isfinite(delivered) | np.isfinite(metered))
    lo, hi = (int(has[0]), int(has[-1]) + 1) if has.size else (0, len(bal.dates))
    sl = slice(lo, hi)
    dates = bal.dates.to_numpy()[sl]
    noon = dates.astype("datetime64[D]").astype("datetime64[s]") + np.timedelta64(12, "h")

    row = bal.table[bal.table[col.ASSET_ID].astype(str) == asset_id]
    info = row.iloc[0].to_dict() if len(row) else {}
    onset = _onset_date(info.get(col.ONSET))
    flagged = bool(info.get(col.FLAGGED, False)) and str(info.get(col.FLAGGED)).lower() != "false"
    show_onset = onset is not None and dates.size and dates[0] <= onset <= dates[-1]

    accounted = metered[sl] + np.nan_to_num(loss[sl])
    ylim_balance = ylim_unexplained = (0.0, 1.0)
    if has.size:
        lo_y = float(np.nanmin(np.concatenate([delivered[sl], metered[sl]])))
        hi_y = float(np.nanmax(np.concatenate([delivered[sl], accounted])))
        pad = max(hi_y - lo_y, 0.1)
        ylim_balance = (max(0.0, lo_y - 0.9 * pad), hi_y + 0.15 * pad)
        top = float(np.nanmax(np.concatenate([loss[sl], unexplained[sl], [0.1]])))
        bottom = float(np.nanmin(np.concatenate([unexplained[sl], [0.0]])))
        ylim_unexplained = (bottom - 0.1 * (top - bottom), top + 0.45 * (top - bottom))

    # Suspects, best first.
    sus = bal.suspects
    sus = sus[sus[col.ASSET_ID].astype(str) == asset_id].sort_values("rank").head(MAX_SUSPECTS)
    mean_kw = result.detection.mean_kw
    labels, series = [], []
    for _, s in sus.iterrows():
        m = str(s[col.METER_ID])
        if m not in ctx.position:
            continue
        strength = "strong" if bool(s.get("strong", False)) else "weak"
        labels.append(f"#{int(s['rank'])} {_tx(m)} ({strength} evidence)")
        series.append(np.asarray(mean_kw[sl, ctx.position[m]], dtype=np.float64))
    ylim_suspects = (0.0, 1.0)
    values = np.concatenate(series) if series else np.array([])
    values = values[np.isfinite(values)]
    if values.size:
        # what autoscaling (5 % margins) then a floor at 0 would give, plus a band
        # at the top for the legend's row, which must not hide a suspect's line
        v_lo, v_hi = float(values.min()), float(values.max())
        top = v_hi + 0.05 * (v_hi - v_lo) if v_hi > v_lo else max(v_hi * 1.05, 0.1)
        ylim_suspects = (0.0, top * LEGEND_HEADROOM)
    if series:
        suspects_title = f"Daily mean demand of the top {len(series)} suspect meter(s) under {_tx(asset_id)}"
        no_suspects = ""
    else:
        suspects_title = "Suspect meters"
        no_suspects = ("no suspect meters (the asset is not flagged)" if not flagged
                       else "no suspect meters with data")

    level = str(info.get("level") or "asset")
    status = "FLAGGED: unexplained load" if flagged else "not flagged"
    parts = []
    if flagged:
        parts.append(f"unexplained {_num(info.get('unexplained_kw')):.2f} kW")
        if onset is not None:
            parts.append(f"since {pd.Timestamp(onset):%Y-%m-%d}")
    n_meters = _num(info.get("n_meters"))
    if np.isfinite(n_meters):
        parts.append(f"{int(n_meters)} customer meters")
    cov = _num(info.get("coverage"))
    if np.isfinite(cov):
        parts.append(f"metered coverage {cov:.0%}")
    parts.append(f"mean modelled losses {np.nanmean(loss[sl]) if has.size else float('nan'):.2f} kW")
    parts.append(f"as of {result.as_of}")
    return _AssetData(
        title=_plain(f"{level.capitalize()} {asset_id} | {status}"),
        summary=_plain(" | ".join(parts)),
        reasons=_plain(_reasons(info.get(col.REASONS))),
        noon_day=_date_num(noon),
        edges_day=_date_num(_day_edges(dates)),
        delivered_kw=np.asarray(delivered[sl], dtype=np.float64),
        metered_kw=np.asarray(metered[sl], dtype=np.float64),
        accounted_kw=np.asarray(accounted, dtype=np.float64),
        loss_kw=np.asarray(loss[sl], dtype=np.float64),
        unexplained_kw=np.asarray(unexplained[sl], dtype=np.float64),
        ylim_balance_kw=ylim_balance,
        ylim_unexplained_kw=ylim_unexplained,
        onset_day=float(_date_num([onset.astype("datetime64[s]")])[0]) if show_onset else None,
        onset_text=f"onset {pd.Timestamp(onset):%d %b %Y}" if onset is not None else "",
        suspect_labels=tuple(labels),
        suspect_kw=tuple(series),
        ylim_suspects_kw=ylim_suspects,
        suspects_title=suspects_title,
        no_suspects_text=no_suspects,
    )


# =====================================================================================
# drawing: a static layer drawn once per date window, the rest drawn per site
# =====================================================================================
def _title_lines(fig) -> tuple:
    """The figure's three title lines: what the site is, its numbers, the reasons."""
    return (_text_line(fig, 0.075, 0.985, fontsize=13, weight="bold"),
            _text_line(fig, 0.075, 0.935, fontsize=10),
            _text_line(fig, 0.075, 0.905, fontsize=8.5, color="0.3"))


def _text_line(fig, x, y, *, fontsize, weight="normal", color="black"):
    """A left-aligned line of text whose top is at figure fraction ``(x, y)``; see :class:`_Glyphs`.

    The artist is a :class:`matplotlib.patches.PathPatch` with ``set_text``
    and ``get_text``; it lies in ``fig.artists``.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path
    from matplotlib.transforms import Affine2D, ScaledTranslation

    class TextLine(PathPatch):
        def set_text(self, text):
            self._text = str(text)
            vertices, codes = glyphs.outline(self._text)
            self.set_path(Path(vertices, codes))

        def get_text(self):
            return self._text

    glyphs = _Glyphs.of(FontProperties(size=fontsize, weight=weight))
    # outline units -> points below the top of the line -> inches -> pixels, at (x, y)
    to_pixels = (Affine2D().scale(fontsize / glyphs.units_per_point).translate(0, -fontsize * glyphs.ascent)
                 .scale(1 / 72) + fig.dpi_scale_trans + ScaledTranslation(x, y, fig.transFigure))
    line = TextLine(Path(np.zeros((0, 2))), facecolor=color, edgecolor="none", lw=0, snap=False,
                    transform=to_pixels)
    line.set_text("")
    fig.add_artist(line)
    return line


class _Glyphs:
    """Glyph outlines and word layouts of one font, to draw text as one filled path.

    Matplotlib 3.11 draws text glyph by glyph through FreeType, about 40 µs a
    character; the title lines of a plot (about 300 characters, different for
    every site) took half of the time to draw it. Drawn as one path from
    outlines cached per word, they take about a tenth of that. The glyphs are
    the font's own outlines, laid out by :class:`matplotlib.textpath.TextToPath`
    (kerning within words), unhinted as the plots' other text is (see
    ``RC_PARAMS``): side by side the two look the same.

    Only the font matplotlib finds for the properties is used (no fallback
    font for characters it lacks), which is enough for ids and the tool's
    own words.
    """

    _fonts: dict = {}
    MAX_WORDS = 20_000

    @classmethod
    def of(cls, prop) -> _Glyphs:
        """The shared instance for a font (one per font file and size-independent)."""
        from matplotlib.font_manager import findfont

        path = findfont(prop)
        if path not in cls._fonts:
            cls._fonts[path] = cls(path)
        return cls._fonts[path]

    def __init__(self, path):
        from matplotlib.font_manager import get_font
        from matplotlib.ft2font import LoadFlags
        from matplotlib.textpath import TextToPath

        self._to_path = TextToPath()
        self._font = get_font(path)
        self._set_size()
        self.units_per_point = TextToPath.FONT_SCALE  # outlines are for a FONT_SCALE-pt font
        self.space = self._font.load_char(ord(" "), flags=LoadFlags.NO_HINTING).linearHoriAdvance / 65536
        # ascent [em] as matplotlib places text with va="top"
        table = self._font.get_sfnt_table("OS/2")
        head = self._font.get_sfnt_table("head")
        ascent = table["sTypoAscender"] if table else self._font.ascender
        self.ascent = ascent / head["unitsPerEm"]
        self._outlines = {}
        self._words = {}

    def _set_size(self):
        from matplotlib.textpath import TextToPath

        self._font.set_size(TextToPath.FONT_SCALE, TextToPath.DPI)  # the font object is shared

    def word(self, word: str) -> tuple:
        """Vertices, codes and advance of one word (no space), cached."""
        cached = self._words.get(word)
        if cached is None:
            self._set_size()
            # laid out with a trailing space, whose position is the word's advance
            info, new, _ = self._to_path.get_glyphs_with_font(
                self._font, word + " ", glyph_map=self._outlines, return_new_glyphs_only=True)
            self._outlines.update(new)
            *glyphs, (_, advance, _, _) = info
            parts = [(self._outlines[r][0] + (x, y), self._outlines[r][1]) for r, x, y, _ in glyphs]
            parts = [(v, c) for v, c in parts if len(c)]
            vertices = np.concatenate([v for v, _ in parts]) if parts else np.zeros((0, 2))
            codes = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, dtype=np.uint8)
            if len(self._words) >= self.MAX_WORDS:
                self._words.clear()
            cached = self._words[word] = (vertices, codes, float(advance))
        return cached

    def outline(self, text: str) -> tuple:
        """Vertices and codes of a line of text, in outline units, origin on the baseline."""
        vertices, codes, x = [], [], 0.0
        for i, word in enumerate(text.split(" ")):
            if i:
                x += self.space
            v, c, advance = self.word(word)
            if len(c):
                vertices.append(v + (x, 0.0))
                codes.append(c)
            x += advance
        if not codes:
            return np.zeros((0, 2)), None
        return np.concatenate(vertices), np.concatenate(codes)


class _Layers:
    """Render a figure as a cached static background plus the artists that change.

    ``static`` returns the artists whose look depends only on the state that
    :meth:`state` summarises (an axis: its view interval; a text: its string;
    a legend: its labels; axes backgrounds never change). They are drawn
    once per distinct state into a cached background.

    ``islands`` returns artists that change between sites but take few
    looks and touch no other artist (the meter legend, below its panel):
    each look is drawn once and its pixels are cached as a stamp.

    Every other child of the figure and of its axes is drawn for each site,
    in the order a full draw uses (axes by z-order, then each axes' children
    by z-order), on top of the restored background and stamps. The result
    equals a full draw as long as no static artist or island overlaps an
    artist that a full draw would put beneath it (the tests check this).
    """

    def __init__(self, fig, static, islands=list):
        self.fig = fig
        self.static = static
        self.islands = islands
        self._backgrounds = {}
        self._stamps = {}

    @staticmethod
    def state(artist):
        """What the look of a static artist or island depends on."""
        from matplotlib.axis import Axis
        from matplotlib.legend import Legend
        from matplotlib.text import Text

        if isinstance(artist, Axis):
            return tuple(float(v) for v in artist.get_view_interval())
        if isinstance(artist, Text):
            return artist.get_text()
        if isinstance(artist, Legend):
            return tuple(t.get_text() for t in artist.get_texts())
        return None

    def key(self) -> tuple:
        """What the static layer depends on."""
        return tuple(self.state(a) for a in self.static())

    def dynamic(self) -> list:
        """The artists drawn for each site, in drawing order."""
        from matplotlib.axes import Axes

        fixed = {id(a) for a in [*self.static(), *self.islands()]} | {id(self.fig.patch)}
        out = []
        for artist in sorted(self.fig.get_children(), key=lambda a: a.get_zorder()):
            if isinstance(artist, Axes):
                inner = sorted(artist.get_children(), key=lambda a: a.get_zorder())
                out += [a for a in inner if id(a) not in fixed and a is not artist.patch]
            elif id(artist) not in fixed:
                out.append(artist)
        return out

    def render(self) -> np.ndarray:
        """Draw the figure; the RGB pixels, a view into the canvas valid until the next draw."""
        canvas = self.fig.canvas
        for ax in self.fig.axes:
            ax.viewLim  # noqa: B018 - applies pending autoscaling before the key is read
        key = self.key()
        islands = [a for a in self.islands() if a is not None and a.get_visible()]
        dynamic = self.dynamic()
        background = self._backgrounds.get(key)
        if background is None:
            for artist in dynamic + islands:
                artist.set_animated(True)
            try:
                canvas.draw()  # animated artists are left out
            finally:
                for artist in dynamic + islands:
                    artist.set_animated(False)
            background = canvas.copy_from_bbox(self.fig.bbox)
            _remember(self._backgrounds, key, background, _MAX_BACKGROUNDS)
        else:
            canvas.restore_region(background)
        renderer = canvas.get_renderer()
        for island in islands:
            stamp_key = (key, self.state(island))
            stamp = self._stamps.get(stamp_key)
            if stamp is None:
                island.draw(renderer)
                bbox = island.get_window_extent(renderer).padded(2)  # antialiased edges
                _remember(self._stamps, stamp_key, canvas.copy_from_bbox(bbox), _MAX_STAMPS)
            else:
                canvas.restore_region(stamp)
        for artist in dynamic:
            artist.draw(renderer)
        return np.asarray(canvas.buffer_rgba())[..., :3]


def _remember(cache: dict, key, value, size: int) -> None:
    """Put ``value`` in ``cache``, dropping the oldest entry beyond ``size`` entries."""
    if len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


class _MeterFigure:
    """The meter figure: layout built once, redrawn for each meter by :meth:`update`."""

    def __init__(self, fig=None):
        import matplotlib
        import matplotlib.dates as mdates

        self.fig = fig = _new_figure(METER_FIGSIZE, fig)
        gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.15], width_ratios=[1, 0.018],
                              left=0.075, right=0.93, top=0.845, bottom=0.07, hspace=0.62,
                              wspace=0.02)
        self.ax = ax = fig.add_subplot(gs[0, 0])
        self.axh = axh = fig.add_subplot(gs[1, 0])
        self.cax = cax = fig.add_subplot(gs[1, 1])

        # (1) demand vs expected vs peers; the grid lies beneath the data
        ax.set_axisbelow(True)
        ax.xaxis_date()
        self.peers = ax.fill_between([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], step="post",
                                     color="tab:green", alpha=0.18, lw=0)
        (self.demand,) = ax.plot([], [], color="tab:blue", lw=0.7)
        (self.expected,) = ax.plot([], [], color="black", lw=1.0, alpha=0.8)
        self.onset = ax.axvline(0.0, color="crimson", lw=1.6, ls="--", zorder=5, visible=False)
        self.onset_note = ax.annotate(
            "", xy=(0.0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
            textcoords="offset points", ha="left", va="top", color="crimson", fontsize=9,
            fontweight="bold", visible=False)
        ax.set_ylabel("demand [kW]")
        _fixed_y_axis(ax, left_pt=36, nbins=6)
        ax.set_xlabel("local date")
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(alpha=0.3, lw=0.5)
        ax.set_title("Hourly demand against expected consumption and peers", fontsize=10, loc="left")

        # (2) day x hour heat map
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
        # the image lies above the (static) day axis, whose tick marks touch its edge
        axh.set_axisbelow(True)
        self.heat = axh.imshow(np.zeros((1, 24)), aspect="auto", cmap=cmap, vmin=0, vmax=1,
                               interpolation="nearest", origin="upper", extent=(0, 24, 1, 0),
                               rasterized=True, zorder=1)
        axh.yaxis_date()
        axh.set_xlim(0, 24)
        axh.set_xticks(np.arange(0, 25, 3))
        axh.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)])
        axh.set_xlabel("local hour of day")
        axh.set_ylabel("day")
        axh.yaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
        axh.yaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        self.heat_onset = axh.axhline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        self.heat_onset_note = axh.annotate(
            "", xy=(1.0, 0.0), xycoords=("axes fraction", "data"), xytext=(-4, -3),
            textcoords="offset points", ha="right", va="bottom", color="crimson", fontsize=9,
            fontweight="bold", visible=False,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        axh.set_title("Demand by day and hour (a load running round the clock shows as a band "
                      "across all 24 hours; grey = no data)", fontsize=10, loc="left")
        # The colour bar: the colour map as an image from 0 to the top of the scale.
        # (A matplotlib Colorbar rebuilds itself on every change of scale, which
        # costs more than the rest of the update.)
        self.scale = cax.imshow(np.linspace(0.0, 1.0, 256)[:, None], aspect="auto", cmap=cmap,
                                vmin=0.0, vmax=1.0, interpolation="nearest", origin="lower",
                                extent=(0, 1, 0, 1))
        cax.set_xticks([])
        cax.yaxis.tick_right()
        cax.yaxis.set_label_position("right")
        cax.set_ylabel("demand [kW]")
        _fixed_y_axis(cax, right_pt=27, nbins=5)

        # title lines
        self.title, self.summary, self.reasons = _title_lines(fig)

        self.layers = _Layers(fig, lambda: [
            ax.title, ax._left_title, ax._right_title, ax.xaxis,
            axh.title, axh._left_title, axh._right_title, axh.xaxis, axh.yaxis],
            islands=lambda: [ax.get_legend()])

    def update(self, d: _MeterData) -> None:
        """Show meter ``d``: every artist that depends on the meter is set here."""
        ax, axh = self.ax, self.axh
        self.peers.set_data(d.edges_day, d.peer_low_kw, d.peer_high_kw)
        self.demand.set_data(d.time_day, d.kw)
        self.expected.set_data(d.time_day, d.expected_kw)
        ax.set_xlim(d.edges_day[0], d.edges_day[-1])
        ax.set_ylim(*d.ylim_kw)
        handles = [self.peers, self.demand, self.expected]
        labels = [d.peer_label, "metered demand (hourly)", d.expected_label]
        shown = d.onset_day is not None
        self.onset.set_visible(shown)
        self.onset_note.set_visible(shown)
        if shown:
            self.onset.set_xdata([d.onset_day, d.onset_day])
            self.onset_note.xy = (d.onset_day, 1.0)
            self.onset_note.set_text(d.onset_text)
            handles.append(self.onset)
            labels.append("onset (flags.csv)")
        legend = ax.get_legend()
        if legend is None or [t.get_text() for t in legend.get_texts()] != labels:
            # below the panel, clear of the data: drawn once per set of labels
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, -0.2), fontsize=8,
                      ncols=2, frameon=False, borderaxespad=0.0)

        n_days = d.heat_kw.shape[0]
        d0 = d.edges_day[0]
        self.heat.set_data(d.heat_kw)
        self.heat.set_extent((0, 24, d0 + n_days, d0))
        self.heat.set_clim(0, d.heat_max_kw)
        self.scale.set_extent((0, 1, 0, d.heat_max_kw))
        self.cax.set_ylim(0, d.heat_max_kw)
        axh.set_xlim(0, 24)
        axh.set_ylim(d0 + n_days, d0)
        shown = d.heat_onset_day is not None
        self.heat_onset.set_visible(shown)
        self.heat_onset_note.set_visible(shown)
        if shown:
            self.heat_onset.set_ydata([d.heat_onset_day, d.heat_onset_day])
            self.heat_onset_note.xy = (1.0, d.heat_onset_day)
            self.heat_onset_note.set_text(d.heat_onset_text)

        self.title.set_text(d.title)
        self.summary.set_text(d.summary)
        self.reasons.set_text(d.reasons)

    def render(self) -> np.ndarray:
        """The current meter's image, ``(height, width, 3)`` uint8."""
        return self.layers.render()


def _fixed_y_axis(ax, *, left_pt=None, right_pt=None, nbins=4) -> None:
    """At most ``nbins`` + 1 round y ticks, and the y label at a fixed distance from the axes [pt].

    A fixed label position keeps the layout the same from site to site and
    spares matplotlib measuring every tick label to place it.
    """
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import offset_copy

    ax.yaxis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
    if left_pt is not None:
        transform = offset_copy(ax.transAxes, fig=ax.figure, x=-left_pt, units="points")
        ax.yaxis.set_label_coords(0.0, 0.5, transform=transform)
    else:
        transform = offset_copy(ax.transAxes, fig=ax.figure, x=right_pt, units="points")
        ax.yaxis.set_label_coords(1.0, 0.5, transform=transform)


class _AssetFigure:
    """The asset figure: layout built once, redrawn for each asset by :meth:`update`."""

    def __init__(self, fig=None):
        import matplotlib.dates as mdates

        self.fig = fig = _new_figure(ASSET_FIGSIZE, fig)
        gs = fig.add_gridspec(3, 1, height_ratios=[1.1, 0.8, 0.9], left=0.085, right=0.97,
                              top=0.855, bottom=0.07, hspace=0.5)
        self.ax = ax = fig.add_subplot(gs[0])
        self.axu = axu = fig.add_subplot(gs[1], sharex=ax)
        self.axs = axs = fig.add_subplot(gs[2], sharex=ax)
        for a in (ax, axu, axs):
            a.set_axisbelow(True)  # the grid lies beneath the data
            a.grid(alpha=0.3, lw=0.5)
        ax.xaxis_date()
        marker = {"marker": "o", "ms": 2.5}

        # (1) delivered vs metered (+ losses): the gap is what nobody pays for
        self.gap = ax.fill_between([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], interpolate=True,
                                   color="crimson", alpha=0.3, lw=0)
        (self.delivered,) = ax.plot([], [], color="black", lw=1.6, **marker)
        (self.metered,) = ax.plot([], [], color="tab:blue", lw=1.4, **marker)
        (self.accounted,) = ax.plot([], [], color="tab:blue", lw=1.0, ls=":")
        self.onset = ax.axvline(0.0, color="crimson", lw=1.6, ls="--", zorder=5, visible=False)
        self.onset_note = ax.annotate(
            "", xy=(0.0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
            textcoords="offset points", ha="left", va="top", color="crimson", fontsize=9,
            fontweight="bold", visible=False)
        ax.set_ylabel("daily mean [kW]")
        _fixed_y_axis(ax, left_pt=36, nbins=6)
        ax.set_title("Power delivered into the asset against what its customer meters record "
                     "(daily mean; x 24 h = kWh per day)", fontsize=10, loc="left")
        ax.tick_params(labelbottom=False)

        # (2) losses and the unexplained load on their own scale
        axu.axhline(0, color="0.5", lw=0.8)
        (self.loss,) = axu.plot([], [], color="tab:orange", lw=1.3, **marker)
        (self.unexplained,) = axu.plot([], [], color="crimson", lw=1.5, **marker)
        self.onset_u = axu.axvline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        axu.set_ylabel("daily mean [kW]")
        _fixed_y_axis(axu, left_pt=36)
        axu.legend([self.loss, self.unexplained],
                   ["modelled technical losses", "unexplained load (delivered - metered - losses)"],
                   loc="upper left", fontsize=8, ncols=2, framealpha=0.9)
        axu.set_title("Modelled losses and the unexplained load", fontsize=10, loc="left")
        axu.tick_params(labelbottom=False)

        # (3) suspects (colours in rank order, as the default colour cycle gives them)
        self.suspects = [axs.plot([], [], color=color, lw=1.3, visible=False, **marker)[0]
                         for color in SUSPECT_COLORS]
        self.onset_s = axs.axvline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        self.no_suspects = axs.text(0.5, 0.5, "", transform=axs.transAxes, ha="center",
                                    va="center", color="0.4", visible=False)
        axs.set_ylabel("daily mean demand [kW]")
        _fixed_y_axis(axs, left_pt=36)
        axs.set_xlabel("local date")
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        axs.xaxis.set_major_locator(locator)
        axs.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))

        self.title, self.summary, self.reasons = _title_lines(fig)

        self.layers = _Layers(fig, lambda: [
            ax.title, ax._left_title, ax._right_title, ax.xaxis,
            axu.title, axu._left_title, axu._right_title, axu.xaxis,
            axs.title, axs._right_title, axs.xaxis])

    def update(self, d: _AssetData) -> None:
        """Show asset ``d``: every artist that depends on the asset is set here."""
        ax, axu, axs = self.ax, self.axu, self.axs
        x = d.noon_day
        self.gap.set_data(x, d.accounted_kw, d.delivered_kw,
                          where=d.delivered_kw > d.accounted_kw)
        self.delivered.set_data(x, d.delivered_kw)
        self.metered.set_data(x, d.metered_kw)
        self.accounted.set_data(x, d.accounted_kw)
        ax.set_xlim(d.edges_day[0], d.edges_day[-1])
        ax.set_ylim(*d.ylim_balance_kw)
        shown = d.onset_day is not None
        for artist in (self.onset, self.onset_note, self.onset_u, self.onset_s):
            artist.set_visible(shown)
        handles = [self.gap, self.delivered, self.metered, self.accounted]
        labels = ["gap = unexplained load", "delivered (upstream meter)",
                  "metered (sum of customer meters)", "metered + modelled losses"]
        if shown:
            for line in (self.onset, self.onset_u, self.onset_s):
                line.set_xdata([d.onset_day, d.onset_day])
            self.onset_note.xy = (d.onset_day, 1.0)
            self.onset_note.set_text(d.onset_text)
            handles.append(self.onset)
            labels.append("onset (transformers.csv)")
        ax.legend(handles, labels, loc="lower left", fontsize=8, ncols=2, framealpha=0.9)

        self.loss.set_data(x, d.loss_kw)
        self.unexplained.set_data(x, d.unexplained_kw)
        axu.set_ylim(*d.ylim_unexplained_kw)

        handles, labels = [], []
        for line, label, kw in zip(self.suspects, d.suspect_labels, d.suspect_kw, strict=False):
            line.set_data(x, kw)
            handles.append(line)
            labels.append(label)
        for i, line in enumerate(self.suspects):
            line.set_visible(i < len(d.suspect_labels))
        if shown:
            handles.append(self.onset_s)
            labels.append("asset onset")
        if axs.get_legend() is not None:
            axs.get_legend().remove()
        if d.suspect_labels:
            axs.legend(handles, labels, loc="upper left", fontsize=8, ncols=3, framealpha=0.9)
        axs.set_ylim(*d.ylim_suspects_kw)
        axs.set_title(d.suspects_title, fontsize=10, loc="left")
        self.no_suspects.set_text(d.no_suspects_text)
        self.no_suspects.set_visible(bool(d.no_suspects_text))

        self.title.set_text(d.title)
        self.summary.set_text(d.summary)
        self.reasons.set_text(d.reasons)

    def render(self) -> np.ndarray:
        """The current asset's image, ``(height, width, 3)`` uint8."""
        return self.layers.render()

