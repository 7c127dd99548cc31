"""Which produce errors are final: refused for good (counted, handled by the policy), or retried until Kafka answers."""

import pytest
from confluent_kafka import KafkaError
from kafka import errors

from forecaster.io import confluent
from forecaster.io import kafka as kafka_python


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.MessageSizeTooLargeError("6090 bytes"), "message_too_large"),
        (errors.RecordListTooLargeError(), "message_too_large"),
        (errors.TopicAuthorizationFailedError({"dead"}), "not_authorized"),
        (errors.InvalidTopicError(), "unknown_topic"),
        (errors.PolicyViolationError(), "refused"),
        (errors.KafkaTimeoutError("Failed to update metadata after 60.0 secs."), None),
        (errors.NotLeaderForPartitionError(), None),
        (errors.KafkaConnectionError("socket disconnected"), None),
        (errors.RequestTimedOutError(), None),
    ],
)
def test_kafka_python_refusals(error, reason):
    assert kafka_python._refusal(error) == reason


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, "message_too_large"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "not_authorized"),
        (KafkaError._UNKNOWN_TOPIC, "unknown_topic"),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown_topic"),
        (KafkaError._MSG_TIMED_OUT, None),  # an outage: librdkafka gave up on it, the sink sends it again
        (KafkaError._TRANSPORT, None),
        (KafkaError.NOT_LEADER_FOR_PARTITION, None),
    ],
)
def test_confluent_refusals(code, reason):
    assert confluent._refusal(KafkaError(code)) == reason
