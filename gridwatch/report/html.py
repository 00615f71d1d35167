"""``report.html``: the analyst's nightly report, one self-contained file.

The page must open from a file share or as an e-mail attachment, so it
fetches nothing: styles and the small vanilla script are inline, plots are
embedded as ``data:image/png;base64`` URIs (those of the top
``report.embedded_plots`` flagged meters and assets; the other sites link to
their file under ``plots/``, so that a run flagging thousands of sites still
gives a page a browser opens), and a Content-Security-Policy
meta tag forbids every network fetch (``default-src 'none'``) and every
script other than the page's own (allowed by its SHA-256 hash).

Ids, reasons and config values come from the utility's files and are
treated as hostile (issue 4): every string is escaped with
``html.escape(..., quote=True)``, no event handler is built from data, the
table data for the script is JSON inside ``<script type="application/json">``
with ``<``, ``>`` and ``&`` escaped, and anchor ids are derived from site ids
through a slug plus a hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import re
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.atomic import write_text
from gridwatch.outputs import empty_topology, format_topology
from gridwatch.redact import redact
from gridwatch.report.places import (
    COORD_DECIMALS,
    INVALID,
    PLACED,
    asset_positions,
    crew_plan,
    geo_uri,
    meter_positions,
    run_meters,
)
from gridwatch.report.sitemap import MAP_NAME, STYLES, area_names, map_data, write_map
from gridwatch.topology_check import MIN_INFERRED_CONFIDENCE

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"

#: Unflagged meters without a case are listed up to this many rows (the full
#: list is ``flags.csv``); flagged meters, flagged assets and meters with a
#: case are always listed.
MAX_UNFLAGGED_ROWS = 500

#: Meters of ``topology.csv`` listed in the report, most confident first (the
#: full list is ``topology.csv``).
MAX_TOPOLOGY_ROWS = 200

#: Rows of the crew plan shown in the report (the full plan is ``inspections.csv``).
MAX_PLAN_ROWS = 2000

#: Monthly suspects and flagged daily meters listed in their section (the full monthly
#: list is ``monthly_suspects.csv``, every meter is in ``flags.csv``).
MAX_COARSE_ROWS = 200

#: Columns of the case list: (key, header, numeric).
CASE_COLUMNS = (
    ("rank", "Rank", True),
    ("site", "Site", False),
    ("transformer", "Transformer", False),
    ("kind", "Kind", False),
    ("onset", "Onset", False),
    ("kw", "Excess [kW]", True),
    ("kwh", "Energy [kWh]", True),
    ("money", "Money", True),
    ("score", "Score", True),
    ("status", "Case status", False),
    ("reasons", "Reasons", False),
)

_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029"}


def write_report(result, output_dir, *, plots: dict[str, str] | None = None,
                 cases: pd.DataFrame | None = None, embed_limit: int | None = None):
    """Write ``output_dir/report.html`` for one run, atomically.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
        The run: ``flags``, ``transformers``, ``issues``, ``info``
        (``run.json``) and ``balance`` (for the suspects).
    output_dir : str or os.PathLike
        The run's output directory; receives ``report.html``.
    plots : dict of str to str, optional
        Site id (meter or asset) -> PNG path relative to ``output_dir``
        (``plots/M00017.png``). Each file is embedded as a base64 data URI;
        a path that leaves ``output_dir``, is missing or is not a PNG is
        skipped (the section says so).
    cases : pandas.DataFrame, optional
        Case history, one row per site: ``meter_id`` and/or ``asset_id``
        (or ``site_id``, or ``case_id`` with ``site_kind`` ``meter``/``asset``
        as :meth:`gridwatch.cases.CaseStore.record_run` returns) and
        ``status`` (``new``, ``ongoing``, ``cleared``, ``closed``,
        ``suppressed``); any other columns (``outcome``,
        ``note``, dates) are shown in the site's section. Without it, "new
        since the last run" is ``n/a`` and statuses are empty.
    embed_limit : int, optional
        Embed the plots of the first ``embed_limit`` flagged meters (in the
        order of flags.csv, highest rank first) and of the first
        ``embed_limit`` flagged assets; the other sites' sections link to
        their file (``config.report.embedded_plots``). Default: embed all.

    Returns
    -------
    pathlib.Path
        The path of ``report.html``.

    Notes
    -----
    When meters have coordinates, the map of the flagged sites is written
    beside it as ``map.png`` (:mod:`gridwatch.report.sitemap`) and embedded.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    places = _Places(result)
    if places.map is not None:
        try:
            write_map(places.map, out / MAP_NAME)
            places.map_file = MAP_NAME
        except Exception as exc:  # noqa: BLE001 - a figure never sinks the night's run; said below
            if isinstance(exc, OSError):
                raise  # a disk that cannot take the file: the run's failure, as for any output
            log.warning("the map of the flagged sites could not be drawn: %s: %s",
                        type(exc).__name__, exc)
            places.map_error = f"{type(exc).__name__}: {exc}"
    html = render_report(result, out, plots=plots, cases=cases, embed_limit=embed_limit,
                         places=places)
    write_text(path, redact(html))  # no credential, whatever its source (issue 14)
    return path


def render_report(result, output_dir, *, plots: dict[str, str] | None = None,
                  cases: pd.DataFrame | None = None, embed_limit: int | None = None,
                  places=None) -> str:
    """The HTML text of :func:`write_report` (same parameters), without writing it.

    ``places`` is what :func:`write_report` computed of the sites' positions
    (and the map file it wrote); computed here, without a map image, when
    omitted.
    """
    output_dir = Path(output_dir)
    places = places if places is not None else _Places(result)
    flags = result.flags.reset_index(drop=True)
    transformers = result.transformers.reset_index(drop=True)
    info = result.info or {}
    dq = result.issues.to_frame()
    case_map = _case_map(cases)
    faults = _metering_faults(result, transformers)
    topology = _topology_rows(result)

    flagged = _is_true(flags[col.FLAGGED]) if len(flags) else np.zeros(0, dtype=bool)
    asset_flagged = (_is_true(transformers[col.FLAGGED]) if len(transformers)
                     else np.zeros(0, dtype=bool))
    embed = None
    if embed_limit is not None:
        embed = {_str(m) for m in flags.loc[flagged, col.METER_ID].head(embed_limit)}
        if len(transformers):
            embed |= {_str(a) for a in
                      transformers.loc[asset_flagged, col.ASSET_ID].head(embed_limit)}
    images = _load_images(output_dir, plots or {}, embed=embed, limit=embed_limit)
    rows = _case_rows(result, flags, flagged, transformers, asset_flagged, case_map)
    listed, hidden_count = _limit_rows(rows)

    money = _with_unit("Money", _currency(info))
    parts = [
        _headline(result, flags, flagged, asset_flagged, dq, cases, faults, topology),
        _case_list(listed, hidden_count, money=money),
        _map_section(places, output_dir),
        _crew_plan_section(places, flags, flagged, transformers, asset_flagged, money=money,
                           currency=_currency(info)),
        _site_sections(result, flags, flagged, transformers, asset_flagged, case_map, images,
                       places),
        _coarse_section(result, flags, flagged, places, money=money),
        _metering_fault_section(faults),
        _topology_section(topology, info, dq, flags, flagged, transformers, asset_flagged,
                          _asset_table(result)),
        _case_history(cases),
        _data_quality(dq),
        _transformers_table(transformers, asset_flagged, _asset_table(result)),
        _run_section(info),
    ]
    title = f"GridWatch report, as of {info.get('as_of', result.as_of)}"
    script = _SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")
    data_json = json.dumps({"columns": [c[0] for c in CASE_COLUMNS], "rows": listed},
                           ensure_ascii=False, allow_nan=False).translate(_JSON_ESCAPES)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(csp)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>"
        f"<p class=\"muted\">GridWatch {_e(info.get('gridwatch_version', ''))}, "
        f"run {_e(info.get('created_utc', ''))}. "
        "Sites whose consumption gained a steady, flat, round-the-clock load that their "
        "history, the weather and their peers do not explain.</p>"
        "<nav><a href=\"#summary\">Summary</a> <a href=\"#cases\">Case list</a> "
        "<a href=\"#map\">Map</a> <a href=\"#crew-plan\">Crew plan</a> "
        "<a href=\"#sites\">Sites</a> <a href=\"#coarse\">Daily and monthly meters</a> "
        "<a href=\"#metering-faults\">Metering faults</a> "
        "<a href=\"#topology\">Meters on the wrong transformer?</a> "
        "<a href=\"#history\">Case history</a> "
        "<a href=\"#data-quality\">Data quality</a> "
        "<a href=\"#transformers\">Transformers</a> <a href=\"#run\">Run</a></nav></header>\n"
        "<main>\n" + "\n".join(parts) + "\n</main>\n"
        f"<script type=\"application/json\" id=\"case-data\">{data_json}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


# --- helpers -------------------------------------------------------------------------------------

def _e(value) -> str:
    """HTML-escape any value (quotes included): safe in text and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_true(series: pd.Series) -> np.ndarray:
    """``flagged`` as booleans, whether it holds bools or the CSV's ``"true"``/``"false"``."""
    if series.dtype == bool:
        return series.to_numpy()
    return series.astype("string").str.lower().fillna("false").eq("true").to_numpy(dtype=bool)


def _num(value):
    """A finite float, or None (missing, NaN, empty string)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _str(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def _fmt(value, digits: int) -> str:
    x = _num(value)
    return "" if x is None else f"{x:,.{digits}f}"


def anchor_id(kind: str, site_id) -> str:
    """A safe, unique HTML id for a site: ``m-`` / ``a-`` + a slug + a hash of the id.

    The slug keeps only ``[A-Za-z0-9_-]`` (at most 40 characters); the hash
    keeps ids that slug alike apart.
    """
    text = str(site_id)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:40].strip("_") or "site"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{kind}-{slug}-{digest}"


def _case_map(cases: pd.DataFrame | None) -> dict:
    """(``meter``|``asset``, id) -> dict of the case row's fields."""
    if cases is None or len(cases) == 0:
        return {}
    out = {}
    for record in cases.to_dict("records"):
        record = {k: _str(v) for k, v in record.items()}
        if record.get("case_id") and record.get("site_kind") in ("meter", "asset"):
            # the shape gridwatch.cases.CaseStore.record_run returns
            out.setdefault((record["site_kind"], record["case_id"]), record)
            continue
        for key, kind in (("meter_id", "meter"), ("asset_id", "asset"), ("site_id", None)):
            site = record.get(key, "")
            if site:
                for k in ((kind,) if kind else ("meter", "asset")):
                    out.setdefault((k, site), record)
    return out


def _load_images(output_dir: Path, plots: dict, *, embed=None, limit=None) -> dict:
    """Site id -> its plot's HTML: the PNG as a base64 data URI, or a link to the file.

    Sites in ``embed`` (all when None) are embedded; the others get a link.
    Paths outside ``output_dir``, missing files and non-PNG files are skipped.
    """
    root = output_dir.resolve()
    images = {}
    for site, rel in plots.items():
        if not rel:
            continue
        path = (root / str(rel)).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue
        site = str(site)
        if embed is not None and site not in embed:
            href = urllib.parse.quote(path.relative_to(root).as_posix())
            images[site] = (f"<p class=\"muted\">Plot not embedded (the report embeds the "
                            f"plots of the top {limit} flagged meters and assets): "
                            f"<a href=\"{_e(href)}\">open {_e(path.relative_to(root).as_posix())}"
                            "</a></p>")
            continue
        with path.open("rb") as handle:
            data = handle.read()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        images[site] = f"<img class=\"plot\" src=\"{uri}\" alt=\"plot of {_e(site)}\">"
    return images


# --- the case list ------------------------------------------------------------------------------

def _case_rows(result, flags, flagged, transformers, asset_flagged, case_map) -> list[dict]:
    """One dict per listed site, in the default order: flagged meters, flagged assets, the rest."""
    meters, others = [], []
    for i, r in enumerate(flags.to_dict("records")):
        site = _str(r.get(col.METER_ID))
        case = case_map.get(("meter", site), {})
        row = {
            "rank": _num(r.get(col.RANK)), "site": site,
            "transformer": _str(r.get(col.TRANSFORMER_ID)),
            "kind": _str(r.get(col.KIND)), "onset": _str(r.get(col.ONSET)),
            "kw": _num(r.get(col.EXCESS_KW)), "kwh": _num(r.get(col.EXCESS_KWH)),
            "money": _num(r.get(col.EST_LOSS)), "score": _num(r.get(col.SCORE)),
            "status": case.get("status", ""), "reasons": _str(r.get(col.REASONS)),
            "flagged": bool(flagged[i]), "type": "meter",
            "anchor": anchor_id("m", site) if flagged[i] else "",
        }
        (meters if flagged[i] else others).append(row)
    assets = []
    table = _asset_table(result)
    for i, r in enumerate(transformers.to_dict("records")):
        if not asset_flagged[i]:
            continue
        site = _str(r.get(col.ASSET_ID))
        extra = table.get(site, {})
        case = case_map.get(("asset", site), {})
        assets.append({
            "rank": None, "site": site, "transformer": "",
            "kind": f"{col.KIND_HIDDEN_LOAD} (asset)", "onset": _str(r.get(col.ONSET)),
            "kw": _num(r.get(col.UNEXPLAINED_KW)), "kwh": _num(extra.get(col.EXCESS_KWH)),
            "money": None, "score": None, "status": case.get("status", ""),
            "reasons": _str(extra.get(col.REASONS)), "flagged": True, "type": "asset",
            "anchor": anchor_id("a", site),
        })
    return meters + assets + others


def _asset_table(result) -> dict:
    """Asset id -> row of the energy balance's table (for kWh and reasons), if any."""
    balance = getattr(result, "balance", None)
    if balance is None or balance.table is None or balance.table.empty:
        return {}
    return {str(r[col.ASSET_ID]): r for r in balance.table.to_dict("records")}


def _limit_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep flagged and cased rows, and the first :data:`MAX_UNFLAGGED_ROWS` others."""
    kept, n_other, hidden = [], 0, 0
    for row in rows:
        if row["flagged"] or row["status"]:
            kept.append(row)
        elif n_other < MAX_UNFLAGGED_ROWS:
            kept.append(row)
            n_other += 1
        else:
            hidden += 1
    return kept, hidden


def _currency(info: dict) -> str:
    """The currency of the tariffs (``report.currency``), '' when not configured."""
    return str(((info or {}).get("config") or {}).get("report", {}).get("currency", "") or "")


SCORE_EXPLAINED = (
    "The score (0 to 1) is the strength of the evidence for a steady, mining-like load: how "
    "far it stands out from the meter's own past and its peers, times how much it looks like a "
    "rig (round the clock, flat, not the weather); flagged sites score 0.5 to 1, the others "
    "below 0.5, and the rank follows the score (equal scores: the larger energy at stake first). "
    "A flag recommends a look, not a verdict: open the site's evidence and case history below, "
    "and confirm on site before any action."
)


def _with_unit(label: str, unit: str) -> str:
    return f"{label} [{unit}]" if unit else label


def _case_list(rows: list[dict], hidden_count: int, *, money: str = "Money") -> str:
    head = "".join(
        f"<th scope=\"col\" data-key=\"{key}\" class=\"{'num' if numeric else 'txt'}\""
        f" aria-sort=\"none\"><button type=\"button\">{_e(money if key == 'money' else label)}"
        "</button></th>"
        for key, label, numeric in CASE_COLUMNS
    )
    body = []
    for i, r in enumerate(rows):
        site = _e(r["site"])
        if r["anchor"]:
            site = f"<a href=\"#{r['anchor']}\">{site}</a>"
        if r["type"] == "asset":
            site += " <span class=\"tag\">asset</span>"
        status = _e(r["status"])
        if status:
            status = f"<span class=\"status st-{_e(_slug(r['status']))}\">{status}</span>"
        cls = "flagged" if r["flagged"] else ""
        body.append(
            f"<tr data-i=\"{i}\" class=\"{cls}\">"
            f"<td class=\"num\">{_fmt(r['rank'], 0)}</td><td class=\"id\">{site}</td>"
            f"<td class=\"id\">{_e(r['transformer'])}</td><td>{_e(r['kind'])}</td>"
            f"<td class=\"date\">{_e(r['onset'])}</td>"
            f"<td class=\"num\">{_fmt(r['kw'], 2)}</td><td class=\"num\">{_fmt(r['kwh'], 0)}</td>"
            f"<td class=\"num\">{_fmt(r['money'], 2)}</td><td class=\"num\">{_fmt(r['score'], 2)}</td>"
            f"<td>{status}</td><td class=\"reasons\">{_e(r['reasons'])}</td></tr>"
        )
    more = (f"<p class=\"muted\">{hidden_count:,} further unflagged meters are not listed here; "
            "flags.csv has every analysed meter.</p>" if hidden_count else "")
    return (
        "<section id=\"cases\"><h2>Case list</h2>"
        f"<p class=\"explain\">{_e(SCORE_EXPLAINED)}</p>"
        "<p class=\"muted\">Ranked: 1 is the most suspicious. Click a column header to sort "
        "(again to reverse); flagged rows are highlighted; a site links to its evidence.</p>"
        "<div class=\"controls\"><label>Filter <input type=\"search\" id=\"case-filter\" "
        "placeholder=\"id, transformer, kind, reason, status\" autocomplete=\"off\"></label> "
        "<label><input type=\"checkbox\" id=\"flagged-only\"> flagged only</label> "
        f"<span id=\"case-count\" class=\"muted\">{len(rows):,} rows</span></div>"
        "<div class=\"scroll\"><table id=\"case-table\" class=\"cases\">"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        f"{more}</section>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", str(text).lower())[:30]


# --- headline ----------------------------------------------------------------------------------

def _headline(result, flags, flagged, asset_flagged, dq, cases, faults=(), topology=None) -> str:
    kinds = flags[col.KIND].astype("string").fillna("") if len(flags) else pd.Series(dtype="string")
    n_visible = int((flagged & (kinds == col.KIND_VISIBLE).to_numpy(dtype=bool)).sum())
    n_hidden = int((flagged & (kinds == col.KIND_HIDDEN).to_numpy(dtype=bool)).sum())
    n_monthly = int((flagged & (kinds == col.KIND_MONTHLY).to_numpy(dtype=bool)).sum())
    kwh = float(np.nansum(pd.to_numeric(flags.loc[flagged, col.EXCESS_KWH], errors="coerce")))
    money_values = pd.to_numeric(flags.loc[flagged, col.EST_LOSS], errors="coerce")
    money = float(np.nansum(money_values))
    no_tariff = int(money_values.isna().sum())
    if cases is not None and "status" in cases.columns:
        new = f"{int((cases['status'].astype('string') == 'new').sum()):,}"
    else:
        new = "n/a"
    severity = dq["severity"].value_counts() if len(dq) else pd.Series(dtype="int64")
    dq_text = ", ".join(f"{int(severity.get(s, 0)):,} {s}" for s in ("error", "warning", "info"))
    cards = [
        ("Meters analysed", f"{len(flags):,}", ""),
        ("Meters flagged", f"{int(flagged.sum()):,}",
         f"{n_visible:,} visible load, {n_hidden:,} hidden (balance suspects)"
         + (f", {n_monthly:,} monthly pattern" if n_monthly else "")),
        ("Assets flagged", f"{int(asset_flagged.sum()):,}", "transformers / feeders with unmetered load"),
        ("New since last run", new, "" if cases is not None else "no case history given"),
        ("Energy at stake [kWh]", f"{kwh:,.0f}", "sum over flagged meters since onset"),
        (_with_unit("Money at stake", _currency(result.info)), f"{money:,.2f}",
         f"{no_tariff:,} flagged meter(s) without a tariff" if no_tariff else "at each meter's tariff"),
        ("Metering faults", f"{len(faults):,}",
         "assets whose upstream measurement is at fault (not theft)"),
        ("Meters on the wrong transformer?", f"{0 if topology is None else len(topology):,}",
         _topology_card_text(topology)),
        ("Data-quality findings", f"{len(dq):,}", dq_text),
    ]
    html_cards = "".join(
        f"<div class=\"card\"><div class=\"label\">{_e(a)}</div><div class=\"value\">{_e(b)}</div>"
        f"<div class=\"sub\">{_e(c)}</div></div>" for a, b, c in cards
    )
    return f"<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">{html_cards}</div></section>"


# --- per-site sections ---------------------------------------------------------------------------

def _kv(pairs) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table class=\"kv\">{rows}</table>"


def _figure(site: str, images: dict) -> str:
    return images.get(site, "<p class=\"muted\">No plot for this site.</p>")


_CASE_FIELDS = {  # what the case history says about a site, in the analyst's words
    "status": "case status",
    "excess_kw": "load at last flag [kW]",
    "first_seen": "first flagged",
    "last_seen": "last flagged",
    "n_events": "case events",
    "note": "case note",
    "history": "case history",
}


def _case_block(case: dict) -> list:
    """(label, html) rows of a site's case; the flag itself is shown above, not repeated."""
    rows = []
    for key, label in _CASE_FIELDS.items():
        value = case.get(key, "")
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            continue
        if key == "excess_kw":
            value = f"{float(value):.2f}"
        rows.append((label, _e(value)))
    return rows


def _reasons(text: str) -> str:
    items = [p.strip() for p in str(text).split(";") if p.strip()]
    if not items:
        return ""
    return "<ul class=\"reasons\">" + "".join(f"<li>{_e(p)}</li>" for p in items) + "</ul>"


def _site_sections(result, flags, flagged, transformers, asset_flagged, case_map, images,
                   places=None) -> str:
    places = places if places is not None else _Places(result)
    flagged_assets = {_str(a) for a in transformers.loc[asset_flagged, col.ASSET_ID]} \
        if len(transformers) else set()
    flagged_meters = {_str(m) for m in flags.loc[flagged, col.METER_ID]} if len(flags) else set()
    resolution = places.resolution
    monthly = places.monthly_rows
    parts = []
    for r in flags.loc[flagged].to_dict("records"):
        site = _str(r[col.METER_ID])
        tx = _str(r.get(col.TRANSFORMER_ID))
        tx_html = (f"<a href=\"#{anchor_id('a', tx)}\">{_e(tx)}</a>" if tx in flagged_assets
                   else _e(tx))
        pairs = [("rank", _fmt(r.get(col.RANK), 0)), ("kind", _e(r.get(col.KIND))),
                 ("transformer", tx_html), *places.network_rows(site),
                 ("location", places.meter_location(site)),
                 ("onset", _e(_str(r.get(col.ONSET))) or "before the window"),
                 ("excess [kW]", _fmt(r.get(col.EXCESS_KW), 2)),
                 ("energy since onset [kWh]", _fmt(r.get(col.EXCESS_KWH), 0)),
                 (_with_unit("money", _currency(result.info)),
                  _fmt(r.get(col.EST_LOSS), 2) or "no tariff"),
                 ("score", _fmt(r.get(col.SCORE), 2))]
        reads = resolution.get(site, "")
        if reads:
            pairs.insert(2, ("reads", _e(_READS_TEXT.get(reads, reads))))
        if site in monthly:
            pairs += _monthly_evidence(monthly[site])
        pairs += _case_block(case_map.get(("meter", site), {}))
        figure = images.get(site) or _COARSE_FIGURE.get(reads) or _figure(site, images)
        parts.append(
            f"<article class=\"site\" id=\"{anchor_id('m', site)}\"><h3>Meter {_e(site)}"
            f" <a class=\"top\" href=\"#cases\">back to the list</a></h3>"
            f"<div class=\"site-body\"><div>{_kv(pairs)}{_reasons(r.get(col.REASONS, ''))}</div>"
            f"<div>{figure}</div></div></article>"
        )
    table = _asset_table(result)
    suspects = _suspects(result)
    for r in transformers.loc[asset_flagged].to_dict("records") if len(transformers) else []:
        site = _str(r[col.ASSET_ID])
        extra = table.get(site, {})
        pairs = [("level", _e(_str(extra.get("level", "")))),
                 ("kind", _e(_kind_text(_str(r.get(col.KIND)), _str(extra.get("load_type"))))),
                 *places.asset_network_rows(site),
                 ("position", places.asset_location(site)),
                 ("onset", _e(_str(r.get(col.ONSET))) or "before the window"),
                 ("unexplained load [kW]", _fmt(r.get(col.UNEXPLAINED_KW), 2)),
                 ("energy since onset [kWh]", _fmt(extra.get(col.EXCESS_KWH), 0)),
                 ("meters under it", _fmt(extra.get("n_meters"), 0)),
                 ("modelled losses [kW]", _fmt(extra.get("loss_kw"), 2))]
        pairs += _case_block(case_map.get(("asset", site), {}))
        parts.append(
            f"<article class=\"site\" id=\"{anchor_id('a', site)}\"><h3>Asset {_e(site)}"
            f" <a class=\"top\" href=\"#cases\">back to the list</a></h3>"
            f"<div class=\"site-body\"><div>{_kv(pairs)}{_reasons(extra.get(col.REASONS, ''))}"
            f"<h4>Suspects</h4>{_suspect_table(site, r, suspects, flagged_meters)}</div>"
            f"<div>{_figure(site, images)}</div></div></article>"
        )
    if not parts:
        parts.append("<p>No site is flagged in this run.</p>")
    return "<section id=\"sites\"><h2>Flagged sites</h2>" + "".join(parts) + "</section>"


def _suspects(result) -> pd.DataFrame | None:
    balance = getattr(result, "balance", None)
    if balance is None or balance.suspects is None:
        return None
    return balance.suspects


def _suspect_table(asset: str, row: dict, suspects, flagged_meters: set) -> str:
    def link(meter):
        meter = _str(meter)
        if meter in flagged_meters:
            return f"<a href=\"#{anchor_id('m', meter)}\">{_e(meter)}</a>"
        return _e(meter)

    if suspects is not None and not suspects.empty:
        mine = suspects[suspects[col.ASSET_ID].astype(str) == asset].sort_values(col.RANK)
        if not mine.empty:
            body = "".join(
                f"<tr><td class=\"num\">{_fmt(s.get(col.RANK), 0)}</td><td class=\"id\">"
                f"{link(s.get(col.METER_ID))}</td><td class=\"num\">{_fmt(s.get('evidence'), 2)}</td>"
                f"<td>{'strong' if bool(s.get('strong')) else 'weak'}</td>"
                f"<td class=\"reasons\">{_e(s.get(col.REASONS, ''))}</td></tr>"
                for s in mine.to_dict("records"))
            return ("<table class=\"small\"><thead><tr><th class=\"num\">Rank</th><th>Meter</th>"
                    "<th class=\"num\">Evidence [0-1]</th><th>Strength</th><th>Reasons</th></tr>"
                    f"</thead><tbody>{body}</tbody></table>")
    ids = [m for m in _str(row.get(col.SUSPECTS)).split(";") if m]
    if not ids:
        return "<p class=\"muted\">No suspect stands out among the meters under this asset.</p>"
    return "<ol>" + "".join(f"<li>{link(m)}</li>" for m in ids) + "</ol>"


# --- where the sites are: positions, the map, the crew plan (issue 16 item 5) ---------------------

_READS_TEXT = {"daily": "one read per day (daily meter)",
               "monthly": "one billing read per month (monthly meter)"}
_COARSE_FIGURE = {
    "daily": ("<p class=\"muted\">No hourly plot: this meter is read once a day. Its evidence is "
              "the step in its daily energy, with the temperature fitted (reasons on the left); "
              "flatness within the day could not be judged.</p>"),
    "monthly": ("<p class=\"muted\">No hourly plot: this meter is read once a month. Its evidence is "
                "the comparison with similar premises month by month (on the left and in "
                "<a href=\"#coarse\">Daily and monthly meters</a>; monthly_suspects.csv).</p>"),
}


class _Places:
    """The sites' positions, the map and the crew plan of one run, computed once for the report."""

    def __init__(self, result):
        self.meters = run_meters(result)
        self.positions = meter_positions(self.meters)
        self.assets = asset_positions(self.meters, self.positions)
        info = result.info or {}
        self.map = map_data(self.positions, self.assets, result.flags, result.transformers,
                            as_of=str(info.get("as_of", getattr(result, "as_of", "")) or ""),
                            network=area_names(self.meters))
        self.map_file = None  # set once the map is written
        self.map_error = ""  # why it could not be drawn
        self.plan = crew_plan(result.flags, result.transformers, self.meters,
                              asset_kwh=_asset_kwh(result))
        self.resolution = _resolutions(result)
        monthly = getattr(result, "monthly_suspects", None)
        self.has_monthly_list = monthly is not None
        self.monthly = monthly if monthly is not None else pd.DataFrame()
        self.monthly_rows = ({_str(r[col.METER_ID]): r for r in self.monthly.to_dict("records")}
                             if len(self.monthly) else {})
        self._network = None
        if self.meters is not None and len(self.meters):
            m = self.meters
            ids = m[col.METER_ID].astype("string").fillna("").astype(str).to_numpy(dtype=object)
            self._network = pd.DataFrame(
                {k: (m[k].astype("string").fillna("").to_numpy(dtype=object) if k in m else "")
                 for k in (col.FEEDER_ID, col.SUBSTATION_ID)}, index=ids)
            self._network = self._network[~self._network.index.duplicated()]

    def network_rows(self, meter_id: str) -> list:
        """(label, html) of the meter's feeder and substation, as far as known."""
        if self._network is None or meter_id not in self._network.index:
            return []
        row = self._network.loc[meter_id]
        return [(label, _e(row[key])) for key, label in ((col.FEEDER_ID, "feeder"),
                                                           (col.SUBSTATION_ID, "substation"))
                if row[key]]

    def asset_network_rows(self, asset_id: str) -> list:
        """(label, html) of what lies above an asset: its feeder and substation."""
        if asset_id not in self.assets.index:
            return []
        row = self.assets.loc[asset_id]
        return [(label, _e(row[key])) for key, label in ((col.FEEDER_ID, "feeder"),
                                                           (col.SUBSTATION_ID, "substation"))
                if _str(row[key])]

    def meter_location(self, meter_id: str) -> str:
        """The meter's coordinates as a ``geo:`` link, or why there are none."""
        if meter_id not in self.positions.index:
            return "<span class=\"muted\">not in meters</span>"
        row = self.positions.loc[meter_id]
        if row["position"] == PLACED:
            return _geo_link(row[col.LAT], row[col.LON])
        if row["position"] == INVALID:
            return "<span class=\"muted\">invalid coordinates in meters</span>"
        return "<span class=\"muted\">no coordinates in meters</span>"

    def asset_location(self, asset_id: str) -> str:
        """The asset's position (the median of its meters') as a ``geo:`` link, or why there is none."""
        if asset_id not in self.assets.index:
            return "<span class=\"muted\">no meter lists it</span>"
        row = self.assets.loc[asset_id]
        if not np.isfinite(float(row[col.LAT])):
            return "<span class=\"muted\">none of its meters has coordinates</span>"
        return (_geo_link(row[col.LAT], row[col.LON])
                + f" <span class=\"muted\">(median of its {int(row['n_placed']):,} placed "
                "meters)</span>")


def _asset_kwh(result) -> pd.Series | None:
    """Each balanced asset's unexplained energy since its onset [kWh] (None without a balance)."""
    table = getattr(getattr(result, "balance", None), "table", None)
    if table is None or len(table) == 0 or col.EXCESS_KWH not in table:
        return None
    out = pd.Series(pd.to_numeric(table[col.EXCESS_KWH], errors="coerce").to_numpy(),
                    index=table[col.ASSET_ID].astype(str).to_numpy(dtype=object))
    return out[~out.index.duplicated()]


def _resolutions(result) -> dict:
    """Meter id -> ``"daily"`` or ``"monthly"`` for the meters read once a day or a month.

    From the run (``result.resolution``); for a result without it, the monthly
    suspects and the daily meters' reasons tell them.
    """
    given = getattr(result, "resolution", None)
    if given is not None:
        return {str(k): str(v) for k, v in pd.Series(given).items()}
    out = {}
    monthly = getattr(result, "monthly_suspects", None)
    if monthly is not None and len(monthly):
        out.update({str(m): "monthly" for m in monthly[col.METER_ID]})
    flags = result.flags
    if len(flags):
        kinds = flags[col.KIND].astype("string").fillna("")
        reasons = flags[col.REASONS].astype("string").fillna("")
        out.update({str(m): "monthly" for m in flags.loc[(kinds == col.KIND_MONTHLY).to_numpy(),
                                                         col.METER_ID]})
        out.update({str(m): "daily" for m in flags.loc[reasons.str.startswith("daily reads only")
                                                       .to_numpy(dtype=bool), col.METER_ID]})
    return out


def _geo_link(lat, lon) -> str:
    """``lat, lon`` (5 decimals) linked as ``geo:LAT,LON``: a phone opens its map application."""
    uri = geo_uri(lat, lon)
    if not uri:
        return ""
    return (f"<a class=\"geo\" href=\"{_e(uri)}\">{float(lat):.{COORD_DECIMALS}f}, "
            f"{float(lon):.{COORD_DECIMALS}f}</a>")


def _map_section(places: _Places, output_dir: Path) -> str:
    head = "<section id=\"map\"><h2>Where the sites are</h2>"
    data = places.map
    if data is None:
        counts = places.positions["position"].value_counts()
        bad = int(counts.get(INVALID, 0))
        why = ("no meter has valid coordinates (lat, lon) in meters" if bad
               else "coordinates were not given (no lat, lon in meters)")
        return (head + f"<p>No map: {_e(why)}"
                + (f"; {bad:,} meter(s) have invalid ones (out of range, only one of the two, "
                   "or 0, 0)" if bad else "")
                + ". The crew plan below groups the sites by feeder without positions. With lat "
                "and lon (WGS84 degrees) in meters the report draws the flagged sites on a map "
                "and gives each site's coordinates.</p></section>")
    image = ""
    if places.map_file:
        path = output_dir / places.map_file
        if path.is_file():
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            image = (f"<img class=\"map\" src=\"{uri}\" alt=\"map of the flagged sites\">"
                     f"<p class=\"muted\">The map is also <a href=\"{_e(places.map_file)}\">"
                     f"{_e(places.map_file)}</a>, to print for the crews.</p>")
    if not image:
        image = ("<p class=\"muted\">The map could not be drawn (" + _e(places.map_error)
                 + "); the crew plan has every site's position.</p>" if places.map_error
                 else "<p class=\"muted\">Map not drawn in this report.</p>")
    kinds = "; ".join(f"{STYLES[k][0]}: {n:,}" for k, n in data.legend)
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.notes)
    return (head + f"<p class=\"muted\">{_e(data.summary)}</p>"
            + (f"<p class=\"muted\">Drawn: {_e(kinds)}.</p>" if kinds else "")
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "") + image
            + "<p class=\"muted\">Drawn from the coordinates in meters, with no map tiles (no "
            "network): faint dots are meters, hollow triangles transformers (at the median of "
            "their meters), coloured marks the flagged sites. Areas far apart get their own "
            "panel, with an overview. Each site's coordinates are in its section below and in the "
            "crew plan; a coordinate link opens the phone's map application.</p></section>")


_SITE_TYPE_TEXT = {"meter": "meter", "transformer": "transformer", "feeder": "feeder",
                   "substation": "substation", "asset": "asset"}


def _crew_plan_section(places: _Places, flags, flagged, transformers, asset_flagged,
                       *, money: str = "Money", currency: str = "") -> str:
    plan = places.plan
    head = ("<section id=\"crew-plan\"><h2>Crew plan</h2>"
            "<p class=\"explain\">The flagged sites grouped by substation, feeder and transformer: "
            "one group is one feeder, a crew's day, the feeders with the most at stake first. A "
            "hidden load's case is its transformer (or feeder): the crew checks it and its top "
            "suspects, listed in its row and, when flagged themselves, right after it (their "
            "estimates are the asset's, counted once in the totals). inspections.csv has the "
            "same rows.</p>")
    if plan.empty:
        return head + "<p>No site is flagged in this run.</p></section>"
    flagged_meters = ({_str(m) for m in flags.loc[flagged, col.METER_ID]} if len(flags) else set())
    flagged_assets = ({_str(a) for a in transformers.loc[asset_flagged, col.ASSET_ID]}
                      if len(transformers) else set())

    def site_link(site, kind):
        if kind == "meter" and site in flagged_meters:
            return f"<a href=\"#{anchor_id('m', site)}\">{_e(site)}</a>"
        if kind != "meter" and site in flagged_assets:
            return f"<a href=\"#{anchor_id('a', site)}\">{_e(site)}</a>"
        return _e(site)

    shown = plan.head(MAX_PLAN_ROWS)
    n_groups = int(plan[col.CREW_GROUP].max())
    body, group = [], None
    for r in shown.to_dict("records"):
        if r[col.CREW_GROUP] != group:
            group = r[col.CREW_GROUP]
            where = ", ".join(f"{label} {_str(r[key])}" for key, label in
                              ((col.SUBSTATION_ID, "substation"), (col.FEEDER_ID, "feeder"))
                              if _str(r[key]))
            if not _str(r[col.FEEDER_ID]):
                tx = _str(r[col.TRANSFORMER_ID])
                where = ", ".join(w for w in (where, f"transformer {tx}" if tx else "") if w)
                where = (where + " (no feeder in meters)") if where else "no network data in meters"
            total_money = _fmt(r[col.FEEDER_EST_LOSS], 2)
            if total_money:
                total_money = f"{total_money} {currency}" if currency else f"money {total_money}"
            body.append(
                f"<tr class=\"group\"><th colspan=\"11\">Group {int(group)}: {_e(where)} - "
                f"{int(r[col.FEEDER_SITES]):,} case(s), {_fmt(r[col.FEEDER_EXCESS_KW], 2)} kW"
                + (f", {_e(total_money)}" if total_money else "") + "</th></tr>")
        site, kind = _str(r[col.SITE_ID]), _str(r[col.SITE_TYPE])
        part_of = _str(r[col.CASE_ID])
        case = "" if part_of == site else f" <span class=\"tag\">with {_e(part_of)}</span>"
        suspects = _str(r[col.SUSPECTS]).replace(";", "; ")
        body.append(
            f"<tr><td class=\"num\">{int(r[col.STOP])}</td><td class=\"id\">"
            f"{_e(_str(r[col.TRANSFORMER_ID]))}</td><td class=\"id\">{site_link(site, kind)}"
            f"{case}</td><td>{_e(_SITE_TYPE_TEXT.get(kind, kind))}</td>"
            f"<td class=\"num\">{_fmt(r[col.RANK], 0)}</td><td>{_e(_str(r[col.KIND]))}</td>"
            f"<td class=\"date\">{_e(_str(r[col.ONSET]))}</td>"
            f"<td class=\"num\">{_fmt(r[col.EXCESS_KW], 2)}</td>"
            f"<td class=\"num\">{_fmt(r[col.EST_LOSS], 2)}</td>"
            f"<td class=\"date\">{_geo_link(r[col.LAT], r[col.LON]) or '<span class=muted>none</span>'}"
            f"</td><td class=\"id\">{_e(suspects)}</td></tr>")
    more = len(plan) - len(shown)
    note = (f"<p class=\"muted\">{more:,} more row(s) in inspections.csv (the report shows the first "
            f"{MAX_PLAN_ROWS:,}).</p>" if more > 0 else "")
    return (head + f"<p class=\"muted\">{len(plan):,} site(s) in {n_groups:,} group(s). Rank: in the "
            "case list (assets have none); stop: the order within the group.</p>"
            "<div class=\"scroll\"><table class=\"plan\"><thead><tr><th class=\"num\">Stop</th>"
            "<th>Transformer</th><th>Site</th><th>Type</th><th class=\"num\">Rank</th><th>Kind</th>"
            "<th>Onset</th><th class=\"num\">Excess [kW]</th>"
            f"<th class=\"num\">{_e(money)}</th><th>Position (lat, lon)</th><th>Suspects</th></tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div>{note}</section>")


def _monthly_evidence(row: dict) -> list:
    """(label, html) rows of a monthly suspect's evidence (its monthly_suspects.csv row)."""
    pairs = [("valid months", _fmt(row.get("months"), 0)),
             ("kWh per day (warm months)", _fmt(row.get("kwh_per_day"), 1)),
             ("similar premises' kWh per day", _fmt(row.get("peer_kwh_per_day"), 1)),
             ("ratio to them, last 12 months", _fmt(row.get("peer_ratio"), 2)),
             ("warm / cold months' ratio", f"{_fmt(row.get('summer_ratio'), 2)} / "
                                           f"{_fmt(row.get('winter_ratio'), 2)}"),
             ("month-to-month CV", _fmt(row.get("stability_cv"), 3)),
             ("similar premises", _e(_str(row.get("peers")))),
             ("rank by money (monthly list)", _fmt(row.get(col.RANK), 0))]
    return [(k, v) for k, v in pairs if v and v.strip(" /")]


def _coarse_section(result, flags, flagged, places: _Places, *, money: str = "Money") -> str:
    head = ("<section id=\"coarse\"><h2>Daily and monthly meters</h2>"
            "<p class=\"explain\">Meters read once a day or once a month are judged at their own "
            "resolution. A daily meter is flagged (visible_load) on a persisting step in its daily "
            "energy, with the temperature fitted; flatness within the day cannot be seen, so its "
            "score is capped. A monthly meter is flagged (monthly_pattern) on the Irkutsk signs: at "
            "least twice its similar premises in the warm months, no seasonal drop, stable month "
            "to month. Neither has an hourly plot.</p>")
    resolution = places.resolution
    if not resolution and not places.has_monthly_list:
        return head + "<p>None in this run: every meter has interval data.</p></section>"
    ids = flags[col.METER_ID].astype(str).to_numpy(dtype=object) if len(flags) else np.zeros(0, object)
    reads = np.array([resolution.get(m, "") for m in ids], dtype=object)
    rows = []
    for name, what in (("daily", "daily reads"), ("monthly", "monthly billing reads")):
        at = reads == name
        rows.append(f"<tr><td>{_e(what)}</td><td class=\"num\">{int(at.sum()):,}</td>"
                    f"<td class=\"num\">{int((at & flagged).sum()):,}</td></tr>")
    counts = ("<table class=\"small kv\"><thead><tr><th>Meters with</th><th class=\"num\">Analysed"
              "</th><th class=\"num\">Flagged</th></tr></thead><tbody>" + "".join(rows)
              + "</tbody></table>")
    flagged_ids = {str(m) for m in ids[flagged]} if len(ids) else set()

    def link(meter):
        meter = _str(meter)
        return (f"<a href=\"#{anchor_id('m', meter)}\">{_e(meter)}</a>" if meter in flagged_ids
                else _e(meter))

    # the monthly list, ranked by money, as monthly_suspects.csv
    monthly = places.monthly
    if places.has_monthly_list:
        if len(monthly):
            shown = monthly.head(MAX_COARSE_ROWS)
            body = "".join(
                f"<tr><td class=\"num\">{_fmt(r.get(col.RANK), 0)}</td><td class=\"id\">"
                f"{link(r.get(col.METER_ID))}</td><td class=\"id\">{_e(_str(r.get(col.TRANSFORMER_ID)))}"
                f"</td><td>{_e(_str(r.get('peers')))}</td><td class=\"date\">{_e(_str(r.get(col.ONSET)))}"
                f"</td><td class=\"num\">{_fmt(r.get('kwh_per_day'), 1)}</td>"
                f"<td class=\"num\">{_fmt(r.get('peer_kwh_per_day'), 1)}</td>"
                f"<td class=\"num\">{_fmt(r.get('peer_ratio'), 2)}</td>"
                f"<td class=\"num\">{_fmt(r.get('summer_ratio'), 2)} / {_fmt(r.get('winter_ratio'), 2)}"
                f"</td><td class=\"num\">{_fmt(r.get('stability_cv'), 3)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EXCESS_KW), 2)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EXCESS_KWH), 0)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EST_LOSS), 2)}</td></tr>"
                for r in shown.to_dict("records"))
            more = len(monthly) - len(shown)
            monthly_html = (
                "<h3>Monthly suspects, ranked by money</h3><p class=\"muted\">The list a supplier "
                f"hands on (monthly_suspects.csv): {len(monthly):,} premises"
                + (f", the first {MAX_COARSE_ROWS:,} shown" if more > 0 else "") + ". Onset: the "
                "month of the rise (empty: high throughout).</p><div class=\"scroll\"><table>"
                "<thead><tr><th class=\"num\">Rank by money</th><th>Meter</th><th>Transformer</th>"
                "<th>Similar premises</th><th>Onset</th><th class=\"num\">kWh/day</th>"
                "<th class=\"num\">Peers' kWh/day</th><th class=\"num\">Ratio, 12 months</th>"
                "<th class=\"num\">Warm / cold ratio</th><th class=\"num\">Month-to-month CV</th>"
                "<th class=\"num\">Excess [kW]</th><th class=\"num\">Energy [kWh]</th>"
                f"<th class=\"num\">{_e(money)}</th></tr></thead><tbody>{body}</tbody></table>"
                "</div>")
        else:
            monthly_html = "<h3>Monthly suspects</h3><p>None flagged in this run.</p>"
    else:
        monthly_html = ""
    # the flagged daily meters
    daily = flags.loc[flagged & (reads == "daily")] if len(flags) else flags
    if (reads == "daily").any():
        if len(daily):
            shown = daily.head(MAX_COARSE_ROWS)
            body = "".join(
                f"<tr><td class=\"num\">{_fmt(r.get(col.RANK), 0)}</td><td class=\"id\">"
                f"{link(r.get(col.METER_ID))}</td><td class=\"id\">{_e(_str(r.get(col.TRANSFORMER_ID)))}"
                f"</td><td class=\"date\">{_e(_str(r.get(col.ONSET)))}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EXCESS_KW), 2)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EXCESS_KWH), 0)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.EST_LOSS), 2)}</td>"
                f"<td class=\"num\">{_fmt(r.get(col.SCORE), 2)}</td></tr>"
                for r in shown.to_dict("records"))
            daily_html = (
                "<h3>Flagged daily meters</h3><p class=\"muted\">In the order of the case list"
                + (f"; the first {MAX_COARSE_ROWS:,} of {len(daily):,}" if len(daily) > len(shown)
                   else "") + ".</p><div class=\"scroll\"><table><thead><tr><th class=\"num\">Rank"
                "</th><th>Meter</th><th>Transformer</th><th>Onset</th><th class=\"num\">Excess [kW]"
                "</th><th class=\"num\">Energy [kWh]</th>"
                f"<th class=\"num\">{_e(money)}</th><th class=\"num\">Score</th></tr></thead>"
                f"<tbody>{body}</tbody></table></div>")
        else:
            daily_html = "<h3>Flagged daily meters</h3><p>None flagged in this run.</p>"
    else:
        daily_html = ""
    return head + counts + monthly_html + daily_html + "</section>"


# --- network faults: metering faults and the map ------------------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _ratio_reason(reasons: str) -> str | None:
    """The reason naming a ratio change ("metering fault: ... ratio ..."), or None."""
    for part in reasons.split("; "):
        if part.startswith("metering fault:") and "ratio" in part:
            return part
    return None


def _metering_faults(result, transformers: pd.DataFrame) -> list[dict]:
    """One dict per asset of ``kind = metering_fault``, in the order of ``transformers.csv``.

    The fault's factor and clock offset come from the energy balance's table
    (``ratio_factor``, ``clock_offset_h``); the date of a ratio change is the
    one its reason names. ``ratio_factor`` is also set for a change that only
    looks proportional (a hint, not a fault): beside a clock offset, a ratio
    change is listed only when a reason names it.
    """
    if transformers.empty or col.KIND not in transformers:
        return []
    kinds = transformers[col.KIND].astype("string").fillna("")
    ids = transformers.loc[(kinds == col.KIND_METERING_FAULT).to_numpy(dtype=bool), col.ASSET_ID]
    table = _asset_table(result)
    out = []
    for site in (_str(a) for a in ids):  # a loop over the faulty assets, to format text
        extra = table.get(site, {})
        reasons = _str(extra.get(col.REASONS))
        hours, factor = _num(extra.get("clock_offset_h")), _num(extra.get("ratio_factor"))
        faults, when, fixes = [], [], []
        if hours:
            faults.append("SCADA clock offset")
            when.append(f"{abs(hours):g} h {'ahead of' if hours > 0 else 'behind'} the meters "
                        "(corrected in this run)")
            fixes.append("correct the SCADA clock")
        ratio = _ratio_reason(reasons)
        if factor is not None and (ratio is not None or not hours):
            faults.append(f"CT or meter ratio change (x{factor:.3f})")
            date = _DATE.search(ratio or "")
            when.append(f"from {date.group(0)}" if date else "see the reasons")
            fixes.append("check the CT ratio and the meter constant")
        if not faults:  # a result without the balance's table: kind only
            faults, when = ["upstream measurement fault"], ["see transformers.csv"]
        out.append({"site": site, "level": _str(extra.get("level")), "fault": "; ".join(faults),
                    "when": "; ".join(when), "reasons": reasons,
                    "action": "not theft: fix the measurement"
                              + (f" ({'; '.join(fixes)})" if fixes else "")})
    return out


def _metering_fault_section(faults: list[dict]) -> str:
    head = ("<section id=\"metering-faults\"><h2>Metering faults</h2>"
            "<p class=\"muted\">Assets whose upstream measurement, not their customers, explains "
            "the gap between what they deliver and what their meters record: a ratio change "
            "(a CT or meter constant changed: the gap grows in proportion to the load at every "
            "hour) or a clock offset (the SCADA series is the meters' sum shifted by whole hours; "
            "shifted back before the balance). They are never flagged as hidden load. "
            "Not theft: fix the measurement.</p>")
    if not faults:
        return head + "<p>None found.</p></section>"
    body = "".join(
        f"<tr id=\"{anchor_id('f', r['site'])}\"><td class=\"id\">{_e(r['site'])}</td>"
        f"<td>{_e(r['level'])}</td><td>{_e(r['fault'])}</td><td>{_e(r['when'])}</td>"
        f"<td class=\"reasons\">{_e(r['reasons'])}</td><td>{_e(r['action'])}</td></tr>"
        for r in faults)
    return (head + "<div class=\"scroll\"><table><thead><tr><th>Asset</th><th>Level</th>"
            "<th>Fault</th><th>Date or offset</th><th>Reasons</th><th>What to do</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div></section>")


def _topology_rows(result) -> pd.DataFrame:
    """``topology.csv``'s rows, most confident first (equal confidence: by meter id)."""
    rows = getattr(result, "topology", None)
    if rows is None:
        balance = getattr(result, "balance", None)
        rows = format_topology(getattr(balance, "topology", None))
    if rows is None or len(rows) == 0:
        return empty_topology()
    rows = rows.reset_index(drop=True)
    confidence = pd.to_numeric(rows[col.CONFIDENCE], errors="coerce").fillna(0.0).to_numpy()
    order = np.lexsort((rows[col.METER_ID].astype(str).to_numpy(), -confidence))
    return rows.iloc[order].reset_index(drop=True)


def _topology_card_text(topology: pd.DataFrame | None) -> str:
    if topology is None or len(topology) == 0:
        return "meters whose listed transformer is doubtful (topology.csv)"
    sure = int((pd.to_numeric(topology[col.CONFIDENCE], errors="coerce")
                >= MIN_INFERRED_CONFIDENCE).sum())
    return f"{sure:,} with confidence >= {MIN_INFERRED_CONFIDENCE:g} (topology.csv)"


_MAP_ERROR = "a map error, not a theft"


def _topology_section(topology: pd.DataFrame, info: dict, dq: pd.DataFrame, flags, flagged,
                      transformers, asset_flagged, table: dict) -> str:
    config = (info.get("config") or {}).get("balance") or {}
    inferred = bool(config.get("use_inferred_topology", False))
    n_moved = 0
    if len(dq):
        moved = dq[dq["code"] == "meters.transformer_inferred"]
        n_moved = int(moved["meter_id"].dropna().astype(str).replace("", np.nan).nunique())
    if inferred:
        used = (f"This run balanced on the inferred map (balance.use_inferred_topology = true): "
                f"{n_moved:,} meter(s) were balanced under their likely transformer "
                "(data_quality code meters.transformer_inferred).")
    else:
        used = ("This run balanced on the map as listed in meters; set "
                "balance.use_inferred_topology = true to balance each meter with confidence >= "
                f"{MIN_INFERRED_CONFIDENCE:g} and a likely transformer under that transformer "
                "until the map is corrected.")
    head = ("<section id=\"topology\"><h2>Meters on the wrong transformer?</h2>"
            "<p class=\"explain\">Each meter below leaves its hour-to-hour changes in the "
            "upstream energy of another transformer of its feeder (the likely one) and is "
            "missing from that of the transformer it is listed under. A meter on the wrong "
            "transformer makes one transformer look as if energy were stolen and its sibling as "
            "if its meters recorded more than it delivers: a map error, not a theft. "
            "Check the network map (GIS, a site visit) for these meters and correct their "
            "transformer_id in meters. " + _e(used) + "</p>")
    if len(topology) == 0:
        body = head + "<p>None found.</p>"
    else:
        flagged_meters = ({_str(m) for m in flags.loc[flagged, col.METER_ID]} if len(flags)
                          else set())
        flagged_assets = ({_str(a) for a in transformers.loc[asset_flagged, col.ASSET_ID]}
                          if len(transformers) else set())

        def meter(m):
            m = _str(m)
            return f"<a href=\"#{anchor_id('m', m)}\">{_e(m)}</a>" if m in flagged_meters else _e(m)

        def asset(a):
            a = _str(a)
            if not a:
                return "<span class=\"muted\">none with upstream data</span>"
            return f"<a href=\"#{anchor_id('a', a)}\">{_e(a)}</a>" if a in flagged_assets else _e(a)

        shown = topology.head(MAX_TOPOLOGY_ROWS)
        rows = "".join(
            f"<tr><td class=\"id\">{meter(r.get(col.METER_ID))}</td>"
            f"<td class=\"id\">{asset(r.get(col.LISTED_TRANSFORMER_ID))}</td>"
            f"<td class=\"id\">{asset(r.get(col.LIKELY_TRANSFORMER_ID))}</td>"
            f"<td class=\"num\">{_fmt(r.get(col.CONFIDENCE), 2)}</td>"
            f"<td class=\"reasons\">{_e(_str(r.get(col.EVIDENCE)))}</td></tr>"
            for r in shown.to_dict("records"))
        more = len(topology) - len(shown)
        note = (f"<p class=\"muted\">{more:,} more meter(s) with less confidence are in "
                "topology.csv.</p>" if more > 0 else "")
        body = (head + f"<p class=\"muted\">{len(topology):,} meter(s), most confident first "
                "(confidence 0 to 1; topology.csv has every one).</p>"
                "<div class=\"scroll\"><table><thead><tr><th>Meter</th><th>Listed transformer</th>"
                "<th>Likely transformer</th><th class=\"num\">Confidence [0-1]</th>"
                f"<th>Evidence</th></tr></thead><tbody>{rows}</tbody></table></div>{note}")
    # unexplained loads the balance put down to the map (a sibling's matching fall or deficit)
    twins = [(a, _str(r.get(col.REASONS))) for a, r in table.items()
             if _MAP_ERROR in _str(r.get(col.REASONS))]
    if twins:
        rows = "".join(f"<tr><td class=\"id\">{_e(a)}</td><td class=\"reasons\">{_e(text)}</td></tr>"
                       for a, text in twins)
        body += ("<h3>Unexplained loads put down to the map</h3><p class=\"muted\">Not flagged: "
                 "a sibling transformer of the same feeder misses as much energy as these "
                 "deliver unmetered.</p><table class=\"small\"><thead><tr><th>Asset</th>"
                 f"<th>Reasons</th></tr></thead><tbody>{rows}</tbody></table>")
    return body + "</section>"


# --- data quality, transformers, run -------------------------------------------------------------

def _case_history(cases: pd.DataFrame | None) -> str:
    """Every case this run touched, with its status and its history of runs and decisions."""
    head = "<section id=\"history\"><h2>Case history</h2>"
    if cases is None or len(cases) == 0 or "case_id" not in cases.columns:
        return head + "<p class=\"muted\">No case history for this run.</p></section>"
    cols = [("case_id", "Site"), ("site_kind", "Kind"), ("status", "Status"),
            ("first_seen", "First seen"), ("note", "Note"), ("history", "History")]
    cols = [(k, label) for k, label in cols if k in cases.columns]
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(_str(r.get(k)))}</td>" for k, _ in cols) + "</tr>"
        for r in cases.to_dict("records"))
    return (head + "<p class=\"muted\">Sites flagged in this run or cleared by it; statuses are "
            "new, ongoing, cleared, closed (with the inspection outcome) and suppressed.</p>"
            "<div class=\"scroll\"><table class=\"kv\"><thead><tr>"
            + "".join(f"<th>{_e(label)}</th>" for _, label in cols)
            + f"</tr></thead><tbody>{rows}</tbody></table></div></section>")


def _data_quality(dq: pd.DataFrame) -> str:
    if dq.empty:
        return "<section id=\"data-quality\"><h2>Data quality</h2><p>No findings.</p></section>"
    frame = dq.copy()
    frame["meter_id"] = frame["meter_id"].astype("string").fillna("")
    frame["has_meter"] = frame["meter_id"].where(frame["meter_id"] != "")
    grouped = (frame.groupby(["code", "severity", "table", "action"], sort=False, dropna=False)
               .agg(count=("count", "sum"), meters=("has_meter", "nunique"),
                    detail=("detail", "first"))
               .reset_index())
    body = "".join(
        f"<tr class=\"sev-{_e(_slug(r['severity']))}\"><td class=\"code\">{_e(r['code'])}</td>"
        f"<td>{_e(r['severity'])}</td><td>{_e(r['table'])}</td><td>{_e(r['action'])}</td>"
        f"<td class=\"num\">{int(r['count']):,}</td><td class=\"num\">{int(r['meters']):,}</td>"
        f"<td class=\"reasons\">{_e(r['detail'])}</td></tr>"
        for r in grouped.to_dict("records"))
    return (
        "<section id=\"data-quality\"><h2>Data quality</h2>"
        "<p class=\"muted\">Every repair and refusal, summed by code; data_quality.csv has one row "
        "per meter.</p><div class=\"scroll\"><table><thead><tr><th>Code</th><th>Severity</th>"
        "<th>Table</th><th>Action</th><th class=\"num\">Count [rows or cells]</th>"
        "<th class=\"num\">Meters</th><th>Detail</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


_KIND_TEXT = {col.KIND_HIDDEN_LOAD: "hidden load", col.KIND_METERING_FAULT: "metering fault"}
_LOAD_TYPE_TEXT = {"new_load": "new load", "preexisting_load": "load running before the window"}


def _kind_text(kind: str, load_type: str = "") -> str:
    """The asset's ``kind`` in words, with its code (and a hidden load's type)."""
    if not kind:
        return ""
    text = f"{_KIND_TEXT.get(kind, kind)} ({kind})"
    if load_type:
        text += f": {_LOAD_TYPE_TEXT.get(load_type, load_type)}"
    return text


def _transformers_table(transformers: pd.DataFrame, asset_flagged, table: dict | None = None) -> str:
    if transformers.empty:
        return ("<section id=\"transformers\"><h2>Transformers</h2><p>No upstream data: no energy "
                "balance in this run.</p></section>")
    body = []
    for i, r in enumerate(transformers.to_dict("records")):
        site = _str(r[col.ASSET_ID])
        kind = _str(r.get(col.KIND))
        if asset_flagged[i]:
            name = f"<a href=\"#{anchor_id('a', site)}\">{_e(site)}</a>"
        elif kind == col.KIND_METERING_FAULT:
            name = f"<a href=\"#{anchor_id('f', site)}\">{_e(site)}</a>"
        else:
            name = _e(site)
        load_type = _str((table or {}).get(site, {}).get("load_type"))
        cls = "flagged" if asset_flagged[i] else ("fault" if kind == col.KIND_METERING_FAULT else "")
        body.append(
            f"<tr class=\"{cls}\"><td class=\"id\">{name}</td>"
            f"<td>{'yes' if asset_flagged[i] else 'no'}</td><td>{_e(_kind_text(kind, load_type))}</td>"
            f"<td class=\"num\">{_fmt(r.get(col.UNEXPLAINED_KW), 2)}</td>"
            f"<td class=\"date\">{_e(_str(r.get(col.ONSET)))}</td>"
            f"<td class=\"id\">{_e(_str(r.get(col.SUSPECTS)).replace(';', '; '))}</td></tr>")
    return (
        "<section id=\"transformers\"><h2>Transformers</h2><div class=\"scroll\"><table>"
        "<thead><tr><th>Asset</th><th>Flagged</th><th>Kind</th><th class=\"num\">Unexplained [kW]</th>"
        "<th>Onset</th><th>Suspects</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _flatten(obj, prefix="") -> list[tuple[str, object]]:
    if isinstance(obj, dict):
        if not obj:
            return [(prefix, "{}")] if prefix else []
        out = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def _value(v) -> str:
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _run_section(info: dict) -> str:
    meta = [(k, info.get(k)) for k in ("as_of", "created_utc", "gridwatch_version", "python",
                                        "input_dir") if k in info]
    meta += [(f"window.{k}", v) for k, v in (info.get("window") or {}).items()]
    counts = info.get("counts") or {}
    table_rows, headline = [], []
    for name, value in counts.items():
        if isinstance(value, dict) and "in" in value:
            dropped = value.get("dropped_by_reason") or {}
            reasons = "<br>".join(f"{_e(k)}: {int(v):,}" for k, v in dropped.items())
            table_rows.append(
                f"<tr><td>{_e(name)}</td><td class=\"num\">{_fmt(value.get('in'), 0)}</td>"
                f"<td class=\"num\">{_fmt(value.get('used'), 0)}</td>"
                f"<td class=\"num\">{_fmt(sum(int(v) for v in dropped.values()), 0)}</td>"
                f"<td class=\"code\">{reasons}</td></tr>")
        else:
            headline.append((name, value))
    timings = info.get("timings_s") or {}
    config = _flatten(info.get("config") or {})

    def kv(pairs):
        return _kv((k, _e(_value(v))) for k, v in pairs)

    return (
        "<section id=\"run\"><h2>Run</h2><div class=\"cols\">"
        f"<div><h3>Run</h3>{kv(meta)}<h3>Timings [s]</h3>{kv(timings.items())}</div>"
        "<div><h3>Input counts [rows]</h3><table><thead><tr><th>Table</th><th class=\"num\">In</th>"
        "<th class=\"num\">Used</th><th class=\"num\">Dropped or excluded</th><th>By reason</th>"
        f"</tr></thead><tbody>{''.join(table_rows)}</tbody></table>{kv(headline)}</div></div>"
        f"<h3>Configuration</h3><div class=\"config\">{kv(config)}</div></section>"
    )


_CSS = """
:root { --fg:#1d232a; --muted:#5f6b77; --line:#d9dee3; --bg:#fff; --hl:#fff4d6; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1360px; padding: 0 20px 40px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px; } h4 { margin: 10px 0 4px; font-size: 13px; }
a { color: var(--accent); } .muted { color: var(--muted); } nav a { margin-right: 12px; }
header p { margin: 2px 0 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.card .label { color: var(--muted); font-size: 12px; } .card .value { font-size: 22px; font-weight: 600;
  font-variant-numeric: tabular-nums; } .card .sub { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.date { white-space: nowrap; } td.id { font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 12px; overflow-wrap: break-word; min-width: 10ch; max-width: 26ch; }
td.reasons { min-width: 28ch; }
.scroll { overflow: auto; max-height: 70vh; border: 1px solid var(--line); }
.scroll thead th { position: sticky; top: 0; z-index: 1; }
tr.flagged td { background: var(--hl); }
tr.fault td { background: #e8f0fa; }
tr.sev-error td { background: #fde2e1; }
.cases th button { all: unset; cursor: pointer; display: block; width: 100%; }
.cases th.num button { text-align: right; }
.cases th[aria-sort="ascending"] button::after { content: " \\25B2"; }
.cases th[aria-sort="descending"] button::after { content: " \\25BC"; }
.cases th button:focus-visible { outline: 2px solid var(--accent); }
.controls { margin: 6px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
.controls input[type=search] { width: 30ch; padding: 3px 6px; }
.tag { white-space: nowrap; font-size: 11px; color: var(--muted); border: 1px solid var(--line);
       border-radius: 3px; padding: 0 3px; }
.status { font-size: 12px; padding: 0 4px; border-radius: 3px; background: #e8edf2; }
.st-new { background: #fde2e1; } .st-ongoing { background: #ffe9c2; }
.st-closed, .st-cleared, .st-suppressed { background: #e4eee4; }
.site { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 12px; margin: 12px 0; }
.site h3 a.top { font-size: 12px; font-weight: normal; margin-left: 10px; }
.site-body { display: grid; grid-template-columns: minmax(300px, 1fr) minmax(300px, 1.6fr); gap: 16px; }
.kv { width: auto; }
.kv th { background: none; font-weight: normal; color: var(--muted); white-space: nowrap; }
.kv td { overflow-wrap: anywhere; }
ul.reasons { margin: 8px 0; padding-left: 20px; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); }
img.map { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
ul.notes { margin: 4px 0 8px; padding-left: 20px; color: var(--muted); }
table.plan tr.group th { background: #e8eef5; text-align: left; font-weight: 600; }
a.geo { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.small { font-size: 12px; }
.cols { display: grid; grid-template-columns: minmax(300px, 1fr) minmax(400px, 1.5fr); gap: 24px; }
td.code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; white-space: nowrap; }
.config { columns: 2 420px; } .config table { width: 100%; } .config tr { break-inside: avoid; }
@media (max-width: 900px) { .site-body { grid-template-columns: 1fr; } }
@media print { .controls, nav { display: none; } .scroll { max-height: none; overflow: visible; } }
"""

# Static: no data is ever formatted into it (its hash is in the page's CSP).
_SCRIPT = """
(function () {
  "use strict";
  var blob = document.getElementById("case-data");
  var table = document.getElementById("case-table");
  if (!blob || !table) { return; }
  var data = JSON.parse(blob.textContent);
  var cols = data.columns, rows = data.rows;
  var tbody = table.tBodies[0];
  var trs = Array.prototype.slice.call(tbody.rows);
  var search = document.getElementById("case-filter");
  var only = document.getElementById("flagged-only");
  var counter = document.getElementById("case-count");
  var haystack = rows.map(function (r) {
    return [r.site, r.transformer, r.kind, r.onset, r.status, r.reasons].join(" ").toLowerCase();
  });
  var numeric = {};
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    numeric[th.getAttribute("data-key")] = th.classList.contains("num");
  });
  var state = { key: null, dir: 1 };

  function compare(key, dir) {
    return function (a, b) {
      var x = rows[a.getAttribute("data-i")][key], y = rows[b.getAttribute("data-i")][key];
      var ex = (x === null || x === ""), ey = (y === null || y === "");
      if (ex || ey) { return ex === ey ? 0 : (ex ? 1 : -1); }  /* blanks always last */
      if (numeric[key]) { return dir * (x - y); }
      return dir * String(x).localeCompare(String(y), undefined, { numeric: true, sensitivity: "base" });
    };
  }

  function sortBy(th) {
    var key = th.getAttribute("data-key");
    state.dir = (state.key === key) ? -state.dir : (numeric[key] && key !== "rank" ? -1 : 1);
    state.key = key;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
      c.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
    var sorted = trs.slice().sort(compare(key, state.dir));
    var frag = document.createDocumentFragment();
    sorted.forEach(function (tr) { frag.appendChild(tr); });
    tbody.appendChild(frag);
  }

  function applyFilter() {
    var q = search.value.trim().toLowerCase();
    var shown = 0;
    trs.forEach(function (tr) {
      var i = tr.getAttribute("data-i");
      var ok = (!only.checked || rows[i].flagged) && (!q || haystack[i].indexOf(q) !== -1);
      tr.hidden = !ok;
      if (ok) { shown += 1; }
    });
    counter.textContent = shown + " of " + trs.length + " rows";
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.querySelector("button").addEventListener("click", function () { sortBy(th); });
  });
  search.addEventListener("input", applyFilter);
  only.addEventListener("change", applyFilter);
  applyFilter();
})();
"""
