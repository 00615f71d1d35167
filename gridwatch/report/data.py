"""What the report's plots show, as plain data: computed from a run, drawn elsewhere.

A plot is made in two steps. This module does the first: a pure function of
the run (:func:`meter_data`, :func:`asset_data`) returns the small arrays and
strings one site's plot shows, limits and texts included, as a frozen
:class:`MeterData` or :class:`AssetData` of numpy arrays, floats and strings
(picklable, no pandas or matplotlib object in it). The second step,
:mod:`gridwatch.report.figures`, draws such a record; nothing here draws.

:class:`RunContext` holds the per-run lookups that every site's data needs
(meter positions, local times, customer classes, peer bands), built once per
run. Pandas and matplotlib's date conversion are imported inside the
functions.

Public API
----------
RunContext(result)
meter_data(ctx, meter_id, *, weeks) -> MeterData
asset_data(ctx, asset_id) -> AssetData
analysed_meter_ids(result) -> list[str]
balanced_asset_ids(result) -> list[str]
unknown_site_message(result, site_id) -> str
plain_text(text) -> str
mpl_text(text) -> str
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from gridwatch import columns as col
from gridwatch.errors import InputError

MAX_SUSPECTS = 5
PEER_LOW, PEER_HIGH = 10, 90  # percentiles of the peer band
LEGEND_HEADROOM = 1.4  # y-range over the data's range on the suspects panel: its top holds the legend


# =====================================================================================
# shared state: what every plot of one run needs, computed once
# =====================================================================================
class RunContext:
    """Per-run lookups shared by the plots of one run (built once per run)."""

    def __init__(self, result):
        self.result = result
        self.grid = result.grid
        self.position = {m: i for i, m in enumerate(analysed_meter_ids(result))}
        self.assets = {a: i for i, a in enumerate(balanced_asset_ids(result))}
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
        """The meter's ``flags.csv`` row as a dict (empty for a meter not in it)."""
        import pandas as pd

        if self.flags is None or meter_id not in self.flags.index:
            return {}
        row = self.flags.loc[meter_id]
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        return row.to_dict()


def analysed_meter_ids(result) -> list[str]:
    """The meters whose arrays the run holds (the columns of ``result.kw``), as str."""
    return [str(c) for c in result.kw.columns]


def balanced_asset_ids(result) -> list[str]:
    """The assets of the run's energy balance, as str (none without upstream data)."""
    return [] if result.balance is None else [str(a) for a in result.balance.asset_ids]


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


def unknown_site_message(result, site_id) -> str:
    """Why ``site_id`` cannot be plotted, naming a few of the run's meters and assets."""
    meters = analysed_meter_ids(result)
    assets = balanced_asset_ids(result)

    def some(ids):
        shown = ", ".join(ids[:3])
        return shown + (", ..." if len(ids) > 3 else "")

    have = f"{len(meters)} meters ({some(meters)})"
    have += f" and {len(assets)} assets ({some(assets)})" if assets else " and no upstream assets"
    return f"no meter or asset {site_id!r} in this run; it has {have}"


# =====================================================================================
# small helpers: text and dates
# =====================================================================================
def mpl_text(text) -> str:
    """Text safe for matplotlib: ``$`` would otherwise start mathtext; control characters shown as ``?``."""
    return plain_text(text).replace("$", r"\$")  # with every $ escaped the text is never mathtext


def plain_text(text) -> str:
    """Text with control characters shown as ``?``.

    For the title lines (:func:`gridwatch.report.figures.text_line`), which have no mathtext.
    """
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
class MeterData:
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


def meter_data(ctx: RunContext, meter_id: str, *, weeks) -> MeterData:
    """What the plot of ``meter_id`` shows (see :func:`gridwatch.report.plots.plot_meter`)."""
    import pandas as pd

    result, grid = ctx.result, ctx.grid
    if meter_id not in ctx.position:
        raise InputError(unknown_site_message(result, meter_id),
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
    who = f"{mpl_text(meter_class)} meters" if source == "class" else "meters (class unknown)"
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
    return MeterData(
        title=plain_text(f"Meter {meter_id} | transformer {transformer} | {status}"),
        summary=plain_text(" | ".join(parts)),
        reasons=plain_text(_reasons(flag.get(col.REASONS))),
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
class AssetData:
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


def asset_data(ctx: RunContext, asset_id: str) -> AssetData:
    """What the plot of ``asset_id`` shows (see :func:`gridwatch.report.plots.plot_asset`)."""
    import pandas as pd

    result = ctx.result
    if asset_id not in ctx.assets:
        raise InputError(unknown_site_message(result, asset_id),
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
        labels.append(f"#{int(s['rank'])} {mpl_text(m)} ({strength} evidence)")
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
        suspects_title = (f"Daily mean demand of the top {len(series)} suspect meter(s) under "
                          f"{mpl_text(asset_id)}")
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
    return AssetData(
        title=plain_text(f"{level.capitalize()} {asset_id} | {status}"),
        summary=plain_text(" | ".join(parts)),
        reasons=plain_text(_reasons(info.get(col.REASONS))),
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
