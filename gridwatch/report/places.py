"""Where the sites are: meter and asset positions, and the inspection crews' plan (issue 16 item 5).

Pure functions of a run's tables, pandas in and pandas out; nothing is drawn
here (the map is :mod:`gridwatch.report.sitemap`):

- :func:`meter_positions`: each meter's ``lat``/``lon`` as given, checked:
  a meter is placed, has no coordinates, or has invalid ones (out of range,
  only one of the two, or exactly 0, 0, the usual mark of a failed geocode);
- :func:`asset_positions`: a transformer, feeder or substation at the median
  of its placed meters' coordinates (assets have no coordinates in the
  contract);
- :func:`crew_plan`: the rows of ``inspections.csv``, the flagged sites
  grouped by substation, feeder and transformer, one crew group per feeder;
- :func:`geo_uri`: a ``geo:LAT,LON`` link (RFC 5870), which a phone opens in
  its map application, with no network at report time.

Public API
----------
meter_positions(meters) -> DataFrame
position_counts(positions) -> dict
asset_positions(meters, positions) -> DataFrame
crew_plan(flags, transformers, meters, *, asset_kwh=None, max_suspects=5) -> DataFrame
crew_plan_of(result) -> DataFrame
run_meters(result) -> DataFrame or None
geo_uri(lat, lon) -> str
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gridwatch import columns as col

PLACED = "placed"
MISSING = "missing"
INVALID = "invalid"
#: Decimals of the coordinates written and shown: 5 decimals of a degree is about 1 m.
COORD_DECIMALS = 5
#: The suspects of a hidden load listed in its row of the crew plan.
MAX_SUSPECTS = 5
#: Levels of the network, lowest first: an id found at several levels is taken at the lowest.
LEVELS = ((col.TRANSFORMER_ID, "transformer"), (col.FEEDER_ID, "feeder"),
          (col.SUBSTATION_ID, "substation"))


# =====================================================================================
# the meters of a run
# =====================================================================================
def run_meters(result) -> pd.DataFrame | None:
    """The run's meters table: every meter read, else the analysed ones, else the input's file.

    ``result.all_meters`` (set by :func:`gridwatch.pipeline.run`) holds every
    meter of the input, also in a partitioned run whose ``result.meters``
    keeps only the meters it drew; a result without it falls back on
    ``result.meters``, then on the input directory's ``meters`` table.
    """
    meters = getattr(result, "all_meters", None)
    if meters is None:
        meters = getattr(result, "meters", None)
    if meters is None:
        input_dir = (getattr(result, "info", None) or {}).get("input_dir")
        if input_dir:
            try:
                from gridwatch.sources.files import find_table, read_meters

                path = find_table(input_dir, "meters")
                if path is not None:
                    meters, _ = read_meters(path)
            except Exception:  # noqa: BLE001 - without the table the report says "no coordinates"
                meters = None
    return meters


def _ids(values) -> pd.Series:
    """Ids as str, missing as ''."""
    return pd.Series(values).astype("string").fillna("").astype(str)


def _column(meters: pd.DataFrame, name: str) -> np.ndarray:
    """A string column of ``meters`` as str ('' when missing or absent)."""
    if name not in meters:
        return np.full(len(meters), "", dtype=object)
    return _ids(meters[name].to_numpy()).to_numpy(dtype=object)


# =====================================================================================
# positions
# =====================================================================================
def meter_positions(meters: pd.DataFrame | None) -> pd.DataFrame:
    """Each meter's position as given in ``meters``, checked.

    Parameters
    ----------
    meters : pandas.DataFrame or None
        The meters table (``meter_id``, optional ``lat``, ``lon`` [degrees,
        WGS84]); the first row of a repeated ``meter_id`` counts.

    Returns
    -------
    pandas.DataFrame
        Index ``meter_id`` (str), one row per meter; columns ``lat``, ``lon``
        [degrees] (NaN unless placed) and ``position``: ``"placed"``,
        ``"missing"`` (neither given) or ``"invalid"`` (only one of the two,
        latitude outside -90..90 or longitude outside -180..180, not a
        number, or exactly 0, 0).

    Examples
    --------
    >>> meters = pd.DataFrame({"meter_id": ["A", "B", "C"], "lat": [56.1, None, 0.0],
    ...                        "lon": [-4.2, None, 0.0]})
    >>> meter_positions(meters)["position"].tolist()
    ['placed', 'missing', 'invalid']
    """
    if meters is None or len(meters) == 0:
        return pd.DataFrame({col.LAT: pd.Series(dtype=np.float64), col.LON: pd.Series(dtype=np.float64),
                             "position": pd.Series(dtype=object)},
                            index=pd.Index([], name=col.METER_ID, dtype=object))
    ids = _ids(meters[col.METER_ID].to_numpy())
    first = ~ids.duplicated().to_numpy()
    frame = meters.loc[first]
    ids = ids[first]

    def numbers(name):
        if name not in frame:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(pd.Series(frame[name].to_numpy()), errors="coerce").to_numpy(
            dtype=np.float64)

    lat, lon = numbers(col.LAT), numbers(col.LON)
    given_lat = ~np.isnan(lat)
    given_lon = ~np.isnan(lon)
    raw_lat = frame[col.LAT].to_numpy() if col.LAT in frame else np.full(len(frame), None)
    raw_lon = frame[col.LON].to_numpy() if col.LON in frame else np.full(len(frame), None)
    # a value given as text that is not a number counts as given (and invalid)
    given_lat |= ~pd.isna(raw_lat)
    given_lon |= ~pd.isna(raw_lon)
    with np.errstate(invalid="ignore"):
        in_range = (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    zero = (lat == 0) & (lon == 0)
    placed = in_range & ~zero
    position = np.where(placed, PLACED, np.where(given_lat | given_lon, INVALID, MISSING))
    return pd.DataFrame({col.LAT: np.where(placed, lat, np.nan), col.LON: np.where(placed, lon, np.nan),
                         "position": position.astype(object)},
                        index=pd.Index(ids.to_numpy(dtype=object), name=col.METER_ID))


def position_counts(positions: pd.DataFrame, *, examples: int = 5) -> dict:
    """How many meters are placed, have no coordinates, or invalid ones, and a few invalid ids.

    Returns
    -------
    dict
        ``meters``, ``placed``, ``missing``, ``invalid`` (ints) and
        ``invalid_ids`` (up to ``examples`` ids, in the order of ``meters``).
    """
    status = positions["position"]
    invalid = positions.index[(status == INVALID).to_numpy()]
    return {"meters": int(len(positions)), "placed": int((status == PLACED).sum()),
            "missing": int((status == MISSING).sum()), "invalid": int(len(invalid)),
            "invalid_ids": [str(i) for i in invalid[:examples]]}


def asset_positions(meters: pd.DataFrame | None, positions: pd.DataFrame) -> pd.DataFrame:
    """Transformers, feeders and substations at the median position of their placed meters.

    Parameters
    ----------
    meters : pandas.DataFrame or None
        The meters table (``transformer_id``, ``feeder_id``, ``substation_id``
        as far as given).
    positions : pandas.DataFrame
        :func:`meter_positions` of ``meters``.

    Returns
    -------
    pandas.DataFrame
        Index ``asset_id``; columns ``level`` (``transformer``, ``feeder``
        or ``substation``: an id found at several levels is taken at the
        lowest), ``lat``, ``lon`` [degrees] (NaN when none of its meters is
        placed), ``n_meters``, ``n_placed``, and the ``feeder_id`` and
        ``substation_id`` above it ('' at its own level and above; the first
        one its meters list when they disagree).
    """
    out_columns = ["level", col.LAT, col.LON, "n_meters", "n_placed", col.FEEDER_ID,
                   col.SUBSTATION_ID]
    if meters is None or len(meters) == 0:
        return pd.DataFrame(columns=out_columns, index=pd.Index([], name=col.ASSET_ID, dtype=object))
    ids = _ids(meters[col.METER_ID].to_numpy())
    first = ~ids.duplicated().to_numpy()
    meters = meters.loc[first]
    pos = positions.reindex(ids[first].to_numpy())
    base = pd.DataFrame({
        col.LAT: pos[col.LAT].to_numpy(dtype=np.float64),
        col.LON: pos[col.LON].to_numpy(dtype=np.float64),
        col.TRANSFORMER_ID: _column(meters, col.TRANSFORMER_ID),
        col.FEEDER_ID: _column(meters, col.FEEDER_ID),
        col.SUBSTATION_ID: _column(meters, col.SUBSTATION_ID),
    })
    base["placed"] = np.isfinite(base[col.LAT].to_numpy())
    parts = []
    for i, (key, level) in enumerate(LEVELS):
        rows = base[base[key] != ""]
        if rows.empty:
            continue
        groups = rows.groupby(key, sort=False)
        frame = pd.DataFrame({
            "level": level,
            col.LAT: groups[col.LAT].median(),
            col.LON: groups[col.LON].median(),
            "n_meters": groups.size(),
            "n_placed": groups["placed"].sum().astype(np.int64),
        })
        for parent_key, _ in LEVELS[i + 1:]:
            parents = rows[rows[parent_key] != ""].groupby(key, sort=False)[parent_key].first()
            frame[parent_key] = parents.reindex(frame.index).fillna("").to_numpy(dtype=object)
        for parent_key, _ in LEVELS[1:]:
            if parent_key not in frame:
                frame[parent_key] = ""
        parts.append(frame[out_columns])
    if not parts:
        return pd.DataFrame(columns=out_columns, index=pd.Index([], name=col.ASSET_ID, dtype=object))
    out = pd.concat(parts)
    out = out[~out.index.duplicated(keep="first")]
    out.index = out.index.astype(object)
    out.index.name = col.ASSET_ID
    return out


def geo_uri(lat, lon) -> str:
    """A ``geo:`` URI (RFC 5870) of a position, 5 decimals, '' when there is none.

    Examples
    --------
    >>> geo_uri(56.099441, -4.19597)
    'geo:56.09944,-4.19597'
    """
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return ""
    return f"geo:{lat:.{COORD_DECIMALS}f},{lon:.{COORD_DECIMALS}f}"


# =====================================================================================
# the crew plan
# =====================================================================================
def _is_true(values) -> np.ndarray:
    return pd.Series(values).astype("string").str.lower().isin(["true", "1"]).to_numpy(dtype=bool)


def _numbers(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def crew_plan(flags: pd.DataFrame, transformers: pd.DataFrame | None, meters: pd.DataFrame | None,
              *, asset_kwh: pd.Series | None = None, max_suspects: int = MAX_SUSPECTS) -> pd.DataFrame:
    """The flagged sites as a plan of inspections: one crew group per feeder (``inspections.csv``).

    Parameters
    ----------
    flags : pandas.DataFrame
        ``flags.csv`` rows (``flagged`` as ``"true"``/``"false"`` or bool).
    transformers : pandas.DataFrame or None
        ``transformers.csv`` rows.
    meters : pandas.DataFrame or None
        The meters table: where each meter sits in the network
        (``transformer_id``, ``feeder_id``, ``substation_id``), its position
        (``lat``, ``lon``) and ``tariff_per_kwh``.
    asset_kwh : pandas.Series, optional
        Unexplained energy of each flagged asset since its onset [kWh], by
        ``asset_id`` (the energy balance's ``excess_kwh``); an asset's
        ``est_loss`` is that energy at the median tariff of its meters.
    max_suspects : int, default 5
        Suspects listed in a hidden load's row.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`gridwatch.columns.INSPECTIONS_COLUMNS`, one row per
        site to visit:

        - every flagged asset (``kind`` ``hidden_load``; ``site_type`` its
          level) at the median position of its meters, with its top
          suspects: the asset is the case;
        - every flagged meter (``visible_load``, ``hidden_load_suspect``,
          ``monthly_pattern``) at its own position. A hidden-load suspect
          listed by a flagged asset belongs to that asset's case
          (``case_id``), comes right after it, and adds nothing to the
          totals (it carries the asset's estimates).

        Sorted by substation, feeder and transformer: substations by the
        money at stake (``est_loss``, then ``excess_kw``), the feeders
        within a substation likewise, so one ``crew_group`` is one
        feeder, the richest first. Sites whose meters name no feeder form
        one group per transformer, after the feeders of their substation;
        sites with neither come last, and so do sites without a substation.
        Within a feeder: its own feeder-level case first, then transformer
        by transformer (the most at stake first),
        each asset case before the meters, meters by ``rank``. ``stop``
        numbers the sites within their group; ``feeder_sites``,
        ``feeder_excess_kw`` and ``feeder_est_loss`` total the group's cases,
        each once (``feeder_est_loss`` empty when none has a tariff).
    """
    meters = meters if meters is not None else pd.DataFrame({col.METER_ID: pd.Series(dtype=object)})
    positions = meter_positions(meters)
    assets = asset_positions(meters, positions)
    ids = _ids(meters[col.METER_ID].to_numpy()) if len(meters) else pd.Series(dtype=str)
    info = pd.DataFrame({
        col.TRANSFORMER_ID: _column(meters, col.TRANSFORMER_ID),
        col.FEEDER_ID: _column(meters, col.FEEDER_ID),
        col.SUBSTATION_ID: _column(meters, col.SUBSTATION_ID),
        col.TARIFF_PER_KWH: (_numbers(meters[col.TARIFF_PER_KWH].to_numpy())
                             if col.TARIFF_PER_KWH in meters else np.full(len(meters), np.nan)),
    }, index=pd.Index(ids.to_numpy(dtype=object), name=col.METER_ID))
    info = info[~info.index.duplicated()]

    # --- flagged assets: the case is the asset ----------------------------------------------
    tr = transformers if transformers is not None else pd.DataFrame()
    if len(tr) and col.FLAGGED in tr:
        tr = tr[_is_true(tr[col.FLAGGED].to_numpy())]
    else:
        tr = pd.DataFrame({c: pd.Series(dtype=object) for c in col.TRANSFORMERS_COLUMNS})
    asset_ids = _ids(tr[col.ASSET_ID].to_numpy()).to_numpy(dtype=object)
    suspect_lists = [[m for m in str(s).split(";") if m] for s in _ids(tr[col.SUSPECTS].to_numpy())]
    owner = {}
    for asset, suspects in zip(asset_ids, suspect_lists, strict=True):
        for meter in suspects:
            owner.setdefault(meter, asset)
    where = assets.reindex(asset_ids)
    level = where["level"].fillna("asset").to_numpy(dtype=object)
    kwh = (pd.Series(asset_kwh).reindex(asset_ids).to_numpy(dtype=np.float64)
           if asset_kwh is not None else np.full(len(asset_ids), np.nan))
    tariff = _asset_tariffs(info, asset_ids, level)

    def own_or(level_name, key):
        """The asset's own id at its level, its parent's above it, '' below it."""
        parent = where[key].fillna("").to_numpy(dtype=object) if key in where else np.full(
            len(asset_ids), "", dtype=object)
        return np.where(level == level_name, asset_ids, parent)

    asset_rows = pd.DataFrame({
        col.SUBSTATION_ID: own_or("substation", col.SUBSTATION_ID),
        col.FEEDER_ID: np.where(level == "substation", "", own_or("feeder", col.FEEDER_ID)),
        col.TRANSFORMER_ID: np.where(level == "transformer", asset_ids, ""),
        col.SITE_ID: asset_ids,
        col.SITE_TYPE: level,
        col.CASE_ID: asset_ids,
        col.RANK: np.nan,
        col.KIND: np.where(_ids(tr[col.KIND].to_numpy()).to_numpy(dtype=object) == "",
                           col.KIND_HIDDEN_LOAD, _ids(tr[col.KIND].to_numpy()).to_numpy(dtype=object)),
        col.ONSET: _ids(tr[col.ONSET].to_numpy()).to_numpy(dtype=object),
        col.EXCESS_KW: _numbers(tr[col.UNEXPLAINED_KW].to_numpy()),
        col.EXCESS_KWH: kwh,
        col.EST_LOSS: kwh * tariff,
        col.LAT: where[col.LAT].to_numpy(dtype=np.float64),
        col.LON: where[col.LON].to_numpy(dtype=np.float64),
        col.SUSPECTS: [";".join(s[:max_suspects]) for s in suspect_lists],
    })

    # --- flagged meters: each at its own position ---------------------------------------------
    fl = flags[_is_true(flags[col.FLAGGED].to_numpy())] if len(flags) else flags
    meter_ids = _ids(fl[col.METER_ID].to_numpy()).to_numpy(dtype=object)
    kind = _ids(fl[col.KIND].to_numpy()).to_numpy(dtype=object)
    net = info.reindex(meter_ids)
    listed_tx = _ids(fl[col.TRANSFORMER_ID].to_numpy()).to_numpy(dtype=object) \
        if col.TRANSFORMER_ID in fl else np.full(len(fl), "", dtype=object)
    tx = net[col.TRANSFORMER_ID].fillna("").to_numpy(dtype=object)
    tx = np.where(tx == "", listed_tx, tx)
    case = np.array([owner.get(m, m) if k == col.KIND_HIDDEN else m
                     for m, k in zip(meter_ids, kind, strict=True)], dtype=object)
    pos = positions.reindex(meter_ids)
    meter_rows = pd.DataFrame({
        col.SUBSTATION_ID: net[col.SUBSTATION_ID].fillna("").to_numpy(dtype=object),
        col.FEEDER_ID: net[col.FEEDER_ID].fillna("").to_numpy(dtype=object),
        col.TRANSFORMER_ID: tx,
        col.SITE_ID: meter_ids,
        col.SITE_TYPE: "meter",
        col.CASE_ID: case,
        col.RANK: _numbers(fl[col.RANK].to_numpy()),
        col.KIND: kind,
        col.ONSET: _ids(fl[col.ONSET].to_numpy()).to_numpy(dtype=object),
        col.EXCESS_KW: _numbers(fl[col.EXCESS_KW].to_numpy()),
        col.EXCESS_KWH: _numbers(fl[col.EXCESS_KWH].to_numpy()),
        col.EST_LOSS: _numbers(fl[col.EST_LOSS].to_numpy()),
        col.LAT: pos[col.LAT].to_numpy(dtype=np.float64),
        col.LON: pos[col.LON].to_numpy(dtype=np.float64),
        col.SUSPECTS: "",
    })
    plan = pd.concat([asset_rows, meter_rows], ignore_index=True)
    if plan.empty:
        return empty_crew_plan()
    return _order(plan)


def _asset_tariffs(info: pd.DataFrame, asset_ids, level) -> np.ndarray:
    """The median tariff of each asset's meters [currency per kWh] (NaN without one)."""
    out = np.full(len(asset_ids), np.nan)
    for key, name in LEVELS:
        medians = info.groupby(key, sort=False)[col.TARIFF_PER_KWH].median()
        at = level == name
        out[at] = medians.reindex(np.asarray(asset_ids, dtype=object)[at]).to_numpy(dtype=np.float64)
    return out


def _order(plan: pd.DataFrame) -> pd.DataFrame:
    """Sort the plan (see :func:`crew_plan`), number groups and stops, total each group."""
    counted = (plan[col.SITE_ID] == plan[col.CASE_ID]).to_numpy()
    money = np.where(counted, np.nan_to_num(plan[col.EST_LOSS].to_numpy(dtype=np.float64)), 0.0)
    kw = np.where(counted, np.nan_to_num(plan[col.EXCESS_KW].to_numpy(dtype=np.float64)), 0.0)
    sub, feeder, tx = plan[col.SUBSTATION_ID], plan[col.FEEDER_ID], plan[col.TRANSFORMER_ID]
    # a crew group is a feeder; without one, a transformer; without either, the rest
    crew = np.where(feeder != "", feeder, np.where(tx != "", "\x01" + tx, ""))
    p = plan.assign(_money=money, _kw=kw, _counted=counted, _crew=crew)

    def totals(keys):
        grouped = p.groupby(keys, sort=False)[["_money", "_kw"]].transform("sum")
        return grouped["_money"].to_numpy(), grouped["_kw"].to_numpy()

    sub_money, sub_kw = totals([col.SUBSTATION_ID])
    fd_money, fd_kw = totals([col.SUBSTATION_ID, "_crew"])
    tx_money, tx_kw = totals([col.SUBSTATION_ID, "_crew", col.TRANSFORMER_ID])
    # within a transformer: cases in order (an asset case first, then by rank), each case's
    # own row before its suspects
    case_rank = p.groupby(col.CASE_ID, sort=False)[col.RANK].transform("min").to_numpy(dtype=np.float64)
    is_asset = (p[col.SITE_TYPE] != "meter").to_numpy()
    case_first = pd.Series(np.where(is_asset, -1.0, np.nan), index=p.index).groupby(
        p[col.CASE_ID]).transform("min").to_numpy()  # -1 for an asset case
    case_key = np.where(np.isfinite(case_first), -1.0, np.nan_to_num(case_rank, nan=np.inf))
    rank = np.nan_to_num(p[col.RANK].to_numpy(dtype=np.float64), nan=-1.0)
    order = np.lexsort((
        p[col.SITE_ID].to_numpy(dtype=str),
        rank,
        ~counted,
        p[col.CASE_ID].to_numpy(dtype=str),
        case_key,
        tx.to_numpy(dtype=str),
        -tx_kw, -tx_money,
        (tx != "").to_numpy(),  # the feeder's own case before its transformers
        crew.astype(str),
        -fd_kw, -fd_money,
        (feeder == "").to_numpy(),  # no feeder: after those with one
        crew == "",  # neither feeder nor transformer: last
        sub.to_numpy(dtype=str),
        -sub_kw, -sub_money,
        (sub == "").to_numpy(),
    ))
    p = p.iloc[order].reset_index(drop=True)
    group_key = p[col.SUBSTATION_ID] + "\x00" + p["_crew"]
    p[col.CREW_GROUP] = pd.factorize(group_key)[0] + 1
    p[col.STOP] = p.groupby(col.CREW_GROUP).cumcount() + 1
    grouped = p.groupby(col.CREW_GROUP)
    p[col.FEEDER_SITES] = grouped["_counted"].transform("sum").astype(np.int64)
    p[col.FEEDER_EXCESS_KW] = grouped["_kw"].transform("sum")
    has_money = pd.Series(np.isfinite(p[col.EST_LOSS].to_numpy(dtype=np.float64)) & p["_counted"])
    any_money = has_money.groupby(p[col.CREW_GROUP]).transform("any").to_numpy()
    p[col.FEEDER_EST_LOSS] = np.where(any_money, grouped["_money"].transform("sum"), np.nan)
    return p[list(col.INSPECTIONS_COLUMNS)]


def empty_crew_plan() -> pd.DataFrame:
    """An ``inspections.csv`` frame without rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in col.INSPECTIONS_COLUMNS})


def crew_plan_of(result) -> pd.DataFrame:
    """:func:`crew_plan` of a run (:class:`gridwatch.pipeline.RunResult`)."""
    balance = getattr(result, "balance", None)
    asset_kwh = None
    table = getattr(balance, "table", None)
    if table is not None and len(table) and col.EXCESS_KWH in table:
        asset_kwh = pd.Series(table[col.EXCESS_KWH].to_numpy(dtype=np.float64),
                              index=_ids(table[col.ASSET_ID].to_numpy()).to_numpy(dtype=object))
        asset_kwh = asset_kwh[~asset_kwh.index.duplicated()]
    return crew_plan(result.flags, result.transformers, run_meters(result), asset_kwh=asset_kwh)
