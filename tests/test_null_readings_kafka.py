"""A null reading sent to a running daemon, as an operator would send one by hand, on a real broker."""

import json
import threading
from datetime import datetime

import numpy as np
import pytest

from forecaster.app import Daemon
from forecaster.io import datasets
from forecaster.io.kafka import Sink
from forecaster.io.messages import Message

from kafka_support import deploy, metrics_url, read_topic, scrape, wait_for

pytestmark = pytest.mark.kafka

RECORDS = 48  # two days of Greensboro's hours
NULL_TARGET, NULL_COVARIATE = 30, 31  # the readings sent with a null drybulb_c, and with a null dewpoint_c


def sample(name: str, **labels) -> tuple:
    """The key of a weather pipeline's sample in what `scrape` returns."""
    return name, frozenset({("pipeline", "weather"), *labels.items()})


def scraped_with(url: str, key: tuple) -> dict | None:
    """The /metrics samples, once `key` is among them."""
    samples = scrape(url)
    return samples if key in samples else None


def test_a_null_reading_is_forecast_counted_and_not_dead_lettered(broker, tmp_path):
    config = deploy(broker, tmp_path, pipelines=("weather",))
    pipeline = config.pipeline("weather")
    readings = [dict(r) for r in datasets.load("greensboro").records[:RECORDS]]
    readings[NULL_TARGET]["drybulb_c"] = None
    readings[NULL_COVARIATE]["dewpoint_c"] = None
    newcomer = {**readings[0], "station": "newcomer", "drybulb_c": None}  # a series with no value yet
    messages = [Message(pipeline.input_topic, r["station"].encode(), json.dumps(r).encode()) for r in readings]
    messages.append(Message(pipeline.input_topic, b"newcomer", json.dumps(newcomer).encode()))
    Sink(config.settings.kafka).deliver(messages, threading.Event())

    daemon = Daemon(config)
    exit_codes = []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        forecasts = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, RECORDS)]
        dead = read_topic(broker.bootstrap, pipeline.dead_letter_topic, 1)
        refused = sample("forecaster_records_rejected_total", reason="no_value_yet")
        samples = wait_for(lambda: scraped_with(metrics_url(config) + "/metrics", refused), 30, "the refusal counted")
    finally:
        daemon.stop()
        runner.join(60)
    assert exit_codes == [0]

    forecast_times = [datetime.fromisoformat(f["time"]).timestamp() for f in forecasts]
    null_time = datetime.fromisoformat(readings[NULL_TARGET]["time"]).timestamp()
    assert len(forecasts) == len(set(forecast_times)) == RECORDS  # one forecast a reading, the null one included
    assert np.isfinite(forecasts[forecast_times.index(null_time)]["values"]).all()
    assert [dict(r.headers)["forecaster.reason"] for r in dead] == [b"no_value_yet"]
    assert samples[refused] == 1
    assert samples[sample("forecaster_missing_values_total", field="drybulb_c")] == 2  # the null reading, the newcomer
    assert samples[sample("forecaster_missing_values_total", field="dewpoint_c")] == 1
    assert samples[sample("forecaster_missing_values_total", field="ghi_wm2")] == 0
