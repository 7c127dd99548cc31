"""`forecaster check`, `forecaster pretrain`'s bad arguments and the command line's help: exit codes and messages
a user reads."""

import importlib.metadata
import json
import re

import pytest

from forecaster import DISTRIBUTION
from forecaster.cli import main

from support import pipeline_yaml as pipeline

COMMANDS = ["run", "check", "replay", "pretrain", "backtest", "topics", "inspect", "reset", "models", "bench", "schema"]


@pytest.fixture
def config_dir(tmp_path):
    """A config with two pipelines that start from seeded weights (no weights files needed)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(pipeline("weather"))
    (tmp_path / "pipelines" / "solar.yaml").write_text(pipeline("solar").replace("cadence: 1h", "cadence: 30m"))
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n  - pipelines/solar.yaml\n")
    return tmp_path


def test_check_passes_a_valid_config_and_summarises_each_pipeline(config_dir, capsys):
    path = config_dir / "config.yaml"
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "weather: weather.in -> weather.out, gru 2x8, horizon 24 x 1h, quantiles 0.1/0.5/0.9, weights seeded, "
        "retraining every 20000 records",
        "solar: solar.in -> solar.out, gru 2x8, horizon 24 x 30m, quantiles 0.1/0.5/0.9, weights seeded, "
        "retraining every 20000 records",
        f"{path}: ok (2 pipelines)",
    ]
    assert err == ""


def test_check_names_a_pipelines_season(config_dir, capsys):
    (config_dir / "pipelines" / "weather.yaml").write_text(
        pipeline("weather").replace("  weights: null", "  weights: null\n  season: 24")
    )
    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "weather: weather.in -> weather.out, gru 2x8, horizon 24 x 1h, season 24, quantiles 0.1/0.5/0.9, "
        "weights seeded, "
        "retraining every 20000 records"
    )


def test_check_names_the_file_and_yaml_path_of_a_broken_pipeline(config_dir, capsys):
    broken = config_dir / "pipelines" / "solar.yaml"
    broken.write_text(broken.read_text().replace("hidden_size: 8", "hidden_size: -3"))
    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 2
    out, err = capsys.readouterr()
    assert err == f"forecaster: configuration error: {broken}: model.hidden_size: expected a positive integer, got -3\n"
    assert "ok" not in out


def test_check_asks_for_pretrain_when_a_weights_file_is_missing(config_dir, capsys):
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text().replace("weights: null", "weights: models/weather.pt"))
    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{weather}: model.weights: expected an existing weights file" in err
    assert "forecaster pretrain" in err and "--pipeline weather" in err


def test_check_rejects_a_training_dataset_that_pretrain_cannot_read(config_dir, capsys):
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text() + "training:\n  dataset: tmy3\n")
    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"forecaster: configuration error: {weather}: training.dataset: expected one of msft, taylor, greensboro, "
        "etth1, etth2, got 'tmy3'\n"
    )


def test_check_of_a_missing_config_file_fails_with_a_config_error(tmp_path, capsys):
    missing = tmp_path / "config.yaml"
    assert main(["check", "-c", str(missing)]) == 2
    assert capsys.readouterr().err == f"forecaster: configuration error: {missing}: file not found\n"


def pretrain_error(config_dir, capsys, *arguments: str) -> str:
    """What `forecaster pretrain` prints for a bad argument: it must exit 2 with one line, never a traceback."""
    argv = ["pretrain", "-c", str(config_dir / "config.yaml"), "--out", str(config_dir / "w.pt"), *arguments]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("forecaster: configuration error: ")
    assert not (config_dir / "w.pt").exists()
    return err.removeprefix("forecaster: configuration error: ").rstrip("\n")


def test_pretrain_of_an_unknown_pipeline_names_the_known_ones(config_dir, capsys):
    message = pretrain_error(config_dir, capsys, "--pipeline", "wether")
    assert message == f"{config_dir / 'config.yaml'}: no pipeline named 'wether' (known: weather, solar)"


def test_pretrain_of_an_unknown_dataset_names_the_known_ones(config_dir, capsys):
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather", "--dataset", "tmy3")
    assert message == "--dataset: expected one of msft, taylor, greensboro, etth1, etth2, got 'tmy3'"


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_pretrain_of_no_steps_is_refused(config_dir, capsys, steps):
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather", "--steps", steps)
    assert message == f"--steps: expected a positive integer, got {steps}"


def test_pretrain_refuses_a_training_dataset_it_cannot_read(config_dir, capsys):
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text() + "training:\n  dataset: tmy3\n")
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather")
    assert message == f"{weather}: training.dataset: expected one of msft, taylor, greensboro, etth1, etth2, got 'tmy3'"


def test_pretrain_without_the_data_folder_says_where_it_looked(config_dir, capsys, monkeypatch):
    monkeypatch.setenv("FORECASTER_DATA_DIR", str(config_dir / "data"))
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather", "--dataset", "greensboro")
    assert message.startswith(f"dataset greensboro: data folder {config_dir / 'data'} does not exist; set ")


def test_pretrain_on_a_dataset_of_other_records_names_the_first_misfit(config_dir, capsys):
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather", "--dataset", "greensboro")
    assert message == (
        "dataset greensboro: 8760 of 8760 records do not fit pipeline weather's record format "
        "(first, at 0: missing_field: temp: missing)"
    )


def test_pretrain_with_a_window_longer_than_the_training_part_names_both(config_dir, capsys):
    weather = config_dir / "pipelines" / "weather.yaml"
    text = weather.read_text().replace("target: temp", "target: drybulb_c")
    weather.write_text(text + "training:\n  dataset: greensboro\n  train_fraction: 0.02\n")
    message = pretrain_error(config_dir, capsys, "--pipeline", "weather")
    assert message == (
        f"{weather}: training.window: expected at most the 175 steps that train_fraction 0.02 leaves of dataset "
        "greensboro's longest series, got 256"
    )


def test_pretrain_reports_the_model_against_last_season_at_todays_level_and_the_last_value(config_dir, capsys):
    weather = config_dir / "pipelines" / "weather.yaml"
    text = weather.read_text().replace("target: temp", "target: drybulb_c").replace("weights: null", "season: 24")
    weather.write_text(text + "training:\n  dataset: greensboro\n  window: 48\n  chunk: 24\n  batch_size: 4\n")
    out = config_dir / "w.pt"

    config = str(config_dir / "config.yaml")
    assert main(["pretrain", "-c", config, "--pipeline", "weather", "--out", str(out), "--steps", "1"]) == 0

    number = r"[0-9.e+-]+"
    assert re.fullmatch(
        rf"wrote {re.escape(str(out))}: 1 step in \d+ s, final loss {number}; held-out one-step MAE model "
        rf"{number} vs last season at today's level {number}, last value {number}\n",
        capsys.readouterr().out,
    )


def test_topics_and_replay_count_in_words_that_agree_with_the_number(config_dir, capsys, monkeypatch):
    from forecaster.io import clients
    from forecaster.tools import replay

    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text() + "partitions: 1\n")
    monkeypatch.setattr(clients, "create_topics", lambda kafka, wanted, compacted=(): [name for name, _ in wanted])
    monkeypatch.setattr(replay, "replay", lambda *args, **kwargs: 1)
    config = str(config_dir / "config.yaml")

    assert main(["topics", "-c", config]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "weather.in: created with 1 partition",
        "weather.out: created with 1 partition",
    ]
    assert main(["replay", "-c", config, "taylor", "--topic", "weather.in", "--limit", "1"]) == 0
    assert capsys.readouterr().out == "published 1 record to weather.in\n"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: forecaster")
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: forecaster {command}")
    # bench reads no config: it measures this machine; models' actions (list, rollback, export) each take one
    assert ("--config" in out) == (command not in ("bench", "models"))


def test_no_command_prints_usage_and_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: forecaster")


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["forecast"])
    assert exited.value.code == 2
    assert "invalid choice: 'forecast'" in capsys.readouterr().err


def test_bench_hands_its_arguments_to_the_throughput_benchmark(capsys):
    assert main(["bench", "--", "--help"]) == 0
    assert "usage: throughput.py" in capsys.readouterr().out
    assert main(["bench", "--sections", "nothing"]) == 2
    assert "--sections: expected names among engine, daemon, latency" in capsys.readouterr().err


def test_version_prints_the_installed_distributions_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"forecaster {importlib.metadata.version(DISTRIBUTION)}"


def test_inspect_without_any_checkpoint_says_where_it_looked_and_fails(config_dir, capsys):
    assert main(["inspect", "-c", str(config_dir / "config.yaml"), "--state-dir", str(config_dir / "nothing")]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"weather: no checkpoint in {config_dir / 'nothing' / 'weather'}",
        f"solar: no checkpoint in {config_dir / 'nothing' / 'solar'}",
    ]
    assert f"no checkpoint under {config_dir / 'nothing'}; point --state-dir at" in err


def test_inspect_reads_the_checkpoints_of_the_state_dir_it_is_pointed_at(config_dir, capsys):
    from forecaster import config as config_module
    from forecaster.app import Checkpoints
    from forecaster.build import build_engine

    from support import observations

    loaded = config_module.load(config_dir / "config.yaml")
    weather = loaded.pipeline("weather")
    engine = build_engine(loaded, weather, "cpu")
    engine.step(observations(["KGSO", "KGSO"], [1.7e9, 1.7e9 + 3600], [[10.0], [11.0]]), now=0.0)
    Checkpoints(config_dir / "elsewhere" / "weather", weather).write(engine, {0: 2})

    assert main(["inspect", "-c", str(config_dir / "config.yaml"), "--state-dir", str(config_dir / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert "weather: checkpoint of" in out and "1 series" in out and "offsets {0: 2}" in out
    assert f"solar: no checkpoint in {config_dir / 'elsewhere' / 'solar'}" in out


def checkpoint_weather(config_dir) -> None:
    """A checkpoint of the weather pipeline as configured now, holding one series, in the config's state_dir."""
    from forecaster import config as config_module
    from forecaster.app import Checkpoints
    from forecaster.build import build_engine, pipeline_dir

    from support import observations

    loaded = config_module.load(config_dir / "config.yaml")
    weather = loaded.pipeline("weather")
    engine = build_engine(loaded, weather, "cpu")
    engine.step(observations(["KGSO", "KGSO"], [1.7e9, 1.7e9 + 3600], [[10.0], [11.0]]), now=0.0)
    Checkpoints(pipeline_dir(loaded, weather), weather).write(engine, {0: 2})


def test_check_says_what_a_restart_does_with_a_checkpoint_of_another_horizon(config_dir, capsys):
    checkpoint_weather(config_dir)
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text().replace("horizon: 24", "horizon: 12"))

    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        f"  checkpoint-000000000001.pt in {config_dir / 'state' / 'weather'}: horizon 24 -> 12: will migrate 1 "
        "series to model version 1 on the checkpoint's weights, head resized; kept: scaling, newest values, "
        "buffered steps, the combination's history; recurrent states kept (the network's body is unchanged); "
        "afresh: issued intervals, the combination's pending forecasts, gap-filling forecasts, "
        "the combination's weights"
    )
    assert lines[-1].endswith("ok (2 pipelines)")


def test_check_says_a_checkpoint_of_the_pipelines_own_model_resumes(config_dir, capsys):
    checkpoint_weather(config_dir)
    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"  checkpoint-000000000001.pt in {config_dir / 'state' / 'weather'}: resumes 1 series at model version 0"
    )


def test_check_refuses_a_checkpoint_that_cannot_migrate_in_one_line_with_exit_2(config_dir, capsys):
    checkpoint_weather(config_dir)
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text().replace("  target: temp", "  target: temp\n  covariates: [dew]"))

    assert main(["check", "-c", str(config_dir / "config.yaml")]) == 2

    err = capsys.readouterr().err
    assert err == (
        "forecaster: configuration error: pipeline weather: the record's features changed (the checkpoint scales 1 "
        f"per series, the pipeline 2), so its checkpoints in {config_dir / 'state' / 'weather'} cannot be migrated; "
        f"stop the daemon and run `forecaster reset -c {config_dir / 'config.yaml'} --pipeline weather` to start "
        "every series afresh\n"
    )


def test_reset_moves_the_pipelines_state_aside_so_the_next_start_is_afresh(config_dir, capsys):
    checkpoint_weather(config_dir)
    config = str(config_dir / "config.yaml")
    state = config_dir / "state"

    assert main(["reset", "-c", config, "--pipeline", "weather"]) == 0

    (aside,) = state.glob("weather.reset-*")
    assert not (state / "weather").exists() and list(aside.glob("checkpoint-*.pt"))
    assert capsys.readouterr().out.startswith(f"weather: moved {state / 'weather'} to {aside}; at the next start ")
    assert main(["check", "-c", config]) == 0
    assert "checkpoint-" not in capsys.readouterr().out
    assert main(["reset", "-c", config, "--pipeline", "weather"]) == 0
    assert capsys.readouterr().out == f"weather: nothing to reset, {state / 'weather'} does not exist\n"


def test_inspect_shows_a_checkpoint_of_another_model_as_a_restart_migrates_it(config_dir, capsys):
    checkpoint_weather(config_dir)
    weather = config_dir / "pipelines" / "weather.yaml"
    weather.write_text(weather.read_text().replace("hidden_size: 8", "hidden_size: 16"))

    assert main(["inspect", "-c", str(config_dir / "config.yaml"), "--pipeline", "weather", "--series", "KGSO"]) == 0

    out = capsys.readouterr().out
    assert "model version 1, 1 series" in out
    assert "  shown migrated, as a restart serves it: hidden_size 8 -> 16\n" in out
    assert "latest forecast (24 x 1h)" in out


def test_schema_prints_the_json_schema_of_a_pipelines_records(config_dir, capsys):
    assert main(["schema", "-c", str(config_dir / "config.yaml"), "--pipeline", "solar"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "solar forecast (nested)" and "quantiles" in schema["required"]


def test_schema_asks_which_pipeline_when_there_are_several(config_dir, capsys):
    assert main(["schema", "-c", str(config_dir / "config.yaml")]) != 0
    assert "--pipeline: expected one of ['weather', 'solar']" in capsys.readouterr().err
