"""Model history in the run loop: promotions kept, an operator's rollback applied between batches with re-sync."""

import dataclasses
import json

import pytest
import torch
from prometheus_client import CollectorRegistry
from test_app import FakeChangelog
from test_retraining_loop import (  # noqa: F401 - fixtures
    batches_of,
    make_worker,
    run_until_the_round_ends,
    stop_rounds_left_running,
)
from test_sharing import FakeModelTopic, perturbed

from forecaster.app import Checkpoints
from forecaster.build import seeded_model
from forecaster.io.messages import Rebalance
from forecaster.learning import history, published, resync
from forecaster.learning.history import ModelHistory
from forecaster.metrics import Metrics
from forecaster.sharing import ModelSharing

from support import mean_reverting, retraining_pipeline


def same_weights(a, b) -> bool:
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def served_version(registry) -> float:
    return registry.get_sample_value("forecaster_model_version", {"pipeline": "test"})


@pytest.fixture
def promoted(tmp_path):
    """A worker keeping its versions in tmp_path/models whose first round (of 400 records) promoted version 1 over
    the seeded 0."""
    pipeline = retraining_pipeline(steps=30)
    pipeline = dataclasses.replace(
        pipeline, retraining=dataclasses.replace(pipeline.retraining, every_records=400, young_rounds=0)
    )
    w, sink, registry = make_worker(pipeline, batches_of(mean_reverting(length=200), 8))
    w.models = ModelHistory(tmp_path / "models", keep=5, check_every_s=0.0)  # every batch looks
    w.checkpoints = Checkpoints(tmp_path, pipeline)
    run_until_the_round_ends(w)
    assert w.engine.model_version == 1
    return w, sink, registry


def test_a_promotion_keeps_the_new_version_with_its_held_out_losses_and_the_version_it_replaced(promoted):
    w, _, registry = promoted

    kept = {k.version: k for k in w.models.versions()}

    assert sorted(kept) == [0, 1]
    loss = lambda model: registry.get_sample_value("forecaster_heldout_loss", {"pipeline": "test", "model": model})
    assert kept[1].scores["challenger_loss"] == pytest.approx(loss("challenger"))
    assert kept[1].scores["champion_loss"] == pytest.approx(loss("champion"))
    assert kept[1].source == "promoted over version 0"
    assert same_weights(w.models.load(0, w.engine)[0], seeded_model(w.pipeline))
    assert same_weights(w.models.load(1, w.engine)[0], w.engine.model)


def test_a_rollback_request_serves_the_old_weights_as_the_next_version_from_the_next_batch(promoted):
    w, sink, registry = promoted
    w.models.request(0)

    w.run_once()

    assert w.engine.model_version == 2 and served_version(registry) == 2
    assert same_weights(w.engine.model, seeded_model(w.pipeline))
    assert json.loads(sink.messages[-1].value)["model_version"] == 2  # the batch after the request: served by it
    assert not w.models.request_path.exists()
    assert w.models.versions()[0].version == 2 and w.models.versions()[0].source == "rolled back to version 0"
    written = w.checkpoints.newest()[0]["engine"]["model"]  # a restart serves it too
    assert written["version"] == 2 and torch.equal(
        written["state_dict"]["readout.weight"], seeded_model(w.pipeline).readout.weight
    )


def test_a_rollback_re_synchronises_every_series_state_under_the_old_weights(promoted):
    w, _, _ = promoted
    w.models.request(0)
    w.source.batches = []  # no records after the rollback: the states are what re-sync made of them

    w.run_once()

    slots = w.engine.store.active
    expected = resync.resync(w.engine.model, w.engine.buffer, slots, w.pipeline.retraining.resync_steps)
    torch.testing.assert_close(w.engine.store.state[:, torch.as_tensor(slots)], expected)


def test_a_request_for_a_version_not_kept_is_refused_and_removed_and_serving_goes_on(promoted, caplog):
    w, _, _ = promoted
    w.models.request(7)

    w.run_once()

    assert w.engine.model_version == 1 and not w.models.request_path.exists()
    assert "rollback to version 7 refused" in caplog.text and "version 7 is not kept (kept: 1, 0)" in caplog.text


def test_a_round_from_the_version_rolled_back_from_is_dropped(promoted):
    w, _, registry = promoted
    while w.source.batches and w.trainer.rounds < 2:  # the next round starts from version 1
        w.run_once()
    w.trainer.close(timeout=120)
    w.models.request(0)
    promotions = registry.get_sample_value("forecaster_retrains_total", {"pipeline": "test", "outcome": "promoted"})

    w.run_once()  # the rollback comes first, then the round ends on a model no longer served

    assert w.engine.model_version == 2 and same_weights(w.engine.model, seeded_model(w.pipeline))
    assert registry.get_sample_value("forecaster_retrains_total", {"pipeline": "test", "outcome": "promoted"}) == (
        promotions
    )


def test_roll_back_names_the_versions_in_its_log_line(promoted, caplog):
    w, _, _ = promoted
    caplog.set_level("INFO")

    history.roll_back(w.engine, w.models, 0, w.pipeline)

    assert "pipeline test: rolled back to version 0 as version 2 (was serving 1)" in caplog.text


def shared_worker(tmp_path, partition):
    """A member with the changelog that owns input `partition` from its first batch, serving version 1 over the kept,
    seeded version 0, with a rollback to version 0 requested; and its model topic."""
    pipeline = retraining_pipeline()
    w, _, registry = make_worker(pipeline, [])
    w.changelog, topic = FakeChangelog(), FakeModelTopic()
    w.sharing = ModelSharing(pipeline, w.engine, topic, Metrics(CollectorRegistry()))
    w.source.rebalances = lambda: [Rebalance("assigned", frozenset({partition}))] if not w.owned else []
    w.source.resume = lambda positions: None
    w.models = ModelHistory(tmp_path / "models", keep=5, check_every_s=0.0)
    w.models.add(seeded_model(pipeline), 0, "served before the first promotion kept")
    w.engine.install(perturbed(seeded_model(pipeline)), 1)
    w.models.request(0)
    return w, topic


def test_with_the_changelog_the_member_that_trains_publishes_the_rollback_as_a_new_version(tmp_path):
    w, topic = shared_worker(tmp_path, partition=0)

    w.run_once()  # takes partition 0 over
    w.run_once()

    assert w.engine.model_version == 2 and same_weights(w.engine.model, seeded_model(w.pipeline))
    (record,) = topic.log
    sent = published.decode(record, w.engine.model.spec, topic.topic)
    assert sent.version == 2 and same_weights(sent.model, seeded_model(w.pipeline))  # every member follows it
    assert not w.models.request_path.exists()


def test_with_the_changelog_a_member_that_does_not_train_leaves_the_request_alone(tmp_path):
    w, topic = shared_worker(tmp_path, partition=1)

    w.run_once()
    w.run_once()

    assert w.engine.model_version == 1 and topic.log == [] and w.models.pending() == 0
