"""`forecaster inspect` of a pipeline with checkpoint.changelog reads its state from the changelog topic, partition by
partition, and rebuilds each series' latest forecast from it."""

import json
import threading

import pytest

from forecaster.cli import main
from forecaster.io import datasets
from forecaster.io.kafka import Sink, read_topic
from forecaster.io.messages import Message

from kafka_support import HOURLY, deploy, serving

pytestmark = pytest.mark.kafka

HOURS = 40  # ETTh1's first hours: its 7 channels, 280 records over the input's 3 partitions


@pytest.fixture(scope="module")
def served(broker, tmp_path_factory):
    """A deployment whose one member forecast ETTh1's first hours and stopped: (config, newest forecast per series)."""
    config = deploy(broker, tmp_path_factory.mktemp("changelog"), pipelines=("stock",), changes={"stock": HOURLY})
    pipeline = config.pipeline("stock")
    records = datasets.load("etth1").records[: 7 * HOURS]
    messages = [Message(pipeline.input_topic, r["series"].encode(), json.dumps(r).encode()) for r in records]
    Sink(config.settings.kafka).deliver(messages, threading.Event())
    with serving(config):
        forecasts = read_topic(broker.bootstrap, pipeline.output_topic, len(messages))
    newest = {}
    for body in sorted((json.loads(f.value) for f in forecasts), key=lambda body: body["time"]):
        newest[body["series"]] = body
    assert len(newest) == 7
    return config, newest


def inspect(capsys, config, *arguments: str) -> tuple[int, str, str]:
    code = main(["inspect", "-c", str(config.path), *arguments])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_reads_every_partition_of_the_changelog_and_rebuilds_the_newest_forecast(served, capsys):
    config, newest = served
    key = sorted(newest)[0]
    code, out, err = inspect(capsys, config, "--series", key)
    assert code == 0, err
    topic = f"{config.settings.kafka.group_id}.stock.changelog"
    assert f"stock: changelog {topic} at {config.settings.kafka.bootstrap_servers}, partitions 0 .. 2: 7 series" in out
    assert "model version 0" in out and "no checkpoint" not in out
    assert "intervals: calibration and tracking are each member's own, not kept in the changelog" in out
    forecast = [line.split() for line in out.split("latest forecast (24 x 1h):\n", 1)[1].splitlines()]
    assert [float(value) for _, value in forecast] == pytest.approx(newest[key]["values"], rel=1e-5)


def test_inspect_of_one_partition_shows_only_its_series(served, capsys):
    config, newest = served
    shown = []
    for partition in range(3):
        code, out, err = inspect(capsys, config, "--partition", str(partition), "--limit", "7")
        assert code == 0 or "nothing in changelog" in err
        listed = out.split("  series: ", 1)[1].splitlines()[0] if code == 0 else ""
        shown += [key for key in listed.split(", ") if key]
    assert sorted(shown) == sorted(newest)  # each series in exactly one partition


def test_inspect_refuses_a_partition_the_changelog_does_not_have(served, capsys):
    config, _ = served
    code, _, err = inspect(capsys, config, "--partition", "3")
    assert code == 2 and "--partition: expected 0 .. 2" in err


def test_inspect_of_a_changelog_never_written_says_where_it_looked_and_fails(broker, tmp_path, capsys):
    config = deploy(broker, tmp_path, pipelines=("stock",), changes={"stock": HOURLY}, create=False)
    kafka = config.settings.kafka
    code, out, err = inspect(capsys, config)
    assert code == 1
    assert f"stock: no changelog {kafka.group_id}.stock.changelog at {kafka.bootstrap_servers}" in out
    assert "no changelog" in err
