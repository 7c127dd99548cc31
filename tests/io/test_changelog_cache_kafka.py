"""A member's local copy of a changelog partition: read with the log after it, it restores what the whole log does.

The copy is a cache, never the source of truth: it covers the log only as far as the member's own reads and
writes account for every record, and a copy that lies outside the log is discarded."""

import dataclasses
import threading
import uuid

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.config import Kafka
from forecaster.io import clients
from forecaster.io.checkpoint import load_changelog_cache, save_changelog_cache
from forecaster.serving import handover
from forecaster.serving.engine import Engine

from support import make_pipeline, mean_reverting, observations

pytestmark = pytest.mark.kafka

N_SERIES = 6


@pytest.fixture(params=["kafka-python", "confluent-kafka"])
def topic(broker, request):
    """A fresh changelog topic of one partition, on either client."""
    kafka = Kafka(bootstrap_servers=broker.bootstrap, client=request.param)
    name = f"cache.{uuid.uuid4().hex[:8]}.changelog"
    clients.create_topics(kafka, [(name, 1)], compacted=[name])
    return kafka, name


class Series:
    """A partition's series stepped hour by hour, written as a member's checkpoints would be."""

    def __init__(self):
        self.pipeline = make_pipeline(horizon=6, combination=True)
        self.engine = Engine(self.pipeline, seeded_model(self.pipeline))
        self.keys, self.times, self.values = mean_reverting(n_series=N_SERIES, length=24)
        self.hour = 0

    def step(self, hours: int) -> None:
        rows = np.arange(self.hour * N_SERIES, (self.hour + hours) * N_SERIES)
        batch = observations([self.keys[i] for i in rows], np.asarray(self.times)[rows], np.asarray(self.values)[rows])
        batch = dataclasses.replace(batch, partitions=np.zeros(len(rows), np.int64), offsets=rows.astype(np.int64))
        self.engine.step(batch, now=0.0)
        self.hour += hours

    def touched(self, first: int = N_SERIES) -> dict:
        """The records of the series touched since the last call (the `first` of them only)."""
        records, slots = handover.series_records(self.engine, [0])
        self.engine.store.touched[slots] = False
        return {0: records[0][:first]}

    def everything(self) -> list:
        return handover.series_records(self.engine, [0], touched_only=False)[0][0]


def restored(pipeline, records) -> dict:
    """key -> (offset reflected, every array of its state) of an engine restored from `records`."""
    engine = Engine(pipeline, seeded_model(pipeline))
    handover.restore(engine, 0, records)
    slots = engine.store.owned([0])
    keys = engine.store.keys_of(slots)
    snapshot = engine.store.snapshot_series(slots)
    return {
        key: (int(engine.store.reflected[slot]), snapshot["wide"][i].tolist(), snapshot["exact"][i].tolist())
        for i, (key, slot) in enumerate(zip(keys, slots.tolist()))
    }


def test_the_copy_and_the_log_after_it_restore_exactly_what_the_whole_log_does(topic, tmp_path):
    kafka, name = topic
    series, other = Series(), clients.ChangelogTopic(kafka, name)
    member = clients.ChangelogTopic(kafka, name, cache=tmp_path)
    series.step(4)
    other.write(series.touched(), threading.Event())  # the partition's last owner
    member.read(0)
    series.step(4)
    member.write(series.touched(), threading.Event())
    member.keep(0, series.everything())
    series.step(4)
    other.write(
        series.touched(first=3), threading.Event()
    )  # its next owner, after the member gave it up: 3 series changed

    again = clients.ChangelogTopic(kafka, name, cache=tmp_path)  # the member, restarted
    got = again.read(0)

    whole = clients.read_partition(kafka, name, 0)
    assert load_changelog_cache(tmp_path / f"{name}.0.cache")[0] == 2 * N_SERIES  # every record up to its writes
    assert len(got) == N_SERIES + 3 < len(whole)  # its copy and the next owner's records, not the whole log
    assert restored(series.pipeline, got) == restored(series.pipeline, whole)


def test_a_copy_ends_where_the_members_read_ended_when_another_wrote_in_between(topic, tmp_path):
    kafka, name = topic
    series, ahead, other = Series(), Series(), clients.ChangelogTopic(kafka, name)
    member = clients.ChangelogTopic(kafka, name, cache=tmp_path)
    series.step(4)
    other.write(series.touched(), threading.Event())
    member.read(0)
    ahead.step(8)
    other.write(ahead.touched(), threading.Event())  # a stale owner that went further writes while the member holds it
    series.step(2)
    member.write(series.touched(), threading.Event())
    member.keep(0, series.everything())

    assert load_changelog_cache(tmp_path / f"{name}.0.cache")[0] == N_SERIES  # where the member's read ended
    got = clients.ChangelogTopic(kafka, name, cache=tmp_path).read(0)
    assert restored(series.pipeline, got) == restored(series.pipeline, clients.read_partition(kafka, name, 0))
    assert restored(series.pipeline, got) == restored(series.pipeline, ahead.everything())  # the newest states won


def test_a_copy_up_to_the_end_of_the_log_is_read_with_nothing_after_it(topic, tmp_path):
    kafka, name = topic
    series = Series()
    series.step(4)
    clients.ChangelogTopic(kafka, name).write(series.touched(), threading.Event())
    member = clients.ChangelogTopic(kafka, name, cache=tmp_path)
    member.read(0)
    series.step(4)
    member.write(series.touched(), threading.Event())  # one batch of records, the log's last (tansu: its end)
    member.keep(0, series.everything())

    got = clients.ChangelogTopic(kafka, name, cache=tmp_path).read(0)

    assert load_changelog_cache(tmp_path / f"{name}.0.cache")[0] == 2 * N_SERIES
    assert got == series.everything()  # the copy alone: not discarded, nothing read again


def test_a_copy_beyond_the_end_of_the_log_is_discarded(topic, tmp_path):
    kafka, name = topic
    series = Series()
    series.step(4)
    clients.ChangelogTopic(kafka, name).write(series.touched(), threading.Event())
    series.step(4)  # a copy of a log that is not this one: newer states, at a position this log never reached
    save_changelog_cache(tmp_path / f"{name}.0.cache", 10 * N_SERIES, series.everything())

    got = clients.ChangelogTopic(kafka, name, cache=tmp_path).read(0)

    assert got == clients.read_partition(kafka, name, 0)
