"""The daemon serves a real series the same whether a poll brings it all at once or a few records at a time,
against the embedded broker (issue 23: a year loaded at full speed got intervals covering 52-57% for 80%)."""

import json
import threading
from datetime import datetime

import numpy as np
import pytest

from forecaster.io import datasets
from forecaster.io.kafka import Sink
from forecaster.tools.replay import messages

from kafka_support import deploy, read_topic, serving

pytestmark = pytest.mark.kafka

HOURS = 1000  # Greensboro's first hours
QUICK_ROUNDS = {"every_records": 200, "steps": 5, "young_steps": 5}  # rounds of seconds, several in the replay


def served(broker, directory, max_records: int, retraining: dict) -> list[dict]:
    """The forecasts the weather pipeline (shipped weights) issues for the replayed hours, polled at most
    `max_records` at a time, in time order."""
    config = deploy(
        broker,
        directory,
        pipelines=("weather",),
        changes={"weather": {"batching": {"max_records": max_records}, "retraining": retraining}},
    )
    pipeline = config.pipeline("weather")
    Sink(config.settings.kafka).deliver(
        messages(datasets.load("greensboro"), pipeline.input_topic, HOURS), threading.Event()
    )
    with serving(config):
        forecasts = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, HOURS)]
    return sorted(forecasts, key=lambda body: epoch(body["time"]))


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def coverage(forecasts: list[dict]) -> float:
    """The share of actuals inside the 80% intervals issued for them, over every step of every forecast."""
    records = datasets.load("greensboro").records[:HOURS]
    actual = {epoch(record["time"]): record["drybulb_c"] for record in records}
    inside = [
        low <= actual[epoch(time)] <= high
        for body in forecasts
        for time, low, high in zip(body["times"], body["quantiles"]["0.1"], body["quantiles"]["0.9"])
        if epoch(time) in actual
    ]
    return float(np.mean(inside))


def test_without_retraining_one_poll_and_polls_of_seven_records_give_the_same_forecasts(broker, tmp_path):
    at_once = served(broker, tmp_path / "at_once", 100_000, {"enabled": False})
    in_sevens = served(broker, tmp_path / "in_sevens", 7, {"enabled": False})

    assert [b["time"] for b in at_once] == [b["time"] for b in in_sevens] and len(at_once) == HOURS
    columns = lambda bodies: [[b["values"], b["quantiles"]["0.1"], b["quantiles"]["0.9"]] for b in bodies]
    np.testing.assert_allclose(columns(in_sevens), columns(at_once), rtol=1e-5, atol=1e-4)


def test_with_retraining_the_intervals_cover_the_same_share_however_the_stream_is_polled(broker, tmp_path):
    at_once = coverage(served(broker, tmp_path / "at_once", 100_000, QUICK_ROUNDS))
    in_sevens = coverage(served(broker, tmp_path / "in_sevens", 7, QUICK_ROUNDS))

    assert abs(at_once - in_sevens) <= 0.02
    assert 0.7 <= at_once <= 0.9
