"""Credentials against a real InfluxDB 1.x with authentication on; they never show."""

import urllib.parse
import urllib.request
import uuid

import pytest

from gridwatch.errors import ConfigError
from gridwatch.influx import ingest_dataset, read_influx_dataset
from gridwatch.influx.client import Credentials, V1Client, display_url, resolve_credentials
from gridwatch.simulate import simulate_dataset
from tests.influxdb_server import influx_config, require_influxd, start_influxd

PASSWORD = "pw-" + uuid.uuid4().hex
USER = "gw_admin"


@pytest.fixture(scope="module")
def auth_server():
    server = start_influxd(influxd=require_influxd(),
                           settings={"INFLUXDB_HTTP_AUTH_ENABLED": "true"})
    # With no user yet, 1.x accepts exactly one statement without credentials: the first admin.
    body = urllib.parse.urlencode({"q": f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' "
                                        "WITH ALL PRIVILEGES"}).encode()
    with urllib.request.urlopen(server.url + "/query", data=body, timeout=5) as response:
        assert response.status == 200
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small")
    simulate_dataset(path, n_meters=15, days=14, as_of="2026-03-14", seed=1, timezone="UTC",
                     upstream=False)
    return path


def test_credentials_from_the_environment_are_accepted(auth_server, small, monkeypatch):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_USERNAME", USER)
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", PASSWORD)
    config = influx_config(auth_server.url, "auth_env", analysis={"history_days": 14},
                           influxdb={"upstream": {"measurement": ""}})
    counts = ingest_dataset(small, config)
    assert counts["readings"] > 0
    import pandas as pd

    ds = read_influx_dataset(config, start=pd.Timestamp("2026-03-01", tz="UTC"),
                             end=pd.Timestamp("2026-03-15", tz="UTC"))
    assert len(ds.meters) == 15


def test_a_token_file_with_user_and_password_is_accepted(auth_server, small, tmp_path,
                                                         monkeypatch):
    for name in ("GRIDWATCH_INFLUXDB_USERNAME", "GRIDWATCH_INFLUXDB_PASSWORD",
                 "GRIDWATCH_INFLUXDB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    secret = tmp_path / "influx.secret"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    config = influx_config(auth_server.url, "auth_file", influxdb={"token_file": str(secret)})
    assert ingest_dataset(small, config)["readings"] > 0


def test_wrong_or_missing_credentials_are_a_config_error_that_never_shows_them(
        auth_server, small, monkeypatch):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_USERNAME", USER)
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", "wrong-" + PASSWORD)
    config = influx_config(auth_server.url, "auth_bad")
    with pytest.raises(ConfigError, match="refused \\(HTTP 401") as info:
        ingest_dataset(small, config)
    assert PASSWORD not in str(info.value) and USER not in str(info.value)
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_USERNAME")
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_PASSWORD")
    with pytest.raises(ConfigError, match="HTTP 401"):
        ingest_dataset(small, config)


def test_secrets_stay_out_of_reprs_and_urls(monkeypatch):
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_TOKEN", PASSWORD)
    config = influx_config("http://127.0.0.1:8086/", "db")
    credentials = resolve_credentials(config.influxdb)
    assert credentials.headers() == {"Authorization": f"Token {PASSWORD}"}
    assert PASSWORD not in repr(credentials)
    client = V1Client(config.influxdb, credentials)
    assert PASSWORD not in repr(client) and PASSWORD not in client.url
    assert display_url(f"https://u:{PASSWORD}@influx.example:8086/base/?db=x") == \
        "https://influx.example:8086/base"
    assert repr(Credentials(username="u", password=PASSWORD)) == "Credentials()"


def _run_toml(tmp_path, url, database):
    path = tmp_path / "run.toml"
    path.write_text(f'[source]\nkind = "influxdb"\n[influxdb]\nurl = "{url}"\n'
                    f'database = "{database}"\nretries = 1\nbackoff_s = 0.0\n'
                    "[cases]\nenabled = false\n[report]\nenabled = false\n")
    return str(path)


@pytest.mark.parametrize("token", [
    pytest.param(f"tok-{PASSWORD}\n", id="trailing-newline"),
    pytest.param(f"tok-{PASSWORD}\r\n", id="trailing-crlf"),
    pytest.param(f"tok-{PASSWORD}\u2013x", id="en-dash-not-latin-1"),
    pytest.param(f"tok-{PASSWORD}\nX-Injected: 1", id="embedded-newline"),
])
def test_a_bad_token_is_exit_2_in_one_line_that_never_shows_it(auth_server, tmp_path,
                                                              monkeypatch, token):
    """Issue 14 item 1: was `internal error: ValueError: Invalid header value b'Token tok-...'`."""
    from click.testing import CliRunner

    from gridwatch.cli import main

    for name in ("GRIDWATCH_INFLUXDB_USERNAME", "GRIDWATCH_INFLUXDB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_TOKEN", token)
    log = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", "--output", str(tmp_path / "out"), "--as-of",
                                       "2026-03-14", "--log-file", str(log), "--config",
                                       _run_toml(tmp_path, auth_server.url, "auth_token")])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridwatch: error: ")
    if token.strip().isascii() and token.strip().isprintable():  # sent, and refused by the server
        assert "refused (HTTP 401" in lines[0]
    else:
        assert "GRIDWATCH_INFLUXDB_TOKEN has a" in lines[0]
        assert "which an HTTP header cannot carry" in lines[0]
    shown = result.stderr + result.output + log.read_text()
    assert PASSWORD not in shown and "exit 2:" in log.read_text()


def test_credentials_with_a_trailing_line_break_are_accepted(auth_server, small, monkeypatch):
    """The line break an env file written by hand leaves is dropped, as from the token file."""
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_USERNAME", USER + "\n")
    monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", PASSWORD + "\r\n")
    config = influx_config(auth_server.url, "auth_crlf", influxdb={"upstream": {"measurement": ""}})
    assert ingest_dataset(small, config)["readings"] > 0
