"""One run path: "all at once" is a plan of one partition; refusals are the source's."""

import pandas as pd
import pytest

from gridwatch.config import Config
from gridwatch.days import Window, default_as_of, window_bounds
from gridwatch.errors import InputError, NoUsableReadings
from gridwatch.runner import analyse_source, open_source, plan_for
from gridwatch.simulate import simulate_dataset

AS_OF = "2026-03-31"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim")
    simulate_dataset(path, n_meters=200, days=20, as_of=AS_OF, seed=2)  # 3 feeders
    return path


def _config(kind, budget_mb=2000):
    config = Config()
    engine = {"memory_budget_mb": budget_mb} if kind is None else {"kind": kind,
                                                                   "memory_budget_mb": budget_mb}
    return config.model_copy(update={"engine": config.engine.model_copy(update=engine)})


@pytest.mark.parametrize("kind, budget_mb, parts", [
    pytest.param("memory", 1, 1, id="memory-ignores-the-budget"),
    pytest.param("streaming", 2000, 1, id="streaming-that-fits-is-one-partition"),
    pytest.param("streaming", 1, 2, id="streaming-over-budget-is-partitioned"),
    pytest.param(None, 2000, 1, id="no-choice-that-fits-is-one-partition"),
    pytest.param(None, 1, 2, id="no-choice-over-budget-is-partitioned"),
])
def test_the_plan_follows_the_engine_and_the_budget(dataset, kind, budget_mb, parts):
    config = _config(kind, budget_mb)
    plan = plan_for(open_source(dataset, AS_OF, config), config)
    if parts == 1:
        assert plan.n_partitions == 1
    else:
        assert plan.n_partitions >= parts


def test_the_default_is_the_budgeted_run():
    """Issue 15 item 2: no engine chosen, the run is the fastest that fits the budget.

    A dataset that fits ``memory_budget_mb`` is one partition, the all-at-once
    run; a larger one is partitioned so that it still fits. ``memory`` (no
    budget) and ``dask`` (partitions on a cluster) are explicit choices.
    """
    engine = Config().engine
    assert (engine.kind, engine.memory_budget_mb) == ("streaming", 2000)


def test_a_run_without_a_usable_reading_is_named_by_its_source(dataset, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("meters.csv",):
        (broken / name).write_text((dataset / name).read_text())
    (broken / "readings.csv").write_text("meter_id,timestamp,kwh\nX1,2026-03-01T00:00,1\n"
                                         "X2,2026-03-01T00:00,1\n")  # no known meter
    for kind in ("memory", "streaming"):
        with pytest.raises(NoUsableReadings, match=r"readings\.csv: no usable readings: all 2 "):
            analyse_source(broken, None, _config(kind, 1), keep_flagged=False)


def test_the_as_of_rule_raises_without_a_file():
    with pytest.raises(NoUsableReadings) as caught:
        default_as_of(pd.Series([], index=pd.DatetimeIndex([]), dtype="int64"))
    assert caught.value.file is None and isinstance(caught.value, InputError)


def test_the_window_is_the_window_bounds():
    window = Window(history_days=20, grid_minutes=60, timezone="Europe/London")
    index, grid = window(pd.Timestamp(AS_OF).date())
    start, end = window_bounds(pd.Timestamp(AS_OF).date(), 20, "Europe/London")
    assert window.bounds(pd.Timestamp(AS_OF).date()) == (start, end)
    assert index[0] == start and index[-1] + pd.Timedelta(hours=1) == end
    assert grid.n_days == 20
