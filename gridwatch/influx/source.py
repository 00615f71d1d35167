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

import functools
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from gridwatch import columns as col
from gridwatch.cleaning import clean_weather
from gridwatch.days import Window
from gridwatch.errors import ConfigError, InputError
from gridwatch.influx.backend import connect
from gridwatch.influx.results import Points
from gridwatch.issues import IssueLog
from gridwatch.sources import Dataset, clean_dataset, empty_readings
from gridwatch.sources.files import TIMESTAMP_DTYPE
from gridwatch.sources.files import read_table as read_file_table

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
    source = InfluxTables(config, start=start, end=end)
    readings, upstream, rows_in = source.read(set(source.meters[col.METER_ID]),
                                              source.named_assets())
    if readings is None:
        raise source.no_readings()
    if source.upstream_ids is not None:
        source.note_upstream(source.issues, found=upstream is not None)
    weather = source.read_weather()
    return clean_dataset(source.meters, readings, upstream, weather, data_config=config.data,
                         issues=IssueLog().extend(source.issues),
                         rows_in={**source.rows_in, **rows_in})


class InfluxTables:
    """An InfluxDB source opened for one analysis window.

    Connects, checks the database and the measurements, and reads what is
    small once: the meters table (a file, or the tags of the readings'
    series), the ids in the readings and upstream measurements, and the
    weather (raw: the caller cleans it). :meth:`read` then reads the
    interval data of some meters and assets, in chunks of
    ``ids_per_query`` ids and ``days_per_query`` days: all of them for an
    all-at-once run, one partition's for a partitioned one
    (:class:`InfluxPartitions`).

    Raises
    ------
    As :func:`read_influx_dataset`.
    """

    def __init__(self, config, *, start: pd.Timestamp, end: pd.Timestamp):
        influx = config.influxdb
        check_units(influx)
        self.config, self.start, self.end = config, start, end
        self.backend = backend = connect(influx)
        self.start_ns, self.end_ns = start_ns, end_ns = _ns(start), _ns(end)
        self.issues = IssueLog()
        self.rows_in = dict.fromkeys(col.TABLES, 0)
        backend.check_database()

        backend.check_measurement(influx.readings, start_ns, end_ns)
        if config.source.meters_file:
            self.meters, log, self.rows_in["meters"] = read_file_table(config.source.meters_file,
                                                                       "meters")
        else:
            self.meters, log, self.rows_in["meters"] = meters_from_tags(
                backend, influx.readings, start_ns, end_ns)
        self.issues.extend(log)
        self.reading_ids = sorted(backend.tag_values(influx.readings, start_ns, end_ns))

    @functools.cached_property
    def upstream_ids(self) -> list | None:
        """The ids in the upstream measurement (None when none is configured)."""
        spec = self.config.influxdb.upstream
        if not spec.measurement:
            return None
        self.backend.check_measurement(spec, self.start_ns, self.end_ns)
        return sorted(self.backend.tag_values(spec, self.start_ns, self.end_ns))

    def read_weather(self) -> pd.DataFrame | None:
        """The raw weather of the window (None without a weather measurement or points)."""
        influx = self.config.influxdb
        if not influx.weather.measurement:
            return None
        self.backend.check_measurement(influx.weather, self.start_ns, self.end_ns)
        weather = read_table(self.backend, influx.weather, start_ns=self.start_ns,
                             end_ns=self.end_ns, value_column=col.TEMPERATURE_C,
                             id_column=col.REGION, config=influx)
        _note_empty(self.issues, weather, "weather", influx.weather.measurement)
        if weather is not None:
            weather[col.REGION] = weather[col.REGION].astype("str")
            self.rows_in["weather"] = len(weather)
        return weather

    def named_assets(self) -> set:
        """The transformer, feeder and substation ids the meters table names."""
        return set(pd.concat([self.meters[c] for c in (col.TRANSFORMER_ID, col.FEEDER_ID,
                                                       col.SUBSTATION_ID)]).dropna())

    def upstream_asset_ids(self) -> list:
        """Assets named by the meters table that have upstream series (for the partition plan)."""
        if self.upstream_ids is None:
            return []
        named = self.named_assets()
        return sorted({i.strip() for i in self.upstream_ids if i.strip() in named})

    def read(self, meter_ids, asset_ids):
        """The raw readings and upstream frames of these meters and assets, and their row counts.

        Returns
        -------
        readings, upstream : pandas.DataFrame or None
            As the file readers give them; None when no point was found (or
            no upstream measurement is configured).
        rows_in : dict
            ``{"readings": n, "upstream": n}``.
        """
        influx = self.config.influxdb
        window = {"start_ns": self.start_ns, "end_ns": self.end_ns, "config": influx}
        meter_ids, asset_ids = set(meter_ids), set(asset_ids)
        readings = read_table(self.backend, influx.readings, value_column=col.KWH,
                              id_column=col.METER_ID, **window,
                              ids=[i for i in self.reading_ids if i.strip() in meter_ids])
        upstream = None
        if self.upstream_ids is not None:
            upstream = read_table(self.backend, influx.upstream, value_column=col.KWH,
                                  id_column=col.ASSET_ID, **window,
                                  ids=[i for i in self.upstream_ids if i.strip() in asset_ids])
        return readings, upstream, {"readings": 0 if readings is None else len(readings),
                                    "upstream": 0 if upstream is None else len(upstream)}

    def note_upstream(self, issues: IssueLog, *, found: bool) -> None:
        """Say so in ``issues`` when the upstream measurement has no point of a named asset."""
        if not found:
            _note_empty(issues, None, "upstream", self.config.influxdb.upstream.measurement)

    def no_readings(self) -> InputError:
        """The error of a window without a reading of a known meter."""
        influx = self.config.influxdb
        return InputError(
            f"no readings of meters in the meters table in measurement "
            f"'{influx.readings.measurement}' (field '{influx.readings.field}') of "
            f"{self.backend.where} between {self.start.isoformat()} and {self.end.isoformat()}",
            hint="check --as-of and analysis.history_days against the data, and "
                 "[influxdb.readings] id_tag against the meters' ids")


class InfluxPartitions:
    """Partitions of an InfluxDB source read one at a time, by their meters' and assets' ids.

    The loader of a partitioned run (:func:`gridwatch.runner.analyse`): each
    call reads one partition's series and cleans them with the rules of the
    full read. Picklable: a Dask worker connects on first use and keeps the
    connection, the meters table and the weather for the run's later tasks.

    Parameters
    ----------
    config : gridwatch.config.Config
    start, end : pandas.Timestamp
        The analysis window, tz-aware UTC; ``end`` exclusive.
    """

    _opened_here: dict = {}  # token -> (InfluxTables, cleaned weather), one run per process

    def __init__(self, config, *, start, end, tables: InfluxTables | None = None, weather=None):
        self.config, self.start, self.end = config, start, end
        self.token = uuid.uuid4().hex
        if tables is not None:  # the client's own connection and cleaned weather: not again
            InfluxPartitions._opened_here = {self.token: (tables, weather)}

    def _tables(self):
        opened = InfluxPartitions._opened_here.get(self.token)
        if opened is None:
            tables = InfluxTables(self.config, start=self.start, end=self.end)
            opened = (tables, _clean_weather(tables.read_weather()))
            InfluxPartitions._opened_here = {self.token: opened}
        return opened

    def __call__(self, part) -> Dataset:
        """Read and clean one partition's readings and upstream loads."""
        tables, weather = self._tables()
        meters = tables.meters[tables.meters[col.METER_ID].astype(str).isin(part.meter_ids)]
        readings, upstream, rows_in = tables.read(part.meter_ids, part.asset_ids)
        if readings is None:
            readings = empty_readings()
        sub = clean_dataset(meters.reset_index(drop=True), readings, upstream, None,
                            data_config=self.config.data, issues=IssueLog(), rows_in=rows_in)
        sub.weather = weather
        return sub

    def close(self) -> None:
        """Forget this run's connection in this process."""
        InfluxPartitions._opened_here.pop(self.token, None)

    def unplanned(self, meters: pd.DataFrame) -> Dataset:
        """Nothing: like the full read, only the meters table's meters are read."""
        return clean_dataset(meters.iloc[:0], empty_readings(), None, None,
                             data_config=self.config.data, issues=IssueLog(),
                             rows_in={"readings": 0, "upstream": 0})


class InfluxSource:
    """An InfluxDB source: meters and weather read once, each partition's series by its ids.

    The InfluxDB implementation of :class:`gridwatch.sources.Source`. A live
    source: its as-of day defaults to yesterday in the configured time zone
    (the caller passes it), and only the analysis window is read.

    Parameters
    ----------
    config : gridwatch.config.Config
    as_of : datetime.date
        The last day analysed.

    Raises
    ------
    As :func:`read_influx_dataset`.
    """

    def __init__(self, config, *, as_of):
        self.config, self.as_of = config, as_of
        self.start, self.end = Window.of(config).bounds(as_of)
        self.tables = tables = InfluxTables(config, start=self.start, end=self.end)
        self.name = f"measurement '{config.influxdb.readings.measurement}'"
        self.meters = tables.meters
        if tables.upstream_ids is not None:  # the notes in the order of the full read
            tables.note_upstream(tables.issues, found=bool(tables.upstream_asset_ids()))
        raw = tables.read_weather()
        self.issues = IssueLog().extend(tables.issues)
        self.counts = {"meters": {"in": tables.rows_in["meters"], "used": len(self.meters)},
                       "weather": {"in": tables.rows_in["weather"], "used": 0}}
        self.weather = None
        if raw is not None:
            self.weather, log_clean = clean_weather(raw)
            self.issues.extend(log_clean)
            self.counts["weather"]["used"] = len(self.weather)

    def upstream_asset_ids(self) -> list:
        """Assets named by the meters table that have upstream series (for the partition plan)."""
        return self.tables.upstream_asset_ids()

    def open(self, plan) -> InfluxPartitions:
        """The loader of ``plan``'s partitions (one query set per partition's ids)."""
        return InfluxPartitions(self.config, start=self.start, end=self.end, tables=self.tables,
                                weather=self.weather)

    def check(self, totals: dict) -> None:
        """Refused as the full read is: no reading of a known meter in the window."""
        if totals["readings"]["in"] == 0:
            raise self.no_readings()

    def no_readings(self, issues=None) -> InputError:
        """The error of a window without a reading of a known meter."""
        return self.tables.no_readings()


def _clean_weather(weather):
    """The weather cleaned once per process (its issues are the client's to report)."""
    if weather is None:
        return None
    cleaned, _ = clean_weather(weather)
    return cleaned


def read_table(backend, spec, *, start_ns: int, end_ns: int, value_column: str, id_column: str,
               config, keep_ids=None, ids=None) -> pd.DataFrame | None:
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
    ids : list of str, optional
        The measurement's ids to read, as stored (default: all its ids, by a
        tag-values query).

    Returns
    -------
    pandas.DataFrame or None
        ``id_column`` (Categorical, sorted string categories), ``timestamp``
        (``datetime64[us, UTC]``), ``value_column`` (float64, converted to kWh
        for energy and power units); None when no point was found.
    """
    if ids is None:
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
        return tuple(read_file_table(path, "meters"))


def check_units(influx) -> None:
    """Refuse a unit that does not fit its table (a temperature for energy, or the reverse)."""
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
