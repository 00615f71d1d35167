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
