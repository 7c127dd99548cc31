"""`forecaster models list | rollback | export`: a pipeline's kept versions, read and acted on from outside the daemon.

The daemon keeps them (learning/history.py); these read its state folder, write a rollback
request the daemon applies between batches, and write a version as a weights file that
`model.weights` of another daemon or `forecaster pretrain --init` loads.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from forecaster.app import Checkpoints
from forecaster.build import load_model, model_spec, pipeline_dir, save_model
from forecaster.config import Config, Pipeline
from forecaster.errors import ForecasterError
from forecaster.learning.history import FOLDER, ModelHistory
from forecaster.serving.model import Forecaster, ModelSpec


def history_of(config: Config, pipeline: Pipeline) -> ModelHistory:
    return ModelHistory(pipeline_dir(config, pipeline) / FOLDER, pipeline.retraining.keep_versions)


def serving(config: Config, pipeline: Pipeline) -> tuple[int, Forecaster, str] | None:
    """The version the newest checkpoint serves, its model and the checkpoint's name; None without a checkpoint."""
    found = Checkpoints(pipeline_dir(config, pipeline), pipeline).newest()
    if found is None:
        return None
    payload, path = found
    saved = payload["engine"]["model"]
    model = Forecaster(ModelSpec(**saved["spec"]))
    model.load_state_dict(saved["state_dict"])
    return int(saved["version"]), model, path.name


def listing(config: Config, pipeline: Pipeline) -> list[str]:
    """The lines `models list` prints for a pipeline: what serves, each kept version, a pending request."""
    history, served = history_of(config, pipeline), serving(config, pipeline)
    version = None if served is None else served[0]
    head = "no checkpoint" if served is None else f"version {version} serves (in {served[2]})"
    kept = history.versions()
    lines = [f"{pipeline.name}: {head}; {len(kept)} versions kept in {history.folder}"]
    for entry in kept:
        mark = "*" if entry.version == version else " "
        scores = f"; {entry.describe()}" if entry.describe() else ""
        lines.append(f" {mark} version {entry.version}  {entry.time}  {entry.source}{scores}")
    pending = history.pending()
    if pending is not None:
        lines.append(f"  rollback to version {pending} requested: applied between batches, or at the next start")
    return lines


def request_rollback(config: Config, pipeline: Pipeline, version: int) -> str:
    """Ask the pipeline's daemon to serve kept `version` again (a ForecasterError if it cannot); what follows, in
    words."""
    history = history_of(config, pipeline)
    if not history.holds(version):
        kept = ", ".join(str(k.version) for k in history.versions()) or "none"
        raise ForecasterError(f"{pipeline.name}: version {version} is not kept in {history.folder} (kept: {kept})")
    load_model(history.path(version), expected=model_spec(pipeline))  # a ConfigError if the model changed since
    history.request(version)
    return (
        f"{pipeline.name}: rollback to version {version} requested ({history.request_path}): a running daemon serves "
        "it between batches within seconds, a stopped one at its next start, as the next model version with every "
        "series' state re-synchronised"
    )


def export(config: Config, pipeline: Pipeline, out: Path, version: int | None = None) -> str:
    """Write `version` (default: the one the newest checkpoint serves) as a weights file with the pipeline's model
    section; loadable as `model.weights` and by `forecaster pretrain --init`. What it wrote, in words."""
    history, served = history_of(config, pipeline), serving(config, pipeline)
    if version is None and served is None:
        raise ForecasterError(f"{pipeline.name}: no checkpoint in {pipeline_dir(config, pipeline)}: name a --version")
    version = served[0] if version is None else version
    if history.holds(version):
        model, metadata = load_model(history.path(version))
        source = next(k.source for k in history.versions() if k.version == version)
    elif served is not None and served[0] == version:
        model, metadata, source = served[1], {}, f"checkpoint {served[2]}"
    else:
        kept = ", ".join(str(k.version) for k in history.versions()) or "none"
        raise ForecasterError(f"{pipeline.name}: version {version} is neither kept nor served (kept: {kept})")
    section = {k: v for k, v in dataclasses.asdict(pipeline.model).items() if k not in ("weights", "weights_policy")}
    metadata = {
        **metadata,
        "version": version,
        "pipeline": pipeline.name,
        "source": source,
        "model": section,
        "horizon": pipeline.horizon,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = save_model(out, model, metadata)
    return f"{pipeline.name}: wrote version {version} ({source}) to {path}"
