"""Two daemons share a pipeline on the embedded broker: when the second joins, the partitions it takes bring their
series' state with them through the changelog, and every forecast is the one a single daemon makes."""

import dataclasses
import json
import threading
from collections import defaultdict

import numpy as np
import pytest

from forecaster.build import model_topic
from forecaster.io import datasets
from forecaster.io.broker import free_port
from forecaster.io.checkpoint import parse_weights
from forecaster.io.kafka import Sink, read_partition, read_topic
from forecaster.io.messages import Message
from forecaster.learning import rounds

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


@pytest.fixture(scope="module")
def one_member(broker, tmp_path_factory) -> dict:
    """The forecasts one daemon issues for the whole stream: what every member's must equal."""
    alone = deploy(broker, tmp_path_factory.mktemp("alone"), pipelines=("stock",), changes={"stock": HOURLY})
    stream = hours()
    publish(alone, stream)
    with serving(alone):
        return forecasts(broker, alone.pipeline("stock").output_topic, len(stream))


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_joining_member_takes_partitions_with_their_state_and_forecasts_exactly_as_one_member(
    broker, tmp_path, client, one_member
):
    stream = hours()
    half = len(stream) // 2
    expected = one_member
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


# As HOURLY, retraining: short young rounds from the first buffered days, each member's model the published one.
RETRAINING = {
    **HOURLY,
    "retraining": {
        "enabled": True,
        "every_records": 400,
        "buffer": 96,
        "holdout": 12,
        "young_rounds": 3,
        "steps": 20,
        "young_steps": 20,
        "resync_steps": 48,
        "damping": False,
    },
    "training": {"window": 32, "chunk": 8, "batch_size": 16},
}


def published_versions(config) -> list[int]:
    """The version of each record of the pipeline's model topic, in log order."""
    topic = model_topic(config, config.pipeline("stock"))
    return [int(parse_weights(r.value, topic)[2]["version"]) for r in read_partition(config.settings.kafka, topic, 0)]


def served_versions(broker, topic: str, count: int) -> dict[str, list[int]]:
    """series -> the model version of each of its forecasts, in the order they were produced."""
    found = defaultdict(list)
    for record in read_topic(broker.bootstrap, topic, count, linger_s=2.0):
        body = json.loads(record.value)
        found[body["series"]].append(body["model_version"])
    return found


def every_record(broker, topic: str, count: int) -> dict[str, list[int]] | None:
    """`served_versions` once there is a forecast of every record."""
    found = served_versions(broker, topic, count)
    return found if sum(map(len, found.values())) >= count else None


def serving_version(config) -> float:
    samples = scrape(metrics_url(config) + "/metrics")
    return samples[("forecaster_model_version", frozenset({("pipeline", "stock")}))]


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_members_serve_only_published_versions_and_a_series_version_never_goes_back(
    broker, tmp_path, monkeypatch, client
):
    # Every round is promoted, whatever it learnt in its few steps: this is about how versions spread, not learning.
    challenge = rounds.challenge
    monkeypatch.setattr(rounds, "challenge", lambda *a, **kw: dataclasses.replace(challenge(*a, **kw), promoted=True))
    stream = hours()
    half = len(stream) // 2
    first = with_client(deploy(broker, tmp_path, pipelines=("stock",), changes={"stock": RETRAINING}), client)
    output = first.pipeline("stock").output_topic
    publish(first, stream[:half])
    joining = second_member(first)
    with serving(first):
        wait_for(lambda: published_versions(first).count(1) >= 1, 60, "the first member to publish version 1")
        with serving(joining):
            wait_for(lambda: handovers(joining) >= 1, 60, "the second member to take partitions over")
            publish(first, stream[half:])
            served = wait_for(lambda: every_record(broker, output, len(stream)), 120, "a forecast of every record")
            versions = published_versions(first)
            newest = max(versions)
            wait_for(lambda: {serving_version(first), serving_version(joining)} == {newest}, 30, "one model on both")

    assert versions == sorted(versions) and max(versions) >= 1  # versions only increase
    assert {v for issued in served.values() for v in issued} <= set(versions) | {0}  # 0: the seeded start
    assert all(issued == sorted(issued) for issued in served.values())  # never back, however partitions moved
