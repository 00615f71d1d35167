"""The investigator's plots: one PNG per site, readable without knowing the tool.

Every function is a pure function of a :class:`gridwatch.pipeline.RunResult`.
Matplotlib and pandas are imported lazily, inside the functions (so a helper
process that only draws starts without pandas), and figures are built as
plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas:
nothing goes through ``pyplot``, no window is opened, the user's backend and
``rcParams`` are left alone (no global style), and no figure is kept alive by
a figure manager. PNGs are written through the atomic writer.

This module holds the public API and what each plot shows; the drawing is
split over three modules:

- :mod:`gridwatch.report.figures`: the figure templates and how they are
  rendered;
- :mod:`gridwatch.report.png`: the PNG encoder and the encoder thread;
- :mod:`gridwatch.report.helpers`: the helper processes that draw some of
  the sites on other cores.

How a plot is made (and why it is fast enough for hundreds of sites)
--------------------------------------------------------------------
Drawing text and axes dominates the cost of a plot, not the data. So each
plot is split in two:

1. ``_meter_data`` / ``_asset_data`` (here): a pure function of the run that
   returns the small arrays and strings one site needs (:class:`_MeterData`,
   :class:`_AssetData`), limits included;
2. ``_MeterFigure`` / ``_AssetFigure`` (:mod:`~gridwatch.report.figures`): a
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
safe_plot_name(site_id) -> str
save_plot(fig, path) -> None
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.report.figures import _AssetFigure, _close, _MeterFigure, _rc
from gridwatch.report.helpers import _helper_count, _helpers
from gridwatch.report.png import PNG_COMPRESS_LEVEL, _encoder, _write_png

PLOTS_DIR = "plots"
MAX_SUSPECTS = 5
PEER_LOW, PEER_HIGH = 10, 90  # percentiles of the peer band
LEGEND_HEADROOM = 1.4  # y-range over the data's range on the suspects panel: its top holds the legend
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
        with _rc(), atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi,
                        pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    finally:
        _close(fig)


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
    ``get_text()``), not ``fig.texts``; see :class:`gridwatch.report.figures._Glyphs`.
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
    millisecond). It is here, next to the data classes it tells apart, rather than
    with the templates in :mod:`gridwatch.report.figures`; a helper process
    (:func:`gridwatch.report.helpers._helper_main`) imports it from here.
    """
    kind = _MeterFigure if isinstance(data, _MeterData) else _AssetFigure
    if kind not in templates:
        templates[kind] = kind()
    template = templates[kind]
    template.update(data)
    return template.render()


def _layout_key(data) -> tuple:
    """Sites with equal keys share their static layer (date window, legend)."""
    if isinstance(data, _MeterData):
        return ("meter", float(data.edges_day[0]), float(data.edges_day[-1]), data.peer_label,
                data.expected_label, data.onset_day is not None)
    return ("asset", float(data.edges_day[0]), float(data.edges_day[-1]))


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
# small helpers: text and dates
# =====================================================================================
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

    # Window: the last `weeks` weeks ending at as-of, trimmed to days with data; for a
    # load not seen since a day before that, the weeks around that day (the evidence).
    n_days = grid.n_days
    last = n_days
    ended = _onset_date(det.table[["not_seen_since"]].iloc[pos, 0]
                        if "not_seen_since" in det.table else None)
    if ended is not None:
        end_day = int(np.searchsorted(ctx.dates.astype("datetime64[D]"), ended))
        if end_day < n_days - int(weeks) * 7 + 7:
            last = min(n_days, end_day + 14)
    first = max(0, last - int(weeks) * 7)
    has = np.flatnonzero(np.isfinite(det.mean_kw[first:last, pos]))
    if has.size:
        first += int(has[0])
    days = np.arange(first, last)
    cells = np.flatnonzero((grid.day_of_cell >= first) & (grid.day_of_cell < last))
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
                        else "expected consumption (fitted on all days: a load running all "
                             "along is in it)" if flagged else "expected consumption"),
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
