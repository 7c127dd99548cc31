"""Replaying buffered windows through a model: the states new weights would have reached.

After a promotion the serving states were computed under the old weights. `resync`
recomputes them under the new ones from each series' newest buffered steps, batched.
Pure tensor math but for `install`, which applies it to an engine through its verbs;
`rounds.py` uses `replay` to score models on held-out steps too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from forecaster.serving import threads
from forecaster.serving.buffer import WindowBuffer
from forecaster.serving.engine import Engine
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.model import Forecaster

# Series replayed at once when re-synchronising: bounds the memory of a replay over a million series.
_RESYNC_ROWS = 16384


@torch.no_grad()
def replay(model: Forecaster, inputs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Step n series through their windows (n, W, input_size) from a zero state: heads (n, W, outputs), final state.

    `valid` (n, W) marks each window's steps; they come last, as `WindowBuffer.read` gives them.
    A series is stepped from its first valid step only (its state stays zero before, its heads
    there are zero), with the engine's fused inference step (serving/fused_step.py): eval mode, equal to
    `model.step` then `model.head` to float rounding.
    """
    with threads.sized(len(valid), inputs.device):
        return _replay(model, inputs, valid)


def _replay(model: Forecaster, inputs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    fast = FusedStep(model)
    n, W = valid.shape
    first = W - valid.sum(dim=1)  # each row's oldest valid step
    state = model.initial_state(n, device=inputs.device)
    heads = inputs.new_zeros(n, W, model.spec.outputs)
    for t in range(W):
        rows = torch.nonzero(first <= t).flatten()
        if len(rows) == n:
            fast.step_(inputs[:, t], state, out=heads[:, t])
        elif len(rows):
            stepped = state[:, rows]
            heads[rows, t] = fast.step_(inputs[rows, t], stepped)
            state[:, rows] = stepped
    return heads, state


@torch.no_grad()
def resync(model: Forecaster, buffer: WindowBuffer, slots: np.ndarray, steps: int) -> Tensor:
    """States (layers, n, width) of `slots` recomputed under `model` from their newest `steps` buffered steps.

    Each series starts from a zero state, as it did when it was new; a series with fewer
    buffered steps replays all it has.
    """
    states = []
    for a in range(0, len(slots), _RESYNC_ROWS):
        inputs, _, _, valid = buffer.read(torch.as_tensor(slots[a : a + _RESYNC_ROWS], device=buffer.device))
        states.append(replay(model, inputs[:, -steps:], valid[:, -steps:])[1])
    if not states:
        return model.initial_state(0, device=buffer.device)
    return torch.cat(states, dim=1)


def install(engine: Engine, model: Forecaster, version: int, steps: int = 0) -> None:
    """Serve `model` as `version` from the next batch on; with `steps`, recompute every series' state
    under it from its newest `steps` buffered steps (without a buffer the states carry over as they are).

    Call it between batches, from the thread that steps the engine.
    """
    engine.install(model, version)
    refresh(engine, engine.store.active, steps)


def refresh(engine: Engine, slots: np.ndarray, steps: int) -> None:
    """Recompute the states of `slots` under the serving model from their newest `steps` buffered steps (without
    steps or a buffer they stay as they are): for series whose state an older model computed."""
    if steps and engine.buffer is not None and len(slots):
        engine.store.set_states(slots, resync(engine.model, engine.buffer, slots, steps))
