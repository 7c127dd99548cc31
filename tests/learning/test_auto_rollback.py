"""A promoted model that serves worse than the last value is rolled back to the one it replaced, automatically."""

import dataclasses
import json
import logging
import math
import threading

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource

from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.io.messages import Polled
from forecaster.learning import rounds
from forecaster.learning.trainer import Finished, Trainer
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine
from forecaster.serving.skill import Skill, Totals

from support import mean_reverting, retraining_pipeline

STRETCH = 64  # retraining.rollback_after_records in these tests


def batches_of(data, size=8):
    keys, times, values = data
    polled = [
        Polled(0, i, k.encode(), json.dumps({"key": k, "time": t, "y": y}).encode())
        for i, (k, t, y) in enumerate(zip(keys, times, values))
    ]
    return [polled[a : a + size] for a in range(0, len(polled), size)]


def promoting(challenger):
    """A stand-in for `rounds.challenge` whose round promotes `challenger`, whatever it is."""

    def challenge(champion, windows, pipeline, round_, device="cpu", progress=None):
        return rounds.Outcome(
            challenger=challenger, promoted=True, champion_loss=1.0, challenger_loss=0.5, training_loss=0.5, series=1
        )

    return challenge


def with_readout_bias(pipeline, bias):
    """The seeded model forecasting a move of `bias` scales at every horizon step, whatever its input."""
    model = seeded_model(pipeline)
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.fill_(bias)
    return model


@pytest.fixture
def pipeline():
    p = retraining_pipeline(steps=5)
    retraining = dataclasses.replace(
        p.retraining, every_records=400, young_rounds=0, rollback_after_records=STRETCH, rollback_below_skill=-0.1
    )
    return dataclasses.replace(p, retraining=retraining)


def run(pipeline, challenger, monkeypatch):
    """A worker through a stream on which one round promotes `challenger`: the worker and its registry."""
    monkeypatch.setattr(rounds, "challenge", promoting(challenger))
    registry, stop = CollectorRegistry(), threading.Event()
    source = FakeSource(batches_of(mean_reverting(length=100)))
    engine = Engine(pipeline, seeded_model(pipeline))
    w = PipelineWorker(
        pipeline, engine, source, FakeSink(source), Metrics(registry), stop, trainer=Trainer(pipeline, "cpu", stop)
    )
    while source.batches:
        w.run_once()
        w.trainer.close(timeout=60)  # the stand-in round ends at once: let the next batch conclude it
    return w, registry


def rollbacks(registry):
    return registry.get_sample_value("forecaster_rollbacks_total", {"pipeline": "test"})


def test_a_promoted_model_worse_than_the_last_value_is_rolled_back_to_the_one_it_replaced(
    pipeline, monkeypatch, caplog
):
    original = seeded_model(pipeline)
    caplog.set_level(logging.WARNING, logger="forecaster.app")

    w, registry = run(pipeline, with_readout_bias(pipeline, 3.0), monkeypatch)  # forecasts 3 scales off

    assert rollbacks(registry) == 1
    assert w.engine.model_version == 2  # promoted as 1, rolled back as 2: versions only increase
    assert registry.get_sample_value("forecaster_model_version", {"pipeline": "test"}) == 2
    for served, replaced in zip(w.engine.model.state_dict().values(), original.state_dict().values()):
        assert torch.equal(served, replaced)
    (line,) = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert "version 1's live one-step skill" in line and "serving version 0's weights as version 2" in line


def test_a_round_that_ends_after_a_rollback_is_discarded(pipeline, monkeypatch):
    """It was judged against the model rolled back: its winner must not serve."""
    bad = with_readout_bias(pipeline, 3.0)
    w, registry = run(pipeline, bad, monkeypatch)
    serving = w.engine.model
    promoted = registry.get_sample_value("forecaster_retrains_total", {"pipeline": "test", "outcome": "promoted"})

    late = promoting(bad)(None, None, pipeline, round_=9)
    w._conclude(Finished(round=9, seconds=0.0, version=1, outcome=late))  # a round from version 1, the bad one

    assert w.engine.model is serving and w.engine.model_version == 2
    assert (
        registry.get_sample_value("forecaster_retrains_total", {"pipeline": "test", "outcome": "promoted"}) == promoted
    )


def test_a_promoted_model_as_good_as_the_last_value_keeps_serving(pipeline, monkeypatch):
    w, registry = run(pipeline, with_readout_bias(pipeline, 0.0), monkeypatch)  # the last value: skill 0

    assert rollbacks(registry) == 0 and w.engine.model_version == 1


def test_without_a_threshold_nothing_is_ever_rolled_back(pipeline, monkeypatch):
    never = dataclasses.replace(
        pipeline, retraining=dataclasses.replace(pipeline.retraining, rollback_below_skill=None)
    )

    w, registry = run(never, with_readout_bias(never, 3.0), monkeypatch)

    assert rollbacks(registry) == 0 and w.engine.model_version == 1


def test_skill_over_a_stretch_is_measured_from_the_totals_at_its_start():
    skill = Skill(window=4)
    skill.add(np.ones(2), np.full(2, 3.0), np.zeros(2))  # model errors 2, naive 1
    start = skill.totals
    skill.add(np.full(3, 2.0), np.full(3, 2.5), np.ones(3))  # model 0.5, naive 1

    stretch = skill.totals.since(start)

    assert stretch == Totals(model=1.5, naive=3.0, scored=3) and stretch.skill == 0.5
    assert math.isnan(Totals().skill)  # nothing scored: no skill to judge
