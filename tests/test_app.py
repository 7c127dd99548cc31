"""The run loop without Kafka: poll, decode, step, deliver, then commit; bad records dead-lettered."""

import dataclasses
import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from forecaster import app
from forecaster.app import Checkpoints, PipelineWorker
from forecaster.build import resolve_device, seeded_model
from forecaster.errors import DeliveryError, ForecasterError
from forecaster.io.checkpoint import load_latest_checkpoint, read_checkpoint
from forecaster.io.checkpoint_writer import CheckpointWriter
from forecaster.io.messages import Delivered, Polled, Rebalance
from forecaster.metrics import Metrics
from forecaster.serving import handover
from forecaster.serving.engine import Engine
from forecaster.stages import STAGES

from support import DeliversAtOnce, make_pipeline


class FakeSource:
    def __init__(self, batches):
        self.batches, self.committed, self.events = list(batches), [], []
        self.past_the_end = {}  # partition -> (next offset, topic end), as a resumed checkpoint may find it

    def poll(self, timeout_ms):
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets):
        self.events.append("commit")
        self.committed.append(dict(offsets))

    def assigned(self):
        return True

    def connected(self):
        return True

    def lag(self):
        return 7

    def ahead(self):
        return self.past_the_end

    def close(self):
        pass


class FakeSink(DeliversAtOnce):
    def __init__(self, source, error=None):
        self.source, self.error, self.messages = source, error, []

    def deliver(self, messages, stop):
        self.source.events.append("deliver")
        if self.error:
            raise self.error
        self.messages.extend(messages)
        return Delivered()

    def close(self):
        pass


def record(key, hour, y, partition=0, offset=0) -> Polled:
    value = json.dumps({"key": key, "time": f"2024-01-01T{hour:02d}:00:00+00:00", "y": y}).encode()
    return Polled(partition, offset, key.encode(), value)


def worker(batches, error=None, checkpoint_dir=None, every_records=3, restore=False):
    pipeline = make_pipeline()
    pipeline = dataclasses.replace(
        pipeline, checkpoint=dataclasses.replace(pipeline.checkpoint, every_records=every_records)
    )
    registry = CollectorRegistry()
    source = FakeSource(batches)
    sink = FakeSink(source, error)
    engine = Engine(pipeline, seeded_model(pipeline))
    checkpoints = Checkpoints(checkpoint_dir, pipeline) if checkpoint_dir else None
    if checkpoints is not None:
        checkpoints.writer = InlineWriter()  # the tests of the background write set their own
    offsets = {}
    if restore:
        payload = checkpoints.load()
        engine.restore(payload["engine"])
        offsets = payload["offsets"]
    w = PipelineWorker(pipeline, engine, source, sink, Metrics(registry), threading.Event(), checkpoints, offsets)
    return w, source, sink, registry


def test_forecasts_are_delivered_before_the_offsets_are_committed():
    w, source, sink, _ = worker([[record("a", 0, 1.0, offset=0), record("b", 0, 2.0, partition=1, offset=5)]])
    assert w.run_once() == 2
    assert source.events == ["deliver", "commit"]
    assert source.committed == [{0: 1, 1: 6}]  # the next offset to consume, per partition
    forecasts = [json.loads(m.value) for m in sink.messages]
    assert [(m.topic, m.key) for m in sink.messages] == [("out", b"a"), ("out", b"b")]
    assert [f["series"] for f in forecasts] == ["a", "b"] and all(len(f["values"]) == 4 for f in forecasts)
    assert forecasts[0]["time"] == "2024-01-01T00:00:00+00:00"
    assert forecasts[0]["times"][0] == "2024-01-01T01:00:00+00:00"


def test_nothing_is_committed_when_delivery_fails():
    w, source, _, _ = worker([[record("a", 0, 1.0)]], error=ConnectionError("broker gone"))
    with pytest.raises(ConnectionError):
        w.run_once()
    assert source.committed == []


def test_bad_records_go_to_the_dead_letter_topic_with_reason_and_original_bytes():
    garbage = Polled(0, 1, b"x", b"\xff not json")
    w, source, sink, registry = worker([[record("a", 0, 1.0, offset=0), garbage, record("a", 0, 9.0, offset=2)]])
    w.run_once()
    dead = [m for m in sink.messages if m.topic == "dead"]
    assert [(m.value, dict(m.headers)["forecaster.reason"]) for m in dead] == [
        (b"\xff not json", b"malformed"),
        (record("a", 0, 9.0).value, b"duplicate_timestamp"),
    ]
    assert dict(dead[0].headers)["forecaster.source"] == b"in/0/1"
    assert source.committed == [{0: 3}]  # dead-lettered records are done with too
    assert (
        registry.get_sample_value("forecaster_records_rejected_total", {"pipeline": "test", "reason": "malformed"}) == 1
    )
    assert registry.get_sample_value("forecaster_forecasts_produced_total", {"pipeline": "test"}) == 1


def test_a_bad_record_does_not_change_other_series_forecasts():
    clean, _, clean_sink, _ = worker([[record("a", 0, 1.0), record("a", 1, 2.0)]])
    clean.run_once()
    noisy, _, noisy_sink, _ = worker([[record("a", 0, 1.0), Polled(0, 9, b"b", b'{"key": "b"}'), record("a", 1, 2.0)]])
    noisy.run_once()
    values = lambda sink: [json.loads(m.value)["values"] for m in sink.messages if m.topic == "out"]
    np.testing.assert_array_equal(values(clean_sink), values(noisy_sink))


def test_a_batch_with_nothing_usable_is_dead_lettered_and_the_loop_goes_on():
    garbage = [Polled(0, 0, b"x", b"junk"), Polled(0, 1, None, None)]
    w, source, sink, _ = worker([garbage, [record("a", 0, 1.0, offset=2)]])
    assert w.run_once() == 2
    assert [(m.topic, dict(m.headers)["forecaster.reason"]) for m in sink.messages] == [("dead", b"malformed")] * 2
    assert source.committed == [{0: 2}]
    assert w.run_once() == 1 and sink.messages[-1].topic == "out" and source.committed[-1] == {0: 3}


def test_a_batch_whose_every_record_its_series_refuses_is_dead_lettered_and_the_loop_goes_on():
    w, source, sink, _ = worker(
        [[record("a", 5, 1.0, offset=0)], [record("a", 4, 2.0, offset=1), record("a", 5, 3.0, offset=2)]]
    )
    w.run_once()
    assert w.run_once() == 2
    assert [dict(m.headers)["forecaster.reason"] for m in sink.messages[1:]] == [
        b"out_of_order",
        b"duplicate_timestamp",
    ]
    assert source.committed == [{0: 1}, {0: 3}]


def test_a_null_reading_is_forecast_and_counted_as_a_missing_value_not_dead_lettered():
    w, source, sink, registry = worker([[record("a", 0, 1.0, offset=0), record("a", 1, None, offset=1)]])
    w.run_once()

    assert [m.topic for m in sink.messages] == ["out", "out"]
    assert [json.loads(m.value)["time"] for m in sink.messages][1] == "2024-01-01T01:00:00+00:00"
    assert registry.get_sample_value("forecaster_missing_values_total", {"pipeline": "test", "field": "y"}) == 1
    assert registry.get_sample_value("forecaster_forecasts_produced_total", {"pipeline": "test"}) == 2
    assert source.committed == [{0: 2}]


def test_missing_values_are_exported_at_zero_from_the_start():
    _, _, _, registry = worker([])

    assert registry.get_sample_value("forecaster_missing_values_total", {"pipeline": "test", "field": "y"}) == 0


def test_metrics_count_the_batch():
    w, _, _, registry = worker([[record("a", h, float(h)) for h in range(5)]])
    w.run_once()
    sample = lambda name, **labels: registry.get_sample_value(name, {"pipeline": "test", **labels})
    assert sample("forecaster_records_consumed_total") == 5
    assert sample("forecaster_forecasts_produced_total") == 5
    assert sample("forecaster_active_series") == 1
    assert sample("forecaster_consumer_lag_records") == 7
    assert sample("forecaster_batch_records_sum") == 5
    assert sample("forecaster_end_to_end_latency_seconds_count") == 1
    assert sample("forecaster_state_memory_bytes") > 0
    assert sample("forecaster_one_step_mae", forecaster="naive") == pytest.approx(1.0)
    assert sample("forecaster_model_version") == 0


def test_an_empty_poll_delivers_and_commits_nothing():
    w, source, sink, _ = worker([])
    assert w.run_once() == 0
    assert source.events == [] and sink.messages == []


@pytest.mark.parametrize("gpu", [True, False])
def test_auto_picks_cuda_when_present_and_asking_for_cuda_without_a_gpu_is_an_error(gpu, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)  # the same on a GPU machine and on CI

    assert resolve_device("auto").type == ("cuda" if gpu else "cpu")
    if gpu:
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ForecasterError, match="no CUDA device"):
            resolve_device("cuda")


# --- checkpoints tied to offsets -------------------------------------------------------------


def hours(key, start, stop, partition=0):
    return [record(key, h, float(h * h % 7), partition=partition, offset=h) for h in range(start, stop)]


class InlineWriter(CheckpointWriter):
    """A checkpoint writer that is done when `start` returns: the loop commits in the batch that wrote it."""

    def __init__(self):
        super().__init__(fork=False)

    def start(self, *args, **kwargs):
        super().start(*args, **kwargs)
        self._thread.join()


class HeldWriter(CheckpointWriter):
    """A checkpoint writer on a thread that holds each write until the test releases it: a slow disk."""

    def __init__(self):
        super().__init__(fork=False)
        self.release = threading.Event()

    def _write(self, path, payload):
        self.release.wait()
        super()._write(path, payload)

    def let_finish(self):
        self.release.set()
        self._thread.join()


def test_offsets_are_committed_only_once_a_checkpoint_holds_the_state_they_reflect(tmp_path):
    w, source, _, _ = worker([hours("a", 0, 2), hours("a", 2, 4)], checkpoint_dir=tmp_path, every_records=3)
    w.checkpoints.writer = writer = HeldWriter()
    w.run_once()
    assert source.committed == [] and not w.checkpoints.writing
    w.run_once()  # 4 records: a checkpoint falls due and is written in the background
    w.run_once()  # the next batch (empty) finds it still being written
    assert w.checkpoints.writing and source.committed == [] and load_latest_checkpoint(tmp_path) is None
    writer.let_finish()
    w.run_once()  # the batch after it is durable commits its offsets
    payload, _ = load_latest_checkpoint(tmp_path)
    assert payload["offsets"] == {0: 4} and source.committed == [{0: 4}]
    assert payload["engine"]["store"]["keys"] == ["a"]


def test_the_checkpoint_holds_the_state_at_its_snapshot_not_what_was_stepped_while_it_was_written(tmp_path):
    w, source, _, _ = worker([hours("a", 0, 3), hours("a", 3, 6)], checkpoint_dir=tmp_path, every_records=3)
    w.checkpoints.writer = CheckpointWriter(fork=True)
    gate, opened = os.pipe()  # each forked writer waits for a byte here before it reads the state
    payload = w.checkpoints._payload
    w.checkpoints._payload = lambda engine, offsets, at: (os.read(gate, 1), payload(engine, offsets, at))[1]
    w.run_once()  # a checkpoint of offsets {0: 3} falls due: a child is forked, and waits
    at_snapshot = w.engine.snapshot()["store"]["wide"]
    w.run_once()  # three more records stepped while it waits; the next checkpoint waits its turn
    assert source.committed == [] and not torch.equal(w.engine.snapshot()["store"]["wide"], at_snapshot)
    os.write(opened, b"go")  # one byte for that child, one for the final checkpoint's
    w.stop.set()
    w.run()
    first, last = sorted(tmp_path.glob("checkpoint-*.pt"))
    assert read_checkpoint(first)["offsets"] == {0: 3} and read_checkpoint(last)["offsets"] == {0: 6}
    assert torch.equal(read_checkpoint(first)["engine"]["store"]["wide"], at_snapshot)
    assert source.committed == [{0: 3}, {0: 6}]


def test_stopping_waits_for_the_checkpoint_in_flight_then_writes_a_final_one(tmp_path):
    w, source, _, _ = worker([hours("a", 0, 3), hours("a", 3, 5)], checkpoint_dir=tmp_path, every_records=3)
    w.checkpoints.writer = writer = HeldWriter()
    w.run_once()
    w.run_once()
    assert w.checkpoints.writing and source.committed == []
    writer.release.set()  # the disk catches up; run() must wait for it rather than leave it behind
    w.stop.set()
    w.run()
    assert not w.checkpoints.writing and source.committed == [{0: 3}, {0: 5}]
    assert load_latest_checkpoint(tmp_path)[0]["offsets"] == {0: 5}


def test_stopping_writes_a_final_checkpoint(tmp_path):
    w, source, _, _ = worker([hours("a", 0, 2)], checkpoint_dir=tmp_path, every_records=1000)
    w.run_once()
    w.stop.set()
    w.run()
    assert load_latest_checkpoint(tmp_path)[0]["offsets"] == {0: 2} and source.committed == [{0: 2}]


def test_a_writer_that_dies_commits_nothing_and_leaves_the_last_good_checkpoint_in_force(tmp_path):
    first, _, _, _ = worker([hours("a", 0, 3)], checkpoint_dir=tmp_path, every_records=1000)
    first.run_once()
    first.stop.set()
    first.run()  # the last good checkpoint: offsets {0: 3}
    second, source, _, registry = worker([hours("a", 3, 6)], checkpoint_dir=tmp_path, every_records=3, restore=True)
    second.checkpoints.writer = CheckpointWriter(fork=True)
    second.checkpoints._payload = lambda engine, offsets, at: os.kill(os.getpid(), signal.SIGKILL)  # in the child
    second.run_once()  # a checkpoint of {0: 6} starts, and its writer is killed before it writes
    second.stop.set()
    second.run()  # collects the failure, and the final checkpoint's writer dies too
    failures = registry.get_sample_value(
        "forecaster_checkpoint_failures_total", {"pipeline": "test", "reason": "io_error"}
    )
    assert failures == 2 and second.error is None and source.committed == []
    restarted, _, _, _ = worker([], checkpoint_dir=tmp_path, restore=True)
    assert restarted.offsets == {0: 3} and load_latest_checkpoint(tmp_path)[0]["offsets"] == {0: 3}


def test_no_checkpoint_when_the_last_batch_could_not_be_delivered(tmp_path):
    w, source, _, _ = worker([hours("a", 0, 2)], DeliveryError("undelivered at shutdown"), tmp_path, every_records=1000)
    w.run()
    assert load_latest_checkpoint(tmp_path) is None and source.committed == [] and w.error is None


def test_a_restored_worker_forecasts_exactly_as_one_that_never_stopped(tmp_path):
    values = lambda sink: [json.loads(m.value)["values"] for m in sink.messages]
    uninterrupted, _, whole, _ = worker([hours("a", 0, 6) + hours("b", 0, 6, partition=1), hours("a", 6, 12)])
    uninterrupted.run_once()
    uninterrupted.run_once()
    first, _, _, _ = worker(
        [hours("a", 0, 6) + hours("b", 0, 6, partition=1)], checkpoint_dir=tmp_path, every_records=1
    )
    first.run_once()  # then the process dies
    resumed, _, after, _ = worker([hours("a", 6, 12)], checkpoint_dir=tmp_path, restore=True)
    resumed.run_once()
    np.testing.assert_allclose(values(after), values(whole)[12:], rtol=1e-6)


def test_a_checkpoint_resumed_past_the_end_of_its_topic_is_reported_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(app, "_CONTACT_CHECK_EVERY_S", 0.0)  # the contact check is due on every batch
    w, source, _, _ = worker([], checkpoint_dir=tmp_path)
    source.past_the_end = {0: (7983, 10)}  # the topic was recreated since the state was checkpointed

    with caplog.at_level(logging.WARNING, logger="forecaster.app"):
        for _ in range(3):
            w.run_once()

    [report] = caplog.records
    assert "partition 0 of in resumes at offset 7983" in report.getMessage()
    assert "topic ends at 10: was it recreated, or is this another cluster?" in report.getMessage()
    assert str(tmp_path) in report.getMessage()


class FakeChangelog:
    """The changelog topic in memory: empty when read, and what each checkpoint wrote."""

    def __init__(self):
        self.writes, self.kept = [], []

    def read(self, partition):
        return []

    def write(self, records, stop):
        self.writes.append(records)

    def keep(self, partition, records):
        self.kept.append((partition, sorted(key for key, _ in records)))


def test_with_the_changelog_checkpoints_keep_their_schedule_instead_of_following_every_batch(tmp_path):
    w, source, _, _ = worker([hours("a", h, h + 2) for h in range(0, 8, 2)], checkpoint_dir=tmp_path, every_records=3)
    changelog = FakeChangelog()
    w.changelog = changelog
    source.rebalances = lambda: [Rebalance("assigned", frozenset({0}))] if not changelog.writes else []
    source.resume = lambda positions: None
    for _ in range(4):  # 2 records a batch: 3 records fall due after the 2nd batch and again after the 4th
        w.run_once()
    assert len(changelog.writes) == 2
    assert source.committed == [{0: 4}, {0: 8}]


def changelog_worker(batches):
    """A worker with the changelog in memory, given partition 0 before its first batch and checkpointing after
    every batch."""
    w, source, _, _ = worker(batches, every_records=1)
    w.changelog = changelog = FakeChangelog()
    assigned = iter([[Rebalance("assigned", frozenset({0}))]])
    source.rebalances = lambda: next(assigned, [])
    source.resume = lambda positions: None
    return w, changelog


def test_a_partition_given_up_is_copied_locally_with_every_series_not_only_those_written_last():
    w, changelog = changelog_worker([hours("a", 0, 2) + hours("b", 2, 4), hours("a", 4, 6)])
    w.run_once()
    w.run_once()  # b untouched since the first checkpoint

    w._revoked(frozenset({0}))

    assert changelog.kept == [(0, [handover.PARTITION_KEY, b"a", b"b"])]
    assert [key for key, _ in changelog.writes[-1][0]] == [handover.PARTITION_KEY]  # nothing touched to write


def test_stopping_copies_the_partitions_held_locally():
    w, changelog = changelog_worker([hours("a", 0, 2)])
    w.run_once()
    w.stop.set()
    w.run()
    assert changelog.kept == [(0, [handover.PARTITION_KEY, b"a"])]


def test_each_batch_says_where_its_time_went_stage_by_stage():
    sent = lambda polled, seconds_ago: dataclasses.replace(polled, timestamp_ms=1000 * (time.time() - seconds_ago))  # noqa: E731
    late = [sent(record("a", 1, 2.0), 60.0), sent(record("b", 1, 3.0), 1.0)]
    w, _, _, registry = worker([[record("a", 0, 1.0)], [], late])
    for _ in range(3):
        w.run_once()
    sample = lambda name, stage: registry.get_sample_value(  # noqa: E731
        f"forecaster_stage_seconds_{name}", {"pipeline": "test", "stage": stage}
    )
    for stage in STAGES:  # once per batch that held records: the empty poll is no batch
        assert sample("count", stage) == 2
        assert sample("sum", stage) >= 0
    assert sample("sum", "step") == registry.get_sample_value("forecaster_step_seconds_sum", {"pipeline": "test"})
    assert sample("sum", "decode") > 0 and sample("sum", "encode") > 0
    assert 60 <= sample("sum", "wait") < 70  # the oldest record of the last batch; the first's had no timestamp
