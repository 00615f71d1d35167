"""Readers of the contract tables (gridwatch.sources.files) and read_dataset."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gridwatch.config import DataConfig
from gridwatch.errors import InputError
from gridwatch.sources import read_dataset
from gridwatch.sources.files import (
    find_table,
    read_meters,
    read_readings,
    read_upstream,
    read_weather,
)

DATA = Path(__file__).parent / "data"


def utc(*stamps):
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True)).as_unit("us")


def write_csv(path, text):
    path.write_text(text.strip() + "\n")
    return path


def rows_in_file(path):
    return len(pd.read_csv(path))


def assert_rows_accounted(rows_in, frame, log, table):
    """Rows in = rows out + rows of the table's 'dropped' issues."""
    kept = 0 if frame is None else len(frame)
    assert rows_in == kept + log.total(action="dropped", table=table)


# --- find_table -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["readings.csv", "readings.csv.gz", "readings.parquet"])
def test_find_table_finds_each_format(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert find_table(tmp_path, "readings") == tmp_path / name


def test_find_table_absent_is_none(tmp_path):
    assert find_table(tmp_path, "weather") is None


def test_find_table_refuses_csv_and_parquet_together(tmp_path):
    (tmp_path / "readings.csv").write_bytes(b"")
    (tmp_path / "readings.parquet").write_bytes(b"")
    with pytest.raises(InputError, match=r"both readings.csv and readings.parquet.*keep one"):
        find_table(tmp_path, "readings")


# --- refusals ---------------------------------------------------------------------------------
def test_missing_required_column_names_column_and_file():
    with pytest.raises(InputError, match=r"readings_missing_kwh.csv.*missing required column "
                                         r"'kwh' \(found: meter_id, timestamp, energy\)"):
        read_readings(DATA / "readings_missing_kwh.csv")


def test_missing_column_hints_at_separator(tmp_path):
    path = write_csv(tmp_path / "readings.csv", "meter_id;timestamp;kwh\nM1;2024-01-01;1")
    with pytest.raises(InputError, match="does not look comma-separated"):
        read_readings(path)


def test_missing_column_hints_at_near_miss(tmp_path):
    path = write_csv(tmp_path / "readings.csv", "meter_id,Timestamp,kwh\nM1,2024-01-01,1")
    with pytest.raises(InputError, match="rename column 'Timestamp' to 'timestamp'"):
        read_readings(path)


def test_unparseable_timestamps_name_first_bad_row():
    with pytest.raises(InputError, match=r"3 of 5 timestamps.*'01/01/2024 02:00' in data row 3") \
            as info:
        read_readings(DATA / "readings_bad_timestamps.csv")
    assert info.value.row == 3
    assert "ISO 8601" in str(info.value)


def test_few_bad_timestamps_are_dropped_and_counted(tmp_path):
    good = "\n".join(f"M1,2024-01-01 {h:02d}:00,1" for h in range(20))
    path = write_csv(tmp_path / "readings.csv",
                     f"meter_id,timestamp,kwh\n{good}\nM1,yesterday,1\nM2,,1")
    frame, log = read_readings(path)
    assert len(frame) == 20
    issues = log.to_frame().set_index(["code", "meter_id"])["count"]
    assert issues[("readings.bad_timestamp", "M1")] == 1
    assert issues[("readings.bad_timestamp", "M2")] == 1
    assert_rows_accounted(22, frame, log, "readings")


@pytest.mark.parametrize("reader", [read_readings, read_meters], ids=["readings", "meters"])
def test_empty_required_table_is_refused(tmp_path, reader):
    with pytest.raises(InputError, match="has no rows"):
        reader(DATA / "readings_empty.csv")


@pytest.mark.parametrize("reader", [read_upstream, read_weather], ids=["upstream", "weather"])
def test_empty_optional_table_is_absent(tmp_path, reader):
    table = reader.__name__.removeprefix("read_")
    header = {"upstream": "asset_id,timestamp,kwh", "weather": "region,timestamp,temperature_c"}
    path = write_csv(tmp_path / f"{table}.csv", header[table])
    frame, log = reader(path)
    assert frame is None
    assert log.codes() == {f"{table}.empty"}
    assert log.to_frame()["action"].tolist() == ["kept"]


def test_kwh_wholly_non_numeric_is_refused():
    with pytest.raises(InputError,
                       match=r"'kwh' holds no number \(first value '0,1' in data row 1"):
        read_readings(DATA / "readings_kwh_text.csv")


def test_some_non_numeric_kwh_set_missing(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh
M1,2024-01-01 00:00,0.5
M1,2024-01-01 01:00,E-ERR
M1,2024-01-01 02:00,
""")
    frame, log = read_readings(path)
    assert frame["kwh"].isna().tolist() == [False, True, True]
    # the empty cell is plainly missing, not non-numeric
    assert log.total("readings.non_numeric_kwh", action="set_missing") == 1
    assert_rows_accounted(3, frame, log, "readings")


def test_not_csv_or_parquet_is_refused(tmp_path):
    path = tmp_path / "readings.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="not a CSV or Parquet file"):
        read_readings(path)


def test_corrupt_parquet_is_refused():
    with pytest.raises(InputError, match=r"readings_corrupt.parquet: cannot read the file"):
        read_readings(DATA / "readings_corrupt.parquet")


def test_malformed_csv_rows_are_dropped_and_counted(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh
M1,2024-01-01 00:00,0.5
M1,2024-01-01 01:00,0.5,extra
M1,2024-01-01 02:00,0.5
""")
    frame, log = read_readings(path)
    assert len(frame) == 2
    assert log.total("readings.malformed_row", action="dropped") == 1


# --- canonical frames -------------------------------------------------------------------------
def test_readings_canonical_dtypes_and_extra_columns_ignored(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
kvarh,kwh,timestamp,meter_id,note
0.1,1.5,2024-01-01T00:00:00Z,007,x
0.1,2.5,2024-01-01T01:00:00Z, M2 ,y
""")
    frame, log = read_readings(path)
    assert list(frame.columns) == ["meter_id", "timestamp", "kwh"]
    assert isinstance(frame["meter_id"].dtype, pd.CategoricalDtype)
    assert list(frame["meter_id"].cat.categories) == ["007", "M2"]  # ids stay strings, stripped
    assert frame["timestamp"].dtype == pd.DatetimeTZDtype("us", "UTC")
    assert frame["kwh"].dtype == np.float64
    assert len(log) == 0


def test_the_export_register_is_read_with_empty_meaning_none(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh,kwh_export
M1,2024-06-01T12:00:00Z,0.0,1.25
M1,2024-06-01T13:00:00Z,0.1,
M2,2024-06-01T12:00:00Z,0.4,E-ERR
""")
    frame, log = read_readings(path)
    assert list(frame.columns) == ["meter_id", "timestamp", "kwh", "kwh_export"]
    assert frame["kwh_export"].tolist()[0] == 1.25
    assert frame["kwh_export"].isna().tolist() == [False, True, True]
    assert log.total("readings.non_numeric_kwh_export", action="set_missing") == 1
    dq = log.to_frame()
    assert dq.loc[dq["code"] == "readings.non_numeric_kwh_export", "meter_id"].tolist() == ["M2"]


def test_explicit_offsets_win_over_timezone(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh
M1,2024-07-01T12:00:00+05:00,1
M1,2024-07-01 12:00Z,1
M1,2024-07-01 12:00,1
M1,2024-07-01T13:00:00,1
M1,2024-07-01 12:30-03:30,1
""")
    frame, _ = read_readings(path, timezone="Europe/London")
    expected = utc("2024-07-01 07:00", "2024-07-01 12:00", "2024-07-01 11:00",
                   "2024-07-01 12:00", "2024-07-01 16:00")
    assert pd.DatetimeIndex(frame["timestamp"]).equals(expected)


def test_london_repeated_hour_gives_four_distinct_instants():
    # 30-min meter; 01:00 and 01:30 local appear twice on 2024-10-27 (BST -> GMT)
    frame, log = read_readings(DATA / "readings_london_dst.csv", timezone="Europe/London")
    october = frame[frame["timestamp"] >= "2024-10-01"]
    expected = utc("2024-10-26 23:00", "2024-10-26 23:30", "2024-10-27 00:00",
                   "2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 01:30",
                   "2024-10-27 02:00")
    assert pd.DatetimeIndex(october["timestamp"]).equals(expected)
    issue = log.to_frame().set_index("code").loc["readings.dst_ambiguous"]
    assert (issue["count"], issue["action"], issue["severity"]) == (4, "resolved", "info")


def test_london_skipped_hour():
    frame, log = read_readings(DATA / "readings_london_dst.csv", timezone="Europe/London")
    march = frame[(frame["timestamp"] < "2024-10-01") & (frame["meter_id"] == "M1")]
    # 00:00, 00:30 GMT then 02:00, 02:30 BST: contiguous in UTC, no gap
    expected = utc("2024-03-31 00:00", "2024-03-31 00:30", "2024-03-31 01:00",
                   "2024-03-31 01:30")
    assert pd.DatetimeIndex(march["timestamp"]).equals(expected)
    # 01:30 local does not exist: shifted forward to 02:00 BST = 01:00 UTC, and counted
    m2 = frame[frame["meter_id"] == "M2"]
    assert pd.DatetimeIndex(m2["timestamp"]).equals(utc("2024-03-31 01:00"))
    counted = log.to_frame().set_index(["code", "meter_id"])["count"]
    assert counted[("readings.dst_nonexistent", "M2")] == 1
    assert ("readings.dst_nonexistent", "M1") not in counted.index


def test_repeated_hour_is_resolved_per_meter(tmp_path):
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh
A,2024-10-27 01:00,1
B,2024-10-27 01:00,2
A,2024-10-27 01:00,3
B,2024-10-27 01:00,4
""")
    frame, _ = read_readings(path, timezone="Europe/London")
    assert pd.DatetimeIndex(frame["timestamp"]).equals(
        utc("2024-10-27 00:00", "2024-10-27 00:00", "2024-10-27 01:00", "2024-10-27 01:00"))


def test_parquet_timestamp_types(tmp_path):
    local = pd.DatetimeIndex(["2024-07-01 12:00", "2024-07-01 13:00"]).as_unit("us")
    ids = pa.array(["M1", "M1"])
    kwh = pa.array([1.0, 2.0])
    aware = tmp_path / "aware.parquet"
    pq.write_table(pa.table({"meter_id": ids, "kwh": kwh, "timestamp": pa.array(
        local.tz_localize("Europe/Paris"))}), aware)
    naive = tmp_path / "naive.parquet"
    pq.write_table(pa.table({"meter_id": ids, "kwh": kwh, "timestamp": pa.array(local)}), naive)
    expected = utc("2024-07-01 10:00", "2024-07-01 11:00")
    frame, _ = read_readings(aware, timezone="Europe/London")  # the offset wins
    assert pd.DatetimeIndex(frame["timestamp"]).equals(expected)
    frame, _ = read_readings(naive, timezone="Europe/Paris")
    assert pd.DatetimeIndex(frame["timestamp"]).equals(expected)


def test_csv_and_parquet_give_identical_frames(tmp_path):
    text = """
meter_id,timestamp,kwh
B,2024-03-31 00:30,0.25
A,2024-03-31 00:00,0.5
A,2024-03-31 02:00,
B,2024-03-31 02:00,1.25
"""
    csv = write_csv(tmp_path / "readings.csv", text)
    gz = tmp_path / "readings.csv.gz"
    pd.read_csv(csv).to_csv(gz, index=False)
    source = pd.read_csv(csv, dtype={"meter_id": str})
    typed = tmp_path / "typed.parquet"
    source.assign(timestamp=pd.to_datetime(source["timestamp"])).to_parquet(typed)
    text_parquet = tmp_path / "text.parquet"
    source.to_parquet(text_parquet)
    frames = [read_readings(p, timezone="Europe/London")[0] for p in (csv, gz, typed, text_parquet)]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)
    assert pd.DatetimeIndex(frames[0]["timestamp"])[2] == pd.Timestamp("2024-03-31 01:00", tz="UTC")


def test_weather_frame(tmp_path):
    path = write_csv(tmp_path / "weather.csv", """
region,timestamp,temperature_c,source
north,2024-01-01 00:00,3.5,x
north,2024-01-01 01:00,oops,x
""")
    frame, log = read_weather(path)
    assert list(frame.columns) == ["region", "timestamp", "temperature_c"]
    assert frame["region"].dtype == "str"
    assert frame["temperature_c"].isna().tolist() == [False, True]
    assert log.total("weather.non_numeric_temperature_c") == 1


# --- meters -----------------------------------------------------------------------------------
def test_meters_repairs_are_counted():
    path = DATA / "meters_dirty.csv"
    frame, log = read_meters(path)
    assert frame["meter_id"].tolist() == ["007", "M2", "M3", "M4"]
    assert frame["meter_id"].dtype == "str"
    counted = log.to_frame().set_index(["code", "meter_id"])[["count", "action"]]
    assert counted.loc[("meters.missing_meter_id", "")].tolist() == [1, "dropped"]
    assert counted.loc[("meters.duplicate_row", "M3")].tolist() == [1, "dropped"]
    assert counted.loc[("meters.duplicate_meter_id", "M4")].tolist() == [1, "dropped"]
    assert counted.loc[("meters.unknown_customer_class", "M2")].tolist() == [1, "resolved"]
    assert counted.loc[("meters.invalid_tariff_per_kwh", "M2")].tolist() == [1, "set_missing"]
    assert counted.loc[("meters.invalid_contracted_kw", "M2")].tolist() == [1, "set_missing"]
    m4 = frame.set_index("meter_id").loc["M4"]
    assert (m4["transformer_id"], m4["contracted_kw"]) == ("T2", 50.0)  # first row kept
    assert frame["customer_class"].tolist() == ["residential", "other", "commercial", "industrial"]
    assert np.isnan(frame.set_index("meter_id").loc["M2", "tariff_per_kwh"])
    assert_rows_accounted(rows_in_file(path), frame, log, "meters")


def test_meters_has_every_contract_column_and_keeps_extras():
    frame, _ = read_meters(DATA / "meters_dirty.csv")
    assert list(frame.columns) == [
        "meter_id", "transformer_id", "feeder_id", "substation_id", "customer_class", "region",
        "tariff_per_kwh", "contracted_kw", "lat", "lon", "owner"]
    assert frame["feeder_id"].isna().all() and frame["feeder_id"].dtype == "str"
    assert frame["lat"].isna().all() and frame["lat"].dtype == np.float64


def test_meters_without_meter_id_column(tmp_path):
    path = write_csv(tmp_path / "meters.csv", "id,region\nM1,north")
    with pytest.raises(InputError,
                       match=r"missing required column 'meter_id' \(found: id, region\)"):
        read_meters(path)


# --- read_dataset -----------------------------------------------------------------------------
def test_read_dataset_missing_directory(tmp_path):
    with pytest.raises(InputError, match="input directory not found"):
        read_dataset(tmp_path / "nope", data_config=DataConfig())


def test_read_dataset_missing_readings_names_expected_files(tmp_path):
    write_csv(tmp_path / "meters.csv", "meter_id\nM1")
    with pytest.raises(InputError, match=r"no readings table.*readings.csv, readings.csv.gz, "
                                         r"readings.parquet"):
        read_dataset(tmp_path, data_config=DataConfig())


def test_read_dataset_small():
    folder = DATA / "dataset_small"
    data = read_dataset(folder, data_config=DataConfig(timezone="Europe/London"))
    issues = data.issues.to_frame()
    # every table's rows are accounted for
    for table in ("meters", "readings", "upstream", "weather"):
        counts = data.row_counts[table]
        assert counts["in"] == rows_in_file(next(folder.glob(f"{table}.*")))
        assert counts["in"] == counts["used"] + data.issues.total(action="dropped", table=table)
    # M3 has no readings at all; M4's readings are all negative, hence missing
    no_readings = issues[issues["code"] == "meters.no_readings"]
    assert sorted(no_readings["meter_id"]) == ["M3", "M4"]
    assert set(no_readings["action"]) == {"excluded"}
    assert data.interval_minutes.to_dict() == {"M1": 60, "M2": 30, "M4": 60}
    assert data.upstream_interval_minutes.to_dict() == {"T1": 60}
    assert "upstream.asset_unknown" in data.issues.codes()
    assert "readings.unknown_meter" in data.issues.codes()
    assert data.weather["temperature_c"].notna().all()


# --- issue 14: input a nightly run must survive ------------------------------------------------
def test_missing_kwh_is_counted_per_meter(tmp_path):
    # Issue 14 item 10: empty and NaN kwh left no trace in data_quality.csv.
    path = write_csv(tmp_path / "readings.csv", """
meter_id,timestamp,kwh
M1,2024-01-01T00:00:00,1.0
M1,2024-01-01T01:00:00,
M1,2024-01-01T02:00:00,NaN
M1,2024-01-01T03:00:00,nan
M2,2024-01-01T00:00:00,abc
M2,2024-01-01T01:00:00,2.0
""")
    frame, log = read_readings(path)
    issues = log.to_frame().set_index(["code", "meter_id"])
    assert issues.loc[("readings.missing_kwh", "M1"), "count"] == 3
    assert issues.loc[("readings.missing_kwh", "M1"), "action"] == "kept"
    # A cell that is not a number is its own issue, not also a missing one.
    assert ("readings.missing_kwh", "M2") not in issues.index
    assert issues.loc[("readings.non_numeric_kwh", "M2"), "count"] == 1
    assert frame["kwh"].isna().sum() == 4  # missing stays NaN, never 0


@pytest.mark.parametrize("stamp", ["2024-01-01T05:00:00z", "2024-01-01T05:00:00Z",
                                   "2024-01-01 05:00z", "2024-01-01T05:00:00.000z"],
                         ids=["lower-z", "upper-z", "space-lower-z", "fraction-lower-z"])
def test_a_lower_case_z_offset_is_utc(tmp_path, stamp):
    # Issue 14 item 11: the reader's pattern took 'z' as an offset, the parser refused it.
    path = write_csv(tmp_path / "readings.csv", f"meter_id,timestamp,kwh\nM1,{stamp},1.0\n")
    frame, log = read_readings(path, timezone="Europe/Paris")
    assert list(frame["timestamp"]) == list(utc("2024-01-01T05:00:00Z"))
    assert log.total("readings.bad_timestamp") == 0


def test_a_line_longer_than_a_block_is_read(tmp_path):
    # Issue 14 item 12: pyarrow's 1 MiB blocks lost the whole file to one 2 MiB line.
    rows = "".join(f"M1,2024-01-01T{h:02d}:00:00,1.0\n" for h in range(24))
    long_note = "x" * (2 << 20)
    path = tmp_path / "readings.csv"
    path.write_text(f"meter_id,timestamp,kwh,note\n{rows}M2,2024-01-01T00:00:00,2.0,{long_note}\n"
                    .replace("1.0\n", "1.0,\n"))
    frame, log = read_readings(path)
    assert len(frame) == 25 and frame["kwh"].sum() == 26.0
    assert log.total(action="dropped") == 0


def test_longest_line_bytes_across_chunks(tmp_path, monkeypatch):
    from gridwatch.sources import files

    monkeypatch.setattr(files, "_SCAN_BYTES", 7)  # lines straddle the scan's chunks
    path = tmp_path / "t.csv"
    path.write_bytes(b"ab\n" + b"c" * 20 + b"\nd\n" + b"e" * 9)
    assert files.longest_line_bytes(path) == (21, len(path.read_bytes()))


def test_an_oversized_row_of_a_truncated_file_is_refused_with_the_file_named(tmp_path):
    # A quote never closed: no block size helps; the file is named, not an internal error.
    path = tmp_path / "readings.csv"
    path.write_text('meter_id,timestamp,kwh\nM1,2024-01-01T00:00:00,"1.0\n' + "z" * (3 << 20))
    with pytest.raises(InputError, match="readings.csv"):
        read_readings(path)


def _latin1_dataset(tmp_path):
    (tmp_path / "meters.csv").write_bytes(
        "meter_id,region\nMé1,Nord-Pas-de-Calais\nM2,Île-de-France\n".encode("latin-1"))
    rows = [f"{m},2024-01-01T{h:02d}:00:00,1.0\n" for m in ("Mé1", "M2") for h in range(24)]
    (tmp_path / "readings.csv").write_bytes(
        ("meter_id,timestamp,kwh\n" + "".join(rows)).encode("latin-1"))
    return tmp_path


def test_latin1_ids_are_read_and_counted(tmp_path):
    # Issue 14 item 13: Latin-1 ids gave exit 1 with an empty message.
    path = _latin1_dataset(tmp_path)
    readings, log = read_readings(path / "readings.csv")
    assert list(readings["meter_id"].cat.categories) == ["M2", "Mé1"]
    issues = log.to_frame().set_index(["code", "meter_id"])
    assert issues.loc[("readings.latin1_text", "Mé1"), "count"] == 24
    assert "readings.csv" in issues.loc[("readings.latin1_text", "Mé1"), "detail"]
    assert ("readings.latin1_text", "M2") not in issues.index
    meters, log = read_meters(path / "meters.csv")
    assert list(meters["region"]) == ["Nord-Pas-de-Calais", "Île-de-France"]
    assert dict(log.to_frame().set_index("meter_id")["count"]) == {"Mé1": 1, "M2": 1}


def test_utf8_and_latin1_values_in_one_file_are_each_read_right(tmp_path):
    path = tmp_path / "readings.csv"
    path.write_bytes(b"meter_id,timestamp,kwh\n" + "Mé1,2024-01-01T00:00:00,1\n".encode()
                     + "Mè2,2024-01-01T00:00:00,1\n".encode("latin-1"))
    frame, log = read_readings(path)
    assert list(frame["meter_id"].astype(str)) == ["Mé1", "Mè2"]
    assert log.total("readings.latin1_text") == 1


def test_partitioned_reads_decode_latin1_as_the_full_read(tmp_path):
    from gridwatch.sources.partitioned import UNPLANNED, open_partitioned

    path = _latin1_dataset(tmp_path) / "readings.csv"
    whole, whole_log = read_readings(path)
    plan = pd.Series({"Mé1": 0, "M2": 1})
    with open_partitioned(path, plan, table="readings", id_column="meter_id") as table:
        parts = [table.read(key) for key in table.keys]
    assert sorted(parts[0][0]["meter_id"].astype(str).unique()) == ["Mé1"]
    assert parts[table.keys.index(UNPLANNED)][0] is None
    total = sum(log.total("readings.latin1_text") for _, log, _ in parts)
    assert total == whole_log.total("readings.latin1_text") == 24
    assert sum(len(f) for f, _, _ in parts if f is not None) == len(whole)


def test_partitioned_reads_grow_the_block_for_a_long_line(tmp_path, monkeypatch):
    from gridwatch.sources import partitioned

    monkeypatch.setattr(partitioned, "CSV_BLOCK_BYTES", 1 << 16)  # a 64 KiB block, a 1 MiB line
    rows = "".join(f"M{m},2024-01-01T{h:02d}:00:00,1.0,\n" for m in (1, 2) for h in range(24))
    path = tmp_path / "readings.csv"
    path.write_text(f"meter_id,timestamp,kwh,note\n{rows}M2,2024-01-02T00:00:00,2.0,"
                    + "x" * (1 << 20) + "\n")
    whole, _ = read_readings(path)
    with partitioned.open_partitioned(path, pd.Series({"M1": 0, "M2": 1}), table="readings",
                                      id_column="meter_id") as table:
        parts = [table.read(key)[0] for key in table.keys]
    assert sum(len(p) for p in parts if p is not None) == len(whole) == 49
