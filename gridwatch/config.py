"""The run configuration: one frozen, validated object with its defaults here.

Load it with :func:`load_config` from a TOML file (``configs/default.toml``
documents every key). Unknown keys, wrong types and out-of-range values are
refused with one message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gridwatch import columns as col
from gridwatch.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

class TableForm(_Section):
    """How one table's file differs from the contract: its own column names (issue 16).

    ``columns`` maps a column of the file to the contract name it holds
    (``{MeterNo = "meter_id"}``); unmapped columns keep their names. The
    readers apply it before the contract's column check, so a missing
    column is named as the file names it.
    """

    TARGETS: ClassVar[tuple[str, ...]] = ()

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="File column -> contract column it holds, e.g. {MeterNo = \"meter_id\"}; "
        "empty: the file uses the contract's names.",
    )

    @field_validator("columns")
    @classmethod
    def _contract_targets(cls, value: dict) -> dict:
        for source, target in value.items():
            if not source.strip():
                raise ValueError("a file column name cannot be empty")
            if target not in cls.TARGETS:
                raise ValueError(f"{source!r} is mapped to {target!r}, which is not a column of "
                                 f"this table; use one of {', '.join(cls.TARGETS)}")
        targets = list(value.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"more than one file column is mapped to {twice[0]!r}")
        return value


class MetersForm(TableForm):
    """The meters file as exported: its column names."""

    TARGETS: ClassVar[tuple[str, ...]] = col.METERS_STRING_COLUMNS + col.METERS_FLOAT_COLUMNS


class WeatherForm(TableForm):
    """The weather file as exported: its column names."""

    TARGETS: ClassVar[tuple[str, ...]] = col.WEATHER_REQUIRED


ENERGY_UNITS = ("Wh", "kWh", "MWh")
POWER_UNITS = ("W", "kW", "MW")


class IntervalForm(TableForm):
    """An interval table (readings, upstream) as exported: names, unit, what its stamps mark."""

    TARGETS: ClassVar[tuple[str, ...]] = col.UPSTREAM_REQUIRED

    unit: Literal["Wh", "kWh", "MWh", "W", "kW", "MW"] = Field(
        "kWh", description="Unit of the values (kwh, kwh_export, register_kwh): energy in the "
        "interval (Wh, kWh, MWh) or mean power over it (W, kW, MW; times the interval gives "
        "energy). Case-insensitive.",
    )
    timestamp_marks: Literal["start", "end"] = Field(
        "start", description="'start': a timestamp is the START of its interval (the contract); "
        "'end': the END (many MDM exports), shifted back by the meter's interval.",
    )
    interval_minutes: int = Field(
        0, ge=0, le=1440, description="Interval of every meter/asset for 'end' stamps and power "
        "units [min]; 0: each one's most common step between timestamps.",
    )

    @field_validator("unit", mode="before")
    @classmethod
    def _unit_any_case(cls, value):
        if isinstance(value, str):
            for unit in ENERGY_UNITS + POWER_UNITS:
                if value.strip().lower() == unit.lower():
                    return unit
        return value


class UpstreamForm(IntervalForm):
    """The upstream file as exported (SCADA): names, unit, what its stamps mark."""


class ReadingsForm(IntervalForm):
    """The readings file as exported: names, unit, stamps, interval energy or register reads."""

    TARGETS: ClassVar[tuple[str, ...]] = (col.READINGS_REQUIRED + col.READINGS_OPTIONAL_VALUES
                                          + (col.KVARH, col.REGISTER_KWH, col.DEVICE_ID))

    value: Literal["interval", "register"] = Field(
        "interval", description="'interval': kwh is the energy of each interval (the contract); "
        "'register': register_kwh is a cumulative register read at each timestamp, differenced "
        "per meter (and device_id, when given) into interval energy (README, 'Data as utilities "
        "hold it').",
    )
    rollover_kwh: float = Field(
        0.0, ge=0, description="Register value at which the register wraps to 0 (e.g. 100000 "
        "for five digits of kWh) [kWh]; 0: it never wraps. Register reads only.",
    )

    @model_validator(mode="after")
    def _register_rules(self):
        if self.value == "register":
            if self.unit not in ENERGY_UNITS:
                raise ValueError(f"a register counts energy: unit must be one of "
                                 f"{', '.join(ENERGY_UNITS)}, not {self.unit!r}")
            if self.timestamp_marks != "end":
                raise ValueError("a register read is the count at its timestamp, which ENDS the "
                                 "interval since the previous read: set timestamp_marks = 'end'")
        elif self.rollover_kwh:
            raise ValueError("rollover_kwh applies to register reads: set value = 'register' "
                             "or drop rollover_kwh")
        elif set(self.columns.values()) & {col.REGISTER_KWH, col.DEVICE_ID}:
            raise ValueError("register_kwh and device_id are read with value = 'register'")
        return self


class DataConfig(_Section):
    """How input tables are read and cleaned."""

    timezone: str = Field(
        "UTC",
        description="IANA zone for naive timestamps, day boundaries and hour of week.",
    )
    max_plausible_kw: float = Field(
        5000.0, gt=0, description="Mean demand above this is physically implausible for any meter [kW]."
    )
    contracted_kw_factor: float = Field(
        10.0, gt=1, description="Demand above this many times contracted_kw is implausible."
    )
    spike_factor: float = Field(
        20.0, gt=1,
        description="A reading above this many times the meter's 99th percentile is a spike.",
    )
    frozen_hours: int = Field(
        24, ge=3, description="Identical non-zero readings for this long mean a frozen meter [h]."
    )
    meters: MetersForm = Field(MetersForm(), description="The meters file's own column names.")
    readings: ReadingsForm = Field(
        ReadingsForm(), description="The readings file as exported: names, unit, stamps, registers.")
    upstream: UpstreamForm = Field(
        UpstreamForm(), description="The upstream file as exported: names, unit, stamps.")
    weather: WeatherForm = Field(WeatherForm(), description="The weather file's own column names.")

    def form_of(self, table: str) -> TableForm:
        """The export form of one table (``meters``, ``readings``, ``upstream``, ``weather``)."""
        return getattr(self, table)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'Europe/London'") from exc
        return value


class AnalysisConfig(_Section):
    """The analysis window and grid."""

    history_days: int = Field(
        90, ge=14, le=730, description="Days analysed, ending on the as-of day [days]."
    )
    min_history_days: int = Field(
        14, ge=7, description="Meters with fewer days of usable data are not scored [days]."
    )
    grid_minutes: int = Field(60, description="Analysis grid [min]: 15, 30 or 60.")
    min_day_coverage: float = Field(
        0.5, ge=0, le=1, description="A day with less coverage than this is treated as missing."
    )

    @field_validator("grid_minutes")
    @classmethod
    def _grid(cls, value: int) -> int:
        if value not in (15, 30, 60):
            raise ValueError(f"grid_minutes must be 15, 30 or 60, not {value}")
        return value


class DetectionConfig(_Section):
    """Thresholds of the visible-load detector."""

    fdr_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="Target false-discovery rate across all meters (Benjamini-Hochberg).",
    )
    min_excess_kw: float = Field(
        0.3, ge=0, description="Steady draws smaller than this are never flagged [kW]."
    )
    min_relative_excess: float = Field(
        0.1, ge=0,
        description="Steady draw must exceed this fraction of the meter's expected mean [-].",
    )
    min_post_onset_days: int = Field(
        2, ge=1, description="Days after an onset needed to date it [days]."
    )
    min_flatness: float = Field(
        0.6, ge=0, le=1,
        description="Share of the rise that must be the same at every hour of the day [-] "
        "(a household that grows with its own daily shape has little).",
    )
    max_unsteadiness: float = Field(
        0.35, ge=0,
        description="Cycling or part-day loads raise the mean more than the daily floor and add "
        "hour-to-hour variability; their sum above this is not a rig [-].",
    )
    min_persistence: float = Field(
        0.75, ge=0, le=1,
        description="Fraction of days since onset on which the load must be present [-].",
    )
    preexisting_classes: tuple[str, ...] = Field(
        ("residential",),
        description="Customer classes in which a high, steady floor with no onset in the window "
        "is flagged (24/7 base loads are ordinary for businesses).",
    )


class BalanceConfig(_Section):
    """Energy balance of transformers, feeders and substations with upstream data."""

    min_coverage: float = Field(
        0.8, ge=0, le=1,
        description="Asset-intervals whose metered energy is less than this share measured "
        "(the rest filled from expected consumption) are skipped [-].",
    )
    fdr_alpha: float = Field(
        0.01, gt=0, lt=0.5, description="False-discovery rate across assets (Benjamini-Hochberg)."
    )
    min_unexplained_kw: float = Field(
        0.5, ge=0, description="Unexplained steady loads smaller than this are never flagged [kW]."
    )
    max_no_load_share: float = Field(
        0.03, ge=0, le=1,
        description="A constant loss above this share of delivered demand (plus no_load_floor_kw) "
        "is a load that ran before the window, not a transformer's no-load loss [-].",
    )
    no_load_floor_kw: float = Field(
        0.2, ge=0, description="Absolute allowance added to max_no_load_share [kW]."
    )
    use_inferred_topology: bool = Field(
        False,
        description="Balance each meter that topology.csv places under another transformer with "
        "confidence >= 0.5 under that transformer instead of the one listed in meters.",
    )


class CoarseConfig(_Section):
    """Meters read once a day or once a month (issue 16, items 3 and 4; docs/detection.md)."""

    monthly_history_months: int = Field(
        24, ge=12, le=120, description="Months of billing reads looked at, ending with the last "
        "complete month of the as-of day [months].",
    )
    monthly_min_months: int = Field(
        12, ge=6, description="Valid months a monthly meter needs to be judged [months].",
    )
    monthly_min_peer_ratio: float = Field(
        2.0, gt=1, description="Irkutsk sign 1: times the similar premises' median in the warm "
        "months [-].",
    )
    monthly_max_summer_drop: float = Field(
        0.3, ge=0, le=1, description="Irkutsk sign 2: share by which the warm months' peer ratio "
        "may fall below the cold months' [-].",
    )
    monthly_max_cv: float = Field(
        0.25, gt=0, description="Irkutsk sign 3: largest coefficient of variation of the warm "
        "months' consumption [-].",
    )
    min_excess_kw: float = Field(
        0.5, ge=0, description="Smallest draw above the peers (monthly) or step (daily) flagged "
        "[kW].",
    )
    min_peers: int = Field(
        10, ge=2, description="Smallest group of similar premises; a smaller one is widened "
        "(class and region, then class, then all).",
    )
    daily_history_days: int = Field(
        120, ge=30, le=730, description="Days of daily reads looked at, ending on the as-of day "
        "[days].",
    )
    daily_min_t: float = Field(
        8.0, gt=0, description="t-statistic a step in daily energy needs (fitted with "
        "temperature and weekday) [-].",
    )
    daily_min_persistence: float = Field(
        0.8, ge=0, le=1, description="Share of the days since the onset with at least half the "
        "step [-].",
    )


class ReportConfig(_Section):
    """The human outputs: report.html and one plot per flagged site."""

    enabled: bool = Field(True, description="Write report.html (and plots) beside the CSV outputs.")
    plots: bool = Field(True, description="Draw one PNG per flagged meter and asset under plots/.")
    currency: str = Field(
        "", max_length=12,
        description="Currency of tariff_per_kwh (e.g. EUR), shown with the money in report.html.",
    )
    embedded_plots: int = Field(
        100, ge=0, description="report.html embeds the plots of the N highest-ranked flagged "
        "meters and of the N first flagged assets; the others are linked (every plot is in "
        "plots/). Keeps the report openable at 100,000 meters.",
    )


class CasesConfig(_Section):
    """Case history: what happened to each flagged site across runs."""

    enabled: bool = Field(True, description="Record each run's flags in the case history.")
    database: str = Field(
        "", description="SQLite file of the case history; empty: one history per output, "
        ".OUT_DIR.state/cases.sqlite beside --output OUT_DIR, or ROOT/state/cases.sqlite "
        "under --output-root ROOT.",
    )
    reopen_rel_change: float = Field(
        0.5, ge=0, description="A site closed as legitimate or suppressed is flagged again when "
        "its load changed by more than this share of the level at closure [-] ...",
    )
    reopen_min_kw: float = Field(0.5, ge=0, description="... and by at least this much [kW].")


class SourceConfig(_Section):
    """Where the input tables come from."""

    kind: Literal["files", "influxdb"] = Field(
        "files", description="'files': a dataset directory given with --input; 'influxdb': the "
        "server in [influxdb].",
    )
    meters_file: str = Field(
        "", description="InfluxDB source: the meters table (CSV or Parquet); empty: one meter per "
        "series of the readings measurement, its tags giving the meters columns.",
    )


class MeasurementConfig(_Section):
    """How one contract table is stored in InfluxDB (the utility's own schema)."""

    measurement: str = Field(description="Measurement name; empty: the table is not read.")
    id_tag: str = Field(min_length=1, description="Tag holding the meter / asset / region id.")
    field: str = Field(min_length=1, description="Field holding the value.")
    unit: Literal["kwh", "wh", "kw", "w", "c"] = Field(
        description="Unit of the field: energy per interval (kwh, wh), mean power over the "
        "interval starting at the point's time (kw, w), or degrees Celsius (c, weather only).",
    )


class InfluxConfig(_Section):
    """An InfluxDB server: source of the inputs and/or sink of the results."""

    url: str = Field("http://127.0.0.1:8086", description="Base URL of the server.")
    api: Literal["v1", "v2"] = Field(
        "v1", description="'v1': InfluxQL /query and /write (InfluxDB 1.x; 2.x and 3.x serve it "
        "too); 'v2': influxdb-client with Flux (2.x, Cloud).",
    )
    database: str = Field("gridwatch", min_length=1,
                          description="v1: the database; v2: the bucket.")
    retention_policy: str = Field("", description="v1 only: retention policy; empty: default.")
    org: str = Field("", description="v2 only: the organisation.")
    username_env: str = Field("GRIDWATCH_INFLUXDB_USERNAME",
                              description="v1: environment variable holding the user name.")
    password_env: str = Field("GRIDWATCH_INFLUXDB_PASSWORD",
                              description="v1: environment variable holding the password.")
    token_env: str = Field("GRIDWATCH_INFLUXDB_TOKEN",
                           description="v2: environment variable holding the API token.")
    token_file: str = Field(
        "", description="A file holding the token (v2) or 'user:password' (v1); used when the "
        "environment variables are not set. Never logged.",
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP request [s].")
    retries: int = Field(4, ge=0, le=20, description="Retries of a failed request, with backoff.")
    backoff_s: float = Field(0.5, ge=0, description="First backoff; doubles each retry [s].")
    ids_per_query: int = Field(100, ge=1, le=100_000,
                               description="Ids named in one query (memory stays bounded).")
    days_per_query: int = Field(30, ge=1, le=366, description="Days covered by one query [days].")
    readings: MeasurementConfig = MeasurementConfig(
        measurement="readings", id_tag="meter_id", field="kwh", unit="kwh")
    upstream: MeasurementConfig = MeasurementConfig(
        measurement="upstream", id_tag="asset_id", field="kwh", unit="kwh")
    weather: MeasurementConfig = MeasurementConfig(
        measurement="weather", id_tag="region", field="temperature_c", unit="c")

    @model_validator(mode="before")
    @classmethod
    def _complete_tables(cls, data):
        """A table given in part (``[influxdb.readings] unit = "kw"``) keeps its other defaults."""
        if isinstance(data, dict):
            data = dict(data)
            for table in ("readings", "upstream", "weather"):
                given = data.get(table)
                if isinstance(given, dict):
                    default = cls.model_fields[table].default.model_dump()
                    data[table] = {**default, **given}
        return data


class SinkConfig(_Section):
    """Results written back to InfluxDB after each run (for dashboards and alerting)."""

    influxdb: bool = Field(False, description="Write flags and balance to the [influxdb] server.")
    flags_measurement: str = Field("gridwatch_flags", min_length=1,
                                   description="Measurement of the per-meter scores and flags.")
    balance_measurement: str = Field("gridwatch_balance", min_length=1,
                                     description="Measurement of the per-asset energy balance.")


class OutputConfig(_Section):
    """Where scheduled runs put their outputs and logs."""

    root: str = Field(
        "", description="Output root for scheduled runs: ROOT/<as-of>/ per night and a ROOT/latest "
        "link (like --output-root); --output OUT_DIR wins.",
    )
    log_file: str = Field("", description="Append the run's log to this file (like --log-file).")


class EngineConfig(_Section):
    """How the meters are analysed: in partitions of whole transformers that fit the budget."""

    kind: Literal["memory", "streaming", "dask"] = Field(
        "streaming", description="'streaming' (the default): partitions of whole transformers "
        "that fit memory_budget_mb, one after another; a dataset that fits is one partition, "
        "all meters at once, so this is the fastest run within the budget; 'memory': all meters "
        "at once whatever the budget; 'dask': the partitions as tasks of a dask.distributed "
        "cluster.",
    )
    memory_budget_mb: int = Field(
        2000, ge=1, description="Memory one partition may use [MB]; sets the partition size.",
    )
    scheduler: str = Field(
        "", description="dask: address of an existing scheduler (tcp://HOST:PORT); empty: a "
        "local cluster on 127.0.0.1.",
    )
    workers: int = Field(2, ge=1, le=256, description="dask: workers of the local cluster.")
    reuse_freed_memory: bool = Field(
        True, description="Keep the memory each partition frees in the process for the next "
        "(glibc malloc; the run's own process with 'memory' or 'streaming', the local cluster's "
        "workers with 'dask'): about 1.3x faster (docs/scale.md).",
    )


class SuppressedMeter(_Section):
    """A meter known to carry a legitimate steady load."""

    meter_id: str = Field(description="Meter to keep out of the flagged list.")
    reason: str = Field(min_length=1, description="Why (licensed miner, greenhouse, data room...).")


class Config(_Section):
    """Everything a run needs to know besides its inputs."""

    data: DataConfig = DataConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    detection: DetectionConfig = DetectionConfig()
    balance: BalanceConfig = BalanceConfig()
    coarse: CoarseConfig = CoarseConfig()
    report: ReportConfig = ReportConfig()
    cases: CasesConfig = CasesConfig()
    source: SourceConfig = SourceConfig()
    influxdb: InfluxConfig = InfluxConfig()
    sink: SinkConfig = SinkConfig()
    output: OutputConfig = OutputConfig()
    engine: EngineConfig = EngineConfig()
    suppress: tuple[SuppressedMeter, ...] = ()

    def to_dict(self) -> dict:
        """The resolved configuration as plain data (for ``run.json``)."""
        return self.model_dump(mode="json")


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"])
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"key '{key}' = {value!r}: {error['msg']}"


def config_from_dict(data: dict, *, source: str = "<dict>") -> Config:
    """Validate a plain mapping into a :class:`Config`.

    Raises
    ------
    ConfigError
        Naming the first offending key, its value and what is allowed.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{first}{more}", file=source,
                          hint="see configs/default.toml for every key and its range") from None


def load_config(path=None) -> Config:
    """Load and validate a TOML configuration file.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The TOML file. ``None`` gives the defaults.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        When the file is missing, is not TOML, or holds an invalid value.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path,
                          hint="pass an existing TOML file to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from None
    except UnicodeDecodeError as exc:  # binary garbage: tomllib reads UTF-8 text only
        raise ConfigError(f"not a TOML text file (byte {exc.start} is not UTF-8)", file=path,
                          hint="pass a TOML file, e.g. a copy of `gridwatch config --defaults`"
                          ) from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"cannot read the config file: {exc.strerror or exc}", file=path,
                          hint="pass a readable TOML file to --config") from None
    return config_from_dict(_anchor_paths(data, path.parent), source=str(path))


PATH_KEYS = (("cases", "database"), ("source", "meters_file"), ("influxdb", "token_file"),
             ("output", "root"), ("output", "log_file"))
"""Keys holding file paths; relative ones are relative to the config file."""


def _anchor_paths(data: dict, base: Path) -> dict:
    """Make the relative paths of a config file relative to its own directory (cron's cwd is ~)."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for section, key in PATH_KEYS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][key] = str(base / value)
    return data
