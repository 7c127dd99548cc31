"""One model across a group's members, the run loop's side (with checkpoint.changelog and retraining).

The owner of input partition 0 trains and publishes each round's result to the pipeline's model
topic (learning/published.py); every member, that one too, serves what is published there:
  - on starting, before its first batch, the newest version (`join`);
  - between batches, any newer version a watcher thread has read meanwhile (`follow`);
  - on taking a partition over whose series ran a newer version than it serves, that version
    first (`catch_up_with`), so no series' version ever goes back; series that ran an older
    one are re-synchronised under the serving model (`restored`).
Each partition keeps the input offsets at which it switched versions, in its changelog record,
so a run can be replayed exactly.
"""

from __future__ import annotations

import logging
import threading

from forecaster.config import Pipeline
from forecaster.io.clients import ModelTopic
from forecaster.learning import published
from forecaster.learning.resync import refresh
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine
from forecaster.serving.handover import Restored

log = logging.getLogger(__name__)

TRAINING_PARTITION = 0  # its owner trains: its series are a hash sample of all
WATCH_EVERY_S = 1.0  # how often the watcher reads the model topic


class ModelSharing:
    """A member's published versions: adopting them, publishing its own, and each partition's switches."""

    def __init__(self, pipeline: Pipeline, engine: Engine, topic: ModelTopic, metrics: Metrics):
        self.pipeline, self.engine, self.topic, self.metrics = pipeline, engine, topic, metrics
        self.sequence = -1  # the sequence of the record served; -1: none yet
        self.switches: dict[int, list[tuple[int, int]]] = {}  # partition -> (version, input offset) switches

    def join(self, stop: threading.Event) -> None:
        """Serve the newest published version, then watch for newer ones."""
        self.catch_up({})
        self.topic.watch(WATCH_EVERY_S, stop)

    def follow(self, offsets: dict[int, int]) -> None:
        """Serve what the watcher found, if newer; the partitions switch at `offsets`. Between batches."""
        self._adopt(self.topic.take(), offsets)

    def catch_up(self, offsets: dict[int, int]) -> None:
        """`follow`, reading the model topic to its end now."""
        self._adopt(self.topic.read_new(), offsets)

    def may_publish(self, owned: set[int], version: int, offsets: dict[int, int]) -> bool:
        """Whether a round that started from `version` may serve and publish its result: only while this member
        trains, and only if no other member published a version since (versions only increase)."""
        if TRAINING_PARTITION not in owned:
            log.info("pipeline %s: a round ended after partition 0 moved on: not published", self.pipeline.name)
            return False
        self.catch_up(offsets)
        if self.engine.model_version != version:
            log.info(
                "pipeline %s: a round from version %d ended after version %d was published: not published",
                self.pipeline.name,
                version,
                self.engine.model_version,
            )
            return False
        return True

    def publish(self, stop: threading.Event) -> None:
        """Publish what the engine serves (after a round), and wait until Kafka has it."""
        self.sequence += 1
        self.topic.publish(published.encode(self.engine, self.sequence), stop)
        log.info("pipeline %s: published version %d", self.pipeline.name, self.engine.model_version)

    def switched(self, offsets: dict[int, int]) -> None:
        """The engine serves a new version from `offsets` on (partition -> next input offset)."""
        for partition, offset in offsets.items():
            self.switches.setdefault(partition, []).append((self.engine.model_version, offset))
        self.metrics.model_version.labels(self.pipeline.name).set(self.engine.model_version)

    def catch_up_with(self, version: int, offsets: dict[int, int]) -> None:
        """Before restoring a partition whose series ran `version`: serve it (or newer) first, if it is newer than
        what is served, so their versions never go back."""
        if version > self.engine.model_version:
            self.catch_up(offsets)

    def restored(self, partition: int, restored: Restored, offsets: dict[int, int]) -> None:
        """A partition was taken over: re-synchronise its series that ran an older version than is served, and
        take its switches on, adding this one if it ran an older version."""
        self.switches[partition] = list(restored.switches)
        version = self.engine.model_version
        stale = [key for key, ran in restored.versions.items() if ran < version]
        refresh(self.engine, self.engine.store.lookup(stale), self.pipeline.retraining.resync_steps)
        behind = restored.version is not None and restored.version < version
        if behind and partition in offsets:
            self.switches[partition].append((version, offsets[partition]))
        if stale:
            log.info("pipeline %s: %d series re-synchronised to version %d", self.pipeline.name, len(stale), version)

    def forget(self, partitions) -> None:
        for partition in partitions:
            self.switches.pop(partition, None)

    def _adopt(self, values: list[bytes], offsets: dict[int, int]) -> None:
        found = published.newest(values, self.engine.model.spec, self.topic.topic)
        if found is None:
            return
        before = self.engine.model_version
        if published.adopt(self.engine, found, self.sequence, self.pipeline.retraining.resync_steps):
            self.switched(offsets)
            log.info("pipeline %s: serving published version %d (was %d)", self.pipeline.name, found.version, before)
        self.sequence = max(self.sequence, found.sequence)
