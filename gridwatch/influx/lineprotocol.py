"""InfluxDB line protocol, built column-wise (no Python loop per point).

A line is ``measurement,tag=value,... field=value,... time``. Escaping
(InfluxDB line protocol reference):

* measurement: comma and space;
* tag keys, tag values and field keys: comma, equals sign and space;
* string field values: double quote and backslash (inside double quotes).

A backslash elsewhere is written as it is. InfluxDB's parser reads a
backslash as the start of an escape, so a tag value whose backslash comes
last or right before a comma, equals sign or space cannot be written at all
(nor can a value holding a newline, or an empty one): :func:`unwritable_tag_values`
finds them so that the caller can refuse them with a clear message instead
of a server error or a silently altered id.

Floats are written in their shortest round-trip form (Arrow's float to
string cast, the same digits as ``repr(float)``), so a value read back is
bit-identical to the value written.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TAG_SPECIALS = (",", "=", " ")
_UNWRITABLE = r"\\$|\\[,= ]|[\n\r]"


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol (comma and space)."""
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(key: str) -> str:
    """Escape a tag key, tag value or field key (comma, equals sign and space)."""
    for char in _TAG_SPECIALS:
        key = key.replace(char, "\\" + char)
    return key


def unescape_key(text: str) -> str:
    """Undo :func:`escape_key` (read left to right: a backslash before a special is an escape)."""
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _TAG_SPECIALS:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def unwritable_tag_values(values) -> list[str]:
    """The values that line protocol cannot carry as a tag value.

    Parameters
    ----------
    values : array-like of str
        Candidate tag values (ids).

    Returns
    -------
    list of str
        Values that are empty, hold a newline, end in a backslash or have a
        backslash right before a comma, equals sign or space.
    """
    arr = pa.array(np.asarray(values, dtype=object), type=pa.string())
    bad = pc.or_(pc.match_substring_regex(arr, _UNWRITABLE), pc.equal(pc.utf8_length(arr), 0))
    return arr.filter(pc.fill_null(bad, True)).to_pylist()


def _escape_tag_array(values: pa.Array) -> pa.Array:
    for char in _TAG_SPECIALS:
        values = pc.replace_substring(values, char, "\\" + char)
    return values


def escape_string_field(values: pa.Array) -> pa.Array:
    """Quote string field values: ``"`` and ``\\`` escaped, wrapped in double quotes."""
    values = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', values, '"', "")


def format_floats(values) -> pa.Array:
    """Floats as shortest round-trip decimal strings (null where not finite)."""
    values = np.asarray(values, dtype=np.float64)
    return pc.cast(pa.array(values, mask=~np.isfinite(values)), pa.string())


def format_integers(values) -> pa.Array:
    """Integers as line-protocol integer fields (``12i``)."""
    return pc.binary_join_element_wise(pc.cast(pa.array(np.asarray(values, np.int64)), pa.string()),
                                       "i", "")


def format_booleans(values) -> pa.Array:
    """Booleans as ``true`` / ``false``."""
    return pa.array(np.where(np.asarray(values, dtype=bool), "true", "false"), type=pa.string())


def tag_pairs(key: str, values) -> pa.Array:
    """``,key=value`` per row; null where the value is missing or empty (the tag is left out).

    Parameters
    ----------
    key : str
        Tag key.
    values : array-like of str, or pandas.Categorical
        Tag values. A Categorical is escaped once per category.

    Returns
    -------
    pyarrow.StringArray
    """
    prefix = "," + escape_key(key) + "="
    if hasattr(values, "categories"):
        cats = pa.array(np.asarray(values.categories, dtype=object), type=pa.string())
        escaped = pc.binary_join_element_wise(prefix, _escape_tag_array(cats), "")
        codes = np.asarray(values.codes)
        return escaped.take(pa.array(codes, mask=codes < 0))
    arr = pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    return pc.binary_join_element_wise(prefix, _escape_tag_array(arr), "")


def build_lines(measurement: str, tags: dict, fields: dict, time_ns) -> pa.Array:
    """Line-protocol lines, one per row, each ending in a newline.

    Parameters
    ----------
    measurement : str
        Measurement name.
    tags : dict of str to array-like
        Tag key to values (str or Categorical); a missing or empty value
        leaves that tag out of the line.
    fields : dict of str to pyarrow.StringArray
        Field key to already formatted values (:func:`format_floats`,
        :func:`format_integers`, :func:`format_booleans`,
        :func:`escape_string_field`); null leaves the field out. Every row
        needs at least one field: rows without any are dropped.
    time_ns : array-like of int64
        Point times [ns since the epoch, UTC].

    Returns
    -------
    pyarrow.StringArray
        One line per row that has a field.
    """
    time_ns = np.asarray(time_ns, dtype=np.int64)
    n = len(time_ns)
    empty = pa.array([""] * 0, type=pa.string())
    tag_parts = [pc.fill_null(tag_pairs(key, values), "") for key, values in tags.items()]
    field_parts = []
    for key, values in fields.items():
        field_parts.append(pc.binary_join_element_wise(escape_key(key) + "=", values, ""))
    if not field_parts or n == 0:
        return empty
    # Join the present fields with commas: each non-null part is prefixed by "," and the
    # first comma dropped, so a row with missing fields still gets well-formed separators.
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(pc.binary_join_element_wise(",", part, ""), "") for part in field_parts], "")
    has_field = pc.greater(pc.utf8_length(joined), 0)
    field_text = pc.utf8_slice_codeunits(joined, 1)
    head = pc.binary_join_element_wise(escape_measurement(measurement), *tag_parts, "") \
        if tag_parts else pa.array(np.full(n, escape_measurement(measurement), dtype=object),
                                   type=pa.string())
    times = pc.cast(pa.array(time_ns), pa.string())
    lines = pc.binary_join_element_wise(head, " ", field_text, " ", times, "\n", "")
    return lines.filter(has_field)


def lines_to_bytes(lines: pa.Array) -> bytes:
    """The request body of a batch of lines (their UTF-8 bytes, back to back)."""
    if len(lines) == 0:
        return b""
    lines = pa.concat_arrays([lines]) if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return lines.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()


def series_heads(measurement: str, id_tag: str, ids, extra_tags: dict | None = None) -> pa.Array:
    """``measurement,tag=value,...`` once per id (the series keys of a table), keys sorted.

    Parameters
    ----------
    measurement, id_tag : str
        Measurement and the tag holding the id.
    ids : array-like of str
        The ids (e.g. a Categorical's categories).
    extra_tags : dict of str to array-like, optional
        More tags, aligned with ``ids``; missing or empty values are left out.

    Returns
    -------
    pyarrow.StringArray
        Take it by the rows' id codes to get each row's line head.
    """
    tags = {**(extra_tags or {}), id_tag: np.asarray(ids, dtype=object)}
    # Keys in sorted order, as InfluxDB keeps them: it need not sort each line (~20 % faster).
    parts = [pc.fill_null(tag_pairs(key, tags[key]), "") for key in sorted(tags)]
    return pc.binary_join_element_wise(escape_measurement(measurement), *parts, "")


def value_lines(heads: pa.Array, field_key: str, values, time_ns) -> pa.Array:
    """``head field=value time\\n`` per row; rows whose value is not finite are left out.

    Parameters
    ----------
    heads : pyarrow.StringArray
        Each row's series key (:func:`series_heads` taken by the rows' codes).
    field_key : str
        The field.
    values : array-like of float
        Field values (NaN and infinities cannot be written: left out).
    time_ns : array-like of int64
        Point times [ns since the epoch, UTC].
    """
    formatted = format_floats(values)
    times = pc.cast(pa.array(np.asarray(time_ns, dtype=np.int64)), pa.string())
    lines = pc.binary_join_element_wise(heads, " " + escape_key(field_key) + "=", formatted, " ",
                                        times, "\n", "")
    return lines.filter(pc.is_valid(lines))
