import numpy as np
import pandas as pd
import pytest

from gridwatch.days import daily_mean, daily_quantiles, day_grid, last_full_day


def _index(start, end, freq="1h"):
    return pd.date_range(start, end, freq=freq, inclusive="left", tz="UTC")


def test_dst_days_have_23_and_25_hours_in_london():
    spring = day_grid(_index("2026-03-28 00:00", "2026-03-31 00:00"), "UTC")
    assert list(spring.cells_per_day) == [24, 24, 24]
    # Local days of Europe/London: 29 March 2026 has 23 hours, 25 October 25.
    idx = pd.date_range("2026-03-28", "2026-03-31", freq="1h", inclusive="left",
                        tz="Europe/London").tz_convert("UTC")
    grid = day_grid(idx, "Europe/London")
    assert list(grid.cells_per_day) == [24, 23, 24]
    idx = pd.date_range("2026-10-24", "2026-10-27", freq="1h", inclusive="left",
                        tz="Europe/London").tz_convert("UTC")
    assert list(day_grid(idx, "Europe/London").cells_per_day) == [24, 25, 24]


def test_naive_grid_is_refused():
    with pytest.raises(ValueError, match="tz-aware"):
        day_grid(pd.date_range("2026-01-01", periods=24, freq="1h"), "UTC")


def test_daily_quantiles_and_mean_by_hand():
    grid = day_grid(_index("2026-01-01", "2026-01-03"), "UTC")
    day1 = np.arange(24, dtype=float)  # 0..23
    day2 = np.full(24, 2.0)
    day2[:20] = np.nan  # only 4 valid cells
    kw = np.concatenate([day1, day2])[:, None]
    (floor,) = daily_quantiles(kw, grid, [0.25], np.array([12, 12]))
    assert floor[0, 0] == 5.0  # lower interpolation: floor(0.25 * 23) = 5 -> value 5
    assert np.isnan(floor[1, 0])  # too few cells
    mean = daily_mean(kw, grid, np.array([12, 4]))
    assert mean[0, 0] == pytest.approx(11.5)
    assert mean[1, 0] == pytest.approx(2.0)


def test_last_full_day_is_the_same_whatever_the_order_of_the_readings():
    # Meter B ends a day later than A; B reads every 30 min.
    stamps = {"A": pd.date_range("2026-03-01", "2026-03-30 23:00", freq="1h", tz="UTC"),
              "B": pd.date_range("2026-03-02", "2026-03-31 23:30", freq="30min", tz="UTC")}
    readings = pd.concat([pd.DataFrame({"meter_id": m, "timestamp": t}) for m, t in stamps.items()],
                         ignore_index=True)
    readings["meter_id"] = readings["meter_id"].astype("category")
    interval = pd.Series({"A": 60, "B": 30})
    shuffled = readings.sample(frac=1, random_state=1)  # not grouped: the general path
    as_of = {str(last_full_day(r, interval, "UTC")) for r in (readings, shuffled)}
    assert as_of == {"2026-03-31"}
    one_late_row = readings.drop(index=readings.index[-1])  # B's last half hour is missing
    assert str(last_full_day(one_late_row, interval, "UTC")) == "2026-03-30"


def _meters_ending(ends, interval="1h"):
    """Hourly readings of one day up to each meter's end (exclusive), one meter per end."""
    frames = [pd.DataFrame({"meter_id": f"M{i}", "timestamp": pd.date_range(
        pd.Timestamp(end, tz="UTC") - pd.Timedelta(days=2), pd.Timestamp(end, tz="UTC"),
        freq=interval, inclusive="left")}) for i, end in enumerate(ends)]
    readings = pd.concat(frames, ignore_index=True)
    readings["meter_id"] = readings["meter_id"].astype("category")
    return readings, pd.Series(60, index=[f"M{i}" for i in range(len(ends))])


def test_a_few_meters_with_clocks_ahead_do_not_move_the_default_as_of():
    # Issue 14 item 8: one reading in 2099 moved the as-of to 2098-12-31 and refused the night.
    ends = ["2026-04-01"] * 7 + ["2026-08-01", "2099-01-02"]
    readings, interval = _meters_ending(ends)
    assert str(last_full_day(readings, interval, "UTC")) == "2026-03-31"


def test_the_default_as_of_is_the_latest_day_half_the_meters_reach():
    from gridwatch.days import add_day_counts, default_as_of, meters_by_last_day

    readings, interval = _meters_ending(["2026-03-30", "2026-03-31", "2026-04-01", "2026-04-01"])
    counts = meters_by_last_day(readings, interval, "UTC")
    assert counts.to_dict() == {pd.Timestamp("2026-03-29"): 1, pd.Timestamp("2026-03-30"): 1,
                                pd.Timestamp("2026-03-31"): 2}
    assert str(default_as_of(counts)) == "2026-03-31"  # 2 of 4 reach it
    assert str(default_as_of(counts, share=0.75)) == "2026-03-30"
    # Partitions' counts add up to the whole's, so every engine picks the same day.
    halves = [meters_by_last_day(readings[readings["meter_id"].isin(ids)], interval, "UTC")
              for ids in (["M0", "M2"], ["M1", "M3"])]
    assert add_day_counts(halves).equals(counts)
    with pytest.raises(Exception, match="no usable readings"):
        default_as_of(add_day_counts([]))
