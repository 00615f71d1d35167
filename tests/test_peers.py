"""Peer figures counted per partition add up to the figures of all meters at once."""

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from gridwatch.peers import DemandBands, demand_bands


@pytest.fixture
def households():
    rng = np.random.default_rng(3)
    mean_kw = np.exp(rng.normal(-1.0, 0.7, (40, 3000)))
    mean_kw[0] = np.nan  # a day before the data
    mean_kw[5, :40] = 0.0  # vacant on one day
    meters = pd.DataFrame({"customer_class": np.where(np.arange(3000) % 3, "residential", "sme")})
    return mean_kw, meters


def test_demand_band_percentiles_match_the_exact_ones(households):
    mean_kw, meters = households
    bands = demand_bands(mean_kw, meters)
    for cls in ("residential", "sme"):
        members = (meters["customer_class"] == cls).to_numpy()
        ours = bands.percentiles(cls, [10, 50, 90])
        exact = np.nanpercentile(mean_kw[1:, members], [10, 50, 90], axis=1)
        np.testing.assert_allclose(ours[:, 1:], exact, rtol=0.006)
        assert np.isnan(ours[:, 0]).all()  # no data that day: no band
        assert bands.members[cls] == members.sum()


def test_demand_bands_of_partitions_add_up_to_all_at_once(households):
    mean_kw, meters = households
    cuts = [0, 700, 1900, 3000]
    parts = [demand_bands(mean_kw[:, a:b], meters.iloc[a:b]) for a, b in pairwise(cuts)]
    together = parts[0] + parts[1] + parts[2]
    whole = demand_bands(mean_kw, meters)
    for cls in whole.counts:
        np.testing.assert_array_equal(together.counts[cls], whole.counts[cls])
        np.testing.assert_array_equal(together.percentiles(cls, [10, 90]),
                                      whole.percentiles(cls, [10, 90]))
    assert together.members == whole.members


def test_a_class_without_meters_has_no_band(households):
    mean_kw, meters = households
    assert np.isnan(demand_bands(mean_kw, meters).percentiles("greenhouse", [50])).all()
    with pytest.raises(ValueError, match="do not add"):
        DemandBands(3) + DemandBands(4)
