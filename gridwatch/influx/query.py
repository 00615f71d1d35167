"""InfluxQL and Flux text: quoting, escaping, and the statements GridWatch sends.

Values that come from data (meter, asset and region ids, measurement and
field names from the config) never reach a query unescaped:

* InfluxQL (InfluxDB 1.x ``/query``): ids and names compared in ``WHERE``
  are bound parameters (``$id0`` with ``params={"id0": ...}``), which the
  server parses as data; identifiers are double-quoted with ``\\`` and ``"``
  escaped (:func:`influxql_identifier`).
* Flux (InfluxDB 2.x): ids and names are passed as query parameters
  (``influxdb-client``'s ``params``, sent as ``extern`` option statements);
  the one name Flux cannot take from a parameter, the tag key in
  ``r["tag"]``, is a string literal with ``\\``, ``"`` and ``${`` escaped
  (:func:`flux_string`).
"""

from __future__ import annotations

import datetime as dt

FLUX_PARAM_PREFIX = "gw_"
"""Prefix of the Flux option names GridWatch defines (no clash with Flux's own)."""


# --- InfluxQL ---------------------------------------------------------------------------------
def influxql_identifier(name: str) -> str:
    """A double-quoted InfluxQL identifier (``\\`` and ``"`` escaped).

    Examples
    --------
    >>> influxql_identifier('my "db"')
    '"my \\\\"db\\\\""'
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_string(value: str) -> str:
    """A single-quoted InfluxQL string literal (``\\`` and ``'`` escaped).

    Used only where InfluxQL takes no bound parameter; ids go in parameters.

    Examples
    --------
    >>> influxql_string("it's")
    "'it\\\\'s'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_source(measurement: str, database: str = "", retention_policy: str = "") -> str:
    """``"db"."rp"."measurement"`` (or just the measurement when no database is given)."""
    if not database:
        return influxql_identifier(measurement)
    return (influxql_identifier(database) + "." +
            (influxql_identifier(retention_policy) if retention_policy else "") + "." +
            influxql_identifier(measurement))


def select_values(*, measurement: str, field: str, id_tag: str, n_ids: int, start_ns: int,
                  end_ns: int, database: str = "", retention_policy: str = "") -> str:
    """The InfluxQL statement reading one field of ``n_ids`` ids over ``[start, end)``.

    Parameters
    ----------
    measurement, field, id_tag : str
        Names of the measurement, the value field and the id tag.
    n_ids : int
        Number of ids; bind them as parameters ``id0`` ... ``id{n_ids-1}``
        (:func:`id_params`).
    start_ns, end_ns : int
        Time range [ns since the epoch, UTC], end exclusive.
    database, retention_policy : str, optional
        Fully qualify the measurement.

    Returns
    -------
    str
        ``SELECT "field"::field FROM ... WHERE (ids) AND time >= ... AND
        time < ... GROUP BY "id_tag"``: one series per id.
    """
    tag = influxql_identifier(id_tag)
    ids = " OR ".join(f"{tag}::tag = $id{i}" for i in range(n_ids))
    return (f"SELECT {influxql_identifier(field)}::field "
            f"FROM {influxql_source(measurement, database, retention_policy)} "
            f"WHERE ({ids}) AND time >= {int(start_ns)} AND time < {int(end_ns)} "
            f"GROUP BY {tag}")


def id_params(ids) -> dict:
    """Bound parameters ``{"id0": ids[0], ...}`` for :func:`select_values`."""
    return {f"id{i}": str(value) for i, value in enumerate(ids)}


def show_tag_values(measurement: str, tag: str) -> str:
    """InfluxQL listing the values of one tag of a measurement."""
    return f"SHOW TAG VALUES FROM {influxql_identifier(measurement)} WITH KEY = {influxql_identifier(tag)}"


def delete_range(measurement: str, start_ns: int, end_ns: int) -> str:
    """InfluxQL deleting a measurement's points in ``[start, end)``."""
    return (f"DELETE FROM {influxql_identifier(measurement)} "
            f"WHERE time >= {int(start_ns)} AND time < {int(end_ns)}")


# --- Flux -------------------------------------------------------------------------------------
def flux_string(value: str) -> str:
    """A double-quoted Flux string literal (``\\``, ``"`` and ``${`` escaped).

    Examples
    --------
    >>> flux_string('a" |> drop()')
    '"a\\\\" |> drop()"'
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"' + escaped + '"'


def flux_select_values(*, id_tag: str, n_ids: int) -> str:
    """The Flux query reading one field of ``n_ids`` ids; bind with :func:`flux_params`.

    Returns
    -------
    str
        One table (``_time``, ``_value`` and the id tag) of the points of
        the ids ``gw_id0`` ... in ``[gw_start, gw_stop)``.
    """
    p = FLUX_PARAM_PREFIX
    tag = f"r[{flux_string(id_tag)}]"
    ids = " or ".join(f"{tag} == {p}id{i}" for i in range(n_ids))
    return (f"from(bucket: {p}bucket)\n"
            f"  |> range(start: {p}start, stop: {p}stop)\n"
            f"  |> filter(fn: (r) => r._measurement == {p}measurement and r._field == {p}field)\n"
            f"  |> filter(fn: (r) => {ids})\n"
            f"  |> keep(columns: [\"_time\", \"_value\", {flux_string(id_tag)}])\n"
            f"  |> group()\n")


def flux_series_tags() -> str:
    """The Flux query listing the tags of every series of a measurement's field in a range."""
    p = FLUX_PARAM_PREFIX
    return (f"from(bucket: {p}bucket)\n"
            f"  |> range(start: {p}start, stop: {p}stop)\n"
            f"  |> filter(fn: (r) => r._measurement == {p}measurement and r._field == {p}field)\n"
            f"  |> last()\n"
            f"  |> drop(columns: [\"_time\", \"_value\", \"_start\", \"_stop\", \"_field\", "
            f"\"_measurement\"])\n"
            f"  |> group()\n")


def flux_params(*, bucket: str, measurement: str, field: str, start: dt.datetime,
                stop: dt.datetime, ids=()) -> dict:
    """Parameters of :func:`flux_select_values` / :func:`flux_series_tags` (prefixed names)."""
    p = FLUX_PARAM_PREFIX
    params = {f"{p}bucket": bucket, f"{p}measurement": measurement, f"{p}field": field,
              f"{p}start": start, f"{p}stop": stop}
    params.update({f"{p}id{i}": str(value) for i, value in enumerate(ids)})
    return params


def flux_delete_predicate(measurement: str) -> str:
    """Predicate of the v2 delete API selecting one measurement."""
    return "_measurement=" + '"' + measurement.replace("\\", "\\\\").replace('"', '\\"') + '"'
