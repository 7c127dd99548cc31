"""`forecaster tune`: a seeded search repeats itself, never reads the test part, and its YAML loads back."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from forecaster import config as config_module
from forecaster.cli import main
from forecaster.errors import ConfigError, ForecasterError
from forecaster.serving.records import decode
from forecaster.tools import tune
from forecaster.tools.backtest import backtest
from forecaster.tools.sources import file_records

from support import PretrainFolder

optuna = pytest.importorskip("optuna")

# A tiny space over a 2 x 8 GRU learning online from 300 hours: a trial takes seconds.
SMALL = (
    tune.Knob("model.hidden_size", (4, 8)),
    tune.Knob("retraining.learning_rate", (1e-3, 1e-2)),
    tune.Knob("retraining.young_steps", (5, 10)),
)
EXTRA = "retraining:\n  young_steps: 10\n  steps: 10\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return PretrainFolder(tmp_path_factory.mktemp("tune"), EXTRA)


def loaded(folder):
    config = config_module.load(folder.folder / "config.yaml")
    return config, config.pipeline("weather")


def observations(folder, values=None):
    """The hours as the pipeline's observations; `values` replaces the temperatures."""
    config, pipeline = loaded(folder)
    records = [json.dumps(r).encode() for r in file_records(folder.folder / "hours.csv", pipeline)]
    decoded, rejected = decode(records, pipeline.record)
    assert not rejected
    if values is not None:
        decoded = dataclasses.replace(decoded, values=values[:, None])
    return decoded


def searched(folder, given=None, seed=1, trials=2):
    config, pipeline = loaded(folder)
    given = observations(folder) if given is None else given
    return tune.search(config, pipeline, given, "hours", trials=trials, seed=seed, space=SMALL)


@pytest.fixture(scope="module")
def found(folder):
    """Two trials on the hours, seed 1: shared by the tests that only read them."""
    return searched(folder)


def signature(search: tune.Search) -> list[tuple]:
    return [(t.number, t.state, t.mase, t.settings) for t in search.trials]


def test_the_same_seed_gives_the_same_trials_and_scores(folder, found):
    assert signature(searched(folder)) == signature(found)
    assert [t.state for t in found.trials] == ["complete", "complete"]


def test_trial_0_is_the_pipeline_as_configured(found):
    assert found.trials[0].settings == {
        "model.hidden_size": 8,
        "retraining.learning_rate": 1e-3,
        "retraining.young_steps": 10,
    }
    assert found.baseline is found.trials[0]
    assert found.best.mase == min(t.mase for t in found.trials)


def test_the_test_part_is_never_read(folder, found):
    """Rows after the validation part changed beyond recognition leave every trial's settings and score alone."""
    given = observations(folder)
    part, kept, cut = tune.validation_part(loaded(folder)[1], given, tune.VALIDATION, "hours")
    assert kept + cut == len(given) and len(part) == kept == int(len(given) * tune.VALIDATION)
    values = given.values[:, 0].copy()
    values[kept:] = 1e3 * np.sin(np.arange(len(values) - kept))
    assert signature(searched(folder, observations(folder, values))) == signature(found)


def test_the_fragment_loads_back_into_the_pipeline(tmp_path, found):
    text = tune.fragment(found, "pipelines/weather.yaml", "config.yaml")
    assert text.startswith("# forecaster tune: best of 2 trials on hours")
    best = yaml.safe_load(text)
    other = PretrainFolder(tmp_path, EXTRA)  # a copy of the folder, its pipeline file rewritten
    pipeline_file = other.folder / "pipelines" / "weather.yaml"
    merged = yaml.safe_load(pipeline_file.read_text())
    for section, values in best.items():
        merged.setdefault(section, {}).update(values)
    pipeline_file.write_text(yaml.safe_dump(merged))
    pipeline = config_module.load(other.folder / "config.yaml").pipeline("weather")
    assert tune.own_settings(pipeline, SMALL) == found.best.settings


def test_a_backtest_reports_interim_scores_a_search_can_stop_it_at(folder):
    """backtest's interim scores come at a quarter, a half and three quarters of the origins; raising stops it."""
    config, pipeline = loaded(folder)
    seen = []

    def interim(step: int, mase: float) -> None:
        seen.append((step, mase))
        if step == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        backtest(config, pipeline, observations(folder), "hours", interim=interim)
    assert [step for step, _ in seen] == [1, 2]
    assert all(np.isfinite(mase) and mase > 0 for _, mase in seen)


def test_knob_values_that_would_not_load_are_left_out(folder):
    pipeline = loaded(folder)[1]
    pipeline = dataclasses.replace(
        pipeline,
        training=dataclasses.replace(pipeline.training, window=100, chunk=32),
        retraining=dataclasses.replace(pipeline.retraining, buffer=300, holdout=48),
    )
    (window,) = tune.space_for(pipeline, (tune.Knob("training.window", (96, 192, 336)),))
    assert window.values == (96, 100, 192)  # 336 leaves no room for the holdout; the pipeline's own 100 joins


def command(folder, data=None) -> list[str]:
    """`forecaster tune` of the weather pipeline on hours.csv (or `data`)."""
    data = folder.folder / "hours.csv" if data is None else data
    return ["tune", "-c", str(folder.folder / "config.yaml"), "--pipeline", "weather", "--file", str(data)]


def test_the_cli_prints_the_trials_and_the_yaml(folder, capsys):
    args = [*command(folder), "--trials", "1"]
    assert main(args) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].startswith("weather on ") and "(test part) were not read" in lines[0]
    assert lines[1].split()[:3] == ["trial", "state", "MASE"]
    assert lines[2].split()[:3] == ["0", "(own)", "complete"]
    assert "model:\n  cell: gru\n  hidden_size: 8\n" in out.out
    assert "trial 1/1: complete, MASE" in out.err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trials", "0"], "configuration error: --trials: expected a positive integer, got 0"),
        (["--validation", "1.5"], "configuration error: --validation: expected a share of the history in (0, 1)"),
        (["--dataset", "tmy3"], "configuration error: --dataset: expected one of msft, taylor, greensboro"),
    ],
)
def test_bad_options_are_configuration_errors(folder, capsys, extra, message):
    args = command(folder)
    if extra[0] == "--dataset":
        args = args[:-2]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_is_an_error_naming_it(folder, capsys):
    missing = folder.folder / "nothing.csv"
    args = [*command(folder, missing), "--trials", "1"]
    assert main(args) == 1
    assert capsys.readouterr().err == f"forecaster: {missing}: no such file\n"


def test_an_unknown_option_is_a_usage_error(folder, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*command(folder), "--trails", "3"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --trails 3" in capsys.readouterr().err


def test_without_optuna_the_error_names_the_extra(folder, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # an import of it raises ImportError
    with pytest.raises(ForecasterError, match=r"pip install 'forecaster-daemon\[tune\]'"):
        tune.optuna_module()
    assert main(command(folder)) == 1
    assert "forecaster tune needs Optuna" in capsys.readouterr().err


def test_a_pipeline_without_retraining_cannot_be_tuned(tmp_path):
    folder = PretrainFolder(tmp_path, "retraining:\n  enabled: false\n")
    config, pipeline = loaded(folder)
    with pytest.raises(ConfigError, match="retraining.enabled: expected true to tune"):
        tune.search(config, pipeline, observations(folder), "hours", trials=1, space=SMALL)


def test_the_docs_list_the_search_space():
    """docs/tuning.md's table of the space is SPACE's, path by path and value by value."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "tuning.md").read_text()
    section = page.split("## The search space")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{k.path}` | {', '.join(map(str, k.values))} |" for k in tune.SPACE]
