"""Peer groups' daily figures, computed once for all meters and shared by every partition.

A meter's *peer index* is the daily median of its peers' normalised floor
(each meter's daily floor over its own median floor), minus 1: it carries
what moved the whole group on a day (a cold snap, a holiday) into the
level-shift model. Peers are the meters of the same customer class in the
same region; a group with fewer than :data:`PEER_GROUP_MIN_METERS` meters
falls back to the class across regions, then to all meters. Groups are
deliberately wide (not the transformer): a transformer where half the meters
mine (an apartment block) must not make mining look normal.

The medians come from histograms of the normalised floor (fine, fixed bins,
linear interpolation within a bin), so that the figures of a run cut into
partitions are the sum of the partitions' counts: the same numbers whether
the meters are scored all at once, one partition after another, or on a
cluster. Memory is ``groups x days x bins`` counts, whatever the number of
meters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gridwatch import columns as col

PEER_GROUP_MIN_METERS = 8
"""A peer group needs this many meters; smaller ones fall back to a wider group."""

NORM_MAX = 4.0
"""Normalised floors are counted on [0, NORM_MAX); higher ones in the last bin."""

N_BINS = 1024
"""Histogram bins on [0, NORM_MAX): a median is exact to about 0.001 (0.1 % of a typical floor)."""

_LEVELS = 3  # class|region, class, everyone


def peer_keys(meters: pd.DataFrame) -> np.ndarray:
    """Each meter's peer-group keys, from the narrowest group to everyone.

    Returns
    -------
    numpy.ndarray of str, shape (n_meters, 3)
        ``class|region``, ``class`` and ``*`` (all meters).
    """
    cls = meters[col.CUSTOMER_CLASS].astype("string").fillna("other").to_numpy(dtype=object)
    reg = meters[col.REGION].astype("string").fillna("").to_numpy(dtype=object)
    return np.stack([cls + "|" + reg, cls, np.full(len(meters), "*", dtype=object)], axis=1)


def normalised_floor(floor_kw: np.ndarray) -> np.ndarray:
    """Each meter's daily floor over its own median floor (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN meters
        norm = floor_kw / np.nanmedian(floor_kw, axis=0)
    norm[~np.isfinite(norm)] = np.nan
    return norm


@dataclass
class DailyHistograms:
    """Per-group histograms of one daily figure of the meters, added across partitions.

    The counts of a run cut into partitions are the sum of the partitions'
    counts, so every figure read from them is the same whichever way the
    meters were split.

    Attributes
    ----------
    n_days : int
    counts : dict of str to numpy.ndarray of shape (n_days, n_bins)
        Meters per day and bin, per group key.
    members : dict of str to int
        Meters per group key (with data or not on a given day).
    """

    n_days: int
    counts: dict = field(default_factory=dict)
    members: dict = field(default_factory=dict)

    def __add__(self, other):
        if type(other) is not type(self) or other.n_days != self.n_days:
            raise ValueError(f"{type(self).__name__} over {self.n_days} days and "
                             f"{type(other).__name__} over {other.n_days} days do not add")
        counts, members = dict(self.counts), dict(self.members)
        for key, hist in other.counts.items():
            counts[key] = counts[key] + hist if key in counts else hist
            members[key] = members.get(key, 0) + other.members[key]
        return type(self)(self.n_days, counts, members)

    def _locate(self, key: str, rank: np.ndarray):
        """Where cumulative count ``rank`` falls on each day.

        Returns the bin holding it, the share of that bin below it, and the
        day's count.
        """
        hist = self.counts[key]
        n_bins = hist.shape[1]
        n = hist.sum(axis=1)
        cum = np.cumsum(hist, axis=1)
        b = np.minimum((cum < rank[:, None]).sum(axis=1), n_bins - 1)
        days = np.arange(self.n_days)
        before = np.where(b > 0, cum[days, np.maximum(b - 1, 0)], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip((rank - before) / hist[days, b], 0.0, 1.0)
        return b, frac, n


def _count(bins: np.ndarray, ok: np.ndarray, keys: np.ndarray, n_bins: int) -> tuple[dict, dict]:
    """Histograms ``(n_days, n_bins)`` of ``bins`` per key of each meter, and the keys' sizes.

    ``bins`` and ``ok`` are ``(n_days, n_meters)``; ``keys`` one group key per meter.
    """
    n_days = bins.shape[0]
    codes, uniques = pd.factorize(keys)
    day = np.broadcast_to(np.arange(n_days)[:, None], bins.shape)
    cell = (codes[None, :] * n_days + day) * n_bins + bins
    hist = np.bincount(cell[ok], minlength=len(uniques) * n_days * n_bins)
    hist = hist.astype(np.int32).reshape(len(uniques), n_days, n_bins)  # half the bytes to send
    sizes = np.bincount(codes, minlength=len(uniques))
    return ({key: hist[g] for g, key in enumerate(uniques)},
            {key: int(sizes[g]) for g, key in enumerate(uniques)})


@dataclass
class PeerCounts(DailyHistograms):
    """Histograms of the normalised daily floor per peer group (``N_BINS`` on [0, ``NORM_MAX``))."""

    def medians(self) -> dict:
        """The daily median normalised floor of each group, ``{key: (n_days,)}`` (NaN: no data)."""
        width = NORM_MAX / N_BINS
        out = {}
        for key, hist in self.counts.items():
            b, frac, n = self._locate(key, hist.sum(axis=1) / 2.0)
            out[key] = np.where(n > 0, b * width + frac * width, np.nan)
        return out


def peer_counts(floor_kw: np.ndarray, meters: pd.DataFrame) -> PeerCounts:
    """Count the meters' normalised daily floors per peer group (vectorised over all meters).

    Parameters
    ----------
    floor_kw : numpy.ndarray of shape (n_days, n_meters)
        Daily floor demand [kW], NaN on unusable days.
    meters : pandas.DataFrame
        One row per column of ``floor_kw``: ``customer_class``, ``region``.

    Returns
    -------
    PeerCounts
    """
    n_days, _ = floor_kw.shape
    norm = normalised_floor(floor_kw)
    ok = ~np.isnan(norm)
    bins = np.clip((np.nan_to_num(norm) * (N_BINS / NORM_MAX)).astype(np.int64), 0, N_BINS - 1)
    keys = peer_keys(meters)
    result = PeerCounts(n_days)
    for level in range(_LEVELS):  # three passes over the array, not one per meter
        counts, members = _count(bins, ok, keys[:, level], N_BINS)
        result.counts.update(counts)
        result.members.update(members)
    return result


def peer_index(meters: pd.DataFrame, counts: PeerCounts, medians: dict | None = None) -> np.ndarray:
    """Each meter's peer index: its group's daily median normalised floor, minus 1.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters to index (``customer_class``, ``region``).
    counts : PeerCounts
        Counts of ALL meters of the run (summed over partitions).
    medians : dict, optional
        ``counts.medians()``, when already computed.

    Returns
    -------
    numpy.ndarray of shape (n_days, n_meters)
        0 where no group is large enough or a day has no data.
    """
    medians = counts.medians() if medians is None else medians
    keys = peer_keys(meters)
    out = np.zeros((counts.n_days, len(meters)))
    chosen = np.zeros(len(meters), dtype=bool)
    for level in range(_LEVELS):
        uniques, inverse = np.unique(keys[:, level].astype(str), return_inverse=True)
        for g, key in enumerate(uniques):  # one iteration per group, not per meter
            if counts.members.get(key, 0) < PEER_GROUP_MIN_METERS:
                continue
            use = (inverse == g) & ~chosen
            out[:, use] = medians[key][:, None] - 1.0
            chosen |= use
    return np.nan_to_num(out)


# --- the peer band of the plots -------------------------------------------------------
BAND_MIN_KW = 1e-3
"""Daily means below this are counted as zero in :class:`DemandBands` [kW]."""

BAND_MAX_KW = 1e5
"""... and above this in the top bin [kW]."""

BAND_BINS = 2048
"""Log-spaced bins between the two: a percentile is exact to about 0.6 %."""


def _band_edges() -> np.ndarray:
    return np.concatenate([[0.0], np.geomspace(BAND_MIN_KW, BAND_MAX_KW, BAND_BINS)])


@dataclass
class DemandBands(DailyHistograms):
    """Histograms of the daily mean demand of each customer class (``BAND_BINS`` log bins).

    What the investigator's plot draws as the peer band (a class's daily
    10th-90th percentile), computed from counts so that a run cut into
    partitions draws the same band without keeping every meter's series.
    Bin 0 holds daily means below ``BAND_MIN_KW``.
    """

    def percentiles(self, key: str, q) -> np.ndarray:
        """Daily percentiles ``q`` (0-100) of the class's daily mean demand, ``(len(q), n_days)`` [kW].

        NaN on days without data (and for a class without meters).
        """
        q = np.asarray(q, dtype=np.float64)
        out = np.full((len(q), self.n_days), np.nan)
        if key not in self.counts:
            return out
        edges = _band_edges()
        n = self.counts[key].sum(axis=1)
        for i, pct in enumerate(q):
            # the rank numpy's default percentile interpolates at, as a cumulative count
            b, frac, _ = self._locate(key, pct / 100.0 * np.maximum(n - 1, 0) + 0.5)
            lo, hi = edges[b], edges[np.minimum(b + 1, BAND_BINS)]
            # geometric within a log bin (linear in the first, which starts at 0)
            value = np.where(b == 0, hi * frac, lo * (hi / np.maximum(lo, BAND_MIN_KW)) ** frac)
            out[i] = np.where(n > 0, value, np.nan)
        return out


def demand_bands(mean_kw: np.ndarray, meters: pd.DataFrame) -> DemandBands:
    """Count the meters' daily mean demand per customer class (vectorised over all meters).

    Parameters
    ----------
    mean_kw : numpy.ndarray of shape (n_days, n_meters)
        Daily mean demand [kW], NaN on unusable days.
    meters : pandas.DataFrame
        One row per column: ``customer_class``.

    Returns
    -------
    DemandBands
    """
    n_days, _ = mean_kw.shape
    ok = np.isfinite(mean_kw)
    values = np.clip(np.where(ok, mean_kw, 0.0), 0.0, BAND_MAX_KW)
    bins = np.clip(np.searchsorted(_band_edges(), values, side="right") - 1, 0, BAND_BINS - 1)
    classes = meters[col.CUSTOMER_CLASS].astype("string").fillna("other").to_numpy(dtype=object)
    return DemandBands(n_days, *_count(bins, ok, classes, BAND_BINS))
