"""Load models of the field: the rigs and the look-alikes a utility meets.

Each function returns demand [kW] (or a boolean on/off mask) of shape
``(n_steps, n)`` for ``n`` sites on one time axis, vectorised over sites, with
every random draw taken from the ``numpy.random.Generator`` passed in. The
simulator (:mod:`gridwatch.simulate`) adds them to its synthetic households;
``bench/realdata_field.py`` adds the same loads to real ones.

The time axis is described by plain arrays of length ``n_steps``:
``hour`` (local hour of day at the step's start [h]), ``day`` (local day
index) and ``step_hours`` (step length [h]). Temperatures are
``(n_steps, n)`` or broadcastable to it [degrees C].

What each model is built from (published figures; see ``docs/field.md``):

* **rigs**: ASICs draw their nameplate power within a few percent, drifting
  with ambient temperature; GPU rigs ripple by about 5 % and restart a few
  times a day. Fleet software curtails by price and by time window (16-20 h
  peak hours are common) and for demand response; pools and home internet
  fail for hours (:func:`uptime_mask`, :func:`window_mask`).
* **crypto heaters** (rigs that heat the house, the normal case in Siberian
  and Kazakh winters): full power when it is cold, throttled to 50-70 %
  above about 12 C (:func:`crypto_heater_kw`).
* **heat pumps**: heat demand proportional to the difference between a
  balance temperature (about 15.5 C) and outdoor temperature, divided by a
  coefficient of performance that rises with temperature (about 2.3 at
  -7 C, 3.5 at 7 C), capped at the unit's rated electric input (so flat at
  full power when it is cold), cycling on and off below the compressor's
  minimum modulation, with short defrost dips between -7 and 5 C and a daily
  hot-water cycle (:func:`heat_pump_kw`).
* **rooftop PV**: clear-sky output from the sun's elevation at the site's
  latitude, times a day-to-day and within-day clearness (UK-like: many grey
  days), 0.8 performance ratio (:func:`pv_kw`). The meter's import and
  export registers come from the interval's net demand
  (:func:`import_export_kw`).
* **small steady appliances**: aquarium heaters and pumps, dehumidifiers,
  network and security gear, 0.1-0.25 kW around the clock; new freezers
  (compressor 0.08-0.15 kW at 30-50 % duty).
"""

from __future__ import annotations

import numpy as np

from gridwatch.solar import solar_elevation_sin

__all__ = [
    "crypto_heater_kw",
    "cycling_kw",
    "heat_pump_kw",
    "import_export_kw",
    "pv_kw",
    "rig_kw",
    "uptime_mask",
    "window_mask",
]

THROTTLE_ABOVE_C = 12.0
"""A crypto heater runs at full power below this outdoor temperature [degrees C]."""
HEAT_BALANCE_C = 15.5
"""Outdoor temperature above which a house needs no space heating [degrees C]."""
PV_PERFORMANCE_RATIO = 0.8
"""AC output at full sun over the array's rated peak power [-]."""


def _blocks_mask(n_steps, n, starts, lengths, cols):
    """Boolean (n_steps, n) mask, True inside the blocks ``[start, start + length)`` of ``cols``."""
    delta = np.zeros((n_steps + 1, n), dtype=np.int32)
    start = np.clip(starts, 0, n_steps)
    stop = np.clip(starts + lengths, 0, n_steps)
    np.add.at(delta, (start, cols), 1)
    np.add.at(delta, (stop, cols), -1)
    return np.cumsum(delta[:-1], axis=0) > 0


def uptime_mask(n_steps, n, *, step_hours, off_share, rng, block_hours=(1.0, 6.0)):
    """When a rig runs: off in blocks (pool outages, price curtailment, internet down).

    Parameters
    ----------
    n_steps, n : int
        Steps of the time axis and number of sites.
    step_hours : float
        Step length [h].
    off_share : float or array of shape (n,)
        Expected share of steps off [-] (0 for a rig that never stops).
    rng : numpy.random.Generator
    block_hours : (float, float), default (1, 6)
        Range of the length of one off block [h] (uniform).

    Returns
    -------
    numpy.ndarray of bool, shape (n_steps, n)
        True when the rig runs.

    Notes
    -----
    Block starts are a Poisson process whose rate gives ``off_share`` once
    overlaps are accounted for (``1 - exp(-rate * mean_length)``).
    """
    off_share = np.broadcast_to(np.asarray(off_share, dtype=np.float64), (n,))
    lo, hi = (h / step_hours for h in block_hours)
    mean_len = 0.5 * (lo + hi)
    with np.errstate(divide="ignore"):
        rate = -np.log1p(-np.clip(off_share, 0, 0.95)) / mean_len  # starts per step
    count = rng.poisson(rate * n_steps)
    cols = np.repeat(np.arange(n), count)
    starts = rng.integers(-int(hi), n_steps, len(cols))
    lengths = np.round(rng.uniform(lo, hi, len(cols))).astype(np.int64)
    return ~_blocks_mask(n_steps, n, starts, np.maximum(lengths, 1), cols)


def window_mask(hour, weekend, *, start_h, length_h, weekdays_only=False):
    """Steps inside a daily time window (peak-hour curtailment, demand response).

    Parameters
    ----------
    hour : numpy.ndarray of shape (n_steps,)
        Local hour of day [h].
    weekend : numpy.ndarray of bool, shape (n_steps,)
    start_h, length_h : float or array of shape (n,)
        Window start (local hour) and length [h]; a zero length is no window.
    weekdays_only : bool or array of shape (n,), default False
        The window applies on weekdays only.

    Returns
    -------
    numpy.ndarray of bool, shape (n_steps, n)
    """
    start_h = np.atleast_1d(np.asarray(start_h, dtype=np.float64))
    length_h = np.atleast_1d(np.asarray(length_h, dtype=np.float64))
    since = (hour[:, None] - start_h[None, :]) % 24.0
    inside = since < length_h[None, :]
    return inside & ~(np.asarray(weekdays_only)[None, ...] & weekend[:, None])


def rig_kw(nominal_kw, on, *, temperature_c, rng, ripple=0.01, temp_coef=0.003,
           restarts_per_day=0.0, step_hours=0.25, restart_minutes=(5.0, 30.0)):
    """A rig's draw: its nominal power while on, drifting a little with ambient temperature.

    Parameters
    ----------
    nominal_kw : array of shape (n,) or (n_steps, n)
        Nominal draw while running [kW]; a 2-D array carries staged installs.
    on : numpy.ndarray of bool, shape (n_steps, n)
        When it runs (:func:`uptime_mask`, :func:`window_mask`, an onset).
    temperature_c : array broadcastable to (n_steps, n)
        Outdoor (ambient) temperature [degrees C].
    rng : numpy.random.Generator
    ripple : float, default 0.01
        Relative step-to-step variation [-] (ASICs about 1 %, GPU rigs 5 %).
    temp_coef : float or array of shape (n,), default 0.003
        Relative change of draw per degree above 15 C [1/K] (fans).
    restarts_per_day : float, default 0
        Short stops a day (GPU rigs crash and restart, watchdogs reboot).
    step_hours : float, default 0.25
        Step length [h] (for the restarts).
    restart_minutes : (float, float), default (5, 30)
        Range of a restart's length [min].

    Returns
    -------
    numpy.ndarray of float32, shape (n_steps, n) [kW]
    """
    n_steps, n = on.shape
    nominal = np.broadcast_to(np.asarray(nominal_kw, dtype=np.float32), (n_steps, n))
    temp = np.broadcast_to(np.asarray(temperature_c, dtype=np.float32), (n_steps, n))
    drift = 1 + np.asarray(temp_coef, dtype=np.float32) * (temp - 15.0)
    drift = drift + ripple * rng.standard_normal((n_steps, n), dtype=np.float32)
    run = on
    if restarts_per_day > 0:
        count = rng.poisson(restarts_per_day * n_steps * step_hours / 24.0, n)
        cols = np.repeat(np.arange(n), count)
        starts = rng.integers(0, n_steps, len(cols))
        lo, hi = (m / 60.0 / step_hours for m in restart_minutes)
        lengths = np.maximum(np.round(rng.uniform(lo, hi, len(cols))), 1).astype(np.int64)
        run = on & ~_blocks_mask(n_steps, n, starts, lengths, cols)
    return (nominal * np.maximum(drift, 0) * run).astype(np.float32)


def crypto_heater_kw(nominal_kw, on, *, temperature_c, throttle_share, rng,
                     throttle_above_c=THROTTLE_ABOVE_C, band_c=2.0):
    """A rig that heats the house: full power when cold, throttled when warm.

    Parameters
    ----------
    nominal_kw : array of shape (n,)
        Full power [kW].
    on : numpy.ndarray of bool, shape (n_steps, n)
    temperature_c : array broadcastable to (n_steps, n)
        Outdoor temperature [degrees C] (hourly: the controller follows it).
    throttle_share : array of shape (n,)
        Share of full power kept when warm [-] (0.5-0.7 seen).
    rng : numpy.random.Generator
    throttle_above_c : float, default :data:`THROTTLE_ABOVE_C`
    band_c : float, default 2
        The controller ramps between full and throttled power over
        ``throttle_above_c +- band_c`` [K].

    Returns
    -------
    numpy.ndarray of float32, shape (n_steps, n) [kW]
    """
    temp = np.broadcast_to(np.asarray(temperature_c, dtype=np.float32), on.shape)
    warm = np.clip((temp - (throttle_above_c - band_c)) / (2 * band_c), 0.0, 1.0)
    share = 1.0 - warm * (1.0 - np.asarray(throttle_share, dtype=np.float32))
    level = np.asarray(nominal_kw, dtype=np.float32) * share
    return rig_kw(level, on, temperature_c=temp, rng=rng)


def heat_pump_kw(temperature_c, hour, *, rated_kw, heat_loss_kw_per_k, rng, step_hours,
                 balance_c=HEAT_BALANCE_C, min_modulation=0.3, hot_water_h=None):
    """An air-source heat pump's electric draw.

    Parameters
    ----------
    temperature_c : array broadcastable to (n_steps, n)
        Outdoor temperature [degrees C].
    hour : numpy.ndarray of shape (n_steps,)
        Local hour of day [h] (hot-water cycle).
    rated_kw : array of shape (n,)
        Maximum electric input [kW] (1-2.5 kW for a house).
    heat_loss_kw_per_k : array of shape (n,)
        The house's heat loss [kW thermal per K below ``balance_c``].
    rng : numpy.random.Generator
    step_hours : float
        Step length [h].
    balance_c : float, default :data:`HEAT_BALANCE_C`
    min_modulation : float, default 0.3
        Below this share of rated input the compressor cycles on and off [-].
    hot_water_h : array of shape (n,), optional
        Local hour a daily 1-hour hot-water cycle starts at rated input
        (default: drawn between 1 and 6 h).

    Returns
    -------
    numpy.ndarray of float32, shape (n_steps, n) [kW]

    Notes
    -----
    COP = 3.0 + 0.07 x T, clipped to 1.8..5 (about 2.5 at -7 C, 3.5 at 7 C).
    Defrost: between -7 and 5 C, one 5-10 min dip to 20 % every 60-90 min.
    """
    rated = np.asarray(rated_kw, dtype=np.float64)
    n = rated.shape[0]
    n_steps = hour.shape[0]
    temp = np.broadcast_to(np.asarray(temperature_c, dtype=np.float64), (n_steps, n))
    cop = np.clip(3.0 + 0.07 * temp, 1.8, 5.0)
    heat = np.asarray(heat_loss_kw_per_k)[None, :] * np.maximum(balance_c - temp, 0.0)
    demand = np.minimum(heat / cop, rated[None, :])
    # Part load below the minimum modulation: on at min_modulation for a duty share.
    low = demand < min_modulation * rated[None, :]
    duty = demand / (min_modulation * rated[None, :])
    cycle_steps = max(1, int(round(0.5 / step_hours)))  # about 30-min cycles
    phase = rng.random((n_steps // cycle_steps + 2, n))
    phase = np.repeat(phase, cycle_steps, axis=0)[:n_steps]
    cycling = np.where(phase < duty, min_modulation * rated[None, :], 0.0)
    kw = np.where(low, cycling, demand)
    # Defrost dips.
    frosty = (temp > -7.0) & (temp < 5.0)
    period = rng.uniform(60.0, 90.0, n) / 60.0 / step_hours
    t = np.arange(n_steps)[:, None]
    in_defrost = ((t + rng.integers(0, 100, n)[None, :]) % np.maximum(period, 2).astype(np.int64)
                  ) == 0
    defrost_share = min(1.0, (7.5 / 60) / step_hours)  # a 7.5-min defrost within the step
    kw = np.where(frosty & in_defrost, kw * (1 - 0.8 * defrost_share), kw)
    # Hot water: an hour a day at rated input.
    if hot_water_h is None:
        hot_water_h = rng.uniform(1.0, 6.0, n)
    dhw = window_mask(hour, np.zeros(n_steps, dtype=bool), start_h=hot_water_h, length_h=1.0)
    kw = np.where(dhw, rated[None, :], kw)
    noise = 1 + 0.03 * rng.standard_normal((n_steps, n))
    return np.maximum(kw * noise, 0).astype(np.float32)


def cycling_kw(n_steps, n, *, power_kw, duty, mean_on_min, step_hours, rng):
    """A thermostatic appliance (freezer, fridge, pump): on at ``power_kw`` a ``duty`` share.

    On and off periods are geometric in minutes (mean ``mean_on_min`` on, and
    the off period that gives ``duty``); each step gets its minutes on.

    Parameters
    ----------
    n_steps, n : int
    power_kw, duty, mean_on_min : array of shape (n,)
        Power while on [kW], share of time on [-], mean on-period [min].
    step_hours : float
        Step length [h].
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of float32, shape (n_steps, n)
        Mean power per step [kW].
    """
    duty = np.clip(np.asarray(duty, dtype=np.float64), 0.01, 0.99)
    on_min = np.maximum(np.asarray(mean_on_min, dtype=np.float64), 1.0)
    off_min = on_min * (1 - duty) / duty
    step_min = int(round(step_hours * 60))
    total_min = n_steps * step_min
    k = int(np.ceil(total_min / (on_min + off_min).min())) + 2  # cycles that cover the axis
    on_len = rng.geometric(1 / on_min[None, :], (k, n))
    off_len = rng.geometric(np.minimum(1.0, 1 / np.maximum(off_min, 1.0))[None, :], (k, n))
    first = rng.integers(0, np.maximum((on_min + off_min).astype(np.int64), 1), n)
    start = np.cumsum(on_len + off_len, axis=0) - (on_len + off_len) - first[None, :]
    minute_on = np.zeros((total_min + 1, n), dtype=np.int32)
    cols = np.broadcast_to(np.arange(n)[None, :], (k, n))
    a = np.clip(start, 0, total_min)
    b = np.clip(start + on_len, 0, total_min)
    np.add.at(minute_on, (a.ravel(), cols.ravel()), 1)
    np.add.at(minute_on, (b.ravel(), cols.ravel()), -1)
    on = np.cumsum(minute_on[:-1], axis=0) > 0
    share = on.reshape(n_steps, step_min, n).mean(axis=1)
    return (np.asarray(power_kw)[None, :] * share).astype(np.float32)


def pv_kw(capacity_kwp, *, lat_deg, day_of_year, solar_hour, day, rng, clear_share=0.35):
    """Rooftop PV output [kW] on a UK-like sky.

    Parameters
    ----------
    capacity_kwp : array of shape (n,)
        Rated peak power of the array [kWp].
    lat_deg : array of shape (n,)
        Latitude [degrees north].
    day_of_year, solar_hour : numpy.ndarray of shape (n_steps,)
        Day of the year and local solar time [h] of each step.
    day : numpy.ndarray of int, shape (n_steps,)
        Day index (clearness changes day to day).
    rng : numpy.random.Generator
    clear_share : float, default 0.35
        Share of clear days [-]; the others are partly (0.3-0.8) or fully
        (0.1-0.3) overcast.

    Returns
    -------
    numpy.ndarray of float32, shape (n_steps, n) [kW]
    """
    capacity = np.asarray(capacity_kwp, dtype=np.float64)
    n = capacity.shape[0]
    n_days = int(day.max()) + 1
    sin_el = solar_elevation_sin(np.asarray(lat_deg)[None, :], day_of_year[:, None],
                                 solar_hour[:, None])
    clear_sky = np.clip(sin_el, 0.0, None) ** 1.15  # air mass at low sun
    u = rng.random((n_days, 1))  # one sky for the neighbourhood ...
    daily = np.where(u < clear_share, rng.uniform(0.85, 1.0, (n_days, 1)),
                     np.where(u < 0.75, rng.uniform(0.3, 0.8, (n_days, 1)),
                              rng.uniform(0.1, 0.3, (n_days, 1))))
    daily = np.clip(daily * rng.uniform(0.9, 1.1, (n_days, n)), 0.05, 1.0)  # ... a little each
    passing = np.clip(1 + 0.25 * (1 - daily[day]) * rng.standard_normal((len(day), 1)), 0.1, 1.3)
    out = capacity[None, :] * PV_PERFORMANCE_RATIO * clear_sky * daily[day] * passing
    return np.minimum(out, capacity[None, :]).astype(np.float32)


def import_export_kw(consumption_kw, generation_kw):
    """What a meter's import and export registers see of a home's consumption and PV.

    Parameters
    ----------
    consumption_kw, generation_kw : array of shape (n_steps, n)
        Mean demand of the home and mean PV output per step [kW].

    Returns
    -------
    import_kw, export_kw : numpy.ndarray of shape (n_steps, n)
        ``max(consumption - generation, 0)`` and ``max(generation - consumption, 0)`` [kW].
    """
    net = np.asarray(consumption_kw) - np.asarray(generation_kw)
    return np.maximum(net, 0.0), np.maximum(-net, 0.0)
