"""Starting a pipeline on its newest checkpoint, migrated where the pipeline's model changed since.

A checkpoint holds the weights of one model shape (horizon, hidden size, layers, cell,
quantiles, ...). When the pipeline's model changes, restarting migrates the checkpoint:
  - every series carries over with its scaling moments, newest time and value, and what
    no model shaped, each where its shape still fits: the season's history, the buffered
    steps and the combination's history;
  - the new weights are the configured weights file where it fits the new model; else,
    where only the horizon (or dropout) changed, the checkpoint's own, head resized
    (serving/model.py `resized`); else, without a weights file, seeded ones;
  - the recurrent states carry over under the checkpoint's own body; under other weights
    they are rebuilt by replaying each series' buffered steps through them (resync.py), and
    start at zero where nothing is buffered;
  - what was learnt about the old model or its horizon starts afresh: damping factors,
    interval calibration and tracking, the intervals and forecasts waiting for their
    actuals, the combination's weights;
  - the model version goes up by one, and the log says what was done.
Where the checkpoint's scaling means something else under the new pipeline (other
covariates, another season), or a configured weights file fits neither model, starting is a
ConfigError (exit 2) that names the checkpoint folder and `forecaster reset`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from forecaster.build import build_engine, load_model, model_spec, pipeline_dir, seeded_model
from forecaster.config import Config, Pipeline
from forecaster.errors import ConfigError
from forecaster.learning.history import FOLDER, ModelHistory
from forecaster.learning.resync import install, resync
from forecaster.serving.engine import Engine
from forecaster.serving.model import HEAD_ONLY, Forecaster, ModelSpec, changed_fields, changes, resized

log = logging.getLogger(__name__)

CARRIED = ("buffer", "season", "history")  # the state parts no model shaped: they carry over where they fit
_WORDS = {
    "buffer": "buffered steps",
    "season": "season history",
    "history": "the combination's history",
    "pending": "the combination's pending forecasts",
    "interval": "issued intervals",
    "last_forecasts": "gap-filling forecasts",
    "damping": "damping factors",
}


@dataclass(frozen=True)
class Migration:
    """What starting a pipeline on a checkpoint of another model does; `engine` serves the new weights, no series
    yet."""

    engine: Engine
    changes: str  # the model's fields that changed, in words
    weights: str  # where the new weights come from, in words
    carried: tuple[str, ...]  # state parts that carry over
    dropped: tuple[str, ...]  # what starts afresh, in words
    states: str  # the recurrent states: "kept", "replayed" or "zero"
    series: int

    def describe(self) -> str:
        """What happens to the series, in one line, after 'will migrate' or 'migrated'."""
        kept = ", ".join(["scaling", "newest values", *(_WORDS[name] for name in self.carried)])
        states = {
            "kept": "kept (the network's body is unchanged)",
            "replayed": "rebuilt from the buffered steps",
            "zero": "from zero (nothing buffered)",
        }[self.states]
        afresh = f"; afresh: {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"{self.series} series to model version {self.engine.model_version} on "
            f"{self.weights}; kept: {kept}; recurrent states {states}{afresh}"
        )


def resume(config: Config, pipeline: Pipeline, device: torch.device | str, payload: dict | None) -> Engine:
    """The pipeline's engine: its starting weights without a checkpoint `payload`; else the checkpoint's
    weights and series, migrated where the pipeline's model changed since."""
    if payload is None:
        return build_engine(config, pipeline, device)
    snapshot = payload["engine"]
    _check_capacity(config, pipeline, snapshot)
    if checkpoint_spec(snapshot) != model_spec(pipeline):
        return migrate(config, pipeline, device, snapshot)
    engine = build_engine(config, pipeline, device, seeded_model(pipeline))  # its weights come from the checkpoint
    engine.restore(snapshot)
    return engine


def restart(config: Config, pipeline: Pipeline, payload: dict) -> str:
    """What starting the pipeline on checkpoint `payload` will do, in one line; a ConfigError where it cannot."""
    snapshot = payload["engine"]
    _check_capacity(config, pipeline, snapshot)
    if checkpoint_spec(snapshot) == model_spec(pipeline):
        version = snapshot["model"]["version"]
        served = checkpoint_model(snapshot)
        history = ModelHistory(pipeline_dir(config, pipeline) / FOLDER, pipeline.retraining.keep_versions)
        adopts = (
            ""
            if configured_change(config, pipeline, served, history)[0] is None
            else (
                f", then serves model.weights {pipeline.model.weights} as the next version (it differs from the "
                "checkpoint's weights)"
            )
        )
        return f"resumes {len(snapshot['store']['keys'])} series at model version {version}{adopts}"
    migration = plan(config, pipeline, snapshot)
    return f"{migration.changes}: will migrate {migration.describe()}"


def migrate(config: Config, pipeline: Pipeline, device: torch.device | str, snapshot: dict) -> Engine:
    """The engine serving `snapshot`'s series under the pipeline's new model (the module's docstring says how)."""
    migration = plan(config, pipeline, snapshot, device)
    engine = migration.engine
    engine.store.restore(snapshot["store"], parts=migration.carried, states=migration.states == "kept")
    if migration.states == "replayed":
        slots = engine.store.active
        engine.store.set_states(slots, resync(engine.model, engine.buffer, slots, engine.buffer.window))
    log.info(
        "pipeline %s: the model changed since the checkpoint (%s): migrated %s",
        pipeline.name,
        migration.changes,
        migration.describe(),
    )
    return engine


def plan(config: Config, pipeline: Pipeline, snapshot: dict, device: torch.device | str = "cpu") -> Migration:
    """How `snapshot`, a checkpoint of another model than the pipeline's, migrates; a ConfigError where it cannot."""
    old, new = checkpoint_spec(snapshot), model_spec(pipeline)
    checkpoint = checkpoint_model(snapshot)
    _refuse_other_scaling(config, pipeline, snapshot, checkpoint)
    model, weights, same_body = _weights(config, pipeline, checkpoint)
    engine = build_engine(config, pipeline, device, model, int(snapshot["model"]["version"]) + 1)
    carried = tuple(name for name in CARRIED if _fits(engine, snapshot["store"], name))
    states = "kept" if same_body else "replayed" if "buffer" in carried else "zero"
    return Migration(
        engine,
        changes(old, new),
        weights,
        carried,
        _dropped(snapshot, carried),
        states,
        len(snapshot["store"]["keys"]),
    )


def adopt_configured(config: Config, pipeline: Pipeline, engine: Engine, history: ModelHistory, restored: bool) -> bool:
    """On a start from a checkpoint (`restored`) with model.weights_policy configured: serve a model.weights file
    whose content changed since the pipeline last adopted it (or none is recorded) and whose weights differ from
    the checkpoint's as the next version, every series' state re-synchronised; True if it did. Either way the file's
    digest is recorded, so weights that retraining promoted since are not replaced at every restart.

    A start without a checkpoint serves the file already; a migration takes it where it fits (`_weights`).
    """
    model, digest = configured_change(config, pipeline, engine.model, history, restored)
    adopt = model is not None
    if adopt:
        was, version = engine.model_version, history.next_version(engine.model_version)
        if not history.holds(was):  # so that a rollback can return to it
            history.add(engine.model, was, "served before model.weights was adopted", widenings=engine.widenings)
        install(engine, model, version, pipeline.retraining.resync_steps)
        history.add(model, version, f"the configured weights file {pipeline.model.weights}")
        log.info(
            "pipeline %s: model.weights %s differs from the weights the checkpoint serves (version %d): serving it as "
            "version %d, %d series re-synchronised (model.weights_policy: checkpoint keeps the checkpoint's)",
            pipeline.name,
            pipeline.model.weights,
            was,
            version,
            len(engine.store),
        )
    if digest is not None:
        history.note_configured(digest)
    return adopt


def configured_change(
    config: Config, pipeline: Pipeline, served: Forecaster, history: ModelHistory, restored: bool = True
) -> tuple[Forecaster | None, str | None]:
    """The model.weights file's model if a start from a checkpoint serving `served` adopts it (`adopt_configured`
    says when), else None; and the file's SHA-256, None without a file."""
    path = None if pipeline.model.weights is None else config.resolve(pipeline.model.weights)
    if path is None or not path.is_file():
        return None, None  # a file removed since: the checkpoint's weights serve
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not restored or pipeline.model.weights_policy != "configured" or digest == history.configured_digest():
        return None, digest
    model, _ = load_model(path)
    if model.spec != served.spec:
        log.warning(
            "pipeline %s: model.weights %s is for another model than the pipeline configures (%s): the checkpoint's "
            "weights serve on",
            pipeline.name,
            pipeline.model.weights,
            changes(model.spec, served.spec),
        )
        return None, None
    return (None if _same_weights(model, served) else model), digest


def _same_weights(a: Forecaster, b: Forecaster) -> bool:
    ours = b.state_dict()
    return all(torch.equal(value.cpu(), ours[name].cpu()) for name, value in a.state_dict().items())


def checkpoint_spec(snapshot: dict) -> ModelSpec:
    """The model a checkpoint's engine snapshot was written under."""
    return ModelSpec(**snapshot["model"]["spec"])


def checkpoint_model(snapshot: dict) -> Forecaster:
    """The model a checkpoint's engine snapshot served, with its weights."""
    model = Forecaster(checkpoint_spec(snapshot))
    model.load_state_dict(snapshot["model"]["state_dict"])
    return model


def _weights(config: Config, pipeline: Pipeline, checkpoint: Forecaster) -> tuple[Forecaster, str, bool]:
    """The new model's weights, where they come from in words, and whether their body is the checkpoint's; in the
    order the module's docstring gives."""
    new = model_spec(pipeline)
    configured = pipeline.model.weights
    file_model = None if configured is None else load_model(config.resolve(configured))[0]
    if file_model is not None and file_model.spec == new:
        return file_model, f"the weights file {configured}", False
    if not set(changed_fields(checkpoint.spec, new)) - set(HEAD_ONLY):
        resize = ", head resized" if checkpoint.spec.horizon != new.horizon else ""
        return resized(checkpoint, new), f"the checkpoint's weights{resize}", True
    if file_model is None:
        return seeded_model(pipeline), "seeded weights", False
    raise ConfigError(
        f"{config.resolve(configured)}: the weights are for another model than the pipeline configures "
        f"({changes(file_model.spec, new)}), and the checkpoint's cannot take the new shape; rerun "
        f"`forecaster pretrain -c {config.path} --pipeline {pipeline.name}`, or set model.weights: null to "
        "start from seeded weights"
    )


def _refuse_other_scaling(config: Config, pipeline: Pipeline, snapshot: dict, checkpoint: Forecaster) -> None:
    """A ConfigError where the checkpoint's scaling does not mean what it would under the new pipeline."""
    features = 1 + len(pipeline.record.covariates)
    wide = snapshot["store"]["wide"].shape[1]
    scaled = (wide - checkpoint.spec.num_layers * checkpoint.state_width - 1) // 2  # state, mean and var, count
    season = pipeline.model.season or 0
    if scaled != features:
        reason = f"the record's features changed (the checkpoint scales {scaled} per series, the pipeline {features})"
    elif checkpoint.spec.season != season:
        reason = f"the season changed ({checkpoint.spec.season} -> {season}): its scaling is of another quantity"
    else:
        return
    raise ConfigError(
        f"pipeline {pipeline.name}: {reason}, so its checkpoints in {pipeline_dir(config, pipeline)} cannot be "
        f"migrated; stop the daemon and run `{reset_command(config, pipeline)}` to start every series afresh"
    )


def _check_capacity(config: Config, pipeline: Pipeline, snapshot: dict) -> None:
    """A ConfigError where the checkpoint holds more series than the pipeline may now hold."""
    held = len(snapshot["store"]["keys"])
    if held > pipeline.max_series:
        raise ConfigError(
            f"pipeline {pipeline.name}: its checkpoints in {pipeline_dir(config, pipeline)} hold {held} series, more "
            f"than max_series {pipeline.max_series}; raise max_series, or stop the daemon and run "
            f"`{reset_command(config, pipeline)}` to start every series afresh"
        )


def reset_command(config: Config, pipeline: Pipeline) -> str:
    return f"forecaster reset -c {config.path} --pipeline {pipeline.name}"


def _fits(engine: Engine, store: dict, name: str) -> bool:
    """Whether the part `name` of a store snapshot exists now and has the shape the engine's own part has."""
    part, saved = engine.store.parts.get(name), store["parts"].get(name)
    if part is None or saved is None:
        return False
    empty = part.snapshot(np.zeros(0, np.int64))
    return all(saved[field].shape[1:] == empty[field].shape[1:] for field in empty)


def _dropped(snapshot: dict, carried: tuple[str, ...]) -> tuple[str, ...]:
    """What the checkpoint held that starts afresh, in words."""
    dropped = [_WORDS.get(name, name) for name in snapshot["store"]["parts"] if name not in carried]
    if snapshot["widenings"] or bool(snapshot["tracked"].any()):
        dropped.append("interval calibration")
    if snapshot["combination"] is not None and snapshot["combination"]["learners"]:
        dropped.append("the combination's weights")
    return tuple(dropped)
