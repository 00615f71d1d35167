"""The investigator's plots: one PNG per site, readable without knowing the tool.

Every function is a pure function of a :class:`gridwatch.pipeline.RunResult`.
Matplotlib is imported lazily, inside the functions, and figures are built as
plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas:
nothing goes through ``pyplot``, no window is opened, the user's backend and
``rcParams`` are left alone (no global style), and no figure is kept alive by
a figure manager. :func:`save_plot` writes PNGs through the atomic writer.

Public API
----------
plot_meter(result, meter_id, *, weeks=6, fig=None) -> Figure
plot_asset(result, asset_id, *, fig=None) -> Figure
plot_site(result, site_id, path) -> Path
write_plots(result, output_dir) -> dict[str, str]
safe_plot_name(site_id) -> str
save_plot(fig, path) -> None
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.atomic import atomic_path
from gridwatch.errors import InputError

PLOTS_DIR = "plots"
DPI = 80
METER_FIGSIZE = (11.0, 8.0)  # [inch] at DPI -> 880 x 640 px
ASSET_FIGSIZE = (11.0, 7.5)
MAX_SUSPECTS = 5
PEER_LOW, PEER_HIGH = 10, 90  # percentiles of the peer band
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
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": 3})
    finally:
        _close(fig)


def _close(fig) -> None:
    """Release a figure (a pyplot-managed one is also removed from pyplot)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()


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
    site_id = str(site_id)
    path = Path(path)
    if site_id in _meter_columns(result):
        fig = plot_meter(result, site_id)
    elif site_id in _asset_ids(result):
        fig = plot_asset(result, site_id)
    else:
        raise InputError(_unknown_message(result, site_id),
                         hint="pass a meter_id from flags.csv or an asset_id from transformers.csv")
    save_plot(fig, path)
    return path


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
    out = Path(output_dir)
    ctx = _Context(result)
    written = {}
    flags = result.flags
    flagged = flags.loc[_is_true(flags[col.FLAGGED]), col.METER_ID].astype(str)
    for meter_id in flagged:
        if meter_id not in ctx.position:
            continue
        rel = f"{PLOTS_DIR}/{safe_plot_name(meter_id)}"
        save_plot(_plot_meter(ctx, meter_id, weeks=6, fig=None), out / rel)
        written[meter_id] = rel
    tr = result.transformers
    if tr is not None and not tr.empty:
        assets = tr.loc[_is_true(tr[col.FLAGGED]), col.ASSET_ID].astype(str)
        for asset_id in assets:
            if asset_id not in ctx.assets or asset_id in written:
                continue
            rel = f"{PLOTS_DIR}/{safe_plot_name(asset_id)}"
            save_plot(_plot_asset(ctx, asset_id, fig=None), out / rel)
            written[asset_id] = rel
    return written


def plot_meter(result, meter_id, *, weeks=6, fig=None):
    """A meter's demand against its expected consumption and its peers, and its day x hour map.

    Top panel: hourly demand [kW] over the last ``weeks`` weeks of the run,
    the expected consumption (what the meter would draw without the detected
    load, fitted before the onset), the peer band (10th-90th percentile of
    the daily mean demand of the meters of the same customer class, scaled to
    this meter's own level before the onset) and the onset. Bottom panel: a
    day x local hour heat map of demand where a round-the-clock load shows
    as a band across all 24 hours.

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
    """
    return _plot_meter(_Context(result), str(meter_id), weeks=weeks, fig=fig)


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
    """
    return _plot_asset(_Context(result), str(asset_id), fig=fig)


# =====================================================================================
# shared state: what every plot of one run needs, computed once
# =====================================================================================
class _Context:
    """Per-run lookups shared by the plots of one run (built once by write_plots)."""

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
        """Daily 10th, 50th and 90th percentile of the class's daily mean demand [kW]."""
        if meter_class not in self._bands:
            classes, _ = self.classes()
            members = classes == meter_class
            mean_kw = self.result.detection.mean_kw[:, members]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days before the data
                q = np.nanpercentile(mean_kw, [PEER_LOW, 50, PEER_HIGH], axis=1)
            self._bands[meter_class] = (q, int(members.sum()))
        return self._bands[meter_class]

    def flag_row(self, meter_id) -> dict:
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


def _is_true(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.lower().isin(["true", "1"]).to_numpy()


def _customer_classes(result, meter_ids) -> tuple[np.ndarray, str]:
    """The customer class of each analysed meter: from the run, else the input's meters table."""
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
# drawing helpers
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
    text = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in str(text))
    return text.replace("$", r"\$")  # with every $ escaped the text is never mathtext


def _num(value, default=np.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out


def _onset_date(value):
    if value is None or value is pd.NA:
        return None
    text = str(value).strip()
    if not text or text.lower() in {"nan", "<na>", "none"}:
        return None
    try:
        return np.datetime64(pd.Timestamp(text).date(), "D")
    except ValueError:
        return None


def _mark_onset(ax, onset, label="onset (flags.csv)"):
    ax.axvline(onset, color="crimson", lw=1.6, ls="--", zorder=5, label=label)
    ax.annotate(f"onset {pd.Timestamp(onset):%d %b %Y}", xy=(onset, 1.0),
                xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points",
                ha="left", va="top", color="crimson", fontsize=9, fontweight="bold")


def _date_axis(ax):
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _day_edges(dates: np.ndarray) -> np.ndarray:
    """Day boundaries (n_days + 1) for a per-day step band."""
    d = dates.astype("datetime64[D]")
    return np.concatenate([d, d[-1:] + 1]).astype("datetime64[s]")


def _step(values: np.ndarray) -> np.ndarray:
    return np.concatenate([values, values[-1:]])


# =====================================================================================
# meter
# =====================================================================================
def _plot_meter(ctx: _Context, meter_id: str, *, weeks, fig):
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
    t = ctx.local_time[cells]
    dates = ctx.dates[days]

    # Peer band, scaled to this meter by the ratio of its own level to the peers' median
    # over its reference days (before the onset; all days without one).
    classes, source = ctx.classes()
    meter_class = classes[pos]
    (low, mid, high), n_peers = ctx.peer_band(meter_class)
    own = det.mean_kw[:, pos]
    ref = np.ones(n_days, dtype=bool)
    if onset is not None:
        ref = grid.dates.to_numpy().astype("datetime64[D]") < onset
    ok = ref & np.isfinite(own) & np.isfinite(mid) & (mid > 0)
    scale = float(np.median(own[ok]) / np.median(mid[ok])) if ok.any() and np.median(mid[ok]) > 0 else 1.0
    if onset is None:
        # Without an onset there is no clean reference: scaling the peers to the
        # meter's own level would hide a load that was running all along.
        scale = 1.0

    fig = _new_figure(METER_FIGSIZE, fig)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.15], width_ratios=[1, 0.018],
                          left=0.075, right=0.93, top=0.845, bottom=0.07, hspace=0.62, wspace=0.02)
    ax = fig.add_subplot(gs[0, 0])
    axh = fig.add_subplot(gs[1, 0])
    cax = fig.add_subplot(gs[1, 1])

    # (1) demand vs expected vs peers
    edges = _day_edges(dates)
    who = f"{_tx(meter_class)} meters" if source == "class" else "meters (class unknown)"
    peer_label = (f"peers: {PEER_LOW}th-{PEER_HIGH}th pct of daily mean, {n_peers} {who}"
                  + (f", scaled x{scale:.2g} to this meter's level before onset"
                     if onset is not None else ", as measured"))
    ax.fill_between(edges, _step(low[days] * scale), _step(high[days] * scale), step="post",
                    color="tab:green", alpha=0.18, lw=0, label=peer_label)
    ax.plot(t, kw, color="tab:blue", lw=0.7, label="metered demand (hourly)")
    ax.plot(t, expected, color="black", lw=1.0, alpha=0.8,
            label="expected without new load (fitted before onset)" if onset is not None
            else "expected consumption")
    if onset is not None and dates[0] <= onset <= dates[-1] + np.timedelta64(1, "D"):
        _mark_onset(ax, onset)
    ax.set_xlim(edges[0], edges[-1])
    top = np.nanpercentile(np.concatenate([kw[np.isfinite(kw)], expected, high[days] * scale]), 99.5) \
        if np.isfinite(kw).any() else 1.0
    ax.set_ylim(0, max(float(top) * 1.25, 0.1))
    ax.set_ylabel("demand [kW]")
    ax.set_xlabel("local date")
    _date_axis(ax)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), fontsize=8, ncols=2, frameon=False,
              borderaxespad=0.0)
    ax.set_title("Hourly demand against expected consumption and peers", fontsize=10, loc="left")

    # (2) day x hour heat map
    n_hours = 24
    hour = grid.hour_of_cell[cells]
    row = grid.day_of_cell[cells] - first
    finite = np.isfinite(kw)
    idx = row * n_hours + hour
    total = np.bincount(idx[finite], weights=kw[finite], minlength=len(days) * n_hours)
    count = np.bincount(idx[finite], minlength=len(days) * n_hours)
    with np.errstate(invalid="ignore", divide="ignore"):
        heat = (total / count).reshape(len(days), n_hours)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    vmax = float(np.nanpercentile(heat, 99)) if np.isfinite(heat).any() else 1.0
    d0 = matplotlib.dates.date2num(edges[0])
    im = axh.imshow(heat, aspect="auto", cmap=cmap, vmin=0, vmax=max(vmax, 0.1),
                    interpolation="nearest", origin="upper",
                    extent=(0, 24, d0 + len(days), d0), rasterized=True)
    axh.yaxis_date()
    axh.set_ylim(d0 + len(days), d0)
    axh.set_xticks(np.arange(0, 25, 3))
    axh.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)])
    axh.set_xlabel("local hour of day")
    axh.set_ylabel("day")
    import matplotlib.dates as mdates

    axh.yaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
    axh.yaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    if onset is not None and dates[0] <= onset <= dates[-1]:
        y = matplotlib.dates.date2num(onset.astype("datetime64[s]"))
        axh.axhline(y, color="crimson", lw=1.6, ls="--")
        axh.annotate(f"onset {pd.Timestamp(onset):%d %b}", xy=(1.0, y), xycoords=("axes fraction", "data"),
                     xytext=(-4, -3), textcoords="offset points", ha="right", va="bottom",
                     color="crimson", fontsize=9, fontweight="bold",
                     bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    axh.set_title("Demand by day and hour (a load running round the clock shows as a band across "
                  "all 24 hours; grey = no data)", fontsize=10, loc="left")
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("demand [kW]")

    # title
    kind = str(flag.get(col.KIND) or "").strip()
    flagged = str(flag.get(col.FLAGGED, "")).lower() == "true"
    transformer = flag.get(col.TRANSFORMER_ID)
    if transformer is None or transformer is pd.NA or str(transformer) in {"", "nan", "<NA>"}:
        transformer = "unknown"
    status = (f"FLAGGED: {kind.replace('_', ' ')}" if flagged
              else ("not flagged" if flag else "not analysed"))
    line1 = f"Meter {_tx(meter_id)} | transformer {_tx(transformer)} | {status}"
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
    parts.append(f"as of {result.as_of}")
    fig.suptitle(line1, x=0.075, y=0.985, ha="left", fontsize=13, fontweight="bold")
    reasons = str(flag.get(col.REASONS) or "")
    reasons = "" if reasons in {"nan", "<NA>"} else reasons
    if len(reasons) > 150:
        reasons = reasons[:147] + "..."
    fig.text(0.075, 0.935, _tx(" | ".join(parts)), ha="left", va="top", fontsize=10)
    if reasons:
        fig.text(0.075, 0.905, _tx(reasons), ha="left", va="top", fontsize=8.5, color="0.3")
    return fig


# =====================================================================================
# asset
# =====================================================================================
def _plot_asset(ctx: _Context, asset_id: str, *, fig):
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
    edges = _day_edges(dates)
    x = dates.astype("datetime64[D]").astype("datetime64[s]") + np.timedelta64(12, "h")  # noon

    row = bal.table[bal.table[col.ASSET_ID].astype(str) == asset_id]
    info = row.iloc[0].to_dict() if len(row) else {}
    onset = _onset_date(info.get(col.ONSET))
    flagged = bool(info.get(col.FLAGGED, False)) and str(info.get(col.FLAGGED)).lower() != "false"

    fig = _new_figure(ASSET_FIGSIZE, fig)
    gs = fig.add_gridspec(3, 1, height_ratios=[1.1, 0.8, 0.9], left=0.085, right=0.97, top=0.855,
                          bottom=0.07, hspace=0.5)
    ax = fig.add_subplot(gs[0])
    axu = fig.add_subplot(gs[1], sharex=ax)
    axs = fig.add_subplot(gs[2], sharex=ax)
    show_onset = onset is not None and dates.size and dates[0] <= onset <= dates[-1]

    # (1) delivered vs metered (+ losses): the gap is what nobody pays for
    accounted = metered[sl] + np.nan_to_num(loss[sl])
    ax.fill_between(x, accounted, delivered[sl], where=delivered[sl] > accounted, interpolate=True,
                    color="crimson", alpha=0.3, lw=0, label="gap = unexplained load")
    ax.plot(x, delivered[sl], color="black", lw=1.6, marker="o", ms=2.5,
            label="delivered (upstream meter)")
    ax.plot(x, metered[sl], color="tab:blue", lw=1.4, marker="o", ms=2.5,
            label="metered (sum of customer meters)")
    ax.plot(x, accounted, color="tab:blue", lw=1.0, ls=":", label="metered + modelled losses")
    if show_onset:
        _mark_onset(ax, onset, label="onset (transformers.csv)")
    ax.set_ylabel("daily mean [kW]")
    ax.set_xlim(edges[0], edges[-1])
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(loc="lower left", fontsize=8, ncols=2, framealpha=0.9)
    if has.size:
        lo_y = float(np.nanmin(np.concatenate([delivered[sl], metered[sl]])))
        hi_y = float(np.nanmax(np.concatenate([delivered[sl], accounted])))
        pad = max(hi_y - lo_y, 0.1)
        ax.set_ylim(max(0.0, lo_y - 0.9 * pad), hi_y + 0.15 * pad)
    ax.set_title("Power delivered into the asset against what its customer meters record "
                 "(daily mean; x 24 h = kWh per day)", fontsize=10, loc="left")
    ax.tick_params(labelbottom=False)

    # (2) losses and the unexplained load on their own scale
    axu.axhline(0, color="0.5", lw=0.8)
    axu.plot(x, loss[sl], color="tab:orange", lw=1.3, marker="o", ms=2.5,
             label="modelled technical losses")
    axu.plot(x, unexplained[sl], color="crimson", lw=1.5, marker="o", ms=2.5,
             label="unexplained load (delivered - metered - losses)")
    if show_onset:
        axu.axvline(onset, color="crimson", lw=1.6, ls="--")
    axu.set_ylabel("daily mean [kW]")
    axu.grid(alpha=0.3, lw=0.5)
    axu.legend(loc="upper left", fontsize=8, ncols=2, framealpha=0.9)
    if has.size:
        top = float(np.nanmax(np.concatenate([loss[sl], unexplained[sl], [0.1]])))
        bottom = float(np.nanmin(np.concatenate([unexplained[sl], [0.0]])))
        axu.set_ylim(bottom - 0.1 * (top - bottom), top + 0.45 * (top - bottom))
    axu.set_title("Modelled losses and the unexplained load", fontsize=10, loc="left")
    axu.tick_params(labelbottom=False)

    # suspects
    sus = bal.suspects
    sus = sus[sus[col.ASSET_ID].astype(str) == asset_id].sort_values("rank").head(MAX_SUSPECTS)
    mean_kw = result.detection.mean_kw
    drawn = 0
    for _, s in sus.iterrows():
        m = str(s[col.METER_ID])
        if m not in ctx.position:
            continue
        strength = "strong" if bool(s.get("strong", False)) else "weak"
        axs.plot(x, mean_kw[sl, ctx.position[m]], lw=1.3, marker="o", ms=2.5,
                 label=f"#{int(s['rank'])} {_tx(m)} ({strength} evidence)")
        drawn += 1
    if show_onset:
        axs.axvline(onset, color="crimson", lw=1.6, ls="--", label="asset onset")
    if drawn:
        axs.legend(loc="upper left", fontsize=8, ncols=3, framealpha=0.9)
        axs.set_ylim(bottom=0)
        axs.set_title(f"Daily mean demand of the top {drawn} suspect meter(s) under {_tx(asset_id)}",
                      fontsize=10, loc="left")
    else:
        axs.text(0.5, 0.5, "no suspect meters (the asset is not flagged)" if not flagged
                 else "no suspect meters with data", transform=axs.transAxes,
                 ha="center", va="center", color="0.4")
        axs.set_title("Suspect meters", fontsize=10, loc="left")
    axs.set_ylabel("daily mean demand [kW]")
    axs.set_xlabel("local date")
    axs.grid(alpha=0.3, lw=0.5)
    _date_axis(axs)

    level = str(info.get("level") or "asset")
    status = "FLAGGED: unexplained load" if flagged else "not flagged"
    fig.suptitle(f"{level.capitalize()} {_tx(asset_id)} | {status}", x=0.075, y=0.985, ha="left",
                 fontsize=13, fontweight="bold")
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
    fig.text(0.075, 0.935, _tx(" | ".join(parts)), ha="left", va="top", fontsize=10)
    reasons = str(info.get(col.REASONS) or "")
    if reasons and reasons not in {"nan", "<NA>"}:
        fig.text(0.075, 0.905, _tx(reasons[:150] + ("..." if len(reasons) > 150 else "")),
                 ha="left", va="top", fontsize=8.5, color="0.3")
    return fig
