"""Configuration: typed, frozen, checked once; every error names the file, the YAML path,
what was expected and what arrived."""

import dataclasses
import textwrap
from datetime import date
from pathlib import Path

import pytest

from forecaster import config, schema
from forecaster.build import model_spec
from forecaster.config import Pipeline, Settings
from forecaster.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# A minimal valid pipeline: everything else takes its default.
WEATHER = textwrap.dedent("""\
    name: weather
    input_topic: weather.in
    output_topic: weather.out
    dead_letter_topic: weather.dead
    record:
      key: station
      timestamp: time
      target: temp
    cadence: 1h
    horizon: 24
    """)

SOLAR = textwrap.dedent("""\
    name: solar
    input_topic: solar.in
    output_topic: solar.out
    dead_letter_topic: solar.dead
    record:
      key: site
      timestamp: time
      target: ghi
    cadence: 30m
    horizon: 48
    """)


def write_config(root: Path, pipelines: dict[str, str], settings: str = "") -> Path:
    """config.yaml in `root` listing `pipelines/<name>.yaml` for each given text; returns its path."""
    (root / "pipelines").mkdir(exist_ok=True)
    for name, text in pipelines.items():
        (root / "pipelines" / f"{name}.yaml").write_text(text)
    listing = "".join(f"  - pipelines/{name}.yaml\n" for name in pipelines)
    path = root / "config.yaml"
    path.write_text(textwrap.dedent(settings) + "pipelines:\n" + listing)
    return path


def load_error(path: Path, require_weights: bool = True) -> str:
    with pytest.raises(ConfigError) as raised:
        config.load(path, require_weights=require_weights)
    return str(raised.value)


@pytest.fixture
def weather_file(tmp_path) -> str:
    """How the weather pipeline file is named in messages."""
    return str(tmp_path / "pipelines" / "weather.yaml")


def pipeline_error(tmp_path, text: str) -> str:
    return load_error(write_config(tmp_path, {"weather": text}))


# --- what loads -----------------------------------------------------------------------


def test_shipped_config_loads_with_its_three_pipelines(monkeypatch):
    for var in ("KAFKA_BOOTSTRAP", "FORECASTER_GROUP", "FORECASTER_DEVICE", "FORECASTER_METRICS_PORT"):
        monkeypatch.delenv(var, raising=False)
    loaded = config.load(REPO / "config.yaml", require_weights=False)
    assert [p.name for p in loaded.pipelines] == ["stock", "weather", "power_load"]
    assert loaded.settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert loaded.settings.metrics.port == 9108 and type(loaded.settings.metrics.port) is int
    stock, weather, power = loaded.pipelines
    assert (stock.cadence, stock.horizon, stock.record.covariates) == ("1b", 5, ("volume",))
    assert weather.model.cell == "lstm" and weather.model.layer_norm is True
    assert power.scaling.halflife == 672.0 and type(power.scaling.halflife) is float
    assert power.input_size == 1 + 0 + 4  # target, no covariates, hour and weekday sin/cos


def test_shipped_kafka_pass_through_settings_keep_their_types():
    loaded = config.load(REPO / "config.yaml", require_weights=False)
    consumer, producer = loaded.settings.kafka.consumer, loaded.settings.kafka.producer
    assert dict(consumer) == {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    assert type(consumer["session_timeout_ms"]) is int
    assert dict(producer) == {"acks": "all", "linger_ms": 5}


def test_a_minimal_pipeline_takes_the_documented_defaults(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER}))
    (weather,) = loaded.pipelines
    assert loaded.path == tmp_path / "config.yaml"
    assert weather.record == config.RecordFormat(key="station", timestamp="time", target="temp")
    assert weather.record.covariates == () and weather.record.format == "json"
    assert (weather.partitions, weather.emit, weather.max_series) == (3, "per_record", 100_000)
    assert weather.model == config.ModelConfig()
    assert (weather.model.cell, weather.model.hidden_size, weather.model.weights) == ("gru", 64, None)
    assert weather.scaling.halflife == 200.0
    assert loaded.settings.kafka.consumer == {}
    assert loaded.settings.device == "auto"
    assert loaded.pipeline("weather") is weather


def test_pass_through_kafka_settings_keep_their_yaml_types(tmp_path):
    path = write_config(
        tmp_path,
        {"weather": WEATHER},
        """\
        kafka:
          consumer:
            max_poll_records: 500
            enable_auto_commit: false
            isolation_level: read_committed
            fetch_max_wait_s: 0.5
            api_version: [3, 7]
            sasl_password: null
        """,
    )
    consumer = config.load(path).settings.kafka.consumer
    assert dict(consumer) == {
        "max_poll_records": 500,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "fetch_max_wait_s": 0.5,
        "api_version": (3, 7),
        "sasl_password": None,
    }
    assert type(consumer["max_poll_records"]) is int and type(consumer["enable_auto_commit"]) is bool


@pytest.mark.parametrize("key", ["auto_offset_reset", "auto.offset.reset"])
def test_where_a_new_group_starts_is_a_typed_setting_not_a_pass_through_one(tmp_path, key):
    path = write_config(tmp_path, {"weather": WEATHER}, "kafka:\n  auto_offset_reset: latest\n")
    assert config.load(path).settings.kafka.auto_offset_reset == "latest"
    assert config.Kafka().auto_offset_reset == "earliest"
    path = write_config(tmp_path, {"weather": WEATHER}, f"kafka:\n  consumer:\n    {key}: latest\n")
    assert load_error(path) == (
        f"{path}: kafka.consumer: expected kafka.auto_offset_reset instead of consumer.{key}, "
        f"got consumer.{key}: latest"
    )


def test_pass_through_settings_reject_nested_mappings(tmp_path):
    path = write_config(
        tmp_path,
        {"weather": WEATHER},
        """\
        kafka:
          consumer:
            sasl: {mechanism: PLAIN}
        """,
    )
    assert load_error(path) == (
        f"{path}: kafka.consumer.sasl: expected a scalar or a list of scalars, got a dict {{'mechanism': 'PLAIN'}}"
    )


def test_asking_for_an_unknown_pipeline_names_the_known_ones(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER, "solar": SOLAR})
    with pytest.raises(ConfigError) as raised:
        config.load(path).pipeline("wind")
    assert str(raised.value) == f"{path}: no pipeline named 'wind' (known: weather, solar)"


def test_config_objects_are_frozen(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER}))
    weather = loaded.pipelines[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        weather.model.hidden_size = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        weather.horizon = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.settings.metrics.port = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.pipelines = ()
    with pytest.raises(TypeError):  # pass-through mappings are read-only too
        loaded.settings.kafka.consumer["max_poll_records"] = 1


# --- unknown keys ---------------------------------------------------------------------


def test_an_unknown_pipeline_key_lists_the_expected_keys(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "colour: blue\n") == (
        f"{weather_file}: colour: unknown key (expected one of: name, input_topic, output_topic, dead_letter_topic, "
        "record, cadence, cadence_tz, holidays, horizon, partitions, calendar, model, scaling, emit, max_series, "
        "spill, spill_max_bytes, checkpoint, limits, skill_window, batching, training, retraining, intervals, "
        "combination, gaps, output)"
    )


def test_an_unknown_nested_key_names_its_full_path(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "model:\n  hiden_size: 8\n") == (
        f"{weather_file}: model.hiden_size: unknown key (expected one of: cell, hidden_size, num_layers, "
        "dropout, layer_norm, residual, nonlinearity, quantiles, highway, season, attention, weights, seed, "
        "weights_policy)"
    )


def test_an_unknown_global_key_names_config_yaml(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER}, "metric:\n  port: 9100\n")
    assert load_error(path) == (
        f"{path}: metric: unknown key "
        "(expected one of: kafka, device, metrics, log_level, log_format, kafka_log_level, state_dir, "
        "keep_freed_memory, pipelines)"
    )


# --- types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet, message",
    [
        ("model:\n  hidden_size: lots\n", "model.hidden_size: expected an integer, got 'lots'"),
        ("model:\n  hidden_size: true\n", "model.hidden_size: expected an integer, got True"),
        ("model:\n  hidden_size: 8.5\n", "model.hidden_size: expected an integer, got 8.5"),
        ("model:\n  layer_norm: 1\n", "model.layer_norm: expected true or false, got 1"),
        ("model:\n  weights: 7\n", "model.weights: expected a non-empty string, got 7"),
        ("model: 3\n", "model: expected a mapping, got 3"),
        ("scaling:\n  clip: high\n", "scaling.clip: expected a finite number, got 'high'"),
        ("scaling:\n  clip: .inf\n", "scaling.clip: expected a finite number, got inf"),
        ("scaling:\n  clip: .nan\n", "scaling.clip: expected a finite number, got nan"),
        ("scaling:\n  clip: 1" + "0" * 400 + "\n", "scaling.clip: expected a finite number, got 1" + "0" * 400),
        ("training:\n  dataset: ''\n", "training.dataset: expected a non-empty string, got ''"),
    ],
    ids=[
        "str-for-int",
        "bool-for-int",
        "float-for-int",
        "int-for-bool",
        "number-for-string",
        "scalar-for-mapping",
        "str-for-float",
        "infinity",
        "nan",
        "int-too-large-for-float",
        "empty-string",
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_what_was_expected(tmp_path, weather_file, snippet, message):
    assert pipeline_error(tmp_path, WEATHER + snippet) == f"{weather_file}: {message}"


def test_a_number_where_a_topic_name_belongs_is_rejected(tmp_path, weather_file):
    text = WEATHER.replace("input_topic: weather.in", "input_topic: 42")
    assert pipeline_error(tmp_path, text) == f"{weather_file}: input_topic: expected a non-empty string, got 42"


def test_a_scalar_where_a_list_belongs_is_rejected(tmp_path, weather_file):
    text = WEATHER.replace("  target: temp\n", "  target: temp\n  covariates: humidity\n")
    assert pipeline_error(tmp_path, text) == f"{weather_file}: record.covariates: expected a list, got 'humidity'"


def test_a_list_item_of_the_wrong_type_names_its_index(tmp_path, weather_file):
    text = WEATHER.replace("  target: temp\n", "  target: temp\n  covariates: [humidity, 3]\n")
    assert pipeline_error(tmp_path, text) == f"{weather_file}: record.covariates[1]: expected a non-empty string, got 3"


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER})
    path.write_text("- pipelines/weather.yaml\n")
    assert load_error(path) == f"{path}: expected a mapping, got a list ['pipelines/weather.yaml']"


# --- required keys --------------------------------------------------------------------


def test_a_missing_required_key_is_named_with_its_meaning(tmp_path, weather_file):
    text = WEATHER.replace("  target: temp\n", "")
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: record.target: missing required key (record field holding the value to forecast)"
    )


def test_an_empty_pipeline_file_misses_its_name_first(tmp_path, weather_file):
    assert pipeline_error(tmp_path, "") == (
        f"{weather_file}: name: missing required key (pipeline name, used in metrics labels and consumer group ids)"
    )


def test_config_yaml_must_list_its_pipelines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("log_level: INFO\n")
    assert load_error(path) == f"{path}: pipelines: missing required key (pipeline files, relative to config.yaml)"


# --- impossible values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "horizon: 24",
            "horizon: 24\nmodel:\n  hidden_size: -3",
            "model.hidden_size: expected a positive integer, got -3",
        ),
        ("horizon: 24", "horizon: 24\nmodel:\n  dropout: 1.0", "model.dropout: expected a number in [0, 1), got 1.0"),
        (
            "horizon: 24",
            "horizon: 24\nscaling:\n  halflife: -5",
            "scaling.halflife: expected a positive number, got -5",
        ),
        (
            "horizon: 24",
            "horizon: 24\ntraining:\n  warmup_steps: -1",
            "training.warmup_steps: expected an integer >= 0, got -1",
        ),
        (
            "horizon: 24",
            "horizon: 24\ntraining:\n  train_fraction: 0",
            "training.train_fraction: expected a number in (0, 1], got 0",
        ),
        ("horizon: 24", "horizon: 0", "horizon: expected a positive integer, got 0"),
        (
            "cadence: 1h",
            "cadence: 7x",
            "cadence: expected a cadence such as 30m, 1h, 1d, 1b (business day), 1w, 1M (month) or 1Q (quarter), "
            "got '7x'",
        ),
        (
            "cadence: 1h",
            "cadence: 0h",
            "cadence: expected a cadence such as 30m, 1h, 1d, 1b (business day), 1w, 1M (month) or 1Q (quarter), "
            "got '0h'",
        ),
        (
            "input_topic: weather.in",
            "input_topic: weather observations",
            "input_topic: expected a Kafka topic name (letters, digits, '.', '_', '-'), got 'weather observations'",
        ),
        ("name: weather", "name: Weather", "name: expected a lower-case identifier, got 'Weather'"),
    ],
    ids=[
        "hidden_size",
        "dropout",
        "halflife",
        "warmup_steps",
        "train_fraction",
        "horizon",
        "cadence-unit",
        "cadence-zero",
        "topic",
        "name",
    ],
)
def test_an_impossible_value_is_named_with_the_constraint(tmp_path, weather_file, old, new, message):
    assert pipeline_error(tmp_path, WEATHER.replace(old, new)) == f"{weather_file}: {message}"


def test_a_port_out_of_range_is_rejected_in_config_yaml(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER}, "metrics:\n  port: 70000\n")
    assert load_error(path) == f"{path}: metrics.port: expected a TCP port in 1..65535, got 70000"


def test_halflife_null_means_all_history_weighs_equally(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER + "scaling:\n  halflife: null\n"}))
    assert loaded.pipelines[0].scaling.halflife is None


@pytest.mark.parametrize(
    "snippet, message",
    [
        ("model:\n  cell: transformer\n", "model.cell: expected one of gru, lstm, rnn, got 'transformer'"),
        ("emit: sometimes\n", "emit: expected one of per_record, latest_per_series, got 'sometimes'"),
        ("training:\n  loss: mae\n", "training.loss: expected one of mse, relative_mse, got 'mae'"),
    ],
)
def test_an_enum_accepts_only_its_listed_values(tmp_path, weather_file, snippet, message):
    assert pipeline_error(tmp_path, WEATHER + snippet) == f"{weather_file}: {message}"


def test_a_global_enum_is_checked_too(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER}, "device: tpu\n")
    assert load_error(path) == f"{path}: device: expected one of auto, cpu, cuda, got 'tpu'"


# --- rules across fields --------------------------------------------------------------


def test_relu_is_only_for_the_plain_rnn_cell(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "model:\n  cell: gru\n  nonlinearity: relu\n") == (
        f"{weather_file}: model.nonlinearity: expected tanh unless cell is rnn, got relu with cell gru"
    )


def test_tracking_intervals_without_quantiles_is_refused(tmp_path, weather_file):
    no_quantiles = WEATHER + "model:\n  quantiles: []\n"
    assert pipeline_error(tmp_path, no_quantiles + "intervals:\n  tracking_rate: 0.02\n") == (
        f"{weather_file}: intervals.tracking_rate: expected 0 unless model.quantiles has at least two levels "
        "(an interval to track), got 0.02 with []"
    )


def test_a_season_shorter_than_the_horizon_is_refused(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "model:\n  season: 12\n") == (
        f"{weather_file}: model.season: expected at least the horizon (24 steps): a step further ahead than a "
        "season has no value one season before it yet, got 12"
    )


def test_a_season_of_a_day_loads_into_the_model_spec(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER + "model:\n  season: 24\n"}))
    assert model_spec(loaded.pipelines[0]).season == 24


def test_relu_with_the_rnn_cell_loads(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER + "model:\n  cell: rnn\n  nonlinearity: relu\n"}))
    assert (loaded.pipelines[0].model.cell, loaded.pipelines[0].model.nonlinearity) == ("rnn", "relu")


def test_input_and_output_must_be_different_topics(tmp_path, weather_file):
    text = WEATHER.replace("output_topic: weather.out", "output_topic: weather.in")
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: output_topic: expected a topic other than input_topic, got 'weather.in'"
    )


def test_the_dead_letter_topic_must_be_its_own(tmp_path, weather_file):
    text = WEATHER.replace("output_topic: weather.out", "output_topic: weather.out\ndead_letter_topic: weather.out")
    text = (
        "\n".join(line for line in text.splitlines() if not line.startswith("dead_letter_topic: weather.dead")) + "\n"
    )
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: dead_letter_topic: expected a topic other than input_topic and output_topic, got "
        f"'weather.out'"
    )


@pytest.mark.parametrize("chunk", [64, 32])
def test_a_training_chunk_must_be_shorter_than_the_window(tmp_path, weather_file, chunk):
    assert pipeline_error(tmp_path, WEATHER + f"training:\n  window: 32\n  chunk: {chunk}\n") == (
        f"{weather_file}: training.chunk: expected fewer steps than training.window (32), got {chunk}"
    )


def test_a_training_chunk_shorter_than_the_window_loads(tmp_path):
    loaded = config.load(write_config(tmp_path, {"weather": WEATHER + "training:\n  window: 32\n  chunk: 31\n"}))
    assert (loaded.pipelines[0].training.chunk, loaded.pipelines[0].training.window) == (31, 32)


def test_record_fields_must_be_distinct(tmp_path, weather_file):
    text = WEATHER.replace("  target: temp\n", "  target: temp\n  covariates: [temp]\n")
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: record.covariates: expected fields distinct from each other and from key, timestamp and "
        f"target, "
        "got ['station', 'time', 'temp', 'temp']"
    )


def test_two_pipelines_cannot_share_a_name(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER, "solar": SOLAR.replace("name: solar", "name: weather")})
    solar, weather = tmp_path / "pipelines" / "solar.yaml", tmp_path / "pipelines" / "weather.yaml"
    assert load_error(path) == f"{solar}: name: pipeline name 'weather' is already used by {weather}"


def test_two_pipelines_cannot_share_a_topic(tmp_path):
    path = write_config(
        tmp_path, {"weather": WEATHER, "solar": SOLAR.replace("input_topic: solar.in", "input_topic: weather.out")}
    )
    solar, weather = tmp_path / "pipelines" / "solar.yaml", tmp_path / "pipelines" / "weather.yaml"
    assert load_error(path) == f"{solar}: input_topic: topic 'weather.out' is already used by {weather}"


# --- environment variables ------------------------------------------------------------


def test_an_int_field_from_an_unset_variable_takes_the_default_as_an_int(tmp_path, monkeypatch):
    monkeypatch.delenv("FC_TEST_PORT", raising=False)
    path = write_config(tmp_path, {"weather": WEATHER}, "metrics:\n  port: ${FC_TEST_PORT:-9108}\n")
    port = config.load(path).settings.metrics.port
    assert port == 9108 and type(port) is int


def test_a_set_variable_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_TEST_PORT", "9200")
    monkeypatch.setenv("FC_TEST_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    path = write_config(
        tmp_path,
        {"weather": WEATHER},
        """\
        kafka:
          bootstrap_servers: ${FC_TEST_BOOTSTRAP:-127.0.0.1:9092}
        metrics:
          port: ${FC_TEST_PORT:-9108}
        """,
    )
    settings = config.load(path).settings
    assert settings.metrics.port == 9200
    assert settings.kafka.bootstrap_servers == "kafka-1:9093,kafka-2:9093"


def test_variables_expand_inside_text_and_in_pipeline_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_TEST_SITE", "eu")
    monkeypatch.delenv("FC_TEST_HORIZON", raising=False)
    text = WEATHER.replace("input_topic: weather.in", "input_topic: weather.${FC_TEST_SITE}.in")
    text = text.replace("horizon: 24", "horizon: ${FC_TEST_HORIZON:-12}")
    weather = config.load(write_config(tmp_path, {"weather": text})).pipelines[0]
    assert weather.input_topic == "weather.eu.in"
    assert weather.horizon == 12


def test_a_string_field_keeps_a_variable_that_looks_like_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_TEST_CLIENT", "0123")
    monkeypatch.setenv("FC_TEST_GROUP", "on")
    path = write_config(
        tmp_path,
        {"weather": WEATHER},
        """\
        kafka:
          client_id: ${FC_TEST_CLIENT}
          group_id: ${FC_TEST_GROUP}
        """,
    )
    kafka = config.load(path).settings.kafka
    assert (kafka.client_id, kafka.group_id) == ("0123", "on")


def test_a_variable_into_a_pass_through_setting_is_typed(tmp_path, monkeypatch):
    monkeypatch.delenv("FC_TEST_RECORDS", raising=False)
    path = write_config(
        tmp_path, {"weather": WEATHER}, "kafka:\n  consumer:\n    max_poll_records: ${FC_TEST_RECORDS:-500}\n"
    )
    assert config.load(path).settings.kafka.consumer["max_poll_records"] == 500


def test_a_variable_is_checked_like_the_value_it_replaces(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_TEST_PORT", "70000")
    path = write_config(tmp_path, {"weather": WEATHER}, "metrics:\n  port: ${FC_TEST_PORT:-9108}\n")
    assert load_error(path) == f"{path}: metrics.port: expected a TCP port in 1..65535, got 70000"


def test_an_unset_variable_without_default_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FC_TEST_BOOTSTRAP", raising=False)
    path = write_config(tmp_path, {"weather": WEATHER}, "kafka:\n  bootstrap_servers: ${FC_TEST_BOOTSTRAP}\n")
    assert load_error(path) == (
        f"{path}: kafka.bootstrap_servers: environment variable FC_TEST_BOOTSTRAP is not set "
        "and has no default (write ${FC_TEST_BOOTSTRAP:-default})"
    )


# --- files ----------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, weather_file):
    text = WEATHER.replace("  timestamp: time\n", "   timestamp: time\n")  # line 7 indented one too far
    message = pipeline_error(tmp_path, text)
    assert message.startswith(f"{weather_file}: not valid YAML (line 7, column ")


def test_a_missing_pipeline_file_is_named(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER})
    path.write_text("pipelines:\n  - pipelines/weather.yaml\n  - pipelines/wind.yaml\n")
    assert load_error(path) == f"{tmp_path / 'pipelines' / 'wind.yaml'}: file not found"


def test_a_missing_config_file_is_named(tmp_path):
    assert load_error(tmp_path / "nowhere.yaml") == f"{tmp_path / 'nowhere.yaml'}: file not found"


def test_a_directory_where_a_pipeline_file_belongs_is_a_config_error(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER})
    path.write_text("pipelines:\n  - pipelines\n")
    assert load_error(path) == f"{tmp_path / 'pipelines'}: cannot read: Is a directory"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER})
    path.write_bytes(b"state_dir: caf\xe9\npipelines: [pipelines/weather.yaml]\n")
    assert load_error(path) == f"{path}: not UTF-8 text (byte 14)"


def test_a_missing_weights_file_suggests_pretrain(tmp_path, weather_file):
    path = write_config(tmp_path, {"weather": WEATHER + "model:\n  weights: models/weather.pt\n"})
    assert load_error(path) == (
        f"{weather_file}: model.weights: expected an existing weights file, got "
        f"'models/weather.pt' (run `forecaster pretrain -c {path} --pipeline weather`)"
    )


def test_weights_may_be_missing_when_not_required(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER + "model:\n  weights: models/weather.pt\n"})
    loaded = config.load(path, require_weights=False)
    assert loaded.resolve(loaded.pipelines[0].model.weights) == tmp_path / "models" / "weather.pt"


def test_weights_are_found_relative_to_config_yaml(tmp_path):
    path = write_config(tmp_path, {"weather": WEATHER + "model:\n  weights: models/weather.pt\n"})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "weather.pt").write_bytes(b"")
    assert config.load(path).pipelines[0].model.weights == "models/weather.pt"


# --- the reference documentation ------------------------------------------------------


def all_field_paths(cls, prefix=""):
    """Every field of a config dataclass, nested ones as dotted paths."""
    paths = []
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        paths.append(path)
        if isinstance(field.type, str) and dataclasses.is_dataclass(getattr(config, field.type, None)):
            paths += all_field_paths(getattr(config, field.type), path + ".")
    return paths


@pytest.mark.parametrize("cls", [Settings, Pipeline])
def test_documented_fields_list_every_field_with_a_doc(cls):
    rows = schema.documented_fields(cls)
    assert [path for path, _type, _default, _doc in rows] == all_field_paths(cls)
    undocumented = [path for path, _type, _default, doc in rows if not doc.strip()]
    assert undocumented == []


def test_documented_fields_show_type_and_default():
    rows = {path: (kind, default, doc) for path, kind, default, doc in schema.documented_fields(Pipeline)}
    assert rows["model.hidden_size"] == ("int", 64, "hidden units per layer")
    assert rows["model.cell"][:2] == ("gru | lstm | rnn", "gru")
    assert rows["record.target"][:2] == ("str", "(required)")
    assert rows["record.covariates"][:2] == ("list of str", ())
    assert rows["scaling.halflife"][:2] == ("float | null", 200.0)
    settings = {path: (kind, default) for path, kind, default, _doc in schema.documented_fields(Settings)}
    assert settings["kafka.consumer"] == ("mapping", {})
    assert settings["metrics.port"] == ("int", 9108)


def test_weights_policy_names_its_two_choices(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "model:\n  weights_policy: newest\n").startswith(
        f"{weather_file}: model.weights_policy: expected one of "
    )


def test_exactly_once_is_refused_without_the_changelog(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "checkpoint:\n  exactly_once: true\n") == (
        f"{weather_file}: checkpoint.exactly_once: expected false without checkpoint.changelog (a transaction "
        "commits the changelog's records with the forecasts and offsets), got true"
    )


def test_exactly_once_refuses_checkpoints_further_apart_than_a_transaction_may_stay_open(tmp_path, weather_file):
    text = WEATHER + "spill: none\ncheckpoint:\n  changelog: true\n  exactly_once: true\n  every_seconds: 45\n"
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: checkpoint.every_seconds: expected at most 30 with exactly_once (a transaction stays open "
        "until the checkpoint, and brokers abort one older than that), got 45"
    )


def test_exactly_once_with_the_changelog_loads_and_is_off_by_default(tmp_path):
    text = WEATHER + "spill: none\ncheckpoint:\n  changelog: true\n  every_seconds: 2\n"
    assert not config.load(write_config(tmp_path, {"weather": text})).pipeline("weather").checkpoint.exactly_once
    on = config.load(write_config(tmp_path, {"weather": text + "  exactly_once: true\n"}))
    assert on.pipeline("weather").checkpoint.exactly_once


def test_exactly_once_refuses_forecasts_packed_across_partitions(tmp_path, weather_file):
    text = WEATHER + "spill: none\ncheckpoint:\n  changelog: true\n  exactly_once: true\nbatching:\n"
    assert pipeline_error(tmp_path, text + "  forecasts_per_message: 8\n") == (
        f"{weather_file}: batching.forecasts_per_message: expected 1 with checkpoint.exactly_once (each forecast "
        "goes into the transaction of its series' input partition), got 8"
    )


def test_an_output_format_is_one_of_the_three_layouts(tmp_path, weather_file):
    assert pipeline_error(tmp_path, WEATHER + "output:\n  format: csv\n") == (
        f"{weather_file}: output.format: expected one of nested, long, wide, got 'csv'"
    )


# --- calendar cadences ------------------------------------------------------------------


def test_a_time_zone_and_holidays_load_as_yaml_dates_or_text(tmp_path):
    text = WEATHER.replace(
        "cadence: 1h", "cadence: 1b\ncadence_tz: America/New_York\nholidays: [2024-12-25, '2024-12-26']"
    )
    loaded = config.load(write_config(tmp_path, {"weather": text})).pipeline("weather")
    assert (loaded.cadence_tz, loaded.holidays) == ("America/New_York", (date(2024, 12, 25), date(2024, 12, 26)))


@pytest.mark.parametrize("cadence", ["1w", "2w", "1M", "3M", "1Q"])
def test_weeks_months_and_quarters_are_cadences(tmp_path, cadence):
    text = WEATHER.replace("cadence: 1h", f"cadence: {cadence}")
    assert config.load(write_config(tmp_path, {"weather": text})).pipeline("weather").cadence == cadence


@pytest.mark.parametrize(
    "new, message",
    [
        (
            "cadence: 1d\ncadence_tz: Europe/Londn",
            "cadence_tz: expected an IANA time zone name such as Europe/London or America/New_York (from the "
            "system's tz database, or the tzdata package where it has none), got 'Europe/Londn'",
        ),
        (
            "cadence: 1d\nholidays: [2024-12-25]",
            "holidays: expected none unless the cadence is in business days (Nb), got 1 with cadence 1d",
        ),
        ("cadence: 1b\nholidays: ['25/12/2024']", "holidays[0]: expected a date such as 2024-12-25, got '25/12/2024'"),
        ("cadence: 1m\ncadence_tz: Europe", "cadence_tz: expected an IANA time zone name"),
    ],
    ids=["unknown-zone", "holidays-not-business-days", "holiday-not-iso", "zone-folder"],
)
def test_a_bad_zone_or_holiday_is_named_with_the_constraint(tmp_path, weather_file, new, message):
    assert pipeline_error(tmp_path, WEATHER.replace("cadence: 1h", new)).startswith(f"{weather_file}: {message}")


def test_an_impossible_yaml_date_is_a_config_error_naming_the_file(tmp_path, weather_file):
    text = WEATHER.replace("cadence: 1h", "cadence: 1b\nholidays: [2024-13-01]")
    assert pipeline_error(tmp_path, text) == (
        f"{weather_file}: not valid YAML: an impossible date or time (month must be in 1..12)"
    )
