"""One model across members, without Kafka: what is published, what a member adopts, when it may publish, and
the offsets at which each partition switched versions."""

import dataclasses
import threading

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from forecaster.build import seeded_model
from forecaster.errors import ConfigError
from forecaster.learning import published
from forecaster.metrics import Metrics
from forecaster.serving import handover
from forecaster.serving.engine import Engine
from forecaster.sharing import ModelSharing

from support import mean_reverting, observations, retraining_pipeline


class FakeModelTopic:
    """A model topic in memory: `take` gives what a watcher would have read."""

    topic = "test.model"

    def __init__(self):
        self.log, self.taken, self.watching = [], 0, False

    def publish(self, value, stop):
        self.log.append(value)

    def read_new(self):
        return self.take()

    def take(self):
        new, self.taken = self.log[self.taken :], len(self.log)
        return new

    def watch(self, every_s, stop):
        self.watching = True


@pytest.fixture
def pipeline():
    return retraining_pipeline(quantiles=(0.1, 0.5, 0.9))


def stepped_engine(pipeline, length=40):
    """An engine that has stepped 8 series of input partition 0 for `length` hours, its buffers filled."""
    engine = Engine(pipeline, seeded_model(pipeline))
    stream = observations(*mean_reverting(length=length))
    on_partition_0 = dataclasses.replace(
        stream, partitions=np.zeros(len(stream), np.int64), offsets=np.arange(len(stream), dtype=np.int64)
    )
    engine.step(on_partition_0, now=0.0)
    return engine


def perturbed(model, amount=0.1):
    """Other weights of the same model: a version a trainer might have promoted."""
    other = seeded_model_like(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(amount)
    return other


def seeded_model_like(model):
    copy = type(model)(model.spec)
    copy.load_state_dict(model.state_dict())
    return copy


def record(pipeline, version, sequence, widenings=(), amount=0.1):
    """The record a trainer serving `version` would publish after `sequence` others."""
    trainer = Engine(pipeline, perturbed(seeded_model(pipeline), amount * version), model_version=version)
    trainer.recalibrate(widenings)
    return published.encode(trainer, sequence)


def sharing_of(engine, topic=None):
    registry = CollectorRegistry()
    return ModelSharing(engine.pipeline, engine, topic or FakeModelTopic(), Metrics(registry)), registry


def test_a_record_holds_the_weights_version_and_calibration_and_refuses_another_model(pipeline):
    engine = Engine(pipeline, perturbed(seeded_model(pipeline)), model_version=3)
    engine.recalibrate([torch.ones(pipeline.horizon), 3 * torch.ones(pipeline.horizon)])

    got = published.decode(published.encode(engine, sequence=5), engine.model.spec, "test.model")

    assert (got.version, got.sequence) == (3, 5)
    for name, value in engine.model.state_dict().items():
        torch.testing.assert_close(got.model.state_dict()[name], value.cpu())
    torch.testing.assert_close(torch.stack(got.widenings), torch.stack(engine.widenings))
    other = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, hidden_size=4))
    with pytest.raises(ConfigError, match="another model"):
        published.decode(published.encode(engine, 0), seeded_model(other).spec, "test.model")


def test_a_newer_version_is_installed_with_states_resynchronised_an_older_one_ignored(pipeline):
    engine = stepped_engine(pipeline)
    states = engine.store.state.clone()
    older = published.decode(record(pipeline, 0, 0), engine.model.spec, "t")
    newer = published.decode(record(pipeline, 2, 1), engine.model.spec, "t")

    assert published.adopt(engine, newer, served=-1, resync_steps=pipeline.retraining.resync_steps)
    assert engine.model_version == 2
    assert not torch.equal(engine.store.state, states)  # replayed under the new weights
    assert not published.adopt(engine, older, served=1, resync_steps=8)
    assert engine.model_version == 2


def test_the_same_version_newly_calibrated_changes_the_calibration_only(pipeline):
    engine = stepped_engine(pipeline)
    widening = torch.full((pipeline.horizon,), 0.5)
    same = published.decode(record(pipeline, 0, 4, [widening]), engine.model.spec, "t")
    weights = {k: v.clone() for k, v in engine.model.state_dict().items()}

    assert not published.adopt(engine, same, served=3, resync_steps=8)

    torch.testing.assert_close(engine.widening, widening)
    for name, value in engine.model.state_dict().items():
        torch.testing.assert_close(value, weights[name])


def test_a_starting_member_serves_the_newest_published_version_before_its_first_batch(pipeline):
    topic = FakeModelTopic()
    for version, sequence in ((1, 0), (2, 1), (2, 2)):
        topic.publish(record(pipeline, version, sequence), None)
    engine = Engine(pipeline, seeded_model(pipeline))
    sharing, registry = sharing_of(engine, topic)

    sharing.join(threading.Event())

    assert engine.model_version == 2 and sharing.sequence == 2 and topic.watching
    assert registry.get_sample_value("forecaster_model_version", {"pipeline": "test"}) == 2


def test_each_partition_records_the_offset_at_which_it_switched_versions(pipeline):
    topic = FakeModelTopic()
    engine = stepped_engine(pipeline)
    sharing, _ = sharing_of(engine, topic)

    topic.publish(record(pipeline, 1, 0), None)
    sharing.follow({0: 40, 1: 17})
    sharing.follow({0: 45, 1: 20})  # nothing new: no switch
    topic.publish(record(pipeline, 2, 1), None)
    sharing.follow({0: 50, 1: 22})

    assert sharing.switches == {0: [(1, 40), (2, 50)], 1: [(1, 17), (2, 22)]}


def test_only_the_owner_of_partition_0_publishes_and_only_from_the_newest_version(pipeline):
    topic = FakeModelTopic()
    engine = stepped_engine(pipeline)
    sharing, _ = sharing_of(engine, topic)

    assert not sharing.may_publish({1, 2}, version=0, offsets={})
    assert sharing.may_publish({0, 1}, version=0, offsets={})
    topic.publish(record(pipeline, 1, 0), None)  # published by another member meanwhile
    assert not sharing.may_publish({0, 1}, version=0, offsets={0: 9})
    assert engine.model_version == 1  # served instead


def test_a_member_publishes_after_the_newest_record_it_read(pipeline):
    topic = FakeModelTopic()
    topic.publish(record(pipeline, 1, 0), None)
    engine = Engine(pipeline, seeded_model(pipeline))
    sharing, _ = sharing_of(engine, topic)
    sharing.join(threading.Event())

    sharing.publish(threading.Event())

    newest = published.decode(topic.log[-1], engine.model.spec, "t")
    assert (newest.version, newest.sequence) == (1, 1)


def test_a_partition_whose_series_ran_a_newer_version_is_served_with_that_version_first(pipeline):
    """Versions never go back for a series: its new owner catches up with the model topic before serving it."""
    topic = FakeModelTopic()
    topic.publish(record(pipeline, 1, 0), None)
    old_owner = stepped_engine(pipeline)
    published.adopt(old_owner, published.decode(topic.log[0], old_owner.model.spec, "t"), -1, 8)
    records, _ = handover.series_records(old_owner, [0])
    own = handover.partition_record(old_owner, 0, offset=40, switches=[(1, 30)])

    engine = Engine(pipeline, seeded_model(pipeline))  # its watcher has not read version 1 yet
    sharing, _ = sharing_of(engine, topic)
    found = records[0] + [(handover.PARTITION_KEY, own)]
    sharing.catch_up_with(handover.newest_version(found), {})
    restored = handover.restore(engine, 0, found)
    sharing.restored(0, restored, {0: 40})

    assert engine.model_version == 1
    assert restored.version == 1 and set(restored.versions.values()) == {1}
    assert sharing.switches[0] == [(1, 30)]
    slots_there, slots_here = (
        old_owner.store.lookup(list(restored.versions)),
        engine.store.lookup(list(restored.versions)),
    )
    torch.testing.assert_close(engine.store.state[:, slots_here], old_owner.store.state[:, slots_there])  # as they were


def test_series_restored_under_an_older_version_are_resynchronised_and_the_switch_recorded(pipeline):
    old_owner = stepped_engine(pipeline)  # version 0
    records, _ = handover.series_records(old_owner, [0])
    own = handover.partition_record(old_owner, 0, offset=40)
    topic = FakeModelTopic()
    topic.publish(record(pipeline, 1, 0), None)
    engine = Engine(pipeline, seeded_model(pipeline))
    sharing, _ = sharing_of(engine, topic)
    sharing.join(threading.Event())

    restored = handover.restore(engine, 0, records[0] + [(handover.PARTITION_KEY, own)])
    sharing.restored(0, restored, {0: 40})

    keys = list(restored.versions)
    slots_there, slots_here = old_owner.store.lookup(keys), engine.store.lookup(keys)
    assert not np.allclose(engine.store.state[:, slots_here].cpu(), old_owner.store.state[:, slots_there].cpu())
    assert sharing.switches[0] == [(1, 40)]


def test_a_partition_record_keeps_its_newest_switches():
    pipeline = retraining_pipeline()
    engine = Engine(pipeline, seeded_model(pipeline), model_version=7)
    switches = [(v, 10 * v) for v in range(handover.SWITCHES_KEPT + 5)]

    restored = handover.restore(
        engine, 0, [(handover.PARTITION_KEY, handover.partition_record(engine, 0, 99, switches))]
    )

    assert restored.version == 7 and restored.offset == 99
    assert restored.switches == tuple(switches[-handover.SWITCHES_KEPT :])
