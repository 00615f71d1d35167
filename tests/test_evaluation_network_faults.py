"""Evaluation of metering faults, mismapped meters and topology.csv on hand-built tables.

Every expected number is counted by hand from the fixtures below.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from gridwatch import columns as col
from gridwatch.cli import main
from gridwatch.evaluation import (
    evaluate,
    evaluate_topology,
    evaluate_transformers,
    format_evaluation,
)


def _meter(tx, listed=None, type_="normal", swap_with=None):
    listed = tx if listed is None else listed
    return {"type": type_, "onset": None, "rig_kw": None, "transformer_id": tx,
            "listed_transformer_id": listed, "mismapped": listed != tx,
            "swap": swap_with is not None, "swap_with": swap_with}


def _tx(hidden_kw=None, culprit=None, fault=None, outage=None):
    return {"hidden_kw": hidden_kw, "onset": "2026-03-10" if hidden_kw else None,
            "culprit": culprit, "bypass_kind": "separate_line" if hidden_kw else None,
            "metering_fault": fault, "scada_outage": outage}


CT = {"kind": "ct_ratio", "factor": 1.08, "start": "2026-03-12T10:15", "date": "2026-03-12"}


@pytest.fixture
def labels():
    meters = {
        "N1": _meter("T1"), "N2": _meter("T1"), "N3": _meter("T1"), "N4": _meter("T4"),
        "M1": _meter("T1", "T2"),  # moved
        "M2": _meter("T4", "T1"),  # moved (T4 is touched by it)
        "S1": _meter("T2", "T3", swap_with="S2"), "S2": _meter("T3", "T2", swap_with="S1"),
        "Z1": _meter("T12"),  # a transformer without upstream data in the run
        "B1": _meter("T8", type_="bypass"), "B2": _meter("T9", type_="bypass"),
    }
    transformers = {
        "T1": _tx(), "T2": _tx(), "T3": _tx(), "T4": _tx(),
        "T5": _tx(fault=CT), "T6": _tx(fault={**CT, "factor": 0.9}),
        "T7": _tx(fault={"kind": "clock_offset", "hours": 1}),
        "T8": _tx(2.0, "B1"), "T9": _tx(0.5, "B2"),
        "T10": _tx(outage={"start": "2026-03-05T04:00", "hours": 72}),
        "T11": _tx(), "T12": _tx(),
    }
    return {"as_of": "2026-03-31", "timezone": "UTC", "seed": 0, "n_meters": len(meters),
            "days": 30, "meters": meters, "transformers": transformers, "dirty": {},
            "network_faults": {"ct_ratio": 2, "clock_offset": 1, "scada_outage": 1,
                               "mismapped": 4, "swapped": 2, "swap_pairs": 1}}


@pytest.fixture
def table():
    """transformers.csv as the CLI reads it (text); T12 has no upstream data."""
    rows = [
        ("T1", "false", ""),
        ("T2", "true", "hidden_load"),  # clean, touched by mismapping: false alarm
        ("T3", "false", ""),
        ("T4", "false", ""),  # touched by M2
        ("T5", "true", "metering_fault"),  # CT change reported as such
        ("T6", "true", "hidden_load"),  # CT change taken for a hidden load
        ("T7", "false", "metering_fault"),  # clock offset reported, not flagged
        ("T8", "true", "hidden_load"),  # 2 kW hidden load found
        ("T9", "false", ""),  # 0.5 kW hidden load missed
        ("T10", "true", "hidden_load"),  # clean with an outage: false alarm
        ("T11", "true", "metering_fault"),  # clean reported as a metering fault
    ]
    frame = pd.DataFrame(rows, columns=[col.ASSET_ID, col.FLAGGED, col.KIND])
    return frame.assign(**{col.UNEXPLAINED_KW: "", col.ONSET: "", col.SUSPECTS: ""})


@pytest.fixture
def topology():
    return pd.DataFrame({
        col.METER_ID: ["M1", "S1", "N1", "Z1", "X9"],
        "listed_transformer_id": ["T2", "T3", "T1", "T12", "T5"],
        "likely_transformer_id": ["T1", "T4", "T2", "T1", "T6"],  # M1 right, S1 wrong
        "evidence": "", "confidence": "0.8",
    })


def _flags(labels):
    return pd.DataFrame({col.METER_ID: list(labels["meters"]), col.FLAGGED: "false",
                         col.RANK: range(1, len(labels["meters"]) + 1)})


def test_evaluate_metering_faults_reported_and_taken_for_hidden_loads(labels, table):
    t = evaluate_transformers(table, labels)
    assert t["metering_faults"] == {
        "ct_ratio": {"n": 2, "reported": 1, "reported_rate": 0.5, "flagged_hidden": 1,
                     "flagged_hidden_rate": 0.5},
        "clock_offset": {"n": 1, "reported": 1, "reported_rate": 1.0, "flagged_hidden": 0,
                         "flagged_hidden_rate": 0.0},
        "clean_reported": 1, "clean_reported_rate": pytest.approx(1 / 7), "hidden_reported": 0,
    }
    # Without a kind column every flagged fault is taken for a hidden load.
    t = evaluate_transformers(table.drop(columns=col.KIND), labels)
    assert t["metering_faults"]["ct_ratio"]["reported"] == 0
    assert t["metering_faults"]["ct_ratio"]["flagged_hidden"] == 2
    assert t["metering_faults"]["clock_offset"]["flagged_hidden"] == 0


def test_evaluate_clean_false_alarms_leave_metering_faults_out(labels, table):
    t = evaluate_transformers(table, labels)
    # Clean: T1 T2 T3 T4 T10 T11 T12 (T12 absent: not flagged); flagged T2 T10 T11.
    assert (t["n_clean"], t["false_alarms"]) == (7, 3)
    assert t["false_alarm_rate"] == pytest.approx(3 / 7)
    # Hidden loads: T8 found, T9 (0.5 kW) missed; of at least 1 kW: T8 only.
    assert (t["n_hidden"], t["detected"], t["recall"]) == (2, 1, 0.5)
    assert (t["n_hidden_ge_1kw"], t["detected_ge_1kw"], t["recall_ge_1kw"]) == (1, 1, 1.0)


def test_evaluate_false_alarms_on_transformers_touched_by_mismapping(labels, table):
    groups = evaluate_transformers(table, labels)["false_alarms_by_group"]
    # Touched (listed or true transformer of M1, M2, S1, S2): T1 T2 T3 T4, all clean; T2 flagged.
    # Not touched, clean: T10 T11 T12; T10 and T11 flagged. Outage: T10, flagged.
    assert groups == {
        "mismap_affected": {"n": 4, "false_alarms": 1, "false_alarm_rate": 0.25},
        "mismap_unaffected": {"n": 3, "false_alarms": 2, "false_alarm_rate": pytest.approx(2 / 3)},
        "scada_outage": {"n": 1, "false_alarms": 1, "false_alarm_rate": 1.0},
    }


def test_evaluate_topology_recall_and_false_listings(labels, topology):
    t = evaluate_topology(topology, labels, assets=[f"T{i}" for i in range(1, 12)])
    # Mismapped M1 M2 S1 S2: M1 listed with its true transformer, S1 listed with a wrong one.
    assert (t["n_mismapped"], t["found"], t["recall"]) == (4, 1, 0.25)
    assert (t["listed"], t["recall_listed"]) == (2, 0.5)
    # Correctly mapped on transformers with upstream: N1-N4, B1, B2 (Z1's T12 has none); N1.
    assert (t["n_correct"], t["false_listings"]) == (6, 1)
    assert t["false_listing_rate"] == pytest.approx(1 / 6)
    assert t["by_kind"] == {"swap": {"n": 2, "found": 0, "recall": 0.0, "listed": 1},
                            "moved": {"n": 2, "found": 1, "recall": 0.5, "listed": 1}}
    assert t["n_unlabelled"] == 1
    # Without a list of upstream assets every labelled transformer counts: Z1 too.
    t = evaluate_topology(topology, labels)
    assert (t["n_correct"], t["false_listings"]) == (7, 2)


def test_evaluate_topology_from_files_and_empty_files(labels, topology, tmp_path):
    path = tmp_path / "topology.csv"
    topology.to_csv(path, index=False)
    assert evaluate_topology(path, labels) == evaluate_topology(topology, labels)
    path.write_text("")  # no meter listed
    empty = evaluate_topology(path, labels)
    assert (empty["found"], empty["listed"], empty["false_listings"]) == (0, 0, 0)
    assert empty["recall"] == 0.0 and empty["n_mismapped"] == 4
    path.write_text("meter_id,listed_transformer_id,likely_transformer_id,evidence,confidence\n")
    assert evaluate_topology(path, labels) == empty
    with pytest.raises(ValueError, match="twice"):
        evaluate_topology(pd.concat([topology, topology.iloc[:1]]), labels)
    with pytest.raises(ValueError, match="meter_id"):
        evaluate_topology(pd.DataFrame({"x": ["1"]}), labels)


def test_evaluate_passes_the_run_assets_to_topology(labels, table, topology):
    m = evaluate(_flags(labels), labels, transformers=table, topology=topology)
    assert m["topology"]["n_correct"] == 6  # T12 is not in transformers.csv
    assert m["transformers"]["metering_faults"]["ct_ratio"]["n"] == 2
    json.dumps(m, allow_nan=False)
    text = format_evaluation(m)
    lines = text.splitlines()

    def row(label):
        return next(line.split()[-3:] for line in lines if line.strip().startswith(label))

    assert row("CT ratio change") == ["2", "1", "1"]
    assert row("clock offset") == ["1", "1", "0"]
    assert row(">= 1 kW") == ["1", "1", "1.00"]
    assert row("touched by a mismapped meter") == ["1", "4", "0.250"]
    assert row("with a SCADA outage") == ["1", "1", "1.000"]
    assert row("likely = true transformer") == ["1", "4", "0.25"]
    assert row("listed at all") == ["2", "4", "0.50"]
    assert row("correctly mapped, listed") == ["1", "6", "0.167"]
    assert "1 clean transformers, 0 hidden loads" in text
    assert max(len(line) for line in lines) <= 100


def test_evaluate_old_labels_have_no_network_fault_lines(labels, table):
    old = json.loads(json.dumps(labels))
    del old["network_faults"]
    for v in old["meters"].values():
        for key in ("listed_transformer_id", "mismapped", "swap", "swap_with"):
            del v[key]
    for v in old["transformers"].values():
        del v["metering_fault"], v["scada_outage"]
    t = evaluate_transformers(table, old)
    assert t["metering_faults"] is None and t["false_alarms_by_group"] is None
    # Clean keeps its meaning: every transformer without a hidden load (T5-T7 included).
    assert (t["n_clean"], t["false_alarms"]) == (10, 5)
    text = format_evaluation(evaluate(_flags(old), old, transformers=table))
    assert "metering faults" not in text and "topology" not in text
    assert "touched by a mismapped meter" not in text


def test_evaluate_cli_reads_topology_csv(labels, table, topology, tmp_path):
    run, label_path = tmp_path / "run", tmp_path / "labels.json"
    run.mkdir()
    _flags(labels).to_csv(run / "flags.csv", index=False)
    table.to_csv(run / "transformers.csv", index=False)
    label_path.write_text(json.dumps(labels))
    runner = CliRunner()
    # No topology.csv beside transformers.csv: the run listed no meter.
    result = runner.invoke(main, ["evaluate", str(run), str(label_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["topology"]["found"] == 0
    topology.to_csv(run / "topology.csv", index=False)
    result = runner.invoke(main, ["evaluate", str(run), str(label_path), "--json"])
    m = json.loads(result.output)
    assert (m["topology"]["found"], m["topology"]["n_correct"]) == (1, 6)
    result = runner.invoke(main, ["evaluate", str(run), str(label_path)])
    assert "topology (mismapped meters)" in result.output and "CT ratio change" in result.output
