"""Query text and parameters (InfluxQL and Flux), and parsing of Flux answers, offline.

The Flux path (InfluxDB 2.x) cannot be served by the InfluxDB 1.6 of the
test machine: its query building and answer parsing are tested here; the
same end-to-end test as for 1.x runs against a 2.x server when
``GRIDWATCH_TEST_INFLUXDB2_*`` is set (``test_influx_cli.py``).
"""

import datetime as dt

import numpy as np
import pytest
from influxdb_client.client._base import _BaseQueryApi

from gridwatch.errors import InputError
from gridwatch.influx import query as q
from gridwatch.influx.results import flux_points, flux_tag_frame

HOSTILE = ['x" or 1=1', "a' |> drop()", "back\\slash", "${env}", 'q"uo\'te', "c,d e=f"]


def test_influxql_identifiers_and_strings_escape_their_quotes_and_backslashes():
    assert q.influxql_identifier('we"ird\\name') == '"we\\"ird\\\\name"'
    assert q.influxql_string("it's \\ here") == "'it\\'s \\\\ here'"


def test_influxql_select_names_ids_only_as_bound_parameters():
    statement = q.select_values(measurement='read"ings', field="kwh", id_tag="meter_id",
                                n_ids=len(HOSTILE), start_ns=10, end_ns=20)
    params = q.id_params(HOSTILE)
    for value in HOSTILE:
        assert value not in statement
    assert params == {f"id{i}": v for i, v in enumerate(HOSTILE)}
    assert statement == (
        'SELECT "kwh"::field FROM "read\\"ings" WHERE ("meter_id"::tag = $id0 OR '
        '"meter_id"::tag = $id1 OR "meter_id"::tag = $id2 OR "meter_id"::tag = $id3 OR '
        '"meter_id"::tag = $id4 OR "meter_id"::tag = $id5) AND time >= 10 AND time < 20 '
        'GROUP BY "meter_id"')


def test_flux_strings_escape_backslash_quote_and_interpolation():
    assert q.flux_string('a" |> drop() //') == '"a\\" |> drop() //"'
    assert q.flux_string("${x} \\") == '"\\${x} \\\\"'


def test_flux_query_takes_ids_names_and_times_as_parameters():
    flux = q.flux_select_values(id_tag='meter"id', n_ids=len(HOSTILE))
    params = q.flux_params(bucket="b", measurement="readings", field="kwh",
                           start=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
                           stop=dt.datetime(2026, 3, 8, tzinfo=dt.UTC), ids=HOSTILE)
    for value in HOSTILE:
        assert value not in flux
    assert 'r["meter\\"id"] == gw_id0 or' in flux and "gw_id5)" in flux
    # influxdb-client sends them as `option gw_id0 = "..."` statements of the extern AST:
    # string literals built by the client, never spliced into the query text.
    ast = _BaseQueryApi._build_flux_ast(params).to_dict()
    literals = {s["assignment"]["id"]["name"]: s["assignment"]["init"] for s in ast["body"]}
    for i, value in enumerate(HOSTILE):
        assert literals[f"gw_id{i}"] == {"type": "StringLiteral", "value": value}
    assert literals["gw_start"]["type"] == "DateTimeLiteral"


def _annotated_csv(*blocks):
    return "\r\n\r\n".join("\r\n".join(lines) for lines in blocks).encode() + b"\r\n\r\n"


def test_flux_answers_become_points_of_the_ids_asked_for():
    body = _annotated_csv([
        "#datatype,string,long,dateTime:RFC3339,double,string",
        ",result,table,_time,_value,meter_id",
        ',_result,0,2026-03-01T00:00:00Z,1.25,"x"" or 1=1"',
        ',_result,0,2026-03-01T00:30:00Z,0.1,"c,d e=f"',
        ",_result,0,2026-03-01T01:00:00.5Z,3,a' |> drop()",
        ",_result,0,2026-03-01T01:30:00Z,9,not-asked",
    ])
    points = flux_points(body, id_tag="meter_id", ids=HOSTILE, what="reading")
    assert points.index.tolist() == [0, 5, 1]
    assert points.value.tolist() == [1.25, 0.1, 3.0]
    start_us = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()) * 10**6
    assert np.array_equal(points.time_us - start_us, [0, 1_800_000_000, 3_600_500_000])


def test_flux_error_tables_raise_with_the_servers_message():
    body = _annotated_csv([
        "#datatype,string,string",
        ",error,reference",
        ',"failed to initialize execute state: bucket not found",897',
    ])
    with pytest.raises(InputError, match="reading failed on the server: failed to initialize.*"
                                         "bucket not found"):
        flux_points(body, id_tag="meter_id", ids=["a"], what="reading")


def test_flux_series_tags_become_a_frame_of_strings():
    body = _annotated_csv([
        "#datatype,string,long,string,string,string",
        ",result,table,meter_id,region,transformer_id",
        ",_result,0,M1,north,T1",
        ",_result,0,M2,south,",
    ])
    frame = flux_tag_frame(body, what="listing")
    assert list(frame.columns) == ["meter_id", "region", "transformer_id"]
    assert frame["meter_id"].tolist() == ["M1", "M2"]
