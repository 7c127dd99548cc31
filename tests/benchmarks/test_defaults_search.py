"""The defaults search: trials scored on several held-out sets' validation quarters, trial 0 the defaults."""

import json
import math

import pytest

from support import benchmark

defaults_search = benchmark("defaults_search")


def test_trial_zero_is_the_defaults_and_each_trial_scores_the_geometric_mean_of_its_sets(tmp_path):
    out = tmp_path / "defaults_search.json"
    argv = ["--datasets", "births,chicago", "--trials", "2", "--rows", "240", "--workers", "1", "--out", str(out)]

    assert defaults_search.main(argv) == 0

    result = json.loads(out.read_text())
    first, second = result["trials"]
    assert first["settings"] == result["defaults"]
    assert first["settings"]["retraining.every_records"] == 20_000  # the default's own value, in the panels' grid
    assert second["settings"] != first["settings"]
    for trial in (first, second):
        if trial["state"] == "complete":
            assert set(trial["mase"]) == {"births", "chicago"}
            assert trial["score"] == pytest.approx(math.sqrt(trial["mase"]["births"] * trial["mase"]["chicago"]))
    assert result["best"] in (0, 1)
    if result["best"] == 1:  # its changes split into the network's and the training's, each on the defaults
        for ablation in result["ablations"].values():
            assert set(ablation["mase"]) == {"births", "chicago"}
            assert all(second["settings"][p] == v for p, v in ablation["settings"].items())


def test_a_smoke_run_keeps_each_sets_first_rows():
    panel = defaults_search.generalisation.LOADERS["births"]()
    cut = defaults_search.leading(panel, 100)

    assert len(cut.times) == len(cut.inputs) == len(cut.truth) == 100
    assert cut.keys == panel.keys
