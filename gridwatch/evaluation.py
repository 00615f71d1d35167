"""Score a run's ``flags.csv`` against the labels of a simulated dataset.

The labels come from :func:`gridwatch.simulate.simulate_dataset`
(``labels.json``). The questions answered are the ones an operator asks:

- *recall*: what fraction of rigs did the run recommend for investigation,
  split by how long before the as-of day the rig started (``0-2 days``,
  ``>=3 days``) and for rigs that ran through the whole window
  (``preexisting``); hidden rigs (``bypass``) count only when flagged as
  ``hidden_load_suspect``;
- *false alarms*: what fraction of ordinary meters, and of each look-alike
  type (storage heaters, EV chargers ...), was flagged;
- *precision*: what fraction of flagged meters are rigs, and the same among
  the ``k`` highest-ranked meters whatever their flag (precision@k);
- *onset*: how close the flagged onset is to the true one;
- *size*: how close ``excess_kw`` is to the rig's nominal draw;
- *transformers* (with ``transformers.csv``): what fraction of hidden loads
  was found (recall, overall, of at least 1 kW and per bypass kind), what
  fraction of clean transformers was flagged, how often the culprit is among
  the first 3 suspects, how close ``unexplained_kw`` is to the hidden load
  and the asset's onset to the true one; with labelled network faults
  (``simulate_dataset(..., network_faults=True)``), how many CT ratio
  changes and clock offsets were reported as ``metering_fault`` or taken
  for a hidden load, and the false alarms on transformers touched by
  mismapped meters or a SCADA outage;
- *topology* (with ``topology.csv``): what fraction of the mismapped meters
  was listed with their true transformer as the likely one, and what
  fraction of the correctly mapped meters was listed.

Definitions
-----------
A meter is *flagged* when ``flagged`` is true. A *hit* is a flagged meter of
type ``rig`` or ``rig_preexisting`` (any ``kind``), or a ``bypass`` meter
flagged with ``kind == "hidden_load_suspect"``. Every other flagged meter is
a false alarm, including a ``bypass`` meter flagged as ``visible_load`` (the
meter does not record the rig, so that flag is right by accident). Flag rows
for meters absent from the labels count as false alarms in precision and are
reported as ``n_unlabelled_flags``. Labelled meters absent from the flags
count as not flagged (``n_not_scored``). Onset age is
``(as_of - onset).days``: a rig starting on the as-of day has age 0.

Transformers are scored over the assets of ``labels["transformers"]`` (other
rows of ``transformers.csv``, feeders for instance, are ignored; a labelled
asset missing from it counts as not flagged). A transformer with a
``hidden_kw`` carries a hidden load and is *detected* when flagged; the
others are *clean*, except those with a labelled ``metering_fault`` (scored
on their own), and flagged ones are false alarms. ``hidden_kw`` is what
the transformer delivers that its meters do not record (rig plus household
load diverted around the meter), the truth for ``unexplained_kw``. A
metering-fault transformer is *reported* when its ``kind`` is
``metering_fault`` and *taken for a hidden load* when it is flagged with
another kind (``transformers.csv`` without a ``kind`` column: every kind is
empty).

A meter is *mismapped* when its label's ``listed_transformer_id`` (the
transformer in ``meters.csv``) is not its true ``transformer_id``. It is
*found* when ``topology.csv`` lists it with ``likely_transformer_id`` equal
to the true transformer. A correctly mapped meter listed in ``topology.csv``
is a false listing; those are counted over the meters of transformers with
upstream data (the assets of ``transformers.csv`` when given, else every
labelled transformer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.simulate import HIDDEN_TYPES, LABEL_TYPES, POSITIVE_TYPES

__all__ = ["AGE_GROUPS", "HIDDEN_KW_MIN", "METERING_FAULT_KINDS", "TOP_SUSPECTS", "evaluate",
           "evaluate_topology", "evaluate_transformers", "flag_frame", "format_evaluation",
           "label_frame"]

#: Recall groups of visible rigs, in report order.
AGE_GROUPS = (">=3 days", "0-2 days", "preexisting")
#: A culprit counts as named when it is among this many first suspects.
TOP_SUSPECTS = 3
#: Hidden loads of at least this size [kW] get a recall of their own.
HIDDEN_KW_MIN = 1.0
#: Labelled metering faults (``labels["transformers"][...]["metering_fault"]["kind"]``).
METERING_FAULT_KINDS = ("ct_ratio", "clock_offset")
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n", ""}


def label_frame(labels) -> pd.DataFrame:
    """Return the per-meter labels as a frame.

    Parameters
    ----------
    labels : dict or str or os.PathLike
        Labels as returned by :func:`gridwatch.simulate.simulate_dataset`, or
        the path of ``labels.json``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``meter_id``, with ``type`` (str), ``onset``
        (``datetime64``, NaT when none), ``rig_kw`` [kW] (NaN when none),
        ``transformer_id`` (str) and ``age_days`` (days from onset to as-of,
        NaN when no onset).
    """
    labels = _load_labels(labels)
    meters = labels["meters"]
    frame = pd.DataFrame.from_dict(meters, orient="index")
    frame.index = frame.index.astype(str)
    frame.index.name = col.METER_ID
    frame["type"] = frame["type"].astype(str)
    frame[col.ONSET] = _to_dates(frame[col.ONSET])
    frame["rig_kw"] = pd.to_numeric(frame["rig_kw"], errors="coerce").astype("float64")
    frame[col.TRANSFORMER_ID] = frame[col.TRANSFORMER_ID].fillna("").astype(str)
    as_of = pd.Timestamp(labels["as_of"])
    frame["age_days"] = (as_of - frame[col.ONSET]).dt.days.astype("float64")
    rig_type = frame["rig_type"] if "rig_type" in frame else pd.Series(None, index=frame.index)
    frame["rig_type"] = rig_type.where(rig_type.notna(), None).astype(object)
    return frame[["type", col.ONSET, "rig_kw", col.TRANSFORMER_ID, "age_days", "rig_type"]]


def flag_frame(flags) -> pd.DataFrame:
    """Normalise a ``flags.csv`` frame for scoring.

    Parameters
    ----------
    flags : pandas.DataFrame or str or os.PathLike
        The flags (columns of :data:`gridwatch.columns.FLAGS_COLUMNS`; only
        ``meter_id``, ``flagged`` and ``rank`` or ``score`` are required) or
        the path of ``flags.csv``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``meter_id`` with ``rank`` (float), ``score`` (float),
        ``flagged`` (bool), ``kind`` (str, empty when none), ``onset``
        (``datetime64``, NaT when none) and ``excess_kw`` [kW] (NaN when none).
        When ``rank`` is missing it is derived from ``score`` (highest first).

    Raises
    ------
    ValueError
        When ``meter_id`` or ``flagged`` is missing, a meter appears twice, or
        ``flagged`` holds a value that is not a boolean.
    """
    if not isinstance(flags, pd.DataFrame):
        flags = pd.read_csv(flags, dtype={col.METER_ID: str}, keep_default_na=True)
    for name in (col.METER_ID, col.FLAGGED):
        if name not in flags.columns:
            raise ValueError(f"flags has no '{name}' column; columns: {list(flags.columns)}")
    ids = flags[col.METER_ID].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"flags lists {len(dup)} meter(s) twice, e.g. {dup.iloc[0]!r}")
    out = pd.DataFrame(index=pd.Index(ids.to_numpy(), name=col.METER_ID))
    out[col.FLAGGED] = _to_bool(flags[col.FLAGGED]).to_numpy()
    score = flags[col.SCORE] if col.SCORE in flags.columns else pd.Series(np.nan, flags.index)
    out[col.SCORE] = pd.to_numeric(score, errors="coerce").astype("float64").to_numpy()
    if col.RANK in flags.columns:
        rank = pd.to_numeric(flags[col.RANK], errors="coerce").astype("float64").to_numpy()
    elif col.SCORE in flags.columns:
        rank = (-out[col.SCORE]).rank(method="first").to_numpy()
    else:
        raise ValueError("flags needs a 'rank' or a 'score' column to order meters")
    out[col.RANK] = rank
    kind = flags[col.KIND] if col.KIND in flags.columns else pd.Series("", flags.index)
    out[col.KIND] = kind.fillna("").astype(str).str.strip().to_numpy()
    onset = flags[col.ONSET] if col.ONSET in flags.columns else pd.Series(None, flags.index)
    out[col.ONSET] = _to_dates(onset).to_numpy()
    excess = flags[col.EXCESS_KW] if col.EXCESS_KW in flags.columns else pd.Series(
        np.nan, flags.index)
    out[col.EXCESS_KW] = pd.to_numeric(excess, errors="coerce").astype("float64").to_numpy()
    return out


def evaluate(flags, labels, *, k=None, transformers=None, topology=None) -> dict:
    """Metrics of a run's flags against the labels of a simulated dataset.

    Parameters
    ----------
    flags : pandas.DataFrame or str or os.PathLike
        ``flags.csv`` as a frame (``flagged`` may be bool or the strings
        ``"true"``/``"false"``; ``onset`` a ``YYYY-MM-DD`` string, empty or
        NaN) or its path.
    labels : dict or str or os.PathLike
        Labels from :func:`gridwatch.simulate.simulate_dataset` or the path
        of ``labels.json``.
    k : int, optional
        Cut-off of precision@k. Default: the number of positive meters
        (``rig``, ``rig_preexisting`` and ``bypass``).
    transformers : pandas.DataFrame or str or os.PathLike, optional
        ``transformers.csv``; adds the asset-level metrics of
        :func:`evaluate_transformers` under ``"transformers"``.
    topology : pandas.DataFrame or str or os.PathLike, optional
        ``topology.csv`` (an empty frame when the run listed no meter); adds
        the metrics of :func:`evaluate_topology` under ``"topology"``.

    Returns
    -------
    dict
        JSON-serialisable; a rate with an empty denominator is None.

        - ``as_of`` (str), ``k`` (int), ``n_meters`` (labelled meters),
          ``n_flagged``, ``n_not_scored``, ``n_unlabelled_flags`` (int);
        - ``recall``: rate per group of :data:`AGE_GROUPS`, ``overall``
          (visible rigs), ``bypass``, ``>=0.5 kW, >=3 days`` (rigs of at
          least 0.5 kW whose onset is 3 days or more before the as-of, or
          that ran all window) and ``<0.5 kW``; ``recall_detected`` and
          ``recall_n``: the counts behind each rate;
        - ``recall_by_rig_type``: ``{rig_type: {"n", "found", "rate"}}``
          over the visible rigs whose labels give a ``rig_type``;
        - ``false_alarm_rate``: flagged fraction of ``normal`` meters, of
          each look-alike type present, of ``bypass`` meters flagged with
          another kind than ``hidden_load_suspect``, and ``all_negatives``
          (every type but the positives and ``bypass``); ``false_alarm_n``:
          the numbers of false alarms behind them;
        - ``precision`` and ``precision_at_k`` (by ``rank``);
        - ``onset_within_1d``: fraction of detected ``rig`` meters whose
          flag onset is within 1 day of the true onset (a missing flag onset
          counts as a miss); ``onset_median_abs_error_days`` and
          ``onset_median_error_days`` (flag minus truth, so positive means
          late) over those with a flag onset; ``n_onset_scored``;
        - ``excess_kw_median_rel_error``: median of
          ``|excess_kw - rig_kw| / rig_kw`` over detected visible rigs with
          a finite ``excess_kw``; ``n_kw_scored``;
        - ``counts``: ``{type: {"n": ..., "flagged": ...}}``;
        - ``transformers`` and ``topology`` when those tables are given.

    Raises
    ------
    ValueError
        From :func:`flag_frame` on malformed flags.

    Examples
    --------
    >>> metrics = evaluate("out/flags.csv", "data/labels.json")  # doctest: +SKIP
    >>> print(format_evaluation(metrics))  # doctest: +SKIP
    """
    labels = _load_labels(labels)
    lab = label_frame(labels)
    fl = flag_frame(flags)
    joined = lab.join(fl.rename(columns={col.ONSET: "onset_flag"}), how="left")
    flagged = joined[col.FLAGGED].eq(True)  # meters missing from the flags: not flagged
    kind = joined[col.KIND].fillna("")
    typ = joined["type"]

    visible = typ.isin(POSITIVE_TYPES)
    hidden = typ.isin(HIDDEN_TYPES)
    hit = (visible & flagged) | (hidden & flagged & (kind == col.KIND_HIDDEN))
    false_alarm = flagged & ~hit

    # Recall of visible rigs by onset age, and of hidden rigs.
    age = joined["age_days"]
    groups = {
        ">=3 days": visible & (age >= 3),
        "0-2 days": visible & (age <= 2),
        "preexisting": visible & age.isna(),
        "overall": visible,
        "bypass": hidden,
    }
    size = joined["rig_kw"]
    groups[">=0.5 kW, >=3 days"] = visible & ((age >= 3) | age.isna()) & (size >= 0.5)
    groups["<0.5 kW"] = visible & (size < 0.5)
    recall, recall_n, recall_detected = {}, {}, {}
    for name, members in groups.items():
        recall_n[name] = int(members.sum())
        recall_detected[name] = int((members & hit).sum())
        recall[name] = _ratio(recall_detected[name], recall_n[name])

    # Recall per rig behaviour.
    by_type = {}
    rig_type = joined["rig_type"]
    for t in sorted(rig_type[visible].dropna().unique()):
        members = visible & (rig_type == t)
        found = int((members & hit).sum())
        by_type[t] = {"n": int(members.sum()), "found": found,
                      "rate": _ratio(found, int(members.sum()))}

    # False alarms per negative type (every type that is not a positive).
    negatives = ~(visible | hidden)
    far, far_n = {}, {}
    types_present = list(dict.fromkeys([*LABEL_TYPES, *sorted(typ.unique())]))
    for t in types_present:
        members = typ == t
        if not members.any() or t in POSITIVE_TYPES:
            continue
        far_n[t] = int((members & false_alarm).sum())
        far[t] = _ratio(far_n[t], int(members.sum()))
    far_n["all_negatives"] = int((negatives & flagged).sum())
    far["all_negatives"] = _ratio(far_n["all_negatives"], int(negatives.sum()))

    # Precision over the flagged list and among the k highest ranked meters.
    unlabelled = fl.index.difference(lab.index)
    n_unlabelled_flags = int(fl.loc[unlabelled, col.FLAGGED].sum())
    n_flagged = int(flagged.sum()) + n_unlabelled_flags
    precision = _ratio(int(hit.sum()), n_flagged)
    n_pos = int((visible | hidden).sum())
    k = n_pos if k is None else int(k)
    ranked = fl.assign(_score=-fl[col.SCORE].fillna(-np.inf)).sort_values(
        [col.RANK, "_score"], kind="stable", na_position="last")
    top = ranked.index[:k]
    top_hit = hit.reindex(top, fill_value=False)
    precision_at_k = _ratio(int(top_hit.sum()), k) if k > 0 else None

    # Onset error among detected rigs with a labelled onset.
    dated = (typ == "rig") & hit & joined[col.ONSET].notna()
    err = (joined.loc[dated, "onset_flag"] - joined.loc[dated, col.ONSET]).dt.days
    within = int((err.abs() <= 1).sum())
    known = err.dropna()

    # Size error among detected visible rigs.
    size = joined.loc[visible & hit & np.isfinite(joined[col.EXCESS_KW])
                      & (joined["rig_kw"] > 0)]
    rel = (size[col.EXCESS_KW] - size["rig_kw"]).abs() / size["rig_kw"]

    counts = {}
    for t in types_present:
        members = typ == t
        if members.any():
            counts[t] = {"n": int(members.sum()), "flagged": int((members & flagged).sum())}

    metrics = {
        "as_of": str(labels["as_of"]),
        "n_meters": len(lab),
        "n_flagged": n_flagged,
        "n_not_scored": int(joined[col.FLAGGED].isna().sum()),
        "n_unlabelled_flags": n_unlabelled_flags,
        "k": k,
        "recall": recall,
        "recall_detected": recall_detected,
        "recall_n": recall_n,
        "recall_by_rig_type": by_type,
        "false_alarm_rate": far,
        "false_alarm_n": far_n,
        "precision": precision,
        "precision_at_k": precision_at_k,
        "onset_within_1d": _ratio(within, int(dated.sum())),
        "onset_median_abs_error_days": _median(known.abs()),
        "onset_median_error_days": _median(known),
        "n_onset_scored": int(dated.sum()),
        "excess_kw_median_rel_error": _median(rel),
        "n_kw_scored": len(rel),
        "counts": counts,
    }
    assets = None
    if transformers is not None:
        transformers = _read_table(transformers)
        metrics["transformers"] = evaluate_transformers(transformers, labels)
        if col.ASSET_ID in transformers.columns:
            assets = transformers[col.ASSET_ID].astype(str)
    if topology is not None:
        metrics["topology"] = evaluate_topology(topology, labels, assets=assets)
    return metrics


def format_evaluation(metrics) -> str:
    """Format :func:`evaluate`'s metrics as a compact text table for the terminal.

    Parameters
    ----------
    metrics : dict
        As returned by :func:`evaluate`.

    Returns
    -------
    str
        Several lines, no trailing newline.
    """
    m = metrics
    lines = [
        f"evaluation as of {m['as_of']}: {m['n_meters']} meters, {m['n_flagged']} flagged",
        f"precision {_fmt(m['precision'])}   precision@{m['k']} {_fmt(m['precision_at_k'])}",
        "",
        f"{'recall':<34}{'found':>7}{'of':>7}{'rate':>8}",
    ]
    names = {">=3 days": "rigs, onset >=3 days ago", "0-2 days": "rigs, onset 0-2 days ago",
             "preexisting": "rigs running all window", "overall": "all visible rigs",
             ">=0.5 kW, >=3 days": "rigs >=0.5 kW, >=3 days old", "<0.5 kW": "rigs under 0.5 kW",
             "bypass": "bypass (as hidden_load_suspect)"}
    for key, label in names.items():
        n = m["recall_n"].get(key, 0)
        if n or key == "overall":
            lines.append(f"  {label:<32}{m['recall_detected'][key]:>7}{n:>7}"
                         f"{_fmt(m['recall'][key]):>8}")
    if m.get("recall_by_rig_type"):
        lines += ["", f"{'recall by rig type':<34}{'found':>7}{'of':>7}{'rate':>8}"]
        for t, r in m["recall_by_rig_type"].items():
            lines.append(f"  {t:<32}{r['found']:>7}{r['n']:>7}{_fmt(r['rate']):>8}")
    lines += ["", f"{'false alarms':<34}{'flagged':>7}{'of':>7}{'rate':>8}"]
    n_neg = sum(c["n"] for t, c in m["counts"].items()
                if t not in POSITIVE_TYPES and t not in HIDDEN_TYPES)
    for t, rate in m["false_alarm_rate"].items():
        n = n_neg if t == "all_negatives" else m["counts"][t]["n"]
        label = "all negatives" if t == "all_negatives" else t
        if t == "bypass":
            label = "bypass (as visible_load)"
        lines.append(f"  {label:<32}{m['false_alarm_n'][t]:>7}{n:>7}{_fmt(rate, 3):>8}")
    lines += [
        "",
        f"onset within 1 day      {_fmt(m['onset_within_1d'])}  (n={m['n_onset_scored']}; "
        f"median |error| {_fmt(m['onset_median_abs_error_days'], 1)} d, "
        f"median error {_fmt(m['onset_median_error_days'], 1)} d)",
        f"excess kW rel. error    {_fmt(m['excess_kw_median_rel_error'])}  "
        f"(median, n={m['n_kw_scored']})",
    ]
    if "transformers" in m:
        lines += ["", *_format_transformers(m["transformers"])]
    if "topology" in m:
        lines += ["", *_format_topology(m["topology"])]
    if m["n_not_scored"] or m["n_unlabelled_flags"]:
        lines.append(f"note: {m['n_not_scored']} labelled meters absent from flags, "
                     f"{m['n_unlabelled_flags']} flagged meters absent from labels")
    return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------
def evaluate_transformers(transformers, labels) -> dict:
    """Asset-level metrics of ``transformers.csv`` against the labels.

    Parameters
    ----------
    transformers : pandas.DataFrame or str or os.PathLike
        ``transformers.csv`` as a frame (every column may be text, as the CLI
        reads it) or its path. ``asset_id`` is required; ``flagged``,
        ``kind`` (``hidden_load``, ``metering_fault`` or empty),
        ``unexplained_kw`` [kW], ``onset`` (``YYYY-MM-DD``) and ``suspects``
        (meter ids joined by ``;``, most likely first) are used when present.
    labels : dict or str or os.PathLike
        Labels from :func:`gridwatch.simulate.simulate_dataset` or the path
        of ``labels.json``.

    Returns
    -------
    dict
        JSON-serialisable; a rate with an empty denominator is None.

        - ``n_hidden``, ``detected``, ``recall``: transformers with a hidden
          load, those flagged, the fraction;
        - ``n_hidden_ge_1kw``, ``detected_ge_1kw``, ``recall_ge_1kw``: the
          same for hidden loads of at least :data:`HIDDEN_KW_MIN` kW;
        - ``n_clean``, ``false_alarms``, ``false_alarm_rate``: the same for
          transformers with neither a hidden load nor a labelled metering
          fault (flagged with any kind);
        - ``culprit_in_suspects``, ``culprit_first``,
          ``culprit_in_top3`` (counts ``n_culprit_in_top3``): fraction of
          detected transformers whose culprit is listed at all, first, or
          among the first :data:`TOP_SUSPECTS` suspects;
        - ``unexplained_kw_median_rel_error``: median of
          ``|unexplained_kw - hidden_kw| / hidden_kw`` over detected
          transformers with a finite ``unexplained_kw``
          (``n_kw_scored``);
        - ``onset_within_1d``: fraction of detected transformers whose onset
          is within 1 day of the true one (a missing onset is a miss;
          ``n_onset_scored`` detected transformers with a true onset,
          ``n_onset_within_1d``);
        - ``by_kind``: ``{bypass_kind: {"n_hidden", "detected", "recall",
          "n_culprit_in_top3", "culprit_in_top3", "n_culprit_first",
          "culprit_first"}}`` per kind of the culprit (``"unspecified"``
          for labels without ``bypass_kind``);
        - ``metering_faults`` (None when the labels have no
          ``metering_fault``): per kind of :data:`METERING_FAULT_KINDS`,
          ``{"n", "reported", "reported_rate", "flagged_hidden",
          "flagged_hidden_rate"}`` (labelled; ``kind == metering_fault``;
          flagged with another kind), and ``clean_reported`` /
          ``clean_reported_rate`` (clean transformers reported as a metering
          fault) and ``hidden_reported`` (hidden loads reported as one);
        - ``false_alarms_by_group`` (None when the labels have neither
          mismapped meters nor SCADA outages): ``{group: {"n",
          "false_alarms", "false_alarm_rate"}}`` over the clean transformers
          ``mismap_affected`` (the listed or true transformer of a mismapped
          meter), ``mismap_unaffected`` and ``scada_outage`` (with a
          labelled outage); a group is present when its labels are.
    """
    labels = _load_labels(labels)
    transformers = _read_table(transformers)
    if col.ASSET_ID not in transformers.columns:
        raise ValueError(f"transformers has no '{col.ASSET_ID}' column; "
                         f"columns: {list(transformers.columns)}")
    tf = transformers.set_index(transformers[col.ASSET_ID].astype(str))
    if tf.index.has_duplicates:
        raise ValueError(f"transformers lists asset {tf.index[tf.index.duplicated()][0]!r} twice")
    truth = labels["transformers"]
    assets = pd.Index(list(truth), dtype=object)
    tf = tf.reindex(assets)

    def column(name, default):
        return tf[name] if name in tf.columns else pd.Series(default, tf.index, dtype=object)

    flagged = _to_bool(column(col.FLAGGED, "false").fillna("false"))
    unexplained = pd.to_numeric(column(col.UNEXPLAINED_KW, np.nan), errors="coerce")
    onset = _to_dates(column(col.ONSET, None).to_numpy())
    onset.index = tf.index
    suspects = column(col.SUSPECTS, "").fillna("").astype(str)
    reported = column(col.KIND, "").fillna("").astype(str).str.strip().str.lower() \
        == col.KIND_METERING_FAULT

    hidden_kw = pd.Series({a: v.get("hidden_kw") for a, v in truth.items()}, dtype="float64")
    hidden = hidden_kw.notna().reindex(assets)
    kind = pd.Series({a: (v.get("bypass_kind") or "unspecified") for a, v in truth.items()})
    true_onset = _to_dates(pd.Series({a: v.get("onset") for a, v in truth.items()}).to_numpy())
    true_onset.index = assets
    culprit = pd.Series({a: v.get("culprit") for a, v in truth.items()}, dtype=object)

    detected = hidden & flagged
    names = suspects.map(lambda text: [m.strip() for m in text.split(";") if m.strip()])
    rank = pd.Series([lst.index(c) + 1 if c in lst else np.nan
                      for lst, c in zip(names, culprit, strict=True)], index=assets,
                     dtype="float64")
    in_list = detected & rank.notna()
    first = detected & (rank == 1)
    top = detected & (rank <= TOP_SUSPECTS)

    sized = detected & np.isfinite(unexplained) & (hidden_kw > 0)
    rel = ((unexplained - hidden_kw).abs() / hidden_kw)[sized]
    dated = detected & true_onset.notna()
    err = (onset - true_onset)[dated].dt.days
    within = int((err.abs() <= 1).sum())

    n_hidden, n_detected = int(hidden.sum()), int(detected.sum())
    big = hidden & (hidden_kw >= HIDDEN_KW_MIN)
    fault = pd.Series({a: ((v.get("metering_fault") or {}).get("kind") or "")
                       for a, v in truth.items()}, index=assets, dtype=object)
    clean = ~hidden & (fault == "")
    false_alarms = int((clean & flagged).sum())
    by_kind = {}
    for k in sorted(kind[hidden].unique()):  # 3 bypass kinds
        members = hidden & (kind == k)
        n_det = int((members & detected).sum())
        n_top, n_first = int((members & top).sum()), int((members & first).sum())
        by_kind[k] = {
            "n_hidden": int(members.sum()), "detected": n_det,
            "recall": _ratio(n_det, int(members.sum())),
            "n_culprit_in_top3": n_top, "culprit_in_top3": _ratio(n_top, n_det),
            "n_culprit_first": n_first, "culprit_first": _ratio(n_first, n_det),
        }
    return {
        "n_hidden": n_hidden,
        "detected": n_detected,
        "recall": _ratio(n_detected, n_hidden),
        "n_clean": int(clean.sum()),
        "false_alarms": false_alarms,
        "false_alarm_rate": _ratio(false_alarms, int(clean.sum())),
        "culprit_in_suspects": _ratio(int(in_list.sum()), n_detected),
        "culprit_first": _ratio(int(first.sum()), n_detected),
        "n_culprit_in_top3": int(top.sum()),
        "culprit_in_top3": _ratio(int(top.sum()), n_detected),
        "unexplained_kw_median_rel_error": _median(rel),
        "n_kw_scored": len(rel),
        "onset_within_1d": _ratio(within, int(dated.sum())),
        "n_onset_within_1d": within,
        "n_onset_scored": int(dated.sum()),
        "by_kind": by_kind,
        "n_hidden_ge_1kw": int(big.sum()),
        "detected_ge_1kw": int((big & flagged).sum()),
        "recall_ge_1kw": _ratio(int((big & flagged).sum()), int(big.sum())),
        "metering_faults": _metering_fault_metrics(truth, fault, flagged, reported, hidden,
                                                   clean),
        "false_alarms_by_group": _false_alarm_groups(labels, assets, clean, flagged),
    }


def _metering_fault_metrics(truth, fault, flagged, reported, hidden, clean):
    """Reported and taken-for-hidden counts per labelled metering-fault kind (or None)."""
    if not any("metering_fault" in v for v in truth.values()):
        return None
    out = {}
    for kind in METERING_FAULT_KINDS:
        members = fault == kind
        n = int(members.sum())
        n_reported = int((members & reported).sum())
        n_hidden = int((members & flagged & ~reported).sum())
        out[kind] = {"n": n, "reported": n_reported, "reported_rate": _ratio(n_reported, n),
                     "flagged_hidden": n_hidden, "flagged_hidden_rate": _ratio(n_hidden, n)}
    n_clean_reported = int((clean & reported).sum())
    out["clean_reported"] = n_clean_reported
    out["clean_reported_rate"] = _ratio(n_clean_reported, int(clean.sum()))
    out["hidden_reported"] = int((hidden & reported).sum())
    return out


def _false_alarm_groups(labels, assets, clean, flagged):
    """False alarms among clean transformers touched by mismapping or an outage (or None)."""
    meters = labels["meters"].values()
    truth = labels["transformers"]
    groups = {}
    if any(col.LISTED_TRANSFORMER_ID in m for m in meters):
        touched = set()
        for m in meters:  # one pass over the labelled meters
            listed = m.get(col.LISTED_TRANSFORMER_ID) or m[col.TRANSFORMER_ID]
            if listed != m[col.TRANSFORMER_ID]:
                touched.update((listed, m[col.TRANSFORMER_ID]))
        affected = pd.Series(assets.isin(list(touched)), index=assets)
        groups["mismap_affected"] = affected
        groups["mismap_unaffected"] = ~affected
    if any("scada_outage" in v for v in truth.values()):
        groups["scada_outage"] = pd.Series([bool(truth[a].get("scada_outage")) for a in assets],
                                           index=assets)
    if not groups:
        return None
    out = {}
    for name, members in groups.items():
        members = members & clean
        n, n_false = int(members.sum()), int((members & flagged).sum())
        out[name] = {"n": n, "false_alarms": n_false, "false_alarm_rate": _ratio(n_false, n)}
    return out


def evaluate_topology(topology, labels, *, assets=None) -> dict:
    """Metrics of ``topology.csv`` (meters whose listed transformer is doubtful).

    Parameters
    ----------
    topology : pandas.DataFrame or str or os.PathLike
        ``topology.csv`` as a frame (text columns, as the CLI reads it; may
        have no rows) or its path (an empty file means no meter listed).
        ``meter_id`` is required; ``likely_transformer_id`` is used when
        present.
    labels : dict or str or os.PathLike
        Labels from :func:`gridwatch.simulate.simulate_dataset` or the path
        of ``labels.json``; a meter without ``listed_transformer_id`` is
        listed under its true transformer.
    assets : sequence of str, optional
        Transformers with upstream data (the ``asset_id`` of
        ``transformers.csv``): false listings are counted over the
        correctly mapped meters listed under them. Default: every labelled
        transformer.

    Returns
    -------
    dict
        JSON-serialisable; a rate with an empty denominator is None.

        - ``n_mismapped``; ``found`` and ``recall``: mismapped meters listed
          with their true transformer as ``likely_transformer_id``;
          ``listed`` and ``recall_listed``: listed at all;
        - ``n_correct``, ``false_listings``, ``false_listing_rate``:
          correctly mapped meters (on transformers with upstream data) and
          those listed;
        - ``by_kind``: ``{"swap" | "moved": {"n", "found", "recall",
          "listed"}}`` for the mismapped meters of a swap and the others;
        - ``n_unlabelled``: rows for meters absent from the labels.

    Raises
    ------
    ValueError
        When ``meter_id`` is missing or a meter is listed twice.
    """
    labels = _load_labels(labels)
    topology = _read_table(topology)
    if len(topology.columns) and col.METER_ID not in topology.columns:
        raise ValueError(f"topology has no '{col.METER_ID}' column; "
                         f"columns: {list(topology.columns)}")
    ids = topology[col.METER_ID].astype(str) if len(topology.columns) else pd.Series([], dtype=str)
    if ids.duplicated().any():
        raise ValueError(f"topology lists meter {ids[ids.duplicated()].iloc[0]!r} twice")
    likely_col = (topology[col.LIKELY_TRANSFORMER_ID] if col.LIKELY_TRANSFORMER_ID in topology.columns
                  else pd.Series("", index=topology.index, dtype=object))
    likely_of = pd.Series(likely_col.fillna("").astype(str).str.strip().to_numpy(),
                          index=ids.to_numpy(), dtype=object)

    meters = labels["meters"]
    index = pd.Index([str(m) for m in meters], dtype=object)
    true = pd.Series([str(v[col.TRANSFORMER_ID]) for v in meters.values()], index=index)
    listed_tx = pd.Series([str(v.get(col.LISTED_TRANSFORMER_ID) or v[col.TRANSFORMER_ID])
                           for v in meters.values()], index=index)
    swap = pd.Series([bool(v.get("swap")) for v in meters.values()], index=index)
    mismapped = listed_tx != true
    listed = index.isin(likely_of.index)
    likely = likely_of.reindex(index).fillna("")
    found = mismapped & listed & (likely == true)
    upstream = list(labels["transformers"]) if assets is None else [str(a) for a in assets]
    correct = ~mismapped & listed_tx.isin(upstream)

    by_kind = {}
    for name, members in (("swap", mismapped & swap), ("moved", mismapped & ~swap)):
        n, n_found = int(members.sum()), int((members & found).sum())
        by_kind[name] = {"n": n, "found": n_found, "recall": _ratio(n_found, n),
                         "listed": int((members & listed).sum())}
    n_mis, n_correct = int(mismapped.sum()), int(correct.sum())
    n_found, n_listed = int(found.sum()), int((mismapped & listed).sum())
    n_false = int((correct & listed).sum())
    return {
        "n_mismapped": n_mis,
        "found": n_found,
        "recall": _ratio(n_found, n_mis),
        "listed": n_listed,
        "recall_listed": _ratio(n_listed, n_mis),
        "n_correct": n_correct,
        "false_listings": n_false,
        "false_listing_rate": _ratio(n_false, n_correct),
        "by_kind": by_kind,
        "n_unlabelled": int((~likely_of.index.isin(index)).sum()),
    }


def _format_transformers(t) -> list[str]:
    lines = [
        f"{'transformers':<34}{'found':>7}{'of':>7}{'rate':>8}",
        f"  {'hidden loads':<32}{t['detected']:>7}{t['n_hidden']:>7}{_fmt(t['recall']):>8}",
    ]
    for k, v in t["by_kind"].items():
        lines.append(f"  {'  ' + k:<32}{v['detected']:>7}{v['n_hidden']:>7}{_fmt(v['recall']):>8}")
    if "n_hidden_ge_1kw" in t:
        lines.append(f"  {'  >= 1 kW':<32}{t['detected_ge_1kw']:>7}{t['n_hidden_ge_1kw']:>7}"
                     f"{_fmt(t['recall_ge_1kw']):>8}")
    lines.append(f"  {'clean, flagged (false alarms)':<32}{t['false_alarms']:>7}{t['n_clean']:>7}"
                 f"{_fmt(t['false_alarm_rate'], 3):>8}")
    names = {"mismap_affected": "touched by a mismapped meter",
             "mismap_unaffected": "not touched by one", "scada_outage": "with a SCADA outage"}
    for key, v in (t.get("false_alarms_by_group") or {}).items():
        lines.append(f"  {'  ' + names[key]:<32}{v['false_alarms']:>7}{v['n']:>7}"
                     f"{_fmt(v['false_alarm_rate'], 3):>8}")
    lines += [
        f"  {'culprit in top 3 suspects':<32}{t['n_culprit_in_top3']:>7}{t['detected']:>7}"
        f"{_fmt(t['culprit_in_top3']):>8}",
    ]
    for k, v in t["by_kind"].items():
        lines.append(f"  {'  ' + k:<32}{v['n_culprit_in_top3']:>7}{v['detected']:>7}"
                     f"{_fmt(v['culprit_in_top3']):>8}")
    lines += [
        f"  culprit listed {_fmt(t['culprit_in_suspects'])}, first {_fmt(t['culprit_first'])}",
        f"  onset within 1 day {_fmt(t['onset_within_1d'])} (n={t['n_onset_scored']}); "
        f"unexplained kW rel. error {_fmt(t['unexplained_kw_median_rel_error'], 3)} "
        f"(median, n={t['n_kw_scored']})",
    ]
    faults = t.get("metering_faults")
    if faults:
        lines += ["", f"{'metering faults':<34}{'labelled':>9}{'as fault':>10}{'as hidden':>11}"]
        for key, label in (("ct_ratio", "CT ratio change"), ("clock_offset", "clock offset")):
            v = faults[key]
            lines.append(f"  {label:<32}{v['n']:>9}{v['reported']:>10}{v['flagged_hidden']:>11}")
        lines.append(f"  reported as a metering fault: {faults['clean_reported']} clean "
                     f"transformers, {faults['hidden_reported']} hidden loads")
    return lines


def _format_topology(t) -> list[str]:
    lines = [
        f"{'topology (mismapped meters)':<34}{'found':>7}{'of':>7}{'rate':>8}",
        f"  {'likely = true transformer':<32}{t['found']:>7}{t['n_mismapped']:>7}"
        f"{_fmt(t['recall']):>8}",
    ]
    for key, label in (("swap", "  in a swap"), ("moved", "  moved")):
        v = t["by_kind"][key]
        if v["n"]:
            lines.append(f"  {label:<32}{v['found']:>7}{v['n']:>7}{_fmt(v['recall']):>8}")
    lines += [
        f"  {'listed at all':<32}{t['listed']:>7}{t['n_mismapped']:>7}"
        f"{_fmt(t['recall_listed']):>8}",
        f"  {'correctly mapped, listed':<32}{t['false_listings']:>7}{t['n_correct']:>7}"
        f"{_fmt(t['false_listing_rate'], 3):>8}",
    ]
    return lines


def _read_table(table) -> pd.DataFrame:
    """A run's CSV table as text columns (a frame is returned as is; an empty file has no rows)."""
    if isinstance(table, pd.DataFrame):
        return table
    try:
        return pd.read_csv(table, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _load_labels(labels) -> dict:
    if isinstance(labels, dict):
        return labels
    with Path(labels).open(encoding="utf-8") as handle:
        return json.load(handle)


def _to_bool(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(bool)
    text = values.astype("string").fillna("").str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        raise ValueError(f"flagged must be true/false; got {values[bad].iloc[0]!r}")
    return text.isin(_TRUE).astype(bool)


def _to_dates(values) -> pd.Series:
    """``YYYY-MM-DD`` strings (or dates, timestamps, None, NaN, "") to datetime64."""
    text = pd.Series(values).astype("string").str.strip().str.slice(0, 10)
    text = text.where(text.str.len() == 10)
    return pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")


def _ratio(num: int, den: int):
    return None if den == 0 else float(num) / float(den)


def _median(values):
    values = pd.Series(values, dtype="float64").dropna()
    return None if values.empty else float(values.median())


def _fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
