"""InfluxDB 2.x / Cloud through ``influxdb-client``: Flux queries, synchronous writes, deletes.

Writes use the ``SYNCHRONOUS`` write API: the default batching one only
logs a failed batch, so data would be lost without an error. Retries,
backoff and the mapping of failures to GridWatch errors are the same as
for the v1 API (:func:`gridwatch.influx.client.with_retries`).
"""

from __future__ import annotations

import datetime as dt

from gridwatch.errors import ConfigError
from gridwatch.influx.client import (
    Credentials,
    _Retryable,
    check_url,
    display_url,
    raise_for_status,
    resolve_credentials,
    with_retries,
)


class V2Client:
    """An InfluxDB 2.x server (token, org, bucket) through ``influxdb-client``.

    Parameters
    ----------
    config : gridwatch.config.InfluxConfig
        ``url``, ``org``, ``database`` (the bucket), timeout and retry policy.
    credentials : Credentials, optional
        Default: :func:`gridwatch.influx.client.resolve_credentials`.
    """

    def __init__(self, config, credentials: Credentials | None = None):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.config = config
        self.url = check_url(config.url)
        if not config.org:
            raise ConfigError("influxdb.api = 'v2' needs influxdb.org",
                              hint="set org to the organisation that owns the bucket")
        token = (credentials or resolve_credentials(config)).token
        if not token:
            raise ConfigError("no InfluxDB token", hint=f"set the environment variable "
                              f"{config.token_env} or influxdb.token_file")
        self._client = InfluxDBClient(url=self.url, token=token, org=config.org,
                                      timeout=int(config.timeout_s * 1000), retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def __repr__(self) -> str:
        return f"V2Client({display_url(self.url)!r}, bucket={self.config.database!r})"

    def _call(self, func, *, what: str):
        from influxdb_client.rest import ApiException

        def call():
            try:
                return func()
            except ApiException as exc:
                body = exc.body if isinstance(exc.body, bytes) else \
                    str(exc.body or exc.reason or "").encode()
                raise_for_status(exc.status or 500, body, what=what, url=self.url)
                raise _Retryable(f"HTTP {exc.status}") from None

        return with_retries(call, what=what, url=self.url, retries=self.config.retries,
                            backoff_s=self.config.backoff_s)

    def query_csv(self, flux: str, params: dict, *, what: str) -> bytes:
        """Run a Flux query; returns its annotated CSV (``#datatype`` rows, header, data)."""
        from influxdb_client.domain.dialect import Dialect

        dialect = Dialect(header=True, annotations=["datatype"], delimiter=",",
                          comment_prefix="#", date_time_format="RFC3339Nano")
        api = self._client.query_api()

        def run():
            response = api.query_raw(flux, org=self.config.org, dialect=dialect, params=params)
            try:
                return response.data
            finally:
                response.release_conn()

        return self._call(run, what=what)

    def write(self, body: bytes, *, what: str) -> None:
        """Write line protocol (precision ns) into the bucket, synchronously."""
        from influxdb_client import WritePrecision

        self._call(lambda: self._write_api.write(bucket=self.config.database, org=self.config.org,
                                                 record=body, write_precision=WritePrecision.NS),
                   what=what)

    def delete(self, start: dt.datetime, stop: dt.datetime, predicate: str, *, what: str) -> None:
        """Delete the points matching ``predicate`` in ``[start, stop)``."""
        api = self._client.delete_api()
        # The delete API's stop is inclusive: stop one microsecond earlier.
        stop = stop - dt.timedelta(microseconds=1)
        self._call(lambda: api.delete(start, stop, predicate, bucket=self.config.database,
                                      org=self.config.org), what=what)

    def bucket_exists(self) -> bool:
        """Whether the configured bucket exists."""
        api = self._client.buckets_api()
        return self._call(lambda: api.find_bucket_by_name(self.config.database),
                          what=f"looking up bucket '{self.config.database}'") is not None

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()
