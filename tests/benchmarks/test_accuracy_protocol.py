"""The accuracy benchmark's protocol: ETTh2 persistence on its own split, and no look-ahead anywhere."""

import numpy as np
import pytest

from forecaster.evaluation import baselines

from support import benchmark

accuracy = benchmark("accuracy")


def quiet(*_):
    pass


def test_persistence_on_etth2_scores_its_known_figures_on_the_benchmarks_split():
    """Cumulative MSE 1.183, 1.769, 2.845 at horizons 24, 48, 96 on the 20:5:75 split of all 17,420 rows,
    z-normalised: the figures an earlier data/ett/README.md gave (it is not the published split)."""
    rows = accuracy.evaluate_dataset(accuracy.PROTOCOLS["etth2"], ["persistence"], accuracy.FULL, log=quiet)
    mse = {row["horizon"]: row["mse"] for row in rows}
    assert mse == pytest.approx({24: 1.183, 48: 1.769, 96: 2.845}, abs=0.005)
    assert all(row["stride"] == 1 and row["relative_mae"] == 1.0 for row in rows)


def test_etth2_is_normalised_with_the_first_20_percent_only():
    stream = accuracy.load_stream("etth2")
    leading = stream.y[: int(0.2 * len(stream))]
    np.testing.assert_allclose(leading.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(leading.std(axis=0), 1.0, atol=1e-9)
    assert len(stream) == 17420 and len(stream.channels) == 7


def test_each_ett_horizon_scores_the_origins_whose_targets_lie_in_the_test_part():
    rows = accuracy.evaluate_dataset(accuracy.PROTOCOLS["etth2"], ["persistence"], accuracy.FULL, log=quiet)
    test = 17420 - int(0.25 * 17420)
    assert {row["horizon"]: row["origins"] for row in rows} == {h: test - h + 1 for h in (24, 48, 96)}


# ../shared/data/ett/README.md, anchor 1: cumulative MSE at 24 / 48 / 96 on the published online split.
PUBLISHED_FIGURES = {
    ("etth1_published", "persistence"): (2.796, 2.932, 3.078),
    ("etth1_published", "seasonal_naive"): (0.926, 1.069, 1.231),
    ("etth2_published", "persistence"): (1.818, 2.852, 4.785),
    ("etth2_published", "seasonal_naive"): (2.561, 3.557, 5.430),
}


@pytest.mark.parametrize("dataset", accuracy.PUBLISHED)
def test_the_published_split_reproduces_the_readmes_persistence_and_seasonal_naive_figures(dataset):
    rows = accuracy.evaluate_dataset(
        accuracy.PROTOCOLS[dataset], ["persistence", "seasonal_naive"], accuracy.FULL, log=quiet
    )
    for method in ("persistence", "seasonal_naive"):
        mse = tuple(round(row["mse"], 3) for row in rows if row["method"] == method)
        assert mse == PUBLISHED_FIGURES[dataset, method]


def test_the_published_split_keeps_14400_rows_normalised_on_the_first_2880_and_tests_from_row_3600():
    protocol = accuracy.PROTOCOLS["etth2_published"]
    stream = accuracy.load_stream("etth2_published")
    leading = stream.y[:2880]
    np.testing.assert_allclose(leading.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(leading.std(axis=0), 1.0, atol=1e-9)
    assert len(stream) == 14400 and accuracy.split(protocol, len(stream)) == (2880, 3600)
    # a forecast after row t - 1 for every t from 3600 to 14400 - H
    at = accuracy.origin_set(protocol, len(stream), 1)
    assert at[0] == 3599 and at[-1] == 14400 - 24 - 1
    validation = accuracy.load_stream("etth2_published_validation")
    assert len(validation) == 3600 and accuracy.split(accuracy.VALIDATION["etth2_published_validation"], 3600) == (
        2880,
        2880,
    )


class Spy(baselines.Persistence):
    """Persistence that remembers what the harness showed it: the times of the rows, and how many at each forecast."""

    name = "spy"

    def __init__(self):
        super().__init__()
        self.times, self.rows_at_forecast = [], []

    def learn(self, rows):
        self.times.extend(rows.times.tolist())
        super().learn(rows)

    def forecast(self, horizon):
        self.rows_at_forecast.append(len(self.times))
        return super().forecast(horizon)


class Oracle:
    """Cheats through a side channel: forecasts the true rows t+1+shift .. t+H+shift after origin t."""

    name = "oracle"

    def __init__(self, stream, shift=0):
        self.stream, self.shift, self.learnt = stream, shift, 0

    def learn(self, rows):
        self.learnt += len(rows)

    def forecast(self, horizon):
        start = self.learnt + self.shift
        padded = np.concatenate([self.stream.y, np.full((horizon + 1, self.stream.y.shape[1]), np.nan)])
        return padded[start : start + horizon]


def run_with(monkeypatch, name, method, protocol="taylor"):
    real = accuracy.make_method
    monkeypatch.setattr(accuracy, "make_method", lambda n, p, s: method if n == name else real(n, p, s))
    return accuracy.evaluate_dataset(accuracy.PROTOCOLS[protocol], [name], accuracy.FULL, log=quiet)


def test_the_harness_never_shows_a_method_a_row_after_its_origin(monkeypatch):
    spy = Spy()
    run_with(monkeypatch, "spy", spy)
    stream = accuracy.load_stream("taylor")
    at = accuracy.origin_set(accuracy.PROTOCOLS["taylor"], len(stream), 1)
    assert spy.rows_at_forecast == (at + 1).tolist()
    assert spy.times == stream.times[: at[-1] + 1].tolist()


def test_scores_compare_each_forecast_with_the_steps_after_its_origin(monkeypatch):
    stream = accuracy.load_stream("taylor")
    exact = run_with(monkeypatch, "oracle", Oracle(stream))
    assert all(row["mae"] == 0.0 for row in exact)
    late = run_with(monkeypatch, "oracle", Oracle(stream, shift=-1))  # the forecast of t+h scored against t+h-1
    assert all(row["mae"] > 0.0 for row in late)


def test_rows_carry_every_field_with_null_where_a_metric_does_not_apply():
    rows = accuracy.evaluate_dataset(
        accuracy.PROTOCOLS["greensboro_temp"], ["seasonal_naive"], accuracy.FULL, log=quiet
    )
    fields = {"dataset", "horizon", "method", "mse", "mae", "mape", "mase", "smape", "coverage80", "origins", "stride"}
    assert all(fields <= row.keys() for row in rows)
    assert [row["horizon"] for row in rows] == list(range(1, 25)) + ["1-24"]
    assert all(row["mape"] is None and row["smape"] is None and row["coverage80"] is None for row in rows)
    y, origins = greensboro_second_half()
    assert rows[0]["mae"] == pytest.approx(np.abs(y[origins + 1] - y[origins + 1 - 24]).mean())
    assert rows[0]["relative_mae"] == pytest.approx(rows[0]["mae"] / np.abs(y[origins + 1] - y[origins]).mean())


def greensboro_second_half():
    """The temperatures and the origins scored, computed directly: targets from the second half on, 24 steps each."""
    y = accuracy.load_stream("greensboro_temp").y[:, 0]
    return y, np.arange(len(y) // 2 - 1, len(y) - 24)


def test_set_reads_each_value_as_yaml_into_a_network_field():
    overrides = accuracy._overrides(
        ["seed=1", "highway=false", "loss=mse", "lags=[24, 12]", "retrain_learning_rate=1e-3"]
    )
    assert overrides == {"seed": 1, "highway": False, "loss": "mse", "lags": (24, 12), "retrain_learning_rate": 1e-3}


@pytest.mark.parametrize("pair", ["colour=red", "seed"])
def test_set_refuses_what_is_not_a_network_field(pair):
    with pytest.raises(SystemExit, match="--set: expected FIELD=VALUE with FIELD one of cadence, calendar"):
        accuracy._overrides([pair])
