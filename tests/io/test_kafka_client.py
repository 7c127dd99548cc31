"""The Kafka client's own speed: the C CRC-32C, which kafka-python picks up when installed."""

import crc32c
from kafka.record import util


def test_kafka_python_checks_record_batches_with_the_c_crc32c():
    # kafka-python binds the implementation as a default argument at import: that is what it calls
    assert util.calc_crc32c.__defaults__[0] is crc32c.crc32c


def test_the_c_crc32c_agrees_with_kafka_pythons_own():
    from kafka.record._crc32c import crc as pure_python

    data = bytes(range(256)) * 7
    assert crc32c.crc32c(data) == pure_python(data)
