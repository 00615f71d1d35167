"""Data as utilities hold it (issue 16): column maps, units, END stamps, register reads."""

import filecmp
import tomllib

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.config import ReadingsForm, UpstreamForm, config_from_dict
from gridwatch.errors import ConfigError, InputError
from gridwatch.issues import IssueLog
from gridwatch.pipeline import run
from gridwatch.simulate import export_as_utility, simulate_dataset, write_config
from gridwatch.sources import export_forms as ef
from gridwatch.sources import files
from tests.conftest import assert_allclose

MIN = 60_000_000  # [us]
NAN = np.nan


# --- units -------------------------------------------------------------------------------
@pytest.mark.parametrize(("unit", "minutes", "kwh"), [
    pytest.param("Wh", None, [0.25, 1.0], id="Wh"),
    pytest.param("kWh", None, [250.0, 1000.0], id="kWh"),
    pytest.param("MWh", None, [250_000.0, 1_000_000.0], id="MWh"),
    pytest.param("W", 30, [0.125, 0.5], id="W-30min"),  # 250 W for half an hour = 0.125 kWh
    pytest.param("kW", 15, [62.5, 250.0], id="kW-15min"),
    pytest.param("MW", 60, [250_000.0, 1_000_000.0], id="MW-60min"),
])
def test_to_kwh_for_every_unit(unit, minutes, kwh):
    assert_allclose(ef.to_kwh(np.array([250.0, 1000.0]), unit, minutes), kwh)
    series = ef.to_kwh(pd.Series([250.0, 1000.0], index=["a", "b"]), unit, minutes)
    assert list(series.index) == ["a", "b"]
    assert_allclose(series.to_numpy(), kwh)


def test_whole_wh_give_the_contract_kwh_exactly_and_power_needs_the_interval():
    wh = np.arange(0, 100_000, dtype=float)
    assert np.array_equal(ef.to_kwh(wh, "Wh"), np.array([float(f"{w / 1000:.3f}") for w in wh]))
    assert_allclose(ef.to_kwh([4.0, 4.0], "kW", np.array([15, 30])), [1.0, 2.0])
    with pytest.raises(ValueError, match="need interval_minutes"):
        ef.to_kwh([1.0], "kW")
    with pytest.raises(ValueError, match="unknown unit 'kg'"):
        ef.to_kwh([1.0], "kg")


# --- stamps and intervals --------------------------------------------------------------------
def test_end_stamps_move_back_by_each_interval_index_and_series():
    end = pd.DatetimeIndex(["2024-03-31 01:00", "2024-03-31 01:30", "2024-03-31 02:00"], tz="UTC")
    expected = pd.DatetimeIndex(["2024-03-31 00:45", "2024-03-31 01:00", "2024-03-31 01:30"],
                                tz="UTC")
    assert ef.shift_end_stamps(end, [15, 30, 30]).equals(expected)
    shifted = ef.shift_end_stamps(pd.Series(end, index=[7, 8, 9]), np.array([15, 30, 30]))
    assert list(shifted.index) == [7, 8, 9] and shifted.tolist() == list(expected)


def test_interval_is_each_meters_most_common_step_or_the_tables():
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    t = np.array([0, 15, 30, 60, 0, 30, 60, 5]) * MIN  # meter 0 misses a read; 2 has one row
    # steps 15, 15, 30 | 30, 30: the table's most common is 30
    assert ef.meter_interval_minutes(codes, t).tolist() == [15] * 4 + [30] * 3 + [30]
    assert ef.meter_interval_minutes(codes, t, interval_minutes=5).tolist() == [5] * 8


def test_a_meter_without_a_valid_step_takes_its_own_not_the_tables():
    # meter 1 has one valid read and two empty ones, 15 min apart: its own step, whatever
    # the other meters of the table (or of a partition) read at
    codes = np.array([0, 0, 0, 1, 1, 1])
    t = np.array([0, 60, 120, 0, 15, 30]) * MIN
    valid = np.array([True, True, True, True, False, False])
    assert ef.meter_interval_minutes(codes, t, valid=valid).tolist() == [60] * 3 + [15] * 3
    alone = ef.meter_interval_minutes(codes[3:] - 1, t[3:], valid=valid[3:])
    assert alone.tolist() == [15] * 3


# --- column names ----------------------------------------------------------------------------
def test_a_mapped_column_replaces_a_contract_named_one_and_a_missing_one_is_named():
    form = ReadingsForm(columns={"MeterNo": "meter_id", "Consumption": "kwh"})
    cols = ["MeterNo", "timestamp", "Consumption", "kwh", "note"]
    assert ef.contract_columns(cols, form, "r.csv", table="readings") == [
        "meter_id", "timestamp", "kwh", "note"]
    assert ef.file_names(["meter_id", "timestamp", "kwh"], form) == [
        "MeterNo", "timestamp", "Consumption"]
    with pytest.raises(InputError, match=r"missing column 'MeterNo', which data\.readings\."
                                         r"columns maps to 'meter_id'") as err:
        ef.contract_columns(["meter", "timestamp", "Consumption"], form, "r.csv",
                            table="readings")
    assert err.value.column == "MeterNo"


# --- register rules (hand calculations) ------------------------------------------------------
def _steps(register, minutes=None, meters=None, devices=None, **kw):
    register = np.asarray(register, dtype=float)
    n = len(register)
    minutes = np.arange(n) * 30 if minutes is None else np.asarray(minutes)
    meters = np.zeros(n, int) if meters is None else np.asarray(meters)
    return ef.register_to_interval_kwh(meters, minutes * MIN, register, device_codes=devices, **kw)


def test_register_differences_are_the_energy_of_the_interval_each_read_closes():
    s = _steps([10.0, 11.0, 12.5, 12.5])
    assert_allclose(s.kwh, [NAN, 1.0, 1.5, 0.0])
    assert s.first_read.tolist() == [True, False, False, False] == s.drop.tolist()
    assert s.interval_minutes.tolist() == [30] * 4


def test_rollover_is_read_across_the_wrap():
    s = _steps([99_990.0, 99_999.0, 4.0, 10.0], rollover_kwh=100_000)
    assert_allclose(s.kwh, [NAN, 9.0, 5.0, 6.0])
    assert s.rollover.tolist() == [False, False, True, False]
    # without rollover_kwh the same fall is a reset: the interval is missing
    s = _steps([99_990.0, 99_999.0, 4.0, 10.0])
    assert_allclose(s.kwh, [NAN, 9.0, NAN, 6.0])
    assert s.reset.tolist() == [False, False, True, False] and not s.rollover.any()


def test_a_fall_that_stays_down_is_a_reset_a_fall_that_comes_back_a_bad_read():
    reset = _steps([500.0, 501.0, 2.0, 3.0, 4.5], rollover_kwh=100_000)  # 501 is not near the top
    assert_allclose(reset.kwh, [NAN, 1.0, NAN, 1.0, 1.5])
    assert reset.reset.tolist() == [False, False, True, False, False]
    bad = _steps([100.0, 101.0, 90.0, 102.0, 103.0])
    assert_allclose(bad.kwh, [NAN, 1.0, NAN, NAN, 1.0])  # both intervals of the bad read
    assert bad.negative_step.tolist() == [False, False, True, True, False]
    assert not bad.reset.any()
    last = _steps([100.0, 101.0, 100.5])  # nothing follows: one bad read
    assert_allclose(last.kwh, [NAN, 1.0, NAN]) and last.negative_step[2]


def test_missed_reads_leave_a_gap_and_are_counted():
    s = _steps([0.0, 1.0, 4.0, 5.0, 6.0], minutes=[0, 30, 120, 150, 180])
    assert_allclose(s.kwh, [NAN, 1.0, NAN, 1.0, 1.0])  # 3 kWh over 3 intervals is not spread
    assert s.missed_reads.tolist() == [0, 0, 2, 0, 0]
    empty = _steps([0.0, 1.0, NAN, 3.0, 4.0])  # an empty read: the next one spans it
    assert_allclose(empty.kwh, [NAN, 1.0, NAN, NAN, 1.0])
    assert empty.missed_reads.tolist() == [0, 0, 0, 1, 0] and not empty.drop[2]


def test_a_meter_exchange_with_device_ids_loses_nothing():
    # old device A read to 7 at 60 min; new device B installed at 60 min reading 0.5
    s = _steps([5.0, 6.0, 7.0, 0.5, 1.5, 3.0], minutes=[0, 30, 60, 60, 90, 120],
               devices=np.array([0, 0, 0, 1, 1, 1]))
    assert_allclose(s.kwh, [NAN, 1.0, 1.0, NAN, 1.0, 1.5])
    assert s.first_read.tolist() == [True, False, False, True, False, False]
    assert s.exchange.tolist() == [False, False, False, True, False, False]
    assert not (s.reset.any() or s.negative_step.any())


def _register_table():
    """Five meters' reads, interleaved as a file may hold them (codes, minutes, Wh, device)."""
    rows = [  # (meter, minute, register, device)
        *[(0, m, 1000.0 + 7 * i, 0) for i, m in enumerate(range(0, 300, 30))],  # plain
        *[(1, m, 99_990.0 + 3 * i if i < 4 else 3 * i - 10, 1)  # wraps at 100,000
          for i, m in enumerate(range(0, 300, 30))],
        *[(2, m, 50.0 + i, 2) for i, m in enumerate(range(0, 150, 30))],  # exchanged:
        *[(2, m, 0.5 + i, 3) for i, m in enumerate(range(120, 300, 30))],  # B from 120 min
        (3, 0, 10.0, 4), (3, 60, NAN, 4), (3, 120, NAN, 4),  # one valid read, two empty
        *[(4, m, 5.0 + i, 5) for i, m in enumerate(range(0, 300, 15))],  # every 15 min
        (4, 60, 9.5, 5),  # a re-sent 60-min read: a duplicate
    ]
    order = np.random.default_rng(7).permutation(len(rows))
    meter, minute, register, device = (np.array(v) for v in zip(*[rows[i] for i in order],
                                                                  strict=True))
    return meter, minute * MIN, register.astype(float), device.astype(float)


@pytest.mark.parametrize("groups", [
    pytest.param([[0], [1], [2], [3], [4]], id="each-meter-alone"),
    pytest.param([[0, 3], [1, 2, 4]], id="two-partitions"),
    pytest.param([[4, 1], [2], [0, 3]], id="three-partitions"),
])
def test_register_differencing_of_a_meter_does_not_depend_on_the_others(groups):
    """Partitions are whole meters: each meter's reads, first read included, come out alike."""
    meter, t, register, device = _register_table()
    whole = ef.register_to_interval_kwh(meter, t, register, device_codes=device,
                                        rollover_kwh=100_000)
    assert whole.first_read.sum() == 6 and whole.exchange.sum() == 1  # meter 2: two devices
    assert whole.rollover.sum() == 1 and whole.duplicate.sum() == 1
    for group in groups:
        rows = np.flatnonzero(np.isin(meter, group))
        codes = pd.factorize(meter[rows], sort=True)[0]  # a partition's own codes
        part = ef.register_to_interval_kwh(codes, t[rows], register[rows],
                                           device_codes=device[rows], rollover_kwh=100_000)
        for field in ef.RegisterSteps._fields:
            np.testing.assert_array_equal(getattr(part, field), getattr(whole, field)[rows],
                                          err_msg=f"{field} of meters {group}")


def test_duplicates_keep_the_last_read_and_order_and_meters_do_not_matter():
    s = _steps([1.0, 2.0, 2.2, 3.0], minutes=[0, 30, 30, 60])
    assert s.duplicate.tolist() == [False, True, False, False]
    assert_allclose(s.kwh, [NAN, NAN, 1.2, 0.8])
    # two meters, interleaved and shuffled: each differenced on its own, results in input order
    meters = np.array([0, 1, 0, 1, 0, 1])
    minutes = np.array([0, 0, 30, 30, 60, 60])
    register = np.array([10.0, 500.0, 11.0, 502.0, 13.0, 505.0])
    perm = np.random.default_rng(3).permutation(6)
    s = _steps(register[perm], minutes=minutes[perm], meters=meters[perm])
    expected = np.array([NAN, NAN, 1.0, 2.0, 2.0, 3.0])[perm]
    assert_allclose(s.kwh, expected)


# --- the readers ----------------------------------------------------------------------------
CONTRACT = """meter_id,timestamp,kwh
M1,2024-03-01T00:00:00,0.25
M1,2024-03-01T00:30:00,0.5
M1,2024-03-01T01:00:00,0.75
M2,2024-03-01T00:00:00,1.0
M2,2024-03-01T00:15:00,1.25
"""


def _read(path, form):
    return files.read_table(path, "readings", timezone="Europe/London", form=form)


@pytest.mark.parametrize(("text", "form"), [
    pytest.param("MeterNo,End,Wh\nM1,2024-03-01 00:30,250\nM1,2024-03-01 01:00,500\n"
                 "M1,2024-03-01 01:30,750\nM2,2024-03-01 00:15,1000\nM2,2024-03-01 00:30,1250\n",
                 {"columns": {"MeterNo": "meter_id", "End": "timestamp", "Wh": "kwh"},
                  "unit": "Wh", "timestamp_marks": "end"}, id="Wh-end"),
    pytest.param("meter_id,timestamp,kw\nM1,2024-03-01 00:00,0.5\nM1,2024-03-01 00:30,1.0\n"
                 "M1,2024-03-01 01:00,1.5\nM2,2024-03-01 00:00,4.0\nM2,2024-03-01 00:15,5.0\n",
                 {"columns": {"kw": "kwh"}, "unit": "kW"}, id="kW-start"),
    pytest.param("Id,Serial,At,Reg\nM1,A,2024-03-01 00:00,100.0\nM1,A,2024-03-01 00:30,100.25\n"
                 "M1,A,2024-03-01 01:00,100.75\nM1,A,2024-03-01 01:30,101.5\n"
                 "M2,B,2024-03-01 00:00,7.0\nM2,B,2024-03-01 00:15,8.0\n"
                 "M2,B,2024-03-01 00:30,9.25\n",
                 {"columns": {"Id": "meter_id", "Serial": "device_id", "At": "timestamp",
                              "Reg": "register_kwh"}, "unit": "kWh", "timestamp_marks": "end",
                  "value": "register"}, id="register"),
])
def test_each_export_form_reads_as_the_contract_does(tmp_path, text, form):
    (tmp_path / "contract.csv").write_text(CONTRACT)
    (tmp_path / "export.csv").write_text(text)
    expected = _read(tmp_path / "contract.csv", None).frame
    got = _read(tmp_path / "export.csv", ReadingsForm(**form)).frame
    key = [col.METER_ID, col.TIMESTAMP]
    pd.testing.assert_frame_equal(got.sort_values(key, ignore_index=True),
                                  expected.sort_values(key, ignore_index=True))


def test_register_issues_are_counted_per_meter(tmp_path):
    (tmp_path / "r.csv").write_text(
        "m,t,r\n"
        "M1,2024-03-01 00:00,99999.0\nM1,2024-03-01 00:30,99999.5\nM1,2024-03-01 01:00,0.25\n"
        "M2,2024-03-01 00:00,50.0\nM2,2024-03-01 00:30,51.0\nM2,2024-03-01 01:00,1.0\n"
        "M2,2024-03-01 01:30,2.0\nM2,2024-03-01 03:00,5.0\n")
    form = ReadingsForm(columns={"m": "meter_id", "t": "timestamp", "r": "register_kwh"},
                        timestamp_marks="end", value="register", rollover_kwh=100_000)
    read = _read(tmp_path / "r.csv", form)
    issues = read.issues.to_frame().set_index(["code", "meter_id"])["count"]
    assert issues[("readings.register_first_read", "")] == 2
    assert issues[("readings.register_rollover", "M1")] == 1
    assert issues[("readings.register_reset", "M2")] == 1
    assert issues[("readings.register_missed_reads", "M2")] == 2
    assert read.rows_in == 8 and len(read.frame) == 6  # the dropped first reads are counted
    m1 = read.frame[read.frame[col.METER_ID] == "M1"]
    assert_allclose(m1[col.KWH].to_numpy(), [0.5, 0.75])


def test_a_missing_mapped_column_names_the_file_and_its_own_column(tmp_path):
    path = tmp_path / "readings.csv"
    path.write_text("Meter,timestamp,kwh\nM1,2024-03-01 00:00,1\n")
    with pytest.raises(InputError, match="missing column 'MeterNo'") as err:
        _read(path, ReadingsForm(columns={"MeterNo": "meter_id"}))
    assert err.value.column == "MeterNo" and "readings.csv" in str(err.value.file)


@pytest.mark.parametrize(("data", "message"), [
    pytest.param({"data": {"readings": {"columns": {"X": "kwhh"}}}},
                 r"data\.readings\.columns.*'kwhh', which is not a column", id="target"),
    pytest.param({"data": {"readings": {"columns": {"A": "kwh", "B": "kwh"}}}},
                 "more than one file column is mapped to 'kwh'", id="twice"),
    pytest.param({"data": {"readings": {"value": "register"}}},
                 "set timestamp_marks = 'end'", id="register-start"),
    pytest.param({"data": {"readings": {"value": "register", "timestamp_marks": "end",
                                        "unit": "kW"}}}, "a register counts energy", id="kW-reg"),
    pytest.param({"data": {"readings": {"rollover_kwh": 1e5}}}, "applies to register reads",
                 id="rollover-interval"),
    pytest.param({"data": {"upstream": {"value": "register"}}},
                 r"unknown key 'data\.upstream\.value'", id="upstream-register"),
    pytest.param({"data": {"readings": {"unit": "kg"}}}, r"data\.readings\.unit", id="unit"),
])
def test_export_form_keys_are_validated_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize("kind", ["memory", "streaming", "dask"])
def test_every_engine_reads_export_forms(kind):
    config = config_from_dict({"data": {"readings": {"unit": "Wh", "timestamp_marks": "end"},
                                        "meters": {"columns": {"ServicePoint": "meter_id"}}},
                               "engine": {"kind": kind}})
    assert (config.engine.kind, config.data.readings.unit) == (kind, "Wh")


def test_units_are_case_insensitive():
    assert UpstreamForm(unit="mw").unit == "MW"
    assert ReadingsForm(unit="WH").unit == "Wh"


# --- end to end: the same population in both forms gives the same outputs ----------------------
ENGINES = {
    "memory": {"kind": "memory"},
    "streaming": {"kind": "streaming", "memory_budget_mb": 1},  # a partition per feeder or so
    "dask": {"kind": "dask", "memory_budget_mb": 1, "workers": 2},
}
OUTPUTS = ("flags.csv", "transformers.csv", "data_quality.csv", "topology.csv")


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms")
    labels = simulate_dataset(root / "contract", n_meters=150, days=30, seed=11,
                              as_of="2026-03-31", dirty=False)
    write_config(root / "contract", labels)
    run(root / "contract", root / "out-contract", config=_config(root / "contract", "memory"))
    return root


def _config(dataset_dir, engine):
    with open(dataset_dir / "gridwatch.toml", "rb") as handle:
        data = tomllib.load(handle)
    return config_from_dict({**data, "analysis": {"history_days": 30},
                             "report": {"enabled": False}, "cases": {"enabled": False},
                             "engine": ENGINES[engine]})


@pytest.fixture(scope="module")
def utility_run(contract_run):
    """``utility_run(registers, engine)``: the utility form's run (made once), its output dir."""
    done = {}

    def get(registers, engine):
        if (registers, engine) not in done:
            form_dir = contract_run / f"utility-{registers}"
            if not form_dir.exists():
                export_as_utility(contract_run / "contract", form_dir, registers=registers)
            out = contract_run / f"out-{registers}-{engine}"
            done[registers, engine] = out, run(form_dir, out, config=_config(form_dir, engine))
        return done[registers, engine]

    return get


@pytest.mark.parametrize("registers", [pytest.param(True, id="registers"),
                                       pytest.param(False, id="interval-Wh")])
def test_utility_export_gives_identical_outputs(contract_run, utility_run, registers):
    root = contract_run
    out, _ = utility_run(registers, "memory")
    header = (root / f"utility-{registers}" / "readings.csv").read_text().splitlines()[0]
    assert header.startswith("ServicePoint,") and "meter_id" not in header
    for name in ("flags.csv", "transformers.csv", "topology.csv"):
        assert filecmp.cmp(root / "out-contract" / name, out / name, shallow=False), name
    flags = pd.read_csv(out / "flags.csv")
    assert flags["flagged"].any()  # the comparison is not between two empty lists
    dq = pd.read_csv(out / "data_quality.csv", keep_default_na=False)
    counts = dq.groupby("code")["count"].sum()
    if registers:
        assert counts["readings.register_exchange"] == 1
        rolled = dq.loc[dq["code"] == "readings.register_rollover", "meter_id"]
        assert "M000001" in set(rolled)  # the meter export_as_utility wraps
        assert counts["readings.register_first_read"] == 150 + 1  # one per device
        for code in ("readings.register_reset", "readings.register_negative_step",
                     "readings.register_missed_reads"):
            assert code not in counts
    else:
        assert not dq["code"].str.startswith("readings.register").any()


@pytest.mark.parametrize(("registers", "engine"), [
    pytest.param(True, "streaming", id="registers-streaming"),
    pytest.param(True, "dask", id="registers-dask"),
    pytest.param(False, "streaming", id="interval-Wh-streaming"),
])
def test_every_engine_publishes_the_same_from_a_utility_export(contract_run, utility_run,
                                                               registers, engine):
    """Partitioned, each part of the export is converted as the whole is (issue 16 with 15)."""
    if engine == "dask":
        pytest.importorskip("dask.distributed")
    memory, _ = utility_run(registers, "memory")
    out, result = utility_run(registers, engine)
    assert result.info["engine"] == {"kind": engine,
                                     "partitions": result.info["engine"]["partitions"]}
    assert result.info["engine"]["partitions"] >= 2  # the parts are put to the test
    for name in OUTPUTS:
        assert filecmp.cmp(memory / name, out / name, shallow=False), name
    assert filecmp.cmp(contract_run / "out-contract" / "flags.csv", out / "flags.csv",
                       shallow=False)
    dq = pd.read_csv(out / "data_quality.csv", keep_default_na=False)
    first = dq[dq["code"] == "readings.register_first_read"]
    assert len(first) == (1 if registers else 0)  # one table-wide row, the parts' counts added


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_partitions_of_an_export_add_up_to_its_whole_read(contract_run, utility_run, tmp_path,
                                                          fmt):
    from gridwatch.partitions import plan_partitions
    from gridwatch.sources.partitioned import open_readings, open_upstream

    utility_run(True, "memory")
    src = contract_run / "utility-True"
    data = _config(src, "memory").data
    meters = files.read_table(src / "meters.csv", "meters", form=data.meters).frame
    plan = plan_partitions(meters, budget_bytes=40_000, bytes_per_meter=1000)
    assert plan.n_partitions >= 3
    paths = {table: src / f"{table}.csv" for table in ("readings", "upstream")}
    if fmt == "parquet":  # in file order, small row groups: read by row group
        for table, path in paths.items():
            paths[table] = tmp_path / f"{table}.parquet"
            pd.read_csv(path, dtype=str).to_parquet(paths[table], row_group_size=2_000)
    for table, opener, id_column in (("readings", open_readings, col.METER_ID),
                                     ("upstream", open_upstream, col.ASSET_ID)):
        whole = files.read_table(paths[table], table, timezone=data.timezone,
                                 form=data.form_of(table))
        with opener(paths[table], plan, timezone=data.timezone,
                    form=data.form_of(table)) as parts:
            assert parts.strategy == ("spill" if fmt == "csv" else "row_groups")
            reads = [parts.read(key) for key in parts.keys]
        got = pd.concat([frame for frame, _, _ in reads if frame is not None])
        key = [id_column, col.TIMESTAMP]
        pd.testing.assert_frame_equal(
            got.astype({id_column: str}).sort_values(key, ignore_index=True),
            whole.frame.astype({id_column: str}).sort_values(key, ignore_index=True))
        assert sum(rows for _, _, rows in reads) == whole.rows_in
        logs = IssueLog()
        for _, log, _ in reads:
            logs.extend(log)
        pd.testing.assert_frame_equal(logs.to_frame(), whole.issues.to_frame())


def test_the_readme_register_example(tmp_path):
    """README 'Data as utilities hold it', form 4: the numbers it states."""
    (tmp_path / "readings.csv").write_text(
        "ServicePoint,MeterSerial,ReadTime,RegisterWh\n"
        "M00017,A-991,2026-03-01 00:00,99999800\nM00017,A-991,2026-03-01 00:30,99999912\n"
        "M00017,A-991,2026-03-01 01:00,20\nM00017,A-991,2026-03-01 01:30,250\n"
        "M00017,B-107,2026-03-01 01:30,7000\nM00017,B-107,2026-03-01 02:00,7140\n")
    form = ReadingsForm(columns={"ServicePoint": "meter_id", "MeterSerial": "device_id",
                                 "ReadTime": "timestamp", "RegisterWh": "register_kwh"},
                        unit="Wh", timestamp_marks="end", value="register", rollover_kwh=100000)
    read = _read(tmp_path / "readings.csv", form)
    frame = read.frame.sort_values(col.TIMESTAMP)
    assert frame[col.TIMESTAMP].dt.strftime("%H:%M").tolist() == ["00:00", "00:30", "01:00",
                                                                  "01:30"]
    assert_allclose(frame[col.KWH].to_numpy(), [0.112, 0.108, 0.230, 0.140])
    assert read.issues.total("readings.register_rollover") == 1
    assert read.issues.total("readings.register_exchange") == 1
