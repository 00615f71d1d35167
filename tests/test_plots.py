"""The investigator's plots: readable, safe file names, one PNG per flagged site."""

from __future__ import annotations

import matplotlib.dates
import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.pipeline import run
from gridwatch.report import data as plot_data
from gridwatch.report import figures, helpers, plots, png
from gridwatch.simulate import simulate_dataset

HOSTILE = ["../../etc/passwd", "a/b", "a_b", "a\\b", "<script>x</script>", ".hidden", "..",
           "=cmd|' /C calc'!A0", "", "tab\there\nnl", "$\\frac$", "Ünïcødé ☃"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    data = tmp_path_factory.mktemp("plots_data")
    simulate_dataset(data, n_meters=150, days=30, seed=3, as_of="2026-03-30")
    return run(data)


def _flagged(frame, id_column):
    return frame.loc[frame[col.FLAGGED].astype(str) == "true", id_column].astype(str).tolist()


def _texts(fig):
    """Every visible string of a figure: titles, axis labels, legend entries."""
    titles = [t.get_text() for t in fig.texts]
    titles += [a.get_text() for a in fig.artists if hasattr(a, "get_text")]  # the title lines
    if fig._suptitle is not None:
        titles.append(fig._suptitle.get_text())
    labels, legends = [], []
    for ax in fig.axes:
        titles.append(ax.get_title(loc="left"))
        labels += [ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend() is not None:
            legends += [t.get_text() for t in ax.get_legend().get_texts()]
    return " ".join(titles), labels, legends


def _check_png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] > 400 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not blank


def _check_figure(fig, site_id):
    title, labels, legends = _texts(fig)
    assert site_id in title
    assert any("[kW]" in label for label in labels)
    assert legends


def test_flagged_meter(result, tmp_path):
    meter, _ = _meter_ids(result)  # the first flagged meter with an onset
    fig = plots.plot_meter(result, meter)
    try:
        _check_figure(fig, meter)
        title, labels, legends = _texts(fig)
        assert "FLAGGED" in title and "kW" in title and "score" in title
        assert any(lbl.startswith("onset") for lbl in legends)
        assert any("scaled" in lbl for lbl in legends)  # the peer band says it is scaled
        assert "local hour of day" in labels
        assert any(ax.get_ylabel() == "demand [kW]" for ax in fig.axes[2:])  # the colourbar
    finally:
        figures.close_figure(fig)
    path = plots.plot_site(result, meter, tmp_path / "m.png")
    _check_png(path)


def test_unflagged_meter(result, tmp_path):
    meter = result.flags.loc[result.flags[col.FLAGGED] == "false", col.METER_ID].astype(str).iloc[-1]
    fig = plots.plot_meter(result, meter, weeks=2)
    try:
        _check_figure(fig, meter)
        assert "not flagged" in _texts(fig)[0]
    finally:
        figures.close_figure(fig)
    _check_png(plots.plot_site(result, meter, tmp_path / "u.png"))


def test_flagged_asset(result, tmp_path):
    asset = _flagged(result.transformers, col.ASSET_ID)[0]
    fig = plots.plot_asset(result, asset)
    try:
        _check_figure(fig, asset)
        _, _, legends = _texts(fig)
        assert any("delivered" in lbl for lbl in legends)
        assert any("unexplained" in lbl for lbl in legends)
        assert any("losses" in lbl for lbl in legends)
    finally:
        figures.close_figure(fig)
    _check_png(plots.plot_site(result, asset, tmp_path / "a.png"))


def test_draws_into_given_figure(result):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=60)
    out = plots.plot_meter(result, str(result.kw.columns[0]), fig=fig)
    assert out is fig and len(fig.axes) == 3


def test_unknown_id(result, tmp_path):
    with pytest.raises(InputError, match=r"no meter or asset '\.\./nope'.*flags\.csv.*transformers\.csv"):
        plots.plot_site(result, "../nope", tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_safe_plot_name_hostile_ids(tmp_path):
    names = [plots.safe_plot_name(i) for i in HOSTILE]
    assert len(set(names)) == len(names)
    plots_dir = (tmp_path / "plots").resolve()
    for name in names:
        assert name.endswith(".png")
        assert "/" not in name and "\\" not in name and ".." not in name
        assert not name.startswith((".", "-", "=", "+", "@"))
        assert name.isascii() and name.isprintable() and " " not in name
        assert (plots_dir / name).resolve().parent == plots_dir
    assert plots.safe_plot_name("M000110").startswith("M000110-")
    assert plots.safe_plot_name("a/b") == plots.safe_plot_name("a/b")  # stable


@pytest.mark.parametrize("site_id", HOSTILE)
def test_hostile_text_renders(site_id, tmp_path):
    # An id with '$' must not be parsed as mathtext (it would raise at draw time).
    fig = figures.new_figure((3, 1), None)
    fig.suptitle(f"Meter {plot_data.mpl_text(site_id)}")
    plots.save_plot(fig, tmp_path / plots.safe_plot_name(site_id))
    assert len(list(tmp_path.iterdir())) == 1


def test_write_plots_one_file_per_flagged_site(result, tmp_path):
    import time

    t0 = time.perf_counter()
    written = plots.write_plots(result, tmp_path)
    elapsed = time.perf_counter() - t0
    expected = set(_flagged(result.flags, col.METER_ID)) | set(_flagged(result.transformers, col.ASSET_ID))
    assert set(written) == expected and expected
    files = sorted((tmp_path / "plots").iterdir())
    assert len(files) == len(expected)
    for site, rel in written.items():
        assert rel == f"plots/{plots.safe_plot_name(site)}"
        assert (tmp_path / rel).stat().st_size > 10_000
    assert not [f for f in files if f.name.startswith(".")]  # no temporaries left
    assert elapsed / len(written) < 2.0  # generous: CI machines are slow


def test_no_pyplot_needed(result, tmp_path):
    import sys

    had = "matplotlib.pyplot" in sys.modules
    plots.plot_site(result, str(result.kw.columns[1]), tmp_path / "p.png")
    assert ("matplotlib.pyplot" in sys.modules) == had


# --- reused figures: fast, and never showing a previous site ----------------------------------

def _pixels(plotter, data):
    with figures.local_rc():
        return plotter.render(data).copy()


def _meter_ids(result):
    flags = result.flags
    flagged = _flagged(flags[flags[col.ONSET].fillna("").astype(str) != ""], col.METER_ID)
    unflagged = flags.loc[flags[col.FLAGGED] == "false", col.METER_ID].astype(str).tolist()
    return flagged[0], unflagged[-1]


def _asset_ids(result):
    tr = result.transformers
    return _flagged(tr, col.ASSET_ID)[0], tr.loc[tr[col.FLAGGED].astype(str) == "false",
                                                   col.ASSET_ID].astype(str).iloc[0]


def test_reused_meter_figure_draws_each_site_as_a_fresh_one(result):
    # A flagged meter with its onset, legend and reasons, then an unflagged one without
    # them, then the first again in a shorter window: each must equal a fresh drawing.
    flagged, unflagged = _meter_ids(result)
    ctx = plot_data.RunContext(result)
    sequence = [plot_data.meter_data(ctx, flagged, weeks=6), plot_data.meter_data(ctx, unflagged, weeks=6),
                plot_data.meter_data(ctx, flagged, weeks=2), plot_data.meter_data(ctx, unflagged, weeks=6)]
    assert sequence[0].onset_day is not None and sequence[1].onset_day is None
    assert sequence[2].edges_day[0] > sequence[0].edges_day[0]
    reused = plots.Plotter(result)
    for data in sequence:
        np.testing.assert_array_equal(_pixels(reused, data), _pixels(plots.Plotter(result), data))


def test_reused_asset_figure_draws_each_site_as_a_fresh_one(result):
    flagged, unflagged = _asset_ids(result)
    ctx = plot_data.RunContext(result)
    a, b = plot_data.asset_data(ctx, flagged), plot_data.asset_data(ctx, unflagged)
    assert a.suspect_labels and a.onset_day is not None
    assert not b.suspect_labels and b.no_suspects_text and b.onset_day is None
    reused = plots.Plotter(result)
    for data in (a, b, a):
        np.testing.assert_array_equal(_pixels(reused, data), _pixels(plots.Plotter(result), data))


@pytest.mark.parametrize("kind", ["meter", "asset"])
def test_cached_layout_equals_a_full_draw(result, kind):
    # The static layer drawn once + the per-site artists on top = a full draw of the figure.
    flagged = _meter_ids(result)[0] if kind == "meter" else _asset_ids(result)[0]
    plotter = plots.Plotter(result)
    data = plotter.data(flagged)
    fast = _pixels(plotter, data)
    fig = next(iter(plotter.renderer.templates.values())).fig
    with figures.local_rc():
        fig.canvas.draw()
    full = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    np.testing.assert_array_equal(fast, full)


def test_plot_sites_equals_plot_site(result, tmp_path):
    # The batch (reused figures, sites regrouped by layout) writes the very bytes that
    # one fresh figure per site writes.
    flagged = plots.flagged_sites(result)
    sites = flagged[:2] + [_meter_ids(result)[1], _asset_ids(result)[1], flagged[-1]]
    written = plots.plot_sites(result, sites, tmp_path / "batch", processes=1)
    assert list(written) == sites
    for site in sites:
        fresh = plots.plot_site(result, site, tmp_path / "fresh" / plots.safe_plot_name(site))
        assert (tmp_path / "batch" / written[site]).read_bytes() == fresh.read_bytes(), site


def test_plot_sites_refuses_an_unknown_id_before_drawing(result, tmp_path):
    with pytest.raises(InputError, match="no meter or asset 'nope'"):
        plots.plot_sites(result, [_meter_ids(result)[0], "nope"], tmp_path)
    assert not tmp_path.joinpath("plots").exists()


def test_helper_processes_write_the_same_files(result, tmp_path, monkeypatch):
    class Jobs(plots.deque):  # helpers take jobs from the right, this process from the left
        taken_by_helpers = 0

        def pop(self):
            job = super().pop()
            Jobs.taken_by_helpers += 1
            return job

    from gridwatch.report import helpers

    drawn_by_helpers = []  # PNGs a helper process answered with (not redrawn here)
    write_bytes = helpers.write_bytes
    monkeypatch.setattr(helpers, "write_bytes",
                        lambda data, path: (drawn_by_helpers.append(path), write_bytes(data, path)))
    monkeypatch.setattr(plots, "deque", Jobs)
    sites = plots.flagged_sites(result) * 3 + [_meter_ids(result)[1]]  # repeats are drawn once
    local = plots.plot_sites(result, sites, tmp_path / "local", processes=1)
    assert Jobs.taken_by_helpers == 0 and drawn_by_helpers == []
    shared = plots.plot_sites(result, sites, tmp_path / "shared", processes=2)
    assert Jobs.taken_by_helpers > 0
    assert len(drawn_by_helpers) > 0  # a helper drew them: a broken one would leave them here
    assert shared == local
    for rel in local.values():
        assert (tmp_path / "shared" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()


@pytest.mark.parametrize("helper", ["cannot start", "exits at once", "fails to draw"])
def test_a_failing_helper_leaves_its_sites_to_this_process(result, tmp_path, monkeypatch, helper):
    import subprocess
    import sys

    def start():
        if helper == "cannot start":
            return None
        code = {"exits at once": "pass",
                "fails to draw": "import pickle, sys\n"
                                 "while True:\n"
                                 "    pickle.load(sys.stdin.buffer)\n"
                                 "    pickle.dump('RuntimeError: boom', sys.stdout.buffer)\n"
                                 "    sys.stdout.flush()\n"}[helper]
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)

    monkeypatch.setattr(helpers, "_start_helper", start)
    sites = plots.flagged_sites(result)[:3]
    written = plots.plot_sites(result, sites, tmp_path, processes=2)
    assert set(written) == set(sites)
    for rel in written.values():
        _check_png(tmp_path / rel)
    assert not [f for f in (tmp_path / "plots").iterdir() if f.name.startswith(".")]


def test_helper_count():
    assert helpers.helper_count(1) == 0  # never worth a second process
    assert 0 <= helpers.helper_count(10_000) <= helpers.MAX_PROCESSES - 1


def test_plot_sites_without_sites(result, tmp_path):
    assert plots.plot_sites(result, [], tmp_path, processes=4) == {}


def test_png_bytes_decode_to_the_pixels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    png.write_png(rgb, tmp_path / "x.png", dpi=80)
    with Image.open(tmp_path / "x.png") as img:
        assert img.mode == "RGB" and img.size == (5, 7)
        np.testing.assert_array_equal(np.asarray(img), rgb)
        assert img.info["dpi"] == pytest.approx((80, 80), abs=0.01)


def test_plot_sizes_stay_small(result, tmp_path):
    # The report embeds every PNG as base64: keep them near 100 KB.
    written = plots.plot_sites(result, plots.flagged_sites(result), tmp_path, processes=1)
    sizes = [(tmp_path / rel).stat().st_size for rel in written.values()]
    assert max(sizes) < 200_000


# --- title lines drawn as paths -----------------------------------------------------------------

def _ink(fig):
    fig.canvas.draw()
    dark = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(axis=2) < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return (rows[0], rows[-1], cols[0], cols[-1]), int(dark.sum())


@pytest.mark.parametrize("weight", ["normal", "bold"])
def test_title_line_looks_like_matplotlib_text(weight):
    # Same place, same size, same amount of ink as matplotlib's own (unhinted) text.
    text = "score 0.93 | excess 2.15 kW | since 2026-03-20 | 4,480 kWh | as of 2026-03-30"
    with figures.local_rc():
        fig_text = figures.new_figure((8, 1), None)
        fig_text.text(0.05, 0.9, text, ha="left", va="top", fontsize=10, fontweight=weight)
        fig_line = figures.new_figure((8, 1), None)
        figures.text_line(fig_line, 0.05, 0.9, fontsize=10, weight=weight).set_text(text)
        (box_text, ink_text), (box_line, ink_line) = _ink(fig_text), _ink(fig_line)
    assert np.abs(np.subtract(box_text, box_line)).max() <= 2, (box_text, box_line)
    assert ink_line == pytest.approx(ink_text, rel=0.1)


@pytest.mark.parametrize("site_id", HOSTILE)
def test_title_line_draws_hostile_text(site_id):
    with figures.local_rc():
        fig = figures.new_figure((6, 1), None)
        line = figures.text_line(fig, 0.05, 0.9, fontsize=13, weight="bold")
        line.set_text(plot_data.plain_text(f"Meter {site_id} | not flagged"))
        assert site_id.replace("\t", "?").replace("\n", "?") in line.get_text()
        fig.canvas.draw()


def test_a_load_not_seen_since_an_early_day_is_plotted_around_that_day(result):
    meter, _ = _meter_ids(result)
    table = result.detection.table
    pos = list(table.index).index(meter)
    saved = table["not_seen_since"].copy()
    ended = result.grid.dates[5].date()
    try:
        table.iloc[pos, table.columns.get_loc("not_seen_since")] = ended.isoformat()
        data = plot_data.meter_data(plot_data.RunContext(result), meter, weeks=2)
        shown = matplotlib.dates.num2date(data.edges_day[-1]).date()  # end of the last day shown
        assert shown == result.grid.dates[19].date()  # two weeks after the last day seen
        default = plot_data.meter_data(plot_data.RunContext(result), _meter_ids(result)[1], weeks=2)
        assert matplotlib.dates.num2date(default.edges_day[-1]).date() == \
            (result.grid.dates[-1] + pd.Timedelta(days=1)).date()  # others end at the as-of
    finally:
        table["not_seen_since"] = saved
