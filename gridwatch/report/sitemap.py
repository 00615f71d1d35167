"""The report's map of the flagged sites: drawn locally, no tile server, no network (issue 16 item 5).

As for the sites' plots, the map is made in two steps:

1. :func:`map_data` (pure: numpy, pandas, scipy) computes what the map
   shows: the areas to draw (one panel per group of meters far from the
   others, an area whose flagged sites would crowd split into its parts, at
   most ``MAX_PANELS`` panels, with an overview when there are several),
   each panel's extent in an equirectangular projection (a degree of
   longitude is ``cos(lat)`` of a degree of latitude, so distances read the
   same both ways), the faint background of every meter (downsampled beyond
   ``MAX_BACKGROUND_POINTS``), the transformers, the flagged sites by kind,
   and where each label goes (sites close together share one label, and
   labels are placed so that they do not overlap);
2. :func:`render_map` draws such a :class:`MapData` with matplotlib (Agg,
   never ``pyplot``), and :func:`write_map` writes it as a PNG, atomically.

Positions come from :mod:`gridwatch.report.places`; a meter without valid
coordinates is counted and said, never silently dropped; a small group of
meters far from every other, with no flagged site, is left out of the panels
and said too (a single mistyped position would otherwise squash the map).
Longitudes are not wrapped: a territory across the 180th meridian is drawn
as two areas.

Public API
----------
map_data(positions, assets, flags, transformers, *, as_of="", network=None) -> MapData or None
map_of(result) -> MapData or None
area_names(meters) -> Series or None
site_clusters(lat, lon, *, gap_km=GAP_KM) -> ndarray
area_groups(lat, lon, keep=None, *, needed=None, gap_km=GAP_KM, max_groups=MAX_PANELS - 1) -> ndarray
render_map(data) -> Figure
write_map(data, path) -> Path
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.report.places import (
    PLACED,
    asset_positions,
    meter_positions,
    position_counts,
    run_meters,
)

MAP_NAME = "map.png"
EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0
#: Meters further apart than about this are drawn in separate panels [km].
GAP_KM = 25.0
#: Panels at most, the overview included.
MAX_PANELS = 6
#: A group of fewer meters than this, with no flagged site, far from the others, is not drawn.
MIN_PANEL_METERS = 10
#: Meters drawn as the faint background, at most (a regular subsample beyond).
MAX_BACKGROUND_POINTS = 40_000
#: Transformers drawn, at most.
MAX_TRANSFORMER_POINTS = 20_000
#: Labels per panel, at most (the highest-ranked sites; every site is in the crew plan).
MAX_LABELS = 60
#: Sites within this distance of each other on the page share one label [points].
MERGE_PT = 9.0
#: Ids in one shared label, at most ("3, 7 +2": two ids and how many more).
MAX_IDS_PER_LABEL = 2
LABEL_FONT_PT = 7.5
FIGSIZE = (11.0, 8.5)  # [inch]
DPI = 100
_TITLE_IN, _LEGEND_IN, _PANEL_TITLE_IN, _GAP_IN, _SIDE_IN = 0.62, 0.55, 0.24, 0.18, 0.2
_MIN_EXTENT_KM = 0.4  # a panel shows at least this much, also for a single site
_SPLIT_RATIO = 6.0  # an area is split when each of its parts is this many times narrower than it
_NOMINAL_PANEL_PT = 240.0  # size of a panel when judging whether its sites crowd [points]

#: How each kind of site is drawn: (label in the legend, marker, face, edge, size [pt^2], zorder).
STYLES = {
    col.KIND_VISIBLE: ("visible load (meter)", "o", "#d62728", "white", 46, 6),
    col.KIND_HIDDEN: ("hidden-load suspect (meter)", "D", "#7b3fa0", "white", 38, 6),
    col.KIND_MONTHLY: ("monthly pattern (meter read monthly)", "s", "#e67e00", "white", 40, 6),
    col.KIND_HIDDEN_LOAD: ("hidden load (flagged asset)", "^", "#ffd60a", "black", 120, 5),
    col.KIND_METERING_FAULT: ("metering fault (not theft)", "X", "#1f5fa8", "white", 90, 4),
}
_PRIORITY = {col.KIND_HIDDEN_LOAD: 0, col.KIND_METERING_FAULT: 1}  # label order before the ranks


# =====================================================================================
# what the map shows
# =====================================================================================
@dataclass(frozen=True)
class Panel:
    """One area of the map: its extent, what lies in it and its labels.

    Longitudes and latitudes are in degrees; ``rect`` is the axes' box in
    figure fraction (left, bottom, width, height). The extent has the box's
    shape in kilometres, so an axes of that box shows the area undistorted.
    """

    letter: str
    title: str
    rect: tuple[float, float, float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    km_per_deg_lon: float
    scale_km: float
    background_lon: np.ndarray
    background_lat: np.ndarray
    transformer_lon: np.ndarray
    transformer_lat: np.ndarray
    site_ids: tuple[str, ...]
    site_kinds: tuple[str, ...]
    site_lon: np.ndarray
    site_lat: np.ndarray
    label_text: tuple[str, ...] = ()
    label_lon: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_lat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_dx_pt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_dy_pt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_ha: tuple[str, ...] = ()
    label_va: tuple[str, ...] = ()
    boxes: tuple = ()  # overview only: (letters, lon0, lon1, lat0, lat1) per area ('' when shared)
    overview: bool = False

    @property
    def extent_km(self) -> tuple[float, float]:
        """Width and height of the panel's extent [km]."""
        return ((self.xlim[1] - self.xlim[0]) * self.km_per_deg_lon,
                (self.ylim[1] - self.ylim[0]) * KM_PER_DEG)


@dataclass(frozen=True)
class MapData:
    """Everything the map shows; :func:`render_map` draws it."""

    title: str
    summary: str
    panels: tuple[Panel, ...]
    legend: tuple[tuple[str, int], ...]  # (kind, sites of that kind drawn)
    notes: tuple[str, ...]
    counts: dict
    sites_total: int  # flagged sites (meters and assets) and metering faults
    sites_placed: int  # ... of them with a position
    sites_drawn: int  # ... of them in a panel


def site_clusters(lat, lon, *, gap_km: float = GAP_KM) -> np.ndarray:
    """Group positions that lie within about ``gap_km`` of each other (single linkage on a grid).

    Each position falls in a square cell of ``gap_km`` (equirectangular
    projection at the median latitude); cells that touch, corners included,
    form one group. Two positions less than ``gap_km`` apart are always in
    one group; two groups are at least ``gap_km`` apart.

    Parameters
    ----------
    lat, lon : array-like of float
        Valid positions [degrees].
    gap_km : float, default ``GAP_KM``
        [km]; doubled until the grid over the positions has at most 4
        million cells (positions spread over a continent).

    Returns
    -------
    numpy.ndarray of int
        Group number per position, 0 for the group of the most positions,
        then by size (ties by first appearance).

    Examples
    --------
    >>> site_clusters([56.1, 56.11, 51.4], [-4.2, -4.19, -0.8]).tolist()
    [0, 0, 1]
    """
    from scipy import ndimage

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.size == 0:
        return np.zeros(0, dtype=np.int64)
    cos0 = max(math.cos(math.radians(float(np.median(lat)))), 0.05)
    x = lon * KM_PER_DEG * cos0
    y = lat * KM_PER_DEG
    gap = float(gap_km)
    while True:
        ix = np.floor((x - x.min()) / gap).astype(np.int64)
        iy = np.floor((y - y.min()) / gap).astype(np.int64)
        nx, ny = int(ix.max()) + 1, int(iy.max()) + 1
        if nx * ny <= 4_000_000:
            break
        gap *= 2
    grid = np.zeros((ny, nx), dtype=bool)
    grid[iy, ix] = True
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3), dtype=bool))
    raw = labels[iy, ix]
    values, first, sizes = np.unique(raw, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    renumber = np.empty(values.max() + 1, dtype=np.int64)
    renumber[values[order]] = np.arange(len(values))
    return renumber[raw]


def _spread_km(lat: np.ndarray, lon: np.ndarray) -> float:
    """The larger side of the positions' bounding box [km]."""
    if lat.size == 0:
        return 0.0
    kx = KM_PER_DEG * max(math.cos(math.radians(float(np.median(lat)))), 0.05)
    return max(float(np.ptp(lon)) * kx, float(np.ptp(lat)) * KM_PER_DEG)


def _crowded(lat: np.ndarray, lon: np.ndarray, spread_km: float) -> int:
    """Sites that would lie within ``MERGE_PT`` of another on a panel of an area ``spread_km`` wide.

    The panel is taken ``_NOMINAL_PANEL_PT`` wide, the area padded as
    :func:`_extent` pads it.
    """
    if lat.size < 2:
        return 0
    from scipy.spatial import cKDTree

    spread = max(spread_km, _MIN_EXTENT_KM) * 1.12
    kx = KM_PER_DEG * max(math.cos(math.radians(float(np.median(lat)))), 0.05)
    scale = _NOMINAL_PANEL_PT / spread  # [points per km]
    xy = np.column_stack([lon * kx * scale, lat * KM_PER_DEG * scale])
    pairs = cKDTree(xy).query_pairs(MERGE_PT, output_type="ndarray")
    return int(np.unique(pairs).size)


def area_groups(lat, lon, keep=None, *, needed=None, gap_km: float = GAP_KM,
                max_groups: int = MAX_PANELS - 1) -> np.ndarray:
    """The areas of the map: :func:`site_clusters`, then crowded areas split into their parts.

    An area whose flagged sites (``keep``) would crowd on a panel of its own
    (two towns 40 km apart, each 3 km across, which :func:`site_clusters`
    at ``gap_km`` joins: at 40 km to the panel, a town's sites fall on one
    another) is split into its parts, found with a gap of a sixteenth of its
    width, when each part is at most a sixth as wide as the area and the
    split leaves fewer crowded sites; the most crowded area first, as long
    as the areas that need a panel (with a position in ``needed``) stay
    within ``max_groups``. Parts without one stay areas of their own.

    Parameters
    ----------
    lat, lon : array-like of float
        Valid positions [degrees].
    keep : array-like of bool, optional
        The flagged sites among the positions (whose crowding is judged).
    needed : array-like of bool, optional
        Positions whose area needs a panel (default ``keep``; also the
        meters nearest to flagged assets).
    gap_km : float, default ``GAP_KM``
    max_groups : int, default ``MAX_PANELS - 1``

    Returns
    -------
    numpy.ndarray of int
        Area number per position, 0 for the area of the most positions.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    keep = np.zeros(lat.size, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    needed = keep if needed is None else np.asarray(needed, dtype=bool) | keep
    labels = site_clusters(lat, lon, gap_km=gap_km)
    if lat.size == 0 or not keep.any():
        return labels

    def crowded(idx):
        return _crowded(lat[idx[keep[idx]]], lon[idx[keep[idx]]], _spread_km(lat[idx], lon[idx]))

    tried = set()
    while True:
        n = int(labels.max()) + 1
        with_sites = set(np.unique(labels[needed]).tolist())
        crowd = {g: crowded(np.flatnonzero(labels == g)) for g in with_sites if g not in tried}
        split = None
        for g in sorted(crowd, key=lambda g: (-crowd[g], g)):
            tried.add(g)
            if crowd[g] == 0:
                continue
            idx = np.flatnonzero(labels == g)
            spread = _spread_km(lat[idx], lon[idx])
            sub = site_clusters(lat[idx], lon[idx], gap_km=max(spread / 16, 0.05))
            parts = [q for q in range(int(sub.max()) + 1) if needed[idx[sub == q]].any()]
            if int(sub.max()) == 0 or len(with_sites) - 1 + len(parts) > max_groups:
                continue
            if max(_spread_km(lat[idx[sub == q]], lon[idx[sub == q]])
                   for q in range(int(sub.max()) + 1)) > spread / _SPLIT_RATIO:
                continue
            if sum(crowded(idx[sub == q]) for q in parts) >= crowd[g]:
                continue
            split = (g, idx, sub)
            break
        if split is None:
            break
        g, idx, sub = split
        labels[idx] = np.where(sub == 0, g, n + sub - 1)
        tried.discard(g)  # its first part may split again
    values, first, sizes = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    renumber = np.empty(values.max() + 1, dtype=np.int64)
    renumber[values[order]] = np.arange(len(values))
    return renumber[labels]


def _nice_km(km: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``km``."""
    if not km > 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(km))
    for step in (5.0, 2.0, 1.0):
        if step * base <= km:
            return step * base
    return base


def _slots(n: int) -> tuple[int, int]:
    """Rows and columns of the panel grid for ``n`` panels."""
    return {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2)}.get(n, (2, 3))


def _rects(n: int) -> list[tuple[float, float, float, float]]:
    """Each panel's box (figure fraction), room kept for its title, the figure title and legend."""
    w_in, h_in = FIGSIZE
    rows, cols = _slots(n)
    usable_w = w_in - 2 * _SIDE_IN - (cols - 1) * _GAP_IN
    usable_h = h_in - _TITLE_IN - _LEGEND_IN - rows * _PANEL_TITLE_IN - (rows - 1) * _GAP_IN
    cell_w, cell_h = usable_w / cols, usable_h / rows
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        left = _SIDE_IN + c * (cell_w + _GAP_IN)
        top = h_in - _TITLE_IN - r * (cell_h + _PANEL_TITLE_IN + _GAP_IN) - _PANEL_TITLE_IN
        out.append((left / w_in, (top - cell_h) / h_in, cell_w / w_in, cell_h / h_in))
    return out


def _extent(lon, lat, rect) -> tuple[tuple, tuple, float]:
    """Limits [degrees] of the positions, padded, shaped like ``rect`` in km; and km per degree of lon."""
    lon0, lon1 = float(np.min(lon)), float(np.max(lon))
    lat0, lat1 = float(np.min(lat)), float(np.max(lat))
    mid_lat = (lat0 + lat1) / 2
    kx = KM_PER_DEG * max(math.cos(math.radians(mid_lat)), 0.05)
    w_km = max((lon1 - lon0) * kx, _MIN_EXTENT_KM)
    h_km = max((lat1 - lat0) * KM_PER_DEG, _MIN_EXTENT_KM)
    w_km, h_km = w_km * 1.12, h_km * 1.12  # room for the markers at the edge
    box_ratio = (rect[2] * FIGSIZE[0]) / (rect[3] * FIGSIZE[1])
    if w_km / h_km < box_ratio:
        w_km = h_km * box_ratio
    else:
        h_km = w_km / box_ratio
    cx, cy = (lon0 + lon1) / 2, mid_lat
    half_x, half_y = w_km / kx / 2, h_km / KM_PER_DEG / 2
    return (cx - half_x, cx + half_x), (cy - half_y, cy + half_y), kx


def _subsample(n: int, limit: int) -> np.ndarray:
    """Indices of a regular subsample of at most ``limit`` of ``n`` items (all when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(np.int64))


def _sites(positions, assets, flags, transformers) -> pd.DataFrame:
    """The flagged sites and metering faults: id, kind, label, priority, lat, lon."""
    parts = []
    if flags is not None and len(flags):
        fl = flags[flags[col.FLAGGED].astype(str).str.lower() == "true"]
        ids = fl[col.METER_ID].astype("string").fillna("").astype(str).to_numpy(dtype=object)
        rank = pd.to_numeric(fl[col.RANK], errors="coerce").to_numpy(dtype=np.float64)
        pos = positions.reindex(ids)
        parts.append(pd.DataFrame({
            "site": ids,
            "kind": fl[col.KIND].astype("string").fillna("").astype(str).to_numpy(dtype=object),
            "label": [f"{int(r)}" if np.isfinite(r) else str(i) for r, i in zip(rank, ids, strict=True)],
            "priority": np.nan_to_num(rank, nan=1e12) + 10,
            col.LAT: pos[col.LAT].to_numpy(dtype=np.float64),
            col.LON: pos[col.LON].to_numpy(dtype=np.float64),
        }))
    if transformers is not None and len(transformers):
        t = transformers
        kind = t[col.KIND].astype("string").fillna("").astype(str)
        keep = (t[col.FLAGGED].astype(str).str.lower() == "true").to_numpy() | (
            kind == col.KIND_METERING_FAULT).to_numpy()
        t, kind = t[keep], kind[keep]
        ids = t[col.ASSET_ID].astype("string").fillna("").astype(str).to_numpy(dtype=object)
        kind = np.where((kind == "").to_numpy(), col.KIND_HIDDEN_LOAD, kind.to_numpy(dtype=object))
        pos = assets.reindex(ids)
        parts.append(pd.DataFrame({
            "site": ids, "kind": kind, "label": [_short(i) for i in ids],
            "priority": np.array([_PRIORITY.get(k, 2) for k in kind], dtype=np.float64)
            + np.arange(len(ids)) * 1e-6,
            col.LAT: pos[col.LAT].to_numpy(dtype=np.float64),
            col.LON: pos[col.LON].to_numpy(dtype=np.float64),
        }))
    if not parts:
        return pd.DataFrame({"site": [], "kind": [], "label": [], "priority": [], col.LAT: [], col.LON: []})
    return pd.concat(parts, ignore_index=True).sort_values("priority", kind="stable").reset_index(drop=True)


def _short(site_id: str, limit: int = 10) -> str:
    """An id short enough for a map label: its end, which tells sites of one network apart."""
    text = str(site_id)
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]


def _label_layout(x_pt, y_pt, texts, width_pt, height_pt, *, marker_pt=4.5):
    """Merge sites close on the page into shared labels; place labels where they fit, never overlapping.

    Sites within ``MERGE_PT`` of a higher-priority site share its label
    (``"3, 7 +2"``). Labels are placed in priority order, at the first
    of 16 positions around their site that overlaps no label placed before
    (nor the scale bar, in the lower left corner)
    and stays inside the panel, preferring positions that cover no other
    site's marker; a label that fits nowhere is left out, and so are the
    labels beyond ``MAX_LABELS`` (the sites keep their markers; every site
    is in the crew plan).

    Parameters
    ----------
    x_pt, y_pt : numpy.ndarray
        Sites' positions in the panel [points from its lower left corner],
        in label priority order (the first is labelled first).
    texts : sequence of str
        Each site's label.
    width_pt, height_pt : float
        The panel's size [points].
    marker_pt : float, default 4.5
        A marker's radius [points].

    Returns
    -------
    labels : list of (anchor index, text, dx, dy, ha, va, n_sites)
        One per label placed: the site it points at, its text, its offset
        from that site [points], alignment, and the sites it names.
    unlabelled : int
        Sites in no label.
    """
    x_pt = np.asarray(x_pt, dtype=np.float64)
    y_pt = np.asarray(y_pt, dtype=np.float64)
    groups = []  # [anchor index, [texts]]
    for i in range(len(x_pt)):
        for g in groups:
            a = g[0]
            if (x_pt[i] - x_pt[a]) ** 2 + (y_pt[i] - y_pt[a]) ** 2 <= MERGE_PT ** 2:
                g[1].append(texts[i])
                break
        else:
            if len(groups) < 4 * MAX_LABELS:
                groups.append([i, [texts[i]]])
    char_w, line_h = 0.58 * LABEL_FONT_PT, 1.2 * LABEL_FONT_PT
    # (x0, y0, x1, y1) of the labels placed, and of the scale bar (see _scale_bar)
    placed = [(0.0, 0.0, 0.04 * width_pt + 0.2 * width_pt + 6, 0.05 * height_pt + 14)]
    candidates = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
                  (-5, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
                  (8, 0, "left", "center"), (-8, 0, "right", "center")]
    candidates += [(dx * 2.2, dy * 2.2, ha, va) for dx, dy, ha, va in candidates]
    out, labelled = [], 0
    for anchor, items in groups:
        if len(out) >= MAX_LABELS:
            break
        shown = items[:MAX_IDS_PER_LABEL]
        text = ", ".join(shown) + (f" +{len(items) - len(shown)}" if len(items) > len(shown) else "")
        w, h = char_w * len(text) + 2, line_h
        best, best_cost = None, None
        for dx, dy, ha, va in candidates:
            x0 = x_pt[anchor] + dx - {"left": 0, "right": w, "center": w / 2}[ha]
            y0 = y_pt[anchor] + dy - {"bottom": 0, "top": h, "center": h / 2}[va]
            box = (x0, y0, x0 + w, y0 + h)
            if box[0] < 0 or box[1] < 0 or box[2] > width_pt or box[3] > height_pt:
                continue
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                continue
            cost = int(((x_pt > box[0] - marker_pt) & (x_pt < box[2] + marker_pt)
                        & (y_pt > box[1] - marker_pt) & (y_pt < box[3] + marker_pt)).sum())
            if best_cost is None or cost < best_cost:
                best, best_cost = (dx, dy, ha, va, box), cost
            if cost == 0:
                break
        if best is None:
            continue
        dx, dy, ha, va, box = best
        placed.append(box)
        out.append((anchor, text, dx, dy, ha, va, len(items)))
        labelled += len(items)
    return out, len(x_pt) - labelled


def map_data(positions: pd.DataFrame, assets: pd.DataFrame, flags: pd.DataFrame | None,
             transformers: pd.DataFrame | None, *, as_of: str = "",
             network: pd.Series | None = None, gap_km: float = GAP_KM) -> MapData | None:
    """What the map shows; None when no meter has coordinates.

    Parameters
    ----------
    positions : pandas.DataFrame
        :func:`gridwatch.report.places.meter_positions` of every meter.
    assets : pandas.DataFrame
        :func:`gridwatch.report.places.asset_positions`.
    flags : pandas.DataFrame or None
        ``flags.csv`` rows: flagged meters are drawn by ``kind`` and
        labelled with their ``rank``.
    transformers : pandas.DataFrame or None
        ``transformers.csv`` rows: flagged assets (hidden load) and metering
        faults are drawn at their position, labelled with their id.
    as_of : str, optional
        The run's day, for the title.
    network : pandas.Series, optional
        A name per ``meter_id`` (its substation, or region): each panel is
        named by the most common names of its meters.
    gap_km : float, default ``GAP_KM``
        Meters further apart than about this go to separate panels [km].

    Returns
    -------
    MapData or None
    """
    counts = position_counts(positions)
    if counts["placed"] == 0:
        return None
    placed = positions[(positions["position"] == PLACED).to_numpy()]
    m_lat = placed[col.LAT].to_numpy(dtype=np.float64)
    m_lon = placed[col.LON].to_numpy(dtype=np.float64)
    sites = _sites(positions, assets, flags, transformers)
    is_meter = ~sites["kind"].isin([col.KIND_HIDDEN_LOAD, col.KIND_METERING_FAULT]).to_numpy()
    # an asset lies in the area of the meter nearest to its position (one of its own meters
    # when they are together); its area needs a panel as a flagged meter's does
    nearest = pd.Series(_nearest(m_lat, m_lon, assets[col.LAT].to_numpy(dtype=np.float64),
                                 assets[col.LON].to_numpy(dtype=np.float64)) if len(assets)
                        else np.zeros(0, dtype=np.int64), index=assets.index, dtype=np.int64)
    keep = placed.index.isin(sites.loc[is_meter, "site"])
    needed = keep.copy()
    at = nearest.reindex(sites.loc[~is_meter, "site"].to_numpy()).fillna(-1).to_numpy(dtype=np.int64)
    needed[at[at >= 0]] = True
    cluster = area_groups(m_lat, m_lon, keep, needed=needed, gap_km=gap_km)
    n_clusters = int(cluster.max()) + 1
    meter_cluster = pd.Series(cluster, index=placed.index)
    asset_cluster = pd.Series(np.where(nearest.to_numpy() >= 0, cluster[nearest.to_numpy().clip(0)], -1),
                              index=nearest.index)

    s_lat = sites[col.LAT].to_numpy(dtype=np.float64)
    s_ok = np.isfinite(s_lat)
    s_cluster = np.full(len(sites), -1, dtype=np.int64)
    s_cluster[is_meter] = meter_cluster.reindex(sites.loc[is_meter, "site"].to_numpy()).fillna(
        -1).to_numpy(dtype=np.int64)
    s_cluster[~is_meter] = asset_cluster.reindex(sites.loc[~is_meter, "site"].to_numpy()).fillna(
        -1).to_numpy(dtype=np.int64)
    s_cluster[~s_ok] = -1

    # which groups become panels: those with flagged sites first, then the largest
    n_meters = np.bincount(cluster, minlength=n_clusters)
    n_sites = np.bincount(s_cluster[s_cluster >= 0], minlength=n_clusters)
    small = (n_sites == 0) & (n_meters < max(MIN_PANEL_METERS, 0.01 * len(m_lat)))
    order = [int(c) for c in np.lexsort((np.arange(n_clusters), -n_meters, -n_sites)) if not small[c]]
    if not order:  # only small groups: draw the largest
        order = [0]
    cap = 1 if len(order) == 1 else MAX_PANELS - 1
    drawn, left_out = order[:cap], order[cap:]
    notes = _position_notes(counts)
    n_small = int(small.sum())
    if n_small and len(order) < n_clusters:
        lone = np.flatnonzero(small[cluster])
        ids = ", ".join(str(i) for i in placed.index[lone[:5]])
        notes.append(f"{int(n_meters[small].sum()):,} meter(s) in {n_small:,} small group(s) apart "
                     f"from the drawn areas, with no flagged site, are not drawn (e.g. {ids}): check "
                     "their coordinates")
    if left_out:
        notes.append(f"{len(left_out):,} further area(s) with {int(n_meters[left_out].sum()):,} "
                     f"meters and {int(n_sites[left_out].sum()):,} flagged site(s) are not drawn "
                     f"(at most {MAX_PANELS} panels); the crew plan has every site's coordinates")

    overview = len(drawn) > 1
    rects = _rects(len(drawn) + (1 if overview else 0))
    meta = _cluster_names(placed.index, cluster, network)
    bg = _subsample(len(m_lat), MAX_BACKGROUND_POINTS)
    tx = assets[(assets["level"] == "transformer").to_numpy()] if len(assets) else assets
    tx = tx[np.isfinite(tx[col.LAT].to_numpy(dtype=np.float64))] if len(tx) else tx
    tx_cluster = asset_cluster.reindex(tx.index).fillna(-1).to_numpy(dtype=np.int64) if len(tx) \
        else np.zeros(0, dtype=np.int64)
    tx_keep = _subsample(len(tx), MAX_TRANSFORMER_POINTS)

    panels = []
    n_unlabelled = 0
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for k, c in enumerate(drawn):
        rect = rects[k + (1 if overview else 0)]
        members = cluster == c
        in_sites = (s_cluster == c)
        xlim, ylim, kx = _extent(np.concatenate([m_lon[members], sites[col.LON].to_numpy()[in_sites]]),
                                 np.concatenate([m_lat[members], s_lat[in_sites]]), rect)
        b = bg[members[bg]]
        t = tx_keep[tx_cluster[tx_keep] == c]
        sub = sites[in_sites]
        w_pt, h_pt = rect[2] * FIGSIZE[0] * 72, rect[3] * FIGSIZE[1] * 72
        x_pt = (sub[col.LON].to_numpy() - xlim[0]) / (xlim[1] - xlim[0]) * w_pt
        y_pt = (sub[col.LAT].to_numpy() - ylim[0]) / (ylim[1] - ylim[0]) * h_pt
        labels, unlabelled = _label_layout(x_pt, y_pt, list(sub["label"]), w_pt, h_pt)
        n_unlabelled += unlabelled
        anchor = np.array([a for a, *_ in labels], dtype=np.int64)
        n_flagged = len(sub)
        n_faults = int((sub["kind"] == col.KIND_METERING_FAULT).sum())
        letter = letters[k] if overview else ""
        name = meta.get(c, "")
        width_km = (xlim[1] - xlim[0]) * kx
        what = f"{int(n_meters[c]):,} meters, {n_flagged - n_faults:,} flagged"
        if n_faults:
            what += f", {n_faults:,} metering fault(s)"
        panels.append(Panel(
            letter=letter,
            title=(f"{letter}: " if letter else "") + (f"{name}: " if name else "") + what,
            rect=rect, xlim=xlim, ylim=ylim, km_per_deg_lon=kx, scale_km=_nice_km(width_km / 5),
            background_lon=m_lon[b], background_lat=m_lat[b],
            transformer_lon=tx[col.LON].to_numpy(dtype=np.float64)[t],
            transformer_lat=tx[col.LAT].to_numpy(dtype=np.float64)[t],
            site_ids=tuple(sub["site"]), site_kinds=tuple(sub["kind"]),
            site_lon=sub[col.LON].to_numpy(dtype=np.float64),
            site_lat=sub[col.LAT].to_numpy(dtype=np.float64),
            label_text=tuple(t for _, t, *_ in labels),
            label_lon=sub[col.LON].to_numpy(dtype=np.float64)[anchor] if len(anchor) else np.zeros(0),
            label_lat=sub[col.LAT].to_numpy(dtype=np.float64)[anchor] if len(anchor) else np.zeros(0),
            label_dx_pt=np.array([d[2] for d in labels], dtype=np.float64),
            label_dy_pt=np.array([d[3] for d in labels], dtype=np.float64),
            label_ha=tuple(d[4] for d in labels), label_va=tuple(d[5] for d in labels),
        ))
    if n_unlabelled:
        notes.append(f"{n_unlabelled:,} drawn site(s) have no label: labels go where they fit without "
                     f"overlapping (at most {MAX_LABELS} a panel), the highest-ranked sites first; "
                     "every site is in the crew plan with its coordinates")
    if overview:
        lon_all = np.concatenate([[p.xlim[0], p.xlim[1]] for p in panels])
        lat_all = np.concatenate([[p.ylim[0], p.ylim[1]] for p in panels])
        xlim, ylim, kx = _extent(lon_all, lat_all, rects[0])
        b = bg[np.isin(cluster[bg], drawn)]
        boxes = _overview_boxes(panels, xlim, ylim, rects[0])
        panels.insert(0, Panel(
            letter="", title=f"Overview: {len(drawn)} areas", rect=rects[0], xlim=xlim, ylim=ylim,
            km_per_deg_lon=kx, scale_km=_nice_km((xlim[1] - xlim[0]) * kx / 5),
            background_lon=m_lon[b], background_lat=m_lat[b],
            transformer_lon=np.zeros(0), transformer_lat=np.zeros(0),
            site_ids=(), site_kinds=(), site_lon=np.zeros(0), site_lat=np.zeros(0),
            boxes=boxes, overview=True))

    drawn_kinds = [k for p in panels for k in p.site_kinds]
    legend = tuple((kind, drawn_kinds.count(kind)) for kind in STYLES if drawn_kinds.count(kind))
    n_sites_total, n_sites_placed = len(sites), int(s_ok.sum())
    n_drawn = len(drawn_kinds)
    if n_sites_placed < n_sites_total:
        missing = sites.loc[~s_ok, "site"].tolist()
        shown = ", ".join(str(s) for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        notes.append(f"{n_sites_total - n_sites_placed:,} flagged site(s) have no position and are "
                     f"not on the map ({shown})")
    summary = (f"{counts['meters']:,} meters, {counts['placed']:,} with coordinates"
               + (f" ({counts['missing']:,} without, {counts['invalid']:,} invalid)"
                  if counts["missing"] or counts["invalid"] else "")
               + f"; {n_drawn:,} of {n_sites_total:,} flagged sites and metering faults drawn. "
               "Labels: rank in the case list, assets by id.")
    title = "Where the flagged sites are" + (f", as of {as_of}" if as_of else "")
    return MapData(title=title, summary=summary, panels=tuple(panels), legend=legend,
                   notes=tuple(notes), counts=counts, sites_total=n_sites_total,
                   sites_placed=n_sites_placed, sites_drawn=n_drawn)


def _overview_boxes(panels, xlim, ylim, rect) -> tuple:
    """(text, lon0, lon1, lat0, lat1) of each area on the overview.

    Areas whose centres fall within 10 points of an earlier one share its
    text ("B, E") and get none of their own.
    """
    w_pt, h_pt = rect[2] * FIGSIZE[0] * 72, rect[3] * FIGSIZE[1] * 72
    texts, centres = [], []
    for p in panels:
        x = ((p.xlim[0] + p.xlim[1]) / 2 - xlim[0]) / (xlim[1] - xlim[0]) * w_pt
        y = ((p.ylim[0] + p.ylim[1]) / 2 - ylim[0]) / (ylim[1] - ylim[0]) * h_pt
        for k, (cx, cy) in enumerate(centres):
            if texts[k] and (x - cx) ** 2 + (y - cy) ** 2 <= 10.0 ** 2:
                texts[k] += f", {p.letter}"
                texts.append("")
                break
        else:
            texts.append(p.letter)
        centres.append((x, y))
    return tuple((t, p.xlim[0], p.xlim[1], p.ylim[0], p.ylim[1])
                 for t, p in zip(texts, panels, strict=True))


def _position_notes(counts: dict) -> list[str]:
    notes = []
    if counts["missing"]:
        notes.append(f"{counts['missing']:,} meter(s) have no coordinates in meters (lat, lon)")
    if counts["invalid"]:
        ids = ", ".join(counts["invalid_ids"]) + (", ..." if counts["invalid"] > len(counts["invalid_ids"])
                                                  else "")
        notes.append(f"{counts['invalid']:,} meter(s) have invalid coordinates (out of range, only "
                     f"one of lat and lon, or 0, 0) and are not drawn: {ids}")
    return notes


def _nearest(m_lat, m_lon, lat, lon) -> np.ndarray:
    """Index of the position (``m_lat``, ``m_lon``) nearest to each (``lat``, ``lon``); -1 for NaN."""
    out = np.full(len(lat), -1, dtype=np.int64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.any() and len(m_lat):
        from scipy.spatial import cKDTree

        cos0 = max(math.cos(math.radians(float(np.median(m_lat)))), 0.05)
        tree = cKDTree(np.column_stack([m_lon * cos0, m_lat]))
        _, nearest = tree.query(np.column_stack([lon[ok] * cos0, lat[ok]]))
        out[ok] = nearest
    return out


def _cluster_names(meter_ids, cluster, network: pd.Series | None) -> dict:
    """Group -> its name: the most common names of ``network`` among its meters ('' when none)."""
    if network is None or len(network) == 0:
        return {}
    names = pd.Series(network).astype("string").fillna("").reindex(meter_ids).fillna("")
    frame = pd.DataFrame({"c": cluster, "name": names.to_numpy(dtype=object)})
    frame = frame[frame["name"] != ""]
    if frame.empty:
        return {}
    sizes = frame.groupby(["c", "name"]).size().reset_index(name="n")
    sizes = sizes.sort_values(["c", "n", "name"], ascending=[True, False, True])
    out = {}
    for c, rows in sizes.groupby("c", sort=False):
        top = list(rows["name"].astype(str)[:2])
        more = len(rows) - len(top)
        out[int(c)] = ", ".join(top) + (f" +{more}" if more > 0 else "")
    return out


def map_of(result) -> MapData | None:
    """:func:`map_data` of a run (None when no meter has coordinates)."""
    meters = run_meters(result)
    positions = meter_positions(meters)
    assets = asset_positions(meters, positions)
    return map_data(positions, assets, result.flags, result.transformers,
                    as_of=str((result.info or {}).get("as_of", getattr(result, "as_of", "")) or ""),
                    network=area_names(meters))


def area_names(meters: pd.DataFrame | None) -> pd.Series | None:
    """The name of each meter's part of the network: its substation, else its region (None: neither)."""
    if meters is None or len(meters) == 0:
        return None
    ids = meters[col.METER_ID].astype("string").fillna("").astype(str).to_numpy(dtype=object)
    for key in (col.SUBSTATION_ID, col.REGION):
        if key in meters and meters[key].notna().any():
            names = pd.Series(meters[key].astype("string").to_numpy(), index=ids)
            return names[~names.index.duplicated()]
    return None


# =====================================================================================
# drawing
# =====================================================================================
def render_map(data: MapData):
    """Draw the map on a new Agg figure (never through pyplot); the caller closes it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import patheffects
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from gridwatch.report.figures import new_figure

    fig = new_figure(FIGSIZE, None)
    fig.set_dpi(DPI)
    fig.text(_SIDE_IN / FIGSIZE[0], 1 - 0.12 / FIGSIZE[1], data.title, fontsize=13, weight="bold",
             va="top")
    fig.text(_SIDE_IN / FIGSIZE[0], 1 - 0.40 / FIGSIZE[1], data.summary, fontsize=8.5, color="0.3",
             va="top")
    fig.text(1 - _SIDE_IN / FIGSIZE[0], 0.012, "equirectangular projection; no map tiles",
             fontsize=7, color="0.45", ha="right", va="bottom")
    halo = [patheffects.withStroke(linewidth=2.6, foreground="white")]
    for p in data.panels:
        ax = fig.add_axes(p.rect)
        ax.set_xlim(*p.xlim)
        ax.set_ylim(*p.ylim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("#f7f8fa")
        for spine in ax.spines.values():
            spine.set_color("0.7")
        ax.set_title(p.title, fontsize=9, loc="left", pad=3)
        ax.scatter(p.background_lon, p.background_lat, s=2 if not p.overview else 1.2, c="0.62",
                   alpha=0.55, linewidths=0, zorder=1, rasterized=True)
        if p.transformer_lon.size:
            ax.scatter(p.transformer_lon, p.transformer_lat, s=16, marker="^", facecolors="none",
                       edgecolors="0.45", linewidths=0.6, zorder=2)
        kinds = np.asarray(p.site_kinds, dtype=object)
        for kind in list(STYLES)[::-1]:  # the assets beneath the meters
            at = kinds == kind
            if not at.any():
                continue
            _, marker, face, edge, size, z = STYLES[kind]
            ax.scatter(p.site_lon[at], p.site_lat[at], s=size, marker=marker, c=face,
                       edgecolors=edge, linewidths=0.8, zorder=z)
        other = ~np.isin(kinds, list(STYLES))
        if other.any():
            label, marker, face, edge, size, z = STYLES[col.KIND_VISIBLE]
            ax.scatter(p.site_lon[other], p.site_lat[other], s=size, marker=marker, c=face,
                       edgecolors=edge, linewidths=0.8, zorder=z)
        for text, lon, lat, dx, dy, ha, va in zip(p.label_text, p.label_lon, p.label_lat, p.label_dx_pt,
                                                  p.label_dy_pt, p.label_ha, p.label_va, strict=True):
            ax.annotate(_mpl(text), (lon, lat), xytext=(dx, dy), textcoords="offset points",
                        fontsize=LABEL_FONT_PT, ha=ha, va=va, zorder=8, path_effects=halo,
                        annotation_clip=True)
        for letter, x0, x1, y0, y1 in p.boxes:
            # the area's box, and a ring at its centre that stays visible when the box is a dot
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#1f5fa8", lw=1.0,
                                   zorder=4))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ax.scatter([cx], [cy], s=150, facecolors="none", edgecolors="#1f5fa8", linewidths=1.6,
                       zorder=5)
            if letter:
                ax.annotate(letter, (cx, cy), xytext=(9, 0), textcoords="offset points", fontsize=11,
                            weight="bold", color="#1f5fa8", ha="left", va="center", zorder=8,
                            path_effects=halo)
        _scale_bar(ax, p)
    handles = [Line2D([], [], ls="none", marker="o", markersize=3, color="0.62", label="meter")]
    handles.append(Line2D([], [], ls="none", marker="^", markersize=5, markerfacecolor="none",
                          markeredgecolor="0.45", label="transformer (median of its meters)"))
    for kind, n in data.legend:
        label, marker, face, edge, size, _ = STYLES[kind]
        handles.append(Line2D([], [], ls="none", marker=marker, markersize=math.sqrt(size) * 0.9,
                              markerfacecolor=face, markeredgecolor=edge if edge != "white" else face,
                              label=f"{label}: {n:,}"))
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(_SIDE_IN / FIGSIZE[0], 0.005),
               ncols=min(4, len(handles)), fontsize=8, frameon=False, handletextpad=0.3,
               columnspacing=1.2)
    return fig


def _mpl(text: str) -> str:
    """Label text safe for matplotlib (no mathtext)."""
    return str(text).replace("$", r"\$")


def _scale_bar(ax, p: Panel) -> None:
    """A scale bar [km] in the panel's lower left corner."""
    width_deg = p.scale_km / p.km_per_deg_lon
    x0 = p.xlim[0] + 0.04 * (p.xlim[1] - p.xlim[0])
    y0 = p.ylim[0] + 0.05 * (p.ylim[1] - p.ylim[0])
    ax.plot([x0, x0 + width_deg], [y0, y0], color="black", lw=2.2, solid_capstyle="butt", zorder=9)
    km = p.scale_km
    text = f"{km * 1000:g} m" if km < 1 else f"{km:g} km"
    ax.annotate(text, (x0 + width_deg / 2, y0), xytext=(0, 3), textcoords="offset points",
                fontsize=7.5, ha="center", va="bottom", zorder=9)


def write_map(data: MapData, path) -> Path:
    """Draw ``data`` and write it as a PNG at ``path``, atomically.

    Returns
    -------
    pathlib.Path
    """
    from gridwatch.report.figures import close_figure, local_rc
    from gridwatch.report.png import write_png

    path = Path(path)
    with local_rc():
        fig = render_map(data)
        try:
            fig.canvas.draw()
            rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
            write_png(np.ascontiguousarray(rgb), path, dpi=DPI)
        finally:
            close_figure(fig)
    return path
