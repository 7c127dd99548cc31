"""Model weights and pipeline checkpoints on disk: written atomically, read without executing code.

A weights file holds the ModelSpec (as plain values), the state dict and a little
metadata. A checkpoint holds everything a pipeline needs to resume exactly: weights and
version, every series' state, and the input offsets that state reflects; it carries a
SHA-256 of its body, so a torn or corrupted file is detected and skipped for the previous
one. Both are loaded with `torch.load(weights_only=True)`, so a tampered file is an
error, never code that runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

from ..errors import ForecasterError
from ..model import Forecaster, ModelSpec

FORMAT = "forecaster.weights/1"
CHECKPOINT_MAGIC = b"forecaster.checkpoint/1 sha256="
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d{12})\.pt")

log = logging.getLogger(__name__)


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
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomically(path, buffer.getvalue())


def write_atomically(path: Path, data: bytes) -> Path:
    """Temporary file, fsync, rename, fsync of the folder: a crash leaves the old file or the new, never half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o600)  # owner only: checkpoints hold the model and every series' state
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
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


def save_checkpoint(folder: str | Path, payload: dict, keep: int = 3) -> Path:
    """Write the next numbered checkpoint in `folder` (checksummed, atomic), keeping the newest `keep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = _checkpoints(folder)
    number = int(_CHECKPOINT_NAME.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = CHECKPOINT_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    path = write_atomically(folder / f"checkpoint-{number:012d}.pt", header + body)
    for old in _checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest checkpoint that verifies, or None; each bad one is reported and skipped."""
    for path in reversed(_checkpoints(Path(folder))):
        try:
            return read_checkpoint(path), path
        except ForecasterError as error:
            log.error("skipping checkpoint %s: %s", path, error)
    return None


def read_checkpoint(path: Path) -> dict:
    """One checkpoint, verified against its checksum, loaded without executing code."""
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    if not header.startswith(CHECKPOINT_MAGIC):
        raise ForecasterError("not a forecaster checkpoint")
    if hashlib.sha256(body).hexdigest().encode() != header[len(CHECKPOINT_MAGIC):]:
        raise ForecasterError("checksum mismatch (torn or corrupted)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused: not plain tensors and containers
        raise ForecasterError(f"refused to load: {error}") from None


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name))
