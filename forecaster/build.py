"""The composition root: a configuration turned into the objects that serve it.

Everything that maps settings onto constructors lives here, so the layers below take
plain objects: the serving engine never reads a file, and io never names a model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from forecaster.config import Config, Pipeline
from forecaster.errors import ConfigError, ForecasterError
from forecaster.io.checkpoint import parse_weights, read_weights, save_weights, weights_bytes
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster, ModelSpec, changes
from forecaster.serving.spill import DiskSpill, MemorySpill, Spill


def resolve_device(setting: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a silent fallback."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ForecasterError("device: cuda was configured but no CUDA device is available (use auto or cpu)")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def pipeline_dir(config: Config, pipeline: Pipeline) -> Path:
    """Where a pipeline keeps its checkpoints and spilled state."""
    return config.resolve(config.settings.state_dir) / pipeline.name


def group_id(config: Config, pipeline: Pipeline) -> str:
    """The consumer group of a pipeline's members: one group per pipeline."""
    return f"{config.settings.kafka.group_id}.{pipeline.name}"


def changelog_topic(config: Config, pipeline: Pipeline) -> str:
    """The compacted topic holding the pipeline's series state with checkpoint.changelog: its group's own."""
    return f"{group_id(config, pipeline)}.changelog"


def model_topic(config: Config, pipeline: Pipeline) -> str:
    """The compacted topic, of one partition, where the trainer of a group publishes each model version."""
    return f"{group_id(config, pipeline)}.model"


def topics_of(config: Config, pipeline: Pipeline) -> list[tuple[str, int]]:
    """Every topic the pipeline needs, with its partition count: input, output and dead letters; with
    checkpoint.changelog also its changelog (a partition per input partition) and its model topic (one)."""
    topics = [pipeline.input_topic, pipeline.output_topic, pipeline.dead_letter_topic]
    if not pipeline.checkpoint.changelog:
        return [(name, pipeline.partitions) for name in topics]
    topics.append(changelog_topic(config, pipeline))
    return [(name, pipeline.partitions) for name in topics] + [(model_topic(config, pipeline), 1)]


def compacted_topics(config: Config, pipeline: Pipeline) -> list[str]:
    """The topics of `topics_of` that keep only each key's newest record: the changelog and the model topic."""
    if not pipeline.checkpoint.changelog:
        return []
    return [changelog_topic(config, pipeline), model_topic(config, pipeline)]


def model_spec(pipeline: Pipeline) -> ModelSpec:
    """The network a pipeline configures: inputs are scaled target, covariates, calendar features."""
    m = pipeline.model
    return ModelSpec(
        cell=m.cell,
        input_size=pipeline.input_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        horizon=pipeline.horizon,
        dropout=m.dropout,
        layer_norm=m.layer_norm,
        residual=m.residual,
        nonlinearity=m.nonlinearity,
        quantiles=m.quantiles,
        highway=m.highway,
        season=m.season or 0,
        attention=m.attention,
    )


def seeded_model(pipeline: Pipeline) -> Forecaster:
    """Fresh weights from the pipeline's seed, identical on every run."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(pipeline.model.seed)
    try:
        return Forecaster(model_spec(pipeline))
    finally:
        torch.random.set_rng_state(generator_state)


def spill(pipeline: Pipeline, model: Forecaster, path: Path | None) -> Spill | None:
    """The pipeline's spill for evicted series: rows of state, moments and count, plus 3 exact values."""
    features = 1 + len(pipeline.record.covariates)
    wide = model.spec.num_layers * model.state_width + 2 * features + 1
    if pipeline.spill == "memory":
        return MemorySpill(wide, 3, pipeline.spill_max_bytes)
    if pipeline.spill == "disk":
        if path is None:
            raise ValueError("spill: disk needs a file path (the pipeline's folder in state_dir)")
        return DiskSpill(path, wide, 3)
    return None


def engine(
    pipeline: Pipeline,
    model: Forecaster,
    device: torch.device | str = "cpu",
    model_version: int = 0,
    spill_path: Path | None = None,
) -> Engine:
    """An engine serving `model` for `pipeline`, with the spill its settings name."""
    return Engine(pipeline, model, device, model_version, spill=spill(pipeline, model, spill_path))


def starting_model(config: Config, pipeline: Pipeline) -> tuple[Forecaster, int]:
    """The pipeline's starting weights and their version: the weights file if configured, else seeded."""
    if pipeline.model.weights is None:
        return seeded_model(pipeline), 0
    model, metadata = load_model(config.resolve(pipeline.model.weights), expected=model_spec(pipeline))
    return model, int(metadata.get("version", 1))


def build_engine(
    config: Config, pipeline: Pipeline, device: torch.device | str, model: Forecaster | None = None, version: int = 0
) -> Engine:
    """The pipeline's engine serving `model` as `version`; without a model, its starting weights."""
    if model is None:
        model, version = starting_model(config, pipeline)
    return engine(pipeline, model, device, version, pipeline_dir(config, pipeline) / "spill.sqlite")


def save_model(path: str | Path, model: Forecaster, metadata: dict | None = None) -> Path:
    """Write `model`'s spec and weights as a weights file (io/checkpoint.py)."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_weights(path, dataclasses.asdict(model.spec), state_dict, metadata)


def model_bytes(model: Forecaster, metadata: dict | None = None) -> bytes:
    """`save_model`'s file as bytes, for a model topic's record."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return weights_bytes(dataclasses.asdict(model.spec), state_dict, metadata)


def load_model(path: str | Path, expected: ModelSpec | None = None) -> tuple[Forecaster, dict]:
    """Read a weights file into a model; if `expected` is given the file's spec must equal it."""
    return _model_of(read_weights(path), path, expected)


def model_from_bytes(data: bytes, where: str, expected: ModelSpec | None = None) -> tuple[Forecaster, dict]:
    """`load_model` of a weights file's bytes read from `where`."""
    return _model_of(parse_weights(data, where), where, expected)


def _model_of(weights: tuple[dict, dict, dict], path, expected: ModelSpec | None) -> tuple[Forecaster, dict]:
    """A weights file's (spec, state dict, metadata) as a model and its metadata; its spec must be `expected`."""
    spec_fields, state_dict, metadata = weights
    spec = ModelSpec(**spec_fields)
    if expected is not None and spec != expected:
        raise ConfigError(
            f"{path}: the weights are for another model than the pipeline configures ({changes(spec, expected)}); "
            "rerun `forecaster pretrain` or fix the pipeline's model section"
        )
    model = Forecaster(spec)
    model.load_state_dict(state_dict)
    return model, metadata
