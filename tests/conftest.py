"""Shared fixtures, tolerances and hygiene guards for the GridWatch tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TESTS_DATA_DIR = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).parent.parent

RTOL = 1e-6
ATOL = 1e-9


def assert_allclose(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_frame_equal(left, right, **kwargs):
    kwargs.setdefault("rtol", RTOL)
    kwargs.setdefault("atol", ATOL)
    pd.testing.assert_frame_equal(left, right, **kwargs)


def pytest_addoption(parser):
    parser.addoption("--skip-slow", action="store_true", help="skip tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-slow"):
        skip = pytest.mark.skip(reason="--skip-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_global_rng_use():
    """Fail a test that draws from numpy's global random state."""
    state = np.random.get_state()[1].copy()
    yield
    assert np.array_equal(state, np.random.get_state()[1]), (
        "test used the global numpy RNG; pass rng = np.random.default_rng(seed)"
    )


@pytest.fixture(autouse=True)
def _no_leaked_figures():
    """Fail a test that leaves matplotlib figures open."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        plt = sys.modules["matplotlib.pyplot"]
        n = len(plt.get_fignums())
        plt.close("all")
        assert n == 0, f"test left {n} matplotlib figure(s) open"


@pytest.fixture(scope="session")
def influxdb_server():
    """A real InfluxDB 1.x on 127.0.0.1 (free port, temporary data), stopped after the session.

    Without ``influxd`` the tests that use it fail when ``CI=true`` (a skipped
    real-server test is a test that never ran) and are skipped otherwise.
    """
    from tests.influxdb_server import require_influxd, start_influxd

    server = start_influxd(influxd=require_influxd())
    yield server
    server.stop()
