"""Write a run's results to InfluxDB: per-meter scores and flags, per-asset balance.

Every point of a run has the same time: the start of the as-of day in the
configured time zone. Rerunning the same as-of day first deletes that day's
points of both measurements, then writes: ``kind`` and ``transformer_id``
are tags, so a rerun whose kind changed would otherwise leave a second
point beside the first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from gridwatch import columns as col
from gridwatch.influx.backend import connect
from gridwatch.influx.lineprotocol import (
    build_lines,
    escape_string_field,
    format_booleans,
    format_floats,
    format_integers,
    lines_to_bytes,
)

BATCH_POINTS = 10_000
"""Points per write request."""

FLAG_FLOAT_FIELDS = (col.SCORE, col.EXCESS_KW, col.EXCESS_KWH, col.EST_LOSS)
BALANCE_FLOAT_FIELDS = (col.UNEXPLAINED_KW, col.COVERAGE, "loss_kw", "mean_delivered_kw",
                        "mean_metered_kw")


def write_results(result, config) -> dict:
    """Write a run's flags and asset balance to the ``[influxdb]`` server.

    Parameters
    ----------
    result : gridwatch.pipeline.RunResult
        ``flags`` (the ``flags.csv`` rows), ``balance`` (or None) and ``as_of``.
    config : gridwatch.config.Config
        ``[influxdb]`` (server, retries), ``[sink]`` (measurement names) and
        ``data.timezone`` (the as-of day's start is the points' time).

    Returns
    -------
    dict
        Points written: ``{"flags": n, "balance": n}``.

    Raises
    ------
    SourceUnreachable
        When the server cannot be reached or keeps failing.

    Notes
    -----
    ``gridwatch_flags``: tags ``meter_id``, ``transformer_id`` and ``kind``
    (left out when empty); fields ``score``, ``flagged`` (boolean), ``rank``
    (integer), ``excess_kw`` [kW], ``excess_kwh`` [kWh], ``est_loss``
    [currency] (left out when unknown), ``onset`` and ``reasons`` (strings).
    ``gridwatch_balance``: tags ``asset_id`` and ``level``; fields
    ``flagged``, ``unexplained_kw``, ``loss_kw``, ``mean_delivered_kw``,
    ``mean_metered_kw`` [kW], ``coverage`` [-], ``n_meters``, ``onset`` and
    ``suspects``.
    """
    sink = config.sink
    backend = connect(config.influxdb)
    start_ns, end_ns = day_bounds_ns(result.as_of, config.data.timezone)
    for measurement in (sink.flags_measurement, sink.balance_measurement):
        backend.delete(measurement, start_ns, end_ns)
    counts = {"flags": 0, "balance": 0}
    flags = flag_lines(result.flags, sink.flags_measurement, start_ns)
    counts["flags"] = _write(backend, flags, f"writing '{sink.flags_measurement}'")
    if result.balance is not None and len(result.balance.table):
        balance = balance_lines(result.balance.table, sink.balance_measurement, start_ns)
        counts["balance"] = _write(backend, balance, f"writing '{sink.balance_measurement}'")
    return counts


def day_bounds_ns(day, timezone: str) -> tuple[int, int]:
    """Start and end of a local day [ns since the epoch, UTC].

    Examples
    --------
    >>> day_bounds_ns("2026-03-29", "Europe/London")[1] - day_bounds_ns("2026-03-29", "Europe/London")[0]
    82800000000000
    """
    first = pd.Timestamp(str(day)).tz_localize(timezone, nonexistent="shift_forward", ambiguous=False)
    last = (pd.Timestamp(str(day)) + pd.Timedelta(days=1)).tz_localize(
        timezone, nonexistent="shift_forward", ambiguous=False)
    return int(first.as_unit("ns").value), int(last.as_unit("ns").value)


def flag_lines(flags: pd.DataFrame, measurement: str, time_ns: int) -> pa.Array:
    """Line protocol of the ``flags.csv`` rows, all at ``time_ns``."""
    fields = {name: format_floats(pd.to_numeric(flags[name], errors="coerce"))
              for name in FLAG_FLOAT_FIELDS}
    fields[col.FLAGGED] = format_booleans(flags[col.FLAGGED].astype(str).eq("true"))
    fields[col.RANK] = format_integers(flags[col.RANK])
    fields[col.ONSET] = _strings(flags[col.ONSET])
    fields[col.REASONS] = _strings(flags[col.REASONS])
    tags = {name: flags[name].astype(object).where(flags[name].notna(), None).to_numpy()
            for name in (col.METER_ID, col.TRANSFORMER_ID, col.KIND)}
    return build_lines(measurement, tags, fields, np.full(len(flags), time_ns, dtype=np.int64))


def balance_lines(table: pd.DataFrame, measurement: str, time_ns: int) -> pa.Array:
    """Line protocol of the energy balance's asset table, all at ``time_ns``."""
    fields = {name: format_floats(pd.to_numeric(table[name], errors="coerce"))
              for name in BALANCE_FLOAT_FIELDS if name in table}
    fields[col.FLAGGED] = format_booleans(table[col.FLAGGED].astype(bool))
    if "n_meters" in table:
        fields["n_meters"] = format_integers(pd.to_numeric(table["n_meters"]).fillna(0))
    for name in (col.ONSET, col.SUSPECTS):
        if name in table:
            fields[name] = _strings(table[name])
    tags = {name: table[name].astype(object).where(table[name].notna(), None).to_numpy()
            for name in (col.ASSET_ID, "level") if name in table}
    return build_lines(measurement, tags, fields, np.full(len(table), time_ns, dtype=np.int64))


def _strings(values: pd.Series) -> pa.Array:
    """Non-empty strings as quoted fields; empty or missing: null (the field is left out)."""
    text = values.astype("string").fillna("")
    text = text.mask(text == "")
    return escape_string_field(pa.array(text.to_numpy(dtype=object, na_value=None),
                                        type=pa.string()))


def _write(backend, lines: pa.Array, what: str) -> int:
    for first in range(0, len(lines), BATCH_POINTS):
        backend.write(lines_to_bytes(lines.slice(first, BATCH_POINTS)), what=what)
    return len(lines)
