"""The output files of a run, with exactly the contract's columns.

``flags.csv`` and ``transformers.csv`` follow ``docs/data-contract.md``; every
file is written atomically (:mod:`gridwatch.atomic`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.atomic import write_csv

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(series: pd.Series) -> pd.Series:
    """Strings safe to open in a spreadsheet: a leading formula character is quoted."""
    s = series.astype("string").fillna("")
    risky = s.str.startswith(_FORMULA_START)
    return s.where(~risky, "'" + s)


def format_flags(table: pd.DataFrame) -> pd.DataFrame:
    """Rank meters and shape the detector's table into ``flags.csv`` rows.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per analysed meter with the flags.csv fields (``score`` 0..1,
        ``flagged`` bool, ``excess_kw`` [kW], ``excess_kwh`` [kWh],
        ``est_loss`` [currency]).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`gridwatch.columns.FLAGS_COLUMNS`, sorted by rank:
        flagged first, then by the score as written (4 decimals), so that
        rank follows score exactly; equal scores by the energy at stake
        (``excess_kwh``, largest first), then by meter id.
    """
    t = table.reset_index(drop=True).copy()
    score = np.round(t[col.SCORE].to_numpy(dtype=float), 4)
    order = np.lexsort((
        t[col.METER_ID].astype(str).to_numpy(),
        -np.nan_to_num(t[col.EXCESS_KWH].to_numpy(dtype=float), nan=0.0),
        -np.nan_to_num(score, nan=-1.0),
        ~t[col.FLAGGED].to_numpy(dtype=bool),
    ))
    t = t.iloc[order].reset_index(drop=True)
    out = pd.DataFrame({
        col.METER_ID: _text(t[col.METER_ID]),
        col.TRANSFORMER_ID: _text(t[col.TRANSFORMER_ID]),
        col.RANK: np.arange(1, len(t) + 1),
        col.SCORE: t[col.SCORE].astype(float).round(4) + 0.0,  # + 0.0: no "-0.0"
        col.FLAGGED: np.where(t[col.FLAGGED].to_numpy(dtype=bool), "true", "false"),
        col.KIND: t[col.KIND].astype("string").fillna(""),
        col.ONSET: t[col.ONSET].astype("string").fillna(""),
        col.EXCESS_KW: t[col.EXCESS_KW].astype(float).round(3) + 0.0,
        col.EXCESS_KWH: t[col.EXCESS_KWH].astype(float).round(1) + 0.0,
        col.EST_LOSS: t[col.EST_LOSS].astype(float).round(2) + 0.0,
        col.REASONS: _text(t[col.REASONS]),
    })
    return out[list(col.FLAGS_COLUMNS)]


def format_transformers(table: pd.DataFrame) -> pd.DataFrame:
    """Shape the energy balance's asset table into ``transformers.csv`` rows.

    Flagged assets first, then metering faults, then by unexplained load [kW], then by id.
    """
    if table.empty:
        return empty_transformers()
    t = table.reset_index(drop=True)
    kind = (t[col.KIND].astype("string").fillna("") if col.KIND in t
            else pd.Series("", index=t.index, dtype="string"))
    order = np.lexsort((
        t[col.ASSET_ID].astype(str).to_numpy(),
        -np.nan_to_num(t[col.UNEXPLAINED_KW].to_numpy(dtype=float), nan=0.0),
        (kind != col.KIND_METERING_FAULT).to_numpy(dtype=bool),
        ~t[col.FLAGGED].to_numpy(dtype=bool),
    ))
    t = t.iloc[order].reset_index(drop=True)
    return pd.DataFrame({
        col.ASSET_ID: _text(t[col.ASSET_ID]),
        col.FLAGGED: np.where(t[col.FLAGGED].to_numpy(dtype=bool), "true", "false"),
        col.KIND: kind.iloc[order].to_numpy(dtype=object),
        col.UNEXPLAINED_KW: t[col.UNEXPLAINED_KW].astype(float).round(3) + 0.0,
        col.ONSET: t[col.ONSET].astype("string").fillna(""),
        col.SUSPECTS: _text(t[col.SUSPECTS]),
    })[list(col.TRANSFORMERS_COLUMNS)]


def empty_transformers() -> pd.DataFrame:
    """A ``transformers.csv`` frame with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in col.TRANSFORMERS_COLUMNS})


def format_topology(table: pd.DataFrame | None) -> pd.DataFrame:
    """Shape the topology check's table into ``topology.csv`` rows (meters in input order).

    Parameters
    ----------
    table : pandas.DataFrame or None
        :attr:`gridwatch.balance.Balance.topology` (None: no energy balance).
    """
    if table is None or table.empty:
        return empty_topology()
    return pd.DataFrame({
        col.METER_ID: _text(table[col.METER_ID]),
        col.LISTED_TRANSFORMER_ID: _text(table[col.LISTED_TRANSFORMER_ID]),
        col.LIKELY_TRANSFORMER_ID: _text(table[col.LIKELY_TRANSFORMER_ID]),
        col.EVIDENCE: _text(table[col.EVIDENCE]),
        col.CONFIDENCE: table[col.CONFIDENCE].astype(float).round(3) + 0.0,
    })[list(col.TOPOLOGY_COLUMNS)]


def empty_topology() -> pd.DataFrame:
    """A ``topology.csv`` frame with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in col.TOPOLOGY_COLUMNS})


#: Decimals of the numbers in ``inspections.csv`` (coordinates: 5, about 1 m).
_DECIMALS = {col.EXCESS_KW: 3, col.EXCESS_KWH: 1, col.EST_LOSS: 2, col.LAT: 5, col.LON: 5,
             col.FEEDER_EXCESS_KW: 3, col.FEEDER_EST_LOSS: 2}


def format_inspections(plan: pd.DataFrame) -> pd.DataFrame:
    """Shape the crew plan (:func:`gridwatch.report.places.crew_plan`) into ``inspections.csv`` rows.

    Columns :data:`gridwatch.columns.INSPECTIONS_COLUMNS`, in the plan's
    order; kW to 3 decimals, kWh to 1, money to 2, coordinates to 5 (about
    1 m); ranks and counts as integers (an asset's rank is empty); ids and
    texts safe in a spreadsheet.
    """
    t = plan.reset_index(drop=True)
    out = {}
    for name in col.INSPECTIONS_COLUMNS:
        values = t[name] if name in t else pd.Series("", index=t.index)
        if name in (col.CREW_GROUP, col.STOP, col.RANK, col.FEEDER_SITES):
            out[name] = pd.to_numeric(values, errors="coerce").round().astype("Int64")
        elif name in _DECIMALS:
            out[name] = pd.to_numeric(values, errors="coerce").astype(float).round(_DECIMALS[name]) + 0.0
        else:
            out[name] = _text(values)
    return pd.DataFrame(out, index=t.index)[list(col.INSPECTIONS_COLUMNS)]



def write_outputs(output_dir, *, flags: pd.DataFrame, transformers: pd.DataFrame,
                  data_quality: pd.DataFrame, topology: pd.DataFrame | None = None,
                  monthly_suspects: pd.DataFrame | None = None,
                  inspections: pd.DataFrame | None = None) -> dict:
    """Write ``flags.csv``, ``transformers.csv``, ``topology.csv`` and ``data_quality.csv``.

    Also ``monthly_suspects.csv`` when given (a run with monthly meters: the
    list a supplier hands on, :data:`gridwatch.columns.MONTHLY_SUSPECTS_COLUMNS`),
    and ``inspections.csv`` when given (the crew plan, one crew group per
    feeder, :data:`gridwatch.columns.INSPECTIONS_COLUMNS`, see
    :func:`format_inspections`; the header only when nothing is flagged).
    Each file is replaced atomically. The pipeline writes ``run.json`` after
    them (and after the report), so its presence means the run is complete.

    Returns
    -------
    dict
        Output name -> path.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dq = data_quality.copy()
    for name in ("meter_id", "detail"):
        dq[name] = _text(dq[name])
    paths = {
        "flags": out / "flags.csv",
        "transformers": out / "transformers.csv",
        "data_quality": out / "data_quality.csv",
        "topology": out / "topology.csv",
    }
    write_csv(paths["flags"], flags)
    write_csv(paths["transformers"], transformers[list(col.TRANSFORMERS_COLUMNS)])
    write_csv(paths["topology"], (empty_topology() if topology is None else topology)
              [list(col.TOPOLOGY_COLUMNS)])
    write_csv(paths["data_quality"], dq)
    if monthly_suspects is not None:
        paths["monthly_suspects"] = out / "monthly_suspects.csv"
        listed = monthly_suspects[list(col.MONTHLY_SUSPECTS_COLUMNS)].copy()
        for name in (col.METER_ID, col.TRANSFORMER_ID, col.REASONS, "peers"):
            listed[name] = _text(listed[name])
        write_csv(paths["monthly_suspects"], listed)
    if inspections is not None:
        paths["inspections"] = out / "inspections.csv"
        write_csv(paths["inspections"], format_inspections(inspections))
    return {k: str(v) for k, v in paths.items()}
