"""No credential the run knows reaches stderr, the log, run.json or the report (issue 14, item 2)."""

import base64
import json
import logging
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner

from gridwatch import redact
from gridwatch.cli import main
from gridwatch.influx.client import Credentials
from tests.influxdb_server import LoopbackHTTP

USER = "gw_reader"
PASSWORD = "pw-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(autouse=True)
def _forget_secrets():
    redact.clear()
    yield
    redact.clear()


class EchoingProxy:
    """A loopback HTTP server that answers every request ``status`` and echoes its Authorization.

    The body is what a misconfigured proxy or server sends: JSON
    ``{"error": "authorization failed for <header>"}`` for 4xx, plain text
    naming the header for 5xx.
    """

    def __init__(self, status: int):
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                header = self.headers.get("Authorization", "")
                if status < 500:
                    body = json.dumps({"error": f"authorization failed for {header}"}).encode()
                else:
                    body = f"upstream error: request with Authorization: {header} failed".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self._server = LoopbackHTTP(Handler)
        self.url = self._server.url

    def close(self):
        self._server.close()


def _run(tmp_path, url, *extra):
    config = tmp_path / "run.toml"
    config.write_text(f'[source]\nkind = "influxdb"\n[influxdb]\nurl = "{url}"\n'
                      'retries = 1\nbackoff_s = 0.0\n'
                      "[cases]\nenabled = false\n[report]\nenabled = false\n")
    log = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", "--output", str(tmp_path / "out"), "--as-of",
                                       "2026-03-14", "--log-file", str(log), "--config",
                                       str(config), *extra])
    return result, log.read_text()


@pytest.mark.parametrize(("status", "credentials", "exit_code", "message"), [
    pytest.param(401, "basic", 2, "refused (HTTP 401: authorization failed for Basic [redacted])",
                 id="401-basic"),
    pytest.param(401, "token", 2, "refused (HTTP 401: authorization failed for Token [redacted])",
                 id="401-token"),
    pytest.param(500, "token", 4, "failed after 2 attempts: HTTP 500 upstream error: request with "
                                  "Authorization: Token [redacted] failed", id="500-token"),
    pytest.param(500, "basic", 4, "Authorization: Basic [redacted] failed", id="500-basic"),
])
def test_a_server_echoing_the_authorization_header_never_shows_it(tmp_path, monkeypatch, status,
                                                                 credentials, exit_code,
                                                                 message):
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_TOKEN", raising=False)
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_USERNAME", raising=False)
    monkeypatch.delenv("GRIDWATCH_INFLUXDB_PASSWORD", raising=False)
    if credentials == "basic":
        monkeypatch.setenv("GRIDWATCH_INFLUXDB_USERNAME", USER)
        monkeypatch.setenv("GRIDWATCH_INFLUXDB_PASSWORD", PASSWORD)
    else:
        monkeypatch.setenv("GRIDWATCH_INFLUXDB_TOKEN", TOKEN)
    proxy = EchoingProxy(status)
    try:
        result, log = _run(tmp_path, proxy.url)
    finally:
        proxy.close()
    assert result.exit_code == exit_code, result.stderr
    assert proxy.requests == (1 if status < 500 else 2)  # the header did reach the "proxy"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    shown = result.stderr + result.output + log
    for secret in (PASSWORD, TOKEN, BASIC, BASIC.rstrip("=")):
        assert secret not in shown
    assert f"exit {exit_code}:" in log and "[redacted]" in log


def test_run_json_and_the_report_redact_a_known_secret_whatever_its_source(tmp_path):
    """A file run whose input path happens to hold the token: run.json and report.html hide it."""
    from gridwatch.simulate import simulate_dataset

    Credentials(token=TOKEN)  # a credential this process knows
    dataset = tmp_path / f"data-{TOKEN}"
    simulate_dataset(dataset, n_meters=30, days=21, as_of="2026-03-14", seed=2, timezone="UTC")
    config = tmp_path / "files.toml"
    config.write_text("[analysis]\nhistory_days = 21\n[cases]\nenabled = false\n"
                      "[report]\nplots = false\n")
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", "--input", str(dataset), "--output", str(out),
                                       "--as-of", "2026-03-14", "--config", str(config),
                                       "--log-file", str(log), "--quiet"])
    assert result.exit_code == 0, result.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["input_dir"].endswith("data-[redacted]")
    assert TOKEN not in (out / "run.json").read_text()
    assert TOKEN not in (out / "report.html").read_text()
    assert TOKEN not in log.read_text()


def test_redact_hides_every_form_of_the_credentials():
    redact.register_credentials(username=USER, password=PASSWORD)
    redact.register_credentials(token=TOKEN)
    urlsafe = base64.urlsafe_b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    text = (f"Basic {BASIC} / {BASIC.rstrip('=')} / {urlsafe} / {USER}:{PASSWORD} / "
            f"{USER}%3A{PASSWORD} / Token {TOKEN} / {PASSWORD}")
    assert redact.redact(text) == ("Basic [redacted] / [redacted] / [redacted] / [redacted] / "
                                   "[redacted] / Token [redacted] / [redacted]")
    assert redact.redact(f"user {USER}") == f"user {USER}"  # a user name is not a secret
    assert redact.redact_data({"a": [f"x{TOKEN}", 3, None], TOKEN: True}) == \
        {"a": ["x[redacted]", 3, None], "[redacted]": True}


def test_short_secrets_are_not_registered_but_their_basic_header_is():
    redact.register_credentials(username="someone", password="pw")
    assert redact.redact("pw and pwd") == "pw and pwd"
    header = base64.b64encode(b"someone:pw").decode()
    assert redact.redact(f"Basic {header}") == "Basic [redacted]"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks():
    redact.register_credentials(token=TOKEN)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger("gridwatch.test_secrets")
    logger.addHandler(handler)
    try:
        logger.warning("token %s in an argument", TOKEN)
        try:
            raise ValueError(f"Invalid header value b'Token {TOKEN}'")
        except ValueError:
            logger.exception("internal error")
    finally:
        logger.removeHandler(handler)
    assert records[0] == "token [redacted] in an argument"
    assert "Invalid header value b'Token [redacted]'" in records[1]
    assert TOKEN not in "".join(records)
