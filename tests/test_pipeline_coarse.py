"""A population mixing interval, daily and monthly meters in one run (issue 16, items 3, 4, 6)."""

import pandas as pd
import pytest

from gridwatch import columns as col
from gridwatch.config import Config
from gridwatch.pipeline import run
from gridwatch.simulate import simulate_dataset


def _config(**engine):
    return Config.model_validate({"cases": {"enabled": False}, "report": {"enabled": False},
                                  "engine": engine or {"kind": "memory"}})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    labels = simulate_dataset(root / "data", n_meters=60, days=21, seed=5, daily_meters=80,
                              monthly_meters=160)
    plain = simulate_dataset(root / "plain", n_meters=60, days=21, seed=5)
    run(root / "data", root / "out", config=_config())
    run(root / "plain", root / "plain_out", config=_config())
    return root, labels, plain


def _read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_each_meter_is_judged_at_its_own_resolution(mixed):
    root, labels, _ = mixed
    flags = _read(root / "out" / "flags.csv")
    assert len(flags) == 60 + 80 + 160  # every meter analysed, none refused
    by_kind = flags.groupby(flags["meter_id"].str[0])["kind"].agg(set).to_dict()
    assert by_kind["Y"] <= {"", col.KIND_MONTHLY} and col.KIND_MONTHLY in by_kind["Y"]
    assert by_kind["D"] <= {"", col.KIND_VISIBLE}
    monthly = flags[flags["meter_id"].str.startswith("Y")]
    assert monthly["reasons"].str.contains("daily and hourly shape not judged").all()
    daily = flags[flags["meter_id"].str.startswith("D")]
    assert daily["reasons"].str.contains("flatness within the day not judged").all()
    assert (daily["score"].astype(float) <= 0.85).all()
    dq = _read(root / "out" / "data_quality.csv")
    assert not (dq["code"] == "readings.unsupported_interval").any()
    assert set(dq.loc[dq["code"] == "readings.monthly_reads", "meter_id"]) == {
        m for m in labels["coarse_meters"] if m.startswith("Y")}


def test_interval_meters_are_judged_as_without_the_others(mixed):
    root, _, _ = mixed
    keep = ["meter_id", "score", "flagged", "kind", "onset", "excess_kw", "reasons"]
    mixed_flags = _read(root / "out" / "flags.csv")
    mixed_flags = mixed_flags[mixed_flags["meter_id"].str.startswith("M")][keep]
    plain = _read(root / "plain_out" / "flags.csv")[keep]
    pd.testing.assert_frame_equal(mixed_flags.reset_index(drop=True), plain.reset_index(drop=True))


def test_monthly_suspects_is_the_list_of_flagged_premises_ranked_by_money(mixed):
    root, _, _ = mixed
    listed = pd.read_csv(root / "out" / "monthly_suspects.csv", keep_default_na=False)
    assert tuple(listed.columns) == col.MONTHLY_SUSPECTS_COLUMNS
    flags = _read(root / "out" / "flags.csv")
    flagged = flags[(flags["kind"] == col.KIND_MONTHLY) & (flags["flagged"] == "true")]
    assert set(listed["meter_id"]) == set(flagged["meter_id"]) and len(listed) > 0
    assert listed["est_loss"].is_monotonic_decreasing
    assert listed["rank"].tolist() == list(range(1, len(listed) + 1))
    assert not (root / "plain_out" / "monthly_suspects.csv").exists()


def test_the_partitioned_engine_writes_the_same_files(mixed, tmp_path):
    root, _, _ = mixed
    run(root / "data", tmp_path, config=_config(kind="streaming", memory_budget_mb=1))
    for name in ("flags.csv", "monthly_suspects.csv", "data_quality.csv"):
        assert (tmp_path / name).read_bytes() == (root / "out" / name).read_bytes(), name
