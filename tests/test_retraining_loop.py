"""The run loop with retraining on: rounds in the background, promotion between batches, never a mixed model."""

import dataclasses
import json
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource

from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.config import Intervals
from forecaster.io.messages import Polled
from forecaster.learning import resync, rounds, tbptt
from forecaster.learning.trainer import Trainer
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine

from support import mean_reverting, observations, retraining_pipeline, sines


def batches_of(data, size):
    """(keys, times, values) as poll batches of Polled JSON records."""
    keys, times, values = data
    polled = [
        Polled(0, i, k.encode(), json.dumps({"key": k, "time": t, "y": y}).encode())
        for i, (k, t, y) in enumerate(zip(keys, times, values))
    ]
    return [polled[a : a + size] for a in range(0, len(polled), size)]


_started: list[PipelineWorker] = []


@pytest.fixture(autouse=True)
def stop_rounds_left_running():
    """A round a test leaves running is cancelled, as the daemon's shutdown does."""
    yield
    while _started:
        w = _started.pop()
        w.stop.set()
        w.trainer.close(timeout=120)


def make_worker(pipeline, batches):
    registry, stop = CollectorRegistry(), threading.Event()
    source = FakeSource(batches)
    sink = FakeSink(source)
    trainer = Trainer(pipeline, "cpu", stop)
    w = PipelineWorker(
        pipeline, Engine(pipeline, seeded_model(pipeline)), source, sink, Metrics(registry), stop, trainer=trainer
    )
    _started.append(w)
    return w, sink, registry


def retrains(registry, outcome):
    return registry.get_sample_value("forecaster_retrains_total", {"pipeline": "test", "outcome": outcome}) or 0


def run_until_the_round_ends(w):
    """Run batches until a round has started, then wait for it and let the next batch conclude it."""
    while w.source.batches and not w.trainer.rounds:
        w.run_once()
    w.trainer.close(timeout=120)
    w.run_once()


@pytest.fixture
def pipeline():
    """Rounds every 400 records, none of them young (young rounds: test_a_young_network_...)."""
    p = retraining_pipeline(steps=30)
    return dataclasses.replace(p, retraining=dataclasses.replace(p.retraining, every_records=400, young_rounds=0))


def test_a_young_network_starts_its_first_rounds_by_the_steps_buffered_long_before_every_records(pipeline):
    young = dataclasses.replace(pipeline.retraining, every_records=1_000_000, young_rounds=2)
    pipeline = dataclasses.replace(pipeline, retraining=young)
    w, _, registry = make_worker(pipeline, batches_of(mean_reverting(length=160), 8))
    started_at = []  # the longest buffered steps when each round started
    while w.source.batches:
        rounds_before = w.trainer.rounds
        w.run_once()
        if w.trainer.rounds > rounds_before:
            started_at.append(int(w.engine.buffer.written.max()))
        w.trainer.close(timeout=120)

    minimal = rounds.minimal_steps(pipeline)
    assert started_at == [minimal, 2 * minimal]  # then no more: young_rounds is 2 and every_records far off
    assert retrains(registry, "started") == 2


def test_the_loop_retrains_in_the_background_and_promotes_between_batches(pipeline):
    w, sink, registry = make_worker(pipeline, batches_of(mean_reverting(length=160), 8))

    run_until_the_round_ends(w)
    w.run_once()

    assert retrains(registry, "started") == 1 and retrains(registry, "promoted") == 1
    assert registry.get_sample_value("forecaster_model_version", {"pipeline": "test"}) == 1
    assert json.loads(sink.messages[-1].value)["model_version"] == 1
    champion = registry.get_sample_value("forecaster_heldout_loss", {"pipeline": "test", "model": "champion"})
    challenger = registry.get_sample_value("forecaster_heldout_loss", {"pipeline": "test", "model": "challenger"})
    assert challenger < champion
    assert registry.get_sample_value("forecaster_retrain_seconds_count", {"pipeline": "test"}) == 1
    damping = registry.get_sample_value("forecaster_damping_mean", {"pipeline": "test"})
    assert damping == pytest.approx(w.engine.mean_damping()) and 0.0 <= damping <= 1.0


def test_the_interval_gauges_show_the_conformal_widening_and_the_tracked_offsets_that_serve(pipeline):
    pipeline = dataclasses.replace(
        pipeline,
        model=dataclasses.replace(pipeline.model, quantiles=(0.1, 0.5, 0.9)),
        intervals=Intervals(tracking_rate=0.05),
    )
    w, _, registry = make_worker(pipeline, batches_of(mean_reverting(length=160), 8))

    run_until_the_round_ends(w)
    w.run_once()

    shift = lambda source: registry.get_sample_value(
        "forecaster_interval_shift_scales", {"pipeline": "test", "source": source}
    )
    assert shift("conformal") == pytest.approx(float(w.engine.widening.mean())) and w.engine.widening is not None
    assert shift("tracking") == pytest.approx(w.engine.tracked.mean()) and w.engine.tracked.any()


def test_a_round_waits_until_some_series_has_enough_steps(pipeline):
    w, _, registry = make_worker(pipeline, batches_of(sines(n_series=100, length=8), 100))

    while w.source.batches:
        w.run_once()

    assert retrains(registry, "started") == 0 and not w.trainer.running


def test_a_failed_round_is_counted_and_the_old_weights_keep_serving(pipeline, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(rounds, "challenge", broken)
    w, sink, registry = make_worker(pipeline, batches_of(sines(length=120), 8))

    run_until_the_round_ends(w)

    assert retrains(registry, "failed") == 1 and retrains(registry, "promoted") == 0
    assert w.engine.model_version == 0 and json.loads(sink.messages[-1].value)["model_version"] == 0


def test_a_rejected_challenger_is_counted_and_discarded(pipeline):
    strict = dataclasses.replace(pipeline, retraining=dataclasses.replace(pipeline.retraining, min_improvement=0.99))
    w, _, registry = make_worker(strict, batches_of(sines(length=120), 8))
    serving = w.engine.model

    run_until_the_round_ends(w)

    assert retrains(registry, "rejected") == 1
    assert w.engine.model is serving and w.engine.model_version == 0


def test_no_forecast_is_computed_with_half_swapped_weights(pipeline, monkeypatch):
    """Forecasts made while a round trains, and after its winner is installed, each equal one model's.

    A shadow engine steps the same batches with the serving weights, installs the same
    challenger (with the same re-sync) exactly where the forecasts' version changes, and
    must give the same numbers for every forecast.
    """
    batches = batches_of(mean_reverting(length=160), 8)
    w, sink, _ = make_worker(pipeline, list(batches))
    installed = []  # the model of each version from 1 on
    install = w.engine.install
    w.engine.install = lambda model, version: (installed.append(model), install(model, version))
    forecast_meanwhile = threading.Event()
    fit = tbptt.fit

    def fit_then_wait_for_a_forecast(*args, **kwargs):  # however fast the round, it overlaps serving
        losses = fit(*args, **kwargs)
        forecast_meanwhile.wait(timeout=60)
        return losses

    monkeypatch.setattr(tbptt, "fit", fit_then_wait_for_a_forecast)
    while not w.trainer.rounds:
        w.run_once()
    served_while_training = 0
    while w.trainer.running and len(w.source.batches) > 40:
        w.run_once()  # forecasting while the round trains in its thread
        served_while_training += 1
        forecast_meanwhile.set()
    w.trainer.close(timeout=120)
    assert served_while_training >= 1
    while w.source.batches:
        w.run_once()

    shadow = Engine(pipeline, seeded_model(pipeline))
    sent = [json.loads(m.value) for m in sink.messages]
    assert installed and {d["model_version"] for d in sent} >= {0, 1}
    position = 0
    for batch in batches:
        documents = sent[position : position + len(batch)]
        position += len(batch)
        version = documents[0]["model_version"]
        if version != shadow.model_version:
            resync.install(shadow, installed[version - 1], version, pipeline.retraining.resync_steps)
        assert {d["model_version"] for d in documents} == {version}  # one model per batch
        forecasts, _ = shadow.step(
            observations(*zip(*[(d["key"], d["time"], d["y"]) for d in map(json.loads, (p.value for p in batch))])),
            now=0.0,
        )
        np.testing.assert_allclose([d["values"] for d in documents], forecasts.values, rtol=1e-6)


def windows_of_the_first_round(pipeline, size, monkeypatch):
    """The buffered windows the first round trained on, the stream stepped `size` records a poll batch."""
    seen = []
    start = Trainer.start
    monkeypatch.setattr(
        Trainer,
        "start",
        lambda self, model, windows, version: seen.append(windows) or start(self, model, windows, version),
    )
    w, _, _ = make_worker(pipeline, batches_of(mean_reverting(length=160), size))
    while w.source.batches and not seen:
        w.run_once()
    return seen[0]


@pytest.mark.parametrize("young_rounds, every_records", [(2, 1_000_000), (0, 400)])
def test_a_round_starts_at_the_record_that_makes_it_due_however_the_stream_is_batched(
    pipeline, monkeypatch, young_rounds, every_records
):
    schedule = dataclasses.replace(pipeline.retraining, young_rounds=young_rounds, every_records=every_records)
    pipeline = dataclasses.replace(pipeline, retraining=schedule)

    in_one_poll = windows_of_the_first_round(pipeline, 10_000, monkeypatch)
    in_small_polls = windows_of_the_first_round(pipeline, 7, monkeypatch)

    assert in_one_poll.keys == in_small_polls.keys
    np.testing.assert_array_equal(in_one_poll.actual.numpy(), in_small_polls.actual.numpy())
    np.testing.assert_array_equal(in_one_poll.valid.numpy(), in_small_polls.valid.numpy())
