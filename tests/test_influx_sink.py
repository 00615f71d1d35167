"""Results written back to a real InfluxDB 1.x: read back equal, reruns overwrite."""

import dataclasses
import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.influx import write_results
from gridwatch.influx.client import V1Client
from gridwatch.pipeline import run as run_pipeline
from gridwatch.simulate import simulate_dataset
from tests.influxdb_server import influx_config

AS_OF = "2026-03-31"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=80, days=30, as_of=AS_OF, seed=11)
    config = influx_config("http://127.0.0.1:1", "unused", analysis={"history_days": 30},
                           source={"kind": "files"}, data={"timezone": "Europe/London"})
    result = run_pipeline(path, None, as_of=AS_OF, config=config)
    assert (result.flags[col.FLAGGED] == "true").any() and result.balance is not None
    return result


def _points(config, measurement) -> pd.DataFrame:
    results = V1Client(config.influxdb).query(f'SELECT * FROM "{measurement}"', what="read back")
    series = [s for r in results for s in r.get("series") or ()]
    if not series:
        return pd.DataFrame()
    frames = [pd.DataFrame(s["values"], columns=s["columns"]) for s in series]
    return pd.concat(frames, ignore_index=True)


def _config(server):
    return influx_config(server.url, f"t_{uuid.uuid4().hex[:10]}",
                         data={"timezone": "Europe/London"})


def test_flags_are_read_back_as_written(influxdb_server, result):
    config = _config(influxdb_server)
    V1Client(config.influxdb).query(f'CREATE DATABASE "{config.influxdb.database}"',
                                    what="create", database=False)
    counts = write_results(result, config)
    assert counts == {"flags": len(result.flags), "balance": len(result.balance.table)}

    back = _points(config, "gridwatch_flags").set_index(col.METER_ID).loc[result.flags[col.METER_ID]]
    flags = result.flags.set_index(col.METER_ID)
    # The start of the as-of day in the configured zone: BST since 29 March, 23:00 UTC.
    midnight_us = pd.Timestamp("2026-03-30T23:00:00Z").value // 1000
    assert (back["time"] == midnight_us).all()
    for name in (col.SCORE, col.EXCESS_KW, col.EXCESS_KWH, col.EST_LOSS):
        np.testing.assert_array_equal(back[name].astype(float).to_numpy(),
                                      flags[name].astype(float).to_numpy())
    assert back[col.FLAGGED].tolist() == (flags[col.FLAGGED] == "true").tolist()
    assert back[col.RANK].tolist() == flags[col.RANK].tolist()
    for name in (col.KIND, col.TRANSFORMER_ID, col.ONSET, col.REASONS):
        assert back[name].fillna("").tolist() == flags[name].fillna("").tolist()

    balance = _points(config, "gridwatch_balance").set_index(col.ASSET_ID)
    table = result.balance.table.set_index(col.ASSET_ID)
    assert sorted(balance.index) == sorted(table.index)
    assert balance.loc[table.index, col.FLAGGED].tolist() == table[col.FLAGGED].tolist()
    np.testing.assert_array_equal(balance.loc[table.index, col.UNEXPLAINED_KW].to_numpy(float),
                                  table[col.UNEXPLAINED_KW].to_numpy(float))


def test_rerun_of_the_same_day_with_a_changed_kind_leaves_no_duplicate(influxdb_server, result):
    config = _config(influxdb_server)
    V1Client(config.influxdb).query(f'CREATE DATABASE "{config.influxdb.database}"',
                                    what="create", database=False)
    write_results(result, config)
    flagged = result.flags.index[result.flags[col.FLAGGED] == "true"][0]
    meter = result.flags.loc[flagged, col.METER_ID]
    changed = result.flags.copy()
    old_kind = changed.loc[flagged, col.KIND]
    changed.loc[flagged, col.KIND] = ("hidden_load_suspect" if old_kind == "visible_load"
                                      else "visible_load")
    changed.loc[changed.index[-1], col.TRANSFORMER_ID] = "T-moved"
    rerun = dataclasses.replace(result, flags=changed)
    write_results(rerun, config)

    back = _points(config, "gridwatch_flags")
    assert len(back) == len(result.flags)
    assert not back[col.METER_ID].duplicated().any()
    assert back.loc[back[col.METER_ID] == meter, col.KIND].tolist() == [changed.loc[flagged,
                                                                                     col.KIND]]
    assert len(_points(config, "gridwatch_balance")) == len(result.balance.table)


def test_another_days_points_are_kept(influxdb_server, result):
    config = _config(influxdb_server)
    V1Client(config.influxdb).query(f'CREATE DATABASE "{config.influxdb.database}"',
                                    what="create", database=False)
    write_results(result, config)
    next_day = dataclasses.replace(result, as_of=dt.date(2026, 4, 1))
    write_results(next_day, config)
    write_results(next_day, config)
    back = _points(config, "gridwatch_flags")
    assert back.groupby("time").size().tolist() == [len(result.flags)] * 2
