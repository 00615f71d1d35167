"""Read the contract tables of an analysis window from InfluxDB.

The utility's schema is mapped by ``[influxdb.readings]``,
``[influxdb.upstream]`` and ``[influxdb.weather]`` (measurement, id tag,
field, unit). Reads are chunked: ``ids_per_query`` ids and
``days_per_query`` days per query, so that each answer stays small however
many meters there are. Each chunk becomes three arrays (id code, time, value)
at once; the frames are the ones the file readers give
(:mod:`gridwatch.sources.files`) and are cleaned by the same
:func:`gridwatch.sources.clean_dataset`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from gridwatch import columns as col
from gridwatch.errors import ConfigError, InputError
from gridwatch.influx.backend import connect
from gridwatch.influx.results import Points
from gridwatch.issues import IssueLog
from gridwatch.sources import Dataset, clean_dataset
from gridwatch.sources.files import TIMESTAMP_DTYPE, _read_meters

_NS_PER_US = 1000
_US_PER_H = 3_600_000_000
ENERGY_UNITS = {"kwh": 1.0, "wh": 1e-3}
"""Energy units and their factor to kWh."""
POWER_UNITS = {"kw": 1.0, "w": 1e-3}
"""Power units and their factor to kW (times the interval [h] gives kWh)."""


def read_influx_dataset(config, *, start: pd.Timestamp, end: pd.Timestamp) -> Dataset:
    """Read, check and clean the inputs of one analysis window from InfluxDB.

    Parameters
    ----------
    config : gridwatch.config.Config
        ``[influxdb]`` (server, schema, chunking, retries), ``[source]``
        (``meters_file``) and ``[data]`` (cleaning thresholds).
    start, end : pandas.Timestamp
        The window, tz-aware UTC; ``end`` exclusive.

    Returns
    -------
    gridwatch.sources.Dataset

    Raises
    ------
    ConfigError
        A unit that does not fit its table, or bad credentials.
    InputError
        No such database, measurement, tag or field; no readings in the
        window; a meters file that cannot be used.
    SourceUnreachable
        When the server cannot be reached or keeps failing (after the
        configured retries).
    """
    influx = config.influxdb
    _check_units(influx)
    backend = connect(influx)
    start_ns, end_ns = _ns(start), _ns(end)
    issues = IssueLog()
    rows_in = dict.fromkeys(col.TABLES, 0)
    backend.check_database()

    backend.check_measurement(influx.readings, start_ns, end_ns)
    if config.source.meters_file:
        meters, log, rows_in["meters"] = _read_meters(config.source.meters_file)
    else:
        meters, log, rows_in["meters"] = meters_from_tags(backend, influx.readings, start_ns, end_ns)
    issues.extend(log)

    known_meters = set(meters[col.METER_ID])
    readings = read_table(backend, influx.readings, start_ns=start_ns, end_ns=end_ns,
                          value_column=col.KWH, id_column=col.METER_ID, config=influx,
                          keep_ids=known_meters)
    if readings is None:
        raise InputError(
            f"no readings of meters in the meters table in measurement "
            f"'{influx.readings.measurement}' (field '{influx.readings.field}') of "
            f"{backend.where} between {start.isoformat()} and {end.isoformat()}",
            hint="check --as-of and analysis.history_days against the data, and "
                 "[influxdb.readings] id_tag against the meters' ids")
    rows_in["readings"] = len(readings)

    upstream = weather = None
    if influx.upstream.measurement:
        backend.check_measurement(influx.upstream, start_ns, end_ns)
        assets = set(pd.concat([meters[c] for c in (col.TRANSFORMER_ID, col.FEEDER_ID,
                                                     col.SUBSTATION_ID)]).dropna())
        upstream = read_table(backend, influx.upstream, start_ns=start_ns, end_ns=end_ns,
                              value_column=col.KWH, id_column=col.ASSET_ID, config=influx,
                              keep_ids=assets)
        _note_empty(issues, upstream, "upstream", influx.upstream.measurement)
        rows_in["upstream"] = 0 if upstream is None else len(upstream)
    if influx.weather.measurement:
        backend.check_measurement(influx.weather, start_ns, end_ns)
        weather = read_table(backend, influx.weather, start_ns=start_ns, end_ns=end_ns,
                             value_column=col.TEMPERATURE_C, id_column=col.REGION, config=influx)
        _note_empty(issues, weather, "weather", influx.weather.measurement)
        if weather is not None:
            weather[col.REGION] = weather[col.REGION].astype("str")
            rows_in["weather"] = len(weather)
    return clean_dataset(meters, readings, upstream, weather, data_config=config.data,
                         issues=issues, rows_in=rows_in)


def read_table(backend, spec, *, start_ns: int, end_ns: int, value_column: str, id_column: str,
               config, keep_ids=None) -> pd.DataFrame | None:
    """Read one interval table in chunks of ids and days.

    Parameters
    ----------
    backend : V1Backend or V2Backend
        :func:`gridwatch.influx.backend.connect`.
    spec : gridwatch.config.MeasurementConfig
        Measurement, id tag, field and unit.
    start_ns, end_ns : int
        The window [ns since the epoch, UTC], end exclusive.
    value_column, id_column : str
        Names of the value and id columns of the frame.
    config : gridwatch.config.InfluxConfig
        ``ids_per_query`` and ``days_per_query``.
    keep_ids : set of str, optional
        Read only these ids (the meters table's meters, the assets it names).

    Returns
    -------
    pandas.DataFrame or None
        ``id_column`` (Categorical, sorted string categories), ``timestamp``
        (``datetime64[us, UTC]``), ``value_column`` (float64, converted to kWh
        for energy and power units); None when no point was found.
    """
    ids = sorted(backend.tag_values(spec, start_ns, end_ns))
    if keep_ids is not None:
        ids = [i for i in ids if i.strip() in keep_ids]
    if not ids:
        return None
    parts = []
    for first in range(0, len(ids), config.ids_per_query):
        batch = ids[first:first + config.ids_per_query]
        for t0, t1 in time_windows(start_ns, end_ns, config.days_per_query):
            points = backend.read_points(spec, batch, t0, t1)
            points.index += first
            parts.append(points)
    points = Points.concat(parts)
    del parts
    if len(points) == 0:
        return None
    return _frame(points, ids, spec.unit, id_column=id_column, value_column=value_column)


def time_windows(start_ns: int, end_ns: int, days: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into windows of ``days`` days (the last one shorter).

    Examples
    --------
    >>> time_windows(0, 10 * 86_400 * 10**9, 7)
    [(0, 604800000000000), (604800000000000, 864000000000000)]
    """
    step = int(days) * 86_400 * 10**9
    edges = list(range(int(start_ns), int(end_ns), step)) + [int(end_ns)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _frame(points: Points, ids: list[str], unit: str, *, id_column: str,
           value_column: str) -> pd.DataFrame:
    names = pd.Index(ids).str.strip()
    categories = pd.Index(names.unique()).sort_values()
    used = np.bincount(categories.get_indexer(names)[points.index], minlength=len(categories)) > 0
    categories = categories[used]
    codes = categories.get_indexer(names)[points.index].astype(np.int32)
    value = to_kwh(points.value, codes, points.time_us, unit)
    return pd.DataFrame({
        id_column: pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype="str")),
        col.TIMESTAMP: pd.DatetimeIndex(points.time_us.view("M8[us]"), dtype=TIMESTAMP_DTYPE),
        value_column: value,
    }, copy=False)


def to_kwh(values, codes, time_us, unit: str) -> np.ndarray:
    """Convert values of one unit to kWh per interval (degrees C pass through).

    Parameters
    ----------
    values : numpy.ndarray of float64
        The field's values.
    codes : numpy.ndarray of int
        Id of each value (any integer code).
    time_us : numpy.ndarray of int64
        Start of each interval [us since the epoch].
    unit : {"kwh", "wh", "kw", "w", "c"}
        ``kw`` and ``w`` are mean power over the interval: times the id's
        interval, the median spacing of its distinct timestamps [h]. An id
        with a single timestamp has no interval: its values become NaN
        (cleaning drops it as an unsupported interval).

    Returns
    -------
    numpy.ndarray of float64
        [kWh] (or [degrees C] for ``c``).
    """
    values = np.asarray(values, dtype=np.float64)
    if unit in ENERGY_UNITS:
        return values * ENERGY_UNITS[unit] if unit != "kwh" else values
    if unit not in POWER_UNITS:
        return values
    hours = interval_hours(codes, time_us)
    return values * POWER_UNITS[unit] * hours.reindex(codes).to_numpy()


def interval_hours(codes, time_us) -> pd.Series:
    """Median spacing of each id's distinct timestamps [h], indexed by code (NaN with one)."""
    frame = pd.DataFrame({"code": np.asarray(codes), "t": np.asarray(time_us)}).drop_duplicates()
    frame = frame.sort_values(["code", "t"], kind="stable")
    step = frame["t"].diff().where(frame["code"].eq(frame["code"].shift()))
    return (step / _US_PER_H).groupby(frame["code"]).median()


def meters_from_tags(backend, spec, start_ns: int, end_ns: int):
    """The meters table from the tags of the readings measurement's series.

    One row per series: the id tag becomes ``meter_id``, the other tags the
    meters columns of the same names (``transformer_id``, ``region``,
    ``tariff_per_kwh``...). The rows go through
    :func:`gridwatch.sources.files.read_meters`, so columns, dtypes and
    repairs (duplicate meters, unknown classes, invalid numbers) are the
    file reader's.

    Returns
    -------
    meters : pandas.DataFrame
    issues : IssueLog
    rows_in : int
        Series found.
    """
    tags = backend.series_tags(spec, start_ns, end_ns)
    if tags.empty or spec.id_tag not in tags:
        raise InputError(f"no series with tag '{spec.id_tag}' in measurement '{spec.measurement}' "
                         f"of {backend.where}",
                         hint="check [influxdb.readings], or name a meters table in "
                              "source.meters_file")
    tags = tags.drop(columns=[col.METER_ID], errors="ignore") if spec.id_tag != col.METER_ID \
        else tags
    tags = tags.rename(columns={spec.id_tag: col.METER_ID})
    table = pa.Table.from_pandas(tags.astype(object).where(tags.notna(), None), preserve_index=False)
    table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
    with tempfile.TemporaryDirectory(prefix="gridwatch-meters-") as tmp:
        path = Path(tmp) / "meters.csv"
        pcsv.write_csv(table, path)
        return _read_meters(path)


def _check_units(influx) -> None:
    for name in ("readings", "upstream"):
        if getattr(influx, name).unit == "c":
            raise ConfigError(f"influxdb.{name}.unit = 'c' is a temperature",
                              hint="use kwh, wh (energy per interval), kw or w (mean power)")
    if influx.weather.unit != "c":
        raise ConfigError(f"influxdb.weather.unit = {influx.weather.unit!r}: weather is a "
                          "temperature", hint="use unit = \"c\" (degrees Celsius)")


def _note_empty(issues: IssueLog, frame, table: str, measurement: str) -> None:
    if frame is None:
        issues.add(f"{table}.empty", table, 1, "kept", severity="info",
                   detail=f"no points in measurement '{measurement}' in the window; "
                          "treated as absent")


def _ns(timestamp: pd.Timestamp) -> int:
    return int(pd.Timestamp(timestamp).tz_convert("UTC").as_unit("ns").value)
