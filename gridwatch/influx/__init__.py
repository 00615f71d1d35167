"""InfluxDB as a source of the inputs and a sink of the results (issue 5).

* :func:`read_influx_dataset`: the analysis window's readings, upstream and
  weather, read in chunks and cleaned like files (``source.kind = "influxdb"``).
* :func:`write_results`: a run's flags and asset balance as points.
* :func:`ingest_dataset`: load a dataset directory into InfluxDB
  (``gridwatch ingest``).

InfluxDB 1.x is spoken through its HTTP API (InfluxQL, line protocol),
which 2.x and 3.x also serve; ``api = "v2"`` uses ``influxdb-client`` and
Flux. See ``docs/influxdb.md``.
"""

from gridwatch.influx.ingest import ingest_dataset
from gridwatch.influx.sink import write_results
from gridwatch.influx.source import read_influx_dataset

__all__ = ["ingest_dataset", "read_influx_dataset", "write_results"]
