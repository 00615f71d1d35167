"""Read a long interval table (readings, upstream) one partition of ids at a time.

Issue 6: the nightly run holds one partition of meters in memory, not the
whole dataset. :func:`open_readings` and :func:`open_upstream` return a
:class:`PartitionedTable` whose :meth:`~PartitionedTable.read` gives, for one
partition of a :class:`gridwatch.partitions.PartitionPlan`, exactly the raw
frame the full reader (:func:`gridwatch.sources.files.read_readings`) would
give for those ids, with the same issue codes.

Every row of the file belongs to exactly one key: a partition number, or
:data:`UNPLANNED` for the rows whose id is in no partition (meters missing
from the meters table, upstream of unknown or split assets, blank ids) and
for malformed CSV rows. Reading every key once therefore counts every row
once: the ``rows_in`` and the issue counts of all keys add up to those of the
full read.

Two ways to get at one partition's rows, chosen by :func:`open_partitioned`:

``"row_groups"`` (Parquet whose row groups follow the plan, as the
    simulator writes them: blocks of whole transformers). One pass reads the
    id column only, with ``read_dictionary``, and notes which partitions each
    row group holds; a partition then reads only its row groups and keeps its
    rows by their dictionary codes.
``"spill"`` (CSV, and Parquet in another order). One streaming pass over
    the file (``pyarrow.csv.open_csv`` / ``ParquetFile.iter_batches``) writes
    each partition's rows, as read, into its own Arrow IPC stream (LZ4) in a
    temporary directory; a partition then reads its small file. IPC, not
    Parquet: nothing to encode or decode, and the ids stay dictionary-encoded
    (a stream may change dictionaries between batches). The raw text columns
    are kept as text, so converting a part gives the same values, the same
    DST resolution (file order is kept within a meter) and the same issues as
    converting the whole file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from gridwatch import columns as col
from gridwatch.errors import InputError
from gridwatch.sources import files

UNPLANNED = -1
"""Key of the rows whose id is in no partition (and of malformed CSV rows)."""

MAX_ROW_GROUP_READS = 2.0
"""Above this many reads per row group on average, spill instead of reading row groups."""

CSV_BLOCK_BYTES = 16 * 2**20
"""Bytes of CSV parsed per streaming block at first (a longer line gets larger blocks)."""

SPILL_FLUSH_ROWS = 4_000_000
"""Rows buffered over all partitions before the spill writes them out."""


class PartitionedTable:
    """One long (id, timestamp, value) table, read partition by partition.

    Build it with :func:`open_partitioned`, :func:`open_readings` or
    :func:`open_upstream`; use it as a context manager (or call
    :meth:`close`) so that a spill directory is removed.

    Attributes
    ----------
    path : pathlib.Path
        The table's file.
    strategy : {"row_groups", "spill"}
        How partitions are read (see the module notes).
    keys : list of int
        Every partition number of the plan, then :data:`UNPLANNED`.
    """

    def __init__(self, path, id_partition, *, table, id_column, value_column, timezone,
                 n_partitions=None, extra_values=()):
        self.path = Path(path)
        self.table = table
        self.id_column = id_column
        self.value_column = value_column
        self.extra_values = list(extra_values)
        self.timezone = timezone
        self.names = [id_column, col.TIMESTAMP, value_column, *self.extra_values]
        self._ids = pd.Index(id_partition.index.astype(str))
        self._parts = id_partition.to_numpy(dtype=np.int64)
        if n_partitions is None:
            n_partitions = int(self._parts.max()) + 1 if len(self._parts) else 0
        self.keys = [*range(n_partitions), UNPLANNED]
        self.strategy = None
        self._row_groups = None  # partition -> row group numbers ("row_groups")
        self._spill_dir = None  # "spill"
        self._malformed = 0
        self._pf = None  # the open Parquet file, if the table is Parquet
        self._empty = None  # an empty raw table, for partitions without rows ("spill")

    # --- reading ---------------------------------------------------------------------------
    def read(self, partition: int):
        """Raw frame of one partition, as the full reader gives it for those ids.

        Parameters
        ----------
        partition : int
            A partition number of the plan, or :data:`UNPLANNED`.

        Returns
        -------
        frame : pandas.DataFrame or None
            ``<id_column>`` (Categorical), ``timestamp`` (``datetime64[us, UTC]``),
            ``<value_column>`` (float64), in file order; None when the
            partition has no usable row.
        issues : IssueLog
            The reader's issues for these rows (malformed CSV rows and rows
            without an id are reported with :data:`UNPLANNED`).
        rows_in : int
            Rows of the file that belong to this key.

        Notes
        -----
        The checks that judge the whole file (more than 10 % bad timestamps,
        no number at all) are not applied to a part: sum every part's
        :func:`part_counts` and pass them to :func:`check_whole_table`.
        """
        if partition not in self.keys:
            raise ValueError(f"no partition {partition}; the plan has {len(self.keys) - 1}")
        data = self._read_raw(partition)
        malformed = self._malformed if partition == UNPLANNED else 0
        return files._interval_frame(data, malformed, self.path, table=self.table,
                                     id_column=self.id_column, value_column=self.value_column,
                                     timezone=self.timezone, required=False, whole_table=False,
                                     extra_values=self.extra_values)

    def _read_raw(self, partition: int) -> pa.Table:
        if self.strategy == "row_groups":
            pf = self._parquet()
            groups = self._row_groups.get(partition, [])
            if not groups:
                return pf.read_row_groups([], columns=self.names)
            pieces = []
            for rg in groups:  # a file written in meter order: most groups are all one partition's
                data = pf.read_row_group(rg, columns=self.names)
                mine = self._row_partitions(data.column(self.id_column)) == partition
                pieces.append(data if mine.all() else data.filter(mine))
            return pa.concat_tables(pieces)
        part = self._spill_path(partition)
        if not part.exists():
            return self._empty
        with pa.ipc.open_stream(part) as reader:
            return reader.read_all()

    # --- strategies ------------------------------------------------------------------------
    def _parquet(self) -> pq.ParquetFile:
        """The Parquet file, ids read as dictionaries when they are strings (opened once)."""
        if self._pf is None:
            kind = pq.read_schema(self.path).field(self.id_column).type
            as_dict = [self.id_column] if (pa.types.is_string(kind)
                                           or pa.types.is_large_string(kind)) else []
            self._pf = pq.ParquetFile(self.path, read_dictionary=as_dict)
        return self._pf

    def _index_row_groups(self) -> int:
        """Note the partitions of each row group; returns the row-group reads they need."""
        pf = self._parquet()
        self._row_groups = {}
        reads = 0
        for rg in range(pf.num_row_groups):  # one step per row group
            ids = pf.read_row_group(rg, columns=[self.id_column]).column(0)
            for p in self._partitions_present(ids):
                self._row_groups.setdefault(p, []).append(rg)
                reads += 1
        return reads

    def _partitions_present(self, column: pa.ChunkedArray) -> list[int]:
        """The keys having rows in ``column``: from the dictionary entries used, no row sort."""
        present = set()
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.cast(pa.string()).dictionary_encode()
            lookup = self._lookup(chunk.dictionary)
            codes = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            used = np.bincount(codes + 1, minlength=len(lookup) + 1) > 0  # slot 0: null ids
            present.update(lookup[used[1:]].tolist())
            if used[0]:
                present.add(UNPLANNED)
        return sorted(present)

    def _lookup(self, dictionary: pa.Array) -> np.ndarray:
        """Key of each dictionary entry: its partition, or UNPLANNED for unknown or blank ids."""
        text, _ = files.decode_text(dictionary)  # ids read as bytes (not UTF-8): decoded
        names = pd.Index(text.cast(pa.string()).to_pandas()).str.strip()
        pos = self._ids.get_indexer(names)
        return np.where(pos >= 0, self._parts[pos], UNPLANNED)

    def _spill(self, spill_dir) -> None:
        """Split the file into one Arrow IPC file per partition, in one streaming pass.

        A CSV that needs looser reading (text in a number column, text that is
        not UTF-8, a line longer than a block: :class:`~gridwatch.sources.files.CsvAttempt`)
        is spilled again from the start with the looser options.
        """
        self._spill_dir = Path(tempfile.mkdtemp(prefix=f"gridwatch-{self.table}-",
                                                dir=spill_dir))
        attempt = files.CsvAttempt(self.path, files.interval_types(
            self.id_column, self.value_column, self.extra_values), block_bytes=CSV_BLOCK_BYTES)
        while True:
            try:
                self._write_spill(attempt)
                return
            except pa.ArrowInvalid as exc:
                attempt.loosen(exc)  # raises InputError when nothing looser can help
                self._clear_spill()

    def _write_spill(self, attempt) -> None:
        writers, buffers, buffered = {}, {}, 0
        schema = None
        options = pa.ipc.IpcWriteOptions(compression="lz4")

        def flush():
            for p, batches in buffers.items():
                if not batches:
                    continue
                if p not in writers:
                    writers[p] = pa.ipc.new_stream(self._spill_path(p), schema, options=options)
                for batch in batches:
                    writers[p].write_batch(batch)
                batches.clear()

        try:
            for batch in self._batches(attempt):
                schema = schema or batch.schema
                parts = self._row_partitions(batch.column(0))
                order = np.argsort(parts, kind="stable")  # keeps file order within a partition
                keys, starts, counts = np.unique(parts[order], return_index=True,
                                                 return_counts=True)
                ordered = batch.take(pa.array(order))
                for p, s, c in zip(keys.tolist(), starts.tolist(), counts.tolist(), strict=True):
                    buffers.setdefault(p, []).append(ordered.slice(s, c))
                buffered += batch.num_rows
                if buffered >= SPILL_FLUSH_ROWS:
                    flush()
                    buffered = 0
            if schema is not None:
                flush()
            self._empty = (schema or pa.schema([(n, pa.string()) for n in self.names])) \
                .empty_table()
        finally:
            for writer in writers.values():
                writer.close()

    def _batches(self, attempt):
        """Record batches of the id, timestamp and value columns, in file order.

        ``attempt`` (a :class:`~gridwatch.sources.files.CsvAttempt`) gives a
        CSV's block size and column types; a pyarrow error is left to the caller.
        """
        if files._format(self.path) == "parquet":
            # Row group by row group: ParquetFile.iter_batches peaked 600 MB above this loop's
            # 140 MB over the 248 row groups of 100,000 meters x 90 days (pyarrow 26).
            pf = self._parquet()
            for rg in range(pf.num_row_groups):
                yield from pf.read_row_group(rg, columns=self.names).to_batches()
            return
        skipped = []

        def skip(row):
            skipped.append(row.number)
            return "skip"

        reader = pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(block_size=attempt.block_bytes),
            parse_options=pcsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pcsv.ConvertOptions(include_columns=self.names,
                                                column_types=attempt.types,
                                                strings_can_be_null=True))
        for batch in reader:
            yield batch.select(self.names)
        self._malformed = len(skipped)

    def _spill_path(self, partition: int) -> Path:
        name = "unplanned" if partition == UNPLANNED else f"part-{partition:05d}"
        return self._spill_dir / f"{name}.arrows"

    def _clear_spill(self) -> None:
        for path in self._spill_dir.glob("*.arrows"):
            path.unlink()

    # --- ids -> partitions -----------------------------------------------------------------
    def _row_partitions(self, column) -> np.ndarray:
        """Partition of each row (UNPLANNED for unknown or blank ids), from dictionary codes."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        out = []
        for chunk in chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.cast(pa.string()).dictionary_encode()
            lookup = np.append(self._lookup(chunk.dictionary), UNPLANNED)  # -1: null id
            codes = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            out.append(lookup[codes])
        return np.concatenate(out) if out else np.empty(0, np.int64)

    # --- lifetime --------------------------------------------------------------------------
    def __getstate__(self):
        # A copy (sent to a worker) reads the same spill but does not own it: only
        # the process that spilled removes the directory.
        return {**self.__dict__, "_pf": None, "_owns_spill": False}

    def readable_here(self) -> bool:
        """Whether this process sees the table's files (a worker on another host may not)."""
        if self.strategy == "spill":
            return self._spill_dir is not None and self._spill_dir.is_dir()
        return self.path.exists()

    def close(self) -> None:
        """Close the file and remove the spill directory this process made, if any."""
        if self._pf is not None:
            self._pf.close()
            self._pf = None
        if self._spill_dir is not None and getattr(self, "_owns_spill", True):
            shutil.rmtree(self._spill_dir, ignore_errors=True)
        self._spill_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def part_counts(frame: pd.DataFrame | None, issues, *, table: str,
                value_column: str = col.KWH) -> dict:
    """What the whole-table checks need from one part of a table (see :func:`check_whole_table`).

    Returns
    -------
    dict
        ``bad_timestamps`` (rows with an id whose timestamp cannot be read)
        and ``numbers`` (rows whose value is a number).
    """
    return {"bad_timestamps": int(issues.total(f"{table}.bad_timestamp")),
            "numbers": 0 if frame is None else int(frame[value_column].notna().sum())}


def check_whole_table(path, *, table: str, value_column: str = col.KWH, rows_in: int,
                      bad_timestamps: int, numbers: int) -> None:
    """Refuse a table read in parts as the full reader refuses it whole.

    Parameters
    ----------
    path : str or os.PathLike
        The table's file (named in the error).
    table, value_column : str
    rows_in, bad_timestamps, numbers : int
        Summed over every part (:func:`part_counts`), the rows of no partition included.

    Raises
    ------
    InputError
        More than :data:`~gridwatch.sources.files.MAX_BAD_TIMESTAMP_FRACTION`
        of the timestamps cannot be read, or no value is a number.
    """
    if rows_in == 0:
        return
    if bad_timestamps > files.MAX_BAD_TIMESTAMP_FRACTION * rows_in:
        raise InputError(f"{bad_timestamps} of {rows_in} timestamps of the {table} table cannot "
                         "be parsed (data_quality.csv lists them per id)", file=path,
                         column=col.TIMESTAMP, hint=files.ISO_HINT)
    if numbers == 0:
        raise InputError(f"column '{value_column}' of the {table} table holds no number",
                         file=path, column=value_column,
                         hint="write plain decimal numbers with a '.' decimal point, e.g. 0.25")


def open_partitioned(path, id_partition: pd.Series, *, table: str, id_column: str,
                     value_column: str = col.KWH, timezone: str = "UTC",
                     strategy: str = "auto", spill_dir=None,
                     n_partitions: int | None = None, optional_values=()) -> PartitionedTable:
    """Prepare a long interval table for reading partition by partition.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv``, ``.csv.gz`` or ``.parquet`` table with ``id_column``,
        ``timestamp`` and ``value_column``.
    id_partition : pandas.Series of int
        Partition number of each id (index: the ids), e.g.
        ``plan.meter_partition``. Ids of the file absent from it go to
        :data:`UNPLANNED`.
    table : str
        Table name for issue codes and messages (``readings``, ``upstream``).
    id_column : str
        ``meter_id`` or ``asset_id``.
    value_column : str, default "kwh"
        The value column.
    timezone : str, default "UTC"
        IANA zone in which naive timestamps are read.
    strategy : {"auto", "row_groups", "spill"}, default "auto"
        ``auto``: row groups for a Parquet file whose row groups need on
        average at most :data:`MAX_ROW_GROUP_READS` reads each, else spill.
        CSV is always spilled.
    spill_dir : str or os.PathLike, optional
        Where the spill's temporary directory goes (default: the system's).
    n_partitions : int, optional
        Partitions of the plan (default: the highest number in
        ``id_partition`` plus one); partitions without ids read as empty.
    optional_values : sequence of str, default ()
        Further value columns read when the file has them (``kwh_export``).

    Returns
    -------
    PartitionedTable

    Raises
    ------
    InputError
        Unreadable file or missing column, as the full readers.
    """
    path = Path(path)
    names = [id_column, col.TIMESTAMP, value_column]
    columns = files._columns(path)
    files._require(columns, names, path, table)
    if strategy not in ("auto", "row_groups", "spill"):
        raise ValueError(f"strategy must be 'auto', 'row_groups' or 'spill', not {strategy!r}")
    source = PartitionedTable(path, id_partition, table=table, id_column=id_column,
                              value_column=value_column, timezone=timezone,
                              n_partitions=n_partitions,
                              extra_values=files.present_values(columns, optional_values))
    is_parquet = files._format(path) == "parquet"
    if strategy == "row_groups" and not is_parquet:
        raise ValueError("strategy 'row_groups' needs a Parquet file")
    if is_parquet and strategy != "spill":
        reads = source._index_row_groups()
        n_groups = max(1, source._parquet().num_row_groups)
        if strategy == "row_groups" or reads <= MAX_ROW_GROUP_READS * n_groups:
            source.strategy = "row_groups"
            return source
    try:
        source._spill(spill_dir)
    except BaseException:
        source.close()  # no spill directory left behind by a file that cannot be read
        raise
    source.strategy = "spill"
    return source


def open_readings(path, plan, *, timezone: str = "UTC", strategy: str = "auto",
                  spill_dir=None) -> PartitionedTable:
    """The readings table of a dataset, by the meters' partitions of ``plan``.

    Parameters
    ----------
    path : str or os.PathLike
        ``readings.csv``, ``readings.csv.gz`` or ``readings.parquet``.
    plan : gridwatch.partitions.PartitionPlan
        The partitions; rows of meters outside the plan are :data:`UNPLANNED`.
    timezone, strategy, spill_dir
        As :func:`open_partitioned`.

    Returns
    -------
    PartitionedTable
    """
    return open_partitioned(path, plan.meter_partition, table="readings",
                            id_column=col.METER_ID, value_column=col.KWH, timezone=timezone,
                            strategy=strategy, spill_dir=spill_dir,
                            n_partitions=plan.n_partitions,
                            optional_values=col.READINGS_OPTIONAL_VALUES)


def open_upstream(path, plan, *, timezone: str = "UTC", strategy: str = "auto",
                  spill_dir=None) -> PartitionedTable:
    """The upstream table of a dataset, by the assets' partitions of ``plan``.

    Parameters
    ----------
    path : str or os.PathLike
        ``upstream.csv``, ``upstream.csv.gz`` or ``upstream.parquet``.
    plan : gridwatch.partitions.PartitionPlan
        The partitions; an asset goes with the partition holding all its
        meters (``plan.asset_partition``). Rows of unknown assets, and of
        assets split over partitions, are :data:`UNPLANNED`.
    timezone, strategy, spill_dir
        As :func:`open_partitioned`.

    Returns
    -------
    PartitionedTable
    """
    return open_partitioned(path, plan.asset_partition, table="upstream",
                            id_column=col.ASSET_ID, value_column=col.KWH, timezone=timezone,
                            strategy=strategy, spill_dir=spill_dir,
                            n_partitions=plan.n_partitions)
