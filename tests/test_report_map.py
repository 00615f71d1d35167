"""Where the sites are (issue 16 item 5): positions, the map's data, the crew plan, inspections.csv.

The map is tested through :func:`gridwatch.report.sitemap.map_data`, the pure
function that decides what is drawn where (panels, extents, sites, labels);
pixels only where the drawing itself is the claim (labels do not overlap once
drawn, the PNG is written).
"""

from __future__ import annotations

import html
import math
import re
import time

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.outputs import format_inspections, write_outputs
from gridwatch.report.places import (
    asset_positions,
    crew_plan,
    geo_uri,
    meter_positions,
    position_counts,
)
from gridwatch.report.sitemap import (
    FIGSIZE,
    KM_PER_DEG,
    MAX_PANELS,
    area_groups,
    map_data,
    render_map,
    site_clusters,
    write_map,
)

GLASGOW = (55.86, -4.25)
READING = (51.45, -0.97)  # about 530 km from Glasgow


# =====================================================================================
# builders
# =====================================================================================
def _town(prefix, centre, n, rng, *, spread_km=0.5, tx=None, feeder=None, sub=None, tariff=0.25):
    """``n`` meters scattered within about ``spread_km`` of ``centre``."""
    lat0, lon0 = centre
    dlat = rng.uniform(-1, 1, n) * spread_km / KM_PER_DEG
    dlon = rng.uniform(-1, 1, n) * spread_km / (KM_PER_DEG * math.cos(math.radians(lat0)))
    return pd.DataFrame({
        col.METER_ID: [f"{prefix}{i:04d}" for i in range(n)],
        col.TRANSFORMER_ID: tx or f"T-{prefix}",
        col.FEEDER_ID: feeder or f"F-{prefix}",
        col.SUBSTATION_ID: sub or f"S-{prefix}",
        col.TARIFF_PER_KWH: tariff,
        col.LAT: lat0 + dlat,
        col.LON: lon0 + dlon,
    })


def _flags(meters, flagged: dict) -> pd.DataFrame:
    """``flags.csv``-like rows; ``flagged``: meter id -> (kind, excess_kw, est_loss), ranked in that order."""
    ids = list(flagged) + [m for m in meters[col.METER_ID] if m not in flagged]
    tx = meters.set_index(col.METER_ID)[col.TRANSFORMER_ID]
    rows = []
    for rank, m in enumerate(ids, start=1):
        kind, kw, money = flagged.get(m, ("", 0.0, 0.0))
        rows.append({col.METER_ID: m, col.TRANSFORMER_ID: tx.get(m, ""), col.RANK: rank,
                     col.SCORE: 0.9 if m in flagged else 0.1,
                     col.FLAGGED: "true" if m in flagged else "false", col.KIND: kind,
                     col.ONSET: "2026-03-01" if m in flagged else "", col.EXCESS_KW: kw,
                     col.EXCESS_KWH: kw * 100, col.EST_LOSS: money, col.REASONS: ""})
    return pd.DataFrame(rows)


def _transformers(rows) -> pd.DataFrame:
    """``transformers.csv``-like rows from (asset_id, flagged, kind, unexplained_kw, suspects)."""
    return pd.DataFrame([{col.ASSET_ID: a, col.FLAGGED: "true" if f else "false", col.KIND: k,
                          col.UNEXPLAINED_KW: kw, col.ONSET: "2026-03-02" if f else "",
                          col.SUSPECTS: s} for a, f, k, kw, s in rows],
                        columns=list(col.TRANSFORMERS_COLUMNS))


def _map(meters, flags=None, transformers=None, **kwargs):
    positions = meter_positions(meters)
    return map_data(positions, asset_positions(meters, positions), flags, transformers, **kwargs)


def _areas(data):
    return [p for p in data.panels if not p.overview]


# =====================================================================================
# positions
# =====================================================================================
@pytest.mark.parametrize(("lat", "lon", "expected"), [
    pytest.param(56.1, -4.2, "placed", id="valid"),
    pytest.param(-33.87, 151.21, "placed", id="southern-and-eastern"),
    pytest.param(None, None, "missing", id="neither"),
    pytest.param(56.1, None, "invalid", id="lat-only"),
    pytest.param(None, -4.2, "invalid", id="lon-only"),
    pytest.param(91.0, -4.2, "invalid", id="lat-out-of-range"),
    pytest.param(56.1, 181.0, "invalid", id="lon-out-of-range"),
    pytest.param(0.0, 0.0, "invalid", id="null-island"),
    pytest.param(0.0, 12.5, "placed", id="on-the-equator"),
    pytest.param("north", "-4.2", "invalid", id="not-a-number"),
])
def test_each_meter_is_placed_missing_or_invalid(lat, lon, expected):
    meters = pd.DataFrame({col.METER_ID: ["M1"], col.LAT: pd.Series([lat], dtype=object),
                           col.LON: pd.Series([lon], dtype=object)})
    pos = meter_positions(meters)
    assert pos.loc["M1", "position"] == expected
    if expected == "placed":
        assert pos.loc["M1", col.LAT] == pytest.approx(float(lat))
    else:  # never drawn, never in the crew plan
        assert np.isnan(pos.loc["M1", col.LAT]) and np.isnan(pos.loc["M1", col.LON])


def test_positions_are_counted_and_a_table_without_coordinates_is_all_missing():
    meters = pd.DataFrame({col.METER_ID: ["A", "B", "C", "D", "A"],
                           col.LAT: [56.1, np.nan, 0.0, 95.0, 1.0],
                           col.LON: [-4.2, np.nan, 0.0, 1.0, 1.0]})
    counts = position_counts(meter_positions(meters))
    assert counts == {"meters": 4, "placed": 1, "missing": 1, "invalid": 2,
                      "invalid_ids": ["C", "D"]}  # a repeated id counts once (its first row)
    bare = meter_positions(pd.DataFrame({col.METER_ID: ["A", "B"]}))
    assert list(bare["position"]) == ["missing", "missing"]


def test_assets_sit_at_the_median_of_their_placed_meters():
    meters = pd.DataFrame({
        col.METER_ID: ["a", "b", "c", "d", "e"],
        col.TRANSFORMER_ID: ["T1", "T1", "T1", "T1", "T2"],
        col.FEEDER_ID: ["F1", "F1", "F1", "F1", "F1"],
        col.SUBSTATION_ID: ["S1"] * 5,
        col.LAT: [50.0, 50.1, 50.5, np.nan, 51.0],
        col.LON: [-1.0, -1.2, -1.1, np.nan, -1.3],
    })
    assets = asset_positions(meters, meter_positions(meters))
    assert assets.loc["T1", "level"] == "transformer"
    assert assets.loc["T1", col.LAT] == pytest.approx(50.1)  # median of 50.0, 50.1, 50.5
    assert assets.loc["T1", col.LON] == pytest.approx(-1.1)
    assert (assets.loc["T1", "n_meters"], assets.loc["T1", "n_placed"]) == (4, 3)
    assert (assets.loc["T1", col.FEEDER_ID], assets.loc["T1", col.SUBSTATION_ID]) == ("F1", "S1")
    assert assets.loc["F1", "level"] == "feeder"
    assert assets.loc["F1", col.LAT] == pytest.approx(np.median([50.0, 50.1, 50.5, 51.0]))
    assert assets.loc["F1", col.FEEDER_ID] == ""  # nothing of its own level above it
    assert assets.loc["S1", "level"] == "substation"


def test_geo_uri_has_five_decimals_and_nothing_without_a_position():
    assert geo_uri(56.0994449, -4.195971) == "geo:56.09944,-4.19597"
    assert geo_uri(-33.9, 151.2) == "geo:-33.90000,151.20000"
    assert geo_uri(np.nan, 1.0) == "" and geo_uri(None, None) == ""


# =====================================================================================
# areas and panels
# =====================================================================================
def test_site_clusters_split_far_apart_towns_and_keep_a_town_whole():
    rng = np.random.default_rng(0)
    a = _town("A", GLASGOW, 40, rng, spread_km=3)
    b = _town("B", READING, 20, rng, spread_km=3)
    near = pd.DataFrame({col.LAT: [GLASGOW[0] + 10 / KM_PER_DEG], col.LON: [GLASGOW[1]]})  # 10 km
    frame = pd.concat([a, b, near], ignore_index=True)
    labels = site_clusters(frame[col.LAT], frame[col.LON])
    assert set(labels[:40]) == {0} and set(labels[40:60]) == {1}  # the larger town first
    assert labels[60] == 0  # 10 km out of town: the same area


def test_two_crowded_towns_that_the_grid_joins_are_split_and_a_contiguous_town_is_not():
    rng = np.random.default_rng(1)
    # two towns 40 km apart, joined by a line of meters every 8 km (within the 25 km gap)
    east = (GLASGOW[0], GLASGOW[1] + 40 / (KM_PER_DEG * math.cos(math.radians(GLASGOW[0]))))
    a = _town("A", GLASGOW, 60, rng, spread_km=0.5)
    b = _town("B", east, 60, rng, spread_km=0.5)
    line = pd.DataFrame({col.LAT: GLASGOW[0], col.LON: np.linspace(GLASGOW[1], east[1], 6)[1:-1]})
    frame = pd.concat([a, b, line], ignore_index=True)
    keep = np.zeros(len(frame), dtype=bool)
    keep[[0, 1, 2, 60, 61, 62]] = True  # three flagged meters in each town, ~100 m apart
    for i, offset in zip([0, 1, 2], [0.0, 0.1, 0.2], strict=True):
        frame.loc[[i, 60 + i], col.LAT] = frame.loc[[0, 60], col.LAT].to_numpy() + offset / KM_PER_DEG
    assert len(set(site_clusters(frame[col.LAT], frame[col.LON]))) == 1  # the grid joins them
    labels = area_groups(frame[col.LAT], frame[col.LON], keep)
    assert len(set(labels[:60])) == 1 and len(set(labels[60:120])) == 1
    assert labels[0] != labels[60]  # split: each town on its own panel
    # one town 6 km across, meters everywhere: one area however its flagged sites lie
    town = _town("C", GLASGOW, 400, rng, spread_km=3)
    keep = np.zeros(len(town), dtype=bool)
    keep[:20] = True
    assert len(set(area_groups(town[col.LAT], town[col.LON], keep))) == 1


def test_no_coordinates_no_map():
    meters = pd.DataFrame({col.METER_ID: ["A", "B"], col.TRANSFORMER_ID: ["T1", "T1"]})
    flags = _flags(meters, {"A": (col.KIND_VISIBLE, 1.0, 10.0)})
    assert _map(meters, flags) is None
    meters[col.LAT], meters[col.LON] = [0.0, 120.0], [0.0, 200.0]  # only invalid ones
    assert _map(meters, flags) is None


def test_every_flagged_site_is_on_the_map_with_its_kind_and_position():
    rng = np.random.default_rng(2)
    a = _town("A", GLASGOW, 50, rng, tx="T1")
    b = _town("B", READING, 30, rng, tx="T2")
    meters = pd.concat([a, b], ignore_index=True)
    flags = _flags(meters, {"A0003": (col.KIND_VISIBLE, 2.0, 50.0),
                            "A0007": (col.KIND_HIDDEN, 1.5, 30.0),
                            "B0001": (col.KIND_MONTHLY, 1.2, 80.0)})
    transformers = _transformers([("T1", True, col.KIND_HIDDEN_LOAD, 1.5, "A0007;A0008"),
                                  ("T2", False, col.KIND_METERING_FAULT, 0.0, ""),
                                  ("T9", False, "", 0.0, "")])
    data = _map(meters, flags, transformers, as_of="2026-03-31")
    areas = _areas(data)
    assert len(areas) == 2 and data.panels[0].overview  # two towns far apart: two panels + overview
    assert {b[0] for b in data.panels[0].boxes} == {"A", "B"}
    where = {s: (p, k) for p in areas for s, k in zip(p.site_ids, p.site_kinds, strict=True)}
    assert {s: k for s, (_, k) in where.items()} == {
        "A0003": col.KIND_VISIBLE, "A0007": col.KIND_HIDDEN, "B0001": col.KIND_MONTHLY,
        "T1": col.KIND_HIDDEN_LOAD, "T2": col.KIND_METERING_FAULT}
    assert where["A0003"][0] is where["T1"][0] and where["B0001"][0] is where["T2"][0]
    panel = where["T1"][0]
    i = panel.site_ids.index("T1")
    assert panel.site_lat[i] == pytest.approx(a[col.LAT].median())  # the asset: its meters' median
    assert panel.site_lon[i] == pytest.approx(a[col.LON].median())
    j = panel.site_ids.index("A0003")
    assert panel.site_lat[j] == pytest.approx(a.loc[3, col.LAT])
    # labels: ranks for meters, ids for assets
    texts = {t for p in areas for t in p.label_text}
    assert {"1", "2", "T1"} <= texts or any("1" in t and "2" in t for t in texts)
    assert "3" in texts and "T2" in texts
    assert dict(data.legend) == {col.KIND_VISIBLE: 1, col.KIND_HIDDEN: 1, col.KIND_MONTHLY: 1,
                                 col.KIND_HIDDEN_LOAD: 1, col.KIND_METERING_FAULT: 1}
    assert (data.sites_total, data.sites_drawn) == (5, 5)
    assert "2026-03-31" in data.title


def test_panels_are_undistorted_and_hold_their_sites():
    rng = np.random.default_rng(3)
    meters = pd.concat([_town("A", GLASGOW, 50, rng, spread_km=4), _town("B", READING, 50, rng)],
                       ignore_index=True)
    flags = _flags(meters, {"A0001": (col.KIND_VISIBLE, 1.0, 1.0), "B0002": (col.KIND_VISIBLE, 1.0, 1.0)})
    for panel in _map(meters, flags).panels:
        left, bottom, width, height = panel.rect
        box = (width * FIGSIZE[0]) / (height * FIGSIZE[1])  # the axes' shape [inch / inch]
        w_km, h_km = panel.extent_km
        assert w_km / h_km == pytest.approx(box, rel=1e-9)  # 1 km is as long across as up
        mid = (panel.ylim[0] + panel.ylim[1]) / 2
        assert panel.km_per_deg_lon == pytest.approx(KM_PER_DEG * math.cos(math.radians(mid)))
        assert np.all((panel.site_lon > panel.xlim[0]) & (panel.site_lon < panel.xlim[1]))
        assert np.all((panel.site_lat > panel.ylim[0]) & (panel.site_lat < panel.ylim[1]))
        assert panel.scale_km <= w_km / 5 and panel.scale_km >= w_km / 12.5


def test_one_far_away_meter_does_not_squash_the_map_and_is_said():
    rng = np.random.default_rng(4)
    town = _town("A", GLASGOW, 80, rng, spread_km=1)
    stray = pd.DataFrame({col.METER_ID: ["STRAY"], col.TRANSFORMER_ID: ["T-A"], col.FEEDER_ID: ["F-A"],
                          col.SUBSTATION_ID: ["S-A"], col.TARIFF_PER_KWH: [0.25],
                          col.LAT: [READING[0]], col.LON: [READING[1]]})  # a mistyped position
    meters = pd.concat([town, stray], ignore_index=True)
    data = _map(meters, _flags(meters, {"A0001": (col.KIND_VISIBLE, 1.0, 1.0)}))
    (panel,) = data.panels  # the town alone, no overview
    assert max(panel.extent_km) < 5
    assert any("STRAY" in n and "not drawn" in n for n in data.notes)
    # flagged, the far meter gets a panel of its own
    data = _map(meters, _flags(meters, {"A0001": (col.KIND_VISIBLE, 1.0, 1.0),
                                        "STRAY": (col.KIND_VISIBLE, 1.0, 1.0)}))
    assert len(_areas(data)) == 2 and data.sites_drawn == 2


def test_invalid_and_missing_coordinates_are_counted_and_said():
    rng = np.random.default_rng(5)
    meters = _town("A", GLASGOW, 30, rng)
    meters.loc[0, [col.LAT, col.LON]] = [0.0, 0.0]
    meters.loc[1, col.LAT] = 123.0
    meters.loc[2, [col.LAT, col.LON]] = [np.nan, np.nan]
    flags = _flags(meters, {"A0000": (col.KIND_VISIBLE, 1.0, 1.0), "A0005": (col.KIND_VISIBLE, 1.0, 1.0)})
    data = _map(meters, flags)
    assert data.counts["invalid"] == 2 and data.counts["missing"] == 1 and data.counts["placed"] == 27
    assert "(1 without, 2 invalid)" in data.summary
    notes = " ".join(data.notes)
    assert "2 meter(s) have invalid coordinates" in notes and "A0000, A0001" in notes
    assert "1 meter(s) have no coordinates" in notes
    assert "1 flagged site(s) have no position" in notes and "A0000" in notes
    assert (data.sites_total, data.sites_placed, data.sites_drawn) == (2, 1, 1)


def test_panels_are_capped_and_the_areas_left_out_are_said():
    rng = np.random.default_rng(6)
    towns = [_town(f"{chr(65 + k)}", (50.0 + 2.0 * k, -3.0), 20, rng) for k in range(8)]  # 220 km apart
    meters = pd.concat(towns, ignore_index=True)
    flagged = {f"{chr(65 + k)}0001": (col.KIND_VISIBLE, 1.0, 10.0 * (k + 1)) for k in range(8)}
    data = _map(meters, _flags(meters, flagged))
    assert len(data.panels) == MAX_PANELS and data.panels[0].overview
    assert data.sites_drawn == MAX_PANELS - 1
    assert any("3 further area(s)" in n and "3 flagged site(s)" in n for n in data.notes)


def test_close_sites_share_a_label_and_drawn_labels_never_overlap():
    rng = np.random.default_rng(7)
    meters = _town("A", GLASGOW, 300, rng, spread_km=0.6)
    meters.loc[1, [col.LAT, col.LON]] = meters.loc[0, [col.LAT, col.LON]].to_numpy()  # same house
    flagged = {m: (col.KIND_VISIBLE, 1.0, 1.0) for m in meters[col.METER_ID][:80]}
    data = _map(meters, _flags(meters, flagged))
    (panel,) = data.panels
    assert any(t.startswith("1, 2") for t in panel.label_text)  # rank 1 and 2 on one spot: one label
    assert not any(t == "2" for t in panel.label_text)
    fig = render_map(data)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() in panel.label_text]
        assert len(boxes) == len(panel.label_text) >= 10
        for i, a in enumerate(boxes):
            assert ax.bbox.contains(a.x0 + 1, a.y0 + 1) and ax.bbox.contains(a.x1 - 1, a.y1 - 1)
            for b in boxes[i + 1:]:
                overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
                overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
                assert overlap_x <= 1 or overlap_y <= 1, (a, b)
    finally:
        fig.clear()


def test_the_map_png_is_written(tmp_path):
    rng = np.random.default_rng(8)
    meters = _town("A", GLASGOW, 30, rng)
    path = write_map(_map(meters, _flags(meters, {"A0001": (col.KIND_VISIBLE, 1.0, 1.0)})),
                     tmp_path / "map.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1100, 850)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]  # no temporary file left


def test_map_and_plan_are_fast_at_100k_meters():
    rng = np.random.default_rng(9)
    n, n_tx = 100_000, 8_000
    tx = rng.integers(0, n_tx, n)
    town = rng.normal(0, 0.2, (n_tx // 40 + 1, 2))[tx // 40]
    meters = pd.DataFrame({
        col.METER_ID: np.char.add("M", np.arange(n).astype(str)).astype(object),
        col.TRANSFORMER_ID: np.char.add("T", tx.astype(str)).astype(object),
        col.FEEDER_ID: np.char.add("F", (tx // 20).astype(str)).astype(object),
        col.SUBSTATION_ID: np.char.add("S", (tx // 200).astype(str)).astype(object),
        col.TARIFF_PER_KWH: 0.2,
        col.LAT: 53.5 + town[:, 0] + rng.normal(0, 0.002, n),
        col.LON: -2.2 + town[:, 1] + rng.normal(0, 0.003, n),
    })
    chosen = rng.choice(n, 3000, replace=False)
    flags = pd.DataFrame({col.METER_ID: meters[col.METER_ID], col.TRANSFORMER_ID: meters[col.TRANSFORMER_ID],
                          col.RANK: np.arange(1, n + 1), col.SCORE: 0.1, col.FLAGGED: "false",
                          col.KIND: "", col.ONSET: "", col.EXCESS_KW: 0.0, col.EXCESS_KWH: 0.0,
                          col.EST_LOSS: 0.0, col.REASONS: ""})
    flags.loc[chosen, [col.FLAGGED, col.KIND, col.EXCESS_KW]] = ["true", col.KIND_VISIBLE, 1.0]
    started = time.perf_counter()
    data = _map(meters, flags)
    plan = crew_plan(flags, None, meters)
    elapsed = time.perf_counter() - started
    assert data.sites_drawn == 3000 and len(plan) == 3000
    assert sum(len(p.background_lon) for p in data.panels if not p.overview) <= 40_000
    assert elapsed < 10, f"map data and crew plan took {elapsed:.1f} s at 100,000 meters"


# =====================================================================================
# the crew plan
# =====================================================================================
@pytest.fixture()
def network():
    """Two substations, three feeders; one hidden load with a flagged suspect; a meter with no feeder."""
    rows = [  # meter, transformer, feeder, substation, tariff, lat, lon
        ("m1", "T1", "F1", "S1", 0.2, 56.0, -4.0),
        ("m2", "T2", "F1", "S1", 0.2, 56.01, -4.0),
        ("m5", "T2", "F1", "S1", 0.3, 56.011, -4.001),
        ("m6", "T2", "F1", "S1", 0.2, 56.012, -4.002),
        ("m3", "T3", "F2", "S1", 0.2, 56.05, -4.1),
        ("m4", "T4", "F3", "S2", 0.2, 51.4, -0.9),
        ("m7", "T9", "", "", 0.2, np.nan, np.nan),
    ]
    meters = pd.DataFrame(rows, columns=[col.METER_ID, col.TRANSFORMER_ID, col.FEEDER_ID,
                                         col.SUBSTATION_ID, col.TARIFF_PER_KWH, col.LAT, col.LON])
    flags = _flags(meters, {  # rank = order here
        "m5": (col.KIND_HIDDEN, 3.0, 200.0),
        "m4": (col.KIND_VISIBLE, 4.0, 1000.0),
        "m2": (col.KIND_VISIBLE, 2.0, 300.0),
        "m1": (col.KIND_VISIBLE, 1.0, 100.0),
        "m3": (col.KIND_MONTHLY, 0.5, 50.0),
        "m7": (col.KIND_VISIBLE, 0.7, 70.0),
    })
    transformers = _transformers([
        ("T2", True, col.KIND_HIDDEN_LOAD, 3.0, "m5;m6;a;b;c;d;e"),
        ("T1", False, "", 0.0, ""),
    ])
    asset_kwh = pd.Series({"T2": 400.0})
    return meters, flags, transformers, asset_kwh


def test_crew_plan_groups_by_feeder_richest_first_and_totals_each_case_once(network):
    meters, flags, transformers, asset_kwh = network
    plan = crew_plan(flags, transformers, meters, asset_kwh=asset_kwh)
    assert list(plan.columns) == list(col.INSPECTIONS_COLUMNS)
    # S2 (1000) before S1 (100 + 300 + 100 for T2 + 50); in S1, F1 (500) before F2 (50);
    # the meter without feeder or substation last
    assert list(plan[col.SITE_ID]) == ["m4", "T2", "m5", "m2", "m1", "m3", "m7"]
    assert list(plan[col.CREW_GROUP]) == [1, 2, 2, 2, 2, 3, 4]
    assert list(plan[col.STOP]) == [1, 1, 2, 3, 4, 1, 1]
    f1 = plan[plan[col.FEEDER_ID] == "F1"]
    assert set(f1[col.FEEDER_SITES]) == {3}  # T2 (with m5), m2, m1
    assert f1[col.FEEDER_EXCESS_KW].iloc[0] == pytest.approx(3.0 + 2.0 + 1.0)  # m5 rides with T2
    # T2's money: 400 kWh at the median tariff of its meters (0.2, 0.3, 0.2 -> 0.2)
    t2 = plan.set_index(col.SITE_ID).loc["T2"]
    assert t2[col.EST_LOSS] == pytest.approx(80.0)
    assert f1[col.FEEDER_EST_LOSS].iloc[0] == pytest.approx(80.0 + 300.0 + 100.0)
    assert (t2[col.SITE_TYPE], t2[col.KIND], t2[col.CASE_ID]) == ("transformer", col.KIND_HIDDEN_LOAD, "T2")
    assert t2[col.SUSPECTS] == "m5;m6;a;b;c"  # the top 5
    assert np.isnan(t2[col.RANK])
    m5 = plan.set_index(col.SITE_ID).loc["m5"]
    assert m5[col.CASE_ID] == "T2" and m5[col.RANK] == 1
    # positions: meters as given, the asset at its meters' median, none for m7
    assert t2[col.LAT] == pytest.approx(56.011) and t2[col.LON] == pytest.approx(-4.001)
    assert plan.set_index(col.SITE_ID).loc["m4", col.LAT] == pytest.approx(51.4)
    assert np.isnan(plan.set_index(col.SITE_ID).loc["m7", col.LAT])
    # the monthly meter is a site like any other
    assert plan.set_index(col.SITE_ID).loc["m3", col.KIND] == col.KIND_MONTHLY


def test_sites_without_a_feeder_are_grouped_by_transformer():
    meters = pd.DataFrame({col.METER_ID: ["a", "b", "c"], col.TRANSFORMER_ID: ["TA", "TB", "TA"]})
    flags = _flags(meters, {"a": (col.KIND_MONTHLY, 1.0, 10.0), "b": (col.KIND_MONTHLY, 1.0, 50.0),
                            "c": (col.KIND_MONTHLY, 1.0, 5.0)})
    plan = crew_plan(flags, None, meters)
    assert list(plan[col.SITE_ID]) == ["b", "a", "c"]  # TB (50) first, then TA (15)
    assert list(plan[col.CREW_GROUP]) == [1, 2, 2]
    assert list(plan[col.FEEDER_SITES]) == [1, 2, 2]


def test_nothing_flagged_gives_an_empty_plan_with_the_columns(network):
    meters, flags, _, _ = network
    plan = crew_plan(flags.assign(**{col.FLAGGED: "false"}), None, meters)
    assert plan.empty and list(plan.columns) == list(col.INSPECTIONS_COLUMNS)


def test_inspections_csv_has_the_documented_columns_and_is_written_atomically(network, tmp_path,
                                                                               monkeypatch):
    meters, flags, transformers, asset_kwh = network
    plan = crew_plan(flags, transformers, meters, asset_kwh=asset_kwh)
    plan.loc[plan[col.SITE_ID] == "m1", col.SITE_ID] = "=HYPERLINK(1)"
    common = {"flags": flags, "transformers": transformers,
              "data_quality": pd.DataFrame(columns=list(col.DATA_QUALITY_COLUMNS))}
    paths = write_outputs(tmp_path, **common, inspections=plan)
    text = (tmp_path / "inspections.csv").read_text()
    assert paths["inspections"] == str(tmp_path / "inspections.csv")
    assert text.splitlines()[0] == ",".join(col.INSPECTIONS_COLUMNS)
    written = pd.read_csv(tmp_path / "inspections.csv", dtype=str, keep_default_na=False)
    assert list(written[col.SITE_ID])[:2] == ["m4", "T2"]
    assert written.loc[1, col.RANK] == "" and written.loc[2, col.RANK] == "1"  # no "1.0"
    assert written.loc[0, col.LAT] == "51.4" and "'=HYPERLINK(1)" in set(written[col.SITE_ID])
    assert not list(tmp_path.glob(".*"))  # no temporary file left

    # a failure while writing leaves the previous file whole
    before = (tmp_path / "inspections.csv").read_bytes()
    import gridwatch.atomic

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gridwatch.atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(tmp_path, **common, inspections=plan.head(1))
    assert (tmp_path / "inspections.csv").read_bytes() == before
    assert not list(tmp_path.glob(".inspections.csv.*"))
    assert format_inspections(plan.head(0)).empty


@pytest.mark.parametrize("doc", ["README.md", "docs/sites.md"])
def test_inspections_columns_are_documented(doc):
    from tests.conftest import REPO_ROOT

    path = REPO_ROOT / doc
    text = path.read_text(encoding="utf-8")
    assert "inspections.csv" in text and "map.png" in text
    for name in col.INSPECTIONS_COLUMNS:
        assert f"`{name}`" in text, (path.name, name)


# =====================================================================================
# through a run
# =====================================================================================
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from gridwatch.pipeline import run
    from gridwatch.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("sites")
    simulate_dataset(root / "in", n_meters=150, days=30, seed=3)
    bare = root / "bare"
    simulate_dataset(bare, n_meters=150, days=30, seed=3)
    meters = pd.read_csv(bare / "meters.csv")
    meters.drop(columns=[col.LAT, col.LON]).to_csv(bare / "meters.csv", index=False)
    return (run(root / "in", root / "out"), root / "out"), (run(bare, root / "out_bare"), root / "out_bare")


def test_a_run_writes_the_map_and_the_crew_plan_and_links_every_site(runs):
    (result, out), _ = runs
    assert (out / "map.png").read_bytes().startswith(b"\x89PNG")
    plan = pd.read_csv(out / "inspections.csv", dtype=str, keep_default_na=False)
    flags = result.flags[result.flags[col.FLAGGED] == "true"]
    assets = result.transformers[result.transformers[col.FLAGGED] == "true"]
    assert len(flags) >= 3 and len(assets) >= 1
    assert sorted(plan[col.SITE_ID]) == sorted([*flags[col.METER_ID], *assets[col.ASSET_ID]])
    assert (plan[col.LAT] != "").all()
    text = (out / "report.html").read_text(encoding="utf-8")
    meters = pd.read_csv(result.info["input_dir"] + "/meters.csv").set_index(col.METER_ID)
    for meter in flags[col.METER_ID]:
        uri = geo_uri(meters.loc[meter, col.LAT], meters.loc[meter, col.LON])
        section = re.search(rf'<article class="site" id="m-{re.escape(meter)}-.*?</article>', text, re.S)
        assert f'href="{uri}"' in section.group(0), meter
    for asset in assets[col.ASSET_ID]:
        section = re.search(rf'<article class="site" id="a-{re.escape(asset)}-.*?</article>', text, re.S)
        assert 'href="geo:' in section.group(0) and "median of its" in section.group(0)
    assert '<img class="map" src="data:image/png;base64,' in text
    assert text.count('<tr class="group">') == plan[col.CREW_GROUP].nunique()


def test_a_run_without_coordinates_has_no_map_and_says_so(runs):
    _, (result, out) = runs
    assert not (out / "map.png").exists()
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "coordinates were not given" in html.unescape(text)
    assert 'href="geo:' not in text and "no coordinates in meters" in text
    plan = pd.read_csv(out / "inspections.csv", dtype=str, keep_default_na=False)
    assert len(plan) and (plan[col.LAT] == "").all() and (plan[col.FEEDER_ID] != "").all()


def test_a_map_that_cannot_be_drawn_does_not_sink_the_report(runs, tmp_path, monkeypatch, caplog):
    from gridwatch.report import html as report_html

    (result, _), _ = runs

    def broken(data, path):
        raise ValueError("no font")

    monkeypatch.setattr(report_html, "write_map", broken)
    text = report_html.write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "The map could not be drawn (ValueError: no font)" in text
    assert 'href="geo:' in text  # the coordinates are still there
    assert "could not be drawn" in caplog.text
