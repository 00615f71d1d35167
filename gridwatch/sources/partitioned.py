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
from gridwatch.cleaning import clean_weather
from gridwatch.errors import InputError, no_usable_readings
from gridwatch.issues import IssueLog
from gridwatch.sources import Dataset, clean_dataset, empty_readings, export_forms, files

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
    names : list of str
        The columns read, under their contract names (the spill holds these).
    file_names : list of str
        The same columns under the file's own names (``form``'s column map).
    form : gridwatch.config.IntervalForm or None
        The table's export form (:mod:`gridwatch.sources.export_forms`),
        applied to each part as the full reader applies it to the whole.
    """

    def __init__(self, path, id_partition, *, table, id_column, value_column, timezone,
                 n_partitions=None, extra_values=(), form=None):
        self.path = Path(path)
        self.table = table
        self.id_column = id_column
        self.value_column = value_column
        self.extra_values = list(extra_values)
        self.timezone = timezone
        self.form = form
        self.names = [id_column, col.TIMESTAMP, value_column, *self.extra_values]
        self.file_names = export_forms.file_names(self.names, form)
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
        return files.convert_interval_part(
            data, malformed, self.path, table=self.table, id_column=self.id_column,
            value_column=self.value_column, timezone=self.timezone,
            extra_values=self.extra_values, form=self.form)

    def _read_raw(self, partition: int) -> pa.Table:
        if self.strategy == "row_groups":
            pf = self._parquet()
            groups = self._row_groups.get(partition, [])
            if not groups:
                return self._contract_names(pf.read_row_groups([], columns=self.file_names))
            pieces = []
            for rg in groups:  # a file written in meter order: most groups are all one partition's
                data = self._contract_names(pf.read_row_group(rg, columns=self.file_names))
                mine = self._row_partitions(data.column(self.id_column)) == partition
                pieces.append(data if mine.all() else data.filter(mine))
            return pa.concat_tables(pieces)
        part = self._spill_path(partition)
        if not part.exists():
            return self._empty
        with pa.ipc.open_stream(part) as reader:
            return reader.read_all()

    def _contract_names(self, data):
        """A raw table or batch read under the file's names, renamed to the contract's."""
        return data if self.file_names == self.names else data.rename_columns(self.names)

    # --- strategies ------------------------------------------------------------------------
    def _parquet(self) -> pq.ParquetFile:
        """The Parquet file, ids read as dictionaries when they are strings (opened once)."""
        if self._pf is None:
            id_name = self.file_names[0]
            kind = pq.read_schema(self.path).field(id_name).type
            as_dict = [id_name] if (pa.types.is_string(kind)
                                    or pa.types.is_large_string(kind)) else []
            self._pf = pq.ParquetFile(self.path, read_dictionary=as_dict)
        return self._pf

    def _index_row_groups(self) -> int:
        """Note the partitions of each row group; returns the row-group reads they need."""
        pf = self._parquet()
        self._row_groups = {}
        reads = 0
        for rg in range(pf.num_row_groups):  # one step per row group
            ids = pf.read_row_group(rg, columns=[self.file_names[0]]).column(0)
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
        types = files.interval_types(self.id_column, self.value_column, self.extra_values)
        attempt = files.CsvAttempt(self.path, export_forms.file_types(types, self.form),
                                   block_bytes=CSV_BLOCK_BYTES)
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

        The columns are read under the file's names and come out under the
        contract's. ``attempt`` (a :class:`~gridwatch.sources.files.CsvAttempt`)
        gives a CSV's block size and column types; a pyarrow error is left to
        the caller.
        """
        if files.table_format(self.path) == "parquet":
            # Row group by row group: ParquetFile.iter_batches peaked 600 MB above this loop's
            # 140 MB over the 248 row groups of 100,000 meters x 90 days (pyarrow 26).
            pf = self._parquet()
            for rg in range(pf.num_row_groups):
                yield from self._contract_names(
                    pf.read_row_group(rg, columns=self.file_names)).to_batches()
            return
        skipped = []

        def skip(row):
            skipped.append(row.number)
            return "skip"

        reader = pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(block_size=attempt.block_bytes),
            parse_options=pcsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pcsv.ConvertOptions(include_columns=self.file_names,
                                                column_types=attempt.types,
                                                strings_can_be_null=True))
        for batch in reader:
            yield self._contract_names(batch.select(self.file_names))
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
                value_column: str = col.KWH, form=None) -> dict:
    """What the whole-table checks need from one part of a table (see :func:`check_whole_table`).

    Parameters
    ----------
    frame : pandas.DataFrame or None
        The part as converted (:meth:`PartitionedTable.read`).
    issues : IssueLog
        The reader's issues for the part.
    table, value_column : str
    form : gridwatch.config.IntervalForm, optional
        The table's export form. Register reads are counted as read, before
        differencing (the first read of a register is a number the frame
        drops), as the full reader judges them.

    Returns
    -------
    dict
        ``bad_timestamps`` (rows with an id whose timestamp cannot be read)
        and ``numbers`` (rows whose value is a number).
    """
    if frame is None:
        numbers = 0
    elif export_forms.reads_register(form):  # the reads that are numbers: kept or dropped
        numbers = (len(frame) + issues.total(f"{table}.register_first_read")
                   + issues.total(f"{table}.register_duplicate_read")
                   - issues.total(f"{table}.missing_{col.REGISTER_KWH}")
                   - issues.total(f"{table}.non_numeric_{col.REGISTER_KWH}"))
    else:
        numbers = int(frame[value_column].notna().sum())
    return {"bad_timestamps": int(issues.total(f"{table}.bad_timestamp")),
            "numbers": int(numbers)}


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
                     n_partitions: int | None = None, optional_values=(),
                     form=None) -> PartitionedTable:
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
    form : gridwatch.config.IntervalForm, optional
        The table's export form (``data_config.form_of(table)``): the file's
        own column names, unit, END stamps or register reads, applied to each
        part as the full reader applies them (a register is differenced per
        meter, and a meter's rows are all in one part). None: the contract's.

    Returns
    -------
    PartitionedTable

    Raises
    ------
    InputError
        Unreadable file or missing column, as the full readers.
    """
    path = Path(path)
    if strategy not in ("auto", "row_groups", "spill"):
        raise ValueError(f"strategy must be 'auto', 'row_groups' or 'spill', not {strategy!r}")
    plan = export_forms.plan_read(files.table_columns(path, table=table), form, path,
                                  table=table, value_column=value_column)
    names = [id_column, col.TIMESTAMP, plan.value_column]
    files.table_columns(path, table=table, required=plan.file_names(names))
    source = PartitionedTable(path, id_partition, table=table, id_column=id_column,
                              value_column=plan.value_column, timezone=timezone,
                              n_partitions=n_partitions, form=form,
                              extra_values=files.present_values(
                                  plan.columns, [*optional_values, *plan.optional]))
    is_parquet = files.table_format(path) == "parquet"
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
                  spill_dir=None, form=None) -> PartitionedTable:
    """The readings table of a dataset, by the meters' partitions of ``plan``.

    Parameters
    ----------
    path : str or os.PathLike
        ``readings.csv``, ``readings.csv.gz`` or ``readings.parquet``.
    plan : gridwatch.partitions.PartitionPlan
        The partitions; rows of meters outside the plan are :data:`UNPLANNED`.
    timezone, strategy, spill_dir
        As :func:`open_partitioned`.
    form : gridwatch.config.ReadingsForm, optional
        The file's export form (``data_config.readings``); None: the contract's.

    Returns
    -------
    PartitionedTable
    """
    return open_partitioned(path, plan.meter_partition, table="readings",
                            id_column=col.METER_ID, value_column=col.KWH, timezone=timezone,
                            strategy=strategy, spill_dir=spill_dir,
                            n_partitions=plan.n_partitions,
                            optional_values=col.READINGS_OPTIONAL_VALUES, form=form)


def open_upstream(path, plan, *, timezone: str = "UTC", strategy: str = "auto",
                  spill_dir=None, form=None) -> PartitionedTable:
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
    form : gridwatch.config.UpstreamForm, optional
        The file's export form (``data_config.upstream``); None: the contract's.

    Returns
    -------
    PartitionedTable
    """
    return open_partitioned(path, plan.asset_partition, table="upstream",
                            id_column=col.ASSET_ID, value_column=col.KWH, timezone=timezone,
                            strategy=strategy, spill_dir=spill_dir,
                            n_partitions=plan.n_partitions, form=form)


# --- a dataset directory as a source of partitions ----------------------------------------------
class FileSource:
    """A dataset directory: its small tables read whole, its long ones one partition at a time.

    The file implementation of :class:`gridwatch.sources.Source`. The meters
    and weather tables are read (and the weather cleaned) once, here;
    :meth:`open` gives the loader of a partition plan: for a plan of one
    partition the full readers read the whole readings and upstream tables
    (no spill: the all-at-once run), for several :class:`PlannedFiles`.

    Parameters
    ----------
    input_dir : str or os.PathLike
        A dataset laid out as in ``docs/data-contract.md``.
    config : gridwatch.config.Config
    as_of : datetime.date, optional
        The as-of day asked for; None: found in the readings while they are
        read (:func:`gridwatch.days.default_as_of`).

    Raises
    ------
    InputError
        No such directory, no meters or readings table, a meters or weather
        table that cannot be used.
    """

    def __init__(self, input_dir, config, *, as_of=None):
        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise InputError("input directory not found", file=input_dir,
                             hint="pass a directory holding meters and readings tables")
        self.input_dir, self.config, self.as_of = input_dir, config, as_of
        self.paths = paths = {name: files.find_table(input_dir, name) for name in col.TABLES}
        for name in ("meters", "readings"):
            if paths[name] is None:
                expected = ", ".join(f"{name}{suffix}" for suffix in files.SUFFIXES)
                raise InputError(f"no {name} table", file=input_dir,
                                 hint=f"add one of {expected}")
        self.name = str(paths["readings"])
        self.issues = IssueLog()
        self.meters, log_meters, meters_in = files.read_table(
            paths["meters"], "meters", form=config.data.meters)
        self.issues.extend(log_meters)
        self.counts = {"meters": {"in": meters_in, "used": len(self.meters)},
                       "weather": {"in": 0, "used": 0}}
        self.weather = None
        if paths["weather"] is not None:
            raw, log_weather, self.counts["weather"]["in"] = files.read_table(
                paths["weather"], "weather", timezone=config.data.timezone,
                form=config.data.weather)
            self.issues.extend(log_weather)
            if raw is not None:
                self.weather, log_clean = clean_weather(raw)
                self.issues.extend(log_clean)
                self.counts["weather"]["used"] = len(self.weather)

    def upstream_asset_ids(self) -> list:
        """The asset ids of the upstream table, normalised as the reader does (its id column only)."""
        if self.paths["upstream"] is None:
            return []
        return list(files.read_ids(self.paths["upstream"], col.ASSET_ID,
                                   form=self.config.data.upstream))

    def open(self, plan):
        """The loader of ``plan``'s partitions: ``loader(part) -> Dataset``; close it when done."""
        if plan.n_partitions == 1:
            return WholeFiles(self.paths, self.config.data, meters=self.meters,
                              weather=self.weather)
        return PlannedFiles(self.input_dir, plan, self.config.data, meters=self.meters,
                            weather=self.weather)

    def check(self, totals: dict) -> None:
        """The full reader's refusals of a whole file, on the summed parts."""
        for table in ("readings", "upstream"):
            if self.paths[table] is not None:
                total = totals[table]
                register = export_forms.reads_register(self.config.data.form_of(table))
                check_whole_table(self.paths[table], table=table, rows_in=total["in"],
                                  value_column=col.REGISTER_KWH if register else col.KWH,
                                  bad_timestamps=total["bad_timestamps"], numbers=total["numbers"])

    def no_readings(self, issues=None) -> InputError:
        """The error of a dataset without a usable reading, naming what dropped the rows."""
        return no_usable_readings(self.paths["readings"], issues or self.issues)


def _clean_part(meters, data_config, weather, readings, issues, rows_in, upstream=None,
                up_issues=None, up_rows=0):
    """Clean one key's raw rows; ``row_counts`` carry the whole-table check's counts."""
    checks = {"readings": part_counts(readings, issues, table="readings",
                                      form=data_config.readings)}
    if readings is None:
        readings = empty_readings()
    if up_issues is not None:
        checks["upstream"] = part_counts(upstream, up_issues, table="upstream",
                                         form=data_config.upstream)
        issues.extend(up_issues)
    sub = clean_dataset(meters, readings, upstream, None, data_config=data_config,
                        issues=issues, rows_in={"readings": rows_in, "upstream": up_rows})
    for table, counts in checks.items():
        sub.row_counts[table].update(counts)
    sub.weather = weather
    return sub


class WholeFiles:
    """The loader of a plan of one partition: the whole tables, read by the full readers.

    What the all-at-once run reads: no spill and no row group index, each
    long table read once as :func:`gridwatch.sources.read_dataset` reads it.
    """

    def __init__(self, paths: dict, data_config, *, meters, weather):
        self.paths, self.data_config = paths, data_config
        self.meters, self.weather = meters, weather

    def __call__(self, part) -> Dataset:
        """Read and clean every row of the readings and upstream tables."""
        tz = self.data_config.timezone
        readings, issues, rows_in = files.read_table(self.paths["readings"], "readings",
                                                     timezone=tz, form=self.data_config.readings)
        upstream, up_issues, up_rows = None, None, 0
        if self.paths["upstream"] is not None:
            upstream, up_issues, up_rows = files.read_table(self.paths["upstream"], "upstream",
                                                            timezone=tz,
                                                            form=self.data_config.upstream)
        meters = self.meters[self.meters[col.METER_ID].astype(str).isin(part.meter_ids)]
        return _clean_part(meters.reset_index(drop=True), self.data_config, self.weather,
                           readings, issues, rows_in, upstream, up_issues, up_rows)

    def unplanned(self, meters: pd.DataFrame) -> Dataset:
        """Nothing: the one partition read every row (those of unknown meters are counted there)."""
        return _clean_part(meters.iloc[:0], self.data_config, self.weather, None, IssueLog(), 0,
                           up_issues=None if self.paths["upstream"] is None else IssueLog())

    def close(self) -> None:
        """Nothing to close: the tables were read whole."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PlannedFiles:
    """Partitions of a dataset directory read one at a time with the plan's readers.

    Only the partition's rows are read (Parquet row groups of its meters, or
    its part of a one-off spill for CSV: :func:`open_readings`) and cleaned
    with the rules of the full read; the meters and weather tables are small
    and read whole. Picklable: a copy sent to a Dask worker reads the
    client's spill when the worker sees it (same host or shared disk) and
    opens the files itself otherwise. :meth:`close` removes the spill at the
    end of the run; only the process that made it removes it.

    Parameters
    ----------
    input_dir : str or os.PathLike
    plan : gridwatch.partitions.PartitionPlan
    data_config : gridwatch.config.DataConfig
    meters, weather : pandas.DataFrame, optional
        The meters table and the cleaned weather, when the caller has read
        them already (default: read from ``input_dir``).
    """

    _opened_here: dict = {}  # token -> tables this process opened itself (its own spill)

    def __init__(self, input_dir, plan, data_config, *, meters=None, weather=None):
        import uuid

        self.input_dir = str(input_dir)
        self.plan = plan
        self.data_config = data_config
        self.token = uuid.uuid4().hex
        self._open = None
        self._small = None if meters is None else {"meters": meters, "weather": weather}

    def _tables(self):
        """The open tables: this loader's, or (on a worker that cannot see them) its own."""
        if self._open is not None and all(t.readable_here() for t in _long_tables(self._open)):
            return self._open  # opened here, or sent by the client with a spill this host sees
        self._open = PlannedFiles._opened_here.get(self.token)
        if self._open is None:
            self._open = self._open_tables()
            close_opened()  # one run's tables per process: an earlier run's spill is removed
            PlannedFiles._opened_here[self.token] = self._open
        return self._open

    def _open_tables(self) -> dict:
        tz = self.data_config.timezone
        small = self._small or self._read_small()
        up_path = files.find_table(self.input_dir, "upstream")
        return {
            **small,
            "readings": open_readings(files.find_table(self.input_dir, "readings"), self.plan,
                                      timezone=tz, form=self.data_config.readings),
            "upstream": None if up_path is None else open_upstream(
                up_path, self.plan, timezone=tz, form=self.data_config.upstream),
        }

    def _read_small(self) -> dict:
        meters = files.read_table(files.find_table(self.input_dir, "meters"), "meters",
                                  form=self.data_config.meters).frame
        weather = None
        path = files.find_table(self.input_dir, "weather")
        if path is not None:
            weather = files.read_table(path, "weather", timezone=self.data_config.timezone,
                                       form=self.data_config.weather).frame
            if weather is not None:
                weather, _ = clean_weather(weather)  # its issues: once, by the caller
        return {"meters": meters, "weather": weather}

    def close(self) -> None:
        """Close the files and remove the spill this process made (at the end of a run)."""
        if self._open is not None:
            _close_tables(self._open)
            self._open = None
        PlannedFiles._opened_here.pop(self.token, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, part) -> Dataset:
        """Read and clean one partition's rows."""
        t = self._tables()
        meters = t["meters"][t["meters"][col.METER_ID].astype(str).isin(part.meter_ids)]
        return self._clean(meters.reset_index(drop=True), part.number)

    def unplanned(self, meters: pd.DataFrame) -> Dataset:
        """The rows of no partition (unknown meters and assets, blank ids), cleaned: counted once."""
        return self._clean(meters.iloc[:0], UNPLANNED)

    def _clean(self, meters: pd.DataFrame, key) -> Dataset:
        t = self._tables()
        readings, issues, rows_in = t["readings"].read(key)
        upstream, up_issues, up_rows = None, None, 0
        if t["upstream"] is not None:
            upstream, up_issues, up_rows = t["upstream"].read(key)
        return _clean_part(meters, self.data_config, t["weather"], readings, issues, rows_in,
                           upstream, up_issues, up_rows)


def _long_tables(tables: dict) -> list:
    return [tables[name] for name in ("readings", "upstream") if tables.get(name) is not None]


def _close_tables(tables: dict) -> None:
    for table in _long_tables(tables):
        table.close()


def close_opened() -> None:
    """Close the tables this process opened for a run, removing their spills (worker teardown)."""
    for tables in PlannedFiles._opened_here.values():
        _close_tables(tables)
    PlannedFiles._opened_here.clear()
