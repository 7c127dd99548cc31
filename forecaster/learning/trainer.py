"""A pipeline's background retraining: when a round is due, running it off the loop, and its result.

The run loop owns the engine; the trainer never touches it. Between batches the loop asks
`due()`, hands `start()` copies of the serving weights and of the buffered windows, and
later takes the result from `finished()` to install, again between batches. One round runs
at a time, on its own thread, so forecasts never wait for training. No Kafka here.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import torch

from forecaster.config import Pipeline
from forecaster.errors import Cancelled
from forecaster.learning import rounds
from forecaster.learning.rounds import Outcome, Windows
from forecaster.serving.model import Forecaster


@dataclass(frozen=True)
class Finished:
    """A round's end: its outcome, or the error that ended it."""

    round: int
    seconds: float
    version: int  # the champion's: the model version the round started from
    outcome: Outcome | None = None
    error: BaseException | None = None


class Trainer:
    def __init__(self, pipeline: Pipeline, device: torch.device | str, stop: threading.Event):
        self.pipeline, self.settings = pipeline, pipeline.retraining
        self.device, self.stop = torch.device(device), stop
        self.rounds = 0
        self.records_since = 0
        self._due_at = self._next_due()
        self._thread: threading.Thread | None = None
        self._finished: Finished | None = None

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
        return self._thread is not None and self._thread.is_alive()

    def start(self, champion: Forecaster, windows: Windows, version: int = 0) -> int:
        """Run a round on a copy of `champion`, model `version`, in the background; returns the round's number."""
        if self.running:
            raise RuntimeError("a retraining round is already running")
        self.rounds += 1
        self.postpone()
        champion = copy.deepcopy(champion).cpu()  # the serving model stays the loop's alone
        self._thread = threading.Thread(
            target=self._run,
            args=(self.rounds, champion, windows, version),
            name=f"retrain-{self.pipeline.name}",
            daemon=True,
        )
        self._thread.start()
        return self.rounds

    def finished(self) -> Finished | None:
        """The result of the round that ended since the last call, once."""
        if self._thread is None or self._thread.is_alive():
            return None
        self._thread, finished, self._finished = None, self._finished, None
        return finished

    def close(self, timeout: float | None) -> None:
        """Wait for a round in progress to notice the stop (set by the caller) and give up."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, round_: int, champion: Forecaster, windows: Windows, version: int) -> None:
        began = time.perf_counter()
        try:
            outcome = rounds.challenge(champion, windows, self.pipeline, round_, self.device, progress=self._check_stop)
            self._finished = Finished(round_, time.perf_counter() - began, version, outcome=outcome)
        except BaseException as error:  # noqa: BLE001 - the loop reports it and keeps serving
            self._finished = Finished(round_, time.perf_counter() - began, version, error=error)

    def _check_stop(self, step: int, loss: float) -> None:
        if self.stop.is_set():
            raise Cancelled(f"stopped at optimisation step {step}")
