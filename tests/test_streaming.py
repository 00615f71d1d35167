"""`gridwatch run --engine streaming|dask` publishes what the all-at-once run publishes."""

import json

import pytest
from click.testing import CliRunner

from gridwatch.cli import main
from gridwatch.simulate import simulate_dataset

AS_OF = "2026-03-31"
FILES = ("flags.csv", "transformers.csv", "data_quality.csv")


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
    return _run(dataset, tmp_path_factory.mktemp("memory") / "out")


@pytest.mark.parametrize("engine", ["streaming", "dask"])
def test_partitioned_engines_publish_the_all_at_once_outputs(dataset, all_at_once, engine,
                                                            tmp_path):
    out = _run(dataset, tmp_path / "out", "--engine", engine)
    for name in FILES:
        assert (out / name).read_text() == (all_at_once / name).read_text(), name
    ours, theirs = (json.loads((d / "run.json").read_text()) for d in (out, all_at_once))
    assert ours["counts"] == theirs["counts"]  # rows in / used / dropped by reason, per table
    assert ours["as_of"] == theirs["as_of"]  # the default as-of: the latest over all partitions
    assert "true" in (out / "flags.csv").read_text()
    assert (out / "report.html").is_file()
    assert ours["engine"] == {"kind": engine, "partitions": ours["engine"]["partitions"]}
    assert ours["engine"]["partitions"] >= 3  # the shared calibrations were put to the test
