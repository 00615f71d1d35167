"""Reading the inputs from a real InfluxDB 1.x: ids, units, meters, errors, outages."""

import socket
import threading
import uuid

import numpy as np
import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.errors import ConfigError, InputError, SourceUnreachable
from gridwatch.influx import ingest_dataset, read_influx_dataset
from gridwatch.influx.backend import connect
from gridwatch.influx.client import V1Client
from gridwatch.influx.source import read_table
from gridwatch.simulate import simulate_dataset
from gridwatch.sources import read_meters
from tests.influxdb_server import ClosingProxy, LoopbackHTTP, free_port, influx_config

START = pd.Timestamp("2026-03-01", tz="UTC")
END = pd.Timestamp("2026-03-04", tz="UTC")
HOSTILE = ['x" or 1=1', "a' |> drop()", "back\\slash", 'q"uo\'te', "c,d e=f", "${x}"]


def _database() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def _write_dataset(path, ids, *, minutes=60, days=3, meters_extra=None):
    """A tiny contract dataset: hourly kwh = meter number + hour / 100 (known by hand)."""
    path.mkdir(parents=True, exist_ok=True)
    meters = pd.DataFrame({"meter_id": ids, "transformer_id": "T1", "region": "north",
                           **(meters_extra or {})})
    meters.to_csv(path / "meters.csv", index=False)
    times = pd.date_range(START, periods=days * 24 * 60 // minutes, freq=f"{minutes}min")
    rows = [pd.DataFrame({"meter_id": m, "timestamp": times,
                          "kwh": i + np.arange(len(times)) / 100}) for i, m in enumerate(ids)]
    readings = pd.concat(rows, ignore_index=True)
    readings.to_parquet(path / "readings.parquet", index=False)
    return meters, readings


def _read(config, spec_name="readings", ids=None, column=col.KWH):
    backend = connect(config.influxdb)
    spec = getattr(config.influxdb, spec_name)
    return read_table(backend, spec, start_ns=START.value, end_ns=END.value, value_column=column,
                      id_column=col.METER_ID, config=config.influxdb, keep_ids=ids)


def test_hostile_ids_round_trip_and_read_only_their_own_rows(influxdb_server, tmp_path):
    ids = ["normal", *HOSTILE]
    _, written = _write_dataset(tmp_path / "ds", ids)
    config = influx_config(influxdb_server.url, _database())
    ingest_dataset(tmp_path / "ds", config)

    everything = _read(config)
    assert sorted(everything[col.METER_ID].cat.categories) == sorted(ids)
    assert len(everything) == len(written)
    for meter in HOSTILE:
        alone = _read(config, ids={meter})
        assert set(alone[col.METER_ID]) == {meter}
        expected = written[written["meter_id"] == meter]["kwh"].to_numpy()
        assert np.array_equal(np.sort(alone[col.KWH].to_numpy()), np.sort(expected))
    normal_before = _read(config, ids={"normal"})
    _read(config, ids=set(HOSTILE))  # the injection attempts read and change nothing
    normal_after = _read(config, ids={"normal"})
    pd.testing.assert_frame_equal(normal_before, normal_after)
    assert len(_read(config)) == len(written)


def test_ids_line_protocol_cannot_carry_are_refused_naming_them(influxdb_server, tmp_path):
    _write_dataset(tmp_path / "ds", ["fine", "ends\\"])
    config = influx_config(influxdb_server.url, _database())
    with pytest.raises(InputError, match=r"cannot be written as InfluxDB tag values: 'ends\\\\'"):
        ingest_dataset(tmp_path / "ds", config)


@pytest.mark.parametrize(("unit", "stored_per_kwh"), [
    ("kwh", lambda hours: 1.0),
    ("wh", lambda hours: 1000.0),
    ("kw", lambda hours: 1.0 / hours),
    ("w", lambda hours: 1000.0 / hours),
], ids=["kwh", "wh", "kw", "w"])
@pytest.mark.parametrize("minutes", [15, 30, 60], ids=["15min", "30min", "60min"])
def test_units_are_stored_as_configured_and_read_back_as_kwh(influxdb_server, tmp_path, unit,
                                                             stored_per_kwh, minutes):
    _, written = _write_dataset(tmp_path / "ds", ["m1", "m2"], minutes=minutes, days=1)
    config = influx_config(influxdb_server.url, _database(),
                           influxdb={"readings": {"measurement": "load", "id_tag": "meter",
                                                  "field": "value", "unit": unit}})
    ingest_dataset(tmp_path / "ds", config)

    raw = V1Client(config.influxdb).query('SELECT "value" FROM "load" WHERE "meter" = \'m1\'',
                                          what="raw")
    stored = np.array([v[1] for v in raw[0]["series"][0]["values"]])
    expected = written.loc[written["meter_id"] == "m1", "kwh"].to_numpy()
    np.testing.assert_allclose(stored, expected * stored_per_kwh(minutes / 60), rtol=1e-12)
    back = _read(config).sort_values([col.METER_ID, col.TIMESTAMP])
    np.testing.assert_allclose(back[col.KWH].to_numpy(), written["kwh"].to_numpy(), rtol=1e-12)


def test_power_points_become_energy_over_each_meters_own_interval(influxdb_server):
    """2 kW for half an hour is 1 kWh; 3000 W for a quarter of an hour is 0.75 kWh (by hand)."""
    config = influx_config(influxdb_server.url, _database(),
                           influxdb={"readings": {"field": "p", "unit": "w"}})
    backend = connect(config.influxdb)
    backend.ensure_database()
    t0 = START.value
    lines = [f"readings,meter_id=half p=2000 {t0 + k * 1_800 * 10**9}" for k in range(4)]
    lines += [f"readings,meter_id=quarter p=3000 {t0 + k * 900 * 10**9}" for k in range(4)]
    backend.write("\n".join(lines).encode(), what="test")
    frame = _read(config)
    kwh = frame.groupby(col.METER_ID, observed=True)[col.KWH].unique()
    assert kwh["half"].tolist() == [1.0] and kwh["quarter"].tolist() == [0.75]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=40, days=14, as_of="2026-03-14", seed=4, fmt="csv",
                     timezone="UTC")
    return path


def test_meters_from_series_tags_equal_the_meters_file(influxdb_server, simulated):
    config = influx_config(influxdb_server.url, _database(), analysis={"history_days": 14})
    ingest_dataset(simulated, config)
    ds = read_influx_dataset(config, start=pd.Timestamp("2026-03-01", tz="UTC"),
                             end=pd.Timestamp("2026-03-15", tz="UTC"))
    from_file, _ = read_meters(simulated / "meters.csv")
    assert list(ds.meters.columns) == list(from_file.columns)
    assert ds.meters.dtypes.equals(from_file.dtypes)
    pd.testing.assert_frame_equal(
        ds.meters.sort_values(col.METER_ID).reset_index(drop=True),
        from_file.sort_values(col.METER_ID).reset_index(drop=True))


def test_frames_have_the_file_readers_dtypes(influxdb_server, simulated):
    config = influx_config(influxdb_server.url, _database(), analysis={"history_days": 14},
                           source={"meters_file": str(simulated / "meters.csv")})
    ingest_dataset(simulated, config)
    ds = read_influx_dataset(config, start=pd.Timestamp("2026-03-01", tz="UTC"),
                             end=pd.Timestamp("2026-03-15", tz="UTC"))
    assert isinstance(ds.readings[col.METER_ID].dtype, pd.CategoricalDtype)
    assert str(ds.readings[col.TIMESTAMP].dtype) == "datetime64[us, UTC]"
    assert ds.readings[col.KWH].dtype == np.float64
    assert ds.upstream is not None and str(ds.weather[col.REGION].dtype) == "str"
    assert ds.row_counts["readings"]["used"] > 40 * 14 * 24


def test_missing_database_measurement_tag_and_field_are_named(influxdb_server, simulated):
    database = _database()
    config = influx_config(influxdb_server.url, database)
    with pytest.raises(InputError, match=f"no database '{database}'"):
        read_influx_dataset(config, start=START, end=END)
    ingest_dataset(simulated, config)
    for change, message in [({"measurement": "nope"}, "no measurement 'nope' in database"),
                            ({"id_tag": "meter"}, "has no tag 'meter' .*meter_id"),
                            ({"field": "kw"}, "has no field 'kw' \\(fields: kwh\\)")]:
        bad = influx_config(influxdb_server.url, database, influxdb={"readings": change})
        with pytest.raises(InputError, match=message):
            read_influx_dataset(bad, start=START, end=END)


def test_no_readings_in_the_window_is_an_input_error(influxdb_server, simulated):
    config = influx_config(influxdb_server.url, _database(),
                           source={"meters_file": str(simulated / "meters.csv")})
    ingest_dataset(simulated, config)
    with pytest.raises(InputError, match="no readings .* measurement 'readings'.*2025-01-01"):
        read_influx_dataset(config, start=pd.Timestamp("2025-01-01", tz="UTC"),
                            end=pd.Timestamp("2025-02-01", tz="UTC"))


def test_a_temperature_unit_for_readings_is_a_config_error(influxdb_server):
    config = influx_config(influxdb_server.url, _database(), influxdb={"readings": {"unit": "c"}})
    with pytest.raises(ConfigError, match="readings.unit = 'c'"):
        read_influx_dataset(config, start=START, end=END)


class _RefusingServer:
    """Accepts TCP connections and closes them at once, counting them."""

    def __init__(self):
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self._sock.close()


def test_unreachable_server_fails_after_the_configured_retries():
    config = influx_config(f"http://127.0.0.1:{free_port()}", "db", influxdb={"retries": 1})
    with pytest.raises(SourceUnreachable, match=r"InfluxDB at http://127.0.0.1:\d+: listing "
                                                r"databases failed after 2 attempts: connection "
                                                r"refused \(check that the server is up"):
        read_influx_dataset(config, start=START, end=END)


def test_a_server_that_hangs_up_is_tried_exactly_one_plus_retries_times():
    server = _RefusingServer()
    try:
        config = influx_config(server.url, "db", influxdb={"retries": 3})
        with pytest.raises(SourceUnreachable, match="after 4 attempts: connection lost"):
            read_influx_dataset(config, start=START, end=END)
        assert server.connections == 4
    finally:
        server.close()


def test_server_going_away_mid_read_is_source_unreachable(influxdb_server, simulated):
    database = _database()
    ingest_dataset(simulated, influx_config(influxdb_server.url, database))
    port = int(influxdb_server.url.rsplit(":", 1)[1])
    with ClosingProxy(port, max_requests=8) as proxy:
        config = influx_config(proxy.url, database, analysis={"history_days": 14},
                               source={"meters_file": str(simulated / "meters.csv")},
                               influxdb={"ids_per_query": 10, "days_per_query": 1})
        with pytest.raises(SourceUnreachable, match="reading 'kwh' of measurement 'readings' "
                                                    "failed after 2 attempts"):
            read_influx_dataset(config, start=pd.Timestamp("2026-03-01", tz="UTC"),
                                end=pd.Timestamp("2026-03-15", tz="UTC"))
        assert proxy.requests > 6  # the checks passed and reading had begun


def test_hostile_ids_survive_meters_from_tags_and_cleaning(influxdb_server, tmp_path):
    ids = ["normal", *HOSTILE]
    _write_dataset(tmp_path / "ds", ids)
    config = influx_config(influxdb_server.url, _database(),
                           influxdb={"upstream": {"measurement": ""},
                                     "weather": {"measurement": ""}})
    ingest_dataset(tmp_path / "ds", config)
    ds = read_influx_dataset(config, start=START, end=END)
    assert sorted(ds.meters[col.METER_ID]) == sorted(ids)
    assert (ds.meters[col.TRANSFORMER_ID] == "T1").all()
    kwh = ds.readings.groupby(col.METER_ID, observed=True)[col.KWH].sum()
    assert kwh.round(6).to_dict() == {m: round(72 * ids.index(m) + 25.56, 6) for m in ids}


def test_a_meter_without_readings_is_counted_not_an_error(influxdb_server, tmp_path):
    _write_dataset(tmp_path / "ds", ["m1", "m2"])
    meters = pd.read_csv(tmp_path / "ds" / "meters.csv")
    pd.concat([meters, meters.iloc[[0]].assign(meter_id="silent")]).to_csv(
        tmp_path / "ds" / "meters.csv", index=False)
    config = influx_config(influxdb_server.url, _database(),
                           source={"meters_file": str(tmp_path / "ds" / "meters.csv")},
                           influxdb={"upstream": {"measurement": ""},
                                     "weather": {"measurement": ""}})
    ingest_dataset(tmp_path / "ds", config)
    ds = read_influx_dataset(config, start=START, end=END)
    issues = ds.issues.to_frame()
    silent = issues[(issues["code"] == "meters.no_readings")]
    assert silent["meter_id"].tolist() == ["silent"]
    assert len(ds.meters) == 3


def test_server_going_away_mid_ingest_is_source_unreachable(influxdb_server, simulated):
    port = int(influxdb_server.url.rsplit(":", 1)[1])
    with ClosingProxy(port, max_requests=2) as proxy:  # CREATE DATABASE, one batch of readings
        config = influx_config(proxy.url, _database())
        with pytest.raises(SourceUnreachable, match="writing readings to measurement 'readings' "
                                                    "failed after 2 attempts"):
            ingest_dataset(simulated, config)
        assert proxy.requests > 2  # the database was created and writing had begun


def test_a_failed_statement_in_a_200_answer_is_an_error_not_an_empty_read(influxdb_server):
    """InfluxDB 1.x's CSV answer would be empty here: JSON carries the statement's error."""
    client = V1Client(influx_config(influxdb_server.url, _database()).influxdb)
    with pytest.raises(InputError, match=r"probing failed: database not found: t_\w+ \(create "
                                         r"it \(gridwatch ingest does\)"):
        client.query('SELECT "kwh" FROM "readings"', what="probing", raw_values=True)


def test_a_text_field_is_refused_naming_the_measurement(influxdb_server):
    config = influx_config(influxdb_server.url, _database())
    backend = connect(config.influxdb)
    backend.ensure_database()
    backend.write(f'readings,meter_id=m1 kwh="high" {START.value}\n'.encode(), what="test")
    with pytest.raises(InputError, match="reading 'kwh' of measurement 'readings' in database "
                                         ".*values that are not numbers"):
        _read(config)


SHUTDOWN_ANSWER = b'{"results":[{"statement_id":0,"error":"query engine shutdown"}]}\n'
"""What InfluxDB 1.x answers (HTTP 200) for a statement its stopping query engine refuses."""


class RestartingProxy:
    """A loopback HTTP proxy to a real influxd that restarts it during the first data read.

    On the first ``SELECT`` it stops the server with SIGTERM (as ``systemctl
    restart`` does), starts it again on the same ports and data directory,
    and answers that request as the stopping server does: ``query engine
    shutdown``. Every other request is forwarded. With ``come_back=False``
    every ``SELECT`` gets that answer: a server that keeps shutting down.
    """

    def __init__(self, data_dir, *, come_back: bool = True):
        from http.server import BaseHTTPRequestHandler
        from unittest import mock
        from urllib.parse import parse_qs

        import urllib3

        from tests import influxdb_server

        ports = [free_port(), free_port()]  # HTTP, RPC: the same for every start

        def start_influxd():
            with mock.patch.object(influxdb_server, "free_port", side_effect=ports):
                return influxdb_server.start_influxd(data_dir)

        self.server = start_influxd()
        self.selects = self.restarts = 0
        http = urllib3.PoolManager(retries=False)
        outer = self

        def restart():
            first = outer.server.process.pid
            outer.server.stop()  # SIGTERM, and wait for the process to exit
            outer.server = start_influxd()
            assert outer.server.url.endswith(f":{ports[0]}")
            assert outer.server.process.pid != first
            outer.restarts += 1

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                statement = (parse_qs(body.decode()).get("q") or [""])[0]
                if statement.startswith("SELECT"):
                    outer.selects += 1
                    if not come_back or outer.selects == 1:
                        if come_back:
                            restart()
                        self._send(200, SHUTDOWN_ANSWER)
                        return
                upstream = http.request(self.command, outer.server.url + self.path, body=body,
                                        headers={k: v for k, v in self.headers.items()
                                                 if k.lower() not in ("host", "connection")})
                self._send(upstream.status, upstream.data)

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self._proxy = LoopbackHTTP(Handler)
        self.url = self._proxy.url

    def close(self):
        self._proxy.close()
        self.server.stop()


@pytest.mark.parametrize("come_back", [True, False], ids=["restarted", "stays-down"])
def test_an_influxdb_restart_during_a_read_is_retried_then_source_unreachable(
        tmp_path, simulated, come_back):
    """Issue 14 item 15: ``query engine shutdown`` was an input error (exit 3), not retried."""
    from tests.influxdb_server import require_influxd

    require_influxd()
    proxy = RestartingProxy(tmp_path / "influxd", come_back=come_back)
    try:
        window = {"start": pd.Timestamp("2026-03-01", tz="UTC"),
                  "end": pd.Timestamp("2026-03-15", tz="UTC")}
        config = influx_config(proxy.url, _database(), analysis={"history_days": 14},
                               source={"meters_file": str(simulated / "meters.csv")},
                               influxdb={"retries": 2})
        ingest_dataset(simulated, config)
        if come_back:
            ds = read_influx_dataset(config, **window)
            assert proxy.restarts == 1 and proxy.selects > 1
            direct = influx_config(proxy.server.url, config.influxdb.database,
                                   analysis={"history_days": 14},
                                   source={"meters_file": str(simulated / "meters.csv")})
            without_restart = read_influx_dataset(direct, **window)
            assert ds.row_counts == without_restart.row_counts
            pd.testing.assert_frame_equal(ds.readings, without_restart.readings)
        else:
            with pytest.raises(SourceUnreachable, match=r"reading 'kwh' of measurement "
                                                        r"'readings' failed after 3 attempts: "
                                                        r"the server is shutting down \(query "
                                                        r"engine shutdown\)") as info:
                read_influx_dataset(config, **window)
            assert info.value.exit_code == 4 and proxy.selects == 3
    finally:
        proxy.close()
