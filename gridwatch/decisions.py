"""What a site's score becomes: suppressions, hold-backs, and the energy balance's suspects.

The detector and the energy balance score meters and assets on their own
evidence. Three decisions then change what is published, each in one place:

* :func:`merge_suspects`: a meter the energy balance suspects of a hidden
  load is flagged with the asset's estimates when its own data carry strong
  evidence, listed with its reasons when they are weak;
* :func:`apply_suppressions`: meters the config suppresses (licensed loads)
  are listed, not flagged;
* :func:`hold_back`: the one mechanism behind suppressions and the case
  history's hold-backs (sites closed as legitimate).

The tables stay typed (booleans, floats) until :mod:`gridwatch.outputs`
formats them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridwatch import columns as col

UNFLAGGED_MAX_SCORE = 0.499
"""A site not recommended for investigation scores below 0.5, whatever held it back."""


def merge_suspects(table: pd.DataFrame, suspects: pd.DataFrame) -> pd.DataFrame:
    """Add the energy balance's suspects to the per-meter table.

    A suspect whose own data carry strong evidence (its consumption fell when
    the asset's unexplained load began) is flagged ``hidden_load_suspect``
    with the asset's estimates; a weak suspect is listed with its reasons but
    not flagged (docs/data-contract.md: a crew is not sent to every meter under a
    transformer). A meter already flagged for a visible load keeps that flag
    and gains the reason. Meters suspected under several assets keep their
    strongest case.

    Parameters
    ----------
    table : pandas.DataFrame
        The detector's per-meter table (index ``meter_id``).
    suspects : pandas.DataFrame
        :attr:`gridwatch.balance.Balance.suspects`.

    Returns
    -------
    pandas.DataFrame
    """
    if suspects.empty:
        return table
    best = (suspects.sort_values(["strong", "evidence"], ascending=[False, False])
            .drop_duplicates(col.METER_ID).set_index(col.METER_ID))
    best = best[best.index.isin(table.index)]
    if best.empty:
        return table
    table = table.copy()
    ids = best.index
    visible = table.loc[ids, col.FLAGGED].to_numpy(dtype=bool)
    strong = best["strong"].to_numpy(dtype=bool) & ~visible
    weak = ~best["strong"].to_numpy(dtype=bool) & ~visible
    evidence = best["evidence"].to_numpy(dtype=np.float64)
    table.loc[ids, "analysed"] = True  # scored by the balance even if too little data for the detector
    table.loc[ids[visible], col.REASONS] = (table.loc[ids[visible], col.REASONS] + "; also "
                                            + best.loc[ids[visible], col.REASONS])
    hit = ids[strong]
    for name in (col.ONSET, col.EXCESS_KW, col.EXCESS_KWH, col.EST_LOSS, col.REASONS):
        table.loc[hit, name] = best.loc[hit, name].to_numpy()
    table.loc[hit, col.FLAGGED] = True
    table.loc[hit, col.KIND] = col.KIND_HIDDEN
    table.loc[hit, col.SCORE] = 0.5 + 0.5 * np.clip(evidence[strong], 0, 1)
    listed = ids[weak]
    prior = table.loc[listed, col.REASONS].astype("string").fillna("")
    table.loc[listed, col.REASONS] = ("possible hidden-load suspect (weak evidence): "
                                      + best.loc[listed, col.REASONS]
                                      + np.where(prior != "", "; " + prior, ""))
    table.loc[listed, col.SCORE] = np.fmax(table.loc[listed, col.SCORE].to_numpy(dtype=float),
                                           0.49 * np.clip(evidence[weak], 0, 1))
    return table


def apply_suppressions(table: pd.DataFrame, suppress) -> pd.DataFrame:
    """Keep meters suppressed in the config out of the flagged list, saying why.

    Parameters
    ----------
    table : pandas.DataFrame
        The detector's per-meter table (index ``meter_id``).
    suppress : sequence of gridwatch.config.SuppressedMeter
        ``config.suppress``: each meter with its reason.
    """
    if not suppress:
        return table
    why = pd.Series({s.meter_id: f"suppressed in config ({s.reason})" for s in suppress})
    return hold_back(table, why, id_column=col.METER_ID)


def hold_back(table: pd.DataFrame | None, why: pd.Series, *, id_column: str,
              only_flagged: bool = False) -> pd.DataFrame | None:
    """Turn flags off for the sites in ``why`` (site id -> reason) and say why.

    The one mechanism behind config suppressions and the case history's
    hold-backs: the row stays listed, ``flagged`` becomes false, ``kind``
    empty, the score at most 0.499 (the score says the decision, so ranks
    follow it), and the reason leads with ``why``, followed by "would be
    flagged (score S):" and the original reasons when the site was flagged.

    Parameters
    ----------
    table : pandas.DataFrame or None
        Per-site table with ``flagged`` and optionally ``kind`` and ``reasons``.
    why : pandas.Series
        Reason text indexed by site id.
    id_column : str
        ``meter_id`` or ``asset_id``.
    only_flagged : bool, default False
        Touch only rows that are flagged.
    """
    if table is None:
        return None
    ids = table[id_column].astype(str)
    was = table[col.FLAGGED].astype(bool)
    hit = ids.isin(why.index) & (was if only_flagged else True)
    if not hit.any():
        return table
    table = table.copy()
    lead = ids[hit].map(why)
    if col.REASONS in table:
        old = table.loc[hit, col.REASONS].astype(str)
        would = "; would be flagged: "
        if col.SCORE in table:
            would = ("; would be flagged (score "
                     + table.loc[hit, col.SCORE].astype(float).map("{:.2f}".format) + "): ")
        table.loc[hit, col.REASONS] = lead + np.where(was[hit], would + old, "")
    if col.SCORE in table:
        table.loc[hit & was, col.SCORE] = np.minimum(table.loc[hit & was, col.SCORE].astype(float),
                                                     UNFLAGGED_MAX_SCORE)
    table.loc[hit, col.FLAGGED] = False
    if col.KIND in table:
        table.loc[hit, col.KIND] = ""
    return table
