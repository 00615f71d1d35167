"""Where the sun is, and which meters are behind rooftop PV."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.solar import dark_cells, floor_cells, pv_meters, solar_elevation_sin


def test_sun_is_high_at_noon_in_summer_and_down_at_midnight():
    assert solar_elevation_sin(52.0, 172, 12.0) > np.sin(np.deg2rad(60))  # 90 - 52 + 23.45
    assert solar_elevation_sin(52.0, 172, 0.0) < 0
    # the array form follows numpy broadcasting
    out = solar_elevation_sin(np.array([0.0, 52.0]), 80, np.array([[12.0], [0.0]]))
    assert out.shape == (2, 2) and (out[0] > 0).all() and (out[1] < 0).all()


def test_dark_cells_are_the_night_at_the_sites_longitude():
    index = pd.date_range("2024-06-21", periods=24, freq="h", tz="UTC")
    dark = dark_cells(index, np.array([52.0, 52.0]), np.array([0.0, 90.0]))
    london, dhaka_lon = dark[:, 0], dark[:, 1]
    assert london[0] and not london[12]  # UTC midnight dark, noon light at 0 E
    assert dhaka_lon[18] and not dhaka_lon[6]  # 90 E: solar noon is 06 UTC
    assert 2 <= london.sum() <= 8  # a short midsummer night at 52 N


def test_sites_without_coordinates_take_the_fallback_night():
    index = pd.date_range("2024-03-01", periods=24, freq="h", tz="UTC")
    dark = dark_cells(index, np.array([np.nan]), np.array([np.nan]), local_hour=np.arange(24))
    assert dark[:, 0].tolist() == [h >= 23 or h < 4 for h in range(24)]


def _pv_day(n_days=10):
    index = pd.date_range("2024-05-01", periods=24 * n_days, freq="h", tz="UTC")
    hour = index.hour.to_numpy()
    sun = np.clip(np.sin((hour - 5) / 15 * np.pi), 0, None) * (4 <= hour) * (hour <= 20)
    house = 0.3 + 0.1 * np.cos(hour / 24 * 2 * np.pi)
    return index, house, 2.5 * sun


def test_a_meter_with_export_or_empty_sunny_imports_is_behind_pv():
    index, house, gen = _pv_day()
    net = house - gen
    kw = np.stack([house, np.maximum(net, 0), np.maximum(net, 0)], axis=1)
    export = np.stack([np.zeros_like(house), np.maximum(-net, 0), np.full_like(house, np.nan)],
                      axis=1)
    dark = dark_cells(index, np.full(3, 51.5), np.zeros(3))
    pv = pv_meters(kw, dark, export)
    assert pv.exports.tolist() == [False, True, False]
    assert pv.import_only.tolist() == [False, False, True]  # nothing drawn at sunny middays
    assert pv.has_pv.tolist() == [False, True, True]


def test_floor_cells_are_all_cells_without_pv_and_dark_ones_behind_it():
    index, house, gen = _pv_day()
    kw = np.stack([house, np.maximum(house - gen, 0)], axis=1)
    meters = pd.DataFrame({"meter_id": ["A", "B"], "lat": [51.5, 51.5], "lon": [0.0, 0.0]})
    cells, pv, dark = floor_cells(kw, index, meters, local_hour=index.hour.to_numpy(),
                                  cell_hours=1.0)
    assert cells[:, 0].all()
    np.testing.assert_array_equal(cells[:, 1], dark[:, 1])
    assert pv.has_pv.tolist() == [False, True]
    none, pv_none, _ = floor_cells(kw[:, :1], index, meters.iloc[:1],
                                   local_hour=index.hour.to_numpy(), cell_hours=1.0)
    assert none is None and not pv_none.has_pv.any()


@pytest.mark.parametrize("lat", [0.0, 45.0, -33.9])
def test_noon_is_never_dark(lat):
    index = pd.date_range("2024-01-01", periods=24 * 366, freq="h", tz="UTC")
    dark = dark_cells(index, np.array([lat]), np.array([0.0]))[:, 0]
    assert not dark[index.hour == 12].any()
