"""The Kafka client's own speed: the C CRC-32C, which kafka-python picks up when installed, and the key hash cached
by the producer's partitioner."""

import crc32c
from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner
from kafka.record import util

from forecaster.config import Kafka
from forecaster.io.kafka import KeyHashCache, _producer_settings


def test_kafka_python_checks_record_batches_with_the_c_crc32c():
    # kafka-python binds the implementation as a default argument at import: that is what it calls
    assert util.calc_crc32c.__defaults__[0] is crc32c.crc32c


def test_the_c_crc32c_agrees_with_kafka_pythons_own():
    from kafka.record._crc32c import crc as pure_python

    data = bytes(range(256)) * 7
    assert crc32c.crc32c(data) == pure_python(data)


class Cluster(ClusterMetadata):
    """Metadata of one topic with `count` partitions, as the producer's partitioner reads it."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def topics(self, exclude_internal_topics=True):
        return {"out"}

    def partitions_for_topic(self, topic):
        return set(range(self.count))

    def available_partitions_for_topic(self, topic):
        return set(range(self.count))


def test_the_cached_partitioner_sends_every_key_where_kafka_pythons_default_does():
    keys = [f"series-{i}".encode() for i in range(2000)] + [b"", "h\u00f6he".encode(), bytes(range(256))]
    for count in (1, 3, 7, 64):
        cluster = Cluster(count)
        for _ in range(2):  # hashed, then remembered
            ours = [KeyHashCache().partition("out", None, key, None, b"v", cluster) for key in keys]
            assert ours == [DefaultPartitioner().partition("out", None, key, None, b"v", cluster) for key in keys]


def test_the_producers_partition_keys_through_the_cached_partitioner():
    assert isinstance(_producer_settings(Kafka())["partitioner"], KeyHashCache)
