"""Exactly-once mode on the embedded broker: forecasts, changelog records and input offsets of a partition are
committed together, and a stale owner of a partition is fenced, gives it up, and costs neither a forecast nor a
duplicate.

tansu commits and fences transactions, but shows aborted records to read_committed readers: what this checks is
that a fenced transaction commits nothing (its offsets, changelog records and forecasts), not that a broker hides
an aborted transaction's records (docs/scaling.md#exactly-once-mode).
"""

import contextlib
import json
import threading
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition
from test_scaleout_kafka import hours, publish, with_client

from forecaster.app import Daemon
from forecaster.build import changelog_topic, group_id
from forecaster.errors import TransactionError
from forecaster.io import kafka as kafka_python
from forecaster.serving import handover

from kafka_support import HOURLY, deploy, read_topic, serving, wait_for

pytestmark = pytest.mark.kafka

EXACTLY_ONCE = {**HOURLY, "checkpoint": {"changelog": True, "exactly_once": True, "every_seconds": 1}}


def committed(config) -> dict[int, int | None]:
    """partition -> the group's committed offset of the input (None: none yet)."""
    group = group_id(config, config.pipeline("stock"))
    with consumer(config, group_id=group, enable_auto_commit=False) as reader:
        return {tp.partition: reader.committed(tp) for tp in input_partitions(config, reader)}


def ends(config, count: int) -> dict[int, int]:
    """partition -> the input's end offset, once it holds `count` records (read, not asked for: tansu answers the
    offset after its last batch's first record)."""
    ends = {}
    for record in read_topic(config.settings.kafka.bootstrap_servers, config.pipeline("stock").input_topic, count):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


@contextlib.contextmanager
def consumer(config, **settings):
    reader = KafkaConsumer(bootstrap_servers=config.settings.kafka.bootstrap_servers, **settings)
    try:
        yield reader
    finally:
        reader.close()


def input_partitions(config, reader) -> list[TopicPartition]:
    topic = config.pipeline("stock").input_topic
    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]


def changelog_offset(config, partition: int) -> int:
    """The input offset partition's own changelog record names, as a restore reads it (committed records only)."""
    topic = changelog_topic(config, config.pipeline("stock"))
    records = kafka_python.read_partition(config.settings.kafka, topic, partition, committed=True)
    return handover.newest([(r.key, r.value) for r in records]).own["offset"]


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_fenced_owner_commits_nothing_and_its_successor_forecasts_every_record_exactly_once(broker, tmp_path, client):
    config = with_client(deploy(broker, tmp_path, pipelines=("stock",), changes={"stock": EXACTLY_ONCE}), client)
    output = config.pipeline("stock").output_topic
    stream = hours()
    first = 2 * len(stream) // 3
    publish(config, stream[:first])

    # A member forecasts the first part; its offsets are committed with the transactions, as its changelog says
    daemon, exit_codes = Daemon(config), []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        before = ends(config, first)
        wait_for(lambda: committed(config) == before, 60, "the first part's offsets to be committed")
        assert all(changelog_offset(config, p) == offset for p, offset in before.items())

        # Another producer takes partition 0's transactional id, as its next owner would: the member is a stale owner
        transactional_id = f"{group_id(config, config.pipeline('stock'))}.0"
        kafka_python.Transaction(config.settings.kafka, transactional_id, 60_000).close()
        publish(config, stream[first:])
        runner.join(60)
    finally:
        daemon.stop()
        runner.join(60)
    assert exit_codes == [1]
    assert isinstance(daemon.workers[0].error, TransactionError)
    assert committed(config)[0] == before[0] == changelog_offset(config, 0)  # nothing of the fenced one counts

    # Its successor restores what was committed and forecasts the rest: every record once, none twice
    with serving(config):
        everything = ends(config, len(stream))
        wait_for(lambda: committed(config) == everything, 60, "every offset to be committed")
    issued = Counter(
        (body["series"], body["time"])
        for body in (json.loads(r.value) for r in read_topic(broker.bootstrap, output, len(stream), linger_s=1.0))
    )
    assert len(issued) == len(stream)  # nothing lost
    assert set(issued.values()) == {1}  # nothing twice
