"""A pipeline's model history: the last versions it served, and an operator's request to roll back to one.

<state_dir>/<pipeline>/models/ holds
  v<N>.pt        the weights of version N (a weights file, io/checkpoint.py) with the interval
                 calibration they were served with;
  index.json     each kept version: when it began to serve, where it came from (a promotion, a
                 rollback, a configured weights file) and the held-out losses its round measured;
                 and the digest of the configured `model.weights` file the pipeline last adopted;
  rollback.json  a request of `forecaster models rollback`, which the run loop applies between
                 batches (a running daemon within seconds, else the next start), then removes.
Versions only increase, in forecasts, metrics and the model topic alike: a rollback serves the old
weights as the next version ("rolled back to version 3 as version 8"), every series' state
re-synchronised through them (resync.py) as after a promotion.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from forecaster.build import load_model, save_model
from forecaster.config import Pipeline
from forecaster.errors import ForecasterError
from forecaster.io.checkpoint import write_atomically
from forecaster.learning.resync import install
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster

log = logging.getLogger(__name__)

FOLDER = "models"
CHECK_EVERY_S = 2.0  # how often a running loop looks for a rollback request


@dataclass(frozen=True)
class Kept:
    """One version in the history."""

    version: int
    time: str  # when it began to serve, ISO-8601 UTC
    source: str  # where it came from, in words
    scores: dict[str, float] = field(default_factory=dict)  # held-out losses of the round that promoted it

    def describe(self) -> str:
        """The scores in words: 'held-out loss 0.41 (was 0.43)', or '' without a round."""
        if "challenger_loss" not in self.scores:
            return ""
        return f"held-out loss {self.scores['challenger_loss']:.4g} (was {self.scores['champion_loss']:.4g})"


class ModelHistory:
    """The files of one pipeline's models folder (see the module's docstring); `keep` versions at most."""

    def __init__(self, folder: Path, keep: int, check_every_s: float = CHECK_EVERY_S):
        self.folder, self.keep, self.check_every_s = Path(folder), keep, check_every_s
        self._checked = -math.inf

    # -- versions -----------------------------------------------------------------------------------------

    def versions(self) -> list[Kept]:
        """The versions kept, newest first."""
        return [Kept(**entry) for entry in self._index()["versions"]]

    def holds(self, version: int) -> bool:
        return any(kept.version == version for kept in self.versions())

    def next_version(self, serving: int) -> int:
        """The version new weights serve as: above the serving one and every one kept, so none repeats."""
        return max([serving, *(kept.version for kept in self.versions())]) + 1

    def add(self, model: Forecaster, version: int, source: str, scores: dict | None = None, widenings=()) -> None:
        """Keep `model` as `version`, then drop the oldest beyond `keep`; nothing with keep 0. A full disk or a
        read-only folder is logged, not raised: the history serves rollbacks, never the forecasts."""
        if self.keep == 0:
            return
        try:
            self._add(model, version, source, scores, widenings)
        except OSError as error:
            log.error("%s: could not keep version %d (%s): it cannot be rolled back to", self.folder, version, error)

    def _add(self, model: Forecaster, version: int, source: str, scores: dict | None, widenings) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        metadata = {"version": version, "source": source, "widenings": [w.cpu() for w in widenings]}
        save_model(self.path(version), model, metadata)
        kept = Kept(version, datetime.now(UTC).isoformat(timespec="seconds"), source, dict(scores or {}))
        index = self._index()
        entries = [asdict(kept)] + [e for e in index["versions"] if e["version"] != version]
        entries.sort(key=lambda e: -e["version"])
        for old in entries[self.keep :]:
            self.path(old["version"]).unlink(missing_ok=True)
        self._write({**index, "versions": entries[: self.keep]})

    def load(self, version: int, engine: Engine) -> tuple[Forecaster, list]:
        """Version `version`'s model and calibration; a ForecasterError if it is not kept or not the engine's model."""
        if not self.holds(version):
            kept = ", ".join(str(k.version) for k in self.versions()) or "none"
            raise ForecasterError(f"{self.folder}: version {version} is not kept (kept: {kept})")
        model, metadata = load_model(self.path(version), expected=engine.model.spec)
        return model, list(metadata.get("widenings", []))

    def path(self, version: int) -> Path:
        return self.folder / f"v{version}.pt"

    # -- the configured weights file ---------------------------------------------------------------------------

    def configured_digest(self) -> str | None:
        """The SHA-256 of the `model.weights` file the pipeline last adopted, or None if none is recorded."""
        return self._index().get("configured")

    def note_configured(self, digest: str) -> None:
        if self._index().get("configured") != digest:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._write({**self._index(), "configured": digest})

    # -- rollback requests -----------------------------------------------------------------------------------

    @property
    def request_path(self) -> Path:
        return self.folder / "rollback.json"

    def request(self, version: int) -> Path:
        """Ask the pipeline's run loop to serve kept version `version` again."""
        requested = {"version": version, "requested_at": datetime.now(UTC).isoformat(timespec="seconds")}
        return write_atomically(self.request_path, json.dumps(requested).encode())

    def requested(self) -> int | None:
        """The version a pending request names, or None; reads the folder at most every `check_every_s` seconds."""
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return None
        self._checked = now
        return self.pending()

    def pending(self) -> int | None:
        """The version a pending request names, or None (an unreadable request is reported and dropped)."""
        try:
            return int(json.loads(self.request_path.read_text())["version"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            log.error("%s: not a rollback request (%s); removed", self.request_path, error)
            self.done()
            return None

    def done(self) -> None:
        self.request_path.unlink(missing_ok=True)

    def _index(self) -> dict:
        try:
            return json.loads((self.folder / "index.json").read_text())
        except FileNotFoundError:
            return {"versions": []}

    def _write(self, index: dict) -> None:
        write_atomically(self.folder / "index.json", json.dumps(index, indent=1).encode())


def promoted(history: ModelHistory, champion: Forecaster, champion_version: int, engine: Engine, outcome) -> None:
    """Keep a round's promoted challenger, which `engine` now serves, with its held-out losses; and the champion it
    replaced, if not kept yet (the starting weights, say), so a rollback can return to it."""
    if not history.holds(champion_version):
        history.add(champion, champion_version, "served before the first promotion kept")
    scores = {
        "champion_loss": outcome.champion_loss,
        "challenger_loss": outcome.challenger_loss,
        "challenger_point_loss": outcome.challenger_point_loss,
        "expert_loss": outcome.expert_loss,
    }
    source = f"promoted over version {champion_version}"
    history.add(engine.model, engine.model_version, source, scores, engine.widenings)


def roll_back(engine: Engine, history: ModelHistory, version: int, pipeline: Pipeline) -> int:
    """Serve kept `version` again as the next version, every series' state re-synchronised over
    retraining.resync_steps buffered steps, with the calibration it was served with; returns the new version.
    Between batches, from the thread that steps."""
    model, widenings = history.load(version, engine)
    was, new = engine.model_version, history.next_version(engine.model_version)
    started = time.perf_counter()
    install(engine, model, new, pipeline.retraining.resync_steps)
    engine.recalibrate(widenings)
    history.add(model, new, f"rolled back to version {version}", widenings=widenings)
    log.info(
        "pipeline %s: rolled back to version %d as version %d (was serving %d); %d series re-synchronised in %.2f s",
        pipeline.name,
        version,
        new,
        was,
        len(engine.store),
        time.perf_counter() - started,
    )
    return new
