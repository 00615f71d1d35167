"""Level shifts in daily series of many meters at once.

For each meter ``m`` the daily series ``y[:, m]`` is modelled as

    y[d, m] = X[m][d] . beta_m + c_m * 1[d >= onset_m] + e[d, m]

where ``X`` holds the covariates that explain ordinary variation (intercept,
weekend, heating and cooling degree-days, peer index). The onset is found by
scanning every candidate day and keeping the one that removes the most
residual variance; the covariates and the step are fitted jointly, so the
baseline is never contaminated by the anomaly it is looking for.

Everything is vectorised over meters: the weighted normal equations of all
meters are solved as one batch of small ``p x p`` systems, and the step
regressors for all candidate onsets are handled with the Frisch-Waugh-Lovell
theorem (residualise the step on ``X`` once per meter, for all onsets in one
tensor product). There is no per-meter Python loop; meters are processed in
chunks only to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LevelShift:
    """Best single upward level shift of each meter's daily series.

    Attributes (arrays of shape ``(n_meters,)`` unless noted)
    ----------
    onset : int
        Day position of the shift (first day at the new level); -1 if none
        could be tested.
    shift : float
        Estimated size of the shift ``c`` [units of y].
    t : float
        ``shift`` over its standard error (daily residuals, jointly fitted).
    sigma : float
        Residual standard deviation of the full model [units of y].
    n_pre, n_post : int
        Valid days before and from the onset.
    fitted_baseline : numpy.ndarray of shape (n_days, n_meters)
        ``X . beta`` with the step removed: the expected series had nothing
        changed [units of y].
    """

    onset: np.ndarray
    shift: np.ndarray
    t: np.ndarray
    sigma: np.ndarray
    n_pre: np.ndarray
    n_post: np.ndarray
    fitted_baseline: np.ndarray


def _solve(a, b):
    # Batched symmetric solve with a small ridge for rank-deficient designs
    # (e.g. a covariate that is constant over the valid days of a meter).
    p = a.shape[-1]
    scale = np.maximum(np.trace(a, axis1=-2, axis2=-1) / p, 1e-12)
    ridge = 1e-8 * scale[:, None, None] * np.eye(p)
    return np.linalg.solve(a + ridge, b)


def _suffix_sums(a: np.ndarray) -> np.ndarray:
    """Sums over the last axis from each position to the end."""
    return np.flip(np.cumsum(np.flip(a, axis=-1), axis=-1), axis=-1)


def scan_level_shift(y, X, *, min_pre=5, min_post=1, first_candidate=None, chunk=2048):
    """Find the best upward level shift in every column of ``y``.

    Parameters
    ----------
    y : numpy.ndarray of shape (n_days, n_meters)
        Daily series, NaN where missing.
    X : numpy.ndarray of shape (n_meters, n_days, n_covariates)
        Covariates per meter and day; must include an intercept column.
        NaN covariates make that day invalid for that meter.
    min_pre : int, default 5
        Valid days needed before a candidate onset.
    min_post : int, default 1
        Valid days needed from a candidate onset on.
    first_candidate : int, optional
        Earliest day position tested as onset (default ``min_pre``).
    chunk : int, default 2048
        Meters per batch (bounds memory at about ``chunk * n_days**2 * 8`` bytes).

    Returns
    -------
    LevelShift
    """
    n_days, n_meters = y.shape
    if X.shape[:2] != (n_meters, n_days):
        raise ValueError(f"X must have shape (n_meters, n_days, p) = ({n_meters}, {n_days}, p); "
                         f"got {X.shape}")
    first = min_pre if first_candidate is None else first_candidate
    candidates = np.arange(max(first, 1), n_days)

    onset = np.full(n_meters, -1, dtype=np.int64)
    shift = np.full(n_meters, np.nan)
    tstat = np.full(n_meters, np.nan)
    sigma = np.full(n_meters, np.nan)
    n_pre = np.zeros(n_meters, dtype=np.int64)
    n_post = np.zeros(n_meters, dtype=np.int64)
    baseline = np.full((n_days, n_meters), np.nan)
    if len(candidates) == 0:
        return LevelShift(onset, shift, tstat, sigma, n_pre, n_post, baseline)

    for lo in range(0, n_meters, chunk):
        hi = min(lo + chunk, n_meters)
        Xc = X[lo:hi]  # (m, D, p)
        yc = y[:, lo:hi].T  # (m, D)
        w = (~np.isnan(yc) & ~np.isnan(Xc).any(axis=2)).astype(np.float64)
        Xc = np.nan_to_num(Xc)
        yc = np.where(w > 0, yc, 0.0)
        p = Xc.shape[2]

        XtW = Xc.transpose(0, 2, 1) * w[:, None, :]  # (m, p, D)
        A = XtW @ Xc  # (m, p, p)
        beta0 = _solve(A, (XtW @ yc[:, :, None]))[:, :, 0]  # (m, p)
        r = (yc - np.einsum("mdp,mp->md", Xc, beta0)) * w  # residual without step
        # The step of candidate k is 1 from day k on, so its products with the
        # days are suffix sums: X'W s_k, r's_k and s_k'W s_k without the
        # (m, D, K) residual-step array (the same algebra, K times less work).
        G = _suffix_sums(XtW)[:, :, candidates]  # (m, p, K) = X'W s_k
        H = _solve(A, G)  # (m, p, K)
        # r'(s_k - X H_k) and |W (s_k - X H_k)|^2, expanded (r is already weighted)
        q = np.einsum("mdp,md->mp", Xc, r)  # X'W r
        num = _suffix_sums(r)[:, candidates] - np.einsum("mp,mpk->mk", q, H)
        n_after = _suffix_sums(w)[:, candidates]
        den = n_after - 2.0 * np.einsum("mpk,mpk->mk", G, H) + np.einsum("mpk,mpk->mk", H, A @ H)

        cum = np.cumsum(w, axis=1)
        valid_before = np.concatenate([np.zeros((hi - lo, 1)), cum[:, :-1]], axis=1)[:, candidates]
        valid_after = cum[:, -1:] - valid_before
        scale = 1e-9 * (1.0 + np.sqrt(np.sum(yc**2, axis=1) / np.maximum(w.sum(axis=1), 1)))
        ok = (valid_before >= min_pre) & (valid_after >= min_post) & (den > 1e-9)
        ok &= num > scale[:, None] * np.maximum(den, 1e-9)  # an upward shift beyond rounding
        gain = np.where(ok, num**2 / np.where(den > 0, den, 1.0), -np.inf)
        best = np.argmax(gain, axis=1)
        has = np.isfinite(gain[np.arange(hi - lo), best])

        rows = np.arange(hi - lo)
        c = num[rows, best] / np.where(has, den[rows, best], 1.0)
        ssr = np.sum(r**2, axis=1) - np.where(has, gain[rows, best], 0.0)
        dof = np.maximum(w.sum(axis=1) - p - 1, 1.0)
        sig = np.sqrt(np.maximum(ssr, 0.0) / dof)
        se = sig / np.sqrt(np.where(has, den[rows, best], np.inf))
        # beta of the joint model: beta0 - H[:, :, best] * c
        beta = beta0 - H[rows, :, best] * np.where(has, c, 0.0)[:, None]

        onset[lo:hi] = np.where(has, candidates[best], -1)
        shift[lo:hi] = np.where(has, c, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            tstat[lo:hi] = np.where(has, c / se, np.nan)
        sigma[lo:hi] = sig
        n_pre[lo:hi] = np.where(has, valid_before[rows, best], 0)
        n_post[lo:hi] = np.where(has, valid_after[rows, best], 0)
        baseline[:, lo:hi] = np.einsum("mdp,mp->md", Xc, beta).T
    return LevelShift(onset, shift, tstat, sigma, n_pre, n_post, baseline)


def shift_at(y, X, onset):
    """Fit the step model at a given onset per meter: the shift of another series.

    Parameters
    ----------
    y : numpy.ndarray of shape (n_days, n_meters)
    X : numpy.ndarray of shape (n_meters, n_days, p)
    onset : numpy.ndarray of int, shape (n_meters,)
        Day position of the step; -1 for none (result NaN).

    Returns
    -------
    shift : numpy.ndarray of shape (n_meters,)
        Size of the step [units of y].
    baseline : numpy.ndarray of shape (n_days, n_meters)
        Expected series without the step [units of y].
    """
    n_days, n_meters = y.shape
    days = np.arange(n_days)
    step = (days[None, :] >= onset[:, None]).astype(np.float64) * (onset[:, None] >= 0)
    Xs = np.concatenate([X, step[:, :, None]], axis=2)
    yt = y.T
    w = (~np.isnan(yt) & ~np.isnan(Xs).any(axis=2)).astype(np.float64)
    Xs = np.nan_to_num(Xs)
    yt = np.where(w > 0, yt, 0.0)
    XtW = Xs.transpose(0, 2, 1) * w[:, None, :]
    beta = _solve(XtW @ Xs, XtW @ yt[:, :, None])[:, :, 0]
    shift = np.where(onset >= 0, beta[:, -1], np.nan)
    base = np.einsum("mdp,mp->md", Xs[:, :, :-1], beta[:, :-1]).T
    return shift, base
