"""A file replayed into a topic, and the topic read back as a history: the same records, the same backtest."""

import csv
import json
from datetime import datetime

import pytest

from forecaster import config as config_module
from forecaster.cli import main
from forecaster.config import Kafka
from forecaster.io import clients, datasets
from forecaster.io.kafka import create_topics
from forecaster.tools import sources

from support import pipeline_yaml

pytestmark = pytest.mark.kafka

HOURS = 120


@pytest.fixture
def setup(tmp_path, broker):
    """A config whose pipeline reads `files.in` (2 partitions), and a CSV of two stations' hours."""
    (tmp_path / "pipelines").mkdir()
    yaml = pipeline_yaml("files").replace("model:", "partitions: 2\nmodel:")
    (tmp_path / "pipelines" / "files.yaml").write_text(yaml)
    kafka = f"kafka:\n  bootstrap_servers: {broker.bootstrap}\n"
    (tmp_path / "config.yaml").write_text(kafka + "pipelines:\n  - pipelines/files.yaml\n")
    create_topics(Kafka(bootstrap_servers=broker.bootstrap), [("files.in", 2)])
    rows = datasets.load("greensboro").records[:HOURS]
    with (tmp_path / "hours.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["station", "date", "temp"])
        for station, offset in (("north", 0.0), ("south", 5.0)):
            writer.writerows([station, r["time"], r["drybulb_c"] + offset] for r in rows)
    return tmp_path


def test_a_replayed_file_reads_back_from_the_topic_and_backtests_alike(setup, broker, capsys):
    config = str(setup / "config.yaml")
    data = ["--file", str(setup / "hours.csv"), "--map", "time=date"]
    assert main(["replay", "-c", config, *data, "--topic", "files.in"]) == 0
    assert capsys.readouterr().out == f"published {2 * HOURS} records to files.in\n"
    kafka = Kafka(bootstrap_servers=broker.bootstrap)

    retained = [json.loads(v) for v in clients.read_retained(kafka, "files.in")]

    assert len(retained) == 2 * HOURS
    north = [r for r in retained if r["station"] == "north"]  # one series, one partition: in file order
    assert [r["time"] for r in north] == [r["time"] for r in datasets.load("greensboro").records[:HOURS]]
    from_topic = ["backtest", "-c", config, "--pipeline", "files", "--json", "--topic", "files.in"]
    assert main(from_topic) == 0
    via_topic = json.loads(capsys.readouterr().out)
    assert main(["backtest", "-c", config, "--pipeline", "files", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out) == via_topic


def test_since_reads_only_the_records_observed_from_then_on(setup, broker, capsys):
    config, topic = str(setup / "config.yaml"), "files.since"
    create_topics(Kafka(bootstrap_servers=broker.bootstrap), [(topic, 2)])
    argv = ["replay", "-c", config, "--pipeline", "files", "--file", str(setup / "hours.csv"), "--map", "time=date"]
    assert main([*argv, "--topic", topic]) == 0
    loaded = config_module.load(setup / "config.yaml", require_weights=False)
    since = datetime.fromisoformat(datasets.load("greensboro").records[HOURS - 30]["time"]).timestamp()

    payloads, source = sources.payloads(loaded, loaded.pipeline("files"), topic=topic, since=since)

    assert source == f"topic {topic}" and len(payloads) == 2 * 30
    assert {datetime.fromisoformat(json.loads(p)["time"]).timestamp() >= since for p in payloads} == {True}


def test_replay_from_a_topic_copies_its_records_keyed_by_series(setup, broker, capsys):
    config, source, copy = str(setup / "config.yaml"), "files.backup", "files.copy"
    kafka = Kafka(bootstrap_servers=broker.bootstrap)
    create_topics(kafka, [(source, 2), (copy, 2)])
    argv = ["replay", "-c", config, "--pipeline", "files", "--file", str(setup / "hours.csv"), "--map", "time=date"]
    assert main([*argv, "--topic", source]) == 0
    since = datasets.load("greensboro").records[HOURS - 30]["time"]
    capsys.readouterr()

    copied = ["replay", "-c", config, "--pipeline", "files", "--from-topic", source, "--since", since]
    assert main([*copied, "--topic", copy]) == 0

    assert capsys.readouterr().out == f"published {2 * 30} records to {copy}\n"
    records = [json.loads(v) for v in clients.read_retained(kafka, copy)]
    originals = [json.loads(v) for v in clients.read_retained(kafka, source)]
    assert sorted(map(json.dumps, records)) == sorted(json.dumps(r) for r in originals if r["time"] >= since)
    by_partition = [
        [json.loads(r.value)["station"] for r in clients.client(kafka).read_partition(kafka, copy, p)] for p in range(2)
    ]
    assert all(len(set(stations)) <= 1 for stations in by_partition)  # keyed: a series stays in one partition


def test_replay_refuses_two_sources_and_since_without_a_topic(setup, capsys):
    config = str(setup / "config.yaml")
    assert main(["replay", "-c", config, "etth1", "--from-topic", "files.in", "--topic", "files.copy"]) == 2
    assert "expected one of a dataset name, --file PATH and --from-topic SRC" in capsys.readouterr().err
    assert main(["replay", "-c", config, "etth1", "--since", "2020-01-01", "--topic", "files.copy"]) == 2
    assert "--since reads only with --from-topic SRC" in capsys.readouterr().err
