"""The utility's spreadsheet rule, on hand-made meters."""

import numpy as np
import pandas as pd

from gridwatch.rules import hourly_import_kw, peer_multiple_rule


def _homes(n_days=28):
    index = pd.date_range("2024-01-01", periods=24 * n_days, freq="h", tz="UTC")
    hour = index.hour.to_numpy()
    household = 0.1 + 1.0 * ((hour >= 17) & (hour < 22))  # mean 0.308 kW, quiet hour 0.1
    kw = pd.DataFrame({f"H{i}": household * (1 + 0.1 * i) for i in range(6)}, index=index)
    kw["RIG"] = household + 1.35
    kw["BIG"] = household * 4  # four times the peers, but not flat (quiet 0.4 / mean 1.23)
    kw["SHOP"] = household + 1.35
    meters = pd.DataFrame({"meter_id": kw.columns, "customer_class": "residential", "region": "n"})
    meters.loc[meters["meter_id"] == "SHOP", "customer_class"] = "commercial"
    return kw, meters


def test_a_flat_home_at_twice_its_peers_is_flagged_and_a_peaky_one_is_not():
    kw, meters = _homes()
    out = peer_multiple_rule(kw, meters)
    assert out.loc["RIG", "flagged"] and not out.loc["BIG", "flagged"]
    assert not out[out.index.str.startswith("H")]["flagged"].any()
    # similar premises are the same class: the shop has no peers but itself
    assert out.loc["SHOP", "multiple"] == 1.0 and not out.loc["SHOP", "flagged"]
    expected_flatness = 1.45 / (1.35 + 0.1 + 1.0 * 5 / 24)  # quiet hour over the day's mean
    assert abs(out.loc["RIG", "flatness"] - expected_flatness) < 1e-9


def test_only_the_last_weeks_count():
    kw, meters = _homes(n_days=56)
    kw.loc[kw.index < kw.index[0] + pd.Timedelta(days=28), "RIG"] = 0.2  # the rig is new
    assert peer_multiple_rule(kw, meters, window_days=28).loc["RIG", "flagged"]
    assert not peer_multiple_rule(kw, meters, window_days=56).loc["RIG", "multiple"] >= 2 * 2


def test_hourly_import_reads_both_interval_lengths_plainly(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=48, freq="30min", tz="UTC")
    half = pd.DataFrame({"meter_id": "A", "timestamp": stamps, "kwh": 0.5})  # 1 kW
    hourly = pd.DataFrame({"meter_id": "B", "timestamp": stamps[::2], "kwh": 2.0})  # 2 kW
    readings = pd.concat([half, hourly])
    gaps = (readings["meter_id"] == "A") & (readings["timestamp"] == stamps[5])
    gaps |= (readings["meter_id"] == "B") & (readings["timestamp"] == stamps[10])
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    readings[~gaps].to_csv(tmp_path / "readings.csv", index=False)
    kw = hourly_import_kw(tmp_path)
    assert kw.shape == (24, 2)
    np.testing.assert_allclose(kw["A"], 1.0)  # the half hour left counts for its own length
    np.testing.assert_allclose(kw["B"].drop(kw.index[5]), 2.0)
    assert np.isnan(kw["B"].iloc[5])
