"""report.html: content, figures, embedded images and safety with hostile ids (issue 4)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.pipeline import run
from gridwatch.report.html import anchor_id, write_report
from gridwatch.simulate import simulate_dataset

EVIL_ID = "<script>alert(1)</script>"
EVIL_REASON = 'x" onmouseover="alert(2)'
FORMULA_ID = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def run_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    simulate_dataset(root / "in", n_meters=150, days=30, seed=3)
    return run(root / "in", root / "out")


def _hostile(result):
    """The run with hostile ids and reasons injected into its flagged rows."""
    flags = result.flags.copy()
    flagged = flags.index[flags[col.FLAGGED] == "true"]
    assert len(flagged) >= 3, "the simulated run should flag a few meters"
    flags.loc[flagged[0], col.METER_ID] = EVIL_ID
    flags.loc[flagged[1], col.REASONS] = EVIL_REASON + "; =cmd"
    flags.loc[flagged[2], col.METER_ID] = FORMULA_ID
    result.flags = flags
    return result


@pytest.fixture()
def hostile(run_result):
    import copy

    return _hostile(copy.copy(run_result))


class _Collector(HTMLParser):
    """Every start tag with its attributes, the text of each script, and the page text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self.text = [], [], []
        self._script = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = (dict(attrs), [])

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)
        else:
            self.text.append(data)


def _parse(text):
    p = _Collector()
    p.feed(text)
    p.close()
    return p


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=30)
    plt.close(fig)


def test_report_is_written_with_figures_and_ids(hostile, tmp_path):
    path = write_report(hostile, tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    body = "".join(page.text)

    flags = hostile.flags
    flagged = flags[flags[col.FLAGGED] == "true"]
    for meter in flagged[col.METER_ID]:
        assert meter in body  # decoded text shows the id as written
        assert html.escape(meter, quote=True) in text
    # headline figures, computed independently here
    kwh = flagged[col.EXCESS_KWH].astype(float).sum()
    money = flagged[col.EST_LOSS].astype(float).sum()
    assert f"{len(flags):,}" in body
    assert f"{kwh:,.0f}" in body
    assert f"{money:,.2f}" in body
    n_assets = int((hostile.transformers[col.FLAGGED] == "true").sum())
    assert n_assets >= 1
    cards = re.findall(r'<div class="label">([^<]*)</div><div class="value">([^<]*)</div>', text)
    cards = {html.unescape(k): html.unescape(v) for k, v in cards}
    assert cards["Meters flagged"] == str(len(flagged))
    assert cards["Assets flagged"] == str(n_assets)
    assert cards["New since last run"] == "n/a"
    assert cards["Data-quality findings"] == f"{len(hostile.issues.to_frame()):,}"
    # a section per flagged meter and asset, linked from the list
    ids = {attrs.get("id") for _, attrs in page.tags}
    hrefs = {attrs.get("href") for tag, attrs in page.tags if tag == "a"}
    for meter in flagged[col.METER_ID]:
        assert anchor_id("m", meter) in ids
        assert "#" + anchor_id("m", meter) in hrefs
    for asset in hostile.transformers.loc[hostile.transformers[col.FLAGGED] == "true", col.ASSET_ID]:
        assert anchor_id("a", asset) in ids
    # data-quality counts summed by code, and the run's configuration
    dq = hostile.issues.to_frame()
    for code, total in dq.groupby("code")["count"].sum().items():
        assert code in body
        assert f"{int(total):,}" in body
    assert "detection.min_excess_kw" in body
    assert "read_and_clean_s" in body
    # what a score is and what to do with a flag, said once above the case list
    assert "flagged sites score 0.5 to 1" in body and "confirm on site before any action" in body


def test_hostile_strings_are_escaped(hostile, tmp_path):
    text = write_report(hostile, tmp_path).read_text(encoding="utf-8")
    page = _parse(text)
    # no markup from data: the only scripts are the page's JSON blob and its own code
    assert "<script>alert" not in text
    assert "alert(1)</script>" not in text
    assert len(page.scripts) == 2
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    assert "alert" not in page.scripts[1][1]
    # no event-handler attribute anywhere; no attribute value carries the payload
    for _, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs)
    assert 'onmouseover="' not in text
    assert html.escape(EVIL_REASON, quote=True) in text
    # ids are safe tokens
    for _, attrs in page.tags:
        if "id" in attrs:
            assert re.fullmatch(r"[A-Za-z0-9_-]+", attrs["id"]), attrs["id"]
    assert html.escape(FORMULA_ID, quote=True) in text


def test_no_network_fetches(hostile, tmp_path):
    text = write_report(hostile, tmp_path).read_text(encoding="utf-8")
    page = _parse(text)
    # a URL may be shown as text (the configured InfluxDB server), never fetched
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//|url\(|@import""", text,
                         flags=re.IGNORECASE)
    for tag, attrs in page.tags:
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), (tag, attrs["src"][:40])
        if tag == "a":  # in-page anchors, geo: positions (no fetch) and the map's own file
            href = attrs.get("href", "#")
            assert (href.startswith("#") or href == "map.png"
                    or re.fullmatch(r"geo:-?\d+\.\d{5},-?\d+\.\d{5}", href)), href
        assert tag != "link"
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]


def test_json_blob_round_trips(hostile, tmp_path):
    text = write_report(hostile, tmp_path).read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="case-data">(.*?)</script>', text, re.S)
    raw = blob.group(1)
    assert "<" not in raw and ">" not in raw and "&" not in raw
    data = json.loads(raw)
    rows = [r for r in data["rows"] if r["type"] == "meter"]
    flags = hostile.flags
    assert [r["site"] for r in rows] == list(flags[col.METER_ID])  # all listed at this size, in rank order
    assert [r["rank"] for r in rows] == list(flags[col.RANK].astype(float))
    np.testing.assert_allclose([r["kw"] for r in rows], flags[col.EXCESS_KW].astype(float))
    assert [r["reasons"] for r in rows] == list(flags[col.REASONS].astype(str))
    assert [r["flagged"] for r in rows] == list(flags[col.FLAGGED] == "true")
    # the table rows point into the blob
    n_tr = len(re.findall(r'<tr data-i="\d+"', text))
    assert n_tr == len(data["rows"])


def test_plots_are_embedded_and_paths_confined(hostile, tmp_path):
    flagged = hostile.flags.loc[hostile.flags[col.FLAGGED] == "true", col.METER_ID].tolist()
    _png(tmp_path / "plots" / "a.png")
    (tmp_path.parent / "outside.png").write_bytes((tmp_path / "plots" / "a.png").read_bytes())
    (tmp_path / "plots" / "fake.png").write_text("not a png")
    plots = {flagged[0]: "plots/a.png", flagged[1]: "../outside.png", flagged[2]: "plots/fake.png",
             "T-not-flagged": "plots/a.png"}
    text = write_report(hostile, tmp_path, plots=plots).read_text(encoding="utf-8")
    imgs = [a for t, a in _parse(text).tags if t == "img" and a.get("class") == "plot"]
    assert len(imgs) == 1
    assert imgs[0]["src"].startswith("data:image/png;base64,")
    assert imgs[0]["alt"] == f"plot of {flagged[0]}"
    import base64

    png = base64.b64decode(imgs[0]["src"].split(",", 1)[1])
    assert png == (tmp_path / "plots" / "a.png").read_bytes()


def test_only_the_top_sites_plots_are_embedded_the_others_linked(hostile, tmp_path):
    flagged = hostile.flags.loc[hostile.flags[col.FLAGGED] == "true", col.METER_ID].tolist()
    asset = hostile.transformers.loc[hostile.transformers[col.FLAGGED] == "true", col.ASSET_ID].iloc[0]
    plots = {site: f"plots/{i}.png" for i, site in enumerate([*flagged[:3], asset])}
    for rel in plots.values():
        _png(tmp_path / rel)
    text = write_report(hostile, tmp_path, plots=plots, embed_limit=1).read_text(encoding="utf-8")
    page = _parse(text)
    alts = [a["alt"] for t, a in page.tags if t == "img" and a.get("class") == "plot"]
    assert alts == [f"plot of {flagged[0]}", f"plot of {asset}"]  # the top meter, the first asset
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    assert "plots/1.png" in hrefs and "plots/2.png" in hrefs  # the others: a link to the file
    assert "plots/0.png" not in hrefs
    assert text.count("Plot not embedded") == 2


def test_case_status_is_joined(hostile, tmp_path):
    flags = hostile.flags
    flagged = flags.loc[flags[col.FLAGGED] == "true", col.METER_ID].tolist()
    quiet = flags.loc[flags[col.FLAGGED] == "false", col.METER_ID].iloc[-1]
    asset = hostile.transformers.loc[hostile.transformers[col.FLAGGED] == "true", col.ASSET_ID].iloc[0]
    cases = pd.DataFrame({
        "meter_id": [flagged[0], flagged[1], quiet, None],
        "asset_id": [None, None, None, asset],
        "status": ["new", "ongoing", "suppressed", "new"],
        "note": ["", "<b>seen</b>", "greenhouse heater", ""],
    })
    text = write_report(hostile, tmp_path, cases=cases).read_text(encoding="utf-8")
    cards = re.findall(r'<div class="label">([^<]*)</div><div class="value">([^<]*)</div>', text)
    assert dict(cards)["New since last run"] == "2"
    rows = json.loads(re.search(r'id="case-data">(.*?)</script>', text, re.S).group(1))["rows"]
    status = {(r["type"], r["site"]): r["status"] for r in rows}
    assert status[("meter", flagged[0])] == "new"
    assert status[("meter", flagged[1])] == "ongoing"
    assert status[("meter", quiet)] == "suppressed"  # listed although unflagged
    assert status[("asset", asset)] == "new"
    assert status[("meter", flagged[2])] == ""
    assert "&lt;b&gt;seen&lt;/b&gt;" in text and "<b>seen" not in text


def test_case_store_shape_is_joined(hostile, tmp_path):
    flagged = hostile.flags.loc[hostile.flags[col.FLAGGED] == "true", col.METER_ID].tolist()
    asset = hostile.transformers.loc[hostile.transformers[col.FLAGGED] == "true", col.ASSET_ID].iloc[0]
    cases = pd.DataFrame({"case_id": [flagged[0], asset], "site_kind": ["meter", "asset"],
                          "status": ["ongoing", "closed"], "first_seen": ["2026-03-01", "2026-03-02"],
                          "flagged": [True, False], "excess_kw": [6.332640133376767, np.nan]})
    text = write_report(hostile, tmp_path, cases=cases).read_text(encoding="utf-8")
    rows = json.loads(re.search(r'id="case-data">(.*?)</script>', text, re.S).group(1))["rows"]
    status = {(r["type"], r["site"]): r["status"] for r in rows}
    assert status[("meter", flagged[0])] == "ongoing"
    assert status[("asset", asset)] == "closed"
    assert "2026-03-02" in text
    # the site's case rows read like a case file: labels in words, kW rounded, no raw fields
    assert "first flagged" in text and "load at last flag [kW]" in text and "6.33<" in text


def test_money_carries_the_configured_currency(hostile, tmp_path):
    assert "Money at stake [" not in write_report(hostile, tmp_path).read_text(encoding="utf-8")
    priced = dataclasses.replace(hostile, info={**(hostile.info or {}),
                                                "config": {"report": {"currency": "EUR"}}})
    text = write_report(priced, tmp_path).read_text(encoding="utf-8")
    assert "Money at stake [EUR]" in text and "Money [EUR]</button>" in text
    assert "money [EUR]" in text
    assert "6.3326" not in text and "case flagged" not in text and "case first_seen" not in text


def test_long_unflagged_tail_is_cut(hostile, tmp_path, monkeypatch):
    from gridwatch.report import html as report_html

    monkeypatch.setattr(report_html, "MAX_UNFLAGGED_ROWS", 5)
    text = write_report(hostile, tmp_path).read_text(encoding="utf-8")
    rows = json.loads(re.search(r'id="case-data">(.*?)</script>', text, re.S).group(1))["rows"]
    n_flagged = int((hostile.flags[col.FLAGGED] == "true").sum())
    n_assets = int((hostile.transformers[col.FLAGGED] == "true").sum())
    assert len(rows) == n_flagged + n_assets + 5
    assert f"{len(hostile.flags) - n_flagged - 5:,} further unflagged meters" in text


def test_anchor_ids_are_safe_and_distinct():
    a, b = anchor_id("m", "M 1"), anchor_id("m", "M_1")
    assert a != b
    for site in ["<x>", '"', "", "é" * 100, "../../x"]:
        assert re.fullmatch(r"m-[A-Za-z0-9_-]+-[0-9a-f]{8}", anchor_id("m", site))


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """Interval, daily and monthly meters in one run (issue 16 items 3-4)."""
    root = tmp_path_factory.mktemp("mixed")
    simulate_dataset(root / "in", n_meters=150, days=60, seed=5, daily_meters=60, monthly_meters=200)
    result = run(root / "in", root / "out")
    return result, (root / "out" / "report.html").read_text(encoding="utf-8")


def test_daily_and_monthly_meters_have_their_own_section(mixed_run):
    result, text = mixed_run
    section = re.search(r'<section id="coarse">.*?</section>', text, re.S).group(0)
    monthly = result.monthly_suspects
    assert len(monthly) >= 3, "the simulated run should flag monthly premises"
    # the monthly list in the order of monthly_suspects.csv (ranked by money), each linked
    listed = re.findall(r'<a href="#(m-[^"]+)">([^<]+)</a>', section)
    shown = [html.unescape(m) for _, m in listed]
    assert [m for m in shown if m in set(monthly[col.METER_ID])][:len(monthly)] == list(monthly[col.METER_ID])
    flags = result.flags
    daily = [m for m, r in result.resolution.items() if r == "daily"]
    daily_flagged = flags[(flags[col.FLAGGED] == "true") & flags[col.METER_ID].isin(daily)]
    assert len(daily_flagged) >= 1
    assert set(daily_flagged[col.METER_ID]) <= set(shown)
    counts = re.findall(r'<tr><td>(daily reads|monthly billing reads)</td><td class="num">([\d,]+)</td>'
                        r'<td class="num">([\d,]+)</td></tr>', section)
    assert dict((k, (int(a.replace(",", "")), int(f))) for k, a, f in counts) == {
        "daily reads": (len(daily), len(daily_flagged)),
        "monthly billing reads": (int((result.resolution == "monthly").sum()),
                                  int(((flags[col.FLAGGED] == "true")
                                       & (flags[col.KIND] == col.KIND_MONTHLY)).sum()))}


def test_a_monthly_suspects_case_section_shows_its_evidence_not_a_missing_plot(mixed_run):
    result, text = mixed_run
    first = result.monthly_suspects.iloc[0]
    section = re.search(rf'<article class="site" id="{anchor_id("m", first[col.METER_ID])}">.*?</article>',
                        text, re.S).group(0)
    assert "one billing read per month" in section and "No hourly plot" in section
    assert "No plot for this site" not in section
    assert f"{first['kwh_per_day']:,.1f}" in section and "similar premises" in section
    assert ">monthly_pattern<" in section
    # and it is in the crew plan
    assert re.search(rf'<table class="plan">.*?#{anchor_id("m", first[col.METER_ID])}"', text, re.S)
