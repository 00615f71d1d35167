"""`gridwatch run --engine streaming|dask` publishes what the all-at-once run publishes."""

import json

import pytest
from click.testing import CliRunner

from gridwatch.cli import main
from gridwatch.simulate import simulate_dataset

AS_OF = "2026-03-31"
FILES = ("flags.csv", "transformers.csv", "data_quality.csv", "inspections.csv")


@pytest.fixture(scope="module", params=["parquet", "csv"])
def dataset(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"sim_{request.param}")
    simulate_dataset(path, n_meters=240, days=30, as_of=AS_OF, seed=8, fmt=request.param)
    (path / "run.toml").write_text("[analysis]\nhistory_days = 30\n[cases]\nenabled = false\n"
                                   "[report]\nplots = false\n[engine]\nmemory_budget_mb = 7\n")
    return path


def _run(dataset, out, *extra):
    result = CliRunner().invoke(main, ["run", "--input", str(dataset), "--output", str(out),
                                       "--config", str(dataset / "run.toml"), "--quiet", *extra])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def all_at_once(dataset, tmp_path_factory):
    return _run(dataset, tmp_path_factory.mktemp("memory") / "out", "--engine", "memory")


@pytest.mark.parametrize("engine", ["streaming", "dask"])
def test_partitioned_engines_publish_the_all_at_once_outputs(dataset, all_at_once, engine,
                                                            tmp_path):
    out = _run(dataset, tmp_path / "out", "--engine", engine)
    assert json.loads((all_at_once / "run.json").read_text())["engine"] == {
        "kind": "memory", "partitions": 1}
    for name in FILES:
        assert (out / name).read_text() == (all_at_once / name).read_text(), name
    ours, theirs = (json.loads((d / "run.json").read_text()) for d in (out, all_at_once))
    assert ours["counts"] == theirs["counts"]  # rows in / used / dropped by reason, per table
    assert ours["as_of"] == theirs["as_of"]  # the default as-of: the latest over all partitions
    assert "true" in (out / "flags.csv").read_text()
    assert (out / "report.html").is_file()
    assert ours["engine"] == {"kind": engine, "partitions": ours["engine"]["partitions"]}
    assert ours["engine"]["partitions"] >= 3  # the shared calibrations were put to the test


@pytest.mark.parametrize("engine", ["streaming", "dask"])
def test_a_partitioned_run_leaves_no_spill_or_cache_behind(dataset, engine, tmp_path,
                                                          monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # here and in the cluster's workers
    monkeypatch.setattr(tempfile, "tempdir", None)
    _run(dataset, tmp_path / "out", "--engine", engine)
    left = [p.name for p in scratch.iterdir() if p.name.startswith("gridwatch-")]
    assert left == []  # neither a CSV's spill (client's or a worker's) nor the passes' cache


def _results(dataset, **kwargs):
    from gridwatch.config import load_config
    from gridwatch.pipeline import run

    config = load_config(dataset / "run.toml")

    def engine(kind):
        return config.model_copy(update={"engine": config.engine.model_copy(update={"kind": kind})})

    memory = run(dataset, None, as_of=AS_OF, config=engine("memory"))
    streaming = run(dataset, None, as_of=AS_OF, config=engine("streaming"), **kwargs)
    return memory, streaming


def _drawn(data) -> dict:
    import numpy as np

    return {k: v for k, v in vars(data).items() if isinstance(v, np.ndarray | str | float | tuple)}


def test_a_partitioned_run_keeps_only_what_it_draws_and_draws_it_the_same(dataset):
    import numpy as np

    from gridwatch.report.plots import Plotter, flagged_sites

    memory, streaming = _results(dataset)
    assert streaming.info["engine"]["partitions"] >= 3
    kept = set(streaming.kw.columns.astype(str))
    flagged = set(streaming.detection.table.index[streaming.detection.table["flagged"]])
    suspects = set(streaming.balance.suspects["meter_id"].astype(str))
    assert kept == flagged | suspects  # the end of the run is O(flagged), not O(meters)
    assert len(kept) < 0.5 * memory.kw.shape[1]
    assert streaming.detection.mean_kw.shape[1] == len(kept) == len(streaming.meters)
    sites = flagged_sites(memory)
    assert sites == flagged_sites(streaming) and len(sites) >= 3
    ours, theirs = Plotter(streaming), Plotter(memory)
    for site in sites:  # every plot shows the same numbers (peer bands included)
        a, b = _drawn(ours.data(site)), _drawn(theirs.data(site))
        assert a.keys() == b.keys()
        for key in a:
            ours_value, theirs_value = a[key], b[key]
            if not isinstance(ours_value, tuple):
                ours_value, theirs_value = (ours_value,), (theirs_value,)
            assert len(ours_value) == len(theirs_value), (site, key)
            for x, y in zip(ours_value, theirs_value, strict=True):
                if isinstance(x, np.ndarray | float):
                    np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=f"{site} {key}")
                else:
                    assert x == y, (site, key)


def test_a_partitioned_run_keeps_a_site_asked_for(dataset, tmp_path):
    memory, streaming = _results(dataset, keep_sites=["M000002"])
    assert not memory.detection.table.loc["M000002", "flagged"]
    assert "M000002" in set(streaming.kw.columns.astype(str))
    (tmp_path / "s.toml").write_text((dataset / "run.toml").read_text()
                                     .replace("[engine]", "[engine]\nkind = 'streaming'"))
    result = CliRunner().invoke(main, ["plot", "M000002", "--input", str(dataset), "--as-of", AS_OF,
                                       "--config", str(tmp_path / "s.toml"),
                                       "-o", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "m.png").stat().st_size > 10_000


@pytest.mark.parametrize("damage, message", [
    ("timestamps", "timestamps of the readings table cannot be parsed"),
    ("kwh", "column 'kwh' of the readings table holds no number"),
])
def test_a_partitioned_run_refuses_a_broken_file_as_the_full_read_does(tmp_path, damage, message):
    import pandas as pd

    path = tmp_path / "data"
    simulate_dataset(path, n_meters=200, days=20, as_of=AS_OF, seed=2, fmt="csv")  # 3 feeders
    readings = pd.read_csv(path / "readings.csv", dtype=str)
    if damage == "timestamps":  # 15 % unreadable, spread over every partition
        readings.loc[readings.index % 7 == 0, "timestamp"] = "31/02/2026 25:00"
    else:
        readings["kwh"] = readings["kwh"] + " kWh"  # a unit in every cell
    readings.to_csv(path / "readings.csv", index=False)
    (path / "run.toml").write_text("[analysis]\nhistory_days = 20\n[engine]\nmemory_budget_mb = 2\n")
    for engine in ("memory", "streaming"):
        result = CliRunner().invoke(main, ["run", "--input", str(path), "--output",
                                           str(tmp_path / engine), "--as-of", AS_OF, "--config",
                                           str(path / "run.toml"), "--engine", engine, "--quiet"])
        assert result.exit_code == 3, (engine, result.stderr)
        assert "readings.csv" in result.stderr
        if engine == "streaming":
            assert message in result.stderr


def test_a_partition_whose_meters_all_lost_their_values_does_not_sink_the_run(tmp_path):
    import pandas as pd

    path = tmp_path / "data"
    simulate_dataset(path, n_meters=200, days=20, as_of=AS_OF, seed=2, fmt="csv")  # 3 feeders
    meters = pd.read_csv(path / "meters.csv", dtype=str)
    silent = meters.loc[meters["transformer_id"] == meters["transformer_id"].iloc[0], "meter_id"]
    readings = pd.read_csv(path / "readings.csv", dtype=str)
    readings.loc[readings["meter_id"].isin(silent), "kwh"] = ""  # a head-end outage
    readings.to_csv(path / "readings.csv", index=False)
    (path / "run.toml").write_text("[analysis]\nhistory_days = 20\n[engine]\nmemory_budget_mb = 2\n"
                                   "[report]\nplots = false\n[cases]\nenabled = false\n")
    outs = {}
    for engine in ("memory", "streaming"):
        outs[engine] = tmp_path / engine
        result = CliRunner().invoke(main, ["run", "--input", str(path), "--output",
                                           str(outs[engine]), "--as-of", AS_OF, "--config",
                                           str(path / "run.toml"), "--engine", engine, "--quiet"])
        assert result.exit_code == 0, (engine, result.stderr)
    for name in FILES:
        assert (outs["streaming"] / name).read_text() == (outs["memory"] / name).read_text(), name
    assert json.loads((outs["streaming"] / "run.json").read_text())["engine"]["partitions"] >= 3
    assert set(silent) <= set(pd.read_csv(outs["memory"] / "data_quality.csv")["meter_id"])


def test_partitions_that_end_earlier_are_gridded_on_the_runs_window(tmp_path, caplog):
    import logging

    import pandas as pd

    path = tmp_path / "data"
    simulate_dataset(path, n_meters=200, days=20, as_of=AS_OF, seed=2, fmt="csv")  # 3 feeders
    meters = pd.read_csv(path / "meters.csv", dtype=str)
    feeders = sorted(meters["feeder_id"].unique())  # a partition holds whole feeders
    late = meters.loc[meters["feeder_id"].isin(feeders[::2]), "meter_id"]
    readings = pd.read_csv(path / "readings.csv", dtype=str)
    cut = pd.to_datetime(readings["timestamp"], utc=True) >= pd.Timestamp("2026-03-29", tz="UTC")
    readings[~(readings["meter_id"].isin(late) & cut)].to_csv(path / "readings.csv", index=False)
    (path / "run.toml").write_text("[analysis]\nhistory_days = 20\n[engine]\nmemory_budget_mb = 2\n"
                                   "[report]\nplots = false\n[cases]\nenabled = false\n")
    outs = {}
    for engine in ("memory", "streaming"):
        outs[engine] = tmp_path / engine
        with caplog.at_level(logging.INFO, logger="gridwatch.runner"):
            result = CliRunner().invoke(main, ["run", "--input", str(path), "--output",
                                               str(outs[engine]), "--config",
                                               str(path / "run.toml"), "--engine", engine,
                                               "--quiet"])
        assert result.exit_code == 0, (engine, result.stderr)
    assert "gridded again" in caplog.text  # some partitions' own last day was earlier
    for name in FILES:
        assert (outs["streaming"] / name).read_text() == (outs["memory"] / name).read_text(), name
    ours, theirs = (json.loads((outs[e] / "run.json").read_text()) for e in ("streaming", "memory"))
    assert ours["as_of"] == theirs["as_of"] and ours["counts"] == theirs["counts"]


def test_a_dataset_within_one_partition_finds_its_as_of_too(tmp_path):
    path = tmp_path / "data"
    simulate_dataset(path, n_meters=40, days=20, as_of=AS_OF, seed=5)
    (path / "run.toml").write_text("[analysis]\nhistory_days = 20\n[report]\nplots = false\n"
                                   "[cases]\nenabled = false\n")  # default budget: 1 partition
    outs = {}
    for engine in ("memory", "streaming"):
        outs[engine] = tmp_path / engine
        result = CliRunner().invoke(main, ["run", "--input", str(path), "--output",
                                           str(outs[engine]), "--config",
                                           str(path / "run.toml"), "--engine", engine, "--quiet"])
        assert result.exit_code == 0, (engine, result.stderr)
    ours, theirs = (json.loads((outs[e] / "run.json").read_text()) for e in ("streaming", "memory"))
    assert ours["engine"]["partitions"] == 1
    assert ours["as_of"] == theirs["as_of"]  # the last full day, found by the same rule
    for name in FILES:
        assert (outs["streaming"] / name).read_text() == (outs["memory"] / name).read_text(), name


def test_a_partitioned_run_without_plots_keeps_no_meters_arrays(dataset, tmp_path):
    from gridwatch.config import load_config
    from gridwatch.pipeline import run

    config = load_config(dataset / "run.toml")  # report.plots = false
    config = config.model_copy(update={"engine": config.engine.model_copy(
        update={"kind": "streaming"})})
    result = run(dataset, tmp_path / "out", as_of=AS_OF, config=config)
    assert result.info["engine"]["partitions"] >= 3
    assert result.kw.shape[1] == 0 and len(result.meters) == 0
    assert result.flags["flagged"].eq("true").any()  # the flags themselves are all there
    asked = run(dataset, tmp_path / "again", as_of=AS_OF, config=config,
                keep_sites=[result.flags["meter_id"].iloc[0]])
    assert list(asked.kw.columns) == [result.flags["meter_id"].iloc[0]]


def test_dask_on_an_existing_scheduler_publishes_the_same_and_leaves_it_running(
        dataset, all_at_once, tmp_path):
    from dask.distributed import Client, LocalCluster

    # "An existing cluster": started here, as an operator would, on loopback.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        out = _run(dataset, tmp_path / "out", "--engine", "dask",
                   "--scheduler", cluster.scheduler_address)
        for name in FILES:
            assert (out / name).read_text() == (all_at_once / name).read_text(), name
        info = json.loads((out / "run.json").read_text())
        assert info["engine"]["partitions"] >= 3
        with Client(cluster.scheduler_address) as client:  # the run closed only its client
            assert len(client.scheduler_info()["workers"]) == 2
