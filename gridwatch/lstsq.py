"""Least squares for many small independent problems at once (one per asset or column).

The energy balance fits the same few-regressor model to every asset: the
normal equations are built for all of them with elementwise products summed
over cells row by row, so that a column's result has the same bits whatever
the other columns are (a BLAS product's blocking would change them with the
number of columns), and solved as one batch of ``p x p`` systems.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batched_least_squares"]


def batched_least_squares(design: np.ndarray, y: np.ndarray,
                          weight: np.ndarray | None = None) -> np.ndarray:
    """Coefficients of ``y[:, j]`` on ``design[:, j, :]`` for every column ``j``.

    Parameters
    ----------
    design : numpy.ndarray of shape (n_rows, n_columns, p)
        Regressors per row and column (0 on rows to leave out).
    y : numpy.ndarray of shape (n_rows, n_columns)
        Responses (0 on rows to leave out).
    weight : numpy.ndarray of shape (n_rows, n_columns), optional
        Row weights (weighted least squares).

    Returns
    -------
    numpy.ndarray of shape (n_columns, p)

    Notes
    -----
    A small ridge (1e-9 of the mean diagonal) keeps rank-deficient systems
    (a regressor that is zero for a column) solvable; their coefficient is 0.

    Examples
    --------
    >>> x = np.arange(5.0)[:, None]
    >>> design = np.stack([np.ones_like(x), x], axis=2)
    >>> batched_least_squares(design, 1.0 + 2.0 * x).round(6).tolist()
    [[1.0, 2.0]]
    """
    p = design.shape[2]
    wd = design if weight is None else design * weight[:, :, None]
    lhs = np.stack([(wd[:, :, i] * design[:, :, j]).sum(axis=0) for i in range(p)
                    for j in range(p)], axis=1).reshape(-1, p, p)
    rhs = np.stack([(wd[:, :, i] * y).sum(axis=0) for i in range(p)], axis=1)
    scale = np.maximum(np.trace(lhs, axis1=-2, axis2=-1) / p, 1e-12)
    return np.linalg.solve(lhs + 1e-9 * scale[:, None, None] * np.eye(p), rhs[:, :, None])[:, :, 0]
