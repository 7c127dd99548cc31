"""The run loop hands a batch's messages to the producer and polls the next batch while Kafka acknowledges them: a
record's offset counts as done, for a checkpoint, a commit or a hand-over, only once its forecasts are acknowledged."""

import pytest
from test_app import FakeSink, record, worker

from forecaster.errors import Undeliverable
from forecaster.io.messages import Delivered, Refused, Sending


class AcknowledgingLater(FakeSink):
    """Takes messages at once and acknowledges them only when waited for, as a producer does; `refuse` names a
    series whose forecasts Kafka then refuses for good."""

    def __init__(self, source, refuse=None):
        super().__init__(source)
        self.refuse, self.unacknowledged = refuse, []

    def send(self, messages, stop):
        self.source.events.append("send")
        self.messages.extend(messages)
        self.unacknowledged.extend(messages)
        return Sending(self._acknowledge)

    def _acknowledge(self, stop):
        self.source.events.append("acknowledged")
        taken, self.unacknowledged = self.unacknowledged, []
        return Delivered([Refused(m, "refused", "by the test") for m in taken if m.key == self.refuse])


def later(batches, refuse=None, **settings):
    w, source, _, registry = worker(batches, **settings)
    sink = AcknowledgingLater(source, refuse)
    w.delivery.sink = sink
    return w, source, sink, registry


def test_a_batchs_offsets_advance_once_kafka_acknowledged_its_forecasts_at_the_next_poll():
    w, source, sink, _ = later([[record("a", 0, 1.0, offset=0)], [record("a", 1, 2.0, offset=1)]])
    w.run_once()
    assert len(sink.messages) == 1 and sink.unacknowledged  # handed over, not yet acknowledged
    assert w.offsets == {}
    w.run_once()  # the second batch polled: the first acknowledged before it is handled
    assert w.offsets == {0: 1} and len(sink.messages) == 2
    w.run_once()  # nothing polled: the last batch is acknowledged all the same
    assert w.offsets == {0: 2} and not sink.unacknowledged
    assert source.events == ["send", "acknowledged", "send", "commit", "acknowledged", "commit"]
    assert source.committed == [{0: 1}, {0: 2}]  # each batch committed after its acknowledgement


def test_a_checkpoint_waits_for_the_acknowledgements_and_commits_the_records_they_cover():
    w, source, sink, _ = later([[record("a", 0, 1.0, offset=0), record("b", 0, 2.0, partition=1, offset=5)]])
    w.run_once()
    w.checkpoint()
    assert source.events == ["send", "acknowledged", "commit"]
    assert source.committed == [{0: 1, 1: 6}]


def test_a_due_checkpoint_file_is_written_with_the_batch_it_follows_acknowledged(tmp_path):
    w, source, _, _ = later([[record("a", 0, 1.0, offset=0), record("a", 1, 2.0, offset=1)]], checkpoint_dir=tmp_path)
    w.checkpoints.records_since = 100  # due
    w.run_once()
    assert source.events == ["send", "acknowledged", "commit"] and source.committed == [{0: 2}]


def test_without_checkpoints_each_batch_commits_what_is_acknowledged_so_far():
    w, source, _, _ = later([[record("a", 0, 1.0, offset=0)], [record("a", 1, 2.0, offset=1)]])
    w.run_once()
    w.run_once()
    assert source.committed == [{0: 1}]  # the second batch is committed with the next


def test_a_refusal_found_when_acknowledged_stops_the_pipeline_with_that_batch_uncommitted():
    w, source, _, _ = later([[record("bad", 0, 1.0, offset=0)], [record("a", 0, 2.0, offset=1)]], refuse=b"bad")
    w.run_once()
    with pytest.raises(Undeliverable):
        w.run_once()
    assert w.offsets == {} and source.committed == []


def test_the_wait_for_acknowledgements_is_its_own_stage():
    w, _, _, registry = later([[record("a", 0, 1.0, offset=0)], [record("a", 1, 2.0, offset=1)]])
    w.run_once()
    w.run_once()
    labels = {"pipeline": "test", "stage": "acknowledge"}
    assert registry.get_sample_value("forecaster_stage_seconds_count", labels) >= 1
