"""report.html: the metering faults and the meters on the wrong transformer (issue 13).

One run on a simulated dataset with labelled network faults (a CT ratio
change, a SCADA clock offset, meters listed under a sibling transformer),
one on a dataset without any; the report's sections are checked against the
simulator's labels and against the CSV files the run wrote.
"""

from __future__ import annotations

import copy
import html
import json
import re

import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.config import config_from_dict
from gridwatch.pipeline import run
from gridwatch.report import html as report_html
from gridwatch.report.html import render_report
from gridwatch.simulate import simulate_dataset

#: Seed of a 300-meter, 35-day dataset whose run finds both labelled metering
#: faults (a clock offset and a ratio change) and several mismapped meters.
FAULT_SEED = 3
EVIL = '<script>alert(1)</script>" onmouseover="x'


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("network")
    labels = simulate_dataset(root / "in", n_meters=300, days=35, network_faults=True,
                              seed=FAULT_SEED)
    result = run(root / "in", root / "out")
    return result, labels, root / "out"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    simulate_dataset(root / "in", n_meters=150, days=30, seed=3)
    return run(root / "in", root / "out"), root / "out"


def _section(text: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', text, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def _rows(section: str) -> list[list[str]]:
    """The body rows of the first table of a section, as unescaped cell texts."""
    body = re.search(r"<tbody>(.*?)</tbody>", section, re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell))
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def _cards(text: str) -> dict:
    cards = re.findall(r'<div class="label">([^<]*)</div><div class="value">([^<]*)</div>', text)
    return {html.unescape(k): html.unescape(v) for k, v in cards}


def test_metering_faults_are_listed_as_not_theft(faulty):
    result, labels, out = faulty
    text = (out / "report.html").read_text(encoding="utf-8")
    truth = {a: t["metering_fault"] for a, t in labels["transformers"].items() if t["metering_fault"]}
    assert {f["kind"] for f in truth.values()} == {"clock_offset", "ct_ratio"}
    transformers = pd.read_csv(out / "transformers.csv", dtype=str, keep_default_na=False)
    faulty_assets = transformers.loc[transformers[col.KIND] == col.KIND_METERING_FAULT, col.ASSET_ID]
    found = set(faulty_assets) & set(truth)
    assert found, "the run should find a labelled metering fault at this seed"

    rows = {r[0]: r for r in _rows(_section(text, "metering-faults"))}
    assert list(rows) == list(faulty_assets)  # every one, in the order of transformers.csv
    for _, level, what, when, reasons, action in rows.values():
        assert level == "transformer" and what and when
        assert action.startswith("not theft: fix the measurement")
        assert reasons.startswith("metering fault:")
    for asset in found:  # what the report says of each, against the simulator's truth
        fault = truth[asset]
        _, _, what, when, _, _ = rows[asset]
        if fault["kind"] == "clock_offset":
            assert what == "SCADA clock offset"
            assert when.startswith(f"{abs(fault['hours'])} h ")
            assert "corrected" in when
        else:
            factor = float(re.search(r"ratio change \(x([0-9.]+)\)", what).group(1))
            assert factor == pytest.approx(fault["factor"], abs=0.01)
            assert when == f"from {fault['date']}"
    run_json = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert _cards(text)["Metering faults"] == str(run_json["counts"]["metering_faults"]) \
        == str(len(faulty_assets))


def test_doubtful_meters_are_listed_most_confident_first(faulty):
    result, labels, out = faulty
    text = (out / "report.html").read_text(encoding="utf-8")
    topology = pd.read_csv(out / "topology.csv", dtype=str, keep_default_na=False)
    assert len(topology) >= 1
    section = _section(text, "topology")
    rows = _rows(section)
    expected = topology.assign(c=topology[col.CONFIDENCE].astype(float)) \
        .sort_values(["c", col.METER_ID], ascending=[False, True])
    assert [r[0] for r in rows] == list(expected[col.METER_ID])
    for row, ref in zip(rows, expected.to_dict("records"), strict=True):
        assert row[1] == ref[col.LISTED_TRANSFORMER_ID]
        assert row[2] == (ref[col.LIKELY_TRANSFORMER_ID] or "none with upstream data")
        assert row[3] == f"{float(ref[col.CONFIDENCE]):.2f}"
        assert row[4] == ref[col.EVIDENCE]
    # the simulator listed some of them under another transformer on purpose
    assert any(labels["meters"][r[0]]["mismapped"] for r in rows)
    plain = html.unescape(re.sub(r"<[^>]+>", "", section))
    assert "Check the network map" in plain and "balance.use_inferred_topology = true" in plain
    assert "None found" not in plain
    assert _cards(text)["Meters on the wrong transformer?"] == str(len(topology))


def test_transformers_table_shows_the_kinds(faulty):
    result, _, out = faulty
    text = (out / "report.html").read_text(encoding="utf-8")
    rows = {r[0]: r for r in _rows(_section(text, "transformers"))}
    transformers = pd.read_csv(out / "transformers.csv", dtype=str, keep_default_na=False)
    for r in transformers.to_dict("records"):
        kind_cell = rows[r[col.ASSET_ID]][2]
        assert (f"({r[col.KIND]})" in kind_cell) if r[col.KIND] else kind_cell == ""
    assert (transformers[col.KIND] == col.KIND_HIDDEN_LOAD).any()


def test_long_topology_list_is_cut(faulty, monkeypatch):
    result, _, out = faulty
    n = len(result.topology)
    assert n >= 3
    monkeypatch.setattr(report_html, "MAX_TOPOLOGY_ROWS", 2)
    section = _section(render_report(result, out), "topology")
    assert len(_rows(section)) == 2
    assert f"{n - 2:,} more meter(s) with less confidence are in topology.csv" in section


def test_hostile_fault_and_topology_strings_are_escaped(faulty):
    result, _, out = faulty
    hostile = copy.copy(result)
    hostile.topology = result.topology.assign(**{col.EVIDENCE: EVIL, col.METER_ID: EVIL})
    balance = copy.copy(result.balance)
    table = balance.table.copy()
    table.loc[table[col.KIND] == col.KIND_METERING_FAULT, col.REASONS] = EVIL
    balance.table = table
    hostile.balance = balance
    text = render_report(hostile, out)
    assert "<script>alert" not in text and 'onmouseover="' not in text
    assert html.escape(EVIL, quote=True) in _section(text, "topology")
    assert html.escape(EVIL, quote=True) in _section(text, "metering-faults")


def test_inferred_map_is_said(tmp_path):
    simulate_dataset(tmp_path / "in", n_meters=300, days=35, network_faults=True, seed=FAULT_SEED)
    cfg = config_from_dict({"balance": {"use_inferred_topology": True},
                            "report": {"plots": False}})
    result = run(tmp_path / "in", tmp_path / "out", config=cfg)
    dq = result.issues.to_frame()
    moved = dq.loc[dq["code"] == "meters.transformer_inferred", "meter_id"].nunique()
    assert moved >= 1
    plain = html.unescape(re.sub(r"<[^>]+>", "", _section(
        (tmp_path / "out" / "report.html").read_text(encoding="utf-8"), "topology")))
    assert "This run balanced on the inferred map" in plain
    assert f"{moved:,} meter(s) were balanced under their likely transformer" in plain


def test_none_found(clean):
    result, out = clean
    assert not (result.transformers[col.KIND] == col.KIND_METERING_FAULT).any()
    assert len(pd.read_csv(out / "topology.csv")) == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    for section in ("metering-faults", "topology"):
        assert "<p>None found.</p>" in _section(text, section)
    cards = _cards(text)
    assert cards["Metering faults"] == "0" and cards["Meters on the wrong transformer?"] == "0"
