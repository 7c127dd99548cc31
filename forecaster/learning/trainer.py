"""A pipeline's background retraining: when a round is due, running it off the loop, and its result.

The run loop owns the engine; the trainer never touches it. Between batches the loop asks
`due()`, hands `start()` copies of the serving weights and of the buffered windows, and
later takes the result from `finished()` to install, again between batches. One round runs
at a time, on its own thread, so forecasts never wait for training. No Kafka here.

A round cannot hang or kill serving: it fails (and the serving weights stay) when its loss
stops being finite, when it runs out of memory, or when it passes `retraining.max_seconds`;
one that passes the budget inside a step that never returns is abandoned to its thread, and
the next round waits for that thread to end. The daemon's stop cancels a round at its next step.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from dataclasses import dataclass

import torch

from forecaster.config import Pipeline
from forecaster.errors import Cancelled, RoundFailed
from forecaster.learning import rounds
from forecaster.learning.rounds import Outcome, Windows
from forecaster.serving.model import Forecaster

# The niceness of a round's thread: the kernel gives the run loop, the Kafka clients and the broker a core first.
_ROUND_NICENESS = 10


def _yield_the_cores() -> None:
    """Lower this thread's CPU priority, and with it that of the threads torch starts from it: a round is
    background work, and on a 2-core machine, at the same priority, it held a core the run loop and the broker
    were waiting for. Linux only (elsewhere a thread's priority cannot be set apart from its process's)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _ROUND_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: the round runs at the process's priority
        pass


@dataclass(frozen=True)
class Finished:
    """A round's end: its outcome, or the error that ended it."""

    round: int
    seconds: float
    version: int  # the champion's: the model version the round started from
    outcome: Outcome | None = None
    error: BaseException | None = None


class Trainer:
    def __init__(
        self, pipeline: Pipeline, device: torch.device | str, stop: threading.Event, *, background: bool = True
    ):
        """`background`: rounds yield the cores to the run loop (the daemon); false where the caller waits for
        each round to end (a backtest, a benchmark), so a busy machine does not starve what it waits for."""
        self.pipeline, self.settings = pipeline, pipeline.retraining
        self.device, self.stop = torch.device(device), stop
        self.background = background
        self.rounds = 0
        self.records_since = 0
        self._due_at = self._next_due()
        self._thread: threading.Thread | None = None
        self._result: list[Finished] = []  # the running round's thread appends its end here
        self._started_at, self._version = 0.0, 0  # of the running round
        self._abandoned: threading.Thread | None = None  # a round past its budget that has not returned

    # -- schedule ---------------------------------------------------------------------------

    def count(self, records: int) -> None:
        self.records_since += records

    def due(self, longest: int = 0) -> bool:
        """A round is due after `every_records` new records, or `every_seconds` with any, or while young when the
        longest buffered series (`longest` steps) calls for one (rounds.young_round_due); never while one runs."""
        if self.running or self.records_since == 0:
            return False
        if rounds.young_round_due(self.pipeline, self.rounds, longest):
            return True
        return self.records_since >= self.settings.every_records or time.monotonic() >= self._due_at

    def records_to_round(self) -> int:
        """How many more records make a round due by `every_records`."""
        return max(0, self.settings.every_records - self.records_since)

    def postpone(self) -> None:
        """Wait for another interval of new data (there was too little to train on)."""
        self.records_since = 0
        self._due_at = self._next_due()

    def _next_due(self) -> float:
        every = self.settings.every_seconds
        return time.monotonic() + every if every is not None else float("inf")

    # -- rounds -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A round runs, or an abandoned one has not returned yet: the next waits for it."""
        return any(thread is not None and thread.is_alive() for thread in (self._thread, self._abandoned))

    def start(self, champion: Forecaster, windows: Windows, version: int = 0) -> int:
        """Run a round on a copy of `champion`, model `version`, in the background; returns the round's number."""
        if self.running:
            raise RuntimeError("a retraining round is already running")
        champion = copy.deepcopy(champion).cpu()  # the serving model stays the loop's alone
        self.rounds += 1
        self.postpone()
        self._result, self._started_at, self._version = [], time.monotonic(), version
        self._thread = threading.Thread(
            target=self._run,
            args=(self._result, self.rounds, champion, windows, version),
            name=f"retrain-{self.pipeline.name}",
            daemon=True,
        )
        self._thread.start()
        return self.rounds

    def finished(self) -> Finished | None:
        """The result of the round that ended since the last call (or was abandoned, failed), once."""
        if self._thread is None:
            return None
        if self._thread.is_alive():
            return self._abandon_if_overdue()
        self._thread = None
        return self._result[0]

    def _abandon_if_overdue(self) -> Finished | None:
        """Past its budget and still in a step (the step checks the budget): leave the round to its thread, whose end
        nobody reads, and report it failed."""
        seconds = time.monotonic() - self._started_at
        if seconds <= self.settings.max_seconds:
            return None
        self._abandoned, self._thread = self._thread, None
        error = RoundFailed(f"abandoned after {seconds:.0f} s, over retraining.max_seconds, inside one step")
        return Finished(self.rounds, seconds, self._version, error=error)

    def close(self, timeout: float | None) -> None:
        """Wait for a round in progress to notice the stop (set by the caller) and give up; an abandoned round is
        left to end with the process (its thread is a daemon)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, result: list, round_: int, champion: Forecaster, windows: Windows, version: int) -> None:
        began = time.perf_counter()
        if self.background:
            _yield_the_cores()
        try:
            outcome = rounds.challenge(champion, windows, self.pipeline, round_, self.device, progress=self._check)
            if not math.isfinite(outcome.challenger_loss):
                raise RoundFailed(f"the challenger's held-out loss is {outcome.challenger_loss}")
            result.append(Finished(round_, time.perf_counter() - began, version, outcome=outcome))
        except BaseException as error:  # noqa: BLE001 - out of memory included: the loop reports it and keeps serving
            if isinstance(error, torch.OutOfMemoryError) and self.device.type == "cuda":
                torch.cuda.empty_cache()  # give back what the round held, for serving
            result.append(Finished(round_, time.perf_counter() - began, version, error=error))

    def _check(self, step: int, loss: float) -> None:
        """After each optimisation step: give up when stopping, diverged, or past the time budget."""
        if self.stop.is_set():
            raise Cancelled(f"stopped at optimisation step {step}")
        if not math.isfinite(loss):
            raise RoundFailed(f"diverged: the training loss is {loss} at optimisation step {step}")
        if time.monotonic() - self._started_at > self.settings.max_seconds:
            raise RoundFailed(
                f"over retraining.max_seconds ({self.settings.max_seconds:g} s) at optimisation step {step}"
            )
