"""Read the contract tables from CSV or Parquet files into canonical frames.

Every reader returns ``(frame, issues)``. The frames are the same whatever the
file format (``docs/data-contract.md``):

* readings: ``meter_id`` (Categorical, sorted categories), ``timestamp``
  (``datetime64[us, UTC]``, START of the interval), ``kwh`` (float64);
* upstream: ``asset_id`` (Categorical), ``timestamp``, ``kwh``;
* weather: ``region`` (str), ``timestamp``, ``temperature_c`` (float64);
* meters: one row per ``meter_id`` (str) with every contract column present,
  then the extra columns of the file.

Timestamps: an explicit offset (``Z``, ``+05:00``) wins; a naive time is read
in the configured IANA zone. A repeated local hour (DST end) is resolved in
file order: the first occurrence of a (meter, local time) is the earlier
instant, the second the later one. A skipped local hour (DST start) is
shifted forward. Both are counted.

Readers refuse (``InputError``) what cannot be used at all and repair, with a
counted issue, what can. Cleaning rules that need the meter list (unknown
meters, duplicates, intervals...) live in :mod:`gridwatch.cleaning`.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.issues import IssueLog
from gridwatch.sources import export_forms

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
"""Canonical dtype of every ``timestamp`` column inside GridWatch."""

MAX_BAD_TIMESTAMP_FRACTION = 0.10
"""Above this share of unparseable timestamps the file is refused, not repaired."""

SUFFIXES = (".csv", ".csv.gz", ".parquet")
ISO_HINT = ("write ISO 8601 times such as 2024-03-01T00:30:00, 2024-03-01 00:30 "
            "or 2024-03-01T00:30:00+01:00")
_OFFSET_RE = r"[T ][\d:.,]+\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
_NAT = np.iinfo(np.int64).min
_US_PER_MIN = 60_000_000


# --- locating and opening files --------------------------------------------------------------
def find_table(input_dir, name: str) -> Path | None:
    """Find the file holding table ``name`` in a dataset directory.

    Parameters
    ----------
    input_dir : str or os.PathLike
        The dataset directory.
    name : str
        Table name: ``meters``, ``readings``, ``upstream`` or ``weather``.

    Returns
    -------
    pathlib.Path or None
        ``name.csv``, ``name.csv.gz`` or ``name.parquet``; None when absent.

    Raises
    ------
    InputError
        When more than one of them exists (which one is meant is unclear).
    """
    found = [Path(input_dir) / f"{name}{suffix}" for suffix in SUFFIXES]
    found = [path for path in found if path.is_file()]
    if len(found) > 1:
        names = " and ".join(path.name for path in found)
        raise InputError(f"both {names} exist for table '{name}'", file=Path(input_dir),
                         hint="keep one of them")
    return found[0] if found else None


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputError("not a CSV or Parquet file", file=path,
                     hint="name it .csv, .csv.gz or .parquet")


def _columns(path: Path) -> list[str]:
    """Column names of a file, without reading its data."""
    try:
        if _format(path) == "parquet":
            return list(pq.read_schema(path).names)
        if path.stat().st_size == 0:
            return []
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except Exception as exc:  # noqa: BLE001 - any reader failure means "unreadable"
        raise InputError(f"cannot read the file: {_first_line(exc)}", file=path,
                         hint="check that it is a valid CSV or Parquet file") from None


def _require(columns: list[str], required, path: Path, table: str) -> None:
    for name in required:
        if name not in columns:
            found = ", ".join(columns) if columns else "none"
            hint = f"the {table} table needs columns {', '.join(required)}"
            near = [c for c in columns if c.strip().lower() == name]
            if near:
                hint += f"; rename column {near[0]!r} to '{name}' (names are case-sensitive)"
            elif len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
                hint += "; the file does not look comma-separated"
            raise InputError(f"missing required column '{name}' (found: {found})",
                             file=path, column=name, hint=hint)


def _read(path: Path, names: list[str], types: dict,
          dictionary: tuple = ()) -> tuple[pa.Table, int]:
    """Read ``names`` from a CSV or Parquet file; returns the table and malformed CSV rows.

    A CSV is read with the fast ``types`` first and with looser ones when it
    needs them (:class:`CsvAttempt`): values that are not numbers as text,
    text that is not UTF-8 as bytes (decode it with :func:`decode_text`), and
    lines longer than a block with blocks sized to the file's longest line.
    """
    try:
        if _format(path) == "parquet":
            schema = pq.read_schema(path)
            as_dict = [n for n in dictionary if pa.types.is_string(schema.field(n).type)
                       or pa.types.is_large_string(schema.field(n).type)]
            return pq.read_table(path, columns=names, read_dictionary=as_dict), 0
        attempt = CsvAttempt(path, types)
        while True:
            skipped = []

            def skip(row, skipped=skipped):
                skipped.append(row.number)
                return "skip"

            try:
                table = pcsv.read_csv(
                    path,
                    read_options=pcsv.ReadOptions(block_size=attempt.block_bytes),
                    parse_options=pcsv.ParseOptions(invalid_row_handler=skip),
                    convert_options=pcsv.ConvertOptions(include_columns=names,
                                                        column_types=attempt.types,
                                                        strings_can_be_null=True),
                )
            except pa.ArrowInvalid as exc:
                attempt.loosen(exc)  # raises InputError when nothing looser can help
                continue
            return table, len(skipped)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read the file: {_first_line(exc)}", file=path,
                         hint="check that it is a valid CSV or Parquet file") from None


# --- CSV: conversion, encoding and block-size fallbacks ------------------------------------
CSV_BLOCK_BYTES = 1 << 20
"""Bytes of CSV parsed per block at first (pyarrow's default); long lines get larger blocks."""

_SCAN_BYTES = 16 << 20


class CsvAttempt:
    """The block size and column types of the next try at reading a CSV file.

    Read with :attr:`block_bytes` and :attr:`types`; on a pyarrow error call
    :meth:`loosen`, which loosens the one thing the error is about, or raises
    the :class:`~gridwatch.errors.InputError` for the user when nothing looser
    can help. Each rule applies once or grows a finite size, so the tries end:

    * a number column that holds text is read as text (the reader then counts
      the cells that are not numbers);
    * a text column that is not valid UTF-8 is read as bytes
      (:func:`decode_text` reads each value as UTF-8, else Latin-1);
    * a row longer than a block (pyarrow: "straddling object straddles two
      block boundaries") gets a block of twice the file's longest line
      (:func:`longest_line_bytes`; a row is one line, as newlines inside
      quoted values are not read), then twice that as a backstop, up to the
      whole uncompressed file in one block, where nothing can straddle.
      Memory stays about one block per thread: a 20 GB file with one 2 MiB
      line is read in 4 MiB blocks (issue 14).

    Parameters
    ----------
    path : pathlib.Path
        The CSV file (named in errors, scanned for its longest line).
    types : dict
        Column name -> Arrow type of the fast first try.
    block_bytes : int, default :data:`CSV_BLOCK_BYTES`
        Block size of the first try [bytes].
    """

    def __init__(self, path: Path, types: dict, *, block_bytes: int = CSV_BLOCK_BYTES):
        self.path = Path(path)
        self.types = dict(types)
        self.block_bytes = int(block_bytes)
        self._file_bytes = None

    def loosen(self, exc: Exception) -> None:
        """Adapt to the pyarrow error ``exc`` of the last try, or raise ``InputError``."""
        text = str(exc)
        if "straddl" in text:
            self._grow_block(exc)
            return
        if "invalid UTF8" in text:
            looser = {n: _as_bytes(t) for n, t in self.types.items()}
        elif "conversion error" in text:
            looser = {n: (pa.string() if pa.types.is_floating(t) else t)
                      for n, t in self.types.items()}
        else:
            looser = self.types
        if looser == self.types:
            raise _unreadable(exc, self.path)
        self.types = looser

    def _grow_block(self, exc: Exception) -> None:
        if self._file_bytes is None:
            longest, self._file_bytes = longest_line_bytes(self.path)
            grown = _power_of_two(max(2 * longest + 1, 2 * self.block_bytes))
        else:
            grown = 2 * self.block_bytes
        if self.block_bytes > self._file_bytes:
            raise _unreadable(exc, self.path)
        self.block_bytes = min(grown, _power_of_two(self._file_bytes + 1))


def _unreadable(exc: Exception, path: Path) -> InputError:
    return InputError(f"cannot read the file: {_first_line(exc)}", file=path,
                      hint="check that it is a valid CSV or Parquet file")


def _as_bytes(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
        return pa.dictionary(kind.index_type, pa.binary())
    if pa.types.is_string(kind) or pa.types.is_floating(kind):
        return pa.binary()  # a number column that fails as UTF-8 text is bytes too
    return kind


def _power_of_two(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


def longest_line_bytes(path) -> tuple[int, int]:
    """Length of the longest line of a (possibly gzipped) text file, and its size [bytes].

    One streaming pass in 16 MiB chunks with numpy (no Python loop per line).
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    longest = run = total = 0
    with opener(path, "rb") as f:
        while chunk := f.read(_SCAN_BYTES):
            total += len(chunk)
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            if len(ends) == 0:
                run += len(chunk)
                continue
            widths = np.diff(ends)
            longest = max(longest, run + int(ends[0]) + 1, int(widths.max(initial=0)))
            run = len(chunk) - int(ends[-1]) - 1
    return max(longest, run), total


def decode_text(column) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray]:
    """Text read as bytes, decoded: UTF-8 where valid, else Latin-1 (ISO-8859-1).

    Parameters
    ----------
    column : pyarrow.Array or pyarrow.ChunkedArray
        ``binary`` or ``dictionary<binary>`` values (what :class:`CsvAttempt`
        reads a text column that is not UTF-8 as); other types are returned
        unchanged.

    Returns
    -------
    text : pyarrow.Array
        ``dictionary<string>`` values (ids stay dictionary-encoded).
    latin1 : numpy.ndarray of bool
        Rows whose value was read as Latin-1.

    Notes
    -----
    Vectorised over the distinct values: only those with a byte above 0x7F
    are decoded in Python, and those are few (ids, a stray value).
    """
    n = len(column)
    kind = column.type
    binary = pa.types.is_binary(kind) or (pa.types.is_dictionary(kind)
                                          and pa.types.is_binary(kind.value_type))
    if not binary:
        return column, np.zeros(n, bool)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], kind)
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    values = column.dictionary
    _, offsets, data = values.buffers()
    offsets = np.frombuffer(offsets, np.int32)[values.offset:values.offset + len(values) + 1]
    data = np.zeros(0, np.uint8) if data is None else np.frombuffer(data, np.uint8)
    high = np.concatenate([[0], np.cumsum(data >= 0x80)])
    non_ascii = high[offsets[1:]] - high[offsets[:-1]] > 0
    latin1_value = np.zeros(len(values), bool)
    if non_ascii.any():
        decoded = []
        for i, raw in zip(np.flatnonzero(non_ascii), values.filter(pa.array(non_ascii)).to_pylist(),
                          strict=True):  # the few distinct values with a high byte
            try:
                decoded.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(raw.decode("latin-1"))
                latin1_value[i] = True
        values = pc.replace_with_mask(values, pa.array(non_ascii),
                                      pa.array([v.encode("utf-8") for v in decoded], pa.binary()))
    text = pa.DictionaryArray.from_arrays(column.indices, values.cast(pa.string()))
    codes = column.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return text, np.append(latin1_value, False)[codes]


def decode_table(data: pa.Table, *, dictionary: bool = True) -> tuple[pa.Table, np.ndarray]:
    """Every bytes column of ``data`` decoded (:func:`decode_text`); rows read as Latin-1.

    ``dictionary=False`` gives plain ``string`` columns instead of dictionaries.
    """
    latin1 = np.zeros(data.num_rows, bool)
    for i, name in enumerate(data.column_names):
        text, rows = decode_text(data.column(i))
        if text is not data.column(i):
            data = data.set_column(i, name, text if dictionary else text.cast(pa.string()))
            latin1 |= rows
    return data, latin1


LATIN1_DETAIL = ("text that is not valid UTF-8 was read as Latin-1 (ISO-8859-1); "
                 "re-export the file as UTF-8")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- column conversions ----------------------------------------------------------------------
def _ids(column: pa.ChunkedArray) -> pd.Categorical:
    """Ids as a Categorical with stripped, sorted string categories; blanks are missing."""
    column, _ = decode_text(column)  # ids read as bytes (not UTF-8): decoded
    if not pa.types.is_dictionary(column.type):
        column = column.cast(pa.string()).dictionary_encode()
    cat = column.to_pandas().array
    names = pd.Index(cat.categories.astype("str")).str.strip()
    uniques = pd.Index(names.unique().dropna()).drop([""], errors="ignore").sort_values()
    remap = uniques.get_indexer(names)  # -1 for blanks
    codes = cat.codes
    if not np.array_equal(remap, np.arange(len(names))):
        lookup = np.append(remap, -1).astype(codes.dtype)  # code -1 maps to the last entry
        codes = lookup[codes]
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(uniques))


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and a mask of present-but-non-numeric cells."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) \
            or pa.types.is_null(column.type):
        values = column.cast(pa.float64()).to_numpy()
        return values.astype(np.float64, copy=False), np.zeros(len(values), bool)
    text = pd.Series(column.cast(pa.string()).to_pandas(), dtype="str").str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    present = text.notna().to_numpy() & (text != "").to_numpy()
    return values, present & np.isnan(values)


def _utc_instants(column: pa.ChunkedArray, groups: np.ndarray, timezone: str):
    """Parse a timestamp column into int64 microseconds since the epoch, UTC.

    Returns
    -------
    utc : numpy.ndarray of int64
        ``_NAT`` where the value is missing or cannot be parsed.
    ambiguous, nonexistent : numpy.ndarray of bool
        Rows whose naive local time was repeated / skipped by a DST change.
    """
    n = len(column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    if pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("s"))
    if pa.types.is_timestamp(column.type) and column.type.unit == "us":
        # int64 [us] straight from Arrow: no pandas datetimes (nanoseconds) in between
        utc = column.cast(pa.int64())
        utc = (utc.fill_null(_NAT) if utc.null_count else utc).to_numpy()
        if column.type.tz is not None:  # Arrow stores instants as UTC whatever the zone
            return utc, np.zeros(n, bool), np.zeros(n, bool)
        return _localize(utc, groups, timezone)
    if pa.types.is_timestamp(column.type):
        index = pd.DatetimeIndex(column.to_pandas())
        if column.type.tz is not None:
            utc = index.tz_convert("UTC").as_unit("us").asi8
            return utc, np.zeros(n, bool), np.zeros(n, bool)
        return _localize(index.as_unit("us").asi8, groups, timezone)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(f"a timestamp column cannot have type {column.type}")
    text = pd.Series(column.to_pandas(), dtype="str").str.strip()
    has_offset = text.str.contains(_OFFSET_RE, regex=True, na=False).to_numpy()
    utc = np.full(n, _NAT, dtype=np.int64)
    ambiguous = np.zeros(n, bool)
    nonexistent = np.zeros(n, bool)
    if has_offset.any():
        aware = text[has_offset]
        lower_z = aware.str.endswith("z").to_numpy()
        if lower_z.any():  # ISO 8601 allows 'z' (RFC 3339 5.6); pandas' parser only 'Z'
            aware = aware.where(~lower_z, aware.str.slice(0, -1) + "Z")
        aware = pd.to_datetime(aware, format="ISO8601", utc=True, errors="coerce")
        utc[has_offset] = pd.DatetimeIndex(aware).as_unit("us").asi8
    naive_rows = ~has_offset
    if naive_rows.any():
        naive = pd.to_datetime(text[naive_rows], format="ISO8601", errors="coerce")
        naive_i8 = pd.DatetimeIndex(naive).as_unit("us").asi8
        utc[naive_rows], ambiguous[naive_rows], nonexistent[naive_rows] = _localize(
            naive_i8, groups[naive_rows], timezone)
    return utc, ambiguous, nonexistent


def _localize(naive: np.ndarray, groups: np.ndarray, timezone: str):
    """Read naive local times (int64 [us], ``_NAT`` for missing) in ``timezone``.

    Vectorised over the distinct local times, which are few (one per interval of
    the period), not over rows. In a repeated hour the first occurrence of a
    (group, local time) in row order is the earlier (DST) instant, later ones the
    later (standard time) instant; skipped local times are shifted forward.
    """
    n = len(naive)
    ambiguous = np.zeros(n, bool)
    nonexistent = np.zeros(n, bool)
    if timezone == "UTC":
        return naive.copy(), ambiguous, nonexistent
    valid = naive != _NAT
    inverse, uniques = pd.factorize(naive[valid])
    local = pd.DatetimeIndex(np.asarray(uniques, dtype=np.int64).view("M8[us]"))
    ones = np.ones(len(local), bool)
    early = local.tz_localize(timezone, ambiguous=ones, nonexistent="shift_forward").asi8
    late = local.tz_localize(timezone, ambiguous=~ones, nonexistent="shift_forward").asi8
    skipped = local.tz_localize(timezone, ambiguous=ones, nonexistent="NaT").isna()
    utc = np.full(n, _NAT, dtype=np.int64)
    utc[valid] = early[inverse]
    repeated = (early != late)[inverse]
    if repeated.any():
        rows = np.flatnonzero(valid)[repeated]
        occurrence = pd.DataFrame({"g": groups[rows], "t": naive[rows]}).groupby(
            ["g", "t"], sort=False).cumcount().to_numpy()
        utc[rows] = np.where(occurrence == 0, early[inverse[repeated]], late[inverse[repeated]])
        ambiguous[rows] = True
    nonexistent[valid] = np.asarray(skipped)[inverse]
    return utc, ambiguous, nonexistent


def utc_index(utc: np.ndarray) -> pd.DatetimeIndex:
    """``datetime64[us, UTC]`` index of int64 microseconds since the epoch (no ``_NAT``).

    ``DatetimeIndex(values, dtype=...)`` checks every value on its way to the
    zone and took 0.8 s for 44 M readings; localising a naive index to UTC
    is a copy (0.05 s).
    """
    return pd.DatetimeIndex(np.asarray(utc, dtype=np.int64).view("M8[us]")).tz_localize("UTC")


def _per_id(ids: pd.Categorical, mask: np.ndarray) -> pd.Series:
    """Count of ``mask`` rows per id (Series indexed by the categories)."""
    codes = np.asarray(ids.codes)
    hits = codes[mask & (codes >= 0)]
    return pd.Series(np.bincount(hits, minlength=len(ids.categories)), index=ids.categories)


def _first_bad(text_column: pa.ChunkedArray, bad: np.ndarray) -> tuple[int, str]:
    row = int(np.flatnonzero(bad)[0])
    value = text_column[row].as_py()
    return row + 1, "empty" if value is None or str(value).strip() == "" else repr(str(value))


# --- interval tables: readings, upstream, weather ---------------------------------------------
def _read_interval_table(path, *, table: str, id_column: str, value_column: str,
                         timezone: str, required: bool, optional_values=(), form=None):
    """Read a long (id, timestamp, value) table; returns (frame or None, issues, rows_in).

    ``optional_values``: further value columns read when the file has them
    (``kwh_export`` of readings). ``form``: the table's export form
    (:mod:`gridwatch.sources.export_forms`; None: the contract's).
    """
    path = Path(path)
    plan = export_forms.plan_read(_columns(path), form, path, table=table,
                                  value_column=value_column)  # the file's names -> contract's
    names = [id_column, col.TIMESTAMP, plan.value_column]
    _require(plan.columns, names, path, table)
    extra = present_values(plan.columns, [*optional_values, *plan.optional])
    names += extra
    types = interval_types(id_column, plan.value_column, extra)
    data, malformed = _read(path, plan.file_names(names), plan.file_types(types),
                            dictionary=plan.file_names([id_column]))
    return _interval_frame(plan.rename(data, path, table), malformed, path, table=table,
                           id_column=id_column, value_column=plan.value_column,
                           timezone=timezone, required=required, extra_values=extra, form=form)


def present_values(columns, optional_values) -> list[str]:
    """The optional value columns a table's file has, in the order asked."""
    return [name for name in optional_values if name in columns]


def interval_types(id_column: str, value_column: str, extra_values=()) -> dict:
    """Arrow types a long (id, timestamp, value) table is read with from CSV."""
    return {id_column: pa.dictionary(pa.int32(), pa.string()), col.TIMESTAMP: pa.string(),
            value_column: pa.float64(), **dict.fromkeys(extra_values, pa.float64())}


def _interval_frame(data: pa.Table, malformed: int, path: Path, *, table: str, id_column: str,
                    value_column: str, timezone: str, required: bool, whole_table: bool = True,
                    extra_values=(), form=None):
    """Convert a raw (id, timestamp, value) Arrow table; returns (frame or None, issues, rows_in).

    ``whole_table=False`` is for a part of a table (one partition of its ids):
    no rows is not an error, and the refusals that judge a whole file (too
    many bad timestamps, no number at all) are left to the caller, which
    sees every part.
    """
    log = IssueLog()
    names = [id_column, col.TIMESTAMP, value_column]
    data = export_forms.encode_devices(data)  # register reads: the device read, as codes
    rows_in = data.num_rows + malformed
    log.add(f"{table}.malformed_row", table, malformed, "dropped",
            detail="CSV rows with the wrong number of fields were skipped")
    if data.num_rows == 0:
        if not whole_table:
            return None, log, rows_in
        if required:
            raise InputError(f"the {table} table has no rows", file=path,
                             hint=f"export at least one row of {', '.join(names)}")
        log.add(f"{table}.empty", table, 1, "kept", severity="info",
                detail=f"{path.name} has no rows; treated as absent")
        return None, log, rows_in

    data, latin1 = decode_table(data)
    ids = _ids(data.column(id_column))
    codes = np.asarray(ids.codes)
    try:
        utc, ambiguous, nonexistent = _utc_instants(data.column(col.TIMESTAMP), codes, timezone)
    except TypeError as exc:
        raise InputError(str(exc), file=path, column=col.TIMESTAMP, hint=ISO_HINT) from None
    except ValueError as exc:
        raise InputError(f"timestamps cannot be read: {_first_line(exc)}", file=path,
                         column=col.TIMESTAMP, hint=ISO_HINT) from None
    bad_time = utc == _NAT
    if whole_table and bad_time.mean() > MAX_BAD_TIMESTAMP_FRACTION:
        row, value = _first_bad(data.column(col.TIMESTAMP), bad_time)
        raise InputError(
            f"{bad_time.sum()} of {len(bad_time)} timestamps cannot be parsed; "
            f"the first is {value} in data row {row}",
            file=path, column=col.TIMESTAMP, row=row, hint=ISO_HINT)

    values, non_numeric = _numbers(data.column(value_column))
    if whole_table and np.isnan(values).all():
        bad = non_numeric if non_numeric.any() else np.ones(len(values), bool)
        row, value = _first_bad(data.column(value_column), bad)
        raise InputError(f"column '{value_column}' holds no number (first value {value} "
                         f"in data row {row})", file=path, column=value_column, row=row,
                         hint="write plain decimal numbers with a '.' decimal point, e.g. 0.25")

    no_id = codes < 0
    log.add(f"{table}.missing_{id_column}", table, no_id.sum(), "dropped",
            detail=f"rows without {id_column}")
    keep = ~no_id & ~bad_time
    log.add_per_meter(f"{table}.bad_timestamp", table, _per_id(ids, bad_time & ~no_id),
                      "dropped", detail=f"timestamp missing or not ISO 8601; {ISO_HINT}")
    log.add_per_meter(f"{table}.non_numeric_{value_column}", table,
                      _per_id(ids, non_numeric & keep), "set_missing",
                      detail=f"{value_column} is not a number")
    log.add_per_meter(f"{table}.missing_{value_column}", table,
                      _per_id(ids, np.isnan(values) & ~non_numeric & keep), "kept",
                      detail=f"{value_column} empty or NaN in the file; left missing (never 0)")
    log.add_per_meter(f"{table}.latin1_text", table, _per_id(ids, latin1 & keep), "resolved",
                      detail=f"{path.name}: {LATIN1_DETAIL}")
    extra = {}
    for name in extra_values:  # optional value columns: empty means none
        extra[name], bad = _numbers(data.column(name))
        log.add_per_meter(f"{table}.non_numeric_{name}", table, _per_id(ids, bad & keep),
                          "set_missing", detail=f"{name} is not a number")
    log.add_per_meter(f"{table}.dst_ambiguous", table, _per_id(ids, ambiguous & keep),
                      "resolved", severity="info",
                      detail="local time repeated at DST end: first occurrence read as "
                             "summer time, the second as standard time")
    log.add_per_meter(f"{table}.dst_nonexistent", table, _per_id(ids, nonexistent & keep),
                      "resolved", detail="local time skipped at DST start: shifted forward")
    if not keep.all():
        ids, utc, values = ids[keep], utc[keep], values[keep]
        extra = {name: v[keep] for name, v in extra.items()}
    frame = pd.DataFrame({
        id_column: ids,
        col.TIMESTAMP: utc_index(utc),
        value_column: values,
        **extra,
    }, copy=False)
    frame = export_forms.to_contract(frame, log, form, table=table, id_column=id_column,
                                     value_column=col.KWH)  # units, END stamps, registers
    return frame, log, rows_in


def read_readings(path, *, timezone: str = "UTC") -> tuple[pd.DataFrame, IssueLog]:
    """Read the meter readings table.

    Parameters
    ----------
    path : str or os.PathLike
        ``readings.csv``, ``readings.csv.gz`` or ``readings.parquet``.
    timezone : str, default "UTC"
        IANA zone in which naive timestamps are read.

    Returns
    -------
    readings : pandas.DataFrame
        ``meter_id`` (Categorical), ``timestamp`` (UTC, START of the interval),
        ``kwh`` (float64, energy imported in the interval [kWh], NaN where
        not a number) and, when the file has it, ``kwh_export`` (float64,
        energy exported [kWh], NaN where empty: none). Rows keep file order;
        other columns are not read.
    issues : IssueLog
        ``readings.missing_meter_id``, ``readings.malformed_row``,
        ``readings.bad_timestamp`` (dropped), ``readings.non_numeric_kwh``
        (set_missing), ``readings.dst_ambiguous``, ``readings.dst_nonexistent``
        (resolved).

    Raises
    ------
    InputError
        Unreadable file, missing column, no rows, more than 10 % of timestamps
        unparseable (names the first bad data row), or no numeric ``kwh``.
    """
    frame, log, _ = _read_interval_table(path, table="readings", id_column=col.METER_ID,
                                         value_column=col.KWH, timezone=timezone, required=True,
                                         optional_values=col.READINGS_OPTIONAL_VALUES)
    return frame, log


def read_upstream(path, *, timezone: str = "UTC") -> tuple[pd.DataFrame | None, IssueLog]:
    """Read the upstream (transformer / feeder / substation) load table.

    Parameters
    ----------
    path : str or os.PathLike
        ``upstream.csv``, ``upstream.csv.gz`` or ``upstream.parquet``.
    timezone : str, default "UTC"
        IANA zone in which naive timestamps are read.

    Returns
    -------
    upstream : pandas.DataFrame or None
        ``asset_id`` (Categorical), ``timestamp`` (UTC), ``kwh`` (float64 [kWh]);
        None when the file has no rows (issue ``upstream.empty``).
    issues : IssueLog
        As :func:`read_readings`, with codes prefixed ``upstream.``.

    Raises
    ------
    InputError
        As :func:`read_readings`, except that an empty file is not an error.
    """
    frame, log, _ = _read_interval_table(path, table="upstream", id_column=col.ASSET_ID,
                                         value_column=col.KWH, timezone=timezone, required=False)
    return frame, log


def read_weather(path, *, timezone: str = "UTC") -> tuple[pd.DataFrame | None, IssueLog]:
    """Read the weather table.

    Parameters
    ----------
    path : str or os.PathLike
        ``weather.csv``, ``weather.csv.gz`` or ``weather.parquet``.
    timezone : str, default "UTC"
        IANA zone in which naive timestamps are read.

    Returns
    -------
    weather : pandas.DataFrame or None
        ``region`` (str), ``timestamp`` (UTC, time of the observation),
        ``temperature_c`` (float64 [degrees C]); None when the file has no rows.
    issues : IssueLog
        Codes prefixed ``weather.`` (``weather.non_numeric_temperature_c`` ...).

    Raises
    ------
    InputError
        As :func:`read_readings`, except that an empty file is not an error.
    """
    frame, log, _ = _read_weather(path, timezone=timezone)
    return frame, log


def _read_weather(path, *, timezone: str, form=None):
    frame, log, rows_in = _read_interval_table(
        path, table="weather", id_column=col.REGION, value_column=col.TEMPERATURE_C,
        timezone=timezone, required=False, form=form)
    if frame is not None:
        frame[col.REGION] = frame[col.REGION].astype("str")
    return frame, log, rows_in


# --- meters ----------------------------------------------------------------------------------
_RANGES = {col.TARIFF_PER_KWH: (0, np.inf), col.CONTRACTED_KW: (0, np.inf),
           col.LAT: (-90, 90), col.LON: (-180, 180)}


def read_meters(path) -> tuple[pd.DataFrame, IssueLog]:
    """Read the meters table: one row per metering point.

    Parameters
    ----------
    path : str or os.PathLike
        ``meters.csv``, ``meters.csv.gz`` or ``meters.parquet``.

    Returns
    -------
    meters : pandas.DataFrame
        The contract columns in contract order (string columns ``str``,
        missing ones all-missing; ``tariff_per_kwh`` [currency/kWh],
        ``contracted_kw`` [kW], ``lat``, ``lon`` [degrees] float64, NaN when
        missing or invalid), then the extra columns of the file. ``meter_id``
        is unique.
    issues : IssueLog
        ``meters.missing_meter_id``, ``meters.duplicate_row``,
        ``meters.duplicate_meter_id`` (dropped; the first row of a conflicting
        id is kept), ``meters.unknown_customer_class`` (resolved to 'other'),
        ``meters.invalid_<column>`` (set_missing: negative tariff or contracted
        capacity, non-numbers, coordinates out of range).

    Raises
    ------
    InputError
        Unreadable file, no ``meter_id`` column, or no rows.
    """
    frame, log, _ = _read_meters(path)
    return frame, log


def _read_meters(path, form=None):
    path = Path(path)
    log = IssueLog()
    names = export_forms.contract_columns(_columns(path), form, path, table="meters")
    _require(names, col.METERS_REQUIRED, path, "meters")
    text_columns = [c for c in names if c in col.METERS_STRING_COLUMNS + col.METERS_FLOAT_COLUMNS]
    data, malformed = _read(path, export_forms.file_names(names, form),
                            dict(zip(export_forms.file_names(text_columns, form),
                                     [pa.string()] * len(text_columns), strict=True)))
    data = export_forms.rename_columns(data, form, path, table_name="meters")
    data, latin1 = decode_table(data, dictionary=False)
    rows_in = data.num_rows + malformed
    log.add("meters.malformed_row", "meters", malformed, "dropped",
            detail="CSV rows with the wrong number of fields were skipped")
    if data.num_rows == 0:
        raise InputError("the meters table has no rows", file=path,
                         hint="list at least one meter_id")
    frame = data.to_pandas()
    for name in col.METERS_STRING_COLUMNS:
        values = frame[name] if name in frame else pd.Series(pd.NA, index=frame.index)
        values = values.astype("str").str.strip()
        frame[name] = values.mask(values == "")

    no_id = frame[col.METER_ID].isna()
    log.add("meters.missing_meter_id", "meters", no_id.sum(), "dropped",
            detail="rows without meter_id")
    log.add_per_meter("meters.latin1_text", "meters",
                      pd.Series(latin1[~no_id.to_numpy()]).groupby(
                          frame.loc[~no_id, col.METER_ID].to_numpy()).sum(),
                      "resolved", detail=f"{path.name}: {LATIN1_DETAIL}")
    frame = frame[~no_id]
    identical = frame.duplicated(keep="first")
    log.add_per_meter("meters.duplicate_row", "meters",
                      frame.loc[identical, col.METER_ID].value_counts(), "dropped",
                      detail="identical repeated row")
    frame = frame[~identical]
    conflicting = frame.duplicated(col.METER_ID, keep="first")
    log.add_per_meter("meters.duplicate_meter_id", "meters",
                      frame.loc[conflicting, col.METER_ID].value_counts(), "dropped",
                      detail="meter_id listed again with different values; the first row is kept")
    frame = frame[~conflicting].reset_index(drop=True)
    ids = frame[col.METER_ID]

    classes = frame[col.CUSTOMER_CLASS].str.lower()
    unknown = classes.notna() & ~classes.isin(col.CUSTOMER_CLASSES)
    frame[col.CUSTOMER_CLASS] = classes.mask(unknown, "other")
    log.add_per_meter("meters.unknown_customer_class", "meters", unknown.groupby(ids).sum(),
                      "resolved", detail=f"customer_class not one of "
                                         f"{', '.join(col.CUSTOMER_CLASSES)}; set to 'other'")
    for name in col.METERS_FLOAT_COLUMNS:
        if name not in frame:
            frame[name] = np.nan
            continue
        values, non_numeric = _numbers(pa.chunked_array([pa.array(frame[name], from_pandas=True)]))
        low, high = _RANGES[name]
        invalid = non_numeric | (values < low) | (values > high)
        frame[name] = np.where(invalid, np.nan, values)
        log.add_per_meter(f"meters.invalid_{name}", "meters", pd.Series(invalid).groupby(ids).sum(),
                          "set_missing", detail=f"{name} not a number in [{low}, {high}]")
    contract = list(col.METERS_STRING_COLUMNS + col.METERS_FLOAT_COLUMNS)
    frame = frame[contract + [c for c in frame.columns if c not in contract]]
    return frame, log, rows_in


# --- the public readers with their row counts ---------------------------------------------------
# Thin wrappers over the readers above, for the modules that need what ``read_*`` drop
# (``rows_in``, the id column alone, the raw conversion of a part): gridwatch.sources,
# gridwatch.sources.partitioned and gridwatch.influx import these, never a private name.
class TableRead(NamedTuple):
    """One table as read from its file.

    Attributes
    ----------
    frame : pandas.DataFrame or None
        The canonical frame (None: a table that may be empty has no usable row).
    issues : IssueLog
        What the reader repaired, dropped or counted.
    rows_in : int
        Rows of the file (malformed CSV rows included): the ``in`` of ``run.json``'s counts.
    """

    frame: pd.DataFrame | None
    issues: IssueLog
    rows_in: int


def read_table(path, table: str, *, timezone: str = "UTC", form=None) -> TableRead:
    """Read one contract table by name, with its row count.

    Parameters
    ----------
    path : str or os.PathLike
        The table's file (``.csv``, ``.csv.gz`` or ``.parquet``).
    table : {"meters", "readings", "upstream", "weather"}
        Which table: the reader and its refusals are those of
        :func:`read_meters`, :func:`read_readings`, :func:`read_upstream` and
        :func:`read_weather`.
    timezone : str, default "UTC"
        IANA zone in which naive timestamps are read (not used for meters).
    form : gridwatch.config.TableForm, optional
        The table's export form (``data_config.form_of(table)``); None: the contract's.

    Returns
    -------
    TableRead

    Raises
    ------
    InputError
        As the table's reader.
    """
    if table == "meters":
        return TableRead(*_read_meters(path, form))
    if table == "weather":
        return TableRead(*_read_weather(path, timezone=timezone, form=form))
    if table == "readings":
        return read_interval_table(path, table="readings", id_column=col.METER_ID,
                                   value_column=col.KWH, timezone=timezone, required=True,
                                   optional_values=col.READINGS_OPTIONAL_VALUES, form=form)
    if table == "upstream":
        return read_interval_table(path, table="upstream", id_column=col.ASSET_ID,
                                   value_column=col.KWH, timezone=timezone, required=False,
                                   form=form)
    raise ValueError(f"table must be one of {', '.join(col.TABLES)}, not {table!r}")


def read_interval_table(path, *, table: str, id_column: str, value_column: str,
                        timezone: str = "UTC", required: bool = False,
                        optional_values=(), form=None) -> TableRead:
    """Read any long (id, timestamp, value) table, with its row count.

    Parameters
    ----------
    path : str or os.PathLike
    table : str
        Name for issue codes and messages (``readings``, ``upstream``, ``weather``).
    id_column, value_column : str
    timezone : str, default "UTC"
    required : bool, default False
        True: a file without rows is refused (readings).
    optional_values : sequence of str, default ()
        Further value columns read when the file has them (``kwh_export``).
    form : gridwatch.config.TableForm, optional
        The table's export form; None: the contract's.

    Returns
    -------
    TableRead
        The frame's id column is a Categorical (weather's ``region`` too: :func:`read_table`
        turns it into ``str``).
    """
    return TableRead(*_read_interval_table(path, table=table, id_column=id_column,
                                           value_column=value_column, timezone=timezone,
                                           required=required, optional_values=optional_values,
                                           form=form))


def read_ids(path, id_column: str, *, form=None) -> pd.Index:
    """The distinct ids of one column of a table, normalised as the readers do (stripped, sorted).

    Reads that column only: what a partition plan needs of the upstream table.
    ``form``: the table's export form (the file's name of ``id_column``).
    """
    path = Path(path)
    name = export_forms.file_names([id_column], form)[0]
    types = {name: pa.dictionary(pa.int32(), pa.string())}
    data, _ = _read(path, [name], types, dictionary=(name,))
    return pd.Index(_ids(data.column(name)).categories)


def table_format(path) -> str:
    """``"csv"`` or ``"parquet"``, from the file's name; an :class:`InputError` for any other."""
    return _format(Path(path))


def table_columns(path, *, table: str, required=()) -> list[str]:
    """The column names of a table's file, without reading its data; refuses a missing ``required``."""
    path = Path(path)
    columns = _columns(path)
    _require(columns, list(required), path, table)
    return columns


def convert_interval_part(data: pa.Table, malformed: int, path, *, table: str, id_column: str,
                          value_column: str, timezone: str, extra_values=(),
                          form=None) -> TableRead:
    """Convert the raw rows of one part of a long table as the full reader converts the whole.

    The whole-file refusals (too many bad timestamps, no number) are not
    applied: a part cannot judge them
    (:func:`gridwatch.sources.partitioned.check_whole_table` does, on the sums).
    """
    return TableRead(*_interval_frame(data, malformed, Path(path), table=table,
                                      id_column=id_column, value_column=value_column,
                                      timezone=timezone, required=False, whole_table=False,
                                      extra_values=extra_values, form=form))
