"""Line protocol built column-wise: escaping, float digits, unwritable ids, series keys."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from gridwatch.influx.lineprotocol import (
    build_lines,
    escape_key,
    escape_measurement,
    escape_string_field,
    format_floats,
    lines_to_bytes,
    series_heads,
    unescape_key,
    unwritable_tag_values,
    value_lines,
)
from gridwatch.influx.results import series_key_tags


@pytest.mark.parametrize(("raw", "escaped"), [
    ("plain", "plain"),
    ("c,d e=f", r"c\,d\ e\=f"),
    ('x" or 1=1', r'x"\ or\ 1\=1'),
    ("a' |> drop()", r"a'\ |>\ drop()"),
    (r"back\slash", r"back\slash"),
], ids=["plain", "comma-space-equals", "double-quote", "flux-injection", "backslash"])
def test_tag_values_escape_comma_equals_space_only(raw, escaped):
    assert escape_key(raw) == escaped
    assert unescape_key(escaped) == raw


def test_measurement_escapes_comma_and_space_but_not_equals():
    assert escape_measurement("my meas,ure=x") == r"my\ meas\,ure=x"


def test_string_fields_escape_quote_and_backslash():
    quoted = escape_string_field(pa.array(['say "hi"', "c:\\dir", None]))
    assert quoted.to_pylist() == ['"say \\"hi\\""', '"c:\\\\dir"', None]


def test_floats_are_written_in_shortest_round_trip_digits():
    rng = np.random.default_rng(5)
    values = rng.random(20_000) * np.exp(rng.normal(0, 12, 20_000))
    values[:4] = [0.1, 5e-324, 1.7976931348623157e308, 1 / 3]
    text = format_floats(values).to_pylist()
    assert text[:4] == [repr(v) for v in values[:4].tolist()]
    assert np.array_equal(np.array(text, dtype=np.float64), values)


def test_lines_leave_out_missing_tags_fields_and_rows_without_fields():
    lines = build_lines(
        "m",
        {"meter_id": pd.Categorical(["a b", "c", "d"]), "kind": np.array(["", None, "k"], object)},
        {"kwh": format_floats([1.5, np.nan, np.nan]),
         "note": escape_string_field(pa.array([None, None, 'q"']))},
        [1, 2, 3])
    assert lines_to_bytes(lines).decode() == (
        "m,meter_id=a\\ b kwh=1.5 1\n"
        'm,meter_id=d,kind=k note="q\\"" 3\n')


def test_value_lines_of_a_slice_give_just_that_slice():
    heads = series_heads("r", "meter_id", ["a", "b"], {"region": np.array(["n", None], object)})
    lines = value_lines(heads.take(pa.array([0, 1, 1])), "kwh", [0.5, np.nan, 2.0], [10, 20, 30])
    assert lines_to_bytes(lines.slice(1)).decode() == "r,meter_id=b kwh=2 30\n"
    assert lines_to_bytes(lines).decode() == "r,meter_id=a,region=n kwh=0.5 10\nr,meter_id=b kwh=2 30\n"


def test_ids_line_protocol_cannot_carry_are_found():
    ids = ["ok", r"in\side", "trailing\\", "before\\ space", "before\\,comma", "", "new\nline"]
    assert unwritable_tag_values(ids) == ["trailing\\", "before\\ space", "before\\,comma", "",
                                          "new\nline"]


def test_series_keys_decode_server_escaping():
    key = r"readings,customer_class=residential,meter_id=x\ or\ 1\=1,region=c\,d,t=bs\\\ sp"
    assert series_key_tags(key) == {"customer_class": "residential", "meter_id": "x or 1=1",
                                    "region": "c,d", "t": "bs\\\\ sp"}
