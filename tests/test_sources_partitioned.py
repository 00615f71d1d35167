"""Reading readings and upstream partition by partition gives the full read, split."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gridwatch.errors import InputError
from gridwatch.partitions import plan_partitions
from gridwatch.simulate import simulate_dataset
from gridwatch.sources import files, read_meters
from gridwatch.sources.partitioned import (
    UNPLANNED,
    open_partitioned,
    open_readings,
    open_upstream,
)

TZ = "Europe/London"
UNKNOWN = ["M000007", "M000150"]  # in readings, dropped from the meters table


def _dataset(out, fmt):
    """300 meters x 20 days, dirty, with unknown meters, a blank id and a padded id."""
    simulate_dataset(out, n_meters=300, days=20, seed=11, fmt=fmt, dirty=True)
    meters = pd.read_csv(out / "meters.csv", dtype=str)
    meters[~meters["meter_id"].isin(UNKNOWN)].to_csv(out / "meters.csv", index=False)
    if fmt == "csv":
        with open(out / "readings.csv", "a") as fh:
            fh.write(",2026-03-20T00:00:00+00:00,0.5\n")  # no meter id
            fh.write(" M000020 ,2026-03-20T00:00:00+00:00,0.5\n")  # padded id
            fh.write("M000021,2026-03-20T00:00:00+00:00\n")  # malformed: a field short
            fh.write("M000022,yesterday,0.5\n")  # bad timestamp
    else:  # rewrite in small row groups so that the row-group strategy has something to prune
        table = pq.read_table(out / "readings.parquet")
        extra = pa.table({"meter_id": [None, " M000020 "],
                          "timestamp": pa.array([pd.Timestamp("2026-03-20", tz="UTC")] * 2,
                                                type=table.schema.field("timestamp").type),
                          "kwh": [0.5, 0.5]}, schema=table.schema)
        pq.write_table(pa.concat_tables([table, extra]), out / "readings.parquet",
                       row_group_size=20_000)
    return out


@pytest.fixture(scope="module", params=["parquet", "csv"])
def dataset(request, tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp(request.param), request.param), request.param


def _plan_of(out):
    meters = read_meters(out / "meters.csv")[0]
    return plan_partitions(meters, budget_bytes=40_000, bytes_per_meter=1000)


@pytest.fixture(scope="module")
def plan(dataset):
    return _plan_of(dataset[0])


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("sorted"), "parquet"), "parquet"


def _path(dataset, table):
    out, fmt = dataset
    return out / f"{table}.{fmt}"


def _full(path, table, id_column):
    return files.read_interval_table(path, table=table, id_column=id_column,
                                     value_column="kwh", timezone=TZ, required=True)


def _sorted(frame, id_column):
    frame = frame.assign(**{id_column: frame[id_column].astype(str)})
    return frame.sort_values([id_column, "timestamp", "kwh"]).reset_index(drop=True)


def _issue_counts(log):
    frame = log.to_frame()
    return frame.groupby(["code", "meter_id"])["count"].sum().astype("int64").sort_index()


def _strategies(fmt):
    return ["row_groups", "spill"] if fmt == "parquet" else ["spill"]


def _read_all(source):
    return {key: source.read(key) for key in source.keys}


def test_partitions_add_up_to_the_full_read(dataset, plan):
    assert 8 <= plan.n_partitions <= 15
    full, full_log, full_rows = _full(_path(dataset, "readings"), "readings", "meter_id")
    for strategy in _strategies(dataset[1]):
        with open_readings(_path(dataset, "readings"), plan, timezone=TZ,
                           strategy=strategy) as source:
            parts = _read_all(source)
        frames = [f for f, _, _ in parts.values() if f is not None]
        pd.testing.assert_frame_equal(_sorted(pd.concat(frames), "meter_id"),
                                      _sorted(full, "meter_id"))
        assert sum(rows for _, _, rows in parts.values()) == full_rows
        logs = [log for _, log, _ in parts.values()]
        merged = pd.concat([_issue_counts(log) for log in logs]).groupby(level=[0, 1]).sum()
        pd.testing.assert_series_equal(merged.sort_index(), _issue_counts(full_log))


def test_each_partition_holds_only_its_meters(dataset, plan):
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ) as source:
        for p in range(plan.n_partitions):
            frame, _, _ = source.read(p)
            assert set(frame["meter_id"].astype(str)) <= set(plan.meter_ids(p))


def test_unknown_meter_is_read_once_with_the_unplanned_rows(dataset, plan):
    full, _, _ = _full(_path(dataset, "readings"), "readings", "meter_id")
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ) as source:
        frames = {key: source.read(key)[0] for key in source.keys}
    unplanned = frames.pop(UNPLANNED)
    assert sorted(set(unplanned["meter_id"].astype(str))) == UNKNOWN
    assert len(unplanned) == full["meter_id"].isin(UNKNOWN).sum()
    for frame in frames.values():
        assert not frame["meter_id"].isin(UNKNOWN).any()


def test_rows_without_id_and_malformed_rows_are_counted_once(dataset, plan):
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ) as source:
        logs = {key: source.read(key)[1] for key in source.keys}
    for key, log in logs.items():
        expected = 1 if key == UNPLANNED else 0
        assert log.total("readings.missing_meter_id") == expected
        assert log.total("readings.malformed_row") == (expected if dataset[1] == "csv" else 0)


def test_padded_id_goes_with_its_meter(dataset, plan):
    part = int(plan.meter_partition["M000020"])
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ) as source:
        frame, _, _ = source.read(part)
    stamp = pd.Timestamp("2026-03-20", tz="UTC")
    assert ((frame["meter_id"] == "M000020") & (frame["timestamp"] == stamp)).any()


def test_upstream_partitions_add_up_to_the_full_read(dataset, plan):
    path = _path(dataset, "upstream")
    full, _, full_rows = _full(path, "upstream", "asset_id")
    with open_upstream(path, plan, timezone=TZ) as source:
        parts = _read_all(source)
    frames = [f for f, _, _ in parts.values() if f is not None]
    pd.testing.assert_frame_equal(_sorted(pd.concat(frames), "asset_id"),
                                  _sorted(full, "asset_id"))
    assert sum(rows for _, _, rows in parts.values()) == full_rows
    for p in range(plan.n_partitions):
        frame = parts[p][0]
        assert set(frame["asset_id"].astype(str)) <= set(plan.asset_ids(p))


def test_upstream_has_every_partition_of_the_plan_even_without_assets(tmp_path):
    path = tmp_path / "upstream.csv"
    path.write_text("asset_id,timestamp,kwh\nT1,2024-01-01T00:00Z,5.0\n")
    meters = pd.DataFrame({"meter_id": ["M1", "M2"], "transformer_id": ["T1", None]})
    plan = plan_partitions(meters, budget_bytes=1, bytes_per_meter=1)
    with open_upstream(path, plan) as source:
        assert source.keys == [0, 1, UNPLANNED]
        frame, log, rows = source.read(1)
        assert frame is None and len(log) == 0 and rows == 0
        assert source.read(0)[0]["asset_id"].tolist() == ["T1"]


def test_auto_prunes_row_groups_of_a_sorted_parquet_file(parquet_dataset):
    plan = _plan_of(parquet_dataset[0])
    with open_readings(_path(parquet_dataset, "readings"), plan, timezone=TZ) as source:
        assert source.strategy == "row_groups"


def test_auto_spills_an_unsorted_parquet_file(tmp_path, parquet_dataset):
    plan = _plan_of(parquet_dataset[0])
    table = pq.read_table(_path(parquet_dataset, "readings"))
    order = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = tmp_path / "readings.parquet"
    pq.write_table(table.take(order), shuffled, row_group_size=20_000)
    full, _, _ = _full(shuffled, "readings", "meter_id")
    with open_readings(shuffled, plan, timezone=TZ) as source:
        assert source.strategy == "spill"
        frames = [source.read(key)[0] for key in source.keys]
    pd.testing.assert_frame_equal(_sorted(pd.concat(frames), "meter_id"),
                                  _sorted(full, "meter_id"))


def test_non_numeric_kwh_in_csv_is_spilled_as_text(tmp_path):
    path = tmp_path / "readings.csv"
    path.write_text("meter_id,timestamp,kwh\nM1,2024-01-01T00:00Z,0.5\n"
                    "M2,2024-01-01T00:00Z,abc\nM2,2024-01-01T01:00Z,0.25\n")
    plan = plan_partitions(pd.DataFrame({"meter_id": ["M1", "M2"]}), budget_bytes=1,
                           bytes_per_meter=1)
    with open_readings(path, plan) as source:
        m1, _, _ = source.read(0)
        m2, log, rows = source.read(1)
    assert m1["kwh"].tolist() == [0.5]
    assert np.isnan(m2["kwh"].iloc[0]) and m2["kwh"].iloc[1] == 0.25
    assert log.total("readings.non_numeric_kwh") == 1 and rows == 2
    full, _, _ = _full(path, "readings", "meter_id")
    pd.testing.assert_frame_equal(_sorted(pd.concat([m1, m2]), "meter_id"),
                                  _sorted(full, "meter_id"))


def test_spill_directory_is_removed_on_close(tmp_path, dataset, plan):
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ, strategy="spill",
                       spill_dir=tmp_path) as source:
        assert any(tmp_path.iterdir())
    assert not any(tmp_path.iterdir())
    assert source.strategy == "spill"


def test_unknown_partition_and_strategy_are_refused(dataset, plan):
    with open_readings(_path(dataset, "readings"), plan, timezone=TZ) as source:
        with pytest.raises(ValueError, match="no partition 99"):
            source.read(99)
    with pytest.raises(ValueError, match="strategy must be"):
        open_partitioned(_path(dataset, "readings"), plan.meter_partition, table="readings",
                         id_column="meter_id", strategy="fast")


def test_unreadable_csv_leaves_no_spill_directory(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    path = tmp_path / "readings.csv"
    path.write_bytes(b"meter_id,timestamp,kwh\nM1,2024-01-01T00:00Z,\"0.5\n")  # open quote
    plan = plan_partitions(pd.DataFrame({"meter_id": ["M1"]}), budget_bytes=1, bytes_per_meter=1)
    with pytest.raises(InputError, match="cannot read the file"):
        open_readings(path, plan, spill_dir=spill)
    assert not any(spill.iterdir())
