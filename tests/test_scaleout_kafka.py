"""Two daemons share a pipeline on the embedded broker: when the second joins, the partitions it takes bring their
series' state with them through the changelog, and every forecast is the one a single daemon makes."""

import dataclasses
import json
import threading
from collections import defaultdict

import numpy as np
import pytest

from forecaster.io import datasets
from forecaster.io.broker import free_port
from forecaster.io.kafka import Sink, read_topic
from forecaster.io.messages import Message

from kafka_support import HOURLY, deploy, metrics_url, scrape, serving, wait_for

pytestmark = pytest.mark.kafka

HOURS, COPIES = 160, 3  # ETTh1's first hours; each of its 7 channels under 3 keys: 21 series over 3 partitions


def hours() -> list[Message]:
    """ETTh1's first hours, each channel under COPIES keys, in time order."""
    records = [r for r in datasets.load("etth1").records[: 7 * HOURS]]
    out = []
    for r in records:
        for copy in range(COPIES):
            body = {**r, "series": f"{r['series']}#{copy}"}
            out.append(Message("", body["series"].encode(), json.dumps(body).encode()))
    return out


def forecasts(broker, topic: str, count: int) -> dict:
    """(series, time) -> [values of each forecast issued for it], duplicates included."""
    found = defaultdict(list)
    for record in read_topic(broker.bootstrap, topic, count, linger_s=2.0):
        body = json.loads(record.value)
        found[(body["series"], body["time"])].append(body["values"])
    return found


def publish(config, messages):
    topic = config.pipeline("stock").input_topic
    Sink(config.settings.kafka).deliver([dataclasses.replace(m, topic=topic) for m in messages], threading.Event())


def with_client(config, client: str):
    return dataclasses.replace(
        config,
        settings=dataclasses.replace(config.settings, kafka=dataclasses.replace(config.settings.kafka, client=client)),
    )


def second_member(config):
    """The same deployment as another process would run it: its own metrics port."""
    settings = dataclasses.replace(
        config.settings, metrics=dataclasses.replace(config.settings.metrics, port=free_port())
    )
    return dataclasses.replace(config, settings=settings)


def handovers(config) -> float:
    """Partition restores the member has done (0 before its metrics are up)."""
    try:
        samples = scrape(metrics_url(config) + "/metrics")
    except OSError:
        return 0
    return samples.get(("forecaster_handover_seconds_count", frozenset({("pipeline", "stock")})), 0)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_joining_member_takes_partitions_with_their_state_and_forecasts_exactly_as_one_member(
    broker, tmp_path, client
):
    stream = hours()
    half = len(stream) // 2
    alone = deploy(broker, tmp_path / "alone", pipelines=("stock",), changes={"stock": HOURLY})
    publish(alone, stream)
    with serving(alone):
        expected = forecasts(broker, alone.pipeline("stock").output_topic, len(stream))
    assert len(expected) == len(stream)

    shared = with_client(deploy(broker, tmp_path / "shared", pipelines=("stock",), changes={"stock": HOURLY}), client)
    output = shared.pipeline("stock").output_topic
    publish(shared, stream[:half])
    joining = second_member(shared)
    with serving(shared):
        assert len(forecasts(broker, output, half)) >= half
        with serving(joining):
            wait_for(lambda: handovers(joining) >= 1, 60, "the second member to take partitions over")
            publish(shared, stream[half:])
            got = {}

            def complete():
                got.update(forecasts(broker, output, len(stream)))
                return len(got) >= len(expected)

            wait_for(complete, 120, "a forecast of every record")

    assert set(got) == set(expected)  # nothing lost
    worst = max(
        np.max(np.abs(np.array(v) - np.array(expected[key][0])) / (1.0 + np.abs(expected[key][0])))
        for key, issued in got.items()
        for v in issued
    )
    assert worst < 1e-5
