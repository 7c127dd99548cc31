"""`forecaster models list | rollback | export`: what an operator reads and what the files they write hold."""

import pytest
import torch
from test_cli_check import pipeline as pipeline_yaml

from forecaster import config as config_module
from forecaster.app import Checkpoints
from forecaster.build import build_engine, load_model, model_spec, pipeline_dir, save_model, seeded_model
from forecaster.cli import main
from forecaster.learning.history import ModelHistory
from forecaster.serving.model import Forecaster


@pytest.fixture
def served(tmp_path):
    """Pipeline weather serving version 2 (a checkpoint), versions 1 and 2 kept; returns the config's path."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(pipeline_yaml("weather"))
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    config = config_module.load(tmp_path / "config.yaml")
    pipeline = config.pipelines[0]
    engine = build_engine(config, pipeline, "cpu")
    torch.manual_seed(1)
    engine.install(Forecaster(model_spec(pipeline)), 2)
    history = ModelHistory(pipeline_dir(config, pipeline) / "models", keep=5)
    history.add(seeded_model(pipeline), 1, "promoted over version 0", {"champion_loss": 0.5, "challenger_loss": 0.4})
    history.add(engine.model, 2, "promoted over version 1", {"champion_loss": 0.4, "challenger_loss": 0.35})
    Checkpoints(pipeline_dir(config, pipeline), pipeline).write(engine, {0: 10})
    return tmp_path / "config.yaml"


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_list_shows_what_serves_and_each_kept_version_with_its_held_out_loss(served, capsys):
    assert main(["models", "list", "-c", str(served)]) == 0

    out = lines(capsys)
    assert out[0].startswith("weather: version 2 serves (in checkpoint-000000000001.pt); 2 versions kept in ")
    assert out[1].startswith(" * version 2  ") and out[1].endswith(
        "promoted over version 1; held-out loss 0.35 (was 0.4)"
    )
    assert out[2].startswith("   version 1  ") and out[2].endswith(
        "promoted over version 0; held-out loss 0.4 (was 0.5)"
    )
    assert len(out) == 3


def test_rollback_writes_a_request_that_list_shows_until_the_daemon_applies_it(served, capsys):
    assert main(["models", "rollback", "-c", str(served), "--pipeline", "weather", "--version", "1"]) == 0
    assert lines(capsys)[0].startswith("weather: rollback to version 1 requested (")

    assert ModelHistory(served.parent / "state" / "weather" / "models", keep=5).pending() == 1
    main(["models", "list", "-c", str(served)])
    assert lines(capsys)[-1] == "  rollback to version 1 requested: applied between batches, or at the next start"


def test_rollback_to_a_version_not_kept_fails_naming_those_kept(served, capsys):
    assert main(["models", "rollback", "-c", str(served), "--pipeline", "weather", "--version", "9"]) == 1
    err = capsys.readouterr().err
    assert "weather: version 9 is not kept in" in err and err.rstrip().endswith("(kept: 2, 1)")
    assert not (served.parent / "state" / "weather" / "models" / "rollback.json").exists()


def test_export_writes_the_serving_version_that_another_daemon_loads_as_its_model_weights(served, tmp_path, capsys):
    out = tmp_path / "exported.pt"
    assert main(["models", "export", "-c", str(served), "--pipeline", "weather", "--out", str(out)]) == 0
    assert lines(capsys) == [f"weather: wrote version 2 (promoted over version 1) to {out}"]

    config = config_module.load(served)
    model, metadata = load_model(out, expected=model_spec(config.pipelines[0]))
    torch.manual_seed(1)
    assert torch.equal(model.readout.weight, Forecaster(model_spec(config.pipelines[0])).readout.weight)
    assert metadata["version"] == 2 and metadata["pipeline"] == "weather" and metadata["model"]["hidden_size"] == 8

    other = pipeline_yaml("other").replace("weights: null", f"weights: {out}")
    (served.parent / "pipelines" / "other.yaml").write_text(other)
    (served.parent / "other.yaml").write_text("pipelines:\n  - pipelines/other.yaml\n")
    assert main(["check", "-c", str(served.parent / "other.yaml")]) == 0  # its weights load against its model


def test_export_of_a_kept_version(served, tmp_path, capsys):
    out = tmp_path / "v1.pt"
    assert (
        main(["models", "export", "-c", str(served), "--pipeline", "weather", "--version", "1", "--out", str(out)]) == 0
    )
    config = config_module.load(served)
    assert torch.equal(load_model(out)[0].readout.weight, seeded_model(config.pipelines[0]).readout.weight)


def test_models_without_an_action_prints_its_usage(capsys):
    assert main(["models"]) == 2
    assert capsys.readouterr().out.startswith("usage: forecaster models")


def test_check_says_a_restart_serves_a_changed_weights_file_as_the_next_version(served, capsys):
    config = config_module.load(served)
    torch.manual_seed(2)
    save_model(served.parent / "refitted.pt", Forecaster(model_spec(config.pipelines[0])))
    path = served.parent / "pipelines" / "weather.yaml"
    path.write_text(path.read_text().replace("weights: null", "weights: refitted.pt"))

    assert main(["check", "-c", str(served)]) == 0

    assert lines(capsys)[1] == (
        "  checkpoint-000000000001.pt in "
        f"{served.parent / 'state' / 'weather'}: resumes 0 series at model version 2, then serves model.weights "
        "refitted.pt as the next version (it differs from the checkpoint's weights)"
    )
