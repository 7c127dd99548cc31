"""What a checkpoint or a changelog holds, for people: pipelines, model version, series, and one series in detail.

Pure functions over a restored engine, and the reading of a changelog into one; the
`forecaster inspect` command prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from forecaster.build import build_engine, changelog_topic
from forecaster.config import Config, Pipeline
from forecaster.io.clients import read_partition
from forecaster.serving import damping, handover, scaling
from forecaster.serving.cadence import horizon_times, step_numbers, to_local
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster


def changelog_state(config: Config, pipeline: Pipeline, partitions: list[int]) -> tuple[Engine, dict]:
    """The series of `partitions` as the pipeline's changelog holds them, in a fresh engine, and partition ->
    `handover.Restored`: what a member given those partitions would serve."""
    engine = build_engine(config, pipeline, "cpu")  # the starting weights, as a member with the changelog starts
    topic, committed = changelog_topic(config, pipeline), pipeline.checkpoint.exactly_once  # as a restore reads it
    restored = {
        partition: handover.restore(
            engine, partition, read_partition(config.settings.kafka, topic, partition, committed)
        )
        for partition in partitions
    }
    return engine, restored


def top_output(model: Forecaster, state: torch.Tensor) -> torch.Tensor:
    """The top layer's last output, rebuilt from the carried state (layers, n, width) -> (n, hidden).

    At inference (no dropout) layer l's output is its h, plus, with residual connections,
    the output of the layer below: so the top output is h of the top layer, or the sum of
    every layer's h. With attention over recent outputs the state keeps that output as its
    ring's newest, and the top output is the attention over the ring.
    """
    if model.attention is not None:
        return model.attention(model.ring(state))
    hidden = model.spec.hidden_size
    h = state[..., :hidden]  # LSTM carries [h | c]; the output is h
    return h.sum(dim=0) if model.spec.residual else h[-1]


@dataclass(frozen=True)
class SeriesView:
    key: str
    last_time: float
    last_value: float
    mean: float
    std: float
    state_norms: list[float]  # L2 norm of each layer's state
    forecast_times: list[float]
    forecast_values: list[float]  # the forecast made after the series' newest observation; [] if not rebuildable


@torch.no_grad()
def series_view(engine: Engine, key: str, partition: int | None = None) -> SeriesView:
    """One series as its checkpoint holds it, with the forecast its newest observation produced.

    `partition`, the input partition the series comes from, picks the combination's learner where
    there are several (a changelog knows it, a local checkpoint does not)."""
    store = engine.store
    if key not in store:
        raise KeyError(key)
    slot = torch.as_tensor([store.slots([key])[0]], device=store.device)
    state, moments = store.gather(slot)  # (layers, 1, width)
    std = scaling.std(moments)  # (1, features)
    s = slot.cpu().numpy()
    last_time, (values, _) = float(store.newest_times()[s][0]), store.remembered(s)
    last_value = float(values[0])
    # the state keeps no UTC offset: the local time is the cadence's zone's, else UTC's
    last, last_local = np.array([last_time]), to_local(np.array([last_time]), 0.0, engine.cadence)
    times = horizon_times(last, last_local, engine.cadence, engine.pipeline.horizon)[0]
    inputs = newest_inputs(engine, slot)
    values = []
    if inputs is not None:
        head = engine.model.head(top_output(engine.model, state), inputs)
        if engine.damping is not None:
            damping.apply(head, engine.damping.factors[slot], engine.pipeline.horizon)
        deltas = std[:, :1] * head[:, : engine.pipeline.horizon]  # the point forecast
        if engine.season is not None:  # last season's values, moved to today's level
            deltas = deltas + engine.season.read(slot, engine.pipeline.horizon)[1]
        deltas = deltas.cpu().numpy()[0]
        values = last_value + deltas
        learners = {} if engine.combination is None else engine.combination.learners
        if partition is None and len(learners) == 1:
            partition = next(iter(learners))
        if partition in learners:  # served combined with the simple experts, at the partition's weights now
            step = step_numbers(last, last_local, engine.cadence)
            values = engine.combination.forecast(partition, s, step, np.array([last_value]), values[None, :])[0]
        elif learners:  # which partition the series came from is not known
            values = np.array([])
        values = values.tolist()
    return SeriesView(
        key=key,
        last_time=last_time,
        last_value=last_value,
        mean=float(moments.mean[0, 0]),
        std=float(std[0, 0]),
        state_norms=[float(x) for x in state[:, 0].norm(dim=-1)],
        forecast_times=times.tolist(),
        forecast_values=values,
    )


def newest_inputs(engine: Engine, slot: torch.Tensor) -> torch.Tensor | None:
    """The model inputs (1, input_size) of the series' newest step, as far as the forecast needs them.

    Only a highway reads them (the recurrent part is all in the state), and the engine keeps
    them only in the window buffer, with retraining on: None where they are needed but gone.
    """
    if engine.model.highway is None:
        return torch.zeros(1, engine.model.spec.input_size, device=slot.device)
    if engine.buffer is None or int(engine.buffer.written[slot]) == 0:
        return None
    return engine.buffer.read(slot)[0][:, -1]
