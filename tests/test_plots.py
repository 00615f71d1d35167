"""The investigator's plots: readable, safe file names, one PNG per flagged site."""

from __future__ import annotations

import pytest

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.pipeline import run
from gridwatch.report import plots
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
    meter = _flagged(result.flags, col.METER_ID)[0]
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
        plots._close(fig)
    path = plots.plot_site(result, meter, tmp_path / "m.png")
    _check_png(path)


def test_unflagged_meter(result, tmp_path):
    meter = result.flags.loc[result.flags[col.FLAGGED] == "false", col.METER_ID].astype(str).iloc[-1]
    fig = plots.plot_meter(result, meter, weeks=2)
    try:
        _check_figure(fig, meter)
        assert "not flagged" in _texts(fig)[0]
    finally:
        plots._close(fig)
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
        plots._close(fig)
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
    fig = plots._new_figure((3, 1), None)
    fig.suptitle(f"Meter {plots._tx(site_id)}")
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
