"""Model weights on disk: written atomically, read without executing code.

A weights file holds the ModelSpec (as plain values), the state dict and a little
metadata. It is loaded with `torch.load(weights_only=True)`, so a tampered file is an
error, never code that runs.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from ..errors import ForecasterError
from ..model import Forecaster, ModelSpec

FORMAT = "forecaster.weights/1"


def save_weights(path: str | Path, model: Forecaster, metadata: dict | None = None) -> Path:
    """Write the model atomically: temporary file, fsync, rename; owner-only permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "spec": dataclasses.asdict(model.spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | Path, expected: ModelSpec | None = None) -> tuple[Forecaster, dict]:
    """Read a weights file into a model; if `expected` is given the file's spec must equal it."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ForecasterError(f"{path}: weights file not found") from None
    except Exception as error:  # unpickling refused, truncated file, not a torch file
        raise ForecasterError(f"{path}: not a readable forecaster weights file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ForecasterError(f"{path}: not a forecaster weights file (expected format {FORMAT})")
    spec = ModelSpec(**payload["spec"])
    if expected is not None and spec != expected:
        raise ForecasterError(f"{path}: weights are for {_describe(spec)}, but the pipeline configures {_describe(expected)}; "
                              "rerun `forecaster pretrain` or fix the pipeline's model section")
    model = Forecaster(spec)
    model.load_state_dict(payload["state_dict"])
    return model, payload.get("metadata", {})


def _describe(spec: ModelSpec) -> str:
    fields = dataclasses.asdict(spec)
    return ", ".join(f"{k}={v}" for k, v in fields.items())
