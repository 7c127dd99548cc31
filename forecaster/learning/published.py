"""One model across a group's members: a model version as a model-topic record, and adopting one. No Kafka here.

With checkpoint.changelog one member trains (the owner of input partition 0) and publishes
each round's result to the pipeline's model topic; every member serves what it reads there.
A record is a weights file's bytes (io/checkpoint.py) whose metadata holds the version, the
interval calibration that goes with it (the widenings `Engine.calibrate` averages) and how many
records were published before it (its sequence). A rejected round publishes the serving version
again, newly calibrated, so every member's intervals agree.

Versions only increase: a record older, by (version, sequence), than the one served is ignored,
one of the same version changes the calibration only, a newer version is installed with every
series' state re-synchronised (resync.py), as a promotion does on the member that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forecaster.build import model_bytes, model_from_bytes
from forecaster.learning.resync import install
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster, ModelSpec


@dataclass(frozen=True)
class Published:
    """One version as its trainer published it."""

    version: int
    sequence: int  # records published before this one
    model: Forecaster
    widenings: tuple[torch.Tensor, ...]

    @property
    def order(self) -> tuple[int, int]:
        return self.version, self.sequence


def encode(engine: Engine, sequence: int) -> bytes:
    """The record of what `engine` serves, weights, version and calibration, after `sequence` others."""
    metadata = {"version": engine.model_version, "sequence": sequence, "widenings": engine.widenings}
    return model_bytes(engine.model, metadata)


def decode(value: bytes, spec: ModelSpec, where: str) -> Published:
    """A record read from `where` (a topic's name); a ConfigError if its model is not `spec`."""
    model, metadata = model_from_bytes(value, where, expected=spec)
    return Published(int(metadata["version"]), int(metadata["sequence"]), model, tuple(metadata["widenings"]))


def newest(values: list[bytes], spec: ModelSpec, where: str) -> Published | None:
    """The newest of the records `values` by (version, sequence); None for none."""
    return max((decode(value, spec, where) for value in values), key=lambda p: p.order, default=None)


def adopt(engine: Engine, published: Published, served: int, resync_steps: int) -> bool:
    """Serve `published` unless it is older than what the engine serves after `served` records (see the
    module's docstring); True when the version changed. Between batches, from the thread that steps."""
    if published.order <= (engine.model_version, served):
        return False
    changed = published.version > engine.model_version
    if changed:
        install(engine, published.model, published.version, resync_steps)
    engine.recalibrate(published.widenings)
    return changed
