"""Where the sun is, and which meters have rooftop PV.

A meter behind rooftop PV imports little or nothing at sunny middays (and
exports, where its export register is read): its daily floor is set by the
sun, not by what runs in the house. The detector therefore judges the floor
of a PV meter on its dark hours only, when every panel is idle
(:func:`floor_cells`). A rig behind PV draws at night like any other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridwatch import columns as col

__all__ = ["DARK_ELEVATION_DEG", "FALLBACK_DARK_HOURS", "PvMeters", "dark_cells", "floor_cells",
           "pv_meters", "solar_elevation_sin"]

DARK_ELEVATION_DEG = -3.0
"""The sun this far below the horizon leaves every panel idle [degrees] (a margin for the
equation of time, which :func:`solar_elevation_sin` leaves out)."""
FALLBACK_DARK_HOURS = (23, 4)
"""Local hours [start, end) taken as dark for meters without coordinates [h]."""
_EXPORT_MIN_KW = 0.02  # export above this is a generator at work [kW]
_MIN_EXPORT_CELLS = 10  # ... seen in at least this many cells
_NEAR_ZERO_KW = 0.01  # import at or below this is "nothing" [kW]
_PV_DAY_ZERO_SHARE = 0.15  # an import-only PV meter imports nothing in this share of sunny cells
_PV_DARK_ZERO_SHARE = 0.05  # ... but rarely in the dark


def solar_elevation_sin(lat_deg, day_of_year, solar_hour):
    """Sine of the sun's elevation (negative below the horizon).

    Parameters
    ----------
    lat_deg : array broadcastable with the others
        Latitude [degrees north].
    day_of_year : array
        Day of the year (1..366).
    solar_hour : array
        Local solar time [h] (12 at solar noon).

    Returns
    -------
    numpy.ndarray [-]

    Notes
    -----
    Cooper's declination, ``23.45 sin(2 pi (284 + doy) / 365)`` [degrees];
    the equation of time (up to 16 minutes) is left out, which the margin
    of :data:`DARK_ELEVATION_DEG` covers.

    Examples
    --------
    >>> bool(solar_elevation_sin(52.0, 172, 12.0) > 0.9)  # midsummer noon at 52 N
    True
    """
    decl = np.deg2rad(23.45) * np.sin(2 * np.pi * (284 + np.asarray(day_of_year)) / 365.0)
    lat = np.deg2rad(lat_deg)
    omega = np.deg2rad(15.0 * (np.asarray(solar_hour) - 12.0))
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(omega)


def dark_cells(index: pd.DatetimeIndex, lat_deg, lon_deg, *, local_hour=None,
               cell_hours: float = 1.0) -> np.ndarray:
    """Grid cells in which the sun stays below :data:`DARK_ELEVATION_DEG`, per site.

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Tz-aware UTC grid (cell starts).
    lat_deg, lon_deg : array of shape (n,)
        Site coordinates [degrees]; NaN where unknown.
    local_hour : numpy.ndarray of int, shape (n_cells,), optional
        Local hour of each cell, for the sites without coordinates
        (:data:`FALLBACK_DARK_HOURS`); without it they have no dark cells.
    cell_hours : float, default 1
        Cell length [h]: a cell is dark when the sun is down at its start,
        middle and end.

    Returns
    -------
    numpy.ndarray of bool, shape (n_cells, n)
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    known = np.isfinite(lat) & np.isfinite(lon)
    dark = np.zeros((len(index), len(lat)), dtype=bool)
    # Sites within a degree share their sky: one computation per rounded position.
    key = np.where(known[:, None], np.round(np.c_[lat, lon]), np.nan)
    places, site_place = np.unique(key[known], axis=0, return_inverse=True)
    if len(places):
        dark[:, known] = _dark_at(index, places[:, 0], places[:, 1], cell_hours)[:, site_place.ravel()]
    if (~known).any() and local_hour is not None:
        start, end = FALLBACK_DARK_HOURS
        h = np.asarray(local_hour)
        fallback = (h >= start) | (h < end) if start > end else (h >= start) & (h < end)
        dark[:, ~known] = fallback[:, None]
    return dark


def _dark_at(index, lat, lon, cell_hours):
    utc = index.tz_convert("UTC")
    doy = utc.day_of_year.to_numpy()[:, None]
    hour = (utc.hour + utc.minute / 60.0).to_numpy()[:, None]
    limit = np.sin(np.deg2rad(DARK_ELEVATION_DEG))
    dark = np.ones((len(index), len(lat)), dtype=bool)
    for offset in (0.0, 0.5 * cell_hours, cell_hours):  # start, middle, end of the cell
        solar_hour = (hour + offset + lon[None, :] / 15.0) % 24.0
        dark &= solar_elevation_sin(lat[None, :], doy, solar_hour) < limit
    return dark


class PvMeters:
    """Which meters show rooftop PV, and how.

    Attributes
    ----------
    has_pv : numpy.ndarray of bool, shape (n_meters,)
    exports : numpy.ndarray of bool, shape (n_meters,)
        The export register shows generation.
    import_only : numpy.ndarray of bool, shape (n_meters,)
        No export seen, but imports nothing in sunny hours and something in the dark.
    """

    def __init__(self, exports: np.ndarray, import_only: np.ndarray):
        self.exports = exports
        self.import_only = import_only & ~exports
        self.has_pv = exports | self.import_only


def pv_meters(kw: np.ndarray, dark, export_kw: np.ndarray | None = None) -> PvMeters:
    """Find the meters behind rooftop PV.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Import demand [kW], NaN where missing.
    dark : numpy.ndarray of bool, shape (n_cells, n_meters), or callable
        :func:`dark_cells` of the meters, or a function giving them for some
        column positions (only meters with many empty cells need them).
    export_kw : numpy.ndarray of shape (n_cells, n_meters), optional
        Export per cell [kW] (the ``kwh_export`` register), NaN where not read.

    Returns
    -------
    PvMeters
    """
    n = kw.shape[1]
    exports = np.zeros(n, dtype=bool)
    if export_kw is not None:
        with np.errstate(invalid="ignore"):
            exports = (export_kw > _EXPORT_MIN_KW).sum(axis=0) >= _MIN_EXPORT_CELLS
    # Import-only PV: nothing drawn in a good share of the sunny cells, something in the
    # dark. Only meters with enough empty cells at all need the split by the sun.
    import_only = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        n_zero = np.count_nonzero(kw <= _NEAR_ZERO_KW, axis=0)  # NaN is not
    n_valid = np.count_nonzero(~np.isnan(kw), axis=0)
    cand = np.flatnonzero(n_zero >= _PV_DAY_ZERO_SHARE * 0.25 * n_valid)  # >= a quarter light
    if len(cand):
        sub = kw[:, cand]
        sub_dark = dark(cand) if callable(dark) else dark[:, cand]
        with np.errstate(invalid="ignore"):
            zero = sub <= _NEAR_ZERO_KW
        valid = ~np.isnan(sub)
        n_zero_dark = np.count_nonzero(zero & sub_dark, axis=0)
        n_dark = np.count_nonzero(valid & sub_dark, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            day_zero = (n_zero[cand] - n_zero_dark) / (n_valid[cand] - n_dark)
            dark_zero = n_zero_dark / n_dark
        import_only[cand] = (np.nan_to_num(day_zero) >= _PV_DAY_ZERO_SHARE) & \
            (np.nan_to_num(dark_zero, nan=1.0) <= _PV_DARK_ZERO_SHARE)
    return PvMeters(exports, import_only)


def floor_cells(kw: np.ndarray, index: pd.DatetimeIndex, meters: pd.DataFrame, *, local_hour,
                cell_hours: float, export_kw: np.ndarray | None = None):
    """The cells each meter's daily floor is judged on: all of them, or the dark ones behind PV.

    Parameters
    ----------
    kw : numpy.ndarray of shape (n_cells, n_meters)
        Import demand [kW], NaN where missing.
    index : pandas.DatetimeIndex
        The UTC grid.
    meters : pandas.DataFrame
        One row per column of ``kw`` (``lat``, ``lon`` when known).
    local_hour : numpy.ndarray of int, shape (n_cells,)
    cell_hours : float
        Cell length [h].
    export_kw : numpy.ndarray of shape (n_cells, n_meters), optional
        Export per cell [kW].

    Returns
    -------
    cells : numpy.ndarray of bool, shape (n_cells, n_meters), or None
        None when no meter shows PV.
    pv : PvMeters
    dark : numpy.ndarray of bool, shape (n_cells, n_meters), or None
        :func:`dark_cells` of every meter (None when no meter shows PV).
    """
    lat, lon = _coords(meters, col.LAT), _coords(meters, col.LON)

    def dark_of(columns):
        return dark_cells(index, lat[columns], lon[columns], local_hour=local_hour,
                          cell_hours=cell_hours)

    pv = pv_meters(kw, dark_of, export_kw)
    if not pv.has_pv.any():
        return None, pv, None
    dark = dark_of(np.arange(kw.shape[1]))
    cells = dark.copy()
    cells[:, ~pv.has_pv] = True
    return cells, pv, dark


def _coords(meters: pd.DataFrame, name: str) -> np.ndarray:
    if name not in meters:
        return np.full(len(meters), np.nan)
    return pd.to_numeric(meters[name], errors="coerce").to_numpy(dtype=np.float64)
