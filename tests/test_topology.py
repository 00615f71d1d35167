"""The supply tree built from the meters table."""

import numpy as np
import pandas as pd
import pytest

from gridwatch.topology import asset_members, membership_matrix


@pytest.fixture()
def meters():
    return pd.DataFrame({
        "meter_id": ["M1", "M2", "M3", "M4", "M5", "M6"],
        "transformer_id": ["T1", "T1", "T2", None, "", "T3"],
        "feeder_id": ["F1", "F1", "F1", "F1", "F2", "F2"],
        "substation_id": ["S1", "S1", "S1", "S1", "S1", "S1"],
        "customer_class": ["residential"] * 6,
    })


def _members_of(members, asset, level):
    sel = (members["asset_id"] == asset) & (members["level"] == level)
    return sorted(members.loc[sel, "meter_id"])


def test_members_at_every_level(meters):
    members = asset_members(meters)
    assert list(members.columns) == ["asset_id", "level", "meter_id"]
    assert _members_of(members, "T1", "transformer") == ["M1", "M2"]
    assert _members_of(members, "T2", "transformer") == ["M3"]
    assert _members_of(members, "T3", "transformer") == ["M6"]
    assert _members_of(members, "F1", "feeder") == ["M1", "M2", "M3", "M4"]
    assert _members_of(members, "F2", "feeder") == ["M5", "M6"]
    assert _members_of(members, "S1", "substation") == ["M1", "M2", "M3", "M4", "M5", "M6"]
    assert members["level"].tolist() == ["transformer"] * 4 + ["feeder"] * 6 + ["substation"] * 6


def test_feeder_collects_meters_whose_transformer_is_unknown(meters):
    members = asset_members(meters)
    # M4 (None) and M5 ("") have no transformer: they count at the feeder, not at a blank asset.
    assert "M4" in _members_of(members, "F1", "feeder")
    assert "M5" in _members_of(members, "F2", "feeder")
    assert not members["asset_id"].isin(["", "None", "nan"]).any()
    assert set(members.loc[members["level"] == "transformer", "meter_id"]) == {"M1", "M2", "M3", "M6"}


def test_missing_level_columns_and_duplicated_rows():
    meters = pd.DataFrame({"meter_id": ["A", "B", "B"], "feeder_id": ["F", "F", "F"]})
    members = asset_members(meters)
    assert members.to_numpy().tolist() == [["F", "feeder", "A"], ["F", "feeder", "B"]]
    assert asset_members(pd.DataFrame({"meter_id": ["A"]})).empty


def test_an_id_used_at_two_levels_gives_rows_at_both():
    meters = pd.DataFrame({"meter_id": ["A", "B"], "transformer_id": ["X", "Y"], "feeder_id": ["X", "X"]})
    members = asset_members(meters)
    assert _members_of(members, "X", "transformer") == ["A"]
    assert _members_of(members, "X", "feeder") == ["A", "B"]


def test_no_meter_id_column_is_refused():
    with pytest.raises(ValueError, match="meter_id"):
        asset_members(pd.DataFrame({"transformer_id": ["T1"]}))


def test_membership_matrix_sums_meters_like_a_groupby(meters):
    rng = np.random.default_rng(3)
    members = asset_members(meters)
    meter_ids = ["M6", "M1", "M2", "M3", "M4", "M5"]  # any column order
    assets = ["F1", "T1", "S1", "F2", "T9"]  # T9: upstream asset unknown to the meters table
    kw = pd.DataFrame(rng.uniform(0, 2, (5, 6)), columns=meter_ids)
    matrix = membership_matrix(members, meter_ids, assets)
    assert matrix.shape == (6, 5)
    summed = kw.to_numpy() @ matrix.toarray()
    # Independent reference: pandas groupby per level.
    long = kw.T.join(meters.set_index("meter_id"))
    for j, asset in enumerate(assets):
        if asset == "T9":
            np.testing.assert_array_equal(summed[:, j], 0.0)
            continue
        column = {"F": "feeder_id", "T": "transformer_id", "S": "substation_id"}[asset[0]]
        expected = long[long[column] == asset][list(range(5))].sum(axis=0).to_numpy()
        np.testing.assert_allclose(summed[:, j], expected, rtol=1e-12)


def test_membership_matrix_counts_a_repeated_pair_once():
    members = pd.DataFrame({"asset_id": ["T1", "T1"], "meter_id": ["M1", "M1"]})
    assert membership_matrix(members, ["M1"], ["T1"]).toarray().tolist() == [[1.0]]
