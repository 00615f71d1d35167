"""End to end through the command line: ingest a dataset, run from InfluxDB, same flags as files."""

import os
import uuid

import pytest
from click.testing import CliRunner

from gridwatch.cli import main
from gridwatch.simulate import simulate_dataset
from tests.influxdb_server import free_port

AS_OF = "2026-03-31"
DAYS = 35
SECRET = "s3cret-never-printed"

V2_ENV = ("GRIDWATCH_TEST_INFLUXDB2_URL", "GRIDWATCH_TEST_INFLUXDB2_TOKEN",
          "GRIDWATCH_TEST_INFLUXDB2_ORG", "GRIDWATCH_TEST_INFLUXDB2_BUCKET")



@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=150, days=DAYS, as_of=AS_OF, seed=3)
    return path


def _toml(path, text):
    path.write_text(text)
    return str(path)


COMMON = f"""
[data]
timezone = "Europe/London"
[analysis]
history_days = {DAYS}
[cases]
enabled = false
[report]
enabled = false
"""


def _influx_toml(tmp_path, dataset, influx_lines, *, meters=True):
    meters_line = f'meters_file = "{dataset / "meters.csv"}"\n' if meters else ""
    return _toml(tmp_path / "influx.toml", COMMON + '[source]\nkind = "influxdb"\n' + meters_line
                 + "[influxdb]\n" + influx_lines)


def _run_on_files(runner, dataset, tmp_path):
    out = tmp_path / "files"
    config = _toml(tmp_path / "files.toml", COMMON)
    result = runner.invoke(main, ["run", "--input", str(dataset), "--output", str(out),
                                  "--as-of", AS_OF, "--config", config])
    assert result.exit_code == 0, result.output + result.stderr
    return out


def _assert_same_outputs(from_influx, from_files):
    for name in ("flags.csv", "transformers.csv"):
        assert (from_influx / name).read_text() == (from_files / name).read_text(), name
    assert "true" in (from_files / "flags.csv").read_text()  # the comparison has flags in it


def _run_from_influx(runner, config, out):
    result = runner.invoke(main, ["run", "--output", str(out), "--as-of", AS_OF,
                                  "--config", config])
    assert result.exit_code == 0, result.output + result.stderr
    return out


def test_ingest_then_run_from_influxdb_gives_the_flags_of_the_files(influxdb_server, dataset,
                                                                     tmp_path):
    runner = CliRunner()
    config = _influx_toml(tmp_path, dataset, f'url = "{influxdb_server.url}"\n'
                                             f'database = "e2e_{uuid.uuid4().hex[:8]}"\n'
                                             "ids_per_query = 40\ndays_per_query = 10\n")
    ingested = runner.invoke(main, ["ingest", "--input", str(dataset), "--config", config])
    assert ingested.exit_code == 0, ingested.output + ingested.stderr
    assert "readings" in ingested.output and "upstream" in ingested.output

    from_files = _run_on_files(runner, dataset, tmp_path)
    from_influx = _run_from_influx(runner, config, tmp_path / "influx")
    _assert_same_outputs(from_influx, from_files)


def test_ingest_has_help_with_an_example():
    result = CliRunner().invoke(main, ["ingest", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_unreachable_server_is_exit_4_in_one_line_without_secrets(dataset, tmp_path, monkeypatch,
                                                                  command):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_USERNAME", "gridwatch")
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", SECRET)
    url = f"http://127.0.0.1:{free_port()}"
    config = _influx_toml(tmp_path, dataset, f'url = "{url}"\nretries = 1\nbackoff_s = 0\n')
    args = (["ingest", "--input", str(dataset)] if command == "ingest"
            else ["run", "--output", str(tmp_path / "out"), "--as-of", AS_OF])
    result = CliRunner().invoke(main, [*args, "--config", config])
    assert result.exit_code == 4, result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gridwatch: error: InfluxDB at {url}")
    assert "after 2 attempts" in lines[0]
    assert SECRET not in result.stderr + result.output


def test_credentials_in_the_url_are_refused_without_echoing_them(dataset, tmp_path):
    config = _influx_toml(tmp_path, dataset, f'url = "http://admin:{SECRET}@127.0.0.1:8086"\n')
    result = CliRunner().invoke(main, ["ingest", "--input", str(dataset), "--config", config])
    assert result.exit_code == 2
    assert "carries credentials" in result.stderr and SECRET not in result.stderr


def test_ingest_of_a_missing_directory_is_exit_3(tmp_path):
    result = CliRunner().invoke(main, ["ingest", "--input", str(tmp_path / "nope")])
    assert result.exit_code == 3 and "input directory not found" in result.stderr


@pytest.mark.skipif(not all(os.environ.get(name) for name in V2_ENV),
                    reason="no InfluxDB 2.x server to test against: set "
                           + ", ".join(V2_ENV) + " (the bucket must be writable; none can be "
                           "installed on the test machine)")
def test_v2_ingest_then_run_gives_the_flags_of_the_files(dataset, tmp_path):
    """The same end to end test through influxdb-client and Flux (InfluxDB 2.x / Cloud)."""
    runner = CliRunner()
    prefix = f"gw_test_{uuid.uuid4().hex[:8]}_"
    schema = "".join(f'[influxdb.{table}]\nmeasurement = "{prefix}{table}"\nid_tag = "{tag}"\n'
                     f'field = "{field}"\nunit = "{unit}"\n'
                     for table, tag, field, unit in [("readings", "meter_id", "kwh", "kwh"),
                                                     ("upstream", "asset_id", "kwh", "kwh"),
                                                     ("weather", "region", "temperature_c", "c")])
    config = _influx_toml(
        tmp_path, dataset,
        f'url = "{os.environ["GRIDWATCH_TEST_INFLUXDB2_URL"]}"\napi = "v2"\n'
        f'org = "{os.environ["GRIDWATCH_TEST_INFLUXDB2_ORG"]}"\n'
        f'database = "{os.environ["GRIDWATCH_TEST_INFLUXDB2_BUCKET"]}"\n'
        'token_env = "GRIDWATCH_TEST_INFLUXDB2_TOKEN"\nids_per_query = 40\n' + schema)
    ingested = runner.invoke(main, ["ingest", "--input", str(dataset), "--config", config])
    assert ingested.exit_code == 0, ingested.output + ingested.stderr
    from_files = _run_on_files(runner, dataset, tmp_path)
    from_influx = _run_from_influx(runner, config, tmp_path / "influx")
    _assert_same_outputs(from_influx, from_files)
