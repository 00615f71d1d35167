import tomllib

import pytest

from gridwatch.config import Config, config_from_dict, load_config
from gridwatch.errors import ConfigError
from tests.conftest import REPO_ROOT


def test_default_toml_mirrors_the_built_in_defaults():
    assert load_config(REPO_ROOT / "configs" / "default.toml") == Config()


def test_every_field_is_documented_in_default_toml():
    with open(REPO_ROOT / "configs" / "default.toml", "rb") as handle:
        data = tomllib.load(handle)
    for section, model in Config.model_fields.items():
        if section == "suppress":
            continue
        assert set(data[section]) == set(model.annotation.model_fields), section


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"detection": {"fdr_alpha": 2}}, r"detection\.fdr_alpha' = 2", id="range"),
        pytest.param({"analysis": {"history_days": "many"}}, r"analysis\.history_days", id="type"),
        pytest.param({"detection": {"treshold": 1}}, r"unknown key 'detection\.treshold'", id="typo"),
        pytest.param({"data": {"timezone": "Mars/Olympus"}}, r"unknown time zone", id="zone"),
        pytest.param({"analysis": {"grid_minutes": 20}}, r"15, 30 or 60", id="grid"),
    ],
)
def test_bad_values_are_one_message_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[detection\nfdr_alpha = 0.1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_suppress_list_and_frozen_config():
    cfg = config_from_dict({"suppress": [{"meter_id": "M1", "reason": "licensed miner"}]})
    assert cfg.suppress[0].reason == "licensed miner"
    with pytest.raises(Exception, match="frozen"):
        cfg.detection.fdr_alpha = 0.2  # type: ignore[misc]


def test_an_influxdb_table_given_in_part_keeps_its_other_defaults():
    cfg = config_from_dict({"influxdb": {"readings": {"field": "power", "unit": "kw"}}})
    assert (cfg.influxdb.readings.measurement, cfg.influxdb.readings.id_tag) == ("readings",
                                                                                 "meter_id")
    assert (cfg.influxdb.readings.field, cfg.influxdb.readings.unit) == ("power", "kw")
    with pytest.raises(ConfigError, match=r"influxdb\.readings\.unit"):
        config_from_dict({"influxdb": {"readings": {"unit": "kg"}}})


@pytest.mark.parametrize("name", ["default.toml", "sample.toml", "influxdb.toml"])
def test_every_bundled_config_loads(name):
    cfg = load_config(REPO_ROOT / "configs" / name)
    if name == "influxdb.toml":
        assert cfg.source.kind == "influxdb" and cfg.sink.influxdb
        assert (REPO_ROOT / "sample_data" / "meters.csv").samefile(cfg.source.meters_file)
