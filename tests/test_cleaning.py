"""Cleaning rules (gridwatch.cleaning): one test per rule, plus row accounting."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.cleaning import clean_readings, clean_weather

PARAMS = {"max_plausible_kw": 100.0, "contracted_kw_factor": 10.0, "spike_factor": 20.0}


def make_readings(rows, id_column="meter_id"):
    """Canonical frame from (id, timestamp, kwh) tuples, in the given (file) order."""
    frame = pd.DataFrame(rows, columns=[id_column, "timestamp", "kwh"])
    frame[id_column] = pd.Categorical(frame[id_column])
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["timestamp"] = stamps.dt.as_unit("us")
    frame["kwh"] = frame["kwh"].astype("float64")
    return frame


def regular(meter, start, values, minutes=60):
    stamps = pd.date_range(start, periods=len(values), freq=f"{minutes}min", tz="UTC")
    return [(meter, stamp, value) for stamp, value in zip(stamps, values, strict=True)]


def make_meters(*ids, contracted_kw=np.nan, **extra):
    return pd.DataFrame({"meter_id": pd.Series(ids, dtype="str"), "contracted_kw": contracted_kw,
                         **extra})


def clean(frame, meters, **kwargs):
    return clean_readings(frame, meters, **{**PARAMS, **kwargs})


def counts(log):
    """{(code, meter_id): count}."""
    frame = log.to_frame()
    keys = zip(frame["code"], frame["meter_id"], strict=True)
    return dict(zip(keys, frame["count"], strict=True))


def assert_rows_accounted(frame_in, frame_out, log, table="readings"):
    assert len(frame_in) == len(frame_out) + log.total(action="dropped", table=table)


def assert_canonical(frame, id_column="meter_id"):
    assert list(frame.columns) == [id_column, "timestamp", "kwh"]
    assert frame["timestamp"].dtype == pd.DatetimeTZDtype("us", "UTC")
    keys = pd.DataFrame({"id": frame[id_column].astype("str"), "t": frame["timestamp"]})
    assert not keys.duplicated().any()
    assert keys.equals(keys.sort_values(["id", "t"]))


def test_unknown_meter_rows_are_dropped():
    frame = make_readings(regular("A", "2024-01-01", [1, 1, 1])
                          + regular("Z", "2024-01-01", [1, 1]))
    out, _, log = clean(frame, make_meters("A"))
    assert set(out["meter_id"]) == {"A"}
    assert counts(log)[("readings.unknown_meter", "Z")] == 2
    assert log.to_frame().query("code == 'readings.unknown_meter'")["action"].item() == "dropped"
    assert_rows_accounted(frame, out, log)


def test_out_of_order_rows_are_sorted_and_counted():
    frame = make_readings([("A", "2024-01-01 00:00", 1), ("A", "2024-01-01 02:00", 3),
                           ("A", "2024-01-01 01:00", 2), ("A", "2024-01-01 03:00", 4)])
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 2, 3, 4]
    assert counts(log) == {("readings.out_of_order", "A"): 1}
    assert_canonical(out)


def test_time_major_file_is_not_out_of_order():
    rows = [(m, stamp, 1.0) for stamp in pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
            for m in ("B", "A")]
    out, _, log = clean(make_readings(rows), make_meters("A", "B"))
    assert_canonical(out)
    assert len(out) == 10
    assert "readings.out_of_order" not in log.codes()


def test_shuffled_rows_give_the_sorted_result():
    rng = np.random.default_rng(7)
    rows = (regular("A", "2024-01-01", rng.random(50))
            + regular("B", "2024-01-01", rng.random(80), 15))
    frame = make_readings(rows)
    expected, intervals, _ = clean(frame, make_meters("A", "B"))
    shuffled = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    out, shuffled_intervals, log = clean(shuffled, make_meters("A", "B"))
    pd.testing.assert_frame_equal(out, expected)
    pd.testing.assert_series_equal(shuffled_intervals, intervals)
    assert log.total("readings.out_of_order") > 0


def test_a_few_late_rows_in_a_grouped_file_sort_like_a_full_sort():
    # The usual export: grouped by meter, a few rows re-sent late (some repeating a
    # timestamp with a correction). Only those meters are re-sorted; the result must
    # be a full stable sort of every row, the last row in file order winning.
    rng = np.random.default_rng(11)
    rows = [row for m in range(40) for row in regular(f"M{m:02d}", "2024-01-01", rng.random(48))]
    frame = make_readings(rows)
    for m in (3, 17, 39):  # move a block of each of these meters' rows later in its block
        block = np.flatnonzero(frame["meter_id"].astype(str) == f"M{m:02d}")
        moved = block[5:9]
        order = np.concatenate([block[:5], block[9:20], moved, block[20:]])
        frame.iloc[block] = frame.iloc[order].to_numpy()
    resent = frame.iloc[[100, 700]].assign(kwh=[5.0, 6.0])  # corrections, late in the file
    frame = pd.concat([frame.iloc[:1000], resent, frame.iloc[1000:]], ignore_index=True)
    frame["meter_id"] = pd.Categorical(frame["meter_id"].astype(str))
    out, _, log = clean(frame, make_meters(*[f"M{m:02d}" for m in range(40)]))
    expected = (frame.assign(meter_id=frame["meter_id"].astype(str))
                .sort_values(["meter_id", "timestamp"], kind="stable")
                .drop_duplicates(["meter_id", "timestamp"], keep="last"))
    assert out["meter_id"].astype(str).tolist() == expected["meter_id"].tolist()
    assert out["timestamp"].tolist() == expected["timestamp"].tolist()
    np.testing.assert_array_equal(out["kwh"].to_numpy(), expected["kwh"].to_numpy())
    assert log.total("readings.out_of_order") > 0
    assert log.total("readings.conflicting_duplicate") == 2


def test_identical_duplicates_are_dropped():
    rows = regular("A", "2024-01-01", [1, 2, 3])
    frame = make_readings([*rows[:2], rows[1], rows[2]])
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 2, 3]
    assert counts(log) == {("readings.duplicate_row", "A"): 1}
    assert_rows_accounted(frame, out, log)


def test_conflicting_duplicates_keep_the_last_row():
    frame = make_readings(regular("A", "2024-01-01", [1, 2, 3]) + [
        ("A", "2024-01-01 01:00", 9), ("A", "2024-01-01 02:00", 3), ("A", "2024-01-01 02:00", 7)])
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 9, 7]  # the last row in file order wins
    found = counts(log)
    # 01:00: 2 dropped (differs from the kept 9); 02:00: 3, 3 dropped (differ from the kept 7)
    assert found[("readings.conflicting_duplicate", "A")] == 3
    assert ("readings.duplicate_row", "A") not in found
    assert found[("readings.out_of_order", "A")] == 1  # the re-sent 01:00 came after 02:00
    issue = log.to_frame().query("code == 'readings.conflicting_duplicate'")
    assert issue["action"].item() == "dropped"
    assert_rows_accounted(frame, out, log)


def test_duplicate_equal_to_kept_value_is_identical_even_among_conflicts():
    frame = make_readings(regular("A", "2024-01-01", [1, 2]) + [
        ("A", "2024-01-01 01:00", 5), ("A", "2024-01-01 01:00", 2)])
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 2]
    assert counts(log) == {("readings.duplicate_row", "A"): 1,
                           ("readings.conflicting_duplicate", "A"): 1}


@pytest.mark.parametrize("minutes", [5, 10, 15, 30, 60])
def test_interval_is_inferred(minutes):
    values = [1.0] * 40
    frame = make_readings(regular("A", "2024-01-01", values, minutes))
    frame = frame.drop(index=[5, 6, 20])  # gaps do not change the most common step
    _, intervals, log = clean(frame, make_meters("A"))
    assert intervals.to_dict() == {"A": minutes}
    assert intervals.dtype == np.int64 and intervals.index.name == "meter_id"
    assert counts(log) == {("readings.gap", "A"): 3}


def test_interval_mode_without_majority():
    # steps 15, 15, 45, 45... : 15 is the most common step but no majority
    stamps = ["00:00", "00:15", "00:30", "01:15", "02:00", "02:15", "03:00"]
    frame = make_readings([("A", f"2024-01-01 {s}", 1) for s in stamps])
    _, intervals, _ = clean(frame, make_meters("A"))
    assert intervals.to_dict() == {"A": 15}


def test_jittered_steps_snap_to_the_interval():
    # steps of 16 and 14 min: within 10 % of 15 min
    stamps = ["00:00", "00:16", "00:30", "00:46", "01:00", "01:16", "01:30"]
    frame = make_readings([("A", f"2024-01-01 {s}", 1) for s in stamps])
    out, intervals, log = clean(frame, make_meters("A"))
    assert intervals.to_dict() == {"A": 15}
    assert counts(log) == {("readings.misaligned_timestamp", "A"): 3}
    assert (pd.DatetimeIndex(out["timestamp"]).minute % 15 == 0).all()


def test_unsupported_interval_drops_the_meter():
    frame = make_readings(regular("A", "2024-01-01", [1] * 10, minutes=7)
                          + regular("B", "2024-01-01", [1] * 3) + [("C", "2024-01-01", 1)])
    out, intervals, log = clean(frame, make_meters("A", "B", "C"))
    assert set(out["meter_id"]) == {"B"}
    assert intervals.to_dict() == {"B": 60}
    issues = log.to_frame().query("code == 'readings.unsupported_interval'").set_index("meter_id")
    assert issues.loc["A", "count"] == 10 and issues.loc["C", "count"] == 1
    assert set(issues["severity"]) == {"error"} and set(issues["action"]) == {"dropped"}
    assert "most common step is 7 min" in issues.loc["A", "detail"]
    assert "fewer than two distinct timestamps" in issues.loc["C", "detail"]
    assert_rows_accounted(frame, out, log)


def test_misaligned_timestamps_are_floored():
    stamps = ["00:00", "00:15", "00:31", "00:45", "01:00:20"]
    frame = make_readings([("A", f"2024-01-01 {s}", 1) for s in stamps])
    out, _, log = clean(frame, make_meters("A"))
    expected = pd.date_range("2024-01-01", periods=5, freq="15min", tz="UTC")
    assert pd.DatetimeIndex(out["timestamp"]).equals(expected.as_unit("us"))
    assert counts(log) == {("readings.misaligned_timestamp", "A"): 2}


def test_floored_collision_keeps_the_later_original_timestamp():
    stamps = [("00:00", 1), ("00:15", 1), ("00:30", 2), ("00:32", 3), ("00:45", 1)]
    frame = make_readings([("A", f"2024-01-01 {s}", v) for s, v in stamps])
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 1, 3, 1]
    assert counts(log) == {("readings.misaligned_timestamp", "A"): 1,
                           ("readings.conflicting_duplicate", "A"): 1}
    assert_rows_accounted(frame, out, log)


def test_meter_on_half_hour_phase_is_not_misaligned():
    # an hourly meter whose local hours start at :30 UTC (India, UTC+05:30)
    frame = make_readings(regular("A", "2024-01-01 00:30", [1] * 24))
    out, intervals, log = clean(frame, make_meters("A"))
    assert intervals.to_dict() == {"A": 60}
    assert len(log) == 0
    assert (pd.DatetimeIndex(out["timestamp"]).minute == 30).all()


def test_negative_kwh_set_missing():
    frame = make_readings(regular("A", "2024-01-01", [1, -0.5, 2]))
    out, _, log = clean(frame, make_meters("A"))
    assert out["kwh"].isna().tolist() == [False, True, False]
    issue = log.to_frame().query("code == 'readings.negative_kwh'")
    assert (issue["count"].item(), issue["action"].item()) == (1, "set_missing")
    assert_rows_accounted(frame, out, log)


def test_implausible_demand_set_missing():
    # max_plausible_kw = 100: 150 kWh in an hour is 150 kW; 30 kWh in 15 min is 120 kW
    hourly = regular("A", "2024-01-01", [1, 150, 99])
    quarter = regular("B", "2024-01-01", [1, 30, 24, 1], minutes=15)
    # contracted 5 kW x factor 10 = 50 kW cap for C
    capped = regular("C", "2024-01-01", [1, 60, 45])
    frame = make_readings(hourly + quarter + capped)
    meters = make_meters("A", "B", "C", contracted_kw=[np.nan, np.nan, 5.0])
    out, _, log = clean(frame, meters)
    kwh = out.groupby("meter_id", observed=True)["kwh"].apply(list)
    assert np.isnan(kwh["A"][1]) and kwh["A"][2] == 99
    assert np.isnan(kwh["B"][1]) and kwh["B"][2] == 24
    assert np.isnan(kwh["C"][1]) and kwh["C"][2] == 45
    found = counts(log)
    assert [found[("readings.implausible_kwh", m)] for m in "ABC"] == [1, 1, 1]


def test_spike_set_missing():
    base = [1.0] * 200
    spiky = regular("A", "2024-01-01", [*base, 50.0])  # 50 > 20 x p99 (= 1.0)
    moderate = regular("B", "2024-01-01", [*base, 15.0])  # 15 < 20 x 1.0
    tiny = regular("C", "2024-01-01", [0.01] * 200 + [0.9])  # 90 x p99 but below 1 kW
    out, _, log = clean(make_readings(spiky + moderate + tiny), make_meters("A", "B", "C"))
    assert counts(log) == {("readings.spike", "A"): 1}
    assert out["kwh"].isna().sum() == 1
    assert np.isnan(out.loc[out["meter_id"] == "A", "kwh"].iloc[-1])


def test_spike_uses_demand_not_energy():
    # a 15-min meter: 200 readings of 0.25 kWh (1 kW) and one of 6 kWh (24 kW > 20 x 1 kW)
    frame = make_readings(regular("A", "2024-01-01", [0.25] * 200 + [6.0], minutes=15))
    _, _, log = clean(frame, make_meters("A"))
    assert counts(log) == {("readings.spike", "A"): 1}


def test_spikes_match_a_brute_force_percentile():
    # the cleaner skips meters that cannot have a spike; that shortcut must be exact
    rng = np.random.default_rng(5)
    rows = []
    for i in range(40):
        kwh = rng.gamma(0.5 + i / 10, 0.5, 300)
        hits = rng.choice(300, size=i % 6, replace=False)
        kwh[hits] *= rng.choice([5.0, 30.0, 200.0], size=len(hits))
        rows += regular(f"M{i:02d}", "2024-01-01", kwh)
    frame = make_readings(rows)
    _, _, log = clean(frame, make_meters(*frame["meter_id"].cat.categories),
                      max_plausible_kw=np.inf, spike_factor=20.0)
    p99 = frame.groupby("meter_id", observed=True)["kwh"].transform("quantile", 0.99)
    spike = (frame["kwh"] > 20.0 * p99) & (frame["kwh"] > 1.0)
    expected = spike.groupby(frame["meter_id"], observed=True).sum()
    found = log.to_frame().query("code == 'readings.spike'").set_index("meter_id")["count"]
    assert expected.sum() > 0
    pd.testing.assert_series_equal(found.reindex(expected.index, fill_value=0), expected,
                                   check_names=False, check_index_type=False)


def test_gaps_are_counted_not_filled():
    frame = make_readings(regular("A", "2024-01-01", [1, 2, 3, 4, 5, 6])).drop(index=[2, 3, 4])
    out, _, log = clean(frame, make_meters("A"))
    assert len(out) == 3
    issue = log.to_frame().query("code == 'readings.gap'")
    assert (issue["count"].item(), issue["action"].item(), issue["severity"].item()) == (
        3, "kept", "info")


def test_upstream_assets_known_from_topology():
    meters = make_meters("M1", "M2", transformer_id=["T1", "T2"], feeder_id=["F1", "F1"],
                         substation_id=["S1", pd.NA])
    frame = make_readings(regular("T1", "2024-01-01", [900, 800, 700])
                          + regular("F1", "2024-01-01", [1e4] * 3, 15)
                          + regular("S1", "2024-01-01", [5e4] * 3)
                          + regular("T9", "2024-01-01", [1, 1]), id_column="asset_id")
    out, intervals, log = clean(frame, meters, id_column="asset_id", table="upstream",
                                max_plausible_kw=np.inf)
    assert intervals.to_dict() == {"F1": 15, "S1": 60, "T1": 60}
    assert out["kwh"].notna().all()
    assert counts(log) == {("upstream.asset_unknown", "T9"): 2}
    assert set(log.to_frame()["table"]) == {"upstream"}
    assert_canonical(out, "asset_id")
    assert_rows_accounted(frame, out, log, table="upstream")


def test_string_ids_are_accepted():
    frame = make_readings(regular("A", "2024-01-01", [1, 2]))
    frame["meter_id"] = frame["meter_id"].astype("str")
    out, intervals, _ = clean(frame, make_meters("A"))
    assert out["kwh"].tolist() == [1, 2] and intervals.to_dict() == {"A": 60}


def test_naive_timestamps_are_refused():
    frame = make_readings(regular("A", "2024-01-01", [1, 2]))
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="readings: column 'timestamp' must be tz-aware"):
        clean(frame, make_meters("A"))


def test_row_accounting_on_messy_input():
    rng = np.random.default_rng(3)
    rows = (regular("A", "2024-01-01", rng.random(48))
            + regular("B", "2024-01-01", rng.random(96), 30)
            + regular("C", "2024-01-01", rng.random(20), 7)
            + regular("Z", "2024-01-01", rng.random(5)))
    frame = make_readings(rows)
    messy = pd.concat([frame, frame.sample(20, random_state=1)]).sample(frac=1, random_state=2)
    messy.loc[messy.index[:5], "kwh"] = -1.0
    out, _, log = clean(messy.reset_index(drop=True), make_meters("A", "B", "C"))
    assert_canonical(out)
    assert_rows_accounted(messy, out, log)
    per_meter = log.to_frame().groupby(["code", "meter_id"]).size()
    assert (per_meter == 1).all()  # one row per meter per code


# --- weather ------------------------------------------------------------------------------------
def test_clean_weather_averages_duplicates_and_screens_range():
    weather = pd.DataFrame({
        "region": ["north", "north", "north", "south", "south"],
        "timestamp": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 00:00", "2024-01-01 00:00",
                                     "2024-01-01 00:00", "2024-01-01 01:00"], utc=True),
        "temperature_c": [4.0, 2.0, 3.0, 85.0, -5.0],
    })
    out, log = clean_weather(weather)
    assert out["region"].tolist() == ["north", "north", "south", "south"]
    assert out["temperature_c"].tolist()[:2] == [2.5, 4.0]
    assert np.isnan(out["temperature_c"].iloc[2])
    assert counts(log) == {("weather.implausible_temperature_c", "south"): 1,
                           ("weather.duplicate_timestamp", "north"): 1}
    assert_rows_accounted(weather, out, log, table="weather")


def test_the_export_register_follows_its_row_and_negative_export_is_set_missing():
    frame = make_readings([
        ("M1", "2024-01-01T01:00Z", 0.2),
        ("M1", "2024-01-01T00:00Z", 0.1),  # out of order
        ("M1", "2024-01-01T02:00Z", 0.3),
        ("M1", "2024-01-01T02:00Z", 0.35),  # a correction re-sent: the last row wins
    ])
    frame["kwh_export"] = [1.0, 0.0, 2.0, -0.5]
    out, _, log = clean(frame, make_meters("M1"))
    assert out["kwh"].tolist() == [0.1, 0.2, 0.35]
    assert out["kwh_export"].tolist()[:2] == [0.0, 1.0]  # each value stayed with its reading
    assert np.isnan(out["kwh_export"].iloc[2])
    assert counts(log)[("readings.negative_kwh_export", "M1")] == 1


def test_upstream_reverse_flow_is_kept_and_counted_not_set_missing():
    frame = make_readings(regular("T1", "2024-06-01T10:00Z", [2.0, -1.5, -0.5, 1.0]),
                          id_column="asset_id")
    meters = make_meters("M1", transformer_id="T1")
    out, _, log = clean(frame, meters, id_column="asset_id", table="upstream", signed=True)
    assert out["kwh"].tolist() == [2.0, -1.5, -0.5, 1.0]
    assert counts(log)[("upstream.reverse_flow", "T1")] == 2
    assert log.total(action="set_missing") == 0
    # a meter's import register is never negative: there it is an error, set missing
    meter_rows = make_readings(regular("M1", "2024-06-01T10:00Z", [0.2, -0.1]))
    out, _, log = clean(meter_rows, meters)
    assert np.isnan(out["kwh"].iloc[1]) and counts(log)[("readings.negative_kwh", "M1")] == 1


def test_readings_in_the_future_are_dropped_and_counted():
    # Issue 14 item 8: a meter clock in 2099 is a counted data-quality issue.
    rows = regular("M1", "2026-03-01", [1.0] * 24) + [("M1", "2099-01-01T00:00:00Z", 5.0)]
    rows += regular("M2", "2026-03-01", [1.0] * 24)
    now = pd.Timestamp("2026-03-02T12:00:00Z")
    clean, _, log = clean_readings(make_readings(rows), make_meters("M1", "M2"), **PARAMS,
                                   not_after=now)
    assert clean["timestamp"].max() < now
    issues = log.to_frame().set_index(["code", "meter_id"])
    assert issues.loc[("readings.future_timestamp", "M1"), "count"] == 1
    assert issues.loc[("readings.future_timestamp", "M1"), "action"] == "dropped"
    assert len(clean) == len(rows) - 1  # rows in = rows out + dropped
    assert log.total("readings.gap") == 0  # the 2099 row is not a 73-year gap


def test_no_future_check_without_a_time():
    rows = regular("M1", "2099-01-01", [1.0] * 3)
    clean, _, log = clean_readings(make_readings(rows), make_meters("M1"), **PARAMS)
    assert len(clean) == 3 and "readings.future_timestamp" not in log.codes()
    with pytest.raises(ValueError, match="tz-aware"):
        clean_readings(make_readings(rows), make_meters("M1"), **PARAMS,
                       not_after=pd.Timestamp("2026-01-01"))
