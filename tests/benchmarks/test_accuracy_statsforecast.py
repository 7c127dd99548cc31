"""The accuracy benchmark's statsforecast run: the network's schedule, its own results file, rows that say what it
cost."""

from dataclasses import replace

import pytest

from support import benchmark

accuracy = benchmark("accuracy")


def test_the_models_refit_where_the_networks_rounds_run_and_autoarima_at_every_fourth_on_ett():
    protocol = accuracy.PROTOCOLS["etth2"]
    autoets = accuracy.make_method("autoets", protocol, accuracy.STATISTICAL)
    autoarima = accuracy.make_method("autoarima", protocol, accuracy.STATISTICAL)
    assert autoets.start == autoarima.start == int(0.2 * 17420)  # first fitted on what the network is pretrained on
    assert autoets.every == protocol.network.every == 168 and autoarima.every == 4 * 168
    assert autoets.window == 672 and autoets.seasons == (24, 168)


def test_autoarima_is_not_run_on_taylor():
    with pytest.raises(NotImplementedError, match="AutoARIMA is not run"):
        accuracy.make_method("autoarima", accuracy.PROTOCOLS["taylor"], accuracy.STATISTICAL)


def test_rows_carry_the_fits_their_cost_and_statsforecasts_own_interval_coverage():
    sparse = replace(accuracy.STATISTICAL, stride_factor={"msft": 200})  # origins further apart than rounds
    rows = accuracy.evaluate_dataset(accuracy.PROTOCOLS["msft"], ["autotheta"], sparse, log=lambda *_: None)
    assert [row["horizon"] for row in rows] == [1, 5]
    for row in rows:
        assert row["method"] == "autotheta" and row["stride"] == 200
        assert row["window"] == 500 and row["refit_every"] == 60
        assert row["fits"] == row["origins"]  # one channel, and every origin past a round of its own
        assert 0.0 <= row["fit_seconds"] <= row["fit_seconds_total"]
        assert sum(row["selected"].values()) == row["fits"]
        assert all(form.startswith("Theta(") for form in row["selected"])
        assert 0.0 <= row["coverage80"] <= 1.0


def test_the_statsforecast_run_writes_a_file_of_its_own():
    assert accuracy.results_name("accuracy_statsforecast", False, False, False) == "accuracy_statsforecast.json"
    assert accuracy.results_name("accuracy_statsforecast", False, False, True) == "accuracy_statsforecast_quick.json"
