"""Evaluation metrics on hand-built flags and labels whose answers are computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.evaluation import (
    evaluate,
    evaluate_transformers,
    flag_frame,
    format_evaluation,
    label_frame,
)

AS_OF = "2026-03-31"


def _meter(type_, onset=None, rig_kw=None, transformer_id="T1"):
    return {"type": type_, "onset": onset, "rig_kw": rig_kw, "transformer_id": transformer_id}


@pytest.fixture
def labels():
    meters = {
        "R1": _meter("rig", "2026-03-20", 3.25),  # age 11
        "R2": _meter("rig", "2026-03-29", 1.35),  # age 2
        "R3": _meter("rig", "2026-03-31", 2.0),  # age 0 (onset on the as-of day)
        "R4": _meter("rig", "2026-03-01", 4.0),  # age 30
        "P1": _meter("rig_preexisting", None, 2.7),
        "B1": _meter("bypass", "2026-03-10", 3.0, "T2"),
        "B2": _meter("bypass", "2026-03-15", 2.0, "T3"),
        "E1": _meter("ev_charging", "2026-03-15"),
        "E2": _meter("ev_charging", "2026-03-16"),
        "S1": _meter("suppressed_licensed"),
        "F1": _meter("frozen_meter", "2026-03-12"),
    }
    meters.update({f"H{i}": _meter("night_storage_heating") for i in range(1, 5)})
    meters.update({f"N{i:02d}": _meter("normal") for i in range(1, 11)})
    transformers = {
        "T1": {"hidden_kw": None, "onset": None, "culprit": None},
        "T2": {"hidden_kw": 3.0, "onset": "2026-03-10", "culprit": "B1"},
        "T3": {"hidden_kw": 2.0, "onset": "2026-03-15", "culprit": "B2"},
        "T4": {"hidden_kw": None, "onset": None, "culprit": None},
    }
    return {"as_of": AS_OF, "timezone": "UTC", "seed": 0, "n_meters": len(meters), "days": 60,
            "meters": meters, "transformers": transformers, "dirty": {}}


def _row(meter_id, rank, flagged, kind="", onset="", excess_kw=np.nan):
    return {col.METER_ID: meter_id, col.TRANSFORMER_ID: "T1", col.RANK: rank,
            col.SCORE: 1.0 - rank / 100, col.FLAGGED: flagged, col.KIND: kind, col.ONSET: onset,
            col.EXCESS_KW: excess_kw, col.EXCESS_KWH: np.nan, col.EST_LOSS: np.nan,
            col.REASONS: ""}


@pytest.fixture
def flags(labels):
    vis, hid = col.KIND_VISIBLE, col.KIND_HIDDEN
    rows = [
        _row("R1", 1, True, vis, "2026-03-21", 3.0),  # onset +1 day, size -0.25 kW
        _row("N01", 2, True, vis, "2026-03-02", 0.8),  # false alarm on a normal meter
        _row("R2", 3, True, vis, "2026-03-29", 1.35),  # exact
        _row("B1", 4, True, hid, "2026-03-10", np.nan),  # hidden rig found as such
        _row("H1", 5, True, vis, "", 4.0),
        _row("P1", 6, True, vis, "", 2.97),  # running all window: no onset
        _row("R4", 7, True, vis, "", 5.0),  # found but not dated
        _row("E1", 8, True, vis, "2026-03-15", 7.0),
        _row("H2", 9, True, vis, "", 4.5),
        _row("S1", 10, True, vis, "", 5.0),
        _row("B2", 11, True, vis, "2026-03-15", 0.5),  # bypass flagged as visible: wrong
    ]
    rank = 12
    for meter in labels["meters"]:
        if meter not in {r[col.METER_ID] for r in rows}:
            rows.append(_row(meter, rank, False))
            rank += 1
    frame = pd.DataFrame(rows, columns=list(col.FLAGS_COLUMNS))
    frame[col.FLAGGED] = np.where(frame[col.FLAGGED], "true", "false")  # as in flags.csv
    return frame


def test_recall_by_rig_type_counts_each_behaviour(flags, labels):
    types = {"R1": "crypto_heater", "R2": "crypto_heater", "R3": "gpu_small", "R4": "steady",
             "P1": "intermittent"}
    for meter, rig_type in types.items():
        labels["meters"][meter]["rig_type"] = rig_type
    labels["meters"]["R3"]["rig_kw"] = 0.4
    m = evaluate(flags, labels)
    # found: R1, R2, R4, P1 (see test_recall_by_onset_age); R3 missed
    assert m["recall_by_rig_type"] == {
        "crypto_heater": {"n": 2, "found": 2, "rate": 1.0},
        "gpu_small": {"n": 1, "found": 0, "rate": 0.0},
        "intermittent": {"n": 1, "found": 1, "rate": 1.0},
        "steady": {"n": 1, "found": 1, "rate": 1.0},
    }
    assert m["recall_n"]["<0.5 kW"] == 1 and m["recall"]["<0.5 kW"] == 0.0
    assert "recall by rig type" in format_evaluation(m)


def test_recall_by_onset_age(flags, labels):
    m = evaluate(flags, labels)
    # >=3 days: R1 (age 11) and R4 (age 30) found. 0-2 days: R2 (age 2) found, R3 (age 0)
    # missed. Preexisting: P1 found. Visible overall 4 of 5. Bypass: B1 as hidden, B2 not.
    assert m["recall"][">=3 days"] == pytest.approx(2 / 2)
    assert m["recall"]["0-2 days"] == pytest.approx(1 / 2)
    assert m["recall"]["preexisting"] == pytest.approx(1 / 1)
    assert m["recall"]["overall"] == pytest.approx(4 / 5)
    assert m["recall"]["bypass"] == pytest.approx(1 / 2)
    assert m["recall_n"] == {">=3 days": 2, "0-2 days": 2, "preexisting": 1, "overall": 5,
                             "bypass": 2, ">=0.5 kW, >=3 days": 3, "<0.5 kW": 0}
    # >=0.5 kW and >=3 days old (or running all window): R1, R4, P1, all found
    assert m["recall"][">=0.5 kW, >=3 days"] == pytest.approx(3 / 3)
    assert m["recall_detected"]["overall"] == 4


def test_false_alarm_rate_per_type(flags, labels):
    m = evaluate(flags, labels)
    far = m["false_alarm_rate"]
    assert far["normal"] == pytest.approx(1 / 10)  # N01
    assert far["ev_charging"] == pytest.approx(1 / 2)  # E1 of E1, E2
    assert far["night_storage_heating"] == pytest.approx(2 / 4)  # H1, H2
    assert far["suppressed_licensed"] == pytest.approx(1 / 1)
    assert far["frozen_meter"] == pytest.approx(0 / 1)
    assert far["bypass"] == pytest.approx(1 / 2)  # B2 flagged as visible_load
    # Negatives: 10 normal + 2 EV + 4 storage + 1 licensed + 1 frozen = 18; 5 flagged.
    assert far["all_negatives"] == pytest.approx(5 / 18)
    assert "rig" not in far and "rig_preexisting" not in far
    assert m["false_alarm_n"]["night_storage_heating"] == 2
    assert m["counts"]["night_storage_heating"] == {"n": 4, "flagged": 2}
    assert m["counts"]["rig"] == {"n": 4, "flagged": 3}
    assert m["counts"]["bypass"] == {"n": 2, "flagged": 2}


def test_precision_and_precision_at_k(flags, labels):
    m = evaluate(flags, labels)
    # Flagged: R1 N01 R2 B1 H1 P1 R4 E1 H2 S1 B2 = 11; hits R1 R2 B1 P1 R4 = 5.
    assert m["n_flagged"] == 11
    assert m["precision"] == pytest.approx(5 / 11)
    # k defaults to the positives: 4 rigs + 1 preexisting + 2 bypass = 7.
    # Ranks 1-7: R1 N01 R2 B1 H1 P1 R4 -> 5 hits.
    assert m["k"] == 7
    assert m["precision_at_k"] == pytest.approx(5 / 7)
    m3 = evaluate(flags, labels, k=3)  # R1 N01 R2
    assert m3["k"] == 3 and m3["precision_at_k"] == pytest.approx(2 / 3)


def test_precision_at_k_follows_rank_not_file_order(flags, labels):
    shuffled = flags.sample(frac=1.0, random_state=np.random.RandomState(0))
    m = evaluate(shuffled, labels, k=3)
    assert m["precision_at_k"] == pytest.approx(2 / 3)


def test_onset_within_one_day_and_median_error(flags, labels):
    m = evaluate(flags, labels)
    # Detected rigs with a labelled onset: R1 (+1 day), R2 (0), R4 (no flag onset: a miss).
    assert m["n_onset_scored"] == 3
    assert m["onset_within_1d"] == pytest.approx(2 / 3)
    assert m["onset_median_abs_error_days"] == pytest.approx(0.5)  # median of |1|, |0|
    assert m["onset_median_error_days"] == pytest.approx(0.5)


def test_excess_kw_relative_error(flags, labels):
    m = evaluate(flags, labels)
    # Detected visible rigs: R1 |3.0-3.25|/3.25, R2 0, R4 |5-4|/4, P1 |2.97-2.7|/2.7.
    errors = sorted([0.25 / 3.25, 0.0, 1.0 / 4.0, 0.27 / 2.7])
    assert m["n_kw_scored"] == 4
    assert m["excess_kw_median_rel_error"] == pytest.approx((errors[1] + errors[2]) / 2)


def test_flag_formats_bool_strings_and_missing_onsets(flags, labels):
    as_bool = flags.assign(**{col.FLAGGED: flags[col.FLAGGED] == "true"})
    as_nan = flags.assign(**{col.ONSET: flags[col.ONSET].replace("", np.nan)})
    reference = evaluate(flags, labels)
    assert evaluate(as_bool, labels) == reference
    assert evaluate(as_nan, labels) == reference
    shouting = flags.assign(**{col.FLAGGED: flags[col.FLAGGED].str.upper()})
    assert evaluate(shouting, labels) == reference
    normalised = flag_frame(flags)
    assert normalised[col.FLAGGED].dtype == bool
    assert normalised.loc["R1", col.ONSET] == pd.Timestamp("2026-03-21")
    assert pd.isna(normalised.loc["R4", col.ONSET])


def test_files_give_the_same_metrics_and_json(tmp_path, flags, labels):
    flags.to_csv(tmp_path / "flags.csv", index=False)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    m = evaluate(tmp_path / "flags.csv", tmp_path / "labels.json")
    assert m == evaluate(flags, labels)
    json.dumps(m, allow_nan=False)  # plain, JSON-serialisable values


def test_missing_and_unlabelled_meters(flags, labels):
    partial = flags[flags[col.METER_ID] != "R1"]  # R1 not analysed: counts as missed
    extra = pd.DataFrame([_row("X9", 99, "true", col.KIND_VISIBLE)])
    m = evaluate(pd.concat([partial, extra], ignore_index=True), labels)
    assert m["n_not_scored"] == 1 and m["n_unlabelled_flags"] == 1
    assert m["recall"][">=3 days"] == pytest.approx(1 / 2)
    # Flagged: 10 labelled (R1 gone) + X9 = 11; hits R2 B1 P1 R4 = 4.
    assert m["precision"] == pytest.approx(4 / 11)


def test_empty_denominators_are_none(labels):
    only_normal = {**labels, "meters": {"N1": _meter("normal"), "N2": _meter("normal")}}
    flags = pd.DataFrame([_row("N1", 1, "false"), _row("N2", 2, "false")])
    m = evaluate(flags, only_normal)
    assert m["recall"]["overall"] is None and m["precision"] is None
    assert m["precision_at_k"] is None and m["k"] == 0
    assert m["onset_within_1d"] is None and m["excess_kw_median_rel_error"] is None
    assert m["false_alarm_rate"]["normal"] == 0.0
    text = format_evaluation(m)
    assert "all visible rigs" in text and " -" in text


def test_bad_flagged_value_is_refused(flags, labels):
    bad = flags.assign(**{col.FLAGGED: flags[col.FLAGGED].replace("true", "maybe")})
    with pytest.raises(ValueError, match="maybe"):
        evaluate(bad, labels)
    with pytest.raises(ValueError, match="twice"):
        evaluate(pd.concat([flags, flags.iloc[:1]]), labels)


def test_transformer_metrics(flags, labels):
    tf = pd.DataFrame({
        col.ASSET_ID: ["T1", "T2", "T3", "T4", "F001"],
        col.FLAGGED: ["true", "true", "false", "true", "true"],
        col.UNEXPLAINED_KW: [0.5, 3.1, 0.2, 1.0, 9.0],
        col.ONSET: ["", "2026-03-10", "", "2026-03-01", ""],
        col.SUSPECTS: ["", "M7;B1", "", "", ""],
    })
    t = evaluate(flags, labels, transformers=tf)["transformers"]
    # Hidden T2 (found, culprit second), T3 (missed); clean T1, T4 both flagged; F001 ignored.
    expected = {"n_hidden": 2, "detected": 1, "recall": 0.5, "n_clean": 2, "false_alarms": 2,
                "false_alarm_rate": 1.0, "culprit_in_suspects": 1.0, "culprit_first": 0.0,
                "n_culprit_in_top3": 1, "culprit_in_top3": 1.0, "n_kw_scored": 1,
                "onset_within_1d": 1.0, "n_onset_within_1d": 1, "n_onset_scored": 1}
    assert {k: t[k] for k in expected} == expected
    assert t["unexplained_kw_median_rel_error"] == pytest.approx(0.1 / 3.0)
    # Labels written before bypass kinds existed: one group.
    assert list(t["by_kind"]) == ["unspecified"]
    assert t["by_kind"]["unspecified"]["n_hidden"] == 2


@pytest.fixture
def kind_labels(labels):
    clean = {"hidden_kw": None, "onset": None, "culprit": None, "bypass_kind": None}

    def hidden(kw, onset, culprit, kind):
        return {"hidden_kw": kw, "onset": onset, "culprit": culprit, "bypass_kind": kind}

    transformers = {
        "T1": clean, "T4": clean, "T5": clean,
        "T2": hidden(3.0, "2026-03-10", "B1", "whole_house"),
        "T3": hidden(2.0, "2026-03-15", "B2", "partial"),
        "T6": hidden(4.0, "2026-03-20", "M9", "separate_line"),
        "T7": hidden(1.0, "2026-03-01", "M8", "partial"),
    }
    return {**labels, "transformers": transformers}


@pytest.fixture
def kind_table():
    # All text, as the CLI reads transformers.csv. T5 is absent (not flagged).
    return pd.DataFrame({
        col.ASSET_ID: ["T1", "T4", "T2", "T3", "T6", "T7", "F001"],
        col.FLAGGED: ["false", "true", "true", "true", "true", "false", "true"],
        col.UNEXPLAINED_KW: ["0", "1.2", "3.3", "1.5", "4.0", "0", "9"],
        col.ONSET: ["", "2026-03-05", "2026-03-11", "2026-03-13", "", "", ""],
        col.SUSPECTS: ["", "M1", "B1;M7", "M1;M2;M3;B2", "", "", ""],
    })


def test_transformer_metrics_per_bypass_kind(flags, kind_labels, kind_table, tmp_path):
    t = evaluate(flags, kind_labels, transformers=kind_table)["transformers"]
    # Hidden: T2 T3 T6 found, T7 missed. Clean: T4 flagged, T1 not, T5 absent.
    assert (t["n_hidden"], t["detected"], t["recall"]) == (4, 3, 0.75)
    assert (t["n_clean"], t["false_alarms"]) == (3, 1)
    assert t["false_alarm_rate"] == pytest.approx(1 / 3)
    # Culprit: T2 first, T3 fourth (listed, not top 3), T6 not listed.
    assert t["culprit_in_suspects"] == pytest.approx(2 / 3)
    assert t["culprit_first"] == pytest.approx(1 / 3)
    assert t["n_culprit_in_top3"] == 1 and t["culprit_in_top3"] == pytest.approx(1 / 3)
    # kW: |3.3-3|/3 = 0.1, |1.5-2|/2 = 0.25, |4-4|/4 = 0 -> median 0.1.
    assert t["n_kw_scored"] == 3
    assert t["unexplained_kw_median_rel_error"] == pytest.approx(0.1)
    # Onset: T2 +1 day (within), T3 -2 days, T6 none (a miss).
    assert (t["n_onset_scored"], t["n_onset_within_1d"]) == (3, 1)
    assert t["onset_within_1d"] == pytest.approx(1 / 3)
    assert t["by_kind"] == {
        "partial": {"n_hidden": 2, "detected": 1, "recall": 0.5, "n_culprit_in_top3": 0,
                    "culprit_in_top3": 0.0, "n_culprit_first": 0, "culprit_first": 0.0},
        "separate_line": {"n_hidden": 1, "detected": 1, "recall": 1.0, "n_culprit_in_top3": 0,
                          "culprit_in_top3": 0.0, "n_culprit_first": 0, "culprit_first": 0.0},
        "whole_house": {"n_hidden": 1, "detected": 1, "recall": 1.0, "n_culprit_in_top3": 1,
                        "culprit_in_top3": 1.0, "n_culprit_first": 1, "culprit_first": 1.0},
    }
    # Same answer from the file, with typed columns, and as plain JSON.
    kind_table.to_csv(tmp_path / "transformers.csv", index=False)
    assert evaluate_transformers(tmp_path / "transformers.csv", kind_labels) == t
    typed = kind_table.assign(**{col.FLAGGED: kind_table[col.FLAGGED] == "true",
                                 col.UNEXPLAINED_KW: kind_table[col.UNEXPLAINED_KW].astype(float)})
    assert evaluate_transformers(typed, kind_labels) == t
    json.dumps(t, allow_nan=False)


def test_transformer_metrics_without_detections_are_none(kind_labels):
    table = pd.DataFrame({col.ASSET_ID: ["T2"], col.FLAGGED: ["false"]})
    t = evaluate_transformers(table, kind_labels)
    assert t["detected"] == 0 and t["recall"] == 0.0 and t["false_alarm_rate"] == 0.0
    assert t["culprit_in_top3"] is None and t["unexplained_kw_median_rel_error"] is None
    assert t["onset_within_1d"] is None
    with pytest.raises(ValueError, match="asset_id"):
        evaluate_transformers(pd.DataFrame({"x": [1]}), kind_labels)


def test_format_evaluation_shows_transformer_metrics(flags, kind_labels, kind_table):
    text = format_evaluation(evaluate(flags, kind_labels, transformers=kind_table))
    lines = text.splitlines()
    assert any(line.split()[:2] == ["hidden", "loads"] and line.split()[-3:] == ["3", "4", "0.75"]
               for line in lines)
    assert any(line.split()[:1] == ["whole_house"] for line in lines)
    assert any("culprit in top 3 suspects" in line and line.split()[-3:] == ["1", "3", "0.33"]
               for line in lines)
    assert "unexplained kW rel. error 0.10" in text and "onset within 1 day 0.33" in text
    assert max(len(line) for line in lines) <= 100


def test_label_frame_ages(labels):
    frame = label_frame(labels)
    assert frame.loc["R3", "age_days"] == 0 and frame.loc["R1", "age_days"] == 11
    assert np.isnan(frame.loc["P1", "age_days"]) and pd.isna(frame.loc["P1", col.ONSET])
    assert frame.loc["B1", col.TRANSFORMER_ID] == "T2"


def test_format_evaluation_is_a_readable_table(flags, labels):
    text = format_evaluation(evaluate(flags, labels))
    lines = text.splitlines()
    assert lines[0].startswith("evaluation as of 2026-03-31: 25 meters, 11 flagged")
    assert "precision 0.45   precision@7 0.71" in text
    assert any(line.split()[:2] == ["night_storage_heating", "2"] for line in lines)
    assert any("rigs, onset 0-2 days ago" in line and line.split()[-3:] == ["1", "2", "0.50"]
               for line in lines)
    assert "onset within 1 day      0.67" in text
    assert max(len(line) for line in lines) <= 100
