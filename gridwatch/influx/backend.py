"""What GridWatch asks of an InfluxDB server, once per API generation.

:func:`connect` returns a :class:`V1Backend` (InfluxQL over ``/query``,
line protocol over ``/write``) or a :class:`V2Backend` (Flux through
``influxdb-client``). Both offer the same few operations; the reader, the
sink and ``ingest`` use only these.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from gridwatch.errors import InputError
from gridwatch.influx import query as q
from gridwatch.influx.client import V1Client, display_url
from gridwatch.influx.results import (
    Points,
    flux_points,
    flux_tag_frame,
    influxql_points,
    series_frame,
)


def connect(influx_config):
    """The backend for ``influx_config.api`` (``v1`` or ``v2``).

    Parameters
    ----------
    influx_config : gridwatch.config.InfluxConfig

    Returns
    -------
    V1Backend or V2Backend
    """
    if influx_config.api == "v2":
        return V2Backend(influx_config)
    return V1Backend(influx_config)


def _utc(ns: int) -> dt.datetime:
    return pd.Timestamp(ns, unit="ns", tz="UTC").to_pydatetime()


class V1Backend:
    """InfluxDB 1.x API (also served by 2.x and 3.x)."""

    def __init__(self, influx_config):
        self.config = influx_config
        self.client = V1Client(influx_config)
        self.where = f"database '{influx_config.database}' at {display_url(influx_config.url)}"

    def _names(self, statement: str, what: str, **kwargs) -> list[str]:
        results = self.client.query(statement, what=what, **kwargs)
        return [str(row[0]) for r in results for s in r.get("series") or ()
                for row in s.get("values") or ()]

    def check_database(self) -> None:
        """Raise :class:`InputError` when the database does not exist."""
        names = self._names("SHOW DATABASES", "listing databases", database=False)
        if self.config.database not in names:
            raise InputError(f"no database '{self.config.database}' at "
                             f"{display_url(self.config.url)}",
                             hint="check influxdb.database (gridwatch ingest creates it)")

    def ensure_database(self) -> None:
        """Create the database when it is missing (``CREATE DATABASE`` is idempotent)."""
        self.client.query(f"CREATE DATABASE {q.influxql_identifier(self.config.database)}",
                          what=f"creating database '{self.config.database}'", database=False)

    def check_measurement(self, spec, start_ns: int, end_ns: int) -> None:
        """Raise :class:`InputError` naming what is missing: measurement, id tag or field."""
        m = spec.measurement
        names = self._names("SHOW MEASUREMENTS", "listing measurements")
        if m not in names:
            raise InputError(f"no measurement '{m}' in {self.where}",
                             hint="check the measurement names in [influxdb.readings], "
                                  "[influxdb.upstream] and [influxdb.weather] (an empty name skips "
                                  "an optional table)")
        source = q.influxql_identifier(m)
        tags = self._names(f"SHOW TAG KEYS FROM {source}", f"listing the tags of '{m}'")
        if spec.id_tag not in tags:
            raise InputError(f"measurement '{m}' in {self.where} has no tag '{spec.id_tag}' "
                             f"(tags: {', '.join(tags) or 'none'})", hint="check id_tag")
        fields = self._names(f"SHOW FIELD KEYS FROM {source}", f"listing the fields of '{m}'")
        if spec.field not in fields:
            raise InputError(f"measurement '{m}' in {self.where} has no field '{spec.field}' "
                             f"(fields: {', '.join(fields) or 'none'})", hint="check field")

    def tag_values(self, spec, start_ns: int, end_ns: int) -> list[str]:
        """Every value of the id tag in the measurement."""
        results = self.client.query(q.show_tag_values(spec.measurement, spec.id_tag),
                                    what=f"listing the {spec.id_tag} values of '{spec.measurement}'")
        return [str(row[1]) for r in results for s in r.get("series") or ()
                for row in s.get("values") or ()]

    def series_tags(self, spec, start_ns: int, end_ns: int) -> pd.DataFrame:
        """Tags of every series of the measurement, one row per series."""
        results = self.client.query(f"SHOW SERIES FROM {q.influxql_identifier(spec.measurement)}",
                                    what=f"listing the series of '{spec.measurement}'")
        return series_frame(results)

    def read_points(self, spec, ids: list[str], start_ns: int, end_ns: int) -> Points:
        """The points of ``ids`` in ``[start, end)``."""
        what = f"reading '{spec.field}' of measurement '{spec.measurement}'"
        statement = q.select_values(measurement=spec.measurement, field=spec.field,
                                    id_tag=spec.id_tag, n_ids=len(ids), start_ns=start_ns,
                                    end_ns=end_ns)
        results = self.client.query(statement, what=what, params=q.id_params(ids), raw_values=True)
        return influxql_points(results, id_tag=spec.id_tag, ids=ids, what=f"{what} in {self.where}")

    def write(self, body: bytes, *, what: str) -> None:
        """Write a batch of line protocol."""
        self.client.write(body, what=what)

    def delete(self, measurement: str, start_ns: int, end_ns: int) -> None:
        """Delete a measurement's points in ``[start, end)``."""
        self.client.query(q.delete_range(measurement, start_ns, end_ns),
                          what=f"deleting earlier points of '{measurement}'")


class V2Backend:
    """InfluxDB 2.x / Cloud through ``influxdb-client`` and Flux."""

    def __init__(self, influx_config):
        from gridwatch.influx.client_v2 import V2Client

        self.config = influx_config
        self.client = V2Client(influx_config)
        self.where = f"bucket '{influx_config.database}' at {display_url(influx_config.url)}"

    def check_database(self) -> None:
        """Raise :class:`InputError` when the bucket does not exist."""
        if not self.client.bucket_exists():
            raise InputError(f"no bucket '{self.config.database}' at "
                             f"{display_url(self.config.url)}",
                             hint="check influxdb.database (the bucket) and influxdb.org")

    ensure_database = check_database

    def check_measurement(self, spec, start_ns: int, end_ns: int) -> None:
        """Nothing to check up front: an empty answer is reported by the reader."""

    def _params(self, spec, start_ns, end_ns, ids=()):
        return q.flux_params(bucket=self.config.database, measurement=spec.measurement,
                             field=spec.field, start=_utc(start_ns), stop=_utc(end_ns), ids=ids)

    def tag_values(self, spec, start_ns: int, end_ns: int) -> list[str]:
        """Values of the id tag among the series with points in ``[start, end)``."""
        frame = self.series_tags(spec, start_ns, end_ns)
        if spec.id_tag not in frame:
            return []
        return sorted(set(frame[spec.id_tag].dropna().astype(str)))

    def series_tags(self, spec, start_ns: int, end_ns: int) -> pd.DataFrame:
        """Tags of every series of the measurement's field with points in ``[start, end)``."""
        body = self.client.query_csv(q.flux_series_tags(), self._params(spec, start_ns, end_ns),
                                     what=f"listing the series of '{spec.measurement}'")
        return flux_tag_frame(body, what=f"listing the series of '{spec.measurement}'")

    def read_points(self, spec, ids: list[str], start_ns: int, end_ns: int) -> Points:
        """The points of ``ids`` in ``[start, end)``."""
        what = f"reading '{spec.field}' of measurement '{spec.measurement}'"
        body = self.client.query_csv(q.flux_select_values(id_tag=spec.id_tag, n_ids=len(ids)),
                                     self._params(spec, start_ns, end_ns, ids), what=what)
        return flux_points(body, id_tag=spec.id_tag, ids=ids, what=f"{what} in {self.where}")

    def write(self, body: bytes, *, what: str) -> None:
        """Write a batch of line protocol."""
        self.client.write(body, what=what)

    def delete(self, measurement: str, start_ns: int, end_ns: int) -> None:
        """Delete a measurement's points in ``[start, end)``."""
        self.client.delete(_utc(start_ns), _utc(end_ns), q.flux_delete_predicate(measurement),
                           what=f"deleting earlier points of '{measurement}'")
