"""A pipeline started cold, as a user adapts the shipped one to their own series, on a real broker."""

import json
import threading
from datetime import datetime

import numpy as np
import pytest

from forecaster.app import Daemon
from forecaster.io import datasets
from forecaster.tools.replay import replay

from kafka_support import deploy, read_topic

pytestmark = pytest.mark.kafka

RECORDS = 720  # a month of hours
FROM = 24  # the forecasts are judged from the second day on, as the docs promise (architecture.md)


def test_a_cold_pipeline_forecasts_step_one_no_worse_than_the_last_value_after_a_day(broker, tmp_path):
    # The shipped weather pipeline without its covariates and so without its weights: nothing pretrained.
    cold = {"weather": {"model": {"weights": None}, "record": {"covariates": []}}}
    config = deploy(broker, tmp_path, pipelines=("weather",), changes=cold)
    pipeline = config.pipeline("weather")
    replay(config.settings.kafka, "greensboro", pipeline.input_topic, limit=RECORDS)

    daemon = Daemon(config)
    exit_codes = []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        forecasts = read_topic(broker.bootstrap, pipeline.output_topic, RECORDS)
    finally:
        daemon.stop()
        runner.join(120)
    assert exit_codes == [0]

    actual = {
        datetime.fromisoformat(r["time"]).timestamp(): r["drybulb_c"]
        for r in datasets.load("greensboro").records[:RECORDS]
    }
    times = sorted(actual)
    served = {}
    for record in forecasts:
        body = json.loads(record.value)
        served[datetime.fromisoformat(body["time"]).timestamp()] = body["values"][0]
    judged = [(t, following) for t, following in zip(times[FROM:-1], times[FROM + 1 :])]
    forecaster = np.mean([abs(actual[following] - served[t]) for t, following in judged])
    persistence = np.mean([abs(actual[following] - actual[t]) for t, following in judged])

    assert len(served) == RECORDS
    assert forecaster <= persistence, (forecaster, persistence)
