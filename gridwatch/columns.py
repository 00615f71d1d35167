"""The vocabulary: every column name GridWatch reads or writes, with its unit.

Contract names (``docs/data-contract.md``) are fixed; internal names follow the
same rule of carrying their unit: ``kwh`` is energy per interval [kWh], ``kw``
is mean demand over an interval [kW], ``temperature_c`` is [degrees C].
"""

# --- input: meters -----------------------------------------------------------
METER_ID = "meter_id"
TRANSFORMER_ID = "transformer_id"
FEEDER_ID = "feeder_id"
SUBSTATION_ID = "substation_id"
CUSTOMER_CLASS = "customer_class"
REGION = "region"
TARIFF_PER_KWH = "tariff_per_kwh"  # currency units per kWh
CONTRACTED_KW = "contracted_kw"  # [kW]
LAT = "lat"
LON = "lon"

METERS_REQUIRED = (METER_ID,)
METERS_STRING_COLUMNS = (
    METER_ID,
    TRANSFORMER_ID,
    FEEDER_ID,
    SUBSTATION_ID,
    CUSTOMER_CLASS,
    REGION,
)
METERS_FLOAT_COLUMNS = (TARIFF_PER_KWH, CONTRACTED_KW, LAT, LON)
CUSTOMER_CLASSES = ("residential", "commercial", "industrial", "agricultural", "other")

# --- input: readings / upstream / weather ---------------------------------------
TIMESTAMP = "timestamp"  # START of the interval; tz-aware UTC inside GridWatch
KWH = "kwh"  # energy in the interval [kWh] (imported from the grid, for readings)
KWH_EXPORT = "kwh_export"  # energy exported to the grid in the interval [kWh], >= 0 (rooftop PV)
KVARH = "kvarh"  # reactive energy in the interval [kvarh]
ASSET_ID = "asset_id"
TEMPERATURE_C = "temperature_c"  # [degrees C]

# Utility export forms (issue 16, gridwatch/sources/export_forms.py): read, then turned into kwh.
REGISTER_KWH = "register_kwh"  # cumulative import register read at the timestamp [kWh]
DEVICE_ID = "device_id"  # the physical meter read; a new one at the same meter_id is an exchange

READINGS_REQUIRED = (METER_ID, TIMESTAMP, KWH)
READINGS_OPTIONAL_VALUES = (KWH_EXPORT,)  # read when the file has them; empty means none
UPSTREAM_REQUIRED = (ASSET_ID, TIMESTAMP, KWH)
WEATHER_REQUIRED = (REGION, TIMESTAMP, TEMPERATURE_C)

TABLES = ("meters", "readings", "upstream", "weather")
REQUIRED_COLUMNS = {
    "meters": METERS_REQUIRED,
    "readings": READINGS_REQUIRED,
    "upstream": UPSTREAM_REQUIRED,
    "weather": WEATHER_REQUIRED,
}

# --- internal -----------------------------------------------------------------
KW = "kw"  # mean demand over an interval [kW]
INTERVAL_MINUTES = "interval_minutes"
COVERAGE = "coverage"  # fraction 0..1 of an interval's expected readings present

# --- output: flags.csv (docs/data-contract.md, in this order) -------------------------
RANK = "rank"
SCORE = "score"
FLAGGED = "flagged"
KIND = "kind"
ONSET = "onset"
EXCESS_KW = "excess_kw"
EXCESS_KWH = "excess_kwh"
EST_LOSS = "est_loss"
REASONS = "reasons"

FLAGS_COLUMNS = (
    METER_ID,
    TRANSFORMER_ID,
    RANK,
    SCORE,
    FLAGGED,
    KIND,
    ONSET,
    EXCESS_KW,
    EXCESS_KWH,
    EST_LOSS,
    REASONS,
)
KIND_VISIBLE = "visible_load"
KIND_HIDDEN = "hidden_load_suspect"
KIND_MONTHLY = "monthly_pattern"  # monthly billing reads with the Irkutsk signs (issue 16 item 4)

# --- output: monthly_suspects.csv (the list a supplier hands on; issue 16 item 4) ------
HEATING_TYPE = "heating_type"  # optional meters column: "electric" or another heating type
MONTHLY_SUSPECTS_COLUMNS = (
    RANK, METER_ID, TRANSFORMER_ID, CUSTOMER_CLASS, REGION, HEATING_TYPE, "months", ONSET,
    "kwh_per_day", "peer_kwh_per_day", "peer_ratio", "summer_ratio", "winter_ratio",
    "stability_cv", EXCESS_KW, EXCESS_KWH, TARIFF_PER_KWH, EST_LOSS, SCORE, "peers", REASONS,
)

# --- output: transformers.csv -------------------------------------------------------
UNEXPLAINED_KW = "unexplained_kw"
SUSPECTS = "suspects"
TRANSFORMERS_COLUMNS = (ASSET_ID, FLAGGED, KIND, UNEXPLAINED_KW, ONSET, SUSPECTS)

# --- output: topology.csv -----------------------------------------------------------
LISTED_TRANSFORMER_ID = "listed_transformer_id"
LIKELY_TRANSFORMER_ID = "likely_transformer_id"
EVIDENCE = "evidence"
CONFIDENCE = "confidence"
TOPOLOGY_COLUMNS = (METER_ID, LISTED_TRANSFORMER_ID, LIKELY_TRANSFORMER_ID, EVIDENCE, CONFIDENCE)
KIND_HIDDEN_LOAD = "hidden_load"  # energy delivered but not metered (theft-like)
KIND_METERING_FAULT = "metering_fault"  # a ratio change or clock offset of the upstream measurement

# --- output: inspections.csv (the crew plan; issue 16 item 5) --------------------------
CREW_GROUP = "crew_group"  # 1, 2, ...: one feeder's sites, the feeder with the most at stake first
STOP = "stop"  # 1, 2, ...: order of the sites within their crew group
SITE_ID = "site_id"  # a meter_id or an asset_id
SITE_TYPE = "site_type"  # "meter", "transformer", "feeder", "substation" or "asset"
CASE_ID = "case_id"  # the case a site belongs to: itself, or the flagged asset of a hidden load
FEEDER_SITES = "feeder_sites"  # cases in the crew group
FEEDER_EXCESS_KW = "feeder_excess_kw"  # their excess_kw summed, each case once [kW]
FEEDER_EST_LOSS = "feeder_est_loss"  # their est_loss summed, each case once [currency]
INSPECTIONS_COLUMNS = (
    CREW_GROUP, SUBSTATION_ID, FEEDER_ID, TRANSFORMER_ID, STOP, SITE_ID, SITE_TYPE, CASE_ID, RANK,
    KIND, ONSET, EXCESS_KW, EXCESS_KWH, EST_LOSS, LAT, LON, SUSPECTS, FEEDER_SITES,
    FEEDER_EXCESS_KW, FEEDER_EST_LOSS,
)

# --- output: data_quality.csv ---------------------------------------------------------
DATA_QUALITY_COLUMNS = ("code", "severity", "table", "meter_id", "count", "action", "detail")
