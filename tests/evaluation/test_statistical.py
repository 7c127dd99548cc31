"""statsforecast's models as prequential methods: fitted on the network's schedule, never shown a later row."""

from dataclasses import replace

import numpy as np
import pytest

from forecaster.evaluation import prequential, statistical
from forecaster.evaluation.prequential import Stream

SEASONS = (12,)  # a short season, so that fits on 96 rows take a fraction of a second
WINDOW, EVERY, START = 96, 24, 120


def make_stream(length=260, channels=2, seed=0) -> Stream:
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    y = 10 + 3 * np.sin(2 * np.pi * t / 12 + np.arange(channels)) + np.cumsum(rng.normal(0, 0.2, (length, channels)), 0)
    times = 3600.0 * np.arange(length)
    return Stream(times, times, y, np.zeros((length, 0)), tuple(f"c{c}" for c in range(channels)))


def method(name):
    return statistical.Statistical(name, SEASONS, WINDOW, EVERY, START)


@pytest.mark.parametrize("name", statistical.MODELS)
def test_forecasts_up_to_an_origin_do_not_change_when_later_rows_do(name):
    stream, t = make_stream(length=210, channels=1), 170
    y = stream.y.copy()
    y[t + 1 :] = 1.5 * y[t + 1 :] + 4.0
    altered = replace(stream, y=y)
    at = np.arange(START - 1, 200, 6)
    original_method, altered_method = method(name), method(name)
    original = prequential.run(original_method, stream, at, 12)
    changed = prequential.run(altered_method, altered, at, 12)
    assert original_method.refits == 4  # fits at rows 120, 144 and 168 served the origins up to t, 192 later ones
    before = at <= t
    np.testing.assert_array_equal(original[before], changed[before])
    np.testing.assert_array_equal(
        np.array(original_method.intervals)[before], np.array(altered_method.intervals)[before]
    )
    assert not np.allclose(original[~before], changed[~before])  # the altered rows do reach later forecasts


def test_a_stride_gives_the_same_forecasts_at_its_origins_from_fewer_fits():
    stream = make_stream()
    every, sparse = method("autotheta"), method("autotheta")
    dense = prequential.run(every, stream, np.arange(START - 1, 240), 12)
    strided = prequential.run(sparse, stream, np.arange(START - 1, 240, 30), 12)
    np.testing.assert_array_equal(strided, dense[::30])
    assert len(sparse.fit_seconds) < len(every.fit_seconds)


class Recorder:
    """A stand-in for a statsforecast model: records what it is fitted on and applied to; forecasts its input's
    last value."""

    def __init__(self, log):
        self.log = log

    def fit(self, y):
        self.log.append(("fit", y.copy()))
        return self

    def forward(self, y, h, level):
        self.log.append(("forward", y.copy()))
        return {"mean": np.full(h, y[-1]), f"lo-{level[0]}": np.full(h, y[-1] - 1), f"hi-{level[0]}": np.full(h, y[-1])}


def test_fits_see_the_window_before_each_scheduled_row_and_forwards_start_at_its_phase(monkeypatch):
    log = []
    monkeypatch.setattr(statistical, "model", lambda *args: Recorder(log))
    monkeypatch.setattr(statistical, "describe", lambda fitted: "recorder")
    stream = make_stream(channels=1)
    m = statistical.Statistical("autoets", (12,), WINDOW, EVERY, START)
    prequential.run(m, stream, np.array([130, 165]), 3)
    y = stream.y[:, 0]
    fits = [y for kind, y in log if kind == "fit"]
    forwards = [y for kind, y in log if kind == "forward"]
    np.testing.assert_array_equal(fits[0], y[120 - WINDOW : 120])  # origin 130: 131 rows, scheduled at 120
    np.testing.assert_array_equal(fits[1], y[144 - WINDOW : 144])  # origin 165: 166 rows, scheduled at 144
    # forwards end at the origin and begin a whole number of seasons after the fitted window's first row, the
    # newest such row at least `window` rows back: 24 for origin 130; 48 + 12 for origin 165 (166 - 96 = 70)
    np.testing.assert_array_equal(forwards[0], y[24:131])
    np.testing.assert_array_equal(forwards[1], y[60:166])
    assert m.refits == 2 and len(m.fit_seconds) == 2


def test_a_failed_fit_serves_the_last_value_until_the_next_scheduled_fit(monkeypatch):
    class Failing(Recorder):
        def fit(self, y):
            raise ValueError("no model for this history")

    monkeypatch.setattr(statistical, "model", lambda *args: Failing([]))
    stream = make_stream(channels=1)
    m = statistical.Statistical("autoets", (12,), WINDOW, EVERY, START)
    forecasts = prequential.run(m, stream, np.array([130, 135]), 3)
    np.testing.assert_array_equal(forecasts[:, :, 0], np.repeat(stream.y[[130, 135], 0][:, None], 3, axis=1))
    assert m.failures == 1 and m.refits == 1  # one scheduled fit served both origins


def test_gaps_are_filled_by_the_value_before_and_too_few_values_give_no_history():
    np.testing.assert_array_equal(
        statistical.filled(np.array([np.nan, 2.0, np.nan, 4.0] + [5.0] * 8)), [2.0, 2.0, 2.0, 4.0] + [5.0] * 8
    )
    assert statistical.filled(np.array([1.0] * 9 + [np.nan] * 5)) is None


def test_the_single_season_models_take_the_shortest_season_the_history_holds_twice():
    assert statistical.model("autoets", (24, 168), 400).season_length == 24
    assert statistical.model("autoets", (24, 168), 40).season_length == 1
    assert statistical.model("mstl", (24, 168), 400).season_length == [24, 168]
    assert statistical.model("mstl", (24, 168), 300).season_length == [24]
    with pytest.raises(ValueError, match="unknown statsforecast model 'prophet'"):
        statistical.model("prophet", (24,), 400)


def test_describe_names_the_form_each_fit_chose():
    y = make_stream(length=120, channels=1).y[:, 0]
    assert statistical.describe(statistical.model("autoets", (12,), 120).fit(y)).startswith("ETS(")
    assert statistical.describe(statistical.model("mstl", (12,), 120).fit(y)).startswith("MSTL(12,) + ETS(")
