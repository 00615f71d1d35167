"""Query text and parameters (InfluxQL and Flux), and parsing of Flux answers.

The Flux path (InfluxDB 2.x) cannot be served by the InfluxDB 1.6 of the
test machine: its query building and answer parsing are tested offline here,
and its requests against the real 1.x server (which answers 404) and a closed
port; the same end-to-end test as for 1.x runs against a 2.x server when
``GRIDWATCH_TEST_INFLUXDB2_*`` is set (``test_influx_cli.py``).
"""

import datetime as dt

import numpy as np
import pytest
from influxdb_client.client._base import _BaseQueryApi

from gridwatch.errors import ConfigError, InputError, SourceUnreachable
from gridwatch.influx import query as q
from gridwatch.influx.backend import connect
from gridwatch.influx.results import flux_points, flux_tag_frame, influxql_points, split_values
from tests.influxdb_server import free_port, influx_config

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


# --- the influxdb-client path against real endpoints that are not 2.x ---------------------------
@pytest.fixture()
def v2_token(monkeypatch):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_TOKEN", "tok-" + "x" * 20)
    return "tok-" + "x" * 20


def test_v2_against_a_1x_server_sends_flux_and_points_at_the_api_setting(influxdb_server,
                                                                         v2_token):
    config = influx_config(influxdb_server.url, "b", influxdb={"api": "v2", "org": "o"})
    backend = connect(config.influxdb)
    for call, what in [
        (lambda: backend.read_points(config.influxdb.readings, HOSTILE, 0, 10**18),
         "reading 'kwh' of measurement 'readings'"),
        (lambda: backend.write(b"m v=1 1", what="writing"), "writing"),
        (lambda: backend.delete("gridwatch_flags", 0, 10**18),
         "deleting earlier points of 'gridwatch_flags'"),
    ]:
        with pytest.raises(ConfigError, match=f"{what}: HTTP 404 .*influxdb.api") as info:
            call()
        assert v2_token not in str(info.value)


def test_v2_unreachable_is_source_unreachable_after_the_retries(v2_token):
    config = influx_config(f"http://127.0.0.1:{free_port()}", "b",
                           influxdb={"api": "v2", "org": "o", "retries": 2})
    with pytest.raises(SourceUnreachable, match="looking up bucket 'b' failed after 3 attempts: "
                                                "connection refused"):
        connect(config.influxdb).check_database()


def test_v2_needs_an_org_and_a_token(monkeypatch):
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs influxdb.org"):
        connect(influx_config("http://127.0.0.1:1", "b", influxdb={"api": "v2"}).influxdb)
    with pytest.raises(ConfigError, match="no InfluxDB token.*GRIDWATCH_INFLUXDB_TOKEN"):
        connect(influx_config("http://127.0.0.1:1", "b",
                              influxdb={"api": "v2", "org": "o"}).influxdb)


def test_influxql_values_are_cut_out_for_one_csv_parse_whatever_the_tags_hold():
    tricky = ['a\\"values\\":[[1,2]]', "b]],[[3", "c"]
    line = ('{"results":[{"statement_id":0,"series":['
            f'{{"name":"r","tags":{{"m":"{tricky[0]}"}},"columns":["time","kwh"],'
            '"values":[[1,0.1],[2,null]]},'
            f'{{"name":"r","tags":{{"m":"{tricky[1]}"}},"columns":["time","kwh"],'
            '"values":[[3,5e-324]]}],"partial":true}]}').encode()
    chunk = split_values(line)
    assert [s["values"] for s in chunk["results"][0]["series"]] == [b"1,0.1\n2,null", b"3,5e-324"]
    ids = ['a"values":[[1,2]]', "b]],[[3"]
    points = influxql_points(chunk["results"], id_tag="m", ids=ids, what="reading")
    assert points.index.tolist() == [0, 0, 1] and points.time_us.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(points.value, [0.1, np.nan, 5e-324])


def test_influxql_string_values_take_the_json_path_and_are_refused():
    line = b'{"results":[{"series":[{"tags":{"m":"a"},"values":[[1,"x]]"]]}]}]}'
    chunk = split_values(line)
    assert chunk["results"][0]["series"][0]["values"] == [[1, "x]]"]]
    with pytest.raises(InputError, match="reading: the field holds values that are not numbers"):
        influxql_points(chunk["results"], id_tag="m", ids=["a"], what="reading")
