"""Pretraining: fit a pipeline's seeded model offline on a dataset and write its starting weights.

The effects around the pure TBPTT of tbptt.py: reading the dataset (through JSON and
`records.decode`, so training sees what the daemon sees), the clock, the weights file.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.config import Config, Pipeline, Training
from forecaster.errors import ConfigError
from forecaster.io import datasets
from forecaster.learning import distill, prune
from forecaster.learning.tbptt import Series, evaluate, fit, head, prepare
from forecaster.serving import records
from forecaster.serving.cadence import Cadence
from forecaster.serving.model import Forecaster
from forecaster.serving.records import Observations


def pretrain(
    config: Config,
    pipeline: Pipeline,
    *,
    dataset: str | None = None,
    payloads: Sequence[bytes] | None = None,
    source: str | None = None,
    init: Path | None = None,
    prune_from: Path | None = None,
    prune_by: str = "magnitude",
    teacher: Path | None = None,
    out: Path | None = None,
    steps: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Fit a pipeline's model on the leading part of a dataset, score the rest, save the weights.

    The data is a bundled dataset (`dataset`, else training.dataset) or `payloads`, the JSON
    records of a file or a topic that `source` names. Either way it goes through
    `records.decode`, so training sees what the daemon sees. Training starts from the seeded
    model, or from the weights file `init` (`forecaster models export`, an earlier pretrain; it
    must fit the pipeline's model): a model pretrained elsewhere goes on learning from this data;
    or from the weights file `prune_from`, a wider network of the same kind cut down to the
    pipeline's model.hidden_size (prune.py, units chosen by `prune_by`), which training then
    fine-tunes. With `teacher`, a weights file of any network with the pipeline's inputs and
    outputs, the model also learns the teacher's forecasts (distill.py, training.teacher_weight).
    Returns the saved metadata plus "path" and "seconds".
    """
    began = time.perf_counter()
    if payloads is None:
        name = _dataset_name(config, pipeline, dataset)
        payloads, label = dataset_payloads(name), f"dataset {name}"
    else:
        name = label = source or "records"
    training = pipeline.training if steps is None else dataclasses.replace(pipeline.training, steps=steps)
    series = prepare(pipeline, _observations(pipeline, label, payloads))
    fraction = training.train_fraction
    heads = [head(s, int(fraction * len(s))) for s in series]
    _check_window(config, pipeline, training, label, heads)
    model = _starting_model(pipeline, init, prune_from, prune_by, heads)
    if teacher is not None:
        heads = distill.taught(_teacher(pipeline, teacher), heads, device)
    losses = fit(model, heads, training, device=device, progress=progress)
    scores = evaluate(model, series, device, warmup_fraction=fraction)
    metadata = {
        "dataset": name,
        "steps": training.steps,
        "final_loss": losses[-1],
        "model_mae": scores["model_mae"],
        "naive_mae": scores["naive_mae"],
        "last_value_mae": scores["last_value_mae"],
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if init is not None:
        metadata["init"] = str(init)
    if prune_from is not None:
        metadata.update(pruned_from=str(prune_from), pruned_by=prune_by)
    if teacher is not None:
        metadata.update(teacher=str(teacher), teacher_weight=training.teacher_weight)
    path = save_model(out or _default_weights(config, pipeline), model.cpu(), metadata=metadata)
    return {**metadata, "path": str(path), "seconds": time.perf_counter() - began}


def _starting_model(
    pipeline: Pipeline, init: Path | None, prune_from: Path | None, prune_by: str, heads: list[Series]
) -> Forecaster:
    """The seeded model, the weights `init`, or the weights `prune_from` pruned to the pipeline's model."""
    if init is not None and prune_from is not None:
        raise ConfigError(f"expected one starting point, got both init {init} and prune_from {prune_from}")
    if prune_from is None:
        return seeded_model(pipeline) if init is None else load_model(init, expected=model_spec(pipeline))[0]
    wide, _ = load_model(prune_from)
    try:
        return prune.pruned(wide, model_spec(pipeline), prune_by, heads)
    except ValueError as error:
        raise ConfigError(f"{prune_from}: cannot prune to pipeline {pipeline.name}'s model: {error}") from None


def _teacher(pipeline: Pipeline, path: Path) -> Forecaster:
    """The teacher's network from its weights file, if the pipeline's model can imitate its outputs."""
    teacher, _ = load_model(path)
    try:
        distill.check_teacher(teacher.spec, model_spec(pipeline))
    except ValueError as error:
        raise ConfigError(f"{path}: cannot teach pipeline {pipeline.name}'s model: {error}") from None
    return teacher


def _dataset_name(config: Config, pipeline: Pipeline, dataset: str | None) -> str:
    """The bundled dataset to pretrain on: the one named for this run, else training.dataset."""
    if dataset is None:
        check_dataset(config, pipeline)
    name = dataset or pipeline.training.dataset
    if name is None:
        raise ConfigError(
            f"{config.pipeline_file(pipeline)}: training.dataset: expected a dataset to pretrain on "
            f"(one of {', '.join(datasets.NAMES)}), got null; set it or name one for this run (or --file, --topic)"
        )
    return name


def check_dataset(config: Config, pipeline: Pipeline) -> None:
    """training.dataset names a dataset pretrain can read, or none: a typo fails `forecaster check`, not a pretrain.

    Checked here rather than at load: the configuration knows no datasets (they are io's).
    """
    name = pipeline.training.dataset
    if name is not None and name not in datasets.NAMES:
        raise ConfigError(
            f"{config.pipeline_file(pipeline)}: training.dataset: expected one of {', '.join(datasets.NAMES)}, "
            f"got {name!r}"
        )


def dataset_payloads(name: str) -> list[bytes]:
    """A bundled dataset's records encoded to JSON, as replay publishes them."""
    try:
        loaded = datasets.load(name)
    except (OSError, ValueError) as error:  # no data folder, a missing file, a malformed row
        raise ConfigError(f"dataset {name}: {error}") from None
    return [json.dumps(record).encode() for record in loaded.records]


def _observations(pipeline: Pipeline, label: str, payloads: Sequence[bytes]) -> Observations:
    """JSON records decoded with the pipeline's record format; one that does not fit is an error, not skipped.

    A record with a null value (a missing reading) is left out: training takes each series' rows in
    time order, so it learns across it as across a record that never came, where a NaN would make
    every weight NaN."""
    observations, rejected = records.decode(payloads, pipeline.record)
    if rejected:
        first = rejected[0]
        raise ConfigError(
            f"{label}: {len(rejected)} of {len(payloads)} records do not fit pipeline "
            f"{pipeline.name}'s record format (first, at {first.position}: {first.reason}: {first.detail})"
        )
    observed = observations.take(~np.isnan(observations.values).any(axis=1))
    return records.localised(observed, Cadence.of(pipeline))  # calendar features read in the cadence's zone


def _check_window(config: Config, pipeline: Pipeline, training: Training, label: str, heads: list[Series]) -> None:
    """A training window must fit in the longest series' training part, or no window can be drawn."""
    longest = max((len(s) for s in heads), default=0)
    if training.window > longest:
        raise ConfigError(
            f"{config.pipeline_file(pipeline)}: training.window: expected at most the {longest} steps that "
            f"train_fraction {training.train_fraction:g} leaves of {label}'s longest series, "
            f"got {training.window}"
        )


def _default_weights(config: Config, pipeline: Pipeline) -> Path:
    """model.weights from the pipeline file, else <state_dir>/<pipeline>.pt."""
    if pipeline.model.weights is not None:
        return config.resolve(pipeline.model.weights)
    return config.resolve(config.settings.state_dir) / f"{pipeline.name}.pt"
