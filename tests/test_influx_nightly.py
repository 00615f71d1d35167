"""A nightly run from a real InfluxDB: results written back, and an outage publishes nothing."""

import json
import os
import uuid

import pytest
from click.testing import CliRunner

from gridwatch.cli import main
from gridwatch.simulate import simulate_dataset
from tests.influxdb_server import ClosingProxy
from tests.test_influx_sink import _points

AS_OF_1, AS_OF_2 = "2026-03-30", "2026-03-31"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=120, days=30, as_of=AS_OF_2, seed=4)  # two feeders
    return path


def _config(tmp_path, dataset, url, database, *, sink=False):
    path = tmp_path / f"nightly_{uuid.uuid4().hex[:6]}.toml"
    path.write_text(f"""
[data]
timezone = "Europe/London"
[analysis]
history_days = 21
[report]
plots = false
[source]
kind = "influxdb"
meters_file = "{dataset / 'meters.csv'}"
[influxdb]
url = "{url}"
database = "{database}"
retries = 1
backoff_s = 0.0
ids_per_query = 10
days_per_query = 3
[sink]
influxdb = {str(sink).lower()}
""")
    return str(path)


@pytest.fixture(scope="module")
def ingested(influxdb_server, dataset, tmp_path_factory):
    database = f"nightly_{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path_factory.mktemp("cfg"), dataset, influxdb_server.url, database)
    result = CliRunner().invoke(main, ["ingest", "--input", str(dataset), "--config", config])
    assert result.exit_code == 0, result.stderr
    return database


def test_a_nightly_run_writes_its_flags_back_to_influxdb(influxdb_server, dataset, ingested,
                                                         tmp_path):
    from gridwatch.config import load_config

    config = _config(tmp_path, dataset, influxdb_server.url, ingested, sink=True)
    root = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--config", config, "--output-root", str(root),
                                       "--as-of", AS_OF_2, "--quiet"])
    assert result.exit_code == 0, result.stderr
    info = json.loads((root / "latest" / "run.json").read_text())
    assert info["source"] == "influxdb" and info["input_dir"] is None
    flags = (root / "latest" / "flags.csv").read_text().splitlines()
    assert info["sink"]["flags"] == len(flags) - 1
    back = _points(load_config(config), "gridwatch_flags")
    assert len(back) == len(flags) - 1
    assert sorted(back["meter_id"]) == sorted(line.split(",")[0] for line in flags[1:])


def test_the_server_going_away_mid_run_is_exit_4_and_publishes_nothing(influxdb_server, dataset,
                                                                      ingested, tmp_path):
    root = tmp_path / "runs"
    good = _config(tmp_path, dataset, influxdb_server.url, ingested)
    assert CliRunner().invoke(main, ["run", "--config", good, "--output-root", str(root),
                                     "--as-of", AS_OF_1, "--quiet"]).exit_code == 0
    before = (root / "latest" / "flags.csv").read_bytes()
    port = int(influxdb_server.url.rsplit(":", 1)[1])
    with ClosingProxy(port, max_requests=12) as proxy:
        flaky = _config(tmp_path, dataset, proxy.url, ingested)
        result = CliRunner().invoke(main, ["run", "--config", flaky, "--output-root", str(root),
                                           "--as-of", AS_OF_2])
        assert proxy.requests > 8  # the run had started reading
    assert result.exit_code == 4, result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "failed after 2 attempts" in lines[0]
    assert os.readlink(root / "latest") == AS_OF_1
    assert (root / "latest" / "flags.csv").read_bytes() == before
    assert not (root / AS_OF_2).exists() and not list(root.glob(".staging-*"))


@pytest.mark.parametrize("engine", ["streaming", "dask"])
def test_partitions_read_from_influxdb_by_their_ids_give_the_all_at_once_outputs(
        influxdb_server, dataset, ingested, tmp_path, engine):
    config = _config(tmp_path, dataset, influxdb_server.url, ingested)
    with open(config, "a") as handle:
        handle.write("[engine]\nmemory_budget_mb = 1\n[cases]\nenabled = false\n")
    outs = {}
    for kind in ("memory", engine):
        outs[kind] = tmp_path / kind
        result = CliRunner().invoke(main, ["run", "--config", config, "--output", str(outs[kind]),
                                           "--as-of", AS_OF_2, "--engine", kind, "--quiet"])
        assert result.exit_code == 0, result.stderr
    for name in ("flags.csv", "transformers.csv", "data_quality.csv"):
        assert (outs[engine] / name).read_text() == (outs["memory"] / name).read_text(), name
    ours, theirs = (json.loads((outs[k] / "run.json").read_text()) for k in (engine, "memory"))
    assert ours["counts"] == theirs["counts"]
    assert ours["engine"]["partitions"] >= 2  # two feeders (whole, for the topology check)
    assert "true" in (outs[engine] / "flags.csv").read_text()
