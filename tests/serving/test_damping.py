"""Damping towards the last value: measured per series on held-out steps, served per series, checkpointed."""

import dataclasses

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Retraining
from forecaster.learning import rounds
from forecaster.learning.rounds import Outcome
from forecaster.serving import damping
from forecaster.serving.engine import Engine

from support import make_pipeline, observations, random_walks

T0 = 1_600_000_000.0


def pipeline_with(damping_on=True, quantiles=(0.1, 0.5, 0.9)):
    pipeline = make_pipeline(quantiles=quantiles)
    return dataclasses.replace(
        pipeline, retraining=Retraining(enabled=True, buffer=300, holdout=8, resync_steps=8, damping=damping_on)
    )


def test_the_factor_is_the_least_squares_share_of_the_move_clipped_to_0_and_1():
    moves = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    actual = torch.tensor([[0.5, 1.0], [-1.0, -2.0], [3.0, 6.0], [9.0, 9.0]])
    mask = torch.tensor([[True, True], [True, True], [True, True], [False, False]])

    factors = damping.least_squares(moves, actual, mask)

    assert factors[:3].tolist() == [0.5, 0.0, 1.0]  # half the move; against it: the last value; more: the model
    assert torch.isnan(factors[3])  # no held-out target: no evidence either way


def test_damping_scales_the_move_and_shifts_the_quantiles_with_the_point():
    horizon = 2
    head = torch.tensor([[2.0, 4.0, 1.0, 3.0, 3.0, 5.0]])  # point, then quantiles 0.1 and 0.9

    damping.apply(head, torch.tensor([0.5]), horizon)

    assert head.tolist() == [[1.0, 2.0, 0.0, 1.0, 2.0, 3.0]]  # the point halved, the spread around it kept


def test_a_series_damped_to_zero_forecasts_its_last_value_and_the_others_are_untouched():
    pipeline = pipeline_with()
    plain, damped = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))
    data = observations(*random_walks(n_series=3, length=6))
    plain.step(data, now=0.0), damped.step(data, now=0.0)
    damped.damping.set(damped.store.slots(["s1"]), torch.tensor([0.0]))

    last = observations(["s0", "s1", "s2"], [T0 + 3600 * 10] * 3, [1.0, 2.0, 3.0])
    a, _ = plain.step(last, now=0.0)
    b, _ = damped.step(last, now=0.0)

    row = list(b.keys).index("s1")
    np.testing.assert_allclose(b.values[row], 2.0)  # every step: the last value
    width = lambda f, level: f.quantiles[level][row] - f.values[row]
    np.testing.assert_allclose(width(b, 0.9), width(a, 0.9), rtol=1e-5)  # the interval moved with the point
    others = [i for i, key in enumerate(b.keys) if key != "s1"]
    np.testing.assert_array_equal(b.values[others], a.values[others])


def test_the_factors_of_a_round_reach_only_the_series_still_in_their_slots():
    pipeline = pipeline_with()
    engine = Engine(pipeline, seeded_model(pipeline))
    engine.step(observations(*random_walks(n_series=2, length=3)), now=0.0)
    slots = engine.store.slots(["s0", "s1"])
    outcome = Outcome(
        challenger=engine.model,
        promoted=False,
        champion_loss=1.0,
        challenger_loss=1.0,
        training_loss=1.0,
        series=2,
        champion_damping=torch.tensor([0.25, 0.5]),
        slots=slots,
        keys=("s0", "another series that held s1's slot"),
    )

    rounds.adopt(engine, outcome)

    assert engine.damping.factors[slots].tolist() == [0.25, 1.0]


def test_the_factors_are_checkpointed_with_the_state():
    pipeline = pipeline_with()
    engine = Engine(pipeline, seeded_model(pipeline))
    engine.step(observations(*random_walks(n_series=2, length=3)), now=0.0)
    engine.damping.set(engine.store.slots(["s0", "s1"]), torch.tensor([0.3, float("nan")]))

    restored = Engine(pipeline, seeded_model(pipeline))
    restored.restore(engine.snapshot())

    assert restored.damping.factors[restored.store.slots(["s0", "s1"])].tolist() == [
        torch.tensor(0.3).item(),
        1.0,
    ]  # NaN (no evidence) left the factor at 1


def test_with_damping_off_the_model_serves_as_it_is():
    off, without_retraining = pipeline_with(damping_on=False), make_pipeline(quantiles=(0.1, 0.5, 0.9))
    engine, plain = Engine(off, seeded_model(off)), Engine(without_retraining, seeded_model(without_retraining))
    data = observations(*random_walks(n_series=3, length=6))

    a, _ = engine.step(data, now=0.0)
    b, _ = plain.step(data, now=0.0)

    assert engine.damping is None
    np.testing.assert_array_equal(a.values, b.values)
    for level in (0.1, 0.5, 0.9):
        np.testing.assert_array_equal(a.quantiles[level], b.quantiles[level])
