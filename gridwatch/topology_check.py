"""Meters listed under the wrong transformer, found from energy alone.

About one meter in twenty is listed under a transformer that does not feed
it (issue 13). Such a meter leaves a mark on two energy balances: its
listed transformer's residual ``delivered - metered`` moves *against* the
meter (the meter's load is subtracted there but never delivered), and its
true transformer's residual moves *with* it (delivered there, metered
nowhere). A household's hour-to-hour changes (a kettle, an oven, a heater
switching) are its own, so they are a fingerprint: regressed on them, the
residual of the listed transformer gives a coefficient near -1, that of the
true one near +1, and every other transformer's near 0.

:func:`check_topology` does that for every meter against every transformer
of its feeder with upstream data: one product of the meters' and the
residuals' changes per feeder (``(n_meters, n_transformers)`` coefficients
at once), after the feeder's common change (everyone's evening ramp) is
projected out of each meter's changes. The loop runs over feeders, not
over meters or pairs.

References: ``docs/data-contract.md §topology.csv``; issue 13.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.lstsq import batched_least_squares
from gridwatch.topology import feeder_of_transformers

__all__ = ["TOPOLOGY_COLUMNS", "check_topology", "inferred_meters",
           "matched_by_siblings", "meters_that_stepped"]

#: Columns of ``topology.csv`` (contract-facing), then diagnostics.
TOPOLOGY_COLUMNS = (*col.TOPOLOGY_COLUMNS, col.FEEDER_ID, "listed_coefficient", "listed_t",
                    "likely_coefficient", "likely_t")

MIN_T = 5.0  # |t| each side of the evidence needs [-]
MIN_LISTED_ONLY_T = 20.0  # |t| the listed side needs when no transformer explains the meter [-]
MIN_COEFFICIENT = 0.4  # |coefficient| each side needs (about 1 for a meter on the other side) [-]
CLIP_SIGMAS = 4.0  # changes are winsorised at this many robust sigmas [-]
MAX_COEFFICIENT = 2.5  # a bigger one is another load's doing
MAX_TRANSFORMER_SHIFT = 0.25  # a transformer whose meters all move against it has a clock problem
FULL_CONFIDENCE_T = 15.0  # both sides at this |t|: confidence 1
MIN_CELLS = 24 * 7  # changes a meter needs to be judged [cells]
MIN_INFERRED_CONFIDENCE = 0.5  # use_inferred_topology moves meters at or above this confidence


def empty_topology() -> pd.DataFrame:
    """A topology table with :data:`TOPOLOGY_COLUMNS` and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=np.float64 if c in ("confidence", "listed_coefficient",
                                                                 "listed_t", "likely_coefficient",
                                                                 "likely_t") else object)
                         for c in TOPOLOGY_COLUMNS})


def check_topology(resid_kw: np.ndarray, transformer_ids, meter_kw: np.ndarray, meter_ids,
                   meters: pd.DataFrame, *, metered_kw: np.ndarray | None = None,
                   hour_of_cell: np.ndarray | None = None, min_t: float = MIN_T,
                   min_coefficient: float = MIN_COEFFICIENT) -> pd.DataFrame:
    """Test every meter against every transformer of its feeder; list the doubtful ones.

    Parameters
    ----------
    resid_kw : numpy.ndarray of shape (n_cells, n_transformers)
        Each transformer's residual ``delivered - metered`` on its listed
        meters [kW], NaN where unusable (clock offsets already corrected).
    transformer_ids : sequence of str
        Columns of ``resid_kw``.
    meter_kw : numpy.ndarray of shape (n_cells, n_meters)
        What each meter recorded [kW], NaN where missing; only the meters
        listed under ``transformer_ids`` are read.
    meter_ids : sequence of str
        Columns of ``meter_kw``.
    meters : pandas.DataFrame
        The meters table (``meter_id``, ``transformer_id``, ``feeder_id``).
    metered_kw : numpy.ndarray of shape (n_cells, n_transformers), optional
        Each transformer's metered demand [kW]: the part of its residual's
        changes that follows its own load (losses grow with the square of
        the load) is taken out before the meters are compared with it.
    hour_of_cell : numpy.ndarray of int, shape (n_cells,), optional
        Local hour of each cell: each series' mean change at each hour of day
        (the regular daily pattern) is taken out before the comparison.
    min_t, min_coefficient : float
        Evidence each side needs: ``|t| >= min_t`` and ``|coefficient| >=
        min_coefficient``.

    Returns
    -------
    pandas.DataFrame
        One row per doubtful meter (:data:`TOPOLOGY_COLUMNS`): ``meter_id``,
        ``listed_transformer_id``, ``likely_transformer_id`` (empty when no
        transformer of the feeder with upstream data explains it),
        ``evidence`` (text), ``confidence`` (0..1) and the coefficients and
        t-statistics behind them; meters in the order of ``meter_ids``.

    Notes
    -----
    A meter is doubtful when its listed transformer's residual moves against
    it (coefficient <= ``-min_coefficient``, t <= ``-min_t``) and, when a
    transformer of the feeder explains it, that one's moves with it. A
    meter whose true transformer has no upstream data (or lies on another
    feeder) is listed with an empty ``likely_transformer_id``. When most
    meters of a transformer move against it, the transformer's own series
    is at fault (a clock, a ratio), not the map: none of them is listed.
    """
    resid_kw = np.asarray(resid_kw, dtype=np.float64)
    meter_kw = np.asarray(meter_kw)  # read per feeder: no copy of the whole matrix
    tx_ids = pd.Index([str(t) for t in transformer_ids])
    m_ids = pd.Index([str(m) for m in meter_ids])
    info = meters.drop_duplicates(col.METER_ID).set_index(meters[col.METER_ID].astype(str)
                                                           .drop_duplicates().to_numpy())
    listed = info.reindex(m_ids)[col.TRANSFORMER_ID].astype("string").fillna("").to_numpy(dtype=str) \
        if col.TRANSFORMER_ID in info else np.full(len(m_ids), "")
    feeder = info.reindex(m_ids)[col.FEEDER_ID].astype("string").fillna("").to_numpy(dtype=str) \
        if col.FEEDER_ID in info else np.full(len(m_ids), "")
    tx_feeder = feeder_of_transformers(meters, tx_ids).astype(str)

    d_resid = np.diff(resid_kw, axis=0)
    if metered_kw is not None:
        d_resid = _without_own_load(d_resid, np.asarray(metered_kw, dtype=np.float64))
    hour_of_change = None if hour_of_cell is None else np.asarray(hour_of_cell)[1:]
    rows = []
    for f in pd.unique(tx_feeder[tx_feeder != ""]):  # one regression per feeder
        cols_t = np.flatnonzero(tx_feeder == f)
        cols_m = np.flatnonzero((feeder == f) & np.isin(listed, tx_ids[cols_t]))
        if not len(cols_m):
            continue
        d_meter = np.diff(meter_kw[:, cols_m].astype(np.float64), axis=0)
        beta, t, n = _feeder_coefficients(d_resid[:, cols_t], d_meter, hour_of_change)
        judged = n >= MIN_CELLS
        own = tx_ids[cols_t].get_indexer(listed[cols_m])
        i = np.arange(len(cols_m))
        b_own, t_own = beta[i, own], t[i, own]
        # a transformer whose meters all move against it: its series is at fault, not the map
        shift = pd.Series(b_own).groupby(own).transform("median").to_numpy()
        sane = np.abs(shift) <= MAX_TRANSFORMER_SHIFT
        against = judged & sane & (b_own <= -min_coefficient) & (b_own >= -MAX_COEFFICIENT) \
            & (t_own <= -min_t)
        others = np.where(np.arange(len(cols_t))[None, :] == own[:, None], -np.inf, t)
        best = np.argmax(others, axis=1) if len(cols_t) > 1 else np.zeros(len(cols_m), dtype=int)
        b_best = beta[i, best]
        t_best = np.where(len(cols_t) > 1, others[i, best], -np.inf)
        with_other = (t_best >= min_t) & (b_best >= min_coefficient) & (b_best <= MAX_COEFFICIENT)
        # without a transformer that explains it, the listed side alone must be stronger
        against &= with_other | (t_own <= -MIN_LISTED_ONLY_T)
        for j in np.flatnonzero(against):  # the doubtful meters only, to format their rows
            likely = str(tx_ids[cols_t][best[j]]) if with_other[j] else ""
            side = min(-t_own[j], t_best[j]) if likely else 0.5 * -t_own[j]
            confidence = float(np.clip(side / FULL_CONFIDENCE_T, 0.0, 1.0))
            evidence = (f"{listed[cols_m][j]}'s unexplained load moves against this meter's "
                        f"hour-to-hour changes (coefficient {b_own[j]:+.2f}, t = {t_own[j]:.0f}): "
                        "the meter's consumption is subtracted there but not delivered")
            if likely:
                evidence += (f"; {likely}'s moves with them (coefficient {b_best[j]:+.2f}, "
                             f"t = {t_best[j]:.0f}): its load is delivered there")
            else:
                evidence += ("; no transformer of the feeder with upstream data explains it (its "
                             "transformer may have no upstream data, or be on another feeder)")
            rows.append({col.METER_ID: m_ids[cols_m[j]], "listed_transformer_id": listed[cols_m[j]],
                         "likely_transformer_id": likely, "evidence": evidence,
                         "confidence": round(confidence, 3), col.FEEDER_ID: f,
                         "listed_coefficient": b_own[j], "listed_t": t_own[j],
                         "likely_coefficient": b_best[j] if likely else np.nan,
                         "likely_t": t_best[j] if likely else np.nan})
    if not rows:
        return empty_topology()
    table = pd.DataFrame(rows, columns=list(TOPOLOGY_COLUMNS))
    order = m_ids.get_indexer(table[col.METER_ID])
    return table.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def _feeder_coefficients(d_resid, d_meter, hour_of_change=None):
    """Coefficients and t of each transformer's residual changes on each meter's own changes.

    Returns ``(beta, t, n)``: ``(n_meters, n_transformers)`` coefficients and
    t-statistics, and the number of changes each meter was judged on.

    Both sides are winsorised at :data:`CLIP_SIGMAS` robust sigmas, so that a
    few bad readings (a conflicting duplicate, a spike) cannot make a
    fingerprint: a real one is spread over hundreds of switchings. The
    standard errors are heteroskedasticity-consistent (White's), computed
    with products of the same arrays.
    """
    ok_m = np.isfinite(d_meter)
    ok_r = np.isfinite(d_resid)
    rows = ok_r.all(axis=1)  # changes every residual of the feeder has
    dm = np.where(ok_m & rows[:, None], d_meter, 0.0)
    dr = np.where(rows[:, None], np.where(ok_r, d_resid, 0.0), 0.0)
    # the feeder's common change (everyone's evening ramp), projected out of each meter's
    with np.errstate(invalid="ignore", divide="ignore"):
        common = dm.sum(axis=1) / np.maximum((ok_m & rows[:, None]).sum(axis=1), 1)
    cc = float(common @ common)
    if cc > 0:
        dm = dm - np.outer(common, (common @ dm) / cc) * (ok_m & rows[:, None])
    if hour_of_change is not None:  # the regular daily pattern is no fingerprint
        dm = _without_hourly_mean(dm, hour_of_change, dm != 0)
        dr = _without_hourly_mean(dr, hour_of_change, rows[:, None] & ok_r)
    dm = _winsorise(dm)
    dr = _winsorise(dr)
    n = (dm != 0).sum(axis=0)
    ss_m = (dm * dm).sum(axis=0)
    cross = dm.T @ dr  # (n_meters, n_transformers): the products of the feeder
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        beta = cross / ss_m[:, None]
        # White's variance: sum dm^2 (dr - beta dm)^2 / (sum dm^2)^2
        dm2 = dm * dm
        meat = (dm2.T @ (dr * dr) - 2.0 * beta * ((dm2 * dm).T @ dr)
                + beta * beta * (dm2 * dm2).sum(axis=0)[:, None])
        se = np.sqrt(np.maximum(meat, 1e-18)) / ss_m[:, None]
        t = beta / se
    beta = np.where(np.isfinite(beta), beta, 0.0)
    t = np.where(np.isfinite(t), t, 0.0)
    return beta, t, n


def _without_own_load(d_resid, metered_kw):
    """Each residual's changes less what its own load's changes and their square explain.

    Losses follow the transformer's load (``b m^2``, a ratio error ``c m``):
    when a big customer's night shift ends, the residual falls with the
    load, and any meter that happens to switch on then would seem to move
    against it. One 2-regressor fit per transformer, all at once.
    """
    scale = np.nanmean(np.abs(metered_kw), axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    x = metered_kw / scale[None, :]
    controls = np.stack([np.diff(x, axis=0), np.diff(x * x, axis=0)], axis=2)  # (T-1, J, 2)
    ok = np.isfinite(d_resid) & np.isfinite(controls).all(axis=2)
    beta = batched_least_squares(np.where(ok[:, :, None], controls, 0.0),
                                 np.where(ok, d_resid, 0.0))
    return np.where(np.isfinite(d_resid), d_resid - (controls * beta[None, :, :]).sum(axis=2), np.nan)


def _without_hourly_mean(values, hour, used):
    """Each column less its mean change at each hour of day (on the ``used`` rows; 0 elsewhere).

    A shop opens at 07:00 every day, and the residual of a transformer whose
    meters and SCADA stamp their intervals differently jumps at the same
    hour: regular daily changes match by the clock, not by the meter. What
    is left is each day's own variation, which only the meter's own load
    shares with the transformer that feeds it.
    """
    n_hours = 24
    onehot = np.zeros((len(hour), n_hours))
    onehot[np.arange(len(hour)), hour] = 1.0
    used = used.astype(np.float64)
    sums = onehot.T @ (values * used)  # (24, n_columns)
    counts = onehot.T @ used
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, 0.0)
    return (values - mean[hour]) * used


def _winsorise(values):
    """Clip each column at :data:`CLIP_SIGMAS` sigmas of its non-zero values.

    The sigma is estimated from the mean absolute value (``sqrt(pi / 2)``
    times it for a normal variable): as robust as a clip needs, and a sum
    rather than a median over every column of the feeder.
    """
    nonzero = values != 0
    n = nonzero.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.pi / 2) * np.abs(values).sum(axis=0) / n
    limit = np.where(np.isfinite(scale) & (scale > 0), CLIP_SIGMAS * scale, np.inf)
    return np.clip(values, -limit[None, :], limit[None, :])


def inferred_meters(meters: pd.DataFrame, topology: pd.DataFrame, *,
                    min_confidence: float = MIN_INFERRED_CONFIDENCE) -> tuple[pd.DataFrame, int]:
    """The meters table with each confidently misplaced meter moved to its likely transformer.

    Parameters
    ----------
    meters : pandas.DataFrame
        The meters table.
    topology : pandas.DataFrame
        :func:`check_topology` rows (or :attr:`gridwatch.balance.Balance.topology`).
    min_confidence : float, default 0.5
        Rows below it (and rows without a likely transformer) are left as listed.

    Returns
    -------
    pandas.DataFrame
        A copy of ``meters`` with ``transformer_id`` replaced where inferred.
    int
        Meters moved.
    """
    move = topology[(topology["confidence"] >= min_confidence)
                    & (topology["likely_transformer_id"].astype(str) != "")]
    if move.empty:
        return meters, 0
    target = pd.Series(move["likely_transformer_id"].astype(str).to_numpy(),
                       index=move[col.METER_ID].astype(str).to_numpy())
    out = meters.copy()
    ids = out[col.METER_ID].astype(str)
    hit = ids.isin(target.index).to_numpy()
    out[col.TRANSFORMER_ID] = out[col.TRANSFORMER_ID].astype(object)
    out.loc[hit, col.TRANSFORMER_ID] = target.reindex(ids[hit]).to_numpy()
    return out, int(hit.sum())


#: A sibling's matching change must be at least this share of the flagged asset's [-].
MIN_MATCH_SHARE = 0.5
MATCH_DAYS = 2  # a sibling's fall this close to the onset matches it [days]


def matched_by_siblings(asset_ids, feeder_ids, *, new_load, onset, step_kw, down_onset, down_kw,
                        preexisting, excess_kw, deficit_kw, min_kw) -> pd.DataFrame:
    """Unexplained loads that a sibling transformer's missing energy accounts for.

    Energy is conserved along a feeder. A meter fed by transformer A but
    listed under B makes A deliver more than its meters record and B less,
    by the same amount: a step on A when the meter's own load rises (a new
    heat pump, an EV, a rig) is met by a fall on B the same day, and a
    meter listed wrongly since before the window leaves A with an excess
    and B with a deficit (B's meters record more than it delivers, which no
    loss can do). A hidden load has no such twin.

    Parameters
    ----------
    asset_ids, feeder_ids : sequence of str, length n_assets
        The balanced transformers and their feeders ("" when unknown).
    new_load : numpy.ndarray of bool
        Assets flagged for a new load, with ``onset`` (day) and ``step_kw``.
    down_onset, down_kw : numpy.ndarray
        Each asset's best downward step: day (-1 when none) and size [kW].
    preexisting : numpy.ndarray of bool
        Assets flagged for a load running before the window, of ``excess_kw``.
    deficit_kw : numpy.ndarray
        How much more each asset's meters record than it delivers, above its
        losses [kW] (<= 0 when none).
    min_kw : float
        Smallest match considered [kW].

    Returns
    -------
    pandas.DataFrame
        One row per explained asset: ``asset_id``, ``partner`` (the sibling)
        and ``partner_kw`` (its matching fall or deficit [kW]). Matches are
        one to one, closest sizes first: a sibling's fall explains one rise.
    """
    a = pd.DataFrame({"asset_id": [str(x) for x in asset_ids],
                      "feeder": [str(x) for x in feeder_ids], "new": new_load,
                      "onset": onset, "step_kw": step_kw, "down_onset": down_onset,
                      "down_kw": down_kw, "pre": preexisting, "excess_kw": excess_kw,
                      "deficit_kw": deficit_kw})
    flagged = a[(a["new"] | a["pre"]) & (a["feeder"] != "")]
    out = pd.DataFrame(columns=["asset_id", "partner", "partner_kw"])
    if flagged.empty:
        return out
    pairs = flagged.merge(a, on="feeder", suffixes=("", "_s"))
    pairs = pairs[pairs["asset_id"] != pairs["asset_id_s"]]
    step_match = (pairs["new"] & (pairs["down_onset_s"] >= 0)
                  & ((pairs["down_onset_s"] - pairs["onset"]).abs() <= MATCH_DAYS)
                  & (pairs["down_kw_s"] >= np.maximum(MIN_MATCH_SHARE * pairs["step_kw"], min_kw))
                  & (pairs["step_kw"] >= MIN_MATCH_SHARE * pairs["down_kw_s"]))
    pre_match = (pairs["pre"] & (pairs["deficit_kw_s"]
                                 >= np.maximum(MIN_MATCH_SHARE * pairs["excess_kw"], min_kw)))
    matched = pairs[step_match | pre_match]
    matched = matched.assign(partner_kw=np.where(matched["new"], matched["down_kw_s"],
                                                 matched["deficit_kw_s"]))
    if matched.empty:
        return out
    # one to one: a sibling's fall (or deficit) explains one asset's rise, the closest in size
    size = np.where(matched["new"], matched["step_kw"], matched["excess_kw"])
    matched = matched.assign(_gap=np.abs(np.log(np.maximum(matched["partner_kw"], 1e-9)
                                                / np.maximum(size, 1e-9))))
    best = matched.sort_values(["_gap", "asset_id", "asset_id_s"])
    taken_assets, taken_partners, keep = set(), set(), []
    for i, r in zip(best.index, best.itertuples(index=False), strict=True):  # the few matches
        if r.asset_id in taken_assets or r.asset_id_s in taken_partners:
            continue
        taken_assets.add(r.asset_id)
        taken_partners.add(r.asset_id_s)
        keep.append(i)
    best = best.loc[keep].sort_values("asset_id")
    return best.rename(columns={"asset_id_s": "partner"})[["asset_id", "partner", "partner_kw"]] \
        .reset_index(drop=True)


def steps_of_misplaced_meters(asset_ids, feeder_ids, flagged, onset, residual_day, members,
                              day_kw, meter_ids, *, min_kw,
                              window_days: int = 7) -> pd.DataFrame:
    """Flagged rises that a meter listed under a sibling transformer accounts for.

    When a steady load starts on a meter fed by A but listed under B, A's
    balance rises and B's falls on the same day by as much, and the meter's
    own consumption rises by that much too. The fall of B alone may be lost
    among other changes of B (:func:`matched_by_siblings` then finds no
    twin); the meter's rise, read off its own data, names the cause.

    Parameters
    ----------
    asset_ids, feeder_ids : sequence of str, length n_assets
        The balanced transformers and their feeders ("" when unknown).
    flagged : numpy.ndarray of bool
        Assets flagged for a new load on day ``onset``.
    residual_day : numpy.ndarray of shape (n_days, n_assets)
        Each asset's daily residual (delivered - metered) [kW]; the rise of a
        flagged asset and the fall of a sibling are its changes across the
        onset.
    members : pandas.DataFrame
        ``asset_id``, ``meter_id`` of every balanced asset (as listed).
    day_kw : numpy.ndarray of shape (n_days, n_meters)
        Daily mean demand of ``meter_ids`` [kW].
    min_kw : float
        Smallest rise considered [kW].
    window_days : int, default 7
        Days compared on each side of the onset.

    Returns
    -------
    pandas.DataFrame
        One row per explained asset: ``asset_id``, ``partner`` (the sibling
        the meter is listed under), ``partner_kw`` (the meter's rise from
        before the onset to its last ``window_days`` days, stages included
        [kW]) and ``meter_id``.
    """
    out = pd.DataFrame(columns=["asset_id", "partner", "partner_kw", "meter_id"])
    ids = [str(a) for a in asset_ids]
    feeders = np.asarray([str(f) for f in feeder_ids], dtype=object)
    meter_index = pd.Index([str(m) for m in meter_ids])
    listed = members.assign(_m=meter_index.get_indexer(members[col.METER_ID].astype(str)))
    listed = listed[listed["_m"] >= 0]
    n_days = residual_day.shape[0]
    rows = []
    for i in np.flatnonzero(flagged & (onset >= 0) & (feeders != "")):  # the few flagged assets
        d = int(onset[i])
        if d < 1 or d >= n_days - 1:
            continue
        rise_kw = float(_change_at_day(residual_day[:, [i]], d, window_days)[0])
        if not rise_kw >= min_kw:
            continue
        siblings = np.flatnonzero((feeders == feeders[i]) & (np.arange(len(ids)) != i))
        fall = -_change_at_day(residual_day[:, siblings], d, window_days)
        best = None
        for j, fall_kw in zip(siblings, fall, strict=True):  # its few siblings
            if not fall_kw >= max(MIN_MATCH_SHARE * rise_kw, min_kw):
                continue
            cols = listed.loc[listed[col.ASSET_ID].astype(str) == ids[j], "_m"].to_numpy()
            if not len(cols):
                continue
            rise = np.nan_to_num(_change_at_day(day_kw[:, cols], d, window_days), nan=-np.inf)
            k = int(np.argmax(rise))
            ok = (MIN_MATCH_SHARE * rise_kw <= rise[k] <= rise_kw / MIN_MATCH_SHARE
                  and MIN_MATCH_SHARE * rise[k] <= fall_kw)
            gap = abs(np.log(max(rise[k], 1e-9) / rise_kw))
            if ok and (best is None or gap < best[0]):
                best = (gap, j, cols[k])
        if best is None:
            continue
        _, j, m = best
        # the load stays: the meter's rise and the sibling's fall last to the end of the window
        meter_kw = _lasting_change(day_kw[:, m], d, window_days)
        sibling_kw = -_lasting_change(residual_day[:, j], d, window_days)
        if not (meter_kw >= min_kw and sibling_kw >= MIN_MATCH_SHARE * meter_kw):
            continue
        rows.append({"asset_id": ids[i], "partner": ids[j], "partner_kw": meter_kw,
                     "meter_id": meter_index[m]})
    return pd.DataFrame(rows, columns=out.columns) if rows else out


def _lasting_change(series, day, window_days):
    """Median of the last ``window_days`` days minus that of the two windows before ``day``."""
    n = len(series)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        before = np.nanmedian(series[max(day - 2 * window_days, 0):day])
        recent = np.nanmedian(series[max(n - window_days, day + 1):])
    return float(np.nan_to_num(recent - before, nan=-np.inf))


def _change_at_day(values, day, window_days):
    """Mean of the ``window_days`` days after ``day`` minus the mean of those before it.

    The day itself is left out (a switch-on during the day makes it partial).
    """
    n = values.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        before = np.nanmean(values[max(day - window_days, 0):day], axis=0)
        after = np.nanmean(values[day + 1:min(day + 1 + window_days, n)], axis=0)
    return after - before


def meters_that_stepped(twins, members, day_kw, meter_ids, onset, dates, *,
                        window_days: int = 7) -> pd.DataFrame:
    """For each matched step, the meter of the falling sibling whose own load rose by as much.

    A steady load (a licensed data room, a rig) has no hour-to-hour
    fingerprint for :func:`check_topology`, but when it starts on a
    misplaced meter its transformer's balance rises and the listed one's
    falls the same day (:func:`matched_by_siblings`): the meter whose
    consumption rose by that much at that day, among those listed under the
    falling transformer, is the one to move.

    Parameters
    ----------
    twins : pandas.DataFrame
        :func:`matched_by_siblings` rows of new loads (``asset_id``,
        ``partner``, ``partner_kw``).
    members : pandas.DataFrame
        ``asset_id``, ``meter_id`` of every balanced asset (as listed).
    day_kw : numpy.ndarray of shape (n_days, n_meters)
        Each meter's daily mean demand [kW], columns ``meter_ids``.
    meter_ids : sequence of str
    onset : mapping of asset_id to int
        Day of each twin's step.
    dates : pandas.DatetimeIndex
        The local days (for the evidence text).
    window_days : int, default 7
        Days compared before and after the step [days].

    Returns
    -------
    pandas.DataFrame
        Rows in the layout of :data:`TOPOLOGY_COLUMNS`.
    """
    rows = []
    ids = pd.Index([str(m) for m in meter_ids])
    n_days = day_kw.shape[0]
    for r in twins.itertuples(index=False):  # a handful of matched steps
        d = int(onset[r.asset_id])
        listed = members.loc[members[col.ASSET_ID] == r.partner, col.METER_ID].astype(str)
        cols = ids.get_indexer(listed)
        cols = cols[cols >= 0]
        if not len(cols) or d < 1 or d >= n_days - 1:
            continue
        rise = np.nan_to_num(_change_at_day(day_kw[:, cols], d, window_days), nan=-np.inf)
        best = int(np.argmax(rise))
        size = float(r.partner_kw)
        if not MIN_MATCH_SHARE * size <= rise[best] <= size / MIN_MATCH_SHARE:
            continue
        meter = ids[cols[best]]
        rows.append({
            col.METER_ID: meter, "listed_transformer_id": r.partner,
            "likely_transformer_id": r.asset_id,
            "evidence": (f"its consumption rose {rise[best]:.2f} kW around "
                         f"{dates[d].date().isoformat()}, when {r.asset_id}'s unexplained load "
                         f"rose and {r.partner}'s fell by about as much: the new load is "
                         f"delivered by {r.asset_id}"),
            "confidence": round(float(np.clip(0.5 + 0.5 * (1 - abs(rise[best] - size) / size),
                                              0.0, 0.9)), 3),
            col.FEEDER_ID: "", "listed_coefficient": np.nan, "listed_t": np.nan,
            "likely_coefficient": np.nan, "likely_t": np.nan})
    return pd.DataFrame(rows, columns=list(TOPOLOGY_COLUMNS)) if rows else empty_topology()
