"""Simulate labelled smart-meter datasets in the contract layout.

:func:`simulate_dataset` writes a dataset directory laid out as
``docs/data-contract.md`` describes (``meters.csv``, ``readings``, ``weather.csv``,
``upstream``) together with ``labels.json``, the ground truth that
:mod:`gridwatch.evaluation` scores a run against.

The population is a mix of ordinary meters (residential, commercial,
industrial, agricultural), mining rigs (the positives), look-alike loads that
a naive detector confuses with a rig (storage heaters, heat pumps and
resistive heating, EV charging, new occupants, thermostatic cycling loads,
stuck registers, licensed steady loads) and hidden rigs wired around the meter
(``bypass``), visible only in the transformer's upstream energy. With
``network_faults`` the network data get a utility's metering faults and
mapping errors too (CT ratio changes, SCADA clock offsets and outages,
meters listed under the wrong transformer), labelled.

Everything is generated on a 15-minute grid as one ``time x meter`` array per
block of meters (no Python loop per reading) and aggregated to each meter's
own interval. All randomness comes from one ``numpy.random.Generator`` seeded
by ``seed``: the same arguments give byte-identical files.

Calibration
-----------
Residential households follow the EDRP Scottish sample (622 homes,
half-hourly, spring 2009; ``docs/field.md``): mean demand 0.44 kW
(log-normal, median 0.39 kW, sigma 0.52, clipped to 0.05-2.4 kW), half-hourly
coefficient of variation about 1.1, 5th-percentile floor about 0.15-0.25 of
the mean, a weekday profile with a morning bump near 08:00 and an evening
peak near 19:30 and a later, fuller weekend day. The profile is a three-bump
parametric curve fitted to the EDRP mean shape (the data themselves are not
used at run time). Rig figures: Antminer S9 1.35 kW, S19 3.25 kW, S19j Pro
2.8-3.1 kW, single GPUs 0.5-1 kW.
"""

from __future__ import annotations

import contextlib
import math
import zoneinfo
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy.signal import lfilter

from gridwatch import columns as col
from gridwatch import loads
from gridwatch.atomic import atomic_path, write_json

__all__ = [
    "BYPASS_KINDS",
    "DEFAULT_BYPASS_KIND_MIX",
    "DEFAULT_CLASS_MIX",
    "DEFAULT_SCENARIO_MIX",
    "FIELD_RIG_TYPE_MIX",
    "FIELD_SCENARIO_MIX",
    "HIDDEN_TYPES",
    "LABEL_TYPES",
    "LOOKALIKE_TYPES",
    "POSITIVE_TYPES",
    "PV_HOME",
    "RIG_TYPES",
    "UTILITY_COLUMNS",
    "export_as_utility",
    "simulate_dataset",
    "suppressed_meters",
    "write_config",
]

#: The config file :func:`write_config` writes beside a simulated dataset.
CONFIG_NAME = "gridwatch.toml"

# --- label vocabulary ----------------------------------------------------------------
#: Meters that carry a rig the meter itself records.
POSITIVE_TYPES = ("rig", "rig_preexisting")
#: Meters whose rig is wired around the meter (seen only upstream).
HIDDEN_TYPES = ("bypass",)
#: Legitimate loads that resemble a rig in some respect.
LOOKALIKE_TYPES = (
    "night_storage_heating",
    "electric_heating",
    "ev_charging",
    "growing_household",
    "cycling_load",
    "frozen_meter",
    "suppressed_licensed",
    "heat_pump",
    "pv_inverter_failure",
    "small_constant_load",
    "move_in",
    "new_freezer",
)
#: Ordinary homes with rooftop PV (label type of a normal home given PV by ``pv_share``).
PV_HOME = "pv_home"
#: How a rig behaves (``labels[...]["rig_type"]`` of ``rig`` and ``rig_preexisting`` meters):
#: ``steady`` round the clock (a third curtailed 2-4 h at the evening peak, short outages),
#: ``staged`` installed in stages, ``intermittent`` off 10-30 % of hours in blocks of 1-6 h,
#: ``peak_avoiding`` off 16-20 h, ``crypto_heater`` full power when cold and throttled to
#: 50-70 % above 12 C, ``gpu_small`` 0.35-0.5 kW with ripple and restarts, ``behind_pv`` a
#: rig in a home with rooftop PV, ``winter_only`` running until the weather warms,
#: ``summer_only`` switched on when it warms.
RIG_TYPES = ("steady", "staged", "intermittent", "peak_avoiding", "crypto_heater", "gpu_small",
             "behind_pv", "winter_only", "summer_only")
_ONSET_ONLY_RIG_TYPES = ("staged", "summer_only")  # need an onset in the window
_PREEXISTING_ONLY_RIG_TYPES = ("winter_only",)  # ran before the window
#: Every label type, ``normal`` first.
LABEL_TYPES = ("normal", *POSITIVE_TYPES, *HIDDEN_TYPES, *LOOKALIKE_TYPES, PV_HOME)

#: Default fraction of meters of each label type; ``normal`` is the remainder.
DEFAULT_SCENARIO_MIX = {
    "rig": 0.03,
    "rig_preexisting": 0.008,
    "bypass": 0.01,
    "night_storage_heating": 0.025,
    "electric_heating": 0.025,
    "ev_charging": 0.025,
    "growing_household": 0.025,
    "cycling_load": 0.025,
    "frozen_meter": 0.02,
    "suppressed_licensed": 0.02,
    "heat_pump": 0.0,
    "pv_inverter_failure": 0.0,
    "small_constant_load": 0.0,
    "move_in": 0.0,
    "new_freezer": 0.0,
}

#: A field population as a utility meets it in 2026 (issue on field-realistic detection):
#: rigs at about 1 in 70 meters, of every behaviour, and the look-alikes of a 2026 grid.
#: Use with ``rig_type_mix=FIELD_RIG_TYPE_MIX`` and ``pv_share`` 0.1-0.3.
FIELD_SCENARIO_MIX = {
    "rig": 0.008,
    "rig_preexisting": 0.006,
    "bypass": 0.004,
    "night_storage_heating": 0.01,
    "electric_heating": 0.01,
    "ev_charging": 0.02,
    "growing_household": 0.01,
    "cycling_load": 0.01,
    "frozen_meter": 0.005,
    "suppressed_licensed": 0.005,
    "heat_pump": 0.03,
    "pv_inverter_failure": 0.01,
    "small_constant_load": 0.015,
    "move_in": 0.01,
    "new_freezer": 0.015,
}
#: Share of each rig behaviour among rigs (a type that cannot have the rig's timing, e.g.
#: ``winter_only`` for a rig with an onset, is redrawn among the others).
FIELD_RIG_TYPE_MIX = {
    "steady": 0.1, "staged": 0.12, "intermittent": 0.12, "peak_avoiding": 0.1,
    "crypto_heater": 0.12, "gpu_small": 0.1, "behind_pv": 0.12, "winter_only": 0.16,
    "summer_only": 0.12,
}

#: How a ``bypass`` meter's rig is wired around it (``labels[...]["bypass_kind"]``):
#: ``separate_line`` a rig on its own line, the household's meter untouched;
#: ``whole_house`` the whole household goes around the meter from the onset (the
#: meter keeps recording 0-3 % of it) and the rig with it; ``partial`` 30-70 % of
#: the household's load and the rig go around the meter.
BYPASS_KINDS = ("separate_line", "whole_house", "partial")

#: Default share of each bypass kind among the ``bypass`` meters.
DEFAULT_BYPASS_KIND_MIX = {"separate_line": 1 / 3, "whole_house": 1 / 3, "partial": 1 / 3}

#: Default fraction of meters of each customer class.
DEFAULT_CLASS_MIX = {
    "residential": 0.75,
    "commercial": 0.15,
    "industrial": 0.06,
    "agricultural": 0.04,
}

_CLASSES = ("residential", "commercial", "industrial", "agricultural")
_RES, _COM, _IND, _AGR = range(4)

# Relative preference of each label type for each customer class
# (residential, commercial, industrial, agricultural).
_TYPE_CLASS_WEIGHTS = {
    "rig": (0.75, 0.15, 0.05, 0.05),
    "rig_preexisting": (0.75, 0.15, 0.05, 0.05),
    "bypass": (1.0, 0.0, 0.0, 0.0),
    "night_storage_heating": (1.0, 0.0, 0.0, 0.0),
    "electric_heating": (0.85, 0.15, 0.0, 0.0),
    "ev_charging": (0.9, 0.1, 0.0, 0.0),
    "growing_household": (1.0, 0.0, 0.0, 0.0),
    "cycling_load": (0.9, 0.0, 0.0, 0.1),
    "frozen_meter": (0.75, 0.15, 0.06, 0.04),
    "suppressed_licensed": (0.2, 0.6, 0.15, 0.05),
    "heat_pump": (1.0, 0.0, 0.0, 0.0),
    "pv_inverter_failure": (1.0, 0.0, 0.0, 0.0),
    "small_constant_load": (1.0, 0.0, 0.0, 0.0),
    "move_in": (1.0, 0.0, 0.0, 0.0),
    "new_freezer": (1.0, 0.0, 0.0, 0.0),
}
# Order in which types take their meters (bypass first: one per transformer).
_ASSIGN_ORDER = ("bypass", *POSITIVE_TYPES, *LOOKALIKE_TYPES)

STEP_MINUTES = 15  # simulation grid [min]
_STEPS_PER_HOUR = 60 // STEP_MINUTES
_STEPS_PER_DAY = 24 * _STEPS_PER_HOUR
_STEP_HOURS = STEP_MINUTES / 60.0
_CHUNK_METERS = 2000  # meters simulated together (bounded memory)

# Residential mean-shape parameters (base, then amplitude, centre [h], width [h]
# of a morning, a midday and an evening bump), least-squares fit to the mean
# normalised EDRP profile (weekday rmse 0.07, weekend 0.05).
_RES_PROFILE = {
    False: (0.35, (0.46, 7.93, 1.24), (0.59, 11.01, 2.76), (1.30, 19.50, 3.03)),
    True: (0.35, (0.22, 8.84, 1.12), (0.87, 11.17, 2.59), (1.22, 19.44, 3.31)),
}

# Rig units: name -> (low, high) draw [kW].
_RIG_UNITS = {
    "gpu": (0.5, 1.0),
    "s9": (1.35, 1.35),
    "s19": (3.25, 3.25),
    "s19j_pro": (2.8, 3.1),
}
_RIG_UNIT_P = (0.25, 0.30, 0.35, 0.10)
_BALANCE_TEMPERATURE_C = 15.5  # heating degree base [degrees C]

# Metering faults and mapping errors (``network_faults``, issue 13 item 4).
_NETWORK_FAULT_SPAWN_KEY = (13, 4)  # a key the chunk generators (keys (0,), (1,) ...) never take
_CT_RATIO_SHARE = 0.03  # of transformers
_SCADA_OUTAGE_SHARE = 0.02
_CT_FACTOR_UP = (1.04, 1.12)  # 70 % of the changes read high
_CT_FACTOR_DOWN = (0.88, 0.96)
_CT_FACTOR_UP_P = 0.7
_CLOCK_OFFSET_HOURS = (-2, -1, 1, 2)
_CLOCK_OFFSET_P = (0.15, 0.35, 0.35, 0.15)
_SCADA_OUTAGE_HOURS = 72
_SWAP_SHARE = 1 / 3  # of mismapped meters, in pairs

_REGIONS = (  # name, lat, lon, temperature offset [degrees C]
    ("north", 55.86, -4.25, -1.5),
    ("central", 53.48, -2.24, 0.0),
    ("south", 51.45, -0.97, 1.0),
)


# =====================================================================================
# public API
# =====================================================================================
def simulate_dataset(
    out_dir,
    *,
    n_meters=300,
    days=60,
    as_of="2026-03-31",
    seed=0,
    timezone="Europe/London",
    fmt="parquet",
    scenario_mix=None,
    dirty=True,
    upstream=True,
    class_mix=None,
    interval_minutes=None,
    bypass_kind_mix=None,
    rig_type_mix=None,
    pv_share=0.0,
    export_share=0.75,
    network_faults=False,
    mismap_share=None,
    metering_fault_share=0.03,
    daily_meters=0,
    monthly_meters=0,
) -> dict:
    """Write a labelled synthetic dataset in the ``docs/data-contract.md`` layout.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Directory to write into (created if missing). Receives ``meters.csv``,
        ``readings.{parquet|csv}``, ``weather.csv``, ``upstream.{parquet|csv}``
        (when ``upstream``) and ``labels.json``.
    n_meters : int, default 300
        Number of meters.
    days : int, default 60
        Full local days simulated, the last one being ``as_of`` [days].
    as_of : str or datetime.date, default "2026-03-31"
        Last simulated day (``YYYY-MM-DD``, local).
    seed : int, default 0
        Seed of the one random generator used; same arguments, same files.
    timezone : str, default "Europe/London"
        IANA zone of the customers: day boundaries, daily profiles, the
        offsets written in CSV timestamps.
    fmt : {"parquet", "csv"}, default "parquet"
        Format of ``readings`` and ``upstream``. Parquet timestamps are
        tz-aware UTC; CSV timestamps are ISO 8601 local times with offset.
    scenario_mix : dict of str to float, optional
        Fraction of meters of each label type (keys from :data:`LABEL_TYPES`
        except ``normal``, which takes the remainder). Missing keys take
        :data:`DEFAULT_SCENARIO_MIX`. Counts are ``round(fraction * n_meters)``.
    dirty : bool, default True
        Inject gaps, duplicate rows (identical and conflicting), out-of-order
        blocks, negative values and spikes into ``readings`` (under 1 % of
        rows); ``labels["dirty"]`` counts them.
    upstream : bool, default True
        Write transformer energy (15-minute intervals) and simulate ``bypass``
        meters. When False there is no upstream table and no bypass.
    class_mix : dict of str to float, optional
        Fraction of meters per customer class (``residential``,
        ``commercial``, ``industrial``, ``agricultural``); default
        :data:`DEFAULT_CLASS_MIX`. Normalised to sum 1.
    interval_minutes : {15, 30, 60}, optional
        Give every meter this interval (default: a realistic mix, mostly 30).
    bypass_kind_mix : dict of str to float, optional
        Relative share of each of :data:`BYPASS_KINDS` among the ``bypass``
        meters (missing kinds take 0 when given; default
        :data:`DEFAULT_BYPASS_KIND_MIX`, a third each). Normalised to sum 1;
        counts by largest remainder, assigned in random order.
    rig_type_mix : dict of str to float, optional
        Relative share of each of :data:`RIG_TYPES` among the rigs (e.g.
        :data:`FIELD_RIG_TYPE_MIX`). Default: the classic rigs (steady, a
        quarter of the new ones installed in two stages), whose
        ``rig_type`` is ``steady`` or ``staged``.
    pv_share : float, default 0
        Share of the ordinary residential homes with rooftop PV (label type
        :data:`PV_HOME`); ``behind_pv`` rigs and ``pv_inverter_failure``
        homes have PV too. With any PV, ``readings`` has a ``kwh_export``
        column, and the upstream energy is the net (it may be negative).
    export_share : float, default 0.75
        Share of the PV homes whose meter reads its export register (the
        others are import-only: ``kwh_export`` empty).
    network_faults : bool, default False
        Add the metering faults and mapping errors of a utility's network
        data (issue 13, item 4), labelled: CT ratio changes and SCADA clock
        offsets in the upstream energy of a few transformers, 72-hour SCADA
        outages, and meters listed in ``meters.csv`` under another
        transformer of their feeder (see Notes). Needs ``upstream``. When
        False the files are byte-identical to a dataset simulated without
        this option.
    mismap_share : float, optional
        Share of meters listed under a wrong transformer (0..1). Default
        0.05 with ``network_faults``, else 0 (a positive share needs
        ``network_faults``).
    metering_fault_share : float, default 0.03
        With ``network_faults``: share of the transformers with a CT ratio
        change, and again with a clock offset (0..0.3; tests raise it to
        measure the fault tests on more cases).
    daily_meters, monthly_meters : int, default 0
        Meters read once a day / once a month added to the interval meters
        (issue 16: a mixed population), with 14 months of reads, electric
        heating and rigs (:func:`gridwatch.simulate_coarse.add_coarse_meters`);
        their labels are under ``labels["coarse_meters"]``. With 0 the files
        are those of a dataset simulated without this option.

    Returns
    -------
    dict
        The labels, exactly as written to ``labels.json``: ``as_of``,
        ``timezone``, ``seed``, ``n_meters``, ``days``, ``scenario_mix``,
        ``meters`` (``{meter_id: {"type", "onset", "rig_kw", "transformer_id",
        "bypass_kind", "diverted_kw", "rig_type", "end", "pv_kwp",
        "export_register"}}`` with ``onset`` a ``YYYY-MM-DD`` string
        or None, ``rig_kw`` [kW] or None, ``bypass_kind`` one of
        :data:`BYPASS_KINDS` for ``bypass`` meters (None otherwise),
        ``diverted_kw`` the household load [kW] that went around the meter,
        averaged over the last 7 days after the onset, 0 for a
        ``separate_line`` bypass, None for other meters, ``rig_type`` one of
        :data:`RIG_TYPES` for rigs (None otherwise), ``end`` the first day
        without a ``winter_only`` rig (None when it ran to the end),
        ``pv_kwp`` the rooftop PV [kWp] and ``export_register`` whether the
        meter reads its export, both None without PV), ``transformers``
        (``{asset_id: {"hidden_kw", "onset", "culprit", "bypass_kind"}}``,
        ``hidden_kw`` = ``rig_kw + diverted_kw`` of the culprit: what the
        transformer delivers that its meters do not record) and ``dirty``
        (counts of injected defects, upstream gaps included).

        With ``network_faults`` only: every meter also has
        ``listed_transformer_id`` (its transformer in ``meters.csv``;
        ``transformer_id`` stays the true one), ``mismapped`` (bool),
        ``swap`` (bool: listed under the transformer of ``swap_with``, a
        meter listed under its own) and ``swap_with`` (meter id or None);
        every transformer has ``metering_fault`` (None,
        ``{"kind": "ct_ratio", "factor", "start", "date"}`` with ``start``
        the local ``YYYY-MM-DDTHH:MM`` of the first scaled 15-minute
        interval and ``date`` its day, or ``{"kind": "clock_offset",
        "hours"}``) and ``scada_outage`` (None or ``{"start", "hours": 72}``);
        ``network_faults`` counts them (``ct_ratio``, ``clock_offset``,
        ``scada_outage`` transformers, ``mismapped`` meters, ``swapped``
        meters and ``swap_pairs``, ``mismap_share``) and the upstream rows
        they removed (``scada_outage_rows``, ``clock_offset_dropped_rows``).

    Raises
    ------
    ValueError
        On an unknown label type or class, fractions outside 0..1 or summing
        above 1, an unknown time zone or format, or non-positive sizes.

    Notes
    -----
    ``onset`` is the local date of the first interval with the load. A staged
    rig's onset is its first unit and ``rig_kw`` the final total. Rigs that
    curtail at peak hours or have outages keep their nominal ``rig_kw``.
    ``rig_preexisting`` rigs run for the whole window (``onset`` None).
    Gaps are only placed before the last 3 days so that recent onsets stay
    observable. Upstream energy is the meters' true consumption (bypass
    loads and the household load diverted around a meter included, frozen
    or missing readings not) plus no-load and quadratic load losses, times a
    CT ratio error of up to +-0.5 %, plus noise; with ``dirty`` about 10 %
    of transformers also miss a block of 1-6 h (70 %) or 12-48 h of
    upstream intervals, before the last 3 days.

    With ``network_faults`` (all drawn from a generator of their own):

    - *CT ratio change*: on about 3 % of the transformers (at least one
      when there are 10 or more), from one 15-minute interval on a day 25-85 %
      into the window (any time of day) to the end, the upstream energy is
      multiplied by a factor from 1.04-1.12 (70 %) or 0.88-0.96;
    - *clock offset*: on about 3 % of the others, the whole upstream series
      is stamped ``h`` hours off (``h`` in -2, -1, +1, +2, mostly +-1): the
      energy of true time ``t`` is written at ``t + h``; rows pushed out of
      the window are dropped;
    - *SCADA outage*: on about 2 % of the others (at least one when there
      are 10 or more transformers, none in windows under 6 days), 72 h of
      upstream intervals are missing, ending before the last 3 days;
    - *mismapped meters*: ``mismap_share`` of the meters on feeders of two
      or more transformers (never a ``bypass`` meter) are listed under
      another transformer of their feeder; a third of them in swaps (two
      meters on two transformers exchange their listed transformer). Only
      ``transformer_id`` in ``meters.csv`` changes: the energy still flows
      through the true transformer.

    Neither metering fault is put on a transformer with a ``bypass`` meter.

    Examples
    --------
    >>> labels = simulate_dataset("/tmp/gw_demo", n_meters=50, days=20)  # doctest: +SKIP
    >>> labels["meters"]["M000001"]["type"]  # doctest: +SKIP
    'normal'
    """
    n_meters = int(n_meters)
    days = int(days)
    if n_meters < 1:
        raise ValueError(f"n_meters must be at least 1, not {n_meters}")
    if days < 2:
        raise ValueError(f"days must be at least 2, not {days}")
    if interval_minutes is not None and interval_minutes not in _INTERVAL_STEPS:
        raise ValueError(f"interval_minutes must be 15, 30 or 60, not {interval_minutes}")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    try:
        tz = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    as_of_date = as_of if isinstance(as_of, date) else date.fromisoformat(str(as_of))
    mix = _resolve_mix(scenario_mix, upstream)
    mismap_share = _resolve_network_faults(network_faults, mismap_share, upstream)
    cmix = _resolve_class_mix(class_mix)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    grid = _time_grid(as_of_date, days, tz)
    weather = _simulate_weather(grid, n_regions=3 if n_meters >= 30 else 2, rng=rng)
    pop = _population(n_meters, cmix, weather.n_regions, rng, interval_minutes)
    counts = _type_counts(mix, n_meters)
    _assign_types(pop, counts, rng)
    scen = _draw_scenarios(pop, grid, weather, rng)
    # Drawn last from the main generator: the other meters' data do not change.
    _draw_bypass_kinds(scen, _resolve_bypass_kind_mix(bypass_kind_mix), rng)
    # The field scenarios draw from a generator of their own, so that a dataset
    # without them is the same as before they existed.
    field_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2026,)))
    _draw_field(pop, scen, grid, weather, field_rng, _resolve_rig_type_mix(rig_type_mix),
                float(pv_share), float(export_share))
    faults = None
    if network_faults:  # from a generator of their own, like the field scenarios
        net_rng = np.random.default_rng(
            np.random.SeedSequence(int(seed), spawn_key=_NETWORK_FAULT_SPAWN_KEY))
        if not 0.0 <= float(metering_fault_share) <= 0.3:
            raise ValueError(f"metering_fault_share = {metering_fault_share} is outside 0..0.3")
        faults = _draw_network_faults(pop, grid, net_rng, mismap_share,
                                      float(metering_fault_share))

    labels = _labels(pop, scen, grid, as_of_date, timezone, seed, n_meters, days, mix)
    if faults is not None:
        _add_network_fault_labels(labels, pop, grid, faults, mismap_share)

    _write_meters(out_dir / "meters.csv", pop,
                  listed=None if faults is None else faults.listed_transformer)
    _write_weather(out_dir / "weather.csv", grid, weather)
    dirty_counts, diverted, fault_rows = _write_series(out_dir, pop, scen, grid, weather, rng,
                                                       fmt=fmt, dirty=dirty, upstream=upstream,
                                                       faults=faults)
    _add_diverted(labels, pop, diverted)
    labels["dirty"] = dirty_counts
    if daily_meters or monthly_meters:
        from gridwatch.simulate_coarse import add_coarse_meters

        labels["coarse_meters"] = add_coarse_meters(
            out_dir, n_daily=int(daily_meters), n_monthly=int(monthly_meters), as_of=as_of_date,
            seed=seed, fmt=fmt, timezone=timezone)
    if faults is not None:
        labels["network_faults"].update(fault_rows)
    write_json(out_dir / "labels.json", labels)
    return labels


def suppressed_meters(labels) -> list[dict]:
    """Entries for a config's ``suppress`` list: every ``suppressed_licensed`` meter.

    Parameters
    ----------
    labels : dict
        Labels as returned by :func:`simulate_dataset`.

    Returns
    -------
    list of dict
        ``[{"meter_id": ..., "reason": ...}, ...]``, sorted by meter id, ready
        for ``gridwatch.config.config_from_dict({"suppress": ...})``.
    """
    return [
        {"meter_id": mid, "reason": "licensed steady load (simulated)"}
        for mid, lab in sorted(labels["meters"].items())
        if lab["type"] == "suppressed_licensed"
    ]


def write_config(out_dir, labels) -> Path:
    """Write the configuration a simulated dataset needs, ``OUT_DIR/gridwatch.toml``.

    Its time zone (``data.timezone``: without it a run reads the naive times
    as UTC and analyses the wrong days) and its licensed steady loads as
    ``[[suppress]]`` entries, as a utility lists its known legitimate loads.
    Every other key keeps its default.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The dataset directory (as given to :func:`simulate_dataset`).
    labels : dict
        Labels as returned by :func:`simulate_dataset`.

    Returns
    -------
    pathlib.Path
        The file written (atomically); pass it to ``gridwatch run --config``.
    """
    import json

    from gridwatch.atomic import write_text

    lines = ["# Configuration for this simulated dataset, written by `gridwatch simulate`:",
             "# its time zone and its licensed steady loads (suppressed as a utility would).",
             "# Every other key keeps its default (`gridwatch config --defaults`).", "",
             "[data]", f"timezone = {json.dumps(labels['timezone'])}"]
    for entry in suppressed_meters(labels):
        lines += ["", "[[suppress]]", f"meter_id = {json.dumps(entry['meter_id'])}",
                  f"reason = {json.dumps(entry['reason'])}"]
    path = Path(out_dir) / CONFIG_NAME
    write_text(path, "\n".join(lines) + "\n")
    return path


# =====================================================================================
# configuration checks
# =====================================================================================
def _resolve_mix(scenario_mix, upstream):
    mix = dict(DEFAULT_SCENARIO_MIX)
    for key, value in (scenario_mix or {}).items():
        if key == "normal":
            raise ValueError("scenario_mix: 'normal' is the remainder; give the other types")
        if key not in LABEL_TYPES:
            raise ValueError(f"scenario_mix: unknown label type {key!r}; known: {LABEL_TYPES[1:]}")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"scenario_mix[{key!r}] = {value} is outside 0..1")
        mix[key] = value
    if not upstream:
        mix["bypass"] = 0.0
    total = sum(mix.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"scenario_mix fractions sum to {total:.3f} > 1")
    return mix


def _resolve_network_faults(network_faults, mismap_share, upstream):
    """Return the mismapped share of meters, checking it against ``network_faults``."""
    if network_faults and not upstream:
        raise ValueError("network_faults needs upstream=True: the faults are in the upstream "
                         "table and in the meters' transformers")
    if mismap_share is None:
        return 0.05 if network_faults else 0.0
    share = float(mismap_share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"mismap_share = {share} is outside 0..1")
    if share > 0 and not network_faults:
        raise ValueError(f"mismap_share = {share} needs network_faults=True")
    return share


def _resolve_rig_type_mix(rig_type_mix):
    if rig_type_mix is None:
        return None
    mix = {}
    for key, value in rig_type_mix.items():
        if key not in RIG_TYPES:
            raise ValueError(f"rig_type_mix: unknown rig type {key!r}; known: {RIG_TYPES}")
        if not float(value) >= 0.0:
            raise ValueError(f"rig_type_mix[{key!r}] = {value} is negative")
        mix[key] = float(value)
    if sum(mix.values()) <= 0:
        raise ValueError("rig_type_mix: shares sum to 0")
    return mix


def _resolve_bypass_kind_mix(bypass_kind_mix):
    if bypass_kind_mix is None:
        return dict(DEFAULT_BYPASS_KIND_MIX)
    kmix = dict.fromkeys(BYPASS_KINDS, 0.0)
    for key, value in bypass_kind_mix.items():
        if key not in BYPASS_KINDS:
            raise ValueError(f"bypass_kind_mix: unknown bypass kind {key!r}; known: {BYPASS_KINDS}")
        if not float(value) >= 0.0:
            raise ValueError(f"bypass_kind_mix[{key!r}] = {value} is negative")
        kmix[key] = float(value)
    total = sum(kmix.values())
    if total <= 0:
        raise ValueError("bypass_kind_mix: shares sum to 0")
    return {k: v / total for k, v in kmix.items()}


def _resolve_class_mix(class_mix):
    cmix = dict(DEFAULT_CLASS_MIX) if class_mix is None else {c: 0.0 for c in _CLASSES}
    for key, value in (class_mix or {}).items():
        if key not in _CLASSES:
            raise ValueError(f"class_mix: unknown customer class {key!r}; known: {_CLASSES}")
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"class_mix[{key!r}] = {value} is outside 0..1")
        cmix[key] = float(value)
    total = sum(cmix.values())
    if total <= 0:
        raise ValueError("class_mix: fractions sum to 0")
    return {k: v / total for k, v in cmix.items()}


def _type_counts(mix, n_meters):
    return {t: int(math.floor(mix[t] * n_meters + 0.5)) for t in _ASSIGN_ORDER}


# =====================================================================================
# time grid and weather
# =====================================================================================
@dataclass(frozen=True)
class _Grid:
    utc: pd.DatetimeIndex  # start of each 15-min step, tz-aware UTC
    hour: np.ndarray  # local hour of day at the step's start [h]
    day: np.ndarray  # local day index 0..days-1
    daytype: np.ndarray  # 0 weekday, 1 Saturday, 2 Sunday
    day_start: np.ndarray  # step index of each local midnight, length days + 1
    first_day: date
    days: int
    tz: zoneinfo.ZoneInfo

    @property
    def n_steps(self) -> int:
        return len(self.utc)

    @property
    def weekend(self) -> np.ndarray:
        return self.daytype > 0

    def day_date(self, day_index) -> str:
        return (self.first_day + timedelta(days=int(day_index))).isoformat()


def _time_grid(as_of_date, days, tz):
    first_day = as_of_date - timedelta(days=days - 1)
    start = pd.Timestamp(first_day).tz_localize(tz, nonexistent="shift_forward", ambiguous=False)
    stop = pd.Timestamp(as_of_date + timedelta(days=1)).tz_localize(
        tz, nonexistent="shift_forward", ambiguous=False
    )
    utc = pd.date_range(start.tz_convert("UTC"), stop.tz_convert("UTC"),
                        freq=f"{STEP_MINUTES}min", inclusive="left", unit="us")
    if len(utc) % 4:
        raise ValueError(f"time zone {tz.key} has a sub-hour DST shift; not supported")
    local = utc.tz_convert(tz)
    hour = (local.hour + local.minute / 60.0).to_numpy(dtype=np.float64)
    naive_day = local.tz_localize(None).normalize()
    day = ((naive_day - pd.Timestamp(first_day)) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)
    dow = local.day_of_week.to_numpy()
    daytype = np.where(dow == 5, 1, np.where(dow == 6, 2, 0)).astype(np.int8)
    day_start = np.searchsorted(day, np.arange(days + 1)).astype(np.int64)
    return _Grid(utc, hour, day, daytype, day_start, first_day, days, tz)


@dataclass(frozen=True)
class _Weather:
    temperature_c: np.ndarray  # (n_steps, n_regions) float32 [degrees C]
    hourly_c: np.ndarray  # (n_hours, n_regions) [degrees C], rounded to 0.1
    daily_mean_c: np.ndarray  # (days, n_regions) [degrees C]
    spell_day: np.ndarray  # (n_regions,) local day index a cold spell begins
    names: tuple

    @property
    def n_regions(self) -> int:
        return len(self.names)


def _simulate_weather(grid, *, n_regions, rng):
    """Hourly temperature per region: UK-like seasonal + diurnal + fronts + one cold spell."""
    hours = np.arange(0, grid.n_steps, _STEPS_PER_HOUR)
    n_hours = len(hours)
    local = grid.utc[hours].tz_convert(grid.tz)
    doy = local.day_of_year.to_numpy(dtype=np.float64)
    hour = grid.hour[hours]
    season = np.cos(2 * np.pi * (doy - 22.0) / 365.25)  # +1 in late January
    climate_c = 10.3 - 6.0 * season  # daily mean, about 4 C in Jan, 16 C in Jul
    diurnal_c = (3.5 - 1.0 * season) * np.cos(2 * np.pi * (hour - 15.0) / 24.0)

    common_c = 2.5 * _ar1(rng, (n_hours, 1), math.exp(-1 / 48.0))
    local_c = 1.0 * _ar1(rng, (n_hours, n_regions), math.exp(-1 / 24.0))
    offsets = np.array([r[3] for r in _REGIONS[:n_regions]])

    # One cold spell crossing every region with a lag of 0-1 day.
    days = grid.days
    spell_start = int(rng.integers(int(0.3 * days), max(int(0.75 * days), int(0.3 * days)) + 1))
    spell_len_h = float(rng.uniform(4, 8)) * 24
    lag_days = rng.integers(0, 2, n_regions)
    depth_c = rng.uniform(3.0, 5.0) * rng.uniform(0.8, 1.2, n_regions)
    spell_day = np.minimum(spell_start + lag_days, days - 1)
    t_h = (hours[:, None] - grid.day_start[spell_day][None, :]) / _STEPS_PER_HOUR  # h since start
    ramp_down = np.clip(t_h / 12.0, 0, 1)
    ramp_up = np.clip(1 - (t_h - spell_len_h) / 24.0, 0, 1)
    spell_c = -depth_c[None, :] * np.minimum(ramp_down, ramp_up)

    hourly = (climate_c + diurnal_c)[:, None] + common_c + local_c + offsets[None, :] + spell_c
    hourly += 0.3 * rng.standard_normal(hourly.shape)
    hourly = np.round(hourly, 1)
    steps = np.arange(grid.n_steps)
    temperature = np.empty((grid.n_steps, n_regions), dtype=np.float32)
    for r in range(n_regions):  # loop over 2-3 regions
        temperature[:, r] = np.interp(steps, hours, hourly[:, r])
    daily = np.stack([np.bincount(grid.day, weights=temperature[:, r]) / np.bincount(grid.day)
                      for r in range(n_regions)], axis=1)
    names = tuple(r[0] for r in _REGIONS[:n_regions])
    return _Weather(temperature, hourly, daily, spell_day.astype(np.int64), names)


# =====================================================================================
# population and topology
# =====================================================================================
@dataclass
class _Population:
    meter_id: np.ndarray  # str
    cls: np.ndarray  # int class code
    interval_steps: np.ndarray  # 1, 2 or 4 (15, 30, 60 min)
    mean_kw: np.ndarray  # target mean demand of the ordinary load [kW]
    region: np.ndarray  # region index
    transformer: np.ndarray  # transformer index (meters sorted by it)
    transformer_ids: np.ndarray
    feeder_ids: np.ndarray  # per transformer
    substation_ids: np.ndarray  # per transformer
    tariff_per_kwh: np.ndarray
    contracted_kw: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    region_names: tuple
    label: np.ndarray = None  # str label type per meter
    pv_kwp: np.ndarray = None  # rooftop PV peak power [kWp], 0 for none
    exports: np.ndarray = None  # bool: the meter reads an export register
    rig_type: np.ndarray = None  # object: the behaviour of each rig, None for the others

    @property
    def n(self) -> int:
        return len(self.meter_id)


_INTERVAL_STEPS = {15: 1, 30: 2, 60: 4}


def _population(n_meters, cmix, n_regions, rng, interval_minutes=None):
    # Exact class counts, laid out in blocks (areas) with some mixing at the edges.
    counts = np.array([int(math.floor(cmix[c] * n_meters + 0.5)) for c in _CLASSES])
    counts[_RES] += n_meters - counts.sum()
    if counts[_RES] < 0:  # rounding pushed residential below 0: take from the largest
        big = int(np.argmax(counts))
        counts[big] += counts[_RES]
        counts[_RES] = 0
    cls = np.repeat(np.arange(4), counts)
    n_swap = n_meters // 7
    if n_swap:
        a = rng.integers(0, n_meters, n_swap)
        b = np.clip(a + rng.integers(-40, 41, n_swap), 0, n_meters - 1)
        for i, j in zip(a, b, strict=True):  # a few hundred swaps at most per 1,000 meters
            cls[i], cls[j] = cls[j], cls[i]

    # Transformers: consecutive blocks of 10-40 meters.
    sizes = []
    remaining = n_meters
    while remaining > 0:
        size = int(rng.integers(10, 41))
        if remaining - size < 10:
            size = remaining
        sizes.append(size)
        remaining -= size
    n_tx = len(sizes)
    transformer = np.repeat(np.arange(n_tx), sizes)

    # Feeders: 2-6 transformers; regions: contiguous groups of feeders; substations: 1-3
    # feeders within a region.
    feeder_of_tx = _blocks(n_tx, 2, 6, rng)
    n_feeders = int(feeder_of_tx.max()) + 1
    n_regions_used = max(1, min(n_regions, n_feeders))
    region_of_feeder = (np.arange(n_feeders) * n_regions_used) // n_feeders
    sub_of_feeder = np.empty(n_feeders, dtype=np.int64)
    next_sub = 0
    for r in range(n_regions_used):  # loop over 2-3 regions
        feeders = np.flatnonzero(region_of_feeder == r)
        local = _blocks(len(feeders), 1, 3, rng)
        sub_of_feeder[feeders] = next_sub + local
        next_sub += int(local.max()) + 1
    region_of_tx = region_of_feeder[feeder_of_tx]
    region = region_of_tx[transformer]

    transformer_ids = np.array([f"T{i + 1:04d}" for i in range(n_tx)])
    feeder_ids = np.array([f"F{f + 1:03d}" for f in feeder_of_tx])
    substation_ids = np.array([f"S{s + 1:02d}" for s in sub_of_feeder[feeder_of_tx]])
    meter_id = np.array([f"M{i + 1:06d}" for i in range(n_meters)])

    # Interval length per meter.
    u = rng.random(n_meters)
    res_interval = np.where(u < 0.05, 1, np.where(u < 0.90, 2, 4))
    biz_interval = np.where(u < 0.40, 1, np.where(u < 0.90, 2, 4))
    interval_steps = np.where(cls == _RES, res_interval, biz_interval).astype(np.int64)
    if interval_minutes is not None:
        interval_steps[:] = _INTERVAL_STEPS[interval_minutes]

    # Mean demand of the ordinary load [kW].
    mean_kw = np.empty(n_meters)
    res = cls == _RES
    mean_kw[res] = np.clip(0.39 * np.exp(0.52 * rng.standard_normal(res.sum())), 0.05, 2.4)
    for c, (lo, hi) in ((_COM, (5, 50)), (_IND, (20, 300)), (_AGR, (10, 100))):
        sel = cls == c
        mean_kw[sel] = np.exp(rng.uniform(np.log(lo), np.log(hi), sel.sum()))

    tariff = np.select(
        [cls == _RES, cls == _COM],
        [rng.uniform(0.22, 0.30, n_meters), rng.uniform(0.18, 0.25, n_meters)],
        rng.uniform(0.15, 0.20, n_meters),
    ).round(4)
    res_contract = np.array([6.0, 9.0, 12.0, 15.0])[rng.integers(0, 4, n_meters)]
    res_contract = np.maximum(res_contract, np.ceil(mean_kw * 8 / 3) * 3)
    contracted = np.where(cls == _RES, res_contract,
                          np.round(mean_kw * rng.uniform(2.5, 4.0, n_meters)))

    centre_lat = np.array([r[1] for r in _REGIONS])[region]
    centre_lon = np.array([r[2] for r in _REGIONS])[region]
    feeder_jit = rng.normal(0, 0.15, (n_feeders, 2))[feeder_of_tx[transformer]]
    tx_jit = rng.normal(0, 0.01, (n_tx, 2))[transformer]
    m_jit = rng.normal(0, 0.001, (n_meters, 2))
    lat = np.round(centre_lat + feeder_jit[:, 0] + tx_jit[:, 0] + m_jit[:, 0], 5)
    lon = np.round(centre_lon + feeder_jit[:, 1] + tx_jit[:, 1] + m_jit[:, 1], 5)

    return _Population(
        meter_id=meter_id, cls=cls, interval_steps=interval_steps, mean_kw=mean_kw,
        region=region, transformer=transformer, transformer_ids=transformer_ids,
        feeder_ids=feeder_ids, substation_ids=substation_ids, tariff_per_kwh=tariff,
        contracted_kw=contracted, lat=lat, lon=lon,
        region_names=tuple(r[0] for r in _REGIONS[:n_regions]),
    )


def _blocks(n, lo, hi, rng):
    """Group index 0.. for ``n`` consecutive items in blocks of ``lo..hi`` items."""
    sizes = rng.integers(lo, hi + 1, n)  # at most n blocks are needed
    ends = np.cumsum(sizes)
    return np.searchsorted(ends, np.arange(n), side="right")


def _assign_types(pop, counts, rng):
    label = np.full(pop.n, "normal", dtype=object)
    free = np.ones(pop.n, dtype=bool)

    # Bypass: at most one per transformer, on a residential meter, on some transformers.
    n_bypass = counts.get("bypass", 0)
    if n_bypass:
        n_tx = len(pop.transformer_ids)
        n_res = np.bincount(pop.transformer, weights=(pop.cls == _RES), minlength=n_tx)
        share = n_res / np.bincount(pop.transformer, minlength=n_tx)
        eligible_tx = np.flatnonzero(n_res > 0)
        n_bypass = min(n_bypass, max(1, n_tx // 2), len(eligible_tx))
        # Prefer mostly residential transformers (a household rig on a small transformer).
        weight = np.where(share[eligible_tx] >= 0.5, 1.0, 1e-3)
        chosen_tx = rng.choice(eligible_tx, size=n_bypass, replace=False, p=weight / weight.sum())
        for tx in np.sort(chosen_tx):  # one pick per chosen transformer
            cand = np.flatnonzero((pop.transformer == tx) & (pop.cls == _RES) & free)
            m = int(rng.choice(cand))
            label[m] = "bypass"
            free[m] = False

    for t in _ASSIGN_ORDER[1:]:  # loop per scenario type
        n = min(counts.get(t, 0), int(free.sum()))
        if n == 0:
            continue
        w = np.asarray(_TYPE_CLASS_WEIGHTS[t])[pop.cls] * free
        n_pref = min(n, int((w > 0).sum()))
        picks = []
        if n_pref:
            picks.append(rng.choice(pop.n, size=n_pref, replace=False, p=w / w.sum()))
            free[picks[0]] = False
        if n > n_pref:  # not enough meters of the preferred classes: any free meter
            picks.append(rng.choice(np.flatnonzero(free), size=n - n_pref, replace=False))
            free[picks[-1]] = False
        label[np.concatenate(picks)] = t
    pop.label = label


# =====================================================================================
# scenario parameters (drawn once for the whole population)
# =====================================================================================
def _onset_step(grid, day, rng, lo_h=8.0, hi_h=22.0):
    """Step index of a random local time between ``lo_h`` and ``hi_h`` on ``day``."""
    day = np.asarray(day, dtype=np.int64)
    start = grid.day_start[day]
    stop = grid.day_start[day + 1]
    offset = np.floor(rng.uniform(lo_h, hi_h, day.shape) * _STEPS_PER_HOUR).astype(np.int64)
    return np.minimum(start + offset, stop - 1)


def _mid_window_days(n, days, rng, lo=0.25, hi=0.85):
    a = max(1, int(lo * days))
    b = max(a, min(days - 2, int(hi * days)))
    return rng.integers(a, b + 1, n)


def _draw_rig_kw(n, rng, max_kw):
    """Rig nominal draw [kW]: 1-3 identical units from the catalogue, total <= max_kw."""
    names = list(_RIG_UNITS)
    unit_idx = rng.choice(len(names), size=n, p=_RIG_UNIT_P)
    lo = np.array([_RIG_UNITS[k][0] for k in names])[unit_idx]
    hi = np.array([_RIG_UNITS[k][1] for k in names])[unit_idx]
    unit_kw = rng.uniform(lo, hi)
    count = rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2])
    count = np.maximum(1, np.minimum(count, np.floor(max_kw / unit_kw))).astype(np.int64)
    return unit_kw, count


def _rig_params(idx, grid, rng, *, onset_day, max_kw, staged_fraction):
    n = len(idx)
    unit_kw, count = _draw_rig_kw(n, rng, max_kw)
    if onset_day is None:  # running for the whole window
        onset = np.zeros(n, dtype=np.int64)
    else:
        onset = _onset_step(grid, onset_day, rng)
    stage = np.full(n, grid.n_steps, dtype=np.int64)
    if onset_day is not None and staged_fraction > 0:
        age = grid.days - 1 - onset_day
        fits_two = (count >= 2) | (2 * unit_kw <= max_kw)
        eligible = np.flatnonzero((age >= 4) & fits_two)
        n_staged = min(len(eligible), int(math.floor(staged_fraction * n + 0.5)))
        staged = rng.choice(eligible, size=n_staged, replace=False) if n_staged else eligible[:0]
        count[staged] = np.maximum(count[staged], 2)
        max_lag = np.minimum(10, age[staged] - 1)  # second unit 2-10 days later, before as-of
        lag = 2 + np.floor(rng.random(len(staged)) * (max_lag - 1)).astype(np.int64)
        stage[staged] = _onset_step(grid, onset_day[staged] + lag, rng)
    total_kw = unit_kw * count
    first_kw = np.where(stage < grid.n_steps, total_kw - unit_kw, total_kw)

    curtail = rng.random(n) < 0.30
    curtail_start_h = rng.choice([16.0, 16.5, 17.0], size=n)
    curtail_len_h = np.where(curtail, rng.choice([2.0, 2.5, 3.0, 3.5, 4.0], size=n), 0.0)
    curtail_weekdays = rng.random(n) < 0.5

    n_out = rng.choice([0, 0, 1, 2, 3], size=n)
    k = 3
    out_start = rng.integers(0, grid.n_steps, (n, k))
    out_start = np.maximum(out_start, onset[:, None])
    out_len = rng.integers(1 * _STEPS_PER_HOUR, 6 * _STEPS_PER_HOUR + 1, (n, k))
    out_len = np.where(np.arange(k)[None, :] < n_out[:, None], out_len, 0)

    return {
        "idx": idx, "onset_step": onset, "stage_step": stage, "first_kw": first_kw,
        "total_kw": total_kw, "temp_coef": rng.uniform(0.002, 0.005, n),
        "curtail_start_h": curtail_start_h, "curtail_len_h": curtail_len_h,
        "curtail_weekdays": curtail_weekdays, "out_start": out_start,
        "out_stop": out_start + out_len,
    }


def _draw_scenarios(pop, grid, weather, rng):
    """Parameters of every scenario meter, keyed by label type (global meter indices)."""
    days = grid.days
    scen = {}
    label = pop.label

    # Rigs: 20 % age 1-2 days, 15 % 3-7 days, the rest spread over the window.
    idx = np.flatnonzero(label == "rig")
    if len(idx):
        n = len(idx)
        n_recent = int(math.floor(0.20 * n + 0.5))
        n_week = int(math.floor(0.15 * n + 0.5))
        lo = min(14, days // 4)
        hi = max(lo, days - 9)
        age = np.concatenate([
            rng.integers(1, 3, n_recent),
            rng.integers(3, 8, n_week),
            days - 1 - rng.integers(lo, hi + 1, n - n_recent - n_week),
        ])
        age = rng.permutation(np.clip(age, 0, days - 1))
        scen["rig"] = _rig_params(idx, grid, rng, onset_day=days - 1 - age, max_kw=10.0,
                                  staged_fraction=0.25)
    idx = np.flatnonzero(label == "rig_preexisting")
    if len(idx):
        scen["rig_preexisting"] = _rig_params(idx, grid, rng, onset_day=None, max_kw=10.0,
                                              staged_fraction=0.0)
    idx = np.flatnonzero(label == "bypass")
    if len(idx):
        p = _rig_params(idx, grid, rng, onset_day=_mid_window_days(len(idx), days, rng, 0.2, 0.9),
                        max_kw=5.0, staged_fraction=0.0)
        small = p["total_kw"] < 1.0  # 1-5 kW: round small GPU rigs up to two cards
        p["total_kw"] = np.where(small, 2 * p["total_kw"], p["total_kw"])
        p["first_kw"] = p["total_kw"]
        scen["bypass"] = p

    def half_throughout(n, onset_day):
        """Half of the meters carry the load for the whole window (onset day -1)."""
        throughout = rng.random(n) < 0.5
        return np.where(throughout, -1, onset_day)

    idx = np.flatnonzero(label == "night_storage_heating")
    if len(idx):
        n = len(idx)
        scen["night_storage_heating"] = {
            "idx": idx,
            "onset_day": half_throughout(n, _mid_window_days(n, days, rng)),
            "power_kw": rng.uniform(3.0, 7.0, n),
            "start_h": rng.choice([0.0, 0.5, 1.0], size=n),
            "max_len_h": rng.uniform(6.0, 8.0, n),
        }
    idx = np.flatnonzero(label == "electric_heating")
    if len(idx):
        n = len(idx)
        spell = weather.spell_day[pop.region[idx]] + rng.integers(0, 2, n)
        scen["electric_heating"] = {
            "idx": idx,
            "onset_day": half_throughout(n, np.minimum(spell, days - 1)),
            "ua_kw_per_c": rng.uniform(0.12, 0.35, n),
            "setpoint_c": rng.uniform(19.0, 21.0, n),
            "setback": rng.random(n) < 0.5,
            "max_kw": rng.uniform(4.0, 9.0, n),
        }
    idx = np.flatnonzero(label == "ev_charging")
    if len(idx):
        n = len(idx)
        scen["ev_charging"] = {
            "idx": idx,
            "onset_day": _mid_window_days(n, days, rng),
            "power_kw": rng.choice([7.0, 7.2, 7.4, 3.6], size=n, p=[0.3, 0.3, 0.2, 0.2]),
            "p_day": rng.uniform(0.4, 0.8, n),
            "smart": rng.random(n) < 0.4,
        }
    idx = np.flatnonzero(label == "growing_household")
    if len(idx):
        n = len(idx)
        scen["growing_household"] = {
            "idx": idx,
            "onset_day": _mid_window_days(n, days, rng),
            "factor": rng.uniform(1.3, 2.0, n),
        }
    idx = np.flatnonzero(label == "cycling_load")
    if len(idx):
        n = len(idx)
        scen["cycling_load"] = {
            "idx": idx,
            "onset_day": _mid_window_days(n, days, rng),
            "power_kw": rng.uniform(1.5, 3.0, n),
            "duty": rng.uniform(0.15, 0.4, n),  # hot tubs, heaters: 15-45 min on, periods >= 1 h
            "mean_on_steps": rng.uniform(1.0, 3.0, n),
        }
    idx = np.flatnonzero(label == "frozen_meter")
    if len(idx):
        n = len(idx)
        day = _mid_window_days(n, days, rng, 0.3, 0.9)
        scen["frozen_meter"] = {"idx": idx, "onset_day": day,
                                "freeze_step": _onset_step(grid, day, rng, 0.0, 24.0)}
    idx = np.flatnonzero(label == "suppressed_licensed")
    if len(idx):
        n = len(idx)
        scen["suppressed_licensed"] = {
            "idx": idx,
            "onset_day": half_throughout(n, _mid_window_days(n, days, rng)),
            "power_kw": rng.uniform(1.0, 8.0, n),
        }
    # Onset steps for the day-based scenarios (-1 day = whole window).
    for t in ("night_storage_heating", "electric_heating", "ev_charging", "growing_household",
              "cycling_load", "suppressed_licensed"):
        if t in scen:
            d = scen[t]["onset_day"]
            step = _onset_step(grid, np.maximum(d, 0), rng)
            scen[t]["onset_step"] = np.where(d < 0, 0, step)
    return scen


def _share_counts(shares, n):
    """Counts summing to ``n`` in proportion to ``shares`` (largest remainder)."""
    share = np.asarray(shares, dtype=np.float64)
    share = share / share.sum() * n
    count = np.floor(share).astype(np.int64)
    extra = np.argsort(-(share - count), kind="stable")[: n - int(count.sum())]
    count[extra] += 1
    return count


def _warm_day(weather, region, quantile):
    """The day each meter's region turns warm.

    That is, the first day its past week's mean exceeds its ``quantile`` of
    the window's daily means (not before a fifth of the window).
    """
    daily = weather.daily_mean_c[:, region]  # (days, n)
    days = len(daily)
    cum = np.vstack([np.zeros((1, daily.shape[1])), np.cumsum(daily, axis=0)])
    week = np.full(daily.shape, -np.inf)
    week[6:] = (cum[7:] - cum[:-7]) / 7.0  # the 7 days ending on each day
    threshold = np.array([np.quantile(daily[:, j], q) for j, q in enumerate(quantile)])
    warm = (week > threshold[None, :]) & (np.arange(days)[:, None] >= max(6, days // 5))
    return np.where(warm.any(axis=0), np.argmax(warm, axis=0), days - 1)


def _draw_field(pop, scen, grid, weather, rng, rig_type_mix, pv_share, export_share):
    """Rig behaviours, rooftop PV and the field look-alikes (from their own generator)."""
    days, n_steps = grid.days, grid.n_steps
    pop.rig_type = np.full(pop.n, None, dtype=object)
    pop.pv_kwp = np.zeros(pop.n)
    pop.exports = np.zeros(pop.n, dtype=bool)
    for t in ("rig", "rig_preexisting", "bypass"):
        if t not in scen:
            continue
        p = scen[t]
        m = len(p["idx"])
        p["stages"] = np.ones(m, dtype=np.int64)
        p["off_share"] = np.zeros(m)
        p["throttle"] = np.ones(m)
        p["gpu"] = np.zeros(m, dtype=bool)
        p["end_step"] = np.full(m, n_steps, dtype=np.int64)
        classic = np.where(p["stage_step"] < n_steps, "staged", "steady").astype(object)
        if rig_type_mix is None or t == "bypass":
            p["rig_type"] = classic
            pop.rig_type[p["idx"]] = classic
            continue
        barred = _PREEXISTING_ONLY_RIG_TYPES if t == "rig" else _ONSET_ONLY_RIG_TYPES
        names = [k for k in RIG_TYPES if k in rig_type_mix and k not in barred]
        kinds = np.repeat(np.array(names, dtype=object),
                          _share_counts([rig_type_mix[k] for k in names], m))
        kinds = rng.permutation(kinds)
        p["rig_type"] = kinds
        pop.rig_type[p["idx"]] = kinds
        # No classic two-unit staging, curtailment or outages but the type's own.
        p["stage_step"][:] = n_steps
        p["first_kw"] = p["total_kw"].copy()
        plain = kinds != "steady"
        p["curtail_len_h"] = np.where(plain, 0.0, p["curtail_len_h"])
        p["out_stop"] = np.where(plain[:, None], p["out_start"], p["out_stop"])
        sel = kinds == "staged"  # 3-4 stages a week apart, the last before the as-of day
        if sel.any():
            k = int(sel.sum())
            p["stages"][sel] = rng.integers(3, 5, k)
            latest = np.maximum(days - 4 - 7 * (p["stages"][sel] - 1), 1)
            earliest = np.minimum(days // 6, latest)  # after some weeks of history
            day = (earliest + rng.random(k) * (latest - earliest)).astype(np.int64)
            p["onset_step"][sel] = _onset_step(grid, day, rng)
        sel = kinds == "intermittent"
        p["off_share"][sel] = rng.uniform(0.1, 0.3, int(sel.sum()))
        sel = kinds == "peak_avoiding"
        k = int(sel.sum())
        p["curtail_start_h"][sel] = rng.choice([16.0, 16.5, 17.0], size=k)
        p["curtail_len_h"][sel] = rng.choice([3.0, 3.5, 4.0], size=k)
        p["curtail_weekdays"][sel] = rng.random(k) < 0.5
        sel = kinds == "crypto_heater"
        p["throttle"][sel] = rng.uniform(0.5, 0.7, int(sel.sum()))
        sel = kinds == "gpu_small"
        p["total_kw"][sel] = p["first_kw"][sel] = rng.uniform(0.35, 0.5, int(sel.sum()))
        p["gpu"][sel] = True
        sel = kinds == "behind_pv"
        pop.pv_kwp[p["idx"][sel]] = rng.uniform(2.0, 5.0, int(sel.sum()))
        for kind, key in (("winter_only", "end_step"), ("summer_only", "onset_step")):
            sel = np.flatnonzero(kinds == kind)
            if len(sel):
                day = _warm_day(weather, pop.region[p["idx"][sel]], rng.uniform(0.45, 0.7, len(sel)))
                day = np.clip(day, 3, days - 4)
                p[key][sel] = _onset_step(grid, day, rng)

    # Rooftop PV on ordinary homes and on the homes whose inverter fails.
    normal_res = np.flatnonzero((pop.label == "normal") & (pop.cls == _RES))
    pv_homes = rng.choice(normal_res, size=int(round(pv_share * len(normal_res))), replace=False) \
        if pv_share > 0 and len(normal_res) else normal_res[:0]
    pop.label[pv_homes] = PV_HOME
    pop.pv_kwp[pv_homes] = rng.uniform(2.0, 5.0, len(pv_homes))
    idx = np.flatnonzero(pop.label == "pv_inverter_failure")
    if len(idx):
        pop.pv_kwp[idx] = rng.uniform(2.0, 5.0, len(idx))
        scen["pv_inverter_failure"] = {"idx": idx, "onset_day": _mid_window_days(len(idx), days, rng)}
    pv = pop.pv_kwp > 0
    pop.exports = pv & (rng.random(pop.n) < export_share)

    def half_throughout(n, onset_day):
        return np.where(rng.random(n) < 0.5, -1, onset_day)

    idx = np.flatnonzero(pop.label == "heat_pump")
    if len(idx):
        n = len(idx)
        scen["heat_pump"] = {
            "idx": idx, "onset_day": half_throughout(n, _mid_window_days(n, days, rng)),
            "rated_kw": rng.uniform(1.0, 2.5, n), "heat_loss_kw_per_k": rng.uniform(0.15, 0.45, n),
            "hot_water_h": rng.uniform(1.0, 6.0, n),
        }
    idx = np.flatnonzero(pop.label == "small_constant_load")
    if len(idx):
        n = len(idx)
        scen["small_constant_load"] = {"idx": idx, "power_kw": rng.uniform(0.1, 0.25, n),
                                       "onset_day": half_throughout(n, _mid_window_days(n, days, rng))}
    idx = np.flatnonzero(pop.label == "move_in")
    if len(idx):
        n = len(idx)
        scen["move_in"] = {"idx": idx, "onset_day": _mid_window_days(n, days, rng),
                           "vacant_kw": rng.uniform(0.03, 0.08, n)}
    idx = np.flatnonzero(pop.label == "new_freezer")
    if len(idx):
        n = len(idx)
        scen["new_freezer"] = {"idx": idx, "onset_day": _mid_window_days(n, days, rng),
                               "power_kw": rng.uniform(0.08, 0.15, n), "duty": rng.uniform(0.3, 0.5, n),
                               "mean_on_min": rng.uniform(15.0, 40.0, n)}
    for t in ("pv_inverter_failure", "heat_pump", "small_constant_load", "move_in", "new_freezer"):
        if t in scen:
            d = scen[t]["onset_day"]
            scen[t]["onset_step"] = np.where(d < 0, 0, _onset_step(grid, np.maximum(d, 0), rng))


def _draw_bypass_kinds(scen, kind_mix, rng):
    """Kind (index in BYPASS_KINDS) and diverted household fraction of each bypass."""
    if "bypass" not in scen:
        return
    p = scen["bypass"]
    n = len(p["idx"])
    share = np.array([kind_mix[k] for k in BYPASS_KINDS]) * n
    count = np.floor(share).astype(np.int64)
    extra = np.argsort(-(share - count), kind="stable")[: n - int(count.sum())]
    count[extra] += 1  # largest remainder
    kind = rng.permutation(np.repeat(np.arange(len(BYPASS_KINDS)), count))
    whole = 1.0 - rng.uniform(0.0, 0.03, n)  # the meter keeps 0-3 % of the house
    partial = rng.uniform(0.3, 0.7, n)
    p["kind"] = kind
    p["diverted_frac"] = np.select([kind == 1, kind == 2], [whole, partial], 0.0)


# =====================================================================================
# metering faults and mapping errors (network_faults)
# =====================================================================================
@dataclass(frozen=True)
class _NetworkFaults:
    ct_factor: np.ndarray  # (n_tx,) CT ratio factor, 1.0 for none
    ct_start_step: np.ndarray  # (n_tx,) first scaled step, n_steps for none
    clock_hours: np.ndarray  # (n_tx,) int: the upstream series is stamped this many hours off
    outage_start_step: np.ndarray  # (n_tx,) first step of a 72 h SCADA outage, -1 for none
    listed_transformer: np.ndarray  # (n_meters,) transformer index listed in meters.csv
    swap_with: np.ndarray  # (n_meters,) the other meter of a swap, -1 for none


def _fault_count(share, n_tx, n_eligible):
    """About ``share`` of ``n_tx`` transformers, at least 1 from 10 transformers on."""
    n = int(math.floor(share * n_tx + 0.5))
    if n_tx >= 10:
        n = max(n, 1)
    return min(n, n_eligible)


def _draw_network_faults(pop, grid, rng, mismap_share, fault_share=_CT_RATIO_SHARE):
    """CT ratio changes, clock offsets, SCADA outages and mismapped meters."""
    n_tx = len(pop.transformer_ids)
    T = grid.n_steps
    bypass_tx = np.unique(pop.transformer[pop.label == "bypass"])
    eligible = rng.permutation(np.setdiff1d(np.arange(n_tx), bypass_tx))
    n_ct = _fault_count(fault_share, n_tx, len(eligible))
    n_clock = _fault_count(fault_share, n_tx, len(eligible) - n_ct)
    ct, clock = eligible[:n_ct], eligible[n_ct:n_ct + n_clock]

    ct_factor = np.ones(n_tx)
    up = rng.random(n_ct) < _CT_FACTOR_UP_P
    ct_factor[ct] = np.round(np.where(up, rng.uniform(*_CT_FACTOR_UP, n_ct),
                                      rng.uniform(*_CT_FACTOR_DOWN, n_ct)), 4)
    ct_start = np.full(n_tx, T, dtype=np.int64)
    ct_start[ct] = _onset_step(grid, _mid_window_days(n_ct, grid.days, rng), rng, 0.0, 24.0)
    clock_hours = np.zeros(n_tx, dtype=np.int64)
    clock_hours[clock] = rng.choice(_CLOCK_OFFSET_HOURS, size=n_clock, p=_CLOCK_OFFSET_P)

    # 72 h outages ending before the last 3 days (none in windows under 6 days).
    outage_start = np.full(n_tx, -1, dtype=np.int64)
    length = _SCADA_OUTAGE_HOURS * _STEPS_PER_HOUR
    latest = grid.day_start[grid.days - 3] - length if grid.days >= 6 else -1
    others = np.setdiff1d(np.arange(n_tx), np.r_[ct, clock])
    n_out = _fault_count(_SCADA_OUTAGE_SHARE, n_tx, len(others)) if latest >= 0 else 0
    hit = rng.choice(others, size=n_out, replace=False)
    outage_start[hit] = rng.integers(0, latest + 1, n_out)

    listed, swap_with = _draw_mismaps(pop, rng, mismap_share)
    return _NetworkFaults(ct_factor, ct_start, clock_hours, outage_start, listed, swap_with)


def _draw_mismaps(pop, rng, mismap_share):
    """Listed transformer of each meter and the swap partners (-1 when none).

    ``mismap_share`` of the meters are listed under another transformer of
    their feeder, a third of them in swaps. Meters on single-transformer
    feeders and ``bypass`` meters keep their transformer.
    """
    tx = pop.transformer
    listed = tx.copy()
    swap_with = np.full(pop.n, -1, dtype=np.int64)
    _, feeder_of_tx = np.unique(pop.feeder_ids, return_inverse=True)
    tx_per_feeder = np.bincount(feeder_of_tx)
    first_tx = np.searchsorted(feeder_of_tx, np.arange(len(tx_per_feeder)))  # feeders are blocks
    feeder = feeder_of_tx[tx]
    meter_lo = np.searchsorted(feeder, feeder, side="left")  # meters are sorted by transformer
    meter_hi = np.searchsorted(feeder, feeder, side="right")
    free = (tx_per_feeder[feeder] >= 2) & (pop.label != "bypass")
    n_mis = min(int(math.floor(mismap_share * pop.n + 0.5)), int(free.sum()))
    n_pairs = int(math.floor(_SWAP_SHARE * n_mis / 2 + 0.5))

    pairs = []
    for a in rng.permutation(np.flatnonzero(free)):  # stops after n_pairs pairs (< 1 % of meters)
        if len(pairs) == n_pairs:
            break
        if not free[a]:
            continue
        lo, hi = meter_lo[a], meter_hi[a]
        cand = lo + np.flatnonzero(free[lo:hi] & (tx[lo:hi] != tx[a]))
        if not len(cand):
            continue
        b = int(rng.choice(cand))
        pairs.append((a, b))
        free[[a, b]] = False
    if pairs:
        a, b = np.array(pairs).T
        listed[a], listed[b] = tx[b], tx[a]
        swap_with[a], swap_with[b] = b, a

    n_move = n_mis - 2 * len(pairs)
    movers = rng.choice(np.flatnonzero(free), size=min(n_move, int(free.sum())), replace=False)
    f = feeder[movers]
    shift = rng.integers(1, tx_per_feeder[f])  # to any other transformer of the feeder
    listed[movers] = first_tx[f] + (tx[movers] - first_tx[f] + shift) % tx_per_feeder[f]
    return listed, swap_with


def _add_diverted(labels, pop, diverted):
    """Put the diverted household load [kW] of each bypass meter into the labels."""
    for i, d_kw in diverted.items():
        meter = labels["meters"][str(pop.meter_id[i])]
        meter["diverted_kw"] = round(float(d_kw), 3)
        asset = labels["transformers"][meter["transformer_id"]]
        asset["hidden_kw"] = round(meter["rig_kw"] + meter["diverted_kw"], 3)


def _add_network_fault_labels(labels, pop, grid, faults, mismap_share):
    """Label the metering faults and mapping errors (``network_faults``)."""
    ids = pop.meter_id
    listed_ids = pop.transformer_ids[faults.listed_transformer]
    mismapped = faults.listed_transformer != pop.transformer
    for i in range(pop.n):  # one dict entry per meter (not per reading)
        j = int(faults.swap_with[i])
        labels["meters"][str(ids[i])].update({
            "listed_transformer_id": str(listed_ids[i]),
            "mismapped": bool(mismapped[i]),
            "swap": j >= 0,
            "swap_with": str(ids[j]) if j >= 0 else None,
        })
    T = grid.n_steps
    local = grid.utc.tz_convert(grid.tz)
    for t, asset in enumerate(pop.transformer_ids):  # one entry per transformer
        fault = None
        if faults.ct_start_step[t] < T:
            start = int(faults.ct_start_step[t])
            fault = {"kind": "ct_ratio", "factor": float(faults.ct_factor[t]),
                     "start": local[start].strftime("%Y-%m-%dT%H:%M"),
                     "date": grid.day_date(grid.day[start])}
        elif faults.clock_hours[t]:
            fault = {"kind": "clock_offset", "hours": int(faults.clock_hours[t])}
        outage = None
        if faults.outage_start_step[t] >= 0:
            outage = {"start": local[int(faults.outage_start_step[t])].strftime("%Y-%m-%dT%H:%M"),
                      "hours": _SCADA_OUTAGE_HOURS}
        labels["transformers"][str(asset)].update({"metering_fault": fault,
                                                   "scada_outage": outage})
    n_swapped = int((faults.swap_with >= 0).sum())
    labels["network_faults"] = {
        "ct_ratio": int((faults.ct_start_step < T).sum()),
        "clock_offset": int((faults.clock_hours != 0).sum()),
        "scada_outage": int((faults.outage_start_step >= 0).sum()),
        "mismapped": int(mismapped.sum()),
        "swapped": n_swapped,
        "swap_pairs": n_swapped // 2,
        "mismap_share": float(mismap_share),
    }


def _labels(pop, scen, grid, as_of_date, timezone, seed, n_meters, days, mix):
    meters = {}
    onset = {}
    end = {}
    rig_kw = {}
    kind = {}
    if "bypass" in scen:
        for i, k in zip(scen["bypass"]["idx"], scen["bypass"]["kind"], strict=True):
            kind[i] = BYPASS_KINDS[k]
    for t, p in scen.items():
        for j, i in enumerate(p["idx"]):
            if "end_step" in p and p["end_step"][j] < grid.n_steps:
                end[i] = grid.day_date(grid.day[p["end_step"][j]])
            if t in ("rig", "bypass"):
                onset[i] = grid.day_date(grid.day[p["onset_step"][j]])
                rig_kw[i] = round(float(p["total_kw"][j]), 3)
            elif t == "rig_preexisting":
                rig_kw[i] = round(float(p["total_kw"][j]), 3)
            elif p["onset_day"][j] >= 0:
                onset[i] = grid.day_date(p["onset_day"][j])
    for i in range(pop.n):  # one dict entry per meter (not per reading)
        meters[str(pop.meter_id[i])] = {
            "type": str(pop.label[i]),
            "onset": onset.get(i),
            "rig_kw": rig_kw.get(i),
            "transformer_id": str(pop.transformer_ids[pop.transformer[i]]),
            "bypass_kind": kind.get(i),
            "diverted_kw": 0.0 if i in kind else None,  # set after the simulation
            "rig_type": pop.rig_type[i],
            "end": end.get(i),
            "pv_kwp": round(float(pop.pv_kwp[i]), 2) if pop.pv_kwp[i] > 0 else None,
            "export_register": bool(pop.exports[i]) if pop.pv_kwp[i] > 0 else None,
        }
    transformers = {str(t): {"hidden_kw": None, "onset": None, "culprit": None,
                             "bypass_kind": None}
                    for t in pop.transformer_ids}
    if "bypass" in scen:
        for i in scen["bypass"]["idx"]:
            tx = str(pop.transformer_ids[pop.transformer[i]])
            transformers[tx] = {
                "hidden_kw": rig_kw[i],
                "onset": onset[i],
                "culprit": str(pop.meter_id[i]),
                "bypass_kind": kind[i],
            }
    return {
        "as_of": as_of_date.isoformat(),
        "timezone": timezone,
        "seed": int(seed) if isinstance(seed, (int, np.integer)) else seed,
        "n_meters": n_meters,
        "days": days,
        "scenario_mix": {t: mix[t] for t in _ASSIGN_ORDER},
        "meters": meters,
        "transformers": transformers,
    }


# =====================================================================================
# time-series building blocks
# =====================================================================================
def _ar1(rng, shape, rho):
    """Unit-variance stationary AR(1) noise along axis 0 (float32)."""
    e = rng.standard_normal(shape, dtype=np.float32)
    e[1:] *= np.float32(math.sqrt(1.0 - rho * rho))
    return lfilter([1.0], [1.0, -rho], e, axis=0).astype(np.float32, copy=False)


def _add_blocks(out, col_idx, start, stop, power_kw):
    """Add rectangular loads to ``out`` in place.

    Parameters
    ----------
    out : numpy.ndarray of shape (n_steps, n_cols)
        Mean power per step [kW], updated in place.
    col_idx : array of int
        Column of each block.
    start, stop : array of float
        Block ``[start, stop)`` in (fractional) steps; clipped to the grid.
    power_kw : float or array of float
        Power of each block [kW]; overlapping blocks add up.
    """
    n_steps = out.shape[0]
    start = np.clip(np.asarray(start, dtype=np.float64), 0, n_steps)
    stop = np.clip(np.asarray(stop, dtype=np.float64), 0, n_steps)
    keep = stop > start
    if not keep.any():
        return
    power = np.broadcast_to(np.asarray(power_kw, dtype=np.float64), keep.shape)[keep]
    start, stop = start[keep], stop[keep]
    used, c = np.unique(np.asarray(col_idx, dtype=np.int64)[keep], return_inverse=True)
    m = len(used)
    size = (n_steps + 1) * m  # row n_steps collects nothing but zero weights
    fs = np.floor(start).astype(np.int64)
    span = int(np.ceil((stop - start).max())) + 1
    if span <= 8:  # short blocks: spread each over the few steps it touches
        idx, weights = [], []
        for j in range(span + 1):  # at most 9 offsets
            b = fs + j
            overlap = np.clip(np.minimum(stop, b + 1) - np.maximum(start, b), 0, 1)
            idx.append(np.minimum(b, n_steps) * m + c)
            weights.append(overlap * power)
        acc = np.bincount(np.concatenate(idx), weights=np.concatenate(weights), minlength=size)
    else:  # long blocks: partial first/last steps + a difference array for the middle
        fe = np.floor(stop).astype(np.int64)
        same = fs == fe
        cross = ~same
        idx = np.concatenate([fs * m + c, fe[cross] * m + c[cross]])
        weights = np.concatenate([
            np.where(same, stop - start, fs + 1 - start) * power,
            (stop[cross] - fe[cross]) * power[cross],
        ])
        acc = np.bincount(idx, weights=weights, minlength=size)
        full = cross & (fe > fs + 1)
        if full.any():
            d_idx = np.concatenate([(fs[full] + 1) * m + c[full], fe[full] * m + c[full]])
            d_w = np.concatenate([power[full], -power[full]])
            acc += np.bincount(d_idx, weights=d_w, minlength=size).reshape(
                n_steps + 1, m).cumsum(axis=0).ravel()
    out[:, used] += acc.reshape(n_steps + 1, m)[:n_steps].astype(out.dtype)


def _bump(hour, centre, width):
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _res_lut(n, rng, shift_sd=0.6):
    """Per-meter mean shape on 2 x 96 quarter hours (weekday, weekend), weekly mean 1."""
    q_hour = (np.arange(_STEPS_PER_DAY) + 0.5) / _STEPS_PER_HOUR
    shift = rng.normal(0.0, shift_sd, n)
    morning = np.exp(rng.normal(0.0, 0.35, n))
    evening = np.exp(rng.normal(0.0, 0.25, n))
    night = np.exp(rng.normal(-0.1, 0.35, n))  # standby/overnight use differs between homes
    luts = []
    for weekend in (False, True):
        base, (am, mm, ms), (ad, md, ds), (ae, me, es) = _RES_PROFILE[weekend]
        h = q_hour[:, None] - shift[None, :]
        luts.append(base * night + morning * am * _bump(h, mm, ms) + ad * _bump(h, md, ds)
                    + evening * ae * _bump(h, me, es))
    lut = np.concatenate(luts, axis=0)
    weekly = (5 * luts[0].mean(axis=0) + 2 * luts[1].mean(axis=0)) / 7
    return (lut / weekly).astype(np.float32), shift


def _lut_index(grid, n_daytypes):
    q = np.minimum((grid.hour * _STEPS_PER_HOUR).astype(np.int64), _STEPS_PER_DAY - 1)
    if n_daytypes == 2:
        return grid.weekend.astype(np.int64) * _STEPS_PER_DAY + q
    return grid.daytype.astype(np.int64) * _STEPS_PER_DAY + q


def _day_factor(grid, n, rng, sigma, rho=0.85):
    """Multiplicative day-to-day variation, mean about 1, shape (n_steps, n)."""
    z = _ar1(rng, (grid.days, n), rho)
    f = np.exp(sigma[None, :] * z - 0.5 * sigma[None, :] ** 2).astype(np.float32)
    return f[grid.day]


def _scale_to_mean(x, mean_kw):
    m = x.mean(axis=0)
    return x * (np.asarray(mean_kw, dtype=np.float32) / np.where(m > 0, m, 1.0))[None, :]


# Appliance events: probability, power range [kW], duration range [min].
_EVENTS = (
    (0.5, (2.0, 3.0), (2.0, 5.0)),  # kettle, toaster, hob ring
    (0.3, (1.0, 2.5), (15.0, 60.0)),  # oven, cooking
    (0.2, (1.8, 2.4), (15.0, 45.0)),  # washing machine, dishwasher heating
)
_EVENT_MEAN_KWH = sum(p * np.mean(kw) * np.mean(mins) / 60 for p, kw, mins in _EVENTS)


def _residential_kw(grid, mean_kw, temp_c, rng, *, shift_sd=0.6):
    """Household demand [kW], shape (n_steps, n), realised mean ``mean_kw``."""
    n = len(mean_kw)
    T = grid.n_steps
    mean_kw = np.asarray(mean_kw, dtype=np.float64)
    floor_frac = rng.uniform(0.0, 0.26, n)
    lut, _ = _res_lut(n, rng, shift_sd)
    shape = np.take(lut, _lut_index(grid, 2), axis=0)  # (T, n), weekly mean 1
    activity = (shape - floor_frac[None, :].astype(np.float32)) / (1 - floor_frac[None, :])
    np.maximum(activity, 0.03, out=activity)

    sigma = rng.uniform(0.4, 0.8, n).astype(np.float32)
    z = _ar1(rng, (T, n), 0.75)
    activity *= np.exp(sigma[None, :] * z - 0.5 * sigma[None, :] ** 2)
    activity *= _day_factor(grid, n, rng, rng.uniform(0.12, 0.25, n))
    heat = np.where(rng.random(n) < 0.5, rng.uniform(0.005, 0.03, n), 0.0).astype(np.float32)
    activity *= 1 + heat[None, :] * np.maximum(_BALANCE_TEMPERATURE_C - temp_c, 0)

    # Absences (holidays): 5 % of homes away 3-10 days, only the floor runs.
    present = np.ones((grid.days, n), dtype=np.float32)
    away = np.flatnonzero(rng.random(n) < 0.05)
    if len(away):
        length = rng.integers(3, 11, len(away))
        first = rng.integers(0, max(1, grid.days - 3), len(away))
        dd = np.arange(grid.days)[:, None]
        present[:, away] = np.where((dd >= first) & (dd < first + length), 0.05, 1.0)
    present_t = present[grid.day]

    # Appliance events: start times follow the household's own daily shape.
    share = rng.uniform(0.2, 0.4, n)
    per_day = np.minimum(share * mean_kw * 24 / _EVENT_MEAN_KWH, 15.0)
    n_ev = rng.poisson(per_day * grid.days)
    ev_col = np.repeat(np.arange(n), n_ev)
    n_tot = len(ev_col)
    ev_day = rng.integers(0, grid.days, n_tot)
    weekend = grid.weekend[grid.day_start[ev_day]]
    ev_q = _sample_slots(lut, weekend, ev_col, rng)
    ev_start = grid.day_start[ev_day] + ev_q + rng.random(n_tot)
    kind = rng.choice(len(_EVENTS), size=n_tot, p=[e[0] for e in _EVENTS])
    p_lo = np.array([e[1][0] for e in _EVENTS])[kind]
    p_hi = np.array([e[1][1] for e in _EVENTS])[kind]
    d_lo = np.array([e[2][0] for e in _EVENTS])[kind]
    d_hi = np.array([e[2][1] for e in _EVENTS])[kind]
    ev_kw = rng.uniform(p_lo, p_hi)
    ev_len = rng.uniform(d_lo, d_hi) / STEP_MINUTES
    events = np.zeros((T, n), dtype=np.float32)
    _add_blocks(events, ev_col, ev_start, ev_start + ev_len, ev_kw)
    events *= present_t

    activity *= present_t
    target = np.maximum(mean_kw * (1 - floor_frac) - events.mean(axis=0), 0.1 * mean_kw)
    kw = _scale_to_mean(activity, target)
    kw += (floor_frac * mean_kw).astype(np.float32)[None, :]
    kw += events
    return kw


def _sample_slots(lut, weekend, ev_col, rng):
    """Quarter-hour slot of each event, drawn from its meter's weekday/weekend shape."""
    n_slots = _STEPS_PER_DAY
    out = np.empty(len(ev_col), dtype=np.int64)
    for we in (False, True):  # two day types
        sel = np.flatnonzero(weekend == we)
        if not len(sel):
            continue
        block = lut[int(we) * n_slots:(int(we) + 1) * n_slots]  # (96, n)
        cdf = np.cumsum(block ** 1.25, axis=0)  # appliances are used at active times
        cdf /= cdf[-1:]
        cols = ev_col[sel]
        u = rng.random(len(sel))
        # Vectorised per-column inverse CDF: count slots whose cdf is below u.
        out[sel] = (cdf[:, cols] < u[None, :]).sum(axis=0)
    return np.minimum(out, n_slots - 1)


def _commercial_kw(grid, mean_kw, temp_c, rng):
    n = len(mean_kw)
    q_hour = (np.arange(_STEPS_PER_DAY) + 0.5) / _STEPS_PER_HOUR
    open_h = rng.uniform(7.0, 9.0, n)
    close_h = rng.uniform(17.0, 20.0, n)
    base = rng.uniform(0.25, 0.5, n)
    sat = np.where(rng.random(n) < 0.5, rng.uniform(0.4, 0.8, n), 0.0)
    sun = np.where(rng.random(n) < 0.2, rng.uniform(0.3, 0.6, n), 0.0)
    open_frac = (1 / (1 + np.exp(-(q_hour[:, None] - open_h) / 0.3))
                 * 1 / (1 + np.exp(-(close_h - q_hour[:, None]) / 0.3)))
    lut = np.concatenate([base + (1 - base) * open_frac * lvl for lvl in (1.0, sat, sun)])
    kw = np.take(lut.astype(np.float32), _lut_index(grid, 3), axis=0)
    open_t = np.take(np.concatenate([open_frac * lvl for lvl in (1.0, sat, sun)]).astype(
        np.float32), _lut_index(grid, 3), axis=0)
    heat = np.where(rng.random(n) < 0.4, rng.uniform(0.01, 0.03, n), 0.0).astype(np.float32)
    cool = rng.uniform(0.0, 0.03, n).astype(np.float32)
    kw *= (1 + open_t * (heat * np.maximum(14.0 - temp_c, 0)
                         + cool * np.maximum(temp_c - 20.0, 0)))
    kw *= 1 + rng.uniform(0.04, 0.10, n).astype(np.float32) * _ar1(rng, kw.shape, 0.8)
    kw *= _day_factor(grid, n, rng, np.full(n, 0.05))
    return _scale_to_mean(np.maximum(kw, 0), mean_kw)


def _industrial_kw(grid, mean_kw, temp_c, rng):
    n = len(mean_kw)
    q_hour = (np.arange(_STEPS_PER_DAY) + 0.5) / _STEPS_PER_HOUR
    shifts = rng.choice([1, 2, 3], size=n, p=[0.4, 0.35, 0.25])
    start_h = rng.uniform(5.5, 7.0, n)
    run_h = 8.0 * shifts
    base = rng.uniform(0.15, 0.4, n)
    t_in = (q_hour[:, None] - start_h) % 24.0
    on = (t_in < run_h) | (shifts == 3)
    dip = np.zeros_like(t_in, dtype=bool)
    for k in (1, 2):  # shift changeovers
        dip |= (np.abs(t_in - 8.0 * k) < 0.5) & (shifts > k)
    level = np.where(on, 1.0, 0.0) * np.where(dip, 0.8, 1.0)
    sat = np.where(rng.random(n) < np.where(shifts == 3, 0.5, 0.3), 1.0, 0.0)
    sun = np.where(rng.random(n) < np.where(shifts == 3, 0.5, 0.15), 1.0, 0.0)
    lut = np.concatenate([base + (1 - base) * level * d for d in (1.0, sat, sun)])
    kw = np.take(lut.astype(np.float32), _lut_index(grid, 3), axis=0)
    # Maintenance days: 2 % of days, only the base load.
    down = (rng.random((grid.days, n)) < 0.02)[grid.day]
    kw = np.where(down, base.astype(np.float32)[None, :], kw)
    kw *= 1 + rng.uniform(0.05, 0.12, n).astype(np.float32) * _ar1(rng, kw.shape, 0.9)
    kw *= _day_factor(grid, n, rng, np.full(n, 0.08))
    return _scale_to_mean(np.maximum(kw, 0), mean_kw)


def _agricultural_kw(grid, mean_kw, temp_c, rng):
    n = len(mean_kw)
    q_hour = (np.arange(_STEPS_PER_DAY) + 0.5) / _STEPS_PER_HOUR
    base = rng.uniform(0.2, 0.4, n)
    am = rng.uniform(4.5, 6.0, n)
    pm = rng.uniform(15.5, 17.0, n)
    milking = (((q_hour[:, None] - am) % 24 < 2.0) | ((q_hour[:, None] - pm) % 24 < 2.0))
    midday = 0.3 * _bump(q_hour[:, None], 12.5, 2.0)
    lut = (base + (1 - base) * milking + midday).astype(np.float32)
    lut = np.concatenate([lut, lut])
    kw = np.take(lut, _lut_index(grid, 2), axis=0)
    kw *= 1 + rng.uniform(0.05, 0.12, n).astype(np.float32) * _ar1(rng, kw.shape, 0.8)
    kw *= _day_factor(grid, n, rng, np.full(n, 0.06))
    return _scale_to_mean(np.maximum(kw, 0), mean_kw)


_CLASS_MODELS = {
    _RES: _residential_kw,
    _COM: _commercial_kw,
    _IND: _industrial_kw,
    _AGR: _agricultural_kw,
}


# =====================================================================================
# scenario loads on a block of meters
# =====================================================================================
def _rig_kw(grid, p, sel, temp_c, rng):
    """Rig draw [kW], shape (n_steps, len(sel)): flat, drifting with ambient temperature.

    The field behaviours (:data:`RIG_TYPES`) add their own shape: stages a
    week apart, blocks off, a window off every day, throttling when warm,
    GPU ripple and restarts, an end when the weather warms.
    """
    T = grid.n_steps
    t = np.arange(T)[:, None]
    n = len(sel)
    nominal = (np.where(t >= p["onset_step"][sel], p["first_kw"][sel], 0.0)
               + np.where(t >= p["stage_step"][sel], p["total_kw"][sel] - p["first_kw"][sel], 0.0))
    drift = (1 + p["temp_coef"][sel] * (temp_c - 15.0)
             + 0.01 * _ar1(rng, (T, n), math.exp(-1 / _STEPS_PER_DAY))
             + 0.005 * rng.standard_normal((T, n), dtype=np.float32))
    hour = grid.hour[:, None]
    start = p["curtail_start_h"][sel]
    curtailed = (hour >= start) & (hour < start + p["curtail_len_h"][sel])
    curtailed &= ~(p["curtail_weekdays"][sel] & grid.weekend[:, None])
    out = np.zeros((T, n), dtype=bool)
    for k in range(p["out_start"].shape[1]):  # up to 3 outages
        out |= (t >= p["out_start"][sel, k]) & (t < p["out_stop"][sel, k])
    if "rig_type" not in p or not (p["rig_type"][sel] != "steady").any():
        return (nominal * drift * ~(curtailed | out)).astype(np.float32)
    # field behaviours
    stages = p["stages"][sel]
    staged = stages > 1
    if staged.any():
        since = (t - p["onset_step"][sel][None, :]) // (7 * _STEPS_PER_DAY) + 1
        share = np.clip(since, 0, stages[None, :]) / stages[None, :]
        nominal = np.where(staged[None, :], p["total_kw"][sel][None, :] * share, nominal)
    runs = ~(curtailed | out) & (t < p["end_step"][sel][None, :])
    if (p["off_share"][sel] > 0).any():
        runs &= loads.uptime_mask(T, n, step_hours=_STEP_HOURS, off_share=p["off_share"][sel],
                                  rng=rng)
    throttle = p["throttle"][sel]
    if (throttle < 1).any():  # full power when cold, throttled above 12 C
        warm = np.clip((temp_c - (loads.THROTTLE_ABOVE_C - 2.0)) / 4.0, 0.0, 1.0)
        nominal = nominal * (1.0 - warm * (1.0 - throttle[None, :]))
    gpu = p["gpu"][sel]
    if gpu.any():
        cols = np.flatnonzero(gpu)
        glitch = loads.rig_kw(np.ones(len(cols)), np.ones((T, len(cols)), dtype=bool),
                              temperature_c=15.0, rng=rng, ripple=0.05, temp_coef=0.0,
                              restarts_per_day=rng.uniform(2, 6), step_hours=_STEP_HOURS)
        drift[:, cols] *= glitch
    return (nominal * drift * runs).astype(np.float32)


def _daily_blocks(grid, cols, onset_day, start_h, len_h, p_day, rng):
    """Blocks (col, start, stop) of one event per day from each meter's onset day."""
    days = np.arange(grid.days)
    n = len(cols)
    on = (days[:, None] >= onset_day[None, :]) & (rng.random((grid.days, n)) < p_day[None, :])
    on |= days[:, None] == onset_day[None, :]  # the load is there on its onset day
    d, j = np.nonzero(on)
    start = grid.day_start[d] + start_h[d, j] * _STEPS_PER_HOUR
    return cols[j], start, start + len_h[d, j] * _STEPS_PER_HOUR


def _add_scenarios(grid, pop, scen, lo, hi, kw, temp_c, weather, rng):
    """Add every scenario load of meters ``lo..hi-1`` in place.

    Returns the load that goes around the meters (rigs of bypasses and the
    household load they divert), shape of ``kw``, and ``{global meter index:
    diverted household load [kW]}`` (mean over the last 7 days after onset)
    for the bypass meters of the block.
    """
    T, n = kw.shape
    hidden = np.zeros_like(kw)
    diverted = {}
    for t in ("rig", "rig_preexisting", "bypass"):
        if t not in scen:
            continue
        p = scen[t]
        sel = np.flatnonzero((p["idx"] >= lo) & (p["idx"] < hi))
        if len(sel):
            cols = p["idx"][sel] - lo
            load = _rig_kw(grid, p, sel, temp_c[:, cols], rng)
            (hidden if t == "bypass" else kw)[:, cols] += load
            if t == "bypass":
                diverted.update(_divert(grid, kw, hidden, cols, p["onset_step"][sel],
                                        p["diverted_frac"][sel], lo))

    def select(t):
        if t not in scen:
            return None, None, None
        p = scen[t]
        sel = np.flatnonzero((p["idx"] >= lo) & (p["idx"] < hi))
        return (p, sel, p["idx"][sel] - lo) if len(sel) else (None, None, None)

    region_daily = weather.daily_mean_c  # (days, n_regions)

    p, sel, cols = select("night_storage_heating")
    if p is not None:
        hdd = np.maximum(_BALANCE_TEMPERATURE_C - region_daily[:, pop.region[p["idx"][sel]]], 0)
        frac = np.clip(hdd / 12.0, 0.3, 1.0)
        len_h = p["max_len_h"][sel][None, :] * frac
        start_h = np.broadcast_to(p["start_h"][sel][None, :], len_h.shape)
        c, s, e = _daily_blocks(grid, cols, p["onset_day"][sel], start_h, len_h,
                                np.ones(len(sel)), rng)
        _add_blocks(kw, c, s, e, _lookup(cols, p["power_kw"][sel], c))

    p, sel, cols = select("electric_heating")
    if p is not None:
        tmp = temp_c[:, cols]
        night = (grid.hour < 6.0) | (grid.hour >= 23.0)
        setpoint = np.where(p["setback"][sel][None, :] & night[:, None], 16.0,
                            p["setpoint_c"][sel][None, :])
        heat = p["ua_kw_per_c"][sel] * np.maximum(setpoint - 3.0 - tmp, 0.0)
        heat = np.minimum(heat, p["max_kw"][sel]) * (1 + 0.08 * _ar1(rng, tmp.shape, 0.6))
        heat *= np.arange(T)[:, None] >= p["onset_step"][sel]
        kw[:, cols] += np.maximum(heat, 0).astype(np.float32)

    p, sel, cols = select("ev_charging")
    if p is not None:
        m = len(sel)
        evening = rng.uniform(17.5, 23.0, (grid.days, m))
        smart = rng.choice([23.0, 23.5], size=(grid.days, m))  # off-peak tariff start
        start_h = np.where(p["smart"][sel][None, :], smart, evening)
        len_h = rng.uniform(2.0, 5.0, (grid.days, m))
        c, s, e = _daily_blocks(grid, cols, p["onset_day"][sel], start_h, len_h,
                                p["p_day"][sel], rng)
        _add_blocks(kw, c, s, e, _lookup(cols, p["power_kw"][sel], c))

    p, sel, cols = select("growing_household")
    if p is not None:
        extra_mean = (p["factor"][sel] - 1) * pop.mean_kw[p["idx"][sel]]
        extra = _residential_kw(grid, extra_mean, temp_c[:, cols], rng, shift_sd=2.0)
        extra *= np.arange(T)[:, None] >= p["onset_step"][sel]
        kw[:, cols] += extra

    p, sel, cols = select("cycling_load")
    if p is not None:
        m = len(sel)
        mean_on = p["mean_on_steps"][sel]
        duty = p["duty"][sel]
        mean_off = mean_on * (1 - duty) / duty
        k = T // 2 + 1  # a cycle lasts at least 2 steps
        on_len = rng.geometric(1 / mean_on[None, :], (k, m))
        off_len = rng.geometric(np.minimum(1.0, 1 / mean_off[None, :]), (k, m))
        cycle_start = p["onset_step"][sel][None, :] + np.vstack(
            [np.zeros((1, m), dtype=np.int64), np.cumsum(on_len + off_len, axis=0)[:-1]])
        keep = cycle_start < T
        jj = np.broadcast_to(np.arange(m)[None, :], (k, m))[keep]
        s = cycle_start[keep]
        _add_blocks(kw, cols[jj], s, s + on_len[keep], p["power_kw"][sel][jj])

    p, sel, cols = select("suppressed_licensed")
    if p is not None:
        tmp = temp_c[:, cols]
        load = p["power_kw"][sel] * (1 + 0.005 * (tmp - 15.0)
                                     + 0.01 * rng.standard_normal(tmp.shape, dtype=np.float32))
        load *= np.arange(T)[:, None] >= p["onset_step"][sel]
        kw[:, cols] += load.astype(np.float32)

    def from_onset(p, sel):
        return np.arange(T)[:, None] >= p["onset_step"][sel][None, :]

    p, sel, cols = select("heat_pump")
    if p is not None:
        hp = loads.heat_pump_kw(temp_c[:, cols], grid.hour, rated_kw=p["rated_kw"][sel],
                                heat_loss_kw_per_k=p["heat_loss_kw_per_k"][sel], rng=rng,
                                step_hours=_STEP_HOURS, hot_water_h=p["hot_water_h"][sel])
        kw[:, cols] += hp * from_onset(p, sel)
    p, sel, cols = select("small_constant_load")
    if p is not None:
        load = p["power_kw"][sel][None, :] * (1 + 0.01 * rng.standard_normal((T, len(sel))))
        kw[:, cols] += (load * from_onset(p, sel)).astype(np.float32)
    p, sel, cols = select("move_in")
    if p is not None:
        vacant = p["vacant_kw"][sel][None, :] * (1 + 0.05 * rng.standard_normal((T, len(sel))))
        kw[:, cols] = np.where(from_onset(p, sel), kw[:, cols], vacant.astype(np.float32))
    p, sel, cols = select("new_freezer")
    if p is not None:
        freezer = loads.cycling_kw(T, len(sel), power_kw=p["power_kw"][sel], duty=p["duty"][sel],
                                   mean_on_min=p["mean_on_min"][sel], step_hours=_STEP_HOURS,
                                   rng=rng)
        kw[:, cols] += freezer * from_onset(p, sel)
    return hidden, diverted


def _pv_generation(grid, pop, scen, lo, hi, rng):
    """Rooftop PV output [kW] of meters lo..hi-1 on the 15-min grid (zeros without PV)."""
    out = np.zeros((grid.n_steps, hi - lo), dtype=np.float32)
    if pop.pv_kwp is None or not (pop.pv_kwp[lo:hi] > 0).any():
        return out
    cols = np.flatnonzero(pop.pv_kwp[lo:hi] > 0)
    utc = grid.utc
    utc_hour = (utc.hour + utc.minute / 60.0).to_numpy()
    lon = float(np.mean(pop.lon[lo:hi][cols]))  # one sky and one sun per block of neighbours
    out[:, cols] = loads.pv_kw(pop.pv_kwp[lo:hi][cols], lat_deg=pop.lat[lo:hi][cols],
                               day_of_year=utc.day_of_year.to_numpy(),
                               solar_hour=(utc_hour + lon / 15.0) % 24.0, day=grid.day, rng=rng)
    if "pv_inverter_failure" in scen:
        p = scen["pv_inverter_failure"]
        sel = np.flatnonzero((p["idx"] >= lo) & (p["idx"] < hi))
        if len(sel):
            failed = np.searchsorted(cols, p["idx"][sel] - lo)
            after = np.arange(grid.n_steps)[:, None] >= p["onset_step"][sel][None, :]
            out[:, cols[failed]] *= ~after
    return out


def _divert(grid, kw, hidden, cols, onset_step, frac, lo):
    """Move ``frac`` of each household's load from its onset on from ``kw`` to ``hidden``."""
    after = np.arange(grid.n_steps)[:, None] >= onset_step[None, :]
    moved = kw[:, cols] * (frac[None, :] * after).astype(np.float32)
    kw[:, cols] -= moved
    hidden[:, cols] += moved
    recent = np.maximum(grid.day_start[max(grid.days - 7, 0)], onset_step)
    keep = np.arange(grid.n_steps)[:, None] >= recent[None, :]
    mean = (moved * keep).sum(axis=0, dtype=np.float64) / np.maximum(keep.sum(axis=0), 1)
    return {int(c + lo): float(m) for c, m in zip(cols, mean, strict=True)}


def _lookup(cols, values, c):
    """``values`` of the meter in column ``c`` (``cols`` are sorted distinct columns)."""
    return np.asarray(values)[np.searchsorted(cols, c)]


# =====================================================================================
# aggregation, mess and writing
# =====================================================================================
def _chunks(pop):
    """Meter ranges [lo, hi) of about _CHUNK_METERS meters, cut at transformer boundaries."""
    tx_start = np.flatnonzero(np.r_[True, pop.transformer[1:] != pop.transformer[:-1]])
    bounds = [0]
    for s in tx_start[1:]:  # one iteration per transformer
        if s - bounds[-1] >= _CHUNK_METERS:
            bounds.append(int(s))
    bounds.append(pop.n)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _to_intervals(kw, interval_steps, freeze_step):
    """Per-meter interval energy [kWh] as long arrays (local column, step, kwh).

    Rows are sorted by column then time. ``freeze_step`` (-1 when none) makes a
    meter repeat its last reading from that step on.
    """
    T, n = kw.shape
    rows_per_meter = T // interval_steps
    offset = np.r_[0, np.cumsum(rows_per_meter)]
    n_rows = int(offset[-1])
    c_out = np.repeat(np.arange(n), rows_per_meter)
    step_out = np.empty(n_rows, dtype=np.int64)
    kwh_out = np.empty(n_rows, dtype=np.float64)
    for k in (1, 2, 4):  # 15, 30, 60 minutes
        cols = np.flatnonzero(interval_steps == k)
        if not len(cols):
            continue
        e = kw[:, cols].reshape(T // k, k, len(cols)).sum(axis=1, dtype=np.float64)
        e = np.round(np.maximum(e, 0.0) * _STEP_HOURS, 3)
        f = freeze_step[cols]
        frozen = np.flatnonzero(f >= 0)
        if len(frozen):
            row = np.maximum(f[frozen] // k, 1)
            value = np.maximum(e[row - 1, frozen], 0.001 * k)
            rows = np.arange(T // k)[:, None]
            e[:, frozen] = np.where(rows >= row[None, :], value[None, :], e[:, frozen])
        pos = (offset[cols][:, None] + np.arange(T // k)[None, :]).ravel()
        step_out[pos] = np.tile(np.arange(0, T, k), len(cols))
        kwh_out[pos] = e.T.ravel()
    return c_out, step_out, kwh_out


_DIRTY_KEYS = (
    "rows_expected", "rows_written", "gaps", "gap_meters", "gap_rows",
    "duplicate_rows_identical", "duplicate_rows_conflicting",
    "out_of_order_blocks", "out_of_order_rows", "negative_values", "spikes",
    "upstream_gaps", "upstream_gap_rows",
)


def _inject_mess(c, step, kwh, interval_steps, frozen_cols, grid, rng, export=None):
    """Gaps, duplicates, negatives, spikes and out-of-order blocks on long arrays.

    ``c, step, kwh`` are sorted by column then time, as :func:`_to_intervals`
    returns them. Rows of ``frozen_cols`` (stuck registers) keep their value
    and get no duplicates. ``export`` (the export register, or None) follows
    its rows. Returns the new arrays, a dict of counts and the export.
    """
    counts = dict.fromkeys(_DIRTY_KEYS, 0)
    n_cols = len(interval_steps)
    T = grid.n_steps
    offset = np.r_[0, np.cumsum(T // interval_steps)]

    # Gaps: 3 % of meters, 2-12 h (70 %) or 1-3 days, ending before the last 3 days.
    gap_cols = np.flatnonzero(rng.random(n_cols) < 0.03)
    if len(gap_cols):
        hours = np.where(rng.random(len(gap_cols)) < 0.7, rng.uniform(2, 12, len(gap_cols)),
                         rng.uniform(24, 72, len(gap_cols)))
        length = np.round(hours * _STEPS_PER_HOUR).astype(np.int64)
        latest = np.maximum(grid.day_start[max(grid.days - 3, 1)] - length, 1)
        g_start = (rng.random(len(gap_cols)) * latest).astype(np.int64)
        k = interval_steps[gap_cols]
        first = offset[gap_cols] + -(-g_start // k)  # rows with step in [start, start + length)
        last = offset[gap_cols] + -(-(g_start + length) // k)
        drop = np.concatenate([np.arange(a, b) for a, b in zip(first, last, strict=True)])
        keep = np.ones(len(c), dtype=bool)
        keep[drop] = False
        rows = np.flatnonzero(keep)
        counts["gap_rows"] = len(drop)
        counts["gaps"] = counts["gap_meters"] = int((last > first).sum())
    else:
        rows = np.arange(len(c))

    # Disjoint random rows for duplicates, conflicting duplicates, negatives, spikes
    # (positions in ``rows``, the rows left after the gaps).
    n = len(rows)
    sizes = [int(rng.binomial(n, q)) for q in (0.001, 0.0005, 0.0002, 0.0002)]
    want = sum(sizes)
    picks = rng.choice(n, size=min(n, int(want * 1.2) + 10), replace=False) if n else rows[:0]
    picks = picks[~frozen_cols[c[rows[picks]]]][:want]
    bounds = np.cumsum([0, *sizes])
    dup, conf, neg, spike = (picks[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))

    kwh = kwh.copy()
    kwh[rows[neg]] = -np.round(rng.uniform(0.01, 0.5, len(neg)), 3)
    level = np.bincount(c, weights=np.maximum(kwh, 0), minlength=n_cols) / np.maximum(
        np.bincount(c, minlength=n_cols), 1)
    kwh[rows[spike]] = np.round(
        np.maximum(level[c[rows[spike]]], 0.01) * rng.uniform(200, 2000, len(spike)), 3)
    counts["negative_values"] = len(neg)
    counts["spikes"] = len(spike)

    # Duplicates right after their original; conflicting ones carry another value.
    pos = np.concatenate([dup, conf])
    is_conf = np.r_[np.zeros(len(dup), dtype=bool), np.ones(len(conf), dtype=bool)]
    order = np.argsort(pos, kind="stable")
    pos, is_conf = pos[order], is_conf[order]
    idx = np.insert(rows, pos + 1, rows[pos])
    c, step, kwh = c[idx], step[idx], kwh[idx]
    export = None if export is None else export[idx]
    second = (pos + 1 + np.arange(len(pos)))[is_conf]
    factor = np.where(rng.random(len(second)) < 0.5, rng.uniform(0.5, 0.9, len(second)),
                      rng.uniform(1.1, 1.5, len(second)))
    new = np.round(kwh[second] * factor, 3)
    kwh[second] = np.where(new == kwh[second], kwh[second] + 0.001, new)
    counts["duplicate_rows_identical"] = len(dup)
    counts["duplicate_rows_conflicting"] = len(conf)

    # Out-of-order: reverse a few blocks of 5-40 rows of one meter.
    n = len(c)
    n_blocks = min(25, max(1, int(round(n / 200_000)))) if n > 100 else 0
    slots = np.arange(0, max(n - 41, 0), 50)
    if n_blocks and len(slots):
        starts = np.sort(rng.choice(slots, size=min(n_blocks, len(slots)), replace=False))
        lengths = rng.integers(5, 41, len(starts))
        ok = c[starts] == c[starts + lengths - 1]
        starts, lengths = starts[ok], lengths[ok]
        for a, m in zip(starts, lengths, strict=True):  # at most 25 blocks
            step[a:a + m] = step[a:a + m][::-1].copy()
            kwh[a:a + m] = kwh[a:a + m][::-1].copy()
            if export is not None:
                export[a:a + m] = export[a:a + m][::-1].copy()
        counts["out_of_order_blocks"] = len(starts)
        counts["out_of_order_rows"] = int(lengths.sum())
    return c, step, kwh, counts, export


def _upstream_kwh(true_kw, tx_local, rng, reverse_flow=False):
    """Return transformer energy per 15-min step [kWh], shape (n_steps, n_tx).

    ``reverse_flow``: the homes' net demand may be negative (rooftop PV), and
    so may the delivered energy; otherwise it is clipped at 0.
    """
    starts = np.flatnonzero(np.r_[True, tx_local[1:] != tx_local[:-1]])
    load_kw = np.add.reduceat(true_kw, starts, axis=1, dtype=np.float64)
    n_tx = load_kw.shape[1]
    mean_kw = np.maximum(np.abs(load_kw).mean(axis=0), 1e-3)
    no_load_kw = rng.uniform(0.005, 0.02, n_tx) * mean_kw
    k_per_kw = rng.uniform(0.005, 0.02, n_tx) / mean_kw  # load loss at mean load
    ct_error = rng.uniform(-0.005, 0.005, n_tx)
    delivered = (load_kw + no_load_kw + k_per_kw * load_kw ** 2) * (1 + ct_error)
    delivered += 0.003 * mean_kw * rng.standard_normal(delivered.shape)
    return np.round((delivered if reverse_flow else np.maximum(delivered, 0)) * _STEP_HOURS, 3)


_FAULT_ROW_KEYS = ("scada_outage_rows", "clock_offset_dropped_rows")


def _ct_ratio_kwh(energy_kwh, factor, start_step):
    """Upstream energy [kWh] after CT ratio changes, shape (n_steps, n_tx).

    Column ``j`` is multiplied by ``factor[j]`` from step ``start_step[j]``
    on (``start_step >= n_steps``: no change) and rounded to 1 Wh again.
    """
    n_steps = energy_kwh.shape[0]
    cols = np.flatnonzero(start_step < n_steps)
    if not len(cols):
        return energy_kwh
    out = energy_kwh.copy()
    after = np.arange(n_steps)[:, None] >= start_step[cols][None, :]
    out[:, cols] = np.where(after, np.round(energy_kwh[:, cols] * factor[cols], 3),
                            energy_kwh[:, cols])
    return out


def _scada_faults(asset, step, kwh, faults, grid):
    """Drop SCADA outage rows and stamp clock-offset assets ``h`` hours off.

    ``asset, step, kwh`` are long upstream rows (transformer index, 15-min
    step, energy). Rows stamped outside the window are dropped. Returns the
    kept rows (with their new steps) and the counts of rows removed.
    """
    start = faults.outage_start_step[asset]
    length = _SCADA_OUTAGE_HOURS * _STEPS_PER_HOUR
    in_outage = (start >= 0) & (step >= start) & (step < start + length)
    stamped = step + faults.clock_hours[asset] * _STEPS_PER_HOUR
    outside = (stamped < 0) | (stamped >= grid.n_steps)
    keep = ~(in_outage | outside)
    counts = {"scada_outage_rows": int(in_outage.sum()),
              "clock_offset_dropped_rows": int((outside & ~in_outage).sum())}
    return asset[keep], stamped[keep], kwh[keep], counts


def _upstream_gaps(n_tx, grid, rng):
    """Rows kept (transformer-major, 15-min steps) after SCADA gaps on ~10 % of transformers.

    A gap lasts 1-6 h (70 %) or 12-48 h and ends before the last 3 days.
    """
    T = grid.n_steps
    keep = np.ones(n_tx * T, dtype=bool)
    hit = np.flatnonzero(rng.random(n_tx) < 0.10)
    if not len(hit):
        return keep, 0
    hours = np.where(rng.random(len(hit)) < 0.7, rng.uniform(1, 6, len(hit)),
                     rng.uniform(12, 48, len(hit)))
    length = np.round(hours * _STEPS_PER_HOUR).astype(np.int64)
    latest = np.maximum(grid.day_start[max(grid.days - 3, 1)] - length, 1)
    start = (rng.random(len(hit)) * latest).astype(np.int64)
    stop = np.minimum(start + length, T)
    delta = np.zeros(n_tx * T + 1, dtype=np.int64)
    np.add.at(delta, hit * T + start, 1)
    np.add.at(delta, hit * T + stop, -1)
    keep &= np.cumsum(delta[:-1]) == 0
    return keep, int((stop > start).sum())


class _TableWriter:
    """Write long (id, timestamp, kwh[, kwh_export]) tables chunk by chunk as Parquet or CSV.

    With ``export``, a ``kwh_export`` column follows ``kwh``: NaN values are
    written as nulls (empty in CSV: no export register).
    """

    def __init__(self, path, id_column, ids, grid, fmt, export=False):
        self.fmt = fmt
        self.id_column = id_column
        self.export = export
        self.ids = pa.array(np.asarray(ids, dtype=object), type=pa.string())
        values = [(col.KWH, pa.float64())] + ([(col.KWH_EXPORT, pa.float64())] if export else [])
        if fmt == "parquet":
            self.time_type = pa.timestamp("us", tz="UTC")
            self.times = pa.array(grid.utc.as_unit("us"), type=self.time_type)
            schema = pa.schema([(id_column, pa.string()), (col.TIMESTAMP, self.time_type), *values])
            self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        else:
            local = grid.utc.tz_convert(grid.tz)
            stamp = local.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.times = pa.array([s[:-2] + ":" + s[-2:] for s in stamp], type=pa.string())
            schema = pa.schema([(id_column, pa.string()), (col.TIMESTAMP, pa.string()), *values])
            self.writer = pacsv.CSVWriter(path, schema,
                                          write_options=pacsv.WriteOptions(quoting_style="none"))
        self.schema = schema

    def write(self, id_index, step, kwh, export=None):
        columns = [self.ids.take(pa.array(id_index)), self.times.take(pa.array(step)),
                   pa.array(kwh, type=pa.float64())]
        if self.export:
            columns.append(pa.array(export, type=pa.float64(), from_pandas=True))
        self.writer.write_table(pa.table(columns, schema=self.schema))

    def close(self):
        self.writer.close()


def _write_series(out_dir, pop, scen, grid, weather, rng, *, fmt, dirty, upstream, faults=None):
    """Simulate meter blocks and stream readings and upstream tables to disk.

    ``faults`` (a :class:`_NetworkFaults` or None) changes the upstream
    table only, after the block's random draws. Returns the dirty counts,
    ``{meter index: diverted household load [kW]}`` and the upstream rows
    the faults removed (``scada_outage_rows``, ``clock_offset_dropped_rows``).
    """
    ext = "parquet" if fmt == "parquet" else "csv"
    counts = dict.fromkeys(_DIRTY_KEYS, 0)
    fault_rows = dict.fromkeys(_FAULT_ROW_KEYS, 0)
    diverted = {}
    freeze = np.full(pop.n, -1, dtype=np.int64)
    if "frozen_meter" in scen:
        freeze[scen["frozen_meter"]["idx"]] = scen["frozen_meter"]["freeze_step"]
    has_pv = bool((pop.pv_kwp > 0).any())
    no_freeze = np.full(pop.n, -1, dtype=np.int64)
    chunks = _chunks(pop)
    chunk_rngs = rng.spawn(len(chunks))
    with contextlib.ExitStack() as stack:  # closes each writer before moving its file in place
        r_tmp = stack.enter_context(atomic_path(out_dir / f"readings.{ext}", suffix=f".{ext}"))
        readings = _TableWriter(r_tmp, col.METER_ID, pop.meter_id, grid, fmt, export=has_pv)
        stack.callback(readings.close)
        up = None
        if upstream:
            u_tmp = stack.enter_context(atomic_path(out_dir / f"upstream.{ext}", suffix=f".{ext}"))
            up = _TableWriter(u_tmp, col.ASSET_ID, pop.transformer_ids, grid, fmt)
            stack.callback(up.close)
        for (lo, hi), crng in zip(chunks, chunk_rngs, strict=True):  # blocks of ~2,000 meters
            kw, hidden, div, generation = _simulate_block(grid, pop, scen, weather, lo, hi, crng)
            diverted.update(div)
            export = None
            if has_pv:  # the registers see the home's net demand, split by sign
                kw, export_kw = loads.import_export_kw(kw, generation)
                kw = kw.astype(np.float32)
                ce, _, export = _to_intervals(export_kw, pop.interval_steps[lo:hi],
                                              no_freeze[lo:hi])
                export[~pop.exports[lo:hi][ce]] = np.nan  # an old meter: no export register
            c, step, kwh = _to_intervals(kw, pop.interval_steps[lo:hi], freeze[lo:hi])
            counts["rows_expected"] += len(c)
            if dirty:
                c, step, kwh, n, export = _inject_mess(c, step, kwh, pop.interval_steps[lo:hi],
                                                       freeze[lo:hi] >= 0, grid, crng, export)
                for key, value in n.items():
                    counts[key] += value
            counts["rows_written"] += len(c)
            readings.write(c + lo, step, kwh, export)
            if up is not None:
                kw += hidden  # the transformer delivers what the meters miss
                if has_pv:
                    kw -= export_kw.astype(np.float32)  # ... less what the homes export
                tx = pop.transformer[lo:hi]
                energy = _upstream_kwh(kw, tx, crng, reverse_flow=has_pv)
                tx_index = np.unique(tx)
                if faults is not None:
                    energy = _ct_ratio_kwh(energy, faults.ct_factor[tx_index],
                                           faults.ct_start_step[tx_index])
                asset = np.repeat(tx_index, grid.n_steps)
                step = np.tile(np.arange(grid.n_steps), energy.shape[1])
                energy = energy.T.ravel()
                if dirty:  # drawn last from the block's generator: readings do not change
                    keep, n_gaps = _upstream_gaps(energy.size // grid.n_steps, grid, crng)
                    asset, step, energy = asset[keep], step[keep], energy[keep]
                    counts["upstream_gaps"] += n_gaps
                    counts["upstream_gap_rows"] += int((~keep).sum())
                if faults is not None:
                    asset, step, energy, n = _scada_faults(asset, step, energy, faults, grid)
                    for key, value in n.items():
                        fault_rows[key] += value
                up.write(asset, step, energy)
    # A table left by an earlier run in another format (or with upstream) would be read
    # beside this one; remove it.
    other = "csv" if ext == "parquet" else "parquet"
    (out_dir / f"readings.{other}").unlink(missing_ok=True)
    (out_dir / f"upstream.{other}").unlink(missing_ok=True)
    if not upstream:
        (out_dir / f"upstream.{ext}").unlink(missing_ok=True)
    return counts, diverted, fault_rows


def _simulate_block(grid, pop, scen, weather, lo, hi, rng):
    """Demand [kW] of meters lo..hi-1 on the 15-min grid, what bypasses them, their PV.

    Returns the homes' consumption, the load around the meters (bypass rigs
    and diverted household load), each bypass's diverted load [kW] and the
    rooftop PV output [kW] (zeros without PV).
    """
    n = hi - lo
    temp_c = np.take(weather.temperature_c, pop.region[lo:hi], axis=1)
    kw = np.empty((grid.n_steps, n), dtype=np.float32)
    cls = pop.cls[lo:hi]
    for c, model in _CLASS_MODELS.items():  # loop per customer class
        cols = np.flatnonzero(cls == c)
        if len(cols):
            kw[:, cols] = model(grid, pop.mean_kw[lo:hi][cols], temp_c[:, cols], rng)
    hidden, diverted = _add_scenarios(grid, pop, scen, lo, hi, kw, temp_c, weather, rng)
    generation = _pv_generation(grid, pop, scen, lo, hi, rng)
    return kw, hidden, diverted, generation


def _write_meters(path, pop, listed=None):
    """Write ``meters.csv``; ``listed`` (transformer index per meter) is what it says.

    The feeder and substation are the true transformer's (a mismapped meter is
    listed under another transformer of its own feeder).
    """
    tx = pop.transformer
    listed = tx if listed is None else listed
    frame = pd.DataFrame({
        col.METER_ID: pop.meter_id,
        col.TRANSFORMER_ID: pop.transformer_ids[listed],
        col.FEEDER_ID: pop.feeder_ids[tx],
        col.SUBSTATION_ID: pop.substation_ids[tx],
        col.CUSTOMER_CLASS: np.array(_CLASSES)[pop.cls],
        col.REGION: np.array(pop.region_names)[pop.region],
        col.TARIFF_PER_KWH: pop.tariff_per_kwh,
        col.CONTRACTED_KW: pop.contracted_kw,
        col.LAT: pop.lat,
        col.LON: pop.lon,
    })
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _write_weather(path, grid, weather):
    hours = np.arange(0, grid.n_steps, _STEPS_PER_HOUR)
    local = grid.utc[hours].tz_convert(grid.tz).strftime("%Y-%m-%dT%H:%M:%S%z")
    stamp = np.array([s[:-2] + ":" + s[-2:] for s in local], dtype=object)
    n_h, n_r = weather.hourly_c.shape
    frame = pd.DataFrame({
        col.REGION: np.repeat(np.array(weather.names, dtype=object), n_h),
        col.TIMESTAMP: np.tile(stamp, n_r),
        col.TEMPERATURE_C: weather.hourly_c.T.ravel(),
    })
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.1f")


# =====================================================================================
# the same population as a utility exports it (issue 16)
# =====================================================================================
#: Column names :func:`export_as_utility` writes: contract name -> the export's name.
UTILITY_COLUMNS = {
    "meters": {col.METER_ID: "ServicePoint", col.TRANSFORMER_ID: "Transformer"},
    "readings": {col.METER_ID: "ServicePoint", col.DEVICE_ID: "MeterSerial",
                 col.TIMESTAMP: "ReadTime", col.REGISTER_KWH: "RegisterWh",
                 col.KWH: "ConsumptionWh", col.KWH_EXPORT: "ExportWh"},
    "upstream": {col.ASSET_ID: "Asset", col.TIMESTAMP: "IntervalEnd", col.KWH: "DemandKW"},
    "weather": {col.REGION: "Area", col.TIMESTAMP: "ObsTime", col.TEMPERATURE_C: "TempC"},
}

_WH_PER = {"Wh": 1000.0, "kWh": 1.0, "MWh": 0.001}
_W_PER = {"W": 1000.0, "kW": 1.0, "MW": 0.001}


def export_as_utility(dataset_dir, out_dir, *, unit: str = "Wh", upstream_unit: str = "kW",
                      end_stamps: bool = True, registers: bool = True,
                      rollover_kwh: float = 100_000.0, rollover_meter: str | None = None,
                      exchange_meter: str | None = None, seed: int = 0) -> Path:
    """Write a contract dataset again as a utility's MDM would export it.

    Same meters, same energy; only the form changes, so a run on ``out_dir``
    with the config written there gives the flags of a run on
    ``dataset_dir`` (``tests/test_export_forms.py``).

    * every table with the export's column names (:data:`UTILITY_COLUMNS`);
    * readings in ``unit`` (Wh by default), upstream as mean power in
      ``upstream_unit`` (kW);
    * naive local timestamps (the dataset's time zone) that mark the END of
      each interval, when ``end_stamps``;
    * with ``registers``: a cumulative import register per meter instead of
      interval energy, read at the end of each interval (plus one opening
      read at the start of the first), with a ``MeterSerial`` device column.
      One meter's register wraps past ``rollover_kwh`` mid-period and another
      meter is exchanged mid-period (the old device's last read and the new
      one's installation read share an instant, as a crew records them).

    Parameters
    ----------
    dataset_dir : str or os.PathLike
        A dataset written by :func:`simulate_dataset` (its ``gridwatch.toml`` too).
    out_dir : str or os.PathLike
        Where to write ``meters.csv``, ``readings.csv``, ``upstream.csv``,
        ``weather.csv``, ``labels.json`` and ``gridwatch.toml``.
    unit : {"Wh", "kWh", "MWh"}, default "Wh"
        Unit of the readings' energy (and register).
    upstream_unit : {"W", "kW", "MW"}, default "kW"
        Unit of the upstream's mean power over each interval.
    end_stamps : bool, default True
        Stamps mark the END of the interval (always with ``registers``: a
        read is the count at its instant).
    registers : bool, default True
        Cumulative register reads (``RegisterWh``) instead of interval energy.
    rollover_kwh : float, default 100000
        Where every register wraps to 0 [kWh].
    rollover_meter, exchange_meter : str, optional
        The meter whose register wraps and the meter exchanged (default: the
        first and second meters with readings, sorted by id).
    seed : int, default 0
        Seeds the registers' opening values.

    Returns
    -------
    pathlib.Path
        ``out_dir/gridwatch.toml``: the dataset's config plus the
        ``[data.*]`` sections that read this form.

    Notes
    -----
    The dataset is read whole into memory: this is a tool for tests and
    examples, not for 100,000 meters. Registers are summed in whole Wh
    (the contract files carry 1 Wh resolution), so differencing gives back
    the same kWh exactly. A missing interval (none in a ``dirty=False``
    dataset) becomes a missing read, so the interval after it is lost too.
    """
    import json
    import shutil
    import tomllib

    from gridwatch.atomic import write_text
    from gridwatch.sources.files import find_table

    src, out = Path(dataset_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(src / CONFIG_NAME, "rb") as handle:
        base = tomllib.load(handle)
    tz = base.get("data", {}).get("timezone", "UTC")
    names = UTILITY_COLUMNS
    rng = np.random.default_rng(seed)

    meters = pd.read_csv(find_table(src, "meters"), dtype=str, keep_default_na=False)
    _to_csv(meters.rename(columns=names["meters"]), out / "meters.csv")

    readings = _read_long(find_table(src, "readings"))
    readings = readings.sort_values([col.METER_ID, col.TIMESTAMP], kind="stable",
                                    ignore_index=True)
    step = _interval_minutes(readings, col.METER_ID)
    end = readings[col.TIMESTAMP] + pd.to_timedelta(step, unit="min")
    wh = np.round(readings[col.KWH].to_numpy() * 1000.0)  # whole Wh, as the contract's 3 decimals
    per = _WH_PER[unit] / 1000.0  # of the unit per Wh: Wh stays whole (exact)
    export = readings.get(col.KWH_EXPORT)
    export = None if export is None else np.round(export.to_numpy() * 1000.0) * per
    if not registers:
        frame = pd.DataFrame({names["readings"][col.METER_ID]: readings[col.METER_ID],
                              names["readings"][col.TIMESTAMP]: _naive(
                                  end if end_stamps else readings[col.TIMESTAMP], tz),
                              names["readings"][col.KWH]: wh * per})
        if export is not None:
            frame[names["readings"][col.KWH_EXPORT]] = export
    else:
        frame = _register_reads(readings, end, wh, export, rng, per=per, tz=tz,
                                rollover_kwh=rollover_kwh, rollover_meter=rollover_meter,
                                exchange_meter=exchange_meter)
    _to_csv(frame, out / "readings.csv")

    up_path = find_table(src, "upstream")
    if up_path is not None:
        up = _read_long(up_path).sort_values([col.ASSET_ID, col.TIMESTAMP], kind="stable",
                                             ignore_index=True)
        up_step = _interval_minutes(up, col.ASSET_ID)
        up_end = up[col.TIMESTAMP] + pd.to_timedelta(up_step, unit="min")
        power = up[col.KWH].to_numpy() * (60.0 / up_step) * _W_PER[upstream_unit]
        _to_csv(pd.DataFrame({names["upstream"][col.ASSET_ID]: up[col.ASSET_ID],
                              names["upstream"][col.TIMESTAMP]: _naive(
                                  up_end if end_stamps else up[col.TIMESTAMP], tz),
                              names["upstream"][col.KWH]: power}), out / "upstream.csv")
    weather_path = find_table(src, "weather")
    if weather_path is not None:
        weather = _read_long(weather_path)
        weather[col.TIMESTAMP] = _naive(weather[col.TIMESTAMP], tz)
        _to_csv(weather.rename(columns=names["weather"]), out / "weather.csv")
    if (src / "labels.json").is_file():
        shutil.copyfile(src / "labels.json", out / "labels.json")

    def inline(table, keys):
        pairs = ", ".join(f"{json.dumps(names[table][k])} = {json.dumps(k)}" for k in keys)
        return f"columns = {{{pairs}}}"

    reading_keys = [col.METER_ID, col.TIMESTAMP,
                    *([col.DEVICE_ID, col.REGISTER_KWH] if registers else [col.KWH]),
                    *([col.KWH_EXPORT] if export is not None else [])]
    stamps = "end" if (end_stamps or registers) else "start"
    lines = [(src / CONFIG_NAME).read_text(encoding="utf-8").rstrip(), "",
             "# The same population as a utility exports it (gridwatch.simulate.export_as_utility):",
             "# its own column names and units, END-of-interval stamps"
             + (", cumulative register reads." if registers else "."),
             "[data.meters]", inline("meters", names["meters"]), "",
             "[data.readings]", inline("readings", reading_keys), f"unit = {json.dumps(unit)}",
             f"timestamp_marks = {json.dumps(stamps)}"]
    if registers:
        lines += ['value = "register"', f"rollover_kwh = {float(rollover_kwh)!r}"]
    if up_path is not None:
        lines += ["", "[data.upstream]", inline("upstream", names["upstream"]),
                  f"unit = {json.dumps(upstream_unit)}",
                  f"timestamp_marks = {json.dumps('end' if end_stamps else 'start')}"]
    if weather_path is not None:
        lines += ["", "[data.weather]", inline("weather", names["weather"])]
    path = out / CONFIG_NAME
    write_text(path, "\n".join(lines) + "\n")
    return path


def _read_long(path) -> pd.DataFrame:
    """A contract long table with UTC timestamps (independent of gridwatch's readers)."""
    if str(path).endswith(".parquet"):
        frame = pq.read_table(path).to_pandas()
    else:
        frame = pd.read_csv(path, dtype={col.METER_ID: str, col.ASSET_ID: str, col.REGION: str})
    frame[col.TIMESTAMP] = pd.to_datetime(frame[col.TIMESTAMP], utc=True, format="ISO8601")
    for name in (col.METER_ID, col.ASSET_ID, col.REGION):
        if name in frame:
            frame[name] = frame[name].astype(str)
    return frame


def _interval_minutes(frame, id_column) -> np.ndarray:
    """Each row's id's most common step [min] (frame sorted by id and time)."""
    step = frame.groupby(id_column, sort=False)[col.TIMESTAMP].diff().dt.total_seconds() / 60
    counts = pd.DataFrame({"id": frame[id_column], "step": step}).dropna().value_counts()
    mode = counts.reset_index(name="n").sort_values(["id", "n", "step"],
                                                    ascending=[True, False, True])
    mode = mode.drop_duplicates("id").set_index("id")["step"]
    return frame[id_column].map(mode).fillna(60.0).to_numpy()


def _naive(stamps: pd.Series, tz: str) -> pd.Series:
    """Naive local wall-clock text, as most MDM exports write it."""
    return pd.Series(pd.DatetimeIndex(stamps).tz_convert(tz).strftime("%Y-%m-%d %H:%M:%S"),
                     index=stamps.index)


def _to_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _register_reads(readings, end, wh, export, rng, *, per, tz, rollover_kwh, rollover_meter,
                    exchange_meter) -> pd.DataFrame:
    """Cumulative register reads [Wh] at the END of each interval, one opening read per meter."""
    names = UTILITY_COLUMNS["readings"]
    ids = readings[col.METER_ID].to_numpy()
    order_ids = np.unique(ids)
    rollover_meter = order_ids[0] if rollover_meter is None else rollover_meter
    exchange_meter = order_ids[min(1, len(order_ids) - 1)] if exchange_meter is None \
        else exchange_meter
    roll_wh = int(round(rollover_kwh * 1000))
    wh_int = np.nan_to_num(wh).astype(np.int64)
    total = pd.Series(wh_int).groupby(ids).sum()
    # opening registers: below the wrap by more than each meter uses, except the one that wraps
    room = np.maximum(roll_wh - total.to_numpy(), 0)
    opening = pd.Series((rng.uniform(0.0, 0.5, len(total)) * room).astype(np.int64),
                        index=total.index)
    opening[rollover_meter] = roll_wh - int(total[rollover_meter]) // 2
    cum = pd.Series(wh_int).groupby(ids).cumsum().to_numpy() + opening.reindex(ids).to_numpy()
    device = np.char.add(ids.astype(str), "-1").astype(object)
    first = ~pd.Series(ids).duplicated().to_numpy()
    start_rows = pd.DataFrame({"m": ids[first], "t": readings[col.TIMESTAMP].to_numpy()[first],
                               "r": opening.reindex(ids[first]).to_numpy(),
                               "d": device[first], "x": np.nan})
    reads = pd.DataFrame({"m": ids, "t": end.to_numpy(), "r": cum, "d": device,
                          "x": np.nan if export is None else export})
    # the exchange: from the middle read on, a new device that starts at 7 kWh
    mine = np.flatnonzero(ids == exchange_meter)
    if len(mine) >= 4:
        at = mine[len(mine) // 2]
        base = cum[at] - 7_000
        after = mine[mine > at]
        reads.loc[after, "d"] = f"{exchange_meter}-2"
        reads.loc[after, "r"] = cum[after] - base
        install = pd.DataFrame({"m": [exchange_meter], "t": [reads.at[at, "t"]], "r": [7_000],
                                "d": [f"{exchange_meter}-2"], "x": [np.nan]})
        reads = pd.concat([reads.iloc[:at + 1], install, reads.iloc[at + 1:]], ignore_index=True)
    reads = pd.concat([start_rows, reads], ignore_index=True).sort_values(
        ["m", "t"], kind="stable", ignore_index=True)
    frame = pd.DataFrame({names[col.METER_ID]: reads["m"], names[col.DEVICE_ID]: reads["d"],
                          names[col.TIMESTAMP]: _naive(reads["t"], tz),
                          names[col.REGISTER_KWH]: (reads["r"].to_numpy() % roll_wh) * per})
    if export is not None:
        frame[names[col.KWH_EXPORT]] = reads["x"].to_numpy()
    return frame
