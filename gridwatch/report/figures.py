"""The plots' figure templates: a layout built once, redrawn for each site.

:class:`MeterFigure` and :class:`AssetFigure` build a figure's axes, labels,
locators and empty artists once; :meth:`~MeterFigure.update` then sets only
what one site shows, a :class:`gridwatch.report.data.MeterData` or
:class:`~gridwatch.report.data.AssetData` (plain arrays and strings: this
module computes nothing from a run). :class:`Renderer` draws any such record
with one reusable template per kind. :class:`_Layers` renders a template as
a cached static background plus the artists that change, with the same
pixels as a full draw; :class:`_Glyphs` draws the title lines as paths from
cached glyph outlines. Figures are plain Agg-backed
:class:`matplotlib.figure.Figure` objects (never ``pyplot``), drawn under the
plots' local ``RC_PARAMS`` (:func:`local_rc`). Matplotlib is imported inside
the functions.

Public API
----------
MeterFigure(fig=None), AssetFigure(fig=None): .update(data), .render() -> RGB array
Renderer(): .render(data) -> RGB array
layout_key(data) -> tuple
local_rc() -> context manager
new_figure(figsize, fig) -> Figure
close_figure(fig) -> None
text_line(fig, x, y, *, fontsize, weight="normal", color="black") -> artist
"""

from __future__ import annotations

import sys

import numpy as np

from gridwatch.report.data import AssetData, MeterData

DPI = 80
METER_FIGSIZE = (11.0, 8.0)  # [inch] at DPI -> 880 x 640 px
ASSET_FIGSIZE = (11.0, 7.5)
SUSPECT_COLORS = ("C0", "C2", "C4", "C8", "C9")  # no red or orange: those are the unexplained
# load (crimson) and the modelled losses (orange) in the panel above
#: rcParams applied while a plot is built and drawn (never globally): FreeType
#: hinting costs about a quarter of a plot's drawing time and, at 80 dpi,
#: changes nothing a reader would notice.
RC_PARAMS = {"text.hinting": "no_hinting"}
_MAX_BACKGROUNDS = 8  # cached static layers per template (one per date window)
_MAX_STAMPS = 32  # cached looks of the legend below the meter panel


# =====================================================================================
# figures and their rcParams
# =====================================================================================
def close_figure(fig) -> None:
    """Release a figure (a pyplot-managed one is also removed from pyplot)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()


def local_rc():
    """The plots' local rcParams (see ``RC_PARAMS``), as a context manager."""
    import matplotlib

    return matplotlib.rc_context(RC_PARAMS)


def new_figure(figsize, fig):
    """A fresh Agg-backed figure (never through pyplot), or the one given."""
    if fig is not None:
        return fig
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


# =====================================================================================
# drawing: a static layer drawn once per date window, the rest drawn per site
# =====================================================================================
def _title_lines(fig) -> tuple:
    """The figure's three title lines: what the site is, its numbers, the reasons."""
    return (text_line(fig, 0.075, 0.985, fontsize=13, weight="bold"),
            text_line(fig, 0.075, 0.935, fontsize=10),
            text_line(fig, 0.075, 0.905, fontsize=8.5, color="0.3"))


def text_line(fig, x, y, *, fontsize, weight="normal", color="black"):
    """A left-aligned line of text whose top is at figure fraction ``(x, y)``; see :class:`_Glyphs`.

    The artist is a :class:`matplotlib.patches.PathPatch` with ``set_text``
    and ``get_text``; it lies in ``fig.artists``.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path
    from matplotlib.transforms import Affine2D, ScaledTranslation

    class TextLine(PathPatch):
        def set_text(self, text):
            self._text = str(text)
            vertices, codes = glyphs.outline(self._text)
            self.set_path(Path(vertices, codes))

        def get_text(self):
            return self._text

    glyphs = _Glyphs.of(FontProperties(size=fontsize, weight=weight))
    # outline units -> points below the top of the line -> inches -> pixels, at (x, y)
    to_pixels = (Affine2D().scale(fontsize / glyphs.units_per_point).translate(0, -fontsize * glyphs.ascent)
                 .scale(1 / 72) + fig.dpi_scale_trans + ScaledTranslation(x, y, fig.transFigure))
    line = TextLine(Path(np.zeros((0, 2))), facecolor=color, edgecolor="none", lw=0, snap=False,
                    transform=to_pixels)
    line.set_text("")
    fig.add_artist(line)
    return line


class _Glyphs:
    """Glyph outlines and word layouts of one font, to draw text as one filled path.

    Matplotlib 3.11 draws text glyph by glyph through FreeType, about 40 µs a
    character; the title lines of a plot (about 300 characters, different for
    every site) took half of the time to draw it. Drawn as one path from
    outlines cached per word, they take about a tenth of that. The glyphs are
    the font's own outlines, laid out by :class:`matplotlib.textpath.TextToPath`
    (kerning within words), unhinted as the plots' other text is (see
    ``RC_PARAMS``): side by side the two look the same.

    Only the font matplotlib finds for the properties is used (no fallback
    font for characters it lacks), which is enough for ids and the tool's
    own words.
    """

    _fonts: dict = {}
    MAX_WORDS = 20_000

    @classmethod
    def of(cls, prop) -> _Glyphs:
        """The shared instance for a font (one per font file and size-independent)."""
        from matplotlib.font_manager import findfont

        path = findfont(prop)
        if path not in cls._fonts:
            cls._fonts[path] = cls(path)
        return cls._fonts[path]

    def __init__(self, path):
        from matplotlib.font_manager import get_font
        from matplotlib.ft2font import LoadFlags
        from matplotlib.textpath import TextToPath

        self._to_path = TextToPath()
        self._font = get_font(path)
        self._set_size()
        self.units_per_point = TextToPath.FONT_SCALE  # outlines are for a FONT_SCALE-pt font
        self.space = self._font.load_char(ord(" "), flags=LoadFlags.NO_HINTING).linearHoriAdvance / 65536
        # ascent [em] as matplotlib places text with va="top"
        table = self._font.get_sfnt_table("OS/2")
        head = self._font.get_sfnt_table("head")
        ascent = table["sTypoAscender"] if table else self._font.ascender
        self.ascent = ascent / head["unitsPerEm"]
        self._outlines = {}
        self._words = {}

    def _set_size(self):
        from matplotlib.textpath import TextToPath

        self._font.set_size(TextToPath.FONT_SCALE, TextToPath.DPI)  # the font object is shared

    def word(self, word: str) -> tuple:
        """Vertices, codes and advance of one word (no space), cached."""
        cached = self._words.get(word)
        if cached is None:
            self._set_size()
            # laid out with a trailing space, whose position is the word's advance
            info, new, _ = self._to_path.get_glyphs_with_font(
                self._font, word + " ", glyph_map=self._outlines, return_new_glyphs_only=True)
            self._outlines.update(new)
            *glyphs, (_, advance, _, _) = info
            parts = [(self._outlines[r][0] + (x, y), self._outlines[r][1]) for r, x, y, _ in glyphs]
            parts = [(v, c) for v, c in parts if len(c)]
            vertices = np.concatenate([v for v, _ in parts]) if parts else np.zeros((0, 2))
            codes = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, dtype=np.uint8)
            if len(self._words) >= self.MAX_WORDS:
                self._words.clear()
            cached = self._words[word] = (vertices, codes, float(advance))
        return cached

    def outline(self, text: str) -> tuple:
        """Vertices and codes of a line of text, in outline units, origin on the baseline."""
        vertices, codes, x = [], [], 0.0
        for i, word in enumerate(text.split(" ")):
            if i:
                x += self.space
            v, c, advance = self.word(word)
            if len(c):
                vertices.append(v + (x, 0.0))
                codes.append(c)
            x += advance
        if not codes:
            return np.zeros((0, 2)), None
        return np.concatenate(vertices), np.concatenate(codes)


class _Layers:
    """Render a figure as a cached static background plus the artists that change.

    ``static`` returns the artists whose look depends only on the state that
    :meth:`state` summarises (an axis: its view interval; a text: its string;
    a legend: its labels; axes backgrounds never change). They are drawn
    once per distinct state into a cached background.

    ``islands`` returns artists that change between sites but take few
    looks and touch no other artist (the meter legend, below its panel):
    each look is drawn once and its pixels are cached as a stamp.

    Every other child of the figure and of its axes is drawn for each site,
    in the order a full draw uses (axes by z-order, then each axes' children
    by z-order), on top of the restored background and stamps. The result
    equals a full draw as long as no static artist or island overlaps an
    artist that a full draw would put beneath it (the tests check this).
    """

    def __init__(self, fig, static, islands=list):
        self.fig = fig
        self.static = static
        self.islands = islands
        self._backgrounds = {}
        self._stamps = {}

    @staticmethod
    def state(artist):
        """What the look of a static artist or island depends on."""
        from matplotlib.axis import Axis
        from matplotlib.legend import Legend
        from matplotlib.text import Text

        if isinstance(artist, Axis):
            return tuple(float(v) for v in artist.get_view_interval())
        if isinstance(artist, Text):
            return artist.get_text()
        if isinstance(artist, Legend):
            return tuple(t.get_text() for t in artist.get_texts())
        return None

    def key(self) -> tuple:
        """What the static layer depends on."""
        return tuple(self.state(a) for a in self.static())

    def dynamic(self) -> list:
        """The artists drawn for each site, in drawing order."""
        from matplotlib.axes import Axes

        fixed = {id(a) for a in [*self.static(), *self.islands()]} | {id(self.fig.patch)}
        out = []
        for artist in sorted(self.fig.get_children(), key=lambda a: a.get_zorder()):
            if isinstance(artist, Axes):
                inner = sorted(artist.get_children(), key=lambda a: a.get_zorder())
                out += [a for a in inner if id(a) not in fixed and a is not artist.patch]
            elif id(artist) not in fixed:
                out.append(artist)
        return out

    def render(self) -> np.ndarray:
        """Draw the figure; the RGB pixels, a view into the canvas valid until the next draw."""
        canvas = self.fig.canvas
        for ax in self.fig.axes:
            ax.viewLim  # noqa: B018 - applies pending autoscaling before the key is read
        key = self.key()
        islands = [a for a in self.islands() if a is not None and a.get_visible()]
        dynamic = self.dynamic()
        background = self._backgrounds.get(key)
        if background is None:
            for artist in dynamic + islands:
                artist.set_animated(True)
            try:
                canvas.draw()  # animated artists are left out
            finally:
                for artist in dynamic + islands:
                    artist.set_animated(False)
            background = canvas.copy_from_bbox(self.fig.bbox)
            _remember(self._backgrounds, key, background, _MAX_BACKGROUNDS)
        else:
            canvas.restore_region(background)
        renderer = canvas.get_renderer()
        for island in islands:
            stamp_key = (key, self.state(island))
            stamp = self._stamps.get(stamp_key)
            if stamp is None:
                island.draw(renderer)
                bbox = island.get_window_extent(renderer).padded(2)  # antialiased edges
                _remember(self._stamps, stamp_key, canvas.copy_from_bbox(bbox), _MAX_STAMPS)
            else:
                canvas.restore_region(stamp)
        for artist in dynamic:
            artist.draw(renderer)
        return np.asarray(canvas.buffer_rgba())[..., :3]


def _remember(cache: dict, key, value, size: int) -> None:
    """Put ``value`` in ``cache``, dropping the oldest entry beyond ``size`` entries."""
    if len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


class MeterFigure:
    """The meter figure: layout built once, redrawn for each meter by :meth:`update`."""

    def __init__(self, fig=None):
        import matplotlib
        import matplotlib.dates as mdates

        self.fig = fig = new_figure(METER_FIGSIZE, fig)
        gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.15], width_ratios=[1, 0.018],
                              left=0.075, right=0.93, top=0.845, bottom=0.07, hspace=0.62,
                              wspace=0.02)
        self.ax = ax = fig.add_subplot(gs[0, 0])
        self.axh = axh = fig.add_subplot(gs[1, 0])
        self.cax = cax = fig.add_subplot(gs[1, 1])

        # (1) demand vs expected vs peers; the grid lies beneath the data
        ax.set_axisbelow(True)
        ax.xaxis_date()
        self.peers = ax.fill_between([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], step="post",
                                     color="tab:green", alpha=0.18, lw=0)
        (self.demand,) = ax.plot([], [], color="tab:blue", lw=0.7)
        (self.expected,) = ax.plot([], [], color="black", lw=1.0, alpha=0.8)
        self.onset, self.onset_note = _onset_marker(ax)
        ax.set_ylabel("demand [kW]")
        _fixed_y_axis(ax, left_pt=36, nbins=6)
        ax.set_xlabel("local date")
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(alpha=0.3, lw=0.5)
        ax.set_title("Hourly demand against expected consumption and peers", fontsize=10, loc="left")

        # (2) day x hour heat map
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
        # the image lies above the (static) day axis, whose tick marks touch its edge
        axh.set_axisbelow(True)
        self.heat = axh.imshow(np.zeros((1, 24)), aspect="auto", cmap=cmap, vmin=0, vmax=1,
                               interpolation="nearest", origin="upper", extent=(0, 24, 1, 0),
                               rasterized=True, zorder=1)
        axh.yaxis_date()
        axh.set_xlim(0, 24)
        axh.set_xticks(np.arange(0, 25, 3))
        axh.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)])
        axh.set_xlabel("local hour of day")
        axh.set_ylabel("day")
        axh.yaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
        axh.yaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        self.heat_onset = axh.axhline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        self.heat_onset_note = axh.annotate(
            "", xy=(1.0, 0.0), xycoords=("axes fraction", "data"), xytext=(-4, -3),
            textcoords="offset points", ha="right", va="bottom", color="crimson", fontsize=9,
            fontweight="bold", visible=False,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        axh.set_title("Demand by day and hour (a load running round the clock shows as a band "
                      "across all 24 hours; grey = no data)", fontsize=10, loc="left")
        # The colour bar: the colour map as an image from 0 to the top of the scale.
        # (A matplotlib Colorbar rebuilds itself on every change of scale, which
        # costs more than the rest of the update.)
        self.scale = cax.imshow(np.linspace(0.0, 1.0, 256)[:, None], aspect="auto", cmap=cmap,
                                vmin=0.0, vmax=1.0, interpolation="nearest", origin="lower",
                                extent=(0, 1, 0, 1))
        cax.set_xticks([])
        cax.yaxis.tick_right()
        cax.yaxis.set_label_position("right")
        cax.set_ylabel("demand [kW]")
        _fixed_y_axis(cax, right_pt=27, nbins=5)

        # title lines
        self.title, self.summary, self.reasons = _title_lines(fig)

        self.layers = _Layers(fig, lambda: [
            ax.title, ax._left_title, ax._right_title, ax.xaxis,
            axh.title, axh._left_title, axh._right_title, axh.xaxis, axh.yaxis],
            islands=lambda: [ax.get_legend()])

    def update(self, d: MeterData) -> None:
        """Show meter ``d``: every artist that depends on the meter is set here."""
        ax, axh = self.ax, self.axh
        self.peers.set_data(d.edges_day, d.peer_low_kw, d.peer_high_kw)
        self.demand.set_data(d.time_day, d.kw)
        self.expected.set_data(d.time_day, d.expected_kw)
        ax.set_xlim(d.edges_day[0], d.edges_day[-1])
        ax.set_ylim(*d.ylim_kw)
        handles = [self.peers, self.demand, self.expected]
        labels = [d.peer_label, "metered demand (hourly)", d.expected_label]
        shown = d.onset_day is not None
        self.onset.set_visible(shown)
        self.onset_note.set_visible(shown)
        if shown:
            self.onset.set_xdata([d.onset_day, d.onset_day])
            self.onset_note.xy = (d.onset_day, 1.0)
            self.onset_note.set_text(d.onset_text)
            handles.append(self.onset)
            labels.append("onset (flags.csv)")
        legend = ax.get_legend()
        if legend is None or [t.get_text() for t in legend.get_texts()] != labels:
            # below the panel, clear of the data: drawn once per set of labels
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, -0.2), fontsize=8,
                      ncols=2, frameon=False, borderaxespad=0.0)

        n_days = d.heat_kw.shape[0]
        d0 = d.edges_day[0]
        self.heat.set_data(d.heat_kw)
        self.heat.set_extent((0, 24, d0 + n_days, d0))
        self.heat.set_clim(0, d.heat_max_kw)
        self.scale.set_extent((0, 1, 0, d.heat_max_kw))
        self.cax.set_ylim(0, d.heat_max_kw)
        axh.set_xlim(0, 24)
        axh.set_ylim(d0 + n_days, d0)
        shown = d.heat_onset_day is not None
        self.heat_onset.set_visible(shown)
        self.heat_onset_note.set_visible(shown)
        if shown:
            self.heat_onset.set_ydata([d.heat_onset_day, d.heat_onset_day])
            self.heat_onset_note.xy = (1.0, d.heat_onset_day)
            self.heat_onset_note.set_text(d.heat_onset_text)

        self.title.set_text(d.title)
        self.summary.set_text(d.summary)
        self.reasons.set_text(d.reasons)

    def render(self) -> np.ndarray:
        """The current meter's image, ``(height, width, 3)`` uint8."""
        return self.layers.render()


def _onset_marker(ax):
    """The dashed onset line of a time panel and its label at the top, both hidden until set."""
    line = ax.axvline(0.0, color="crimson", lw=1.6, ls="--", zorder=5, visible=False)
    note = ax.annotate(
        "", xy=(0.0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
        textcoords="offset points", ha="left", va="top", color="crimson", fontsize=9,
        fontweight="bold", visible=False)
    return line, note


def _fixed_y_axis(ax, *, left_pt=None, right_pt=None, nbins=4) -> None:
    """At most ``nbins`` + 1 round y ticks, and the y label at a fixed distance from the axes [pt].

    A fixed label position keeps the layout the same from site to site and
    spares matplotlib measuring every tick label to place it.
    """
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import offset_copy

    ax.yaxis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
    if left_pt is not None:
        transform = offset_copy(ax.transAxes, fig=ax.figure, x=-left_pt, units="points")
        ax.yaxis.set_label_coords(0.0, 0.5, transform=transform)
    else:
        transform = offset_copy(ax.transAxes, fig=ax.figure, x=right_pt, units="points")
        ax.yaxis.set_label_coords(1.0, 0.5, transform=transform)


class AssetFigure:
    """The asset figure: layout built once, redrawn for each asset by :meth:`update`."""

    def __init__(self, fig=None):
        import matplotlib.dates as mdates

        self.fig = fig = new_figure(ASSET_FIGSIZE, fig)
        gs = fig.add_gridspec(3, 1, height_ratios=[1.1, 0.8, 0.9], left=0.085, right=0.97,
                              top=0.855, bottom=0.07, hspace=0.5)
        self.ax = ax = fig.add_subplot(gs[0])
        self.axu = axu = fig.add_subplot(gs[1], sharex=ax)
        self.axs = axs = fig.add_subplot(gs[2], sharex=ax)
        for a in (ax, axu, axs):
            a.set_axisbelow(True)  # the grid lies beneath the data
            a.grid(alpha=0.3, lw=0.5)
        ax.xaxis_date()
        marker = {"marker": "o", "ms": 2.5}

        # (1) delivered vs metered (+ losses): the gap is what nobody pays for
        self.gap = ax.fill_between([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], interpolate=True,
                                   color="crimson", alpha=0.3, lw=0)
        (self.delivered,) = ax.plot([], [], color="black", lw=1.6, **marker)
        (self.metered,) = ax.plot([], [], color="tab:blue", lw=1.4, **marker)
        (self.accounted,) = ax.plot([], [], color="tab:blue", lw=1.0, ls=":")
        self.onset, self.onset_note = _onset_marker(ax)
        ax.set_ylabel("daily mean [kW]")
        _fixed_y_axis(ax, left_pt=36, nbins=6)
        ax.set_title("Power delivered into the asset against what its customer meters record "
                     "(daily mean; x 24 h = kWh per day)", fontsize=10, loc="left")
        ax.tick_params(labelbottom=False)

        # (2) losses and the unexplained load on their own scale
        axu.axhline(0, color="0.5", lw=0.8)
        (self.loss,) = axu.plot([], [], color="tab:orange", lw=1.3, **marker)
        (self.unexplained,) = axu.plot([], [], color="crimson", lw=1.5, **marker)
        self.onset_u = axu.axvline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        axu.set_ylabel("daily mean [kW]")
        _fixed_y_axis(axu, left_pt=36)
        axu.legend([self.loss, self.unexplained],
                   ["modelled technical losses", "unexplained load (delivered - metered - losses)"],
                   loc="upper left", fontsize=8, ncols=2, framealpha=0.9)
        axu.set_title("Modelled losses and the unexplained load", fontsize=10, loc="left")
        axu.tick_params(labelbottom=False)

        # (3) suspects (colours in rank order, as the default colour cycle gives them)
        self.suspects = [axs.plot([], [], color=color, lw=1.3, visible=False, **marker)[0]
                         for color in SUSPECT_COLORS]
        self.onset_s = axs.axvline(0.0, color="crimson", lw=1.6, ls="--", visible=False)
        self.no_suspects = axs.text(0.5, 0.5, "", transform=axs.transAxes, ha="center",
                                    va="center", color="0.4", visible=False)
        axs.set_ylabel("daily mean demand [kW]")
        _fixed_y_axis(axs, left_pt=36)
        axs.set_xlabel("local date")
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        axs.xaxis.set_major_locator(locator)
        axs.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))

        self.title, self.summary, self.reasons = _title_lines(fig)

        self.layers = _Layers(fig, lambda: [
            ax.title, ax._left_title, ax._right_title, ax.xaxis,
            axu.title, axu._left_title, axu._right_title, axu.xaxis,
            axs.title, axs._right_title, axs.xaxis])

    def update(self, d: AssetData) -> None:
        """Show asset ``d``: every artist that depends on the asset is set here."""
        ax, axu, axs = self.ax, self.axu, self.axs
        x = d.noon_day
        self.gap.set_data(x, d.accounted_kw, d.delivered_kw,
                          where=d.delivered_kw > d.accounted_kw)
        self.delivered.set_data(x, d.delivered_kw)
        self.metered.set_data(x, d.metered_kw)
        self.accounted.set_data(x, d.accounted_kw)
        ax.set_xlim(d.edges_day[0], d.edges_day[-1])
        ax.set_ylim(*d.ylim_balance_kw)
        shown = d.onset_day is not None
        for artist in (self.onset, self.onset_note, self.onset_u, self.onset_s):
            artist.set_visible(shown)
        handles = [self.gap, self.delivered, self.metered, self.accounted]
        labels = ["gap = unexplained load", "delivered (upstream meter)",
                  "metered (sum of customer meters)", "metered + modelled losses"]
        if shown:
            for line in (self.onset, self.onset_u, self.onset_s):
                line.set_xdata([d.onset_day, d.onset_day])
            self.onset_note.xy = (d.onset_day, 1.0)
            self.onset_note.set_text(d.onset_text)
            handles.append(self.onset)
            labels.append("onset (transformers.csv)")
        ax.legend(handles, labels, loc="lower left", fontsize=8, ncols=2, framealpha=0.9)

        self.loss.set_data(x, d.loss_kw)
        self.unexplained.set_data(x, d.unexplained_kw)
        axu.set_ylim(*d.ylim_unexplained_kw)

        handles, labels = [], []
        for line, label, kw in zip(self.suspects, d.suspect_labels, d.suspect_kw, strict=False):
            line.set_data(x, kw)
            handles.append(line)
            labels.append(label)
        for i, line in enumerate(self.suspects):
            line.set_visible(i < len(d.suspect_labels))
        if shown:
            handles.append(self.onset_s)
            labels.append("asset onset")
        if axs.get_legend() is not None:
            axs.get_legend().remove()
        if d.suspect_labels:
            axs.legend(handles, labels, loc="upper left", fontsize=8, ncols=3, framealpha=0.9)
        axs.set_ylim(*d.ylim_suspects_kw)
        axs.set_title(d.suspects_title, fontsize=10, loc="left")
        self.no_suspects.set_text(d.no_suspects_text)
        self.no_suspects.set_visible(bool(d.no_suspects_text))

        self.title.set_text(d.title)
        self.summary.set_text(d.summary)
        self.reasons.set_text(d.reasons)

    def render(self) -> np.ndarray:
        """The current asset's image, ``(height, width, 3)`` uint8."""
        return self.layers.render()


# =====================================================================================
# which template draws which data
# =====================================================================================
class Renderer:
    """Draws plot data with one template per figure kind, built on first use and reused.

    Call :meth:`render` inside :func:`local_rc`, once for many plots
    (entering it costs about a millisecond). Sites drawn one after another in
    the order of :func:`layout_key` share their static layer.
    """

    def __init__(self):
        self.templates = {}

    def render(self, data: MeterData | AssetData) -> np.ndarray:
        """The site's image, ``(height, width, 3)`` uint8 (a view, valid until the next call)."""
        kind = MeterFigure if isinstance(data, MeterData) else AssetFigure
        if kind not in self.templates:
            self.templates[kind] = kind()
        template = self.templates[kind]
        template.update(data)
        return template.render()


def layout_key(data: MeterData | AssetData) -> tuple:
    """Sites with equal keys share their static layer (date window, legend)."""
    if isinstance(data, MeterData):
        return ("meter", float(data.edges_day[0]), float(data.edges_day[-1]), data.peer_label,
                data.expected_label, data.onset_day is not None)
    return ("asset", float(data.edges_day[0]), float(data.edges_day[-1]))
