"""Online normalisation: exact running moments early on, exponentially weighted ones later, batched over series."""

import numpy as np
import pytest
import torch

from forecaster.serving.scaling import Moments, decay, scale, std, update


def run(x: np.ndarray, alpha: float) -> list[Moments]:
    """Feed x (T, n, features) one step at a time; the moments after each step."""
    moments = Moments.zeros(x.shape[1], x.shape[2], dtype=torch.float64)
    history = []
    for x_t in torch.from_numpy(x):
        moments = update(moments, x_t, alpha)
        history.append(moments)
    return history


def series(T=60, n=3, features=2, seed=0) -> np.ndarray:
    """Random series of different levels and spreads, (T, n, features)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-100, 100, size=(n, features))
    spread = rng.uniform(0.1, 10, size=(n, features))
    return level + spread * rng.standard_normal((T, n, features))


def test_decay_is_zero_without_a_halflife():
    assert decay(None) == 0.0


@pytest.mark.parametrize("halflife", [1.0, 10.0, 200.0])
def test_an_observation_weighs_half_as_much_after_one_halflife(halflife):
    alpha = decay(halflife)
    assert 0 < alpha < 1
    assert (1 - alpha) ** halflife == pytest.approx(0.5)


def test_without_a_halflife_the_moments_are_the_exact_mean_and_population_variance():
    x = series()
    for t, moments in enumerate(run(x, decay(None)), start=1):
        np.testing.assert_allclose(moments.mean.numpy(), x[:t].mean(axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(moments.var.numpy(), x[:t].var(axis=0), rtol=1e-9, atol=1e-9)
        assert moments.count.tolist() == [float(t)] * x.shape[1]


def test_with_a_halflife_the_first_observations_still_give_the_exact_mean():
    x = series(T=5)
    alpha = decay(20.0)  # 1/count stays above alpha for the first 29 observations
    for t, moments in enumerate(run(x, alpha), start=1):
        np.testing.assert_allclose(moments.mean.numpy(), x[:t].mean(axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(moments.var.numpy(), x[:t].var(axis=0), rtol=1e-9, atol=1e-9)


def weighted_moments(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of x (T, ...) computed directly with each observation's weight.

    Observation t enters with weight w_t = max(1/t, alpha) and every later observation s
    shrinks it by (1 - w_s): equal weights at first, exponential decay once warmed up.
    """
    T = len(x)
    w = np.maximum(1.0 / np.arange(1, T + 1), alpha)
    later = np.append(np.cumprod((1 - w)[::-1])[::-1][1:], 1.0)  # prod over s > t of (1 - w_s)
    a = (w * later)[:, None, None]
    mean = (a * x).sum(axis=0)
    return mean, (a * (x - mean) ** 2).sum(axis=0)


@pytest.mark.parametrize("T", [10, 40, 300])
def test_with_a_halflife_the_moments_are_the_weighted_moments(T):
    x = series(T=T, seed=T)
    alpha = decay(20.0)
    moments = run(x, alpha)[-1]
    mean, var = weighted_moments(x, alpha)
    np.testing.assert_allclose(moments.mean.numpy(), mean, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(moments.var.numpy(), var, rtol=1e-9, atol=1e-9)


def test_once_warmed_up_the_moments_converge_to_pure_exponential_weighting():
    x = series(T=1000, seed=7)
    alpha = decay(20.0)
    a = alpha * (1 - alpha) ** np.arange(len(x))[::-1]  # newest weighs alpha, each older (1 - alpha) less
    a = (a / a.sum())[:, None, None]
    mean = (a * x).sum(axis=0)
    var = (a * (x - mean) ** 2).sum(axis=0)
    moments = run(x, alpha)[-1]
    np.testing.assert_allclose(moments.mean.numpy(), mean, rtol=1e-9)
    np.testing.assert_allclose(moments.var.numpy(), var, rtol=1e-9)
    # ... and it forgets: the exact all-history mean is a different number
    assert not np.allclose(moments.mean.numpy(), x.mean(axis=0), rtol=1e-3)


def test_a_constant_series_has_a_std_floor_relative_to_its_level():
    x = np.full((50, 2, 1), 0.0)
    x[:, 0, 0] = 100.0
    moments = run(x, decay(20.0))[-1]
    assert moments.var.tolist() == [[0.0], [0.0]]
    np.testing.assert_allclose(std(moments).numpy(), [[1e-3 * 100.0 + 1e-6], [1e-6]], rtol=1e-12)
    # a small move after a flat stretch is a small scaled input, not a huge one
    scaled = scale(moments, torch.tensor([[100.05], [0.0]], dtype=torch.float64), clip=8.0)
    np.testing.assert_allclose(scaled.numpy(), [[0.05 / 0.100001], [0.0]], rtol=1e-6)


def test_std_is_the_square_root_of_the_variance_above_the_floor():
    moments = Moments(
        mean=torch.tensor([[10.0]], dtype=torch.float64),
        var=torch.tensor([[4.0]], dtype=torch.float64),
        count=torch.tensor([5.0], dtype=torch.float64),
    )
    assert std(moments).tolist() == [[2.0]]


def test_scale_standardises_and_clips():
    moments = Moments(
        mean=torch.tensor([[10.0, 0.0]] * 3, dtype=torch.float64),
        var=torch.tensor([[4.0, 1.0]] * 3, dtype=torch.float64),
        count=torch.tensor([9.0] * 3, dtype=torch.float64),
    )
    x = torch.tensor([[12.0, -1.5], [1000.0, 3.0], [-1000.0, -3.0]], dtype=torch.float64)
    assert scale(moments, x, clip=2.5).tolist() == [[1.0, -1.5], [2.5, 2.5], [-2.5, -2.5]]


def test_a_batched_update_equals_updating_each_series_alone():
    x = series(T=30, n=4)
    alpha = decay(5.0)
    together = run(x, alpha)[-1]
    for i in range(x.shape[1]):
        alone = run(x[:, i : i + 1], alpha)[-1]
        assert torch.equal(together.mean[i : i + 1], alone.mean)
        assert torch.equal(together.var[i : i + 1], alone.var)
        assert torch.equal(together.count[i : i + 1], alone.count)


def test_series_at_different_counts_update_together_as_they_would_alone():
    x = series(T=12, n=2)
    alpha = decay(5.0)
    warm = run(x[:10, :1], alpha)[-1]  # series 0 has seen 10 observations
    fresh = Moments.zeros(1, 2, dtype=torch.float64)  # series 1 none
    batch = Moments(
        mean=torch.cat([warm.mean, fresh.mean]),
        var=torch.cat([warm.var, fresh.var]),
        count=torch.cat([warm.count, fresh.count]),
    )
    x_t = torch.from_numpy(np.stack([x[10, 0], x[0, 1]]))
    together = update(batch, x_t, alpha)
    assert torch.equal(together.mean[:1], update(warm, x_t[:1], alpha).mean)
    assert torch.equal(together.mean[1:], x_t[1:])  # a first observation is its own mean
    assert together.var[1:].tolist() == [[0.0, 0.0]]
    assert together.count.tolist() == [11.0, 1.0]


def test_update_and_scale_do_not_mutate_their_inputs():
    moments = run(series(T=5, n=2), decay(3.0))[-1]
    before = (moments.mean.clone(), moments.var.clone(), moments.count.clone())
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    x_before = x.clone()
    updated = update(moments, x, decay(3.0))
    scale(moments, x, clip=1.0)
    std(moments)
    assert torch.equal(moments.mean, before[0]) and torch.equal(moments.var, before[1])
    assert torch.equal(moments.count, before[2]) and torch.equal(x, x_before)
    assert not torch.equal(updated.mean, moments.mean)
