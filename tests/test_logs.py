"""Logging: text for people or JSON lines for machines, secrets masked, kafka-python kept quiet."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime

import pytest

from forecaster import logs
from forecaster.config import Kafka

from kafka_support import REPO, deploy, wait_for


@pytest.fixture
def restore_logging():
    """logs.setup changes process-wide state: put the root and kafka loggers back afterwards."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    saved = (list(root.handlers), root.level, kafka.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    kafka.setLevel(saved[2])


def capture(fmt: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logs.setup(level, fmt, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_mode_writes_one_object_per_line_with_time_level_logger_message_and_extra_fields(restore_logging):
    stream = capture("json")
    log = logging.getLogger("forecaster.app")
    log.info("pipeline %s ready", "stock", extra={"pipeline": "stock", "partitions": [0, 1, 2]})
    log.warning("broker lost", extra={"mae": float("nan")})
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("pipeline failed")
    first, second, third = (json.loads(line) for line in lines(stream))  # exactly three lines, each valid JSON
    assert (
        first["message"] == "pipeline stock ready" and first["level"] == "INFO" and first["logger"] == "forecaster.app"
    )
    assert first["pipeline"] == "stock" and first["partitions"] == [0, 1, 2]
    assert datetime.fromisoformat(first["time"]).utcoffset().total_seconds() == 0
    assert second["level"] == "WARNING" and second["mae"] == "nan"  # strict JSON has no NaN
    assert third["level"] == "ERROR" and "RuntimeError: boom" in third["exception"]


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_secret_looking_fields_are_never_printed(fmt, restore_logging):
    stream = capture(fmt)
    log = logging.getLogger("forecaster")
    log.info(
        "connecting",
        extra={"sasl_plain_password": "hunter2", "ssl_password": "s3cret-pass", "sasl_plain_username": "alice"},
    )
    log.info(
        "kafka settings",
        extra={
            "kafka": Kafka(consumer={"sasl_plain_password": "hunter2"}),
            "producer": {"nested": [{"ssl_password": "s3cret-pass"}]},
        },
    )
    text = stream.getvalue()
    assert "hunter2" not in text and "s3cret-pass" not in text
    assert "alice" in text and text.count(logs.MASK) >= 4
    if fmt == "json":
        connecting, settings = map(json.loads, lines(stream))
        assert connecting["sasl_plain_password"] == connecting["ssl_password"] == logs.MASK
        assert settings["kafka"]["consumer"] == {"sasl_plain_password": logs.MASK}
        assert settings["kafka"]["bootstrap_servers"] == "127.0.0.1:9092"
        assert settings["producer"] == {"nested": [{"ssl_password": logs.MASK}]}
    else:
        assert 'sasl_plain_password="***"' in text and 'ssl_password="***"' in text


def test_text_mode_reads_as_one_line_per_event_with_fields_after_the_message(restore_logging):
    stream = capture("text")
    logging.getLogger("forecaster.app").info("checkpoint written", extra={"pipeline": "weather", "offsets": 3})
    (line,) = lines(stream)
    assert line.endswith(' INFO forecaster.app: checkpoint written pipeline="weather" offsets=3')


def test_kafka_python_logs_only_errors_even_when_forecaster_logs_debug(restore_logging):
    stream = capture("json", level="DEBUG")
    logging.getLogger("kafka.conn").info("connecting to broker")
    logging.getLogger("kafka.coordinator").debug("heartbeat")
    logging.getLogger("kafka.conn").warning("connection lost")
    logging.getLogger("kafka.client").warning("node 1 not ready")
    logging.getLogger("kafka.conn").error("connection refused")
    logging.getLogger("forecaster").debug("a debug event")
    assert [(e["logger"], e["message"]) for e in map(json.loads, lines(stream))] == [
        ("kafka.conn", "connection refused"),
        ("forecaster", "a debug event"),
    ]


def test_kafka_python_logs_what_its_own_level_asks_for_whatever_forecasters_is(restore_logging):
    stream = io.StringIO()
    logs.setup("WARNING", "json", stream=stream, kafka_level="DEBUG")
    logging.getLogger("kafka.coordinator").debug("heartbeat")
    logging.getLogger("forecaster").info("an info event")
    assert [(e["logger"], e["message"]) for e in map(json.loads, lines(stream))] == [("kafka.coordinator", "heartbeat")]


def test_the_kafka_log_level_is_a_setting_the_shipped_config_reads_from_the_environment(monkeypatch):
    from forecaster import config

    assert config.Settings(pipelines=()).kafka_log_level == "ERROR"
    monkeypatch.setenv("FORECASTER_KAFKA_LOG_LEVEL", "DEBUG")
    assert config.load(REPO / "config.yaml", require_weights=False).settings.kafka_log_level == "DEBUG"


def test_setup_twice_does_not_double_the_lines(restore_logging):
    capture("text")
    stream = capture("json")
    logging.getLogger("forecaster").warning("once")
    assert len(lines(stream)) == 1


def test_an_unknown_format_is_refused(restore_logging):
    with pytest.raises(ValueError, match="log format: expected one of text, json, got 'xml'"):
        logs.setup("INFO", "xml")


@pytest.mark.kafka
def test_forecaster_run_logs_json_lines_from_start_to_stop(broker, tmp_path):
    config = deploy(broker, tmp_path, pipelines=("stock",))
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "FORECASTER_LOG_FORMAT": "json"}
    with open(log_path, "w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forecaster.cli", "run", "-c", str(config.path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        wait_for(
            lambda: "pipeline stock ready" in log_path.read_text() or daemon.poll() is not None,
            60,
            "the daemon to say its pipeline is ready, or to exit",
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
    events = [json.loads(line) for line in log_path.read_text().splitlines()]  # every line is one JSON object
    assert code == 0, events
    messages = [e["message"] for e in events]
    assert any(m.startswith("starting 1 pipeline ") for m in messages)
    assert any(m.startswith("pipeline stock ready") for m in messages)
    assert "received SIGTERM" in messages and messages[-1] == "stopped"
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    assert not [e for e in events if e["logger"].startswith("kafka") and e["level"] in ("DEBUG", "INFO")]
