"""Turn InfluxDB answers into arrays, without a Python loop per point.

* InfluxQL (v1) chunked JSON: one series per id (``GROUP BY`` the id tag),
  its ``values`` a list of ``[time_us, value]``; all pieces are converted
  by one ``numpy.array`` call.
* Flux (v2) annotated CSV: each table block (``#datatype`` row, header,
  rows) is read by Arrow's CSV reader; an ``error`` table raises.
* ``SHOW SERIES`` keys (``measurement,tag=value,...`` with line-protocol
  escaping) become a frame of tags, one row per series.
"""

from __future__ import annotations

import csv
import io
import json
import re
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from gridwatch.errors import InputError


class Points:
    """Points of several ids: ``index`` into the ids asked for, ``time_us``, ``value``."""

    __slots__ = ("index", "time_us", "value")

    def __init__(self, index, time_us, value):
        self.index = np.asarray(index, dtype=np.int32)
        self.time_us = np.asarray(time_us, dtype=np.int64)
        self.value = np.asarray(value, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def empty(cls) -> Points:
        """No points."""
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def concat(cls, parts) -> Points:
        """All points of ``parts`` (a list of :class:`Points`), in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.index for p in parts]),
                   np.concatenate([p.time_us for p in parts]),
                   np.concatenate([p.value for p in parts]))


def influxql_points(results: list[dict], *, id_tag: str, ids: list[str], what: str) -> Points:
    """Points of an InfluxQL ``SELECT field ... GROUP BY id_tag`` answer.

    Parameters
    ----------
    results : list of dict
        The statement's result pieces (:meth:`gridwatch.influx.client.V1Client.query`);
        each series' ``values`` is a list of ``[time_us, value]`` or, with
        ``raw_values=True``, their CSV bytes (:func:`split_values`).
    id_tag : str
        The tag grouped by.
    ids : list of str
        The ids asked for; ``Points.index`` refers to this list.
    what : str
        For the error message.

    Returns
    -------
    Points
        ``time_us`` [us since the epoch, UTC]; ``value`` float64 (NaN for null).

    Raises
    ------
    InputError
        When the field holds something other than numbers.
    """
    series = [s for r in results for s in r.get("series") or ()]
    if not series:
        return Points.empty()
    lookup = {value: i for i, value in enumerate(ids)}
    position = np.array([lookup.get((s.get("tags") or {}).get(id_tag, ""), -1) for s in series])
    try:
        if all(isinstance(s["values"], bytes) for s in series):
            lengths = np.array([s["values"].count(b"\n") + 1 for s in series])
            table = pcsv.read_csv(
                io.BytesIO(b"\n".join(s["values"] for s in series)),
                read_options=pcsv.ReadOptions(column_names=["time", "value"]),
                convert_options=pcsv.ConvertOptions(
                    column_types={"time": pa.int64(), "value": pa.float64()}))
            time_us = table.column("time").to_numpy()
            value = table.column("value").to_numpy(zero_copy_only=False)
        else:
            lengths = np.array([len(s["values"]) for s in series])
            flat = list(chain.from_iterable(s["values"] for s in series))
            rows = np.array(flat, dtype=np.float64).reshape(len(flat), -1)
            time_us, value = rows[:, 0].astype(np.int64), rows[:, 1]
    except (TypeError, ValueError, pa.ArrowInvalid):
        raise InputError(f"{what}: the field holds values that are not numbers",
                         hint="point [influxdb.<table>] field at a numeric field") from None
    index = np.repeat(position, lengths)
    keep = index >= 0
    return Points(index[keep], time_us[keep], value[keep])


_VALUES = re.compile(rb'"values":\[(\[[^"\]]*\](?:,\[[^"\]]*\])*)\]')


def split_values(line: bytes) -> dict:
    """Decode one chunk of an InfluxQL JSON answer, leaving numeric ``values`` as CSV bytes.

    The ``values`` arrays of numbers (``[[t, v], [t, v], ...]``) are cut out
    before ``json.loads`` and become ``b"t,v\\nt,v"``: one Arrow CSV read
    parses them all, instead of a Python object per number. Arrays holding
    strings are left to ``json.loads`` (JSON escaping keeps a tag value from
    ever looking like a ``"values":[`` key).

    Examples
    --------
    >>> split_values(b'{"results":[{"series":[{"tags":{"m":"a"},"values":[[1,0.5],[2,null]]}]}]}')
    {'results': [{'series': [{'tags': {'m': 'a'}, 'values': b'1,0.5\\n2,null'}]}]}
    """
    blobs = [m.group(1)[1:-1].replace(b"],[", b"\n") for m in _VALUES.finditer(line)]
    if not blobs:
        return json.loads(line)
    chunk = json.loads(_VALUES.sub(b'"values":0', line))
    series = [s for r in chunk.get("results", []) for s in r.get("series") or ()]
    if len(series) != len(blobs) or any(s.get("values") != 0 for s in series):
        return json.loads(line)  # not the plain layout expected: take the slow, sure path
    for s, blob in zip(series, blobs, strict=True):
        s["values"] = blob
    return chunk


def flux_tables(body: bytes, *, what: str) -> list[pa.Table]:
    """The tables of a Flux annotated-CSV answer (``#datatype`` annotation, header row).

    Blocks of different schemas are separated by an empty line. ``_time``
    becomes a UTC timestamp, ``_value`` float64, every other column text.

    Raises
    ------
    InputError
        When the answer holds an ``error`` table (the query failed on the server).
    """
    tables = []
    for block in re.split(rb"\n[ \t]*\n", body.replace(b"\r\n", b"\n")):
        block = block.lstrip(b"\n")
        while block.startswith(b"#"):  # annotation rows head each block
            block = block.partition(b"\n")[2]
        if not block.strip():
            continue
        names = next(csv.reader([block.partition(b"\n")[0].decode("utf-8")]))
        data = io.BytesIO(block)
        if "error" in names:
            errors = pcsv.read_csv(data, convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in names})).column("error")
            message = errors[0].as_py() if len(errors) else "unknown error"
            raise InputError(f"{what} failed on the server: {message}",
                             hint="see the server's message")
        types = {name: pa.string() for name in names}
        if "_value" in names:
            types["_value"] = pa.float64()
        if "_time" in names:
            types["_time"] = pa.timestamp("ns", tz="UTC")
        tables.append(pcsv.read_csv(data, convert_options=pcsv.ConvertOptions(
            column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False)))
    return tables


def flux_points(body: bytes, *, id_tag: str, ids: list[str], what: str) -> Points:
    """Points of :func:`gridwatch.influx.query.flux_select_values` (one ``group()`` table)."""
    parts = []
    lookup = pd.Index(ids)
    for table in flux_tables(body, what=what):
        if table.num_rows == 0 or id_tag not in table.column_names:
            continue
        index = lookup.get_indexer(table.column(id_tag).to_pandas())
        time_us = table.column("_time").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        value = table.column("_value").to_numpy()
        keep = index >= 0
        parts.append(Points(index[keep], time_us.to_numpy()[keep], value[keep]))
    return Points.concat(parts)


def flux_tag_frame(body: bytes, *, what: str) -> pd.DataFrame:
    """The rows of a Flux answer as strings, without Flux's own columns (``result``, ``table``)."""
    frames = [t.to_pandas() for t in flux_tables(body, what=what)]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop(columns=[c for c in ("", "result", "table") if c in frame.columns]
                      + [c for c in frame.columns if str(c).startswith("Unnamed")])


_TOKEN = re.compile(r"(?:\\[,= ]|[^,])+")
_PAIR = re.compile(r"((?:\\[,= ]|[^=])*)=(.*)", re.DOTALL)
_ESCAPED = re.compile(r"\\([,= ])")


def series_key_tags(key: str) -> dict:
    """The tags of one series key (``measurement,tag=value,...``, line-protocol escaped).

    Examples
    --------
    >>> series_key_tags(r"readings,meter_id=x\\ or\\ 1\\=1,region=north")
    {'meter_id': 'x or 1=1', 'region': 'north'}
    """
    tokens = _TOKEN.findall(key)
    tags = {}
    for token in tokens[1:]:
        match = _PAIR.fullmatch(token)
        if match:
            tags[_ESCAPED.sub(r"\1", match.group(1))] = _ESCAPED.sub(r"\1", match.group(2))
    return tags


def series_frame(results: list[dict]) -> pd.DataFrame:
    """Tags of every series of a ``SHOW SERIES`` answer, one row per series (str, missing NaN)."""
    keys = [row[0] for r in results for s in r.get("series") or () for row in s.get("values") or ()]
    return pd.DataFrame([series_key_tags(key) for key in keys])
