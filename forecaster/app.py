"""The daemon: one run loop per pipeline, checkpoints tied to offsets, HTTP endpoints, a clean stop.

Each pipeline's loop reads like its data flow:
    poll -> decode -> step -> produce forecasts and dead letters -> acknowledged
         -> (every N records or T seconds) checkpoint state with offsets -> commit offsets
         -> (with retraining) install a finished round's winner; hand windows to the next round
Offsets are committed only once a checkpoint holding the state they reflect is durable. In exactly-once mode
(io/transactions.py) a checkpoint commits, per input partition, one transaction of forecasts, state and offsets.
After a crash the daemon restores the newest valid checkpoint and resumes at its offsets:
the records since then are consumed again (their forecasts may be produced twice, never
lost) and every series' state ends up exactly as if nothing had happened.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from forecaster import process
from forecaster.build import changelog_topic, group_id, model_topic, pipeline_dir, resolve_device, topics_of
from forecaster.config import Config, Pipeline
from forecaster.delivery import Delivery
from forecaster.errors import Cancelled, ConfigError, DeliveryError, ForecasterError, TransactionError, Undeliverable
from forecaster.io.checkpoint import failure_reason, load_latest_checkpoint, lock_folder, save_checkpoint
from forecaster.io.checkpoint_writer import FORK, CheckpointWriter, Written
from forecaster.io.clients import (
    ChangelogTopic,
    ModelTopic,
    make_sink,
    make_source,
    missing_topics,
    partition_count,
)
from forecaster.io.http import StatusServer
from forecaster.io.messages import Message, Polled, Sending, Sink, Source
from forecaster.io.transactions import Transactions, read_committed
from forecaster.learning import history, migration, rounds
from forecaster.learning.rollback import Rollback
from forecaster.learning.trainer import Finished, Trainer
from forecaster.metrics import Metrics
from forecaster.serving import handover, records
from forecaster.serving.engine import Engine, Forecasts
from forecaster.sharing import TRAINING_PARTITION, ModelSharing
from forecaster.stages import Stages
from forecaster.words import counted

log = logging.getLogger(__name__)

_SUMMARY_EVERY_S = 60.0
_CONTACT_CHECK_EVERY_S = 1.0
_STALLED_AFTER_S = 10.0  # a loop that has not polled for this long (stuck delivering, say) is not healthy
STUCK_AFTER_S = 300.0  # a batch in hand this long (an outage, a hung checkpoint) fails /healthz: restart the process
CHECKPOINT_FORMAT = "forecaster.pipeline-checkpoint/2"


class Checkpoints:
    """A pipeline's checkpoint schedule and files: state plus the offsets it reflects."""

    def __init__(self, folder: Path, pipeline: Pipeline):
        self.folder, self.settings, self.name = folder, pipeline.checkpoint, pipeline.name
        self.records_since = 0
        self._due_at = time.monotonic() + self.settings.every_seconds
        self.last_written_at = float("nan")  # Unix seconds of the newest durable checkpoint; NaN before any
        self.writer: CheckpointWriter | None = None  # made on the first `start`, for the engine's device
        self._snapshot_at = float("nan")  # Unix seconds of the snapshot the write in flight holds

    def due(self) -> bool:
        return self.records_since >= self.settings.every_records or (
            self.records_since > 0 and time.monotonic() >= self._due_at
        )

    def write(self, engine: Engine, offsets: dict[int, int]) -> Path:
        """Write a checkpoint now, in this thread (tools and tests; the run loop uses `start`)."""
        payload = self._payload(engine, offsets, time.time())
        path = save_checkpoint(self.folder, payload, keep=self.settings.keep)
        self.written(payload["written_at"])
        return path

    def start(self, engine: Engine, offsets: dict[int, int]) -> None:
        """Snapshot the state and the `offsets` it reflects now, and write them in the background (`finished`
        says when they are durable); the next checkpoint falls due from now."""
        offsets = dict(offsets)
        if self.writer is None:  # a CUDA engine's state is copied in the loop: a forked child cannot read it
            self.writer = CheckpointWriter(fork=FORK and engine.device.type == "cpu")
        at = time.time()  # the checkpoint's own written_at: the state it holds is this moment's
        self.writer.start(self.folder, lambda: self._payload(engine, offsets, at), self.settings.keep, tag=offsets)
        self._snapshot_at = at
        self.postpone()

    def finished(self, wait: bool = False) -> Written | None:
        """The write in flight once durable (`wait`: wait for it), its tag the offsets it holds; else None; an
        OSError or RuntimeError if it failed."""
        written = None if self.writer is None else self.writer.finished(wait)
        if written is not None:
            self.last_written_at = self._snapshot_at
        return written

    @property
    def writing(self) -> bool:
        return self.writer is not None and self.writer.writing

    def _payload(self, engine: Engine, offsets: dict[int, int], at: float) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "pipeline": self.name,
            "offsets": dict(offsets),
            "written_at": at,
            "engine": engine.snapshot(),
        }

    def written(self, at: float | None = None) -> None:
        """A checkpoint is durable (a file, or the changelog's records), written `at` (Unix seconds; default now):
        the next falls due from now."""
        self.last_written_at = time.time() if at is None else at
        self.postpone()

    def postpone(self) -> None:
        """The next checkpoint falls due a full interval from now (after a write, or a failed one)."""
        self.records_since = 0
        self._due_at = time.monotonic() + self.settings.every_seconds

    def newest(self) -> tuple[dict, Path] | None:
        """The newest checkpoint that verifies and its path, or None; a ForecasterError for another pipeline's."""
        found = load_latest_checkpoint(self.folder)
        if found is None:
            return None
        payload, path = found
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("pipeline") != self.name:
            raise ForecasterError(f"{path}: a checkpoint of {payload.get('pipeline')!r}, not of pipeline {self.name!r}")
        return payload, path

    def load(self) -> dict | None:
        """The newest checkpoint, as the daemon restores it (and logs so), or None."""
        found = self.newest()
        if found is None:
            return None
        payload, path = found
        self.last_written_at = float(payload["written_at"])
        log.info(
            "pipeline %s: restoring %s (%d series, offsets %s)",
            self.name,
            path.name,
            len(payload["engine"]["store"]["keys"]),
            payload["offsets"],
        )
        return payload


@dataclasses.dataclass
class _Handled:
    """What the slices of a poll batch came to: for its metrics, and for the trainer's count."""

    rejected: list[records.Rejected] = dataclasses.field(default_factory=list)
    uncounted: int = 0  # records stepped that the trainer has not counted yet

    def add(self, rejected: list[records.Rejected], uncounted: int) -> None:
        self.rejected += rejected
        self.uncounted += uncounted


class PipelineWorker:
    """One pipeline's run loop. Source and sink are passed in, so the loop runs without Kafka in tests."""

    def __init__(
        self,
        pipeline: Pipeline,
        engine: Engine,
        source: Source,
        sink: Sink,
        metrics: Metrics,
        stop: threading.Event,
        checkpoints: Checkpoints | None = None,
        offsets: dict[int, int] | None = None,
        trainer: Trainer | None = None,
        changelog: ChangelogTopic | None = None,
        sharing: ModelSharing | None = None,
        models: history.ModelHistory | None = None,
        transactions: Transactions | None = None,
    ):
        self.pipeline, self.engine = pipeline, engine
        self.models = models  # the versions kept for rollback, and an operator's rollback request
        # Exactly-once mode: the sink too; a checkpoint commits each partition's transaction, offsets included
        self.transactions = transactions
        # With the changelog: every member serves the versions the owner of partition 0 trains and publishes
        self.sharing = sharing
        # With the changelog: the series' state lives there, the input partitions this member owns come and go
        self.changelog = changelog
        self.owned: set[int] = set()
        self._replaying: dict[int, int] = {}  # partition taken over -> the highest offset its series reflect
        # Held while a batch is stepped and delivered: a revocation writes the state between batches
        self._stepping = threading.Lock()
        if changelog is not None:
            source.on_revoke = self._revoked
        self.trainer = trainer
        # the model the latest promotion replaced, back in service if its successor serves worse than the last value
        self.rollback = Rollback(pipeline.retraining) if trainer is not None else None
        self.source, self.sink = source, sink
        self.delivery = Delivery(pipeline, sink, metrics)  # what Kafka refuses for good is handled there
        # The last slice's messages handed to the producer, its records and its forecasts: Kafka acknowledges them
        # while the loop polls the next batch; only then do the offsets count as done (`_settle`)
        self._unacknowledged: tuple[Sending, Sequence[Polled], int] | None = None
        self.stages = Stages(metrics, pipeline.name)  # where each batch's time goes
        self.metrics, self.stop = metrics, stop
        self.checkpoints = checkpoints
        # partition -> next offset the state reflects; shared with the source, which resumes there on assignment
        self.offsets: dict[int, int] = offsets if offsets is not None else {}
        self.error: BaseException | None = None
        self.last_poll = 0.0
        self.batch_since: float | None = None  # when the batch in hand was polled; None between batches
        self.in_contact = True
        self.assigned = False
        self._contact_checked = 0.0
        self._lost_contact_at = 0.0
        self._ready_logged = False
        self._ahead_warned: dict[int, int] = {}  # partition -> the offset a warning named
        self._evictions_seen = 0
        self._spill_dropped_seen = 0
        self._checkpoint_failures = 0  # in a row: the first is logged, then the recovery
        self._newest_event = float("nan")  # the newest observation's timestamp, Unix seconds
        metrics.model_version.labels(pipeline.name).set(engine.model_version)
        if trainer is not None:  # every outcome exported from the start, at zero, so increase() sees the first
            for outcome in ("started", "promoted", "rejected", "failed"):
                metrics.retrains.labels(pipeline.name, outcome)
            metrics.rollbacks.labels(pipeline.name)
        for field in self._fields():  # likewise every field that may be missing
            metrics.missing_values.labels(pipeline.name, field)
        metrics.key_mismatches.labels(pipeline.name)
        metrics.up.labels(pipeline.name).set_function(lambda: int(self.healthy()))
        metrics.event_time_lag.labels(pipeline.name).set_function(lambda: time.time() - self._newest_event)
        if checkpoints is not None:
            metrics.last_checkpoint.labels(pipeline.name).set_function(lambda: checkpoints.last_written_at)
            for reason in ("disk_full", "not_writable", "io_error"):
                metrics.checkpoint_failures.labels(pipeline.name, reason)

    def healthy(self) -> bool:
        """Assigned partitions, in contact with Kafka, polling (not stuck), not failed.

        Reads only flags the loop keeps, so /readyz and scrapes never touch the consumer
        from another thread.
        """
        return (
            self.assigned
            and self.in_contact
            and self.error is None
            and not self.stop.is_set()
            and time.monotonic() - self.last_poll < _STALLED_AFTER_S
        )

    def live(self) -> bool:
        """Not failed, and not stuck: no batch in hand for longer than STUCK_AFTER_S (for /healthz)."""
        since = self.batch_since
        return self.error is None and (since is None or time.monotonic() - since <= STUCK_AFTER_S)

    def run(self) -> None:
        """Loop until stopped, then checkpoint; an unexpected error is kept for the daemon, which then shuts down."""
        summary_due = time.monotonic() + _SUMMARY_EVERY_S
        try:
            if self.sharing is not None:  # the newest published version, before the first batch
                self.sharing.join(self.stop)
            while not self.stop.is_set():
                self.run_once()
                if time.monotonic() >= summary_due:
                    self._log_summary()
                    summary_due = time.monotonic() + _SUMMARY_EVERY_S
            self.checkpoint(wait=True)  # every batch taken was delivered: the state and offsets agree
            if self.changelog is not None:
                self._keep_locally(self.owned)
        except DeliveryError as error:  # the last batch's forecasts are not out: its records must be read again
            log.warning("pipeline %s: %s; not checkpointing", self.pipeline.name, error)
        except Undeliverable as error:  # said in words; a traceback adds nothing
            log.error("pipeline %s stopped: %s", self.pipeline.name, error)
            self.error = error
        except BaseException as error:  # noqa: BLE001 - reported, then the daemon stops
            log.exception("pipeline %s failed", self.pipeline.name)
            self.error = error
        finally:
            self.last_poll = 0.0  # a finished loop is not healthy
            self._finish_writing()

    def _finish_writing(self) -> None:
        """A loop that ended on an error lets a checkpoint in flight become durable (the next start resumes from
        it), without committing: the source may be what failed."""
        try:
            if self.checkpoints is not None:
                self.checkpoints.finished(wait=True)
        except (OSError, RuntimeError) as error:
            log.error("pipeline %s: the last checkpoint was not written: %s", self.pipeline.name, error)

    def run_once(self) -> int:
        """One poll batch through the whole flow; returns the number of records consumed."""
        with self.stages.timed("poll"):
            polled = self.source.poll(self.pipeline.batching.poll_timeout_ms)
        self.stages.waited(polled, 1000 * time.time())
        self.batch_since = time.monotonic()
        with self._stepping:  # a revocation waits for the batch (`_revoked`)
            consumed = self._flow(polled)
        self.batch_since = None
        if consumed:
            self.metrics.step_seconds.labels(self.pipeline.name).observe(self.stages.seconds["step"])
            self.stages.observe()
        else:  # an empty poll's wait is no batch's; a checkpoint or round started meanwhile delays the next one
            self.stages.idle()
        return consumed

    def _flow(self, polled: list[Polled]) -> int:
        self._settle()  # from here on, as at every checkpoint and revocation, the offsets reflect delivered records
        if self.sharing is not None:
            self.sharing.follow(self.offsets)
        self._maybe_roll_back()
        if self.changelog is not None:
            self._hand_over()
            polled = [r for r in polled if r.partition in self.owned]  # revoked while it was polled: not ours
        self.last_poll = time.monotonic()
        self._watch_contact()
        if not polled:
            self._maybe_checkpoint()
            self._retrain(0)
            return 0
        received, handled, rest = time.monotonic(), _Handled(), polled
        while rest:  # a slice of at most batching.slice_records records at a time, each delivered before the next
            rest = rest[self._handle(rest, handled) :]
        self._record(len(polled), handled.rejected, time.monotonic() - received)
        self._maybe_checkpoint()
        self._retrain(handled.uncounted)
        return len(polled)

    def _handle(self, polled: list[Polled], handled: _Handled) -> int:
        """Decode the leading messages of `polled` that hold at most `batching.slice_records` records, step them and
        deliver their forecasts and dead letters, that many records at a time; returns how many messages that was."""
        most = self.pipeline.batching.slice_records
        started = time.perf_counter()
        observations, bad, taken = records.decode_slice(
            [r.value for r in polled],
            most,
            self.pipeline.record,
            self.pipeline.limits,
            time.time(),
            partitions=[r.partition for r in polled],
            offsets=None if self.changelog is None else [r.offset for r in polled],
            cadence=self.pipeline.cadence,
            message_keys=[r.key for r in polled],
        )
        polled = polled[:taken]
        self.metrics.key_mismatches.labels(self.pipeline.name).inc(int(observations.mismatched.sum()))
        if self.changelog is not None:
            observations = self._unseen(observations)
        self._count_missing(observations)
        if len(observations):  # for the event-time lag
            self._newest_event = float(np.fmax(self._newest_event, observations.times.max()))
        self.stages.add("decode", time.perf_counter() - started)
        pieces = observations.pieces(most)  # more than one only for a batch message of more than `most`
        for number, part in enumerate(pieces, start=1):
            forecasts, refused, counted = self._step(part)
            with self.stages.timed("encode"):
                messages = [message for piece in forecasts for message in self._forecast_messages(piece)]
                messages = self._dead_letters(polled, bad + refused) + messages
            self._send(messages, polled if number == len(pieces) else (), sum(map(len, forecasts)))
            handled.add(bad + refused, len(part) - counted)
            bad = []
        return taken

    def _send(self, messages: list[Message], polled: Sequence[Polled], forecasts: int) -> None:
        """Hand a slice's messages, `forecasts` forecasts among them, to the producer once those before are
        acknowledged; the offsets of `polled` advance when these are (`_settle`: at once, with a sink that has nothing
        to wait for)."""
        self._settle()
        with self.stages.timed("produce"):
            sending = self.delivery.send(messages, self.stop)
        self._unacknowledged = (sending, polled, forecasts)
        if sending.done:
            self._settle()

    def _settle(self) -> None:
        """Wait for Kafka's acknowledgement of the messages sent last, then count their records' offsets as done."""
        if self._unacknowledged is None:
            return
        sending, polled, forecasts = self._unacknowledged
        waited = self.delivery.settle(sending, self.stop)
        self._unacknowledged = None
        self.stages.add("acknowledge", waited)
        self.metrics.forecasts_produced.labels(self.pipeline.name).inc(forecasts)
        self._advance(polled)

    def _step(self, observations: records.Observations) -> tuple[list[Forecasts], list[records.Rejected], int]:
        """Step a batch: its forecasts, the records the engine refused, and how many records the trainer has
        counted already.

        When a retraining round falls due at one of the batch's records, step up to it, start the round
        on what was seen so far, then step the rest: a round starts at the same record, on the same
        buffered windows, however the stream was cut into batches.
        """
        cut = self._records_to_round(observations)
        if cut is None or not 0 < cut < len(observations):
            with self.stages.timed("step"):
                forecasts, refused = self.engine.step(observations, time.time())
            return [forecasts], refused, 0
        head, tail = observations.split(cut)
        with self.stages.timed("step"):
            first, refused = self.engine.step(head, time.time())
        self._retrain(len(head))
        with self.stages.timed("step"):
            rest, more = self.engine.step(tail, time.time())
        return [first, rest], refused + more, len(head)

    def _records_to_round(self, observations: records.Observations) -> int | None:
        """How many of the batch's records make a retraining round due; None if none does (or one runs)."""
        if not self._trains() or self.trainer.running:
            return None
        young = rounds.records_to_young_round(self.engine, self.trainer.rounds, observations.keys)
        due = [n for n in (self.trainer.records_to_round(), young) if n is not None]
        return min(due) if due else None

    def checkpoint(self, wait: bool = False) -> None:
        """Write the state with the offsets it reflects, then commit those offsets (without checkpoints: just
        commit). A checkpoint file is written in the background: its offsets are committed once it is durable,
        at a later batch (`wait`: before returning); while one is in flight the next waits its turn."""
        self._settle()
        if not self.offsets:
            return
        if self.changelog is None and self.checkpoints is not None:
            self._checkpoint_files(wait)
            return
        if self.changelog is not None:
            self._write_changelog(self.owned)
            if self.checkpoints is not None:
                self.checkpoints.written()
        self._commit()

    def _commit(self) -> None:
        if self.offsets:
            (self.transactions or self.source).commit(self.offsets)

    def _checkpoint_files(self, wait: bool) -> None:
        """Collect the write in flight if it is durable; if none is in flight now, start the next (`wait`: and wait
        for it). A writer that is done at once (a test's) is collected in the same batch."""
        self._commit_written(wait)
        if self.checkpoints.writing:
            return  # one write at a time: this checkpoint is taken at the first batch after it
        try:
            self.checkpoints.start(self.engine, self.offsets)
        except OSError as error:  # no folder, no process for the writer
            self._checkpoint_failed(error)
            return
        self._commit_written(wait)

    def _commit_written(self, wait: bool = False) -> None:
        """Commit the offsets of the checkpoint in flight once it is durable: never ahead of a checkpoint. (Files
        and exactly-once transactions never go together: those need the changelog.)"""
        name = self.pipeline.name
        try:
            written = self.checkpoints.finished(wait)
        except (OSError, RuntimeError) as error:  # RuntimeError: the writer died
            self._checkpoint_failed(error)
            return
        if written is None:
            return
        if self._checkpoint_failures:
            log.info(
                "pipeline %s: checkpoints written again after %s", name, counted(self._checkpoint_failures, "failure")
            )
            self._checkpoint_failures = 0
        self.metrics.checkpoint_seconds.labels(name).observe(written.seconds)
        self.metrics.checkpoints.labels(name).inc()
        log.info("pipeline %s: checkpoint %s (%d series)", name, written.path.name, len(self.engine.store))
        self.source.commit(written.tag)

    def _checkpoint_failed(self, error: OSError | RuntimeError) -> None:
        """A full disk or a read-only folder must not stop serving or loop on restarts: the failure is counted and
        logged (once per run of failures), the last good checkpoint stays the one a restart resumes from, and
        the next attempt waits a full interval."""
        name = self.pipeline.name
        reason = failure_reason(error) if isinstance(error, OSError) else "io_error"
        self.metrics.checkpoint_failures.labels(name, reason).inc()
        if not self._checkpoint_failures:
            log.error(
                "pipeline %s: cannot write a checkpoint in %s: %s; serving on, a restart resumes from the "
                "last good checkpoint (forecaster_checkpoint_failures_total counts the attempts)",
                name,
                self.checkpoints.folder,
                error,
            )
        self._checkpoint_failures += 1
        self.checkpoints.postpone()

    # -- the changelog: partitions move between members, their series' state with them ---------------------------

    def _hand_over(self) -> None:
        """Restore the partitions the group gave since the last batch from the changelog, then resume them where
        their state stands (those it took away were written and dropped already: `_revoked`)."""
        for moved in self.source.rebalances():
            if moved.kind == "assigned":
                self._take_over(moved.partitions)

    def _revoked(self, partitions: frozenset[int]) -> None:
        """The group takes `partitions` away (called on the consumer's hand-over thread): write and drop them, once
        the loop is between batches."""
        with self._stepping:
            self._settle()
            self._give_up(set(partitions) & self.owned)

    def _give_up(self, partitions: set[int]) -> None:
        if not partitions:
            return
        if self._write_leaving(partitions):
            self._keep_locally(partitions)
        dropped = handover.drop(self.engine, partitions)
        if self.sharing is not None:
            self.sharing.forget(partitions)
        for partition in partitions:
            self.offsets.pop(partition, None)
            self._replaying.pop(partition, None)
        self.owned -= partitions
        log.info(
            "pipeline %s: handed over %s (%d series)",
            self.pipeline.name,
            counted(len(partitions), "partition"),
            dropped,
        )

    def _write_leaving(self, partitions: set[int]) -> bool:
        """Write the state of partitions given up; in exactly-once mode commit their transactions, or hand them over
        without the last one if it fails (fenced, say: their next owner restores what was committed before).
        Whether the changelog now holds the state as it stands: only then may it be copied locally."""
        if self.transactions is None:
            self._write_changelog(partitions)
            return True
        try:
            self._write_changelog(partitions)
            return self.transactions.commit({p: self.offsets[p] for p in partitions if p in self.offsets})
        except TransactionError as error:
            log.warning("pipeline %s: handing over without the last transaction: %s", self.pipeline.name, error)
            return False
        finally:
            self.transactions.release(partitions)

    def _take_over(self, partitions) -> None:
        started, positions = time.perf_counter(), {}
        if self.transactions is not None:  # fence the previous owners first: the changelog then holds all they commit
            self.transactions.own(partitions)
        for partition in sorted(partitions):
            handover.drop(self.engine, [partition])  # a partition that comes back: what the changelog says wins
            found = handover.newest(self.changelog.read(partition))  # one pass over the log
            if self.sharing is not None:
                self.sharing.catch_up_with(found.version, self.offsets)
            restored = handover.restore(self.engine, partition, found)
            reflected = self.engine.store.reflected[self.engine.store.owned([partition])]
            if len(reflected):
                self._replaying[partition] = int(reflected.max())
            positions[partition] = -1 if restored.offset is None else restored.offset
            if restored.offset is not None:
                self.offsets[partition] = restored.offset
            if self.sharing is not None:
                self.sharing.restored(partition, restored, self.offsets)
            log.info(
                "pipeline %s: took over partition %d: %d series restored, resuming at %s",
                self.pipeline.name,
                partition,
                restored.series,
                "the group's offset" if restored.offset is None else f"offset {restored.offset}",
            )
        self.owned |= set(partitions)
        self.source.resume(positions)
        self.metrics.handover_seconds.labels(self.pipeline.name).observe(time.perf_counter() - started)

    def _write_changelog(self, partitions) -> None:
        """Write the series of `partitions` touched since they were last written, and each partition's own record,
        and wait until they are durable."""
        records, slots = self._records(partitions, touched_only=True)
        self.changelog.write(records, self.stop)
        self.engine.store.touched[slots] = False

    def _keep_locally(self, partitions) -> None:
        """A local copy of each partition's series as just written, so that taking it back (a restart, a rebalance)
        reads only the changelog written since. None after an eviction: a series no more held would be missing."""
        if self.engine.store.evictions:
            return
        for partition in partitions:
            self.changelog.keep(partition, self._records([partition], touched_only=False)[0].get(partition, []))

    def _records(self, partitions, touched_only: bool) -> tuple[dict, np.ndarray]:
        """partition -> [(key, value)]: its series' records (`handover.series_records`), then its own record."""
        records, slots = handover.series_records(self.engine, partitions, touched_only)
        for partition in partitions:
            if partition in self.offsets:
                switches = self.sharing.switches.get(partition, ()) if self.sharing is not None else ()
                own = handover.partition_record(self.engine, partition, self.offsets[partition], switches)
                records.setdefault(partition, []).append((handover.PARTITION_KEY, own))
        return records, slots

    def _unseen(self, observations: records.Observations) -> records.Observations:
        """Drop the records a series' state already reflects (replayed after a handover): silently, exactly.

        Only a partition just taken over can replay such records, and only up to the highest offset its restored
        series reflect (`_replaying`): the usual batch is passed by array comparisons, no lookup per record.
        """
        if not self._replaying:
            return observations
        until = np.full(len(observations), -1, np.int64)
        for partition, highest in list(self._replaying.items()):
            mine = observations.partitions == partition
            until[mine] = highest
            if (observations.offsets[mine] > highest).any():  # past it from this batch on
                del self._replaying[partition]
        suspect = np.flatnonzero(observations.offsets <= until)
        if not len(suspect):
            return observations
        keys = [observations.keys[i] for i in suspect.tolist()]
        seen = np.zeros(len(observations), bool)
        seen[suspect] = observations.offsets[suspect] <= self.engine.store.reflected_offsets(keys)
        return observations if not seen.any() else observations.take(~seen)

    def _maybe_checkpoint(self) -> None:
        with self.stages.timed("checkpoint"):
            if self.checkpoints is None and self.changelog is None:  # no state kept: only the consumer's position
                self._commit()  # what is acknowledged; the batch in flight is committed with the next
            elif self.checkpoints is None or self.checkpoints.due():
                self.checkpoint()
            elif self.checkpoints.writing:
                self._commit_written()

    def _advance(self, polled: Sequence[Polled]) -> None:
        """The batch is delivered: the state now reflects every record up to these offsets."""
        for record in polled:
            if record.offset >= self.offsets.get(record.partition, 0):
                self.offsets[record.partition] = record.offset + 1
        if self.checkpoints is not None:
            self.checkpoints.records_since += len(polled)

    def _retrain(self, consumed: int) -> None:
        """Between batches (or at a round's record, `_step`), `consumed` more records stepped: install the winner
        of a finished round, then start the next round when due."""
        if self.trainer is None:
            return
        with self.stages.timed("retrain"):
            self._retrain_now(consumed)

    def _retrain_now(self, consumed: int) -> None:
        self.trainer.count(consumed)
        finished = self.trainer.finished()
        if finished is not None:
            self._settle()  # a promotion says from which offsets on the new version serves
            self._conclude(finished)
        if not self._trains():
            return
        self._maybe_revert()
        if self.trainer.due(rounds.young_steps_buffered(self.engine, self.trainer.rounds)):
            self._start_round()

    def _maybe_roll_back(self) -> None:
        """Serve the version an operator asked for (`forecaster models rollback`) as the next version, checkpoint,
        and with the changelog publish it; between batches. With the changelog only the member that trains does."""
        if self.models is None or (self.sharing is not None and not self._trains()):
            return
        version = self.models.requested()
        if version is None:
            return
        try:
            history.roll_back(self.engine, self.models, version, self.pipeline)
        except ForecasterError as error:  # not kept (pruned since), or another model: serve on, say why
            log.error("pipeline %s: rollback to version %d refused: %s", self.pipeline.name, version, error)
        else:
            if self.rollback is not None:
                self.rollback.forget()
            self.metrics.model_version.labels(self.pipeline.name).set(self.engine.model_version)
            if self.sharing is not None:
                self.sharing.switched(self.offsets)
                self.sharing.publish(self.stop)
            self.checkpoint(wait=True)  # the version served from now on is durable before the next batch
        self.models.done()

    def _trains(self) -> bool:
        """Whether this member runs retraining rounds: with the changelog, only the owner of partition 0."""
        if self.trainer is None:
            return False
        return self.changelog is None or TRAINING_PARTITION in self.owned

    def _start_round(self) -> None:
        engine = self.engine
        try:
            windows = rounds.round_windows(engine, self.trainer.rounds + 1)
            round_ = self.trainer.start(engine.model, windows, engine.model_version)
        except rounds.NotEnoughData as reason:
            log.info("pipeline %s: retraining waits for more data: %s", self.pipeline.name, reason)
            self.trainer.postpone()
            return
        except (MemoryError, torch.OutOfMemoryError) as error:  # copying the windows: the round fails, not serving
            self.trainer.postpone()
            self._conclude(Finished(self.trainer.rounds + 1, 0.0, engine.model_version, error=error))
            return
        self.metrics.retrains.labels(self.pipeline.name, "started").inc()
        log.info("pipeline %s: retraining round %d started on %d series", self.pipeline.name, round_, len(windows))

    def _conclude(self, finished: Finished) -> None:
        """Count and log a round's end; promote its challenger if it won (in this thread, between batches)."""
        name, m = self.pipeline.name, self.metrics
        m.retrain_seconds.labels(name).observe(finished.seconds)
        if finished.error is not None:
            if isinstance(finished.error, Cancelled):
                return
            m.retrains.labels(name, "failed").inc()
            log.error(
                "pipeline %s: retraining round %d failed; serving version %d on: %r",
                name,
                finished.round,
                self.engine.model_version,
                finished.error,
            )
            return
        if self.sharing is not None and not self.sharing.may_publish(self.owned, finished.version, self.offsets):
            return
        if finished.version != self.engine.model_version:  # rolled back meanwhile: it trained on what no longer serves
            log.info(
                "pipeline %s: round %d from version %d ended after a rollback: dropped",
                name,
                finished.round,
                finished.version,
            )
            return
        outcome = finished.outcome
        m.training_loss.labels(name).set(outcome.training_loss)
        m.heldout_loss.labels(name, "champion").set(outcome.champion_loss)
        m.heldout_loss.labels(name, "challenger").set(outcome.challenger_loss)
        verdict = "promoted" if outcome.promoted else "rejected"
        log.info(
            "pipeline %s: round %d %s after %.1f s: held-out loss %.4g (challenger) vs %.4g (serving version %d); "
            "point MSE %.4g vs %.4g (%s, the best simple forecast)",
            name,
            finished.round,
            verdict,
            finished.seconds,
            outcome.challenger_loss,
            outcome.champion_loss,
            self.engine.model_version,
            outcome.challenger_point_loss,
            outcome.expert_loss,
            outcome.expert,
        )
        self._adopt(outcome)
        if self.sharing is not None:  # before the next batch: no member serves a version before it is published
            self.sharing.publish(self.stop)
        m.retrains.labels(name, verdict).inc()  # counted once served, so a scrape never sees a promotion ahead of it

    def _adopt(self, outcome: rounds.Outcome) -> None:
        """Serve the round's winner (with re-sync) and its interval calibration, between batches."""
        started = time.perf_counter()
        champion, version = self.engine.model, self.engine.model_version
        rounds.adopt(self.engine, outcome, self.pipeline.retraining.resync_steps)
        self.metrics.damping.labels(self.pipeline.name).set(self.engine.mean_damping())
        if not outcome.promoted:
            return
        self.rollback.promoted(champion, version, self.engine)
        seconds = time.perf_counter() - started
        self.metrics.resync_seconds.labels(self.pipeline.name).observe(seconds)
        self.metrics.model_version.labels(self.pipeline.name).set(self.engine.model_version)
        if self.sharing is not None:
            self.sharing.switched(self.offsets)
        if self.models is not None:
            history.promoted(self.models, champion, version, self.engine, outcome)
        log.info(
            "pipeline %s: serving version %d; %d series re-synchronised in %.2f s",
            self.pipeline.name,
            self.engine.model_version,
            len(self.engine.store),
            seconds,
        )

    def _maybe_revert(self) -> None:
        """Between batches: serve the model the latest promotion replaced again if its successor's live skill fell
        below retraining.rollback_below_skill (rollback.py), and publish that with the changelog."""
        verdict = self.rollback.judge(self.engine)
        if verdict is None:
            return
        self._settle()  # the version served again is published with the offsets it serves from
        started = time.perf_counter()
        restored = self.rollback.revert(self.engine, self.pipeline.retraining.resync_steps)
        self.metrics.rollbacks.labels(self.pipeline.name).inc()
        self.metrics.model_version.labels(self.pipeline.name).set(self.engine.model_version)
        if self.sharing is not None:
            self.sharing.switched(self.offsets)
            self.sharing.publish(self.stop)
        log.warning(
            "pipeline %s: rolled back: version %d's live one-step skill %.3f over %d forecasts is below "
            "retraining.rollback_below_skill %g; serving version %d's weights as version %d, %d series "
            "re-synchronised in %.2f s",
            self.pipeline.name,
            verdict.version,
            verdict.skill,
            verdict.scored,
            self.pipeline.retraining.rollback_below_skill,
            restored,
            self.engine.model_version,
            len(self.engine.store),
            time.perf_counter() - started,
        )

    def _forecast_messages(self, forecasts: Forecasts) -> list[Message]:
        """One message per forecast record (in the long format, per horizon step) keyed by its series or, with
        `batching.forecasts_per_message` N > 1, JSON lists of up to N records, packed per bucket of series (see
        `records.pack`); each stamped with its observation's time unless `output.timestamp` is now."""
        name, target, topic = self.pipeline.name, self.pipeline.record.target, self.pipeline.output_topic
        output = self.pipeline.output
        encoded = records.encode_many(forecasts, name, target, output.format)
        each = records.records_per_forecast(output.format, self.pipeline.horizon)
        keys = _each(forecasts.keys, each)
        if output.timestamp == "now":
            stamps = [None] * len(keys)
        else:
            stamps = _each(np.round(forecasts.times * 1000).astype(np.int64).tolist(), each)
        per_message = self.pipeline.batching.forecasts_per_message
        if self.transactions is not None:  # each into its input partition's transaction (one per message: config)
            origins = _each(self.engine.store.partition[self.engine.store.lookup(forecasts.keys)].tolist(), each)
            return [
                Message(topic, k.encode(), v, origin=o, timestamp_ms=t)
                for k, v, o, t in zip(keys, encoded, origins, stamps)
            ]
        if per_message == 1:
            return [Message(topic, k.encode(), v, timestamp_ms=t) for k, v, t in zip(keys, encoded, stamps)]
        stamped = None if output.timestamp == "now" else stamps
        packed = records.pack(keys, encoded, per_message, self.pipeline.partitions, stamped)
        return [Message(topic, key, value, timestamp_ms=t) for key, value, t in packed]

    def _dead_letters(self, polled: Sequence[Polled], rejected: Sequence[records.Rejected]) -> list[Message]:
        """Rejected records, with their original bytes and the reason in headers; a rejected element of a
        batch message goes alone, as its own JSON, with its index in the header `forecaster.element`."""
        if not rejected:
            return []
        origins = records.origins([r.value for r in polled])
        messages = []
        for bad in rejected:
            origin = origins[bad.position]
            record = polled[origin.message]
            headers = (
                ("forecaster.reason", bad.reason.encode()),
                ("forecaster.detail", bad.detail.encode()),
                ("forecaster.pipeline", self.pipeline.name.encode()),
                ("forecaster.source", f"{self.pipeline.input_topic}/{record.partition}/{record.offset}".encode()),
            )
            value = record.value or b""
            if origin.element is not None:
                headers += (("forecaster.element", str(origin.element).encode()),)
                value = records.element_payload(value, origin.element)
            messages.append(
                Message(self.pipeline.dead_letter_topic, record.key, value, headers, origin=record.partition)
            )
        return messages

    def _record(self, consumed: int, rejected, latency_s: float) -> None:
        m, name, store = self.metrics, self.pipeline.name, self.engine.store
        m.records_consumed.labels(name).inc(consumed)
        for reason, count in collections.Counter(r.reason for r in rejected).items():
            m.records_rejected.labels(name, reason).inc(count)
        m.latency.labels(name).observe(latency_s)
        m.batch_size.labels(name).observe(consumed)
        m.active_series.labels(name).set(len(store))
        m.spilled_series.labels(name).set(len(store.spill) if store.spill is not None else 0)
        m.state_bytes.labels(name).set(store.nbytes)
        m.series_evicted.labels(name).inc(store.evictions - self._evictions_seen)
        self._evictions_seen = store.evictions
        if store.spill is not None and store.spill.dropped > self._spill_dropped_seen:
            self._spill_dropping(store.spill.dropped)
        m.one_step_mae.labels(name, "model").set(self.engine.skill.model.value)
        m.one_step_mae.labels(name, "naive").set(self.engine.skill.naive.value)
        levels = self.engine.model.spec.quantiles
        if levels:
            m.interval_coverage.labels(name, f"{levels[-1] - levels[0]:g}").set(self.engine.coverage.value)
            widening = self.engine.widening
            m.interval_shift.labels(name, "conformal").set(0.0 if widening is None else float(widening.mean()))
            m.interval_shift.labels(name, "tracking").set(float(self.engine.tracked.mean()))
        combination = self.engine.combination
        if combination is not None:
            for expert, weight in zip(combination.names, combination.mean_weights().mean(axis=0)):
                m.combination_weight.labels(name, expert).set(float(weight))
        m.consumer_lag.labels(name).set(self.source.lag())

    def _spill_dropping(self, dropped: int) -> None:
        """Count the series the memory spill dropped to stay within its budget; say so once, when it first does."""
        if not self._spill_dropped_seen:
            log.warning(
                "pipeline %s: the spill is full (spill_max_bytes %d): the series spilled longest ago are dropped "
                "and start afresh if they return (forecaster_spill_dropped_total counts them)",
                self.pipeline.name,
                self.pipeline.spill_max_bytes,
            )
        self.metrics.spill_dropped.labels(self.pipeline.name).inc(dropped - self._spill_dropped_seen)
        self._spill_dropped_seen = dropped

    def _fields(self) -> tuple[str, ...]:
        """The names of the value fields of a record: the target, then the covariates."""
        return (self.pipeline.record.target, *self.pipeline.record.covariates)

    def _count_missing(self, observations: records.Observations) -> None:
        """Count the null fields (NaN) of the records decoded, by field."""
        counts = np.isnan(observations.values).sum(axis=0).tolist()
        for field, count in zip(self._fields(), counts):
            if count:
                self.metrics.missing_values.labels(self.pipeline.name, field).inc(count)

    def _watch_contact(self) -> None:
        """Log losing and regaining the cluster once each, not per retry; feeds /readyz and `up`."""
        now = time.monotonic()
        if now - self._contact_checked < _CONTACT_CHECK_EVERY_S:
            return
        self._contact_checked = now
        self.assigned, connected = self.source.assigned(), self.source.connected()
        if self.assigned and connected and not self._ready_logged:
            log.info(
                "pipeline %s ready: consuming %s, forecasting to %s",
                self.pipeline.name,
                self.pipeline.input_topic,
                self.pipeline.output_topic,
            )
            self._ready_logged = True
        if self.in_contact and not connected:
            self._lost_contact_at = now
            log.warning("pipeline %s: lost contact with Kafka; reconnecting with backoff", self.pipeline.name)
        elif connected and not self.in_contact:
            log.info("pipeline %s: Kafka reachable again after %.0f s", self.pipeline.name, now - self._lost_contact_at)
        self.in_contact = connected
        self._warn_if_ahead()

    def _warn_if_ahead(self) -> None:
        """Say so, once per offset, when the state resumes a partition past the topic's end."""
        folder = self.checkpoints.folder if self.checkpoints is not None else "state_dir"
        for partition, (position, end) in self.source.ahead().items():
            if self._ahead_warned.get(partition) != position:
                self._ahead_warned[partition] = position
                log.warning(
                    "pipeline %s: partition %d of %s resumes at offset %d, where the state stands, but the "
                    "topic ends at %d: was it recreated, or is this another cluster? Nothing is read there "
                    "until records pass that offset; to start afresh, stop the daemon and remove the "
                    "pipeline's checkpoints in %s",
                    self.pipeline.name,
                    partition,
                    self.pipeline.input_topic,
                    position,
                    end,
                    folder,
                )

    def _log_summary(self) -> None:
        skill = self.engine.skill
        log.info(
            "pipeline %s: %d series, one-step MAE model %.4g vs naive %.4g over the last %d",
            self.pipeline.name,
            len(self.engine.store),
            skill.model.value,
            skill.naive.value,
            skill.model.count,
        )


def _each(items: Sequence, times: int) -> Sequence:
    """Each item `times` times in a row, as the long format writes `times` records per forecast."""
    return items if times == 1 else [item for item in items for _ in range(times)]


class Daemon:
    """Every pipeline of a config, served until `stop()`; `run()` returns the exit code."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None, shutdown_timeout_s: float = 30.0):
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.shutdown_timeout_s = shutdown_timeout_s
        self._stop = threading.Event()
        self.workers: list[PipelineWorker] = []
        self.server: StatusServer | None = None
        self._held: list[int] = []  # locks on the state folders this process holds

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        """Ready when every pipeline is healthy: assigned partitions, in contact with Kafka, polling."""
        waiting = [w.pipeline.name for w in self.workers if not w.healthy()]
        if not self.workers or waiting:
            return False, f"not ready: {', '.join(waiting) or 'starting'}"
        return True, "ready"

    def live(self) -> tuple[bool, str]:
        """Alive unless a pipeline failed or has held one batch for longer than STUCK_AFTER_S (/healthz)."""
        stuck = [w.pipeline.name for w in self.workers if not w.live()]
        if stuck:
            return False, f"failed or stuck for over {STUCK_AFTER_S:.0f} s: {', '.join(stuck)}"
        return True, "ok"

    def run(self) -> int:
        settings = self.config.settings
        device = resolve_device(settings.device)
        process.export(self.metrics, device, settings.kafka.client)
        try:
            self._hold_state()
            return self._serve(device)
        finally:
            while self._held:
                os.close(self._held.pop())

    def _hold_state(self) -> None:
        """Take the state folder of each pipeline that keeps its state in files, before anything starts: a second
        daemon on the same state_dir stops here with a StateInUse naming the first (the kernel frees a lock when
        its process ends, however it ends)."""
        for pipeline in self.config.pipelines:
            if not pipeline.checkpoint.changelog:  # a changelog's members share nothing on disk
                held = lock_folder(pipeline_dir(self.config, pipeline))
                if held is not None:
                    self._held.append(held)

    def _serve(self, device: torch.device) -> int:
        settings = self.config.settings
        self._check_topics()
        log.info("starting %s on %s", counted(len(self.config.pipelines), "pipeline"), device)
        self.server = StatusServer(
            settings.metrics.host,
            settings.metrics.port,
            self.registry,
            self.ready,
            live=self.live,
            certfile=settings.metrics.tls_certfile,
            keyfile=settings.metrics.tls_keyfile,
        ).start()
        log.info("metrics at %s/metrics", self.server.address)
        try:
            self.workers = [self._worker(p, device) for p in self.config.pipelines]
            # What start-up made (modules, the model, the restored state) lives as long as the process: out of the
            # garbage collector's reach, a full collection walks only what serving made since.
            gc.freeze()
            threads = [threading.Thread(target=w.run, name=f"pipeline-{w.pipeline.name}") for w in self.workers]
            for thread in threads:
                thread.start()
            while not self._stop.wait(0.5):
                if any(w.error is not None for w in self.workers):
                    break
            return self._shutdown(threads)
        finally:
            self.server.close()

    def _check_topics(self) -> None:
        """Refuse to start on missing topics: brokers that auto-create them would pick the wrong partitions."""
        kafka = self.config.settings.kafka
        names = [name for p in self.config.pipelines for name, _ in topics_of(self.config, p)]
        missing = missing_topics(kafka, names)
        if missing:
            raise ForecasterError(
                f"topics missing: {', '.join(missing)} (create them with `forecaster topics -c {self.config.path}`)"
            )
        for pipeline in self.config.pipelines:
            if pipeline.checkpoint.changelog:
                inputs = partition_count(kafka, pipeline.input_topic)
                kept = partition_count(kafka, changelog_topic(self.config, pipeline))
                if inputs != kept:
                    raise ConfigError(
                        f"pipeline {pipeline.name}: {pipeline.input_topic} has {inputs} partitions but its changelog "
                        f"{changelog_topic(self.config, pipeline)} has {kept}: a series' state follows its input "
                        "partition, so the input's partition count cannot change while state exists (recreate both "
                        "with the same count to start afresh)"
                    )

    def _worker(self, pipeline: Pipeline, device: torch.device) -> PipelineWorker:
        """Engine (resumed from the newest checkpoint if any, migrated if the model changed), source resuming at its
        offsets, sink."""
        kafka = self.config.settings.kafka
        checkpoints = Checkpoints(pipeline_dir(self.config, pipeline), pipeline)
        exactly_once = pipeline.checkpoint.exactly_once
        restored = None if pipeline.checkpoint.changelog else checkpoints.load()
        engine = migration.resume(self.config, pipeline, device, restored)
        models = history.ModelHistory(checkpoints.folder / history.FOLDER, pipeline.retraining.keep_versions)
        migration.adopt_configured(self.config, pipeline, engine, models, restored is not None)
        offsets = {} if restored is None else {int(p): int(o) for p, o in restored["offsets"].items()}
        source = make_source(
            read_committed(kafka) if exactly_once else kafka,
            pipeline.input_topic,
            group_id(self.config, pipeline),
            pipeline.batching.max_records,
            positions=offsets,
            handover=pipeline.checkpoint.changelog,
        )
        transactions = None
        if exactly_once:
            transactions = Transactions(
                kafka, group_id(self.config, pipeline), pipeline.input_topic, source.group_metadata
            )
        changelog = None
        if pipeline.checkpoint.changelog:  # the state comes from the changelog, partition by partition
            changelog = ChangelogTopic(
                kafka,
                changelog_topic(self.config, pipeline),
                sink=transactions,
                cache=checkpoints.folder / "changelog",
            )
        trainer = Trainer(pipeline, device, self._stop) if pipeline.retraining.enabled else None
        sharing = None
        if changelog is not None:
            published = ModelTopic(kafka, model_topic(self.config, pipeline))  # `models` stays the history
            sharing = ModelSharing(pipeline, engine, published, self.metrics)
        return PipelineWorker(
            pipeline,
            engine,
            source,
            transactions or make_sink(kafka),
            self.metrics,
            self._stop,
            checkpoints,
            offsets,
            trainer,
            changelog,
            sharing,
            models,
            transactions,
        )

    def _shutdown(self, threads: list[threading.Thread]) -> int:
        """Stop polling, let each batch in flight finish and checkpoint, close the clients; 0 unless a pipeline
        failed."""
        self._stop.set()
        log.info("stopping: finishing batches in flight")
        deadline = time.monotonic() + self.shutdown_timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        for worker in self.workers:
            if worker.trainer is not None:  # a round in progress gives up at its next step
                worker.trainer.close(max(0.0, deadline - time.monotonic()))
            worker.source.close()
            worker.sink.close()
            if worker.sharing is not None:  # its watcher has seen the stop
                worker.sharing.topic.close()
        failed = [w.pipeline.name for w in self.workers if w.error is not None]
        if stuck:
            log.error("shutdown timed out after %.0f s waiting for %s", self.shutdown_timeout_s, ", ".join(stuck))
        log.info("stopped%s", f" after failure of {', '.join(failed)}" if failed else "")
        return 1 if failed or stuck else 0
