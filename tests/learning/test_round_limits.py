"""A retraining round cannot hang or kill serving: over its budget, diverged or out of memory it fails (the serving
weights stay, the loop goes on), hung inside a step it is abandoned, and the daemon's stop ends it at its next step."""

import dataclasses
import json
import os
import sys
import threading

import pytest
import torch
from test_retraining_loop import batches_of, make_worker, retrains

from forecaster.errors import Cancelled, RoundFailed
from forecaster.learning import rounds, tbptt
from forecaster.learning.trainer import Trainer

from support import retraining_pipeline, sines


def limited(max_seconds=900.0, steps=30):
    """Rounds every 400 records, none young, each `steps` steps within `max_seconds`."""
    p = retraining_pipeline(steps=steps)
    settings = dataclasses.replace(p.retraining, every_records=400, young_rounds=0, max_seconds=max_seconds)
    return dataclasses.replace(p, retraining=settings)


def serve_until_a_round_concludes(w):
    """Run batches until a round has started and the loop has concluded it (counted it one way or another)."""
    concluded = lambda: sum(retrains(w.metrics.registry, o) for o in ("promoted", "rejected", "failed"))
    while w.source.batches and not concluded():
        w.run_once()
    if not concluded():  # the batches ran out while the round runs
        w.trainer.close(timeout=None)
        w.run_once()
    assert concluded() == 1 and w.error is None


def windows(pipeline):
    """The serving model and buffered windows of a worker that has seen 480 records (and started no round)."""
    pipeline = dataclasses.replace(pipeline, retraining=dataclasses.replace(pipeline.retraining, every_records=10**9))
    w, _, _ = make_worker(pipeline, batches_of(sines(length=60), 8))
    while w.source.batches:
        w.run_once()
    return w.engine.model, rounds.round_windows(w.engine, 1)


def test_a_round_over_its_time_budget_fails_at_its_next_step():
    pipeline = limited(max_seconds=1e-9, steps=10_000)
    champion, buffered = windows(limited())
    trainer = Trainer(pipeline, "cpu", threading.Event())
    trainer.start(champion, buffered)
    trainer.close(timeout=None)
    error = trainer.finished().error
    assert isinstance(error, RoundFailed)
    assert "over retraining.max_seconds (1e-09 s) at optimisation step 1" in str(error)


def test_a_round_hung_inside_a_step_is_abandoned_as_failed_and_the_next_waits_for_it(monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def hangs(*args, **kwargs):
        entered.set()
        release.wait()
        return "an outcome nobody may read"

    monkeypatch.setattr(rounds, "challenge", hangs)
    champion, buffered = windows(limited())
    trainer = Trainer(limited(max_seconds=1e-9), "cpu", threading.Event())
    trainer.start(champion, buffered, version=3)
    entered.wait()
    finished = trainer.finished()
    assert isinstance(finished.error, RoundFailed) and "abandoned" in str(finished.error)
    assert (finished.round, finished.version) == (1, 3)
    trainer.count(10_000)
    assert trainer.running and not trainer.due()  # no second round beside the hung one
    release.set()
    while trainer.running:
        trainer._abandoned.join()
    assert trainer.finished() is None  # the abandoned round's end is dropped
    assert trainer.due()


def test_the_loop_counts_an_abandoned_round_as_failed_and_serves_on(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(rounds, "challenge", lambda *args, **kwargs: release.wait())
    w, sink, registry = make_worker(limited(max_seconds=1e-9), batches_of(sines(length=120), 8))
    try:
        serve_until_a_round_concludes(w)
    finally:
        release.set()
    assert retrains(registry, "failed") == 1 and w.engine.model_version == 0
    assert json.loads(sink.messages[-1].value)["model_version"] == 0


def test_a_round_whose_loss_turns_nan_fails_and_is_not_rejected(monkeypatch):
    optimise = tbptt._optimise

    def poisoned(model, loss, *args):
        optimise(model, loss, *args)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float("nan"))

    monkeypatch.setattr(tbptt, "_optimise", poisoned)
    w, _, registry = make_worker(limited(), batches_of(sines(length=120), 8))
    serve_until_a_round_concludes(w)
    assert retrains(registry, "failed") == 1 and retrains(registry, "rejected") == 0
    assert w.engine.model_version == 0


def test_a_challenger_whose_held_out_loss_is_nan_fails(monkeypatch):
    judge = rounds.heldout_scores
    trained = []

    def nan_for_the_challenger(model, **kwargs):
        scores = judge(model, **kwargs)
        return dataclasses.replace(scores, loss=float("nan")) if model in trained else scores

    fit = tbptt.fit
    monkeypatch.setattr(tbptt, "fit", lambda model, *a, **k: (trained.append(model), fit(model, *a, **k))[1])
    monkeypatch.setattr(rounds, "heldout_scores", nan_for_the_challenger)
    w, _, registry = make_worker(limited(), batches_of(sines(length=120), 8))
    serve_until_a_round_concludes(w)
    assert retrains(registry, "failed") == 1 and retrains(registry, "rejected") == 0


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError()]
)
def test_running_out_of_memory_in_a_round_fails_the_round_not_the_daemon(error, monkeypatch):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(rounds, "challenge", exhausted)
    w, sink, registry = make_worker(limited(), batches_of(sines(length=120), 8))
    serve_until_a_round_concludes(w)
    assert retrains(registry, "failed") == 1 and w.error is None
    w.run_once()  # serving goes on
    assert json.loads(sink.messages[-1].value)["model_version"] == 0


def test_running_out_of_memory_collecting_a_round_s_windows_fails_the_round_not_the_daemon(monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(rounds, "round_windows", exhausted)
    w, _, registry = make_worker(limited(), batches_of(sines(length=120), 8))
    serve_until_a_round_concludes(w)
    assert retrains(registry, "failed") == 1 and retrains(registry, "started") == 0
    assert not w.trainer.running and w.trainer.rounds == 0


def test_the_daemon_s_stop_ends_a_round_at_its_next_step():
    champion, buffered = windows(limited())
    stop = threading.Event()
    trainer = Trainer(limited(steps=10**9), "cpu", stop)  # a round that would run for ever
    stepped = threading.Event()
    check = trainer._check
    trainer._check = lambda step, loss: (stepped.set(), check(step, loss))
    trainer.start(champion, buffered)
    stepped.wait()
    stop.set()
    trainer.close(timeout=None)  # returns: the round gave up
    error = trainer.finished().error
    assert isinstance(error, Cancelled) and "stopped at optimisation step" in str(error)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own CPU priority is Linux's")
def test_a_round_runs_at_a_lower_cpu_priority_than_the_loop(monkeypatch):
    seen = []

    def challenge(*args, **kwargs):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # 0: the calling thread, on Linux
        raise RoundFailed("enough")

    monkeypatch.setattr(rounds, "challenge", challenge)
    champion, buffered = windows(limited())
    trainer = Trainer(limited(), "cpu", threading.Event())
    trainer.start(champion, buffered)
    trainer.close(timeout=None)
    assert isinstance(trainer.finished().error, RoundFailed)
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own CPU priority is Linux's")
def test_a_round_someone_waits_for_keeps_the_callers_cpu_priority(monkeypatch):
    seen = []

    def challenge(*args, **kwargs):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))
        raise RoundFailed("enough")

    monkeypatch.setattr(rounds, "challenge", challenge)
    champion, buffered = windows(limited())
    trainer = Trainer(limited(), "cpu", threading.Event(), background=False)
    trainer.start(champion, buffered)
    trainer.close(timeout=None)
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0)]
