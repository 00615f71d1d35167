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
