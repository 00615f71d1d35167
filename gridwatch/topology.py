"""The supply tree: which meters hang below each transformer, feeder and substation.

``meters`` carries the topology row by row (``docs/data-contract.md §meters``):
meter -> ``transformer_id`` -> ``feeder_id`` -> ``substation_id``. An asset's
metered energy is the sum over every meter below it, so a feeder collects
its meters directly, including meters whose transformer is unknown (a feeder
with upstream data but transformers without is balanced at the feeder).

:func:`asset_members` turns the table into one long membership table and
:func:`membership_matrix` into the sparse ``meters x assets`` matrix that
aggregates a whole ``time x meter`` demand matrix in one product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from gridwatch import columns as col

#: Asset levels, lowest first, with the ``meters`` column that names them.
LEVELS = ("transformer", "feeder", "substation")
LEVEL_COLUMNS = {"transformer": col.TRANSFORMER_ID, "feeder": col.FEEDER_ID,
                 "substation": col.SUBSTATION_ID}

MEMBERS_COLUMNS = (col.ASSET_ID, "level", col.METER_ID)


def asset_members(meters: pd.DataFrame) -> pd.DataFrame:
    """Every (asset, meter) pair of the supply tree, at every level.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters table: ``meter_id`` and any of ``transformer_id``,
        ``feeder_id``, ``substation_id`` (missing columns, NaN and empty
        strings mean "unknown").

    Returns
    -------
    pandas.DataFrame
        Columns ``asset_id`` (str), ``level`` (``"transformer"``,
        ``"feeder"`` or ``"substation"``) and ``meter_id`` (str); one row per
        meter and level at which it has a known asset, ordered by level
        (transformers first), then by the meters' order. A meter listed twice
        in ``meters`` appears once per asset. An id used at two levels (a
        feeder named like a transformer) gives rows at both levels; callers
        decide which one an upstream series measures.

    Raises
    ------
    ValueError
        When ``meters`` has no ``meter_id`` column.

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3"],
    ...                        "transformer_id": ["T1", "T1", None],
    ...                        "feeder_id": ["F1", "F1", "F1"]})
    >>> asset_members(meters).to_numpy().tolist()  # doctest: +NORMALIZE_WHITESPACE
    [['T1', 'transformer', 'M1'], ['T1', 'transformer', 'M2'],
     ['F1', 'feeder', 'M1'], ['F1', 'feeder', 'M2'], ['F1', 'feeder', 'M3']]
    """
    if col.METER_ID not in meters.columns:
        raise ValueError("meters has no 'meter_id' column; cannot build the supply tree")
    meter_id = meters[col.METER_ID].astype("string").str.strip()
    frames = []
    for level in LEVELS:  # three levels, not a loop over meters
        name = LEVEL_COLUMNS[level]
        if name not in meters.columns:
            continue
        asset = meters[name].astype("string").str.strip()
        keep = (asset.notna() & (asset != "") & meter_id.notna() & (meter_id != "")).to_numpy()
        frames.append(pd.DataFrame({col.ASSET_ID: asset[keep].astype(str).to_numpy(),
                                    "level": level,
                                    col.METER_ID: meter_id[keep].astype(str).to_numpy()}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in MEMBERS_COLUMNS})
    members = pd.concat(frames, ignore_index=True)
    return members.drop_duplicates(ignore_index=True)[list(MEMBERS_COLUMNS)]


def membership_matrix(members: pd.DataFrame, meter_ids, asset_ids) -> sparse.csr_matrix:
    """Sparse 0/1 matrix that sums meters into assets: ``kw_assets = kw_meters @ A``.

    Parameters
    ----------
    members : pandas.DataFrame
        ``asset_id``, ``meter_id`` pairs (:func:`asset_members`, usually
        filtered to one level per asset).
    meter_ids : sequence of str
        Rows of the matrix (the columns of the demand matrix), in order.
    asset_ids : sequence of str
        Columns of the matrix, in order.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (len(meter_ids), len(asset_ids))
        1.0 where the meter is below the asset. Pairs naming a meter or an
        asset outside the given ids are ignored; a repeated pair counts once.

    Examples
    --------
    >>> members = pd.DataFrame({"asset_id": ["T1", "T1", "T2"], "meter_id": ["M1", "M2", "M3"]})
    >>> membership_matrix(members, ["M1", "M2", "M3"], ["T1", "T2"]).toarray().tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    """
    rows = pd.Index(meter_ids).get_indexer(members[col.METER_ID].astype(str))
    cols = pd.Index(asset_ids).get_indexer(members[col.ASSET_ID].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    matrix = sparse.coo_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                               shape=(len(meter_ids), len(asset_ids))).tocsr()
    matrix.data[:] = 1.0  # duplicates were summed by tocsr: a pair counts once
    return matrix


def feeder_of_transformers(meters: pd.DataFrame, transformer_ids) -> np.ndarray:
    """The feeder of each transformer as the ``meters`` table lists it ("" when unknown).

    A transformer listed under two feeders takes the first in table order.

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3"],
    ...                        "transformer_id": ["T1", "T2", "T3"],
    ...                        "feeder_id": ["F1", "F1", None]})
    >>> feeder_of_transformers(meters, ["T3", "T1", "T9"]).tolist()
    ['', 'F1', '']
    """
    ids = pd.Index([str(t) for t in transformer_ids])
    if col.FEEDER_ID not in meters.columns or col.TRANSFORMER_ID not in meters.columns:
        return np.full(len(ids), "", dtype=object)
    tx = meters[col.TRANSFORMER_ID].astype("string").str.strip()
    feeder = meters[col.FEEDER_ID].astype("string").str.strip()
    known = (tx.notna() & feeder.notna()).to_numpy()
    first = feeder[known].groupby(tx[known].to_numpy()).first()
    return first.reindex(ids).fillna("").to_numpy(dtype=object)


def feeders_of(meters: pd.DataFrame, transformer_ids) -> list:
    """The feeders of the given transformers (sorted ids), from the ``meters`` table.

    The topology check compares a meter with every transformer of its feeder:
    a run in partitions keeps those feeders whole.

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["M1", "M2", "M3"],
    ...                        "transformer_id": ["T1", "T2", "T3"],
    ...                        "feeder_id": ["F1", "F1", "F2"]})
    >>> feeders_of(meters, ["T1"])
    ['F1']
    """
    return sorted(set(feeder_of_transformers(meters, transformer_ids)) - {""})
