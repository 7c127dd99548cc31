"""Starting a pipeline on a checkpoint of another model: what carries over, what is rebuilt, what is refused."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import build_engine, save_model, seeded_model
from forecaster.config import Config, Settings
from forecaster.errors import ConfigError
from forecaster.learning import migration
from forecaster.learning.history import ModelHistory
from forecaster.learning.resync import resync

from support import observations, random_walks, retraining_pipeline

KEYS = [f"s{s}" for s in range(5)]


def config_of(tmp_path, pipeline) -> Config:
    """A config of one pipeline in `tmp_path`, as config.load builds it: its state in tmp_path/state."""
    return Config(path=tmp_path / "config.yaml", settings=Settings(pipelines=("test.yaml",)), pipelines=(pipeline,))


def served(tmp_path, pipeline, device="cpu") -> tuple[dict, dict]:
    """A checkpoint of `pipeline` after 40 steps of 5 random walks, and each series' scaling moments then."""
    engine = build_engine(config_of(tmp_path, pipeline), pipeline, device)
    engine.model_version = 3
    keys, times, values = random_walks(n_series=5, length=40)
    engine.step(observations(keys, times, values), now=0.0)
    return {"engine": engine.snapshot()}, moments_by_key(engine)


def moments_by_key(engine) -> dict:
    slots = torch.as_tensor(engine.store.slots(KEYS), device=engine.device)
    m = engine.store.moments
    return {key: (m.mean[s].tolist(), m.var[s].tolist(), float(m.count[s])) for key, s in zip(KEYS, slots)}


def states_by_key(engine) -> torch.Tensor:
    return engine.store.state[:, torch.as_tensor(engine.store.slots(KEYS), device=engine.device)].cpu()


def changed(pipeline, **model):
    return dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, **model))


def test_a_horizon_change_keeps_every_series_scaling_and_state_and_forecasts_the_new_horizon(tmp_path, device):
    old = retraining_pipeline(buffer=48, horizon=4, quantiles=(0.1, 0.5, 0.9))
    payload, moments = served(tmp_path, old, device)
    before = build_engine(config_of(tmp_path, old), old, device, seeded_model(old))
    before.restore(payload["engine"])
    new = dataclasses.replace(old, horizon=7)

    engine = migration.resume(config_of(tmp_path, new), new, device, payload)

    assert engine.model_version == 4
    assert moments_by_key(engine) == moments
    torch.testing.assert_close(states_by_key(engine), states_by_key(before))  # the body is the checkpoint's
    forecasts, rejected = engine.step(observations(KEYS, [2e9] * 5, [1.0] * 5), now=0.0)
    assert rejected == [] and forecasts.values.shape == (5, 7) and np.isfinite(forecasts.values).all()
    assert all(q.shape == (5, 7) for q in forecasts.quantiles.values())
    assert forecasts.model_version == 4


def test_a_new_hidden_size_rebuilds_each_state_by_replaying_its_buffered_steps(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    payload, moments = served(tmp_path, old)
    new = changed(old, hidden_size=16)

    engine = migration.resume(config_of(tmp_path, new), new, "cpu", payload)

    assert moments_by_key(engine) == moments
    assert torch.equal(engine.model.readout.weight, seeded_model(new).readout.weight)  # no weights file: seeded
    slots = engine.store.slots(KEYS)
    torch.testing.assert_close(states_by_key(engine), resync(engine.model, engine.buffer, slots, 48))
    assert torch.count_nonzero(states_by_key(engine)) > 0


def test_without_a_buffer_a_new_body_starts_every_state_at_zero(tmp_path):
    old = retraining_pipeline(horizon=4)
    old = dataclasses.replace(old, retraining=dataclasses.replace(old.retraining, enabled=False))
    payload, moments = served(tmp_path, old)
    new = changed(old, cell="lstm")

    engine = migration.resume(config_of(tmp_path, new), new, "cpu", payload)

    assert moments_by_key(engine) == moments
    assert torch.count_nonzero(states_by_key(engine)) == 0


def test_a_weights_file_that_fits_the_new_model_is_served(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    payload, _ = served(tmp_path, old)
    pretrained = seeded_model(changed(old, hidden_size=16, seed=7))
    save_model(tmp_path / "new.pt", pretrained)
    new = changed(old, hidden_size=16, weights="new.pt")

    engine = migration.resume(config_of(tmp_path, new), new, "cpu", payload)

    assert torch.equal(engine.model.readout.weight, pretrained.readout.weight)
    assert engine.model_version == 4  # the checkpoint's, one up: not the file's


def test_what_was_learnt_about_the_old_model_starts_afresh_and_the_plan_says_so(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4, quantiles=(0.1, 0.5, 0.9), combination=True)
    old = dataclasses.replace(old, retraining=dataclasses.replace(old.retraining, damping=True))
    engine = build_engine(config_of(tmp_path, old), old, "cpu")
    keys, times, values = random_walks(n_series=5, length=40)
    engine.step(observations(keys, times, values), now=0.0)
    engine.damping.set(engine.store.active, torch.full((5,), 0.5))
    engine.calibrate(torch.ones(4))
    payload = {"engine": engine.snapshot()}
    new = changed(old, hidden_size=16)

    plan = migration.plan(config_of(tmp_path, new), new, payload["engine"])
    migrated = migration.resume(config_of(tmp_path, new), new, "cpu", payload)

    assert plan.changes == "hidden_size 8 -> 16" and plan.states == "replayed"
    assert plan.carried == ("buffer", "history")  # no season: nothing of it to carry
    assert set(plan.dropped) >= {"damping factors", "issued intervals", "interval calibration"}
    assert "the combination's weights" in plan.dropped
    assert migrated.damping.factors[migrated.store.active].tolist() == [1.0] * 5
    assert migrated.widening is None and not migrated.tracked.any()
    assert migrated.combination.learners == {}
    assert plan.describe().startswith("5 series to model version 1 on seeded weights; kept: scaling, newest values, ")


def test_a_checkpoint_of_the_pipelines_own_model_resumes_without_reading_the_weights_file(tmp_path):
    pipeline = retraining_pipeline(buffer=48, horizon=4)
    payload, moments = served(tmp_path, pipeline)
    pipeline = changed(pipeline, weights="deleted.pt")  # e.g. pretrained for another horizon, then removed

    engine = migration.resume(config_of(tmp_path, pipeline), pipeline, "cpu", payload)

    assert engine.model_version == 3 and moments_by_key(engine) == moments


def refusal(tmp_path, old, new) -> str:
    """The one line a start on `old`'s checkpoint under pipeline `new` is refused with."""
    payload, _ = served(tmp_path, old)
    config = config_of(tmp_path, new)
    with pytest.raises(ConfigError) as refused:
        migration.resume(config, new, "cpu", payload)
    with pytest.raises(ConfigError) as checked:
        migration.restart(config, new, payload)  # what `forecaster check` says, before any start
    message = str(refused.value)
    assert str(checked.value) == message and "\n" not in message and "ModelSpec" not in message
    return message


def test_other_covariates_are_refused_naming_the_checkpoint_folder_and_the_reset_command(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    new = dataclasses.replace(old, record=dataclasses.replace(old.record, covariates=("wind",)))
    assert refusal(tmp_path, old, new) == (
        "pipeline test: the record's features changed (the checkpoint scales 1 per series, the pipeline 2), so its "
        f"checkpoints in {tmp_path / 'state' / 'test'} cannot be migrated; stop the daemon and run "
        f"`forecaster reset -c {tmp_path / 'config.yaml'} --pipeline test` to start every series afresh"
    )


def test_another_season_is_refused(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    message = refusal(tmp_path, old, changed(old, season=24))
    assert message.startswith("pipeline test: the season changed (0 -> 24): its scaling is of another quantity")
    assert "forecaster reset" in message


def test_a_weights_file_that_fits_neither_model_is_refused_naming_what_differs(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    save_model(tmp_path / "old.pt", seeded_model(old))
    message = refusal(tmp_path, old, changed(old, hidden_size=16, weights="old.pt"))
    assert message.startswith(
        f"{tmp_path / 'old.pt'}: the weights are for another model than the pipeline configures "
        "(hidden_size 8 -> 16), and the checkpoint's cannot take the new shape; rerun `forecaster pretrain -c "
    )


def test_more_series_than_max_series_is_refused(tmp_path):
    old = retraining_pipeline(buffer=48, horizon=4)
    message = refusal(tmp_path, old, dataclasses.replace(old, max_series=3))
    assert "hold 5 series, more than max_series 3; raise max_series, or stop the daemon and run" in message


# -- a configured weights file that changed since the checkpoint --------------------------------------------------


def restarted(tmp_path, pipeline, payload):
    """The engine a restart on `payload` serves, as the daemon builds it, and whether it adopted model.weights."""
    config = config_of(tmp_path, pipeline)
    engine = migration.resume(config, pipeline, "cpu", payload)
    history = ModelHistory(tmp_path / "state" / pipeline.name / "models", keep=5)
    return engine, migration.adopt_configured(config, pipeline, engine, history, restored=True)


def test_a_configured_weights_file_that_differs_from_the_checkpoints_is_served_as_the_next_version(tmp_path, caplog):
    pipeline = retraining_pipeline(buffer=48, horizon=4)
    payload, moments = served(tmp_path, pipeline)  # version 3, seeded weights
    refitted = seeded_model(changed(pipeline, seed=7))
    save_model(tmp_path / "refitted.pt", refitted)
    caplog.set_level("INFO")

    engine, adopted = restarted(tmp_path, changed(pipeline, weights="refitted.pt"), payload)

    assert adopted and engine.model_version == 4
    assert torch.equal(engine.model.readout.weight, refitted.readout.weight)
    assert moments_by_key(engine) == moments  # the series carry over, their states re-synchronised under it
    slots = engine.store.slots(KEYS)
    torch.testing.assert_close(states_by_key(engine), resync(engine.model, engine.buffer, slots, 48))
    assert "model.weights refitted.pt differs from the weights the checkpoint serves (version 3): serving it as " in (
        caplog.text
    )


def test_once_adopted_the_file_does_not_replace_what_retraining_promoted_since(tmp_path):
    pipeline = changed(retraining_pipeline(buffer=48, horizon=4), weights="refitted.pt")
    payload, _ = served(tmp_path, retraining_pipeline(buffer=48, horizon=4))  # seeded weights
    save_model(tmp_path / "refitted.pt", seeded_model(changed(pipeline, seed=7)))
    restarted(tmp_path, pipeline, payload)  # adopted: its digest recorded
    promoted = seeded_model(changed(pipeline, seed=8))  # then a round promotes other weights, checkpointed
    payload["engine"]["model"]["state_dict"] = promoted.state_dict()

    engine, adopted = restarted(tmp_path, pipeline, payload)

    assert not adopted and torch.equal(engine.model.readout.weight, promoted.readout.weight)


def test_a_file_equal_to_the_checkpoints_weights_changes_nothing(tmp_path):
    pipeline = changed(retraining_pipeline(buffer=48, horizon=4), weights="same.pt")
    payload, _ = served(tmp_path, retraining_pipeline(buffer=48, horizon=4))  # seeded weights
    save_model(tmp_path / "same.pt", seeded_model(pipeline))  # what the checkpoint serves

    engine, adopted = restarted(tmp_path, pipeline, payload)

    assert not adopted and engine.model_version == 3


def test_weights_policy_checkpoint_pins_the_checkpoints_weights(tmp_path):
    pipeline = changed(retraining_pipeline(buffer=48, horizon=4), weights="refitted.pt", weights_policy="checkpoint")
    payload, _ = served(tmp_path, retraining_pipeline(buffer=48, horizon=4))  # seeded weights
    save_model(tmp_path / "refitted.pt", seeded_model(changed(pipeline, seed=7)))

    engine, adopted = restarted(tmp_path, pipeline, payload)

    assert not adopted and engine.model_version == 3
    assert torch.equal(engine.model.readout.weight, seeded_model(pipeline).readout.weight)


def test_the_weights_served_before_the_file_was_adopted_are_kept_for_a_rollback(tmp_path):
    pipeline = changed(retraining_pipeline(buffer=48, horizon=4), weights="refitted.pt")
    payload, _ = served(tmp_path, retraining_pipeline(buffer=48, horizon=4))  # seeded weights
    save_model(tmp_path / "refitted.pt", seeded_model(changed(pipeline, seed=7)))

    restarted(tmp_path, pipeline, payload)

    history = ModelHistory(tmp_path / "state" / "test" / "models", keep=5)
    assert [(k.version, k.source) for k in history.versions()] == [
        (4, "the configured weights file refitted.pt"),
        (3, "served before model.weights was adopted"),
    ]
