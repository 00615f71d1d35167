"""A throwaway InfluxDB 1.x server for tests and benchmarks.

``influxd run -config /dev/null`` with every setting from environment
variables: bound to 127.0.0.1 on free ports, data under a temporary
directory, no reporting, no internal monitor database. Stopped with
SIGTERM (then SIGKILL if it does not exit).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def find_influxd() -> str | None:
    """Path of the ``influxd`` executable (``$GRIDWATCH_TEST_INFLUXD`` if set), or None."""
    chosen = os.environ.get("GRIDWATCH_TEST_INFLUXD")
    if chosen:
        return shutil.which(chosen)
    return shutil.which("influxd") or (
        "/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)


def require_influxd() -> str:
    """The ``influxd`` path; without one, fail when ``CI=true`` and skip otherwise.

    A skipped real-server test is a test that never ran: CI installs the
    server and must not pass without it.
    """
    import pytest

    influxd = find_influxd()
    if influxd is None:
        message = "influxd not installed (Debian: apt-get install influxdb)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true needs the real server")
        pytest.skip(message)
    return influxd


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InfluxServer:
    """One running ``influxd``; ``url`` is its HTTP API."""

    def __init__(self, process: subprocess.Popen, url: str, data_dir: Path, owns_dir: bool,
                 log_path: Path):
        self.process = process
        self.url = url
        self.data_dir = data_dir
        self._owns_dir = owns_dir
        self.log_path = log_path

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait; SIGKILL if it lingers; remove the data directory if we made it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> InfluxServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_influxd(data_dir=None, *, influxd: str | None = None, timeout_s: float = 20.0,
                  settings: dict | None = None) -> InfluxServer:
    """Start ``influxd`` on free loopback ports and wait until ``/ping`` answers.

    Parameters
    ----------
    data_dir : path, optional
        Where the server keeps its files; default: a new temporary directory,
        removed by :meth:`InfluxServer.stop`.
    influxd : str, optional
        The executable; default :func:`find_influxd`.
    timeout_s : float, default 20
        How long to wait for ``/ping``.
    settings : dict, optional
        More ``INFLUXDB_*`` environment settings (``{"INFLUXDB_HTTP_AUTH_ENABLED": "true"}``).

    Raises
    ------
    FileNotFoundError
        When there is no ``influxd``.
    RuntimeError
        When the server does not answer in time (its log is in the message).
    """
    influxd = influxd or find_influxd()
    if influxd is None:
        raise FileNotFoundError("influxd not found (Debian: apt-get install influxdb)")
    owns_dir = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="gridwatch-influxd-") if owns_dir else data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, rpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "INFLUXDB_REPORTING_DISABLED": "true",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc_port}",
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{http_port}",
        "INFLUXDB_META_DIR": str(data_dir / "meta"),
        "INFLUXDB_DATA_DIR": str(data_dir / "data"),
        "INFLUXDB_DATA_WAL_DIR": str(data_dir / "wal"),
        "INFLUXDB_MONITOR_STORE_ENABLED": "false",
        "INFLUXDB_HTTP_LOG_ENABLED": "false",
        "INFLUXDB_LOGGING_LEVEL": "warn",
        **(settings or {}),
    }
    log_path = data_dir / "influxd.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([influxd, "run", "-config", "/dev/null"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = InfluxServer(process, f"http://127.0.0.1:{http_port}", data_dir, owns_dir, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url + "/ping", timeout=1) as response:
                if response.status == 204:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    text = log_path.read_text(errors="replace")[-2000:]
    server.stop()
    raise RuntimeError(f"influxd did not start within {timeout_s} s: {text}")


class ClosingProxy:
    """A loopback TCP proxy that forwards ``max_requests`` HTTP requests, then goes away.

    On the next request it closes its listening socket and every open
    connection: the server "goes away" at a known point of a run,
    deterministically. Requests are counted from the request lines the
    client sends, so kept-alive connections count correctly.

    Parameters
    ----------
    target_port : int
        The real server's port on 127.0.0.1.
    max_requests : int
        Requests forwarded before the proxy goes away (counted by the
        request lines seen from the client).
    """

    def __init__(self, target_port: int, max_requests: int):
        import threading

        self.target_port = target_port
        self.max_requests = max_requests
        self.requests = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client:
                    with self._lock:
                        self.requests += sum(data.count(m) for m in (b"GET /", b"POST /"))
                        over = self.requests > self.max_requests
                    if over:
                        self.close()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> ClosingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LoopbackHTTP:
    """Serve ``handler`` (a ``BaseHTTPRequestHandler`` class) on 127.0.0.1 in a thread.

    ``url`` is its address; :meth:`close` stops it. For the small fake
    servers and proxies the tests put in front of a client.
    """

    def __init__(self, handler):
        import threading
        from http.server import ThreadingHTTPServer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def influx_config(url: str, database: str, **sections):
    """A validated Config reading from and writing to ``database`` at ``url``.

    ``sections`` are merged into the TOML-like mapping, e.g.
    ``influxdb={"retries": 1}``, ``source={"meters_file": path}``.
    """
    from gridwatch.config import InfluxConfig, config_from_dict

    defaults = InfluxConfig()
    for table in ("readings", "upstream", "weather"):  # sub-sections need every key
        if table in sections.get("influxdb", {}):
            sections["influxdb"][table] = {**getattr(defaults, table).model_dump(),
                                           **sections["influxdb"][table]}
    data = {"source": {"kind": "influxdb"},
            "influxdb": {"url": url, "database": database, "retries": 1, "backoff_s": 0.0},
            "cases": {"enabled": False}, "report": {"enabled": False}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)
