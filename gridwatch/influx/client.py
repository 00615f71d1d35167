"""HTTP access to InfluxDB: credentials, retries with backoff, the v1 API.

Credentials come from the environment variables named in ``[influxdb]``
or from its ``token_file``; they travel in an ``Authorization`` header,
never in a URL, and never appear in messages (:func:`display_url` strips
any user info from the URL shown). Every :class:`Credentials` registers its
secrets with :mod:`gridwatch.redact`, and server messages are redacted
before they are quoted, since servers and proxies may echo the header.

Every request is retried on connection failures, timeouts and 5xx answers,
``retries`` times with a backoff that starts at ``backoff_s`` and doubles;
then :class:`gridwatch.errors.SourceUnreachable` is raised with one line
naming the server, what failed and a hint. A statement the server fails
because it is shutting down (``query engine shutdown`` while ``systemctl
restart`` stops it) is retried the same way. 4xx answers are not retried:
401/403 and 404 are configuration errors, 400 an input error.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import urllib3

from gridwatch.errors import ConfigError, InputError, SourceUnreachable
from gridwatch.influx.results import split_values
from gridwatch.redact import redact, register_credentials

CHUNK_ROWS = 10_000
"""Rows per chunk of a chunked v1 query response."""

SHUTDOWN_ERRORS = ("query engine shutdown", "engine is closed", "store is closed")
"""Statement errors of an InfluxDB 1.x that is stopping (a restart): retried, not an input error."""


@dataclass(frozen=True)
class Credentials:
    """Secrets for one server; their repr never shows them.

    Creating one registers its secrets with :func:`gridwatch.redact.register_credentials`,
    so that no message, log line or output of the run shows them.
    """

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def __post_init__(self):
        register_credentials(username=self.username, password=self.password, token=self.token)

    def headers(self) -> dict:
        """The ``Authorization`` header (empty without credentials).

        Raises
        ------
        ConfigError
            When the token has a character an HTTP header cannot carry.
        """
        if self.username or self.password:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        if self.token:
            check_token(self.token, source="the InfluxDB token")
            return {"Authorization": "Token " + self.token}
        return {}


def check_token(token: str, *, source: str, file: str | None = None) -> str:
    """Refuse a token an HTTP header cannot carry, without showing it.

    Parameters
    ----------
    token : str
        The token, already stripped of surrounding whitespace.
    source : str
        Where it came from, for the message (an environment variable's name).
    file : str, optional
        The token file it came from.

    Returns
    -------
    str
        ``token``, when every character is printable ASCII.

    Raises
    ------
    ConfigError
        Naming the source and the position of the first bad character, never
        the token or the character (issue 14, item 1).

    Examples
    --------
    >>> check_token("tok-123", source="GRIDWATCH_INFLUXDB_TOKEN")
    'tok-123'
    """
    bad = next((i for i, char in enumerate(token) if not " " <= char <= "~"), None)
    if bad is None:
        return token
    kind = "a non-ASCII character" if ord(token[bad]) > 0x7E else "a control character"
    raise ConfigError(f"{source} has {kind} at position {bad + 1} of {len(token)}, which an "
                      "HTTP header cannot carry", file=file,
                      hint="write the token again as plain ASCII; one copied from a document "
                           "may carry a typographic dash or quote")


def resolve_credentials(config) -> Credentials:
    """Read the credentials named by an ``[influxdb]`` section.

    Parameters
    ----------
    config : gridwatch.config.InfluxConfig

    Returns
    -------
    Credentials
        v1: user and password from ``username_env`` / ``password_env`` (a
        token from ``token_env`` is sent as ``Authorization: Token``, which
        the v1 API of InfluxDB 2.x and 3.x accepts); v2: the token from
        ``token_env``. When those variables are unset, ``token_file`` holds
        the token (v2) or ``user:password`` (v1). Whitespace around each
        value is dropped, from the variables as from the file (a line break
        at the end of a hand-written environment file).

    Raises
    ------
    ConfigError
        When ``token_file`` is named but cannot be read, or the token has a
        character an HTTP header cannot carry (the secret is never shown).
    """
    env = os.environ
    user = env.get(config.username_env, "").strip()
    password = env.get(config.password_env, "").strip()
    token = env.get(config.token_env, "").strip()
    if config.api == "v1" and (user or password):
        return Credentials(username=user, password=password)
    if token:
        register_credentials(token=token)  # before the check: its message must not show it
        return Credentials(token=check_token(token, source=f"the token in {config.token_env}"))
    if config.token_file:
        try:
            secret = Path(config.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file ({exc.strerror})", file=config.token_file,
                              hint="check influxdb.token_file and its permissions") from None
        if config.api == "v1" and ":" in secret:
            user, _, password = secret.partition(":")
            return Credentials(username=user, password=password)
        register_credentials(token=secret)
        return Credentials(token=check_token(secret, source="the token in influxdb.token_file",
                                             file=config.token_file))
    return Credentials()


def display_url(url: str) -> str:
    """The server URL as shown in messages: scheme, host, port and path, no user info or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_url(url: str) -> str:
    """Refuse URLs that carry credentials or are not http(s); returns the base URL."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ConfigError(f"influxdb.url {display_url(url)} carries credentials",
                          hint="remove them from the URL; set the environment variables named by "
                               "username_env/password_env/token_env, or token_file")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"influxdb.url {display_url(url)!r} is not an http(s) URL",
                          hint="e.g. url = \"http://127.0.0.1:8086\"")
    return url.rstrip("/")


class _Retryable(Exception):
    """A failure worth another attempt (network, timeout, 5xx)."""


def with_retries(call, *, what: str, url: str, retries: int, backoff_s: float):
    """Run ``call()``; retry retryable failures with exponential backoff.

    Parameters
    ----------
    call : callable
        Raises :class:`_Retryable` (or a urllib3 ``HTTPError``) for a failure
        worth retrying; anything else propagates at once.
    what : str
        What the call does, for the message ("reading measurement 'readings'").
    url : str
        The server (shown without credentials).
    retries : int
        Retries after the first attempt.
    backoff_s : float
        First wait [s]; doubles each retry.

    Raises
    ------
    SourceUnreachable
        After ``1 + retries`` failed attempts.
    """
    attempt = 0
    while True:
        try:
            return call()
        except (_Retryable, urllib3.exceptions.HTTPError, OSError) as exc:
            if attempt >= retries:
                reason = _reason(exc)
                raise SourceUnreachable(
                    f"InfluxDB at {display_url(url)}: {what} failed after {attempt + 1} "
                    f"attempt{'s' if attempt else ''}: {reason}",
                    hint="check that the server is up and reachable from this host; "
                         "[influxdb] retries and backoff_s set how long to insist") from None
            time.sleep(backoff_s * 2 ** attempt)
            attempt += 1


def _reason(exc: Exception) -> str:
    inner = getattr(exc, "reason", None) or exc
    full = redact(str(inner)).strip()
    text = full.splitlines()[0] if full else type(inner).__name__
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(inner, urllib3.exceptions.ProtocolError) or "Connection broken" in text or \
            "Connection aborted" in text:
        return "connection lost during the request"
    if "timed out" in text.lower():
        return "timed out"
    return text[:200]


def raise_for_status(status: int, body: bytes, *, what: str, url: str) -> None:
    """Map an HTTP error status to the right GridWatch error (5xx: retryable)."""
    if status < 300:
        return
    message = _server_message(body)
    where = f"InfluxDB at {display_url(url)}"
    if status >= 500:
        raise _Retryable(f"HTTP {status} {message}")
    if status in (401, 403):
        raise ConfigError(f"{where}: {what} refused (HTTP {status}: {message})",
                          hint="check the credentials in the environment variables or token file "
                               "named in [influxdb], and their permissions")
    if status == 404:
        raise ConfigError(f"{where}: {what}: HTTP 404 ({message})",
                          hint="check influxdb.url and influxdb.api ('v1' for InfluxDB 1.x)")
    raise InputError(f"{where}: {what} rejected (HTTP {status}: {message})",
                     hint="see the server's message")


def _server_message(body: bytes) -> str:
    """The server's error message, redacted before it is cut to 300 characters."""
    text = body[:2000].decode("utf-8", "replace").strip()
    try:
        text = json.loads(text).get("error", text) or text
    except (ValueError, AttributeError):
        pass
    return " ".join(redact(text).split())[:300] or "no message"


class V1Client:
    """The InfluxDB 1.x HTTP API (``/query``, ``/write``, ``/ping``); 2.x and 3.x serve it too.

    Parameters
    ----------
    config : gridwatch.config.InfluxConfig
        Server, database, retention policy, timeout and retry policy.
    credentials : Credentials, optional
        Default: :func:`resolve_credentials` of ``config``.
    """

    def __init__(self, config, credentials: Credentials | None = None):
        self.config = config
        self.url = check_url(config.url)
        self._headers = (credentials or resolve_credentials(config)).headers()
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=config.timeout_s), retries=False, maxsize=2)

    def __repr__(self) -> str:
        return f"V1Client({display_url(self.url)!r}, database={self.config.database!r})"

    def _request(self, method: str, path: str, *, what: str, fields=None, body=None,
                 headers=None, query=None, parse=None):
        # Only non-secret parameters (db, rp, precision) ever go into the URL.
        url = self.url + path + ("?" + urlencode(query) if query else "")
        headers = {**self._headers, **(headers or {})}

        def call():  # parsing is inside: an answer that says "retry" is retried
            response = self._http.request(method, url, fields=fields, body=body, headers=headers,
                                          encode_multipart=False, preload_content=True)
            raise_for_status(response.status, response.data, what=what, url=self.url)
            return response.data if parse is None else parse(response.data)

        return with_retries(call, what=what, url=self.url, retries=self.config.retries,
                            backoff_s=self.config.backoff_s)

    def query(self, statement: str, *, what: str, params: dict | None = None,
              database: bool = True, method: str = "POST", raw_values: bool = False) -> list[dict]:
        """Run one InfluxQL statement; returns its result pieces (chunked JSON, merged in order).

        Parameters
        ----------
        statement : str
            InfluxQL.
        what : str
            What the statement does, for error messages.
        params : dict, optional
            Bound parameters (``$name`` in the statement).
        database : bool, default True
            Send ``db`` (and ``rp``) of the config.
        method : str, default "POST"
            ``GET`` for read-only statements that servers accept only that way.
        raw_values : bool, default False
            Leave each series' ``values`` as CSV bytes (``time,value`` rows,
            :func:`gridwatch.influx.results.split_values`) for a vectorised
            parse, instead of Python lists.

        Returns
        -------
        list of dict
            The ``results`` entries of every chunk (each with ``series``).

        Raises
        ------
        InputError
            When the server reports an error for the statement.
        SourceUnreachable
            When the server stays unreachable or keeps failing.
        """
        fields = {"q": statement, "epoch": "u", "chunked": "true", "chunk_size": str(CHUNK_ROWS)}
        if database:
            fields["db"] = self.config.database
            if self.config.retention_policy:
                fields["rp"] = self.config.retention_policy
        if params:
            fields["params"] = json.dumps(params)
        parse = functools.partial(parse_query_answer, raw_values=raw_values, what=what,
                                  url=self.url)
        return self._request(method, "/query", what=what, fields=fields, parse=parse)

    def write(self, body: bytes, *, what: str) -> None:
        """POST line protocol (precision ns) to ``/write`` of the configured database."""
        query = {"db": self.config.database, "precision": "ns"}
        if self.config.retention_policy:
            query["rp"] = self.config.retention_policy
        self._request("POST", "/write", what=what, body=body, query=query,
                      headers={"Content-Type": "text/plain; charset=utf-8"})

    def ping(self) -> None:
        """Check that the server answers (``/ping``)."""
        self._request("GET", "/ping", what="ping")


def parse_query_answer(data: bytes, *, raw_values: bool, what: str, url: str) -> list[dict]:
    """The ``results`` of a chunked ``/query`` answer, or the error one of its statements reports.

    Parameters
    ----------
    data : bytes
        The answer: one JSON object per line (chunk).
    raw_values : bool
        Leave ``values`` as CSV bytes (:func:`gridwatch.influx.results.split_values`).
    what : str
        What the statement does, for error messages.
    url : str
        The server (shown without credentials).

    Returns
    -------
    list of dict

    Raises
    ------
    InputError
        When the server reports an error for the statement.
    SourceUnreachable
        When the answer is not JSON.
    _Retryable
        When the error is one of :data:`SHUTDOWN_ERRORS`: the server is
        restarting, the statement is worth another attempt.
    """
    results = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            chunk = split_values(line) if raw_values else json.loads(line)
        except ValueError:
            raise _unreadable(url, what) from None
        errors = [chunk.get("error")] + [r.get("error") for r in chunk.get("results", [])]
        for error in filter(None, errors):
            message = redact(error)
            if any(text in message for text in SHUTDOWN_ERRORS):
                raise _Retryable(f"the server is shutting down ({message})")
            raise InputError(f"InfluxDB at {display_url(url)}: {what} failed: {message}",
                             hint=_hint(message))
        results.extend(chunk.get("results", []))
    return results


def _hint(message: str) -> str:
    if "database not found" in message:
        return "create it (gridwatch ingest does) or check influxdb.database"
    if "max-select" in message or "timeout" in message or "killed" in message:
        return "lower influxdb.ids_per_query or days_per_query"
    return "see the server's message"


def _unreadable(url: str, what: str) -> SourceUnreachable:
    return SourceUnreachable(f"InfluxDB at {display_url(url)}: {what}: the answer is not JSON",
                             hint="check influxdb.url points at an InfluxDB server")
