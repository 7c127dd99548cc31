"""`forecaster pretrain --file` and `--init`: a model pretrained on one's own file, or on from earlier weights."""

import csv
import dataclasses
import json

import pytest
import torch

from forecaster import config as config_module
from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.cli import main
from forecaster.io import datasets
from forecaster.learning import pretrain

from support import pipeline_yaml

TRAINING = "training:\n  window: 48\n  chunk: 24\n  batch_size: 4\n  steps: 3\n"


@pytest.fixture
def setup(tmp_path):
    """A config with one small pipeline, and 300 hours of Greensboro's temperature as a CSV (date, temperature)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(pipeline_yaml("weather", TRAINING))
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    with (tmp_path / "hours.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "temperature"])
        writer.writerows([r["time"], r["drybulb_c"]] for r in datasets.load("greensboro").records[:300])
    return tmp_path


def pretrain_file(setup, *extra: str) -> int:
    config, data = str(setup / "config.yaml"), str(setup / "hours.csv")
    argv = ["pretrain", "-c", config, "--pipeline", "weather", "--file", data, "--map", "time=date"]
    return main([*argv, "--map", "temp=temperature", *extra])


def test_pretrain_on_a_file_writes_weights_that_name_the_file(setup, capsys):
    out = setup / "w.pt"
    assert pretrain_file(setup, "--out", str(out)) == 0
    pipeline = config_module.load(setup / "config.yaml").pipeline("weather")
    model, metadata = load_model(out, expected=model_spec(pipeline))
    assert metadata["dataset"] == str(setup / "hours.csv") and metadata["steps"] == 3
    assert not torch.equal(model.readout.weight, seeded_model(pipeline).readout.weight)
    assert capsys.readouterr().out.startswith(f"wrote {out}: 3 steps")


def payloads(setup) -> list[bytes]:
    return [
        json.dumps({"station": "g", "time": r["time"], "temp": r["drybulb_c"]}).encode()
        for r in datasets.load("greensboro").records[:300]
    ]


def test_init_starts_from_the_weights_given_not_the_seeded_ones(setup, monkeypatch):
    config = config_module.load(setup / "config.yaml")
    pipeline = config.pipeline("weather")
    earlier = seeded_model(pipeline)
    with torch.no_grad():
        earlier.readout.weight.add_(1.0)  # weights no seed gives
    save_model(setup / "earlier.pt", earlier)
    monkeypatch.setattr(pretrain, "fit", lambda *args, **kwargs: [0.0])  # no training: what is saved is the start

    pretrain.pretrain(
        config, pipeline, payloads=payloads(setup), source="g", init=setup / "earlier.pt", out=setup / "from_earlier.pt"
    )
    pretrain.pretrain(config, pipeline, payloads=payloads(setup), source="g", out=setup / "from_seed.pt")

    started, metadata = load_model(setup / "from_earlier.pt")
    assert torch.equal(started.readout.weight, earlier.readout.weight) and metadata["init"] == str(setup / "earlier.pt")
    assert torch.equal(load_model(setup / "from_seed.pt")[0].readout.weight, seeded_model(pipeline).readout.weight)


def test_init_with_weights_of_another_model_is_refused(setup, capsys):
    pipeline = config_module.load(setup / "config.yaml").pipeline("weather")
    wider = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, hidden_size=16))
    save_model(setup / "bigger.pt", seeded_model(wider))
    assert pretrain_file(setup, "--init", str(setup / "bigger.pt"), "--out", str(setup / "w.pt")) == 2
    assert "the weights are for another model than the pipeline configures" in capsys.readouterr().err
    assert not (setup / "w.pt").exists()


def test_only_one_source_at_a_time(setup, capsys):
    assert pretrain_file(setup, "--dataset", "greensboro") == 2
    assert capsys.readouterr().err == (
        "forecaster: configuration error: expected one of --dataset, --file and --topic, got --dataset and --file\n"
    )


def test_pretrain_on_a_monthly_file_with_month_features_in_a_zone_writes_weights_its_pipeline_loads(tmp_path, capsys):
    calendar = "calendar:\n  month_of_year: true\n  week_of_year: true\ncadence_tz: Europe/London\n"
    text = pipeline_yaml("sales", TRAINING + calendar).replace("cadence: 1h", "cadence: 1M")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "sales.yaml").write_text(text)
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/sales.yaml\n")
    with (tmp_path / "sales.csv").open("w", newline="") as f:
        months = [f"{2001 + k // 12}-{k % 12 + 1:02d}-01T00:00:00+00:00" for k in range(120)]
        csv.writer(f).writerows([["month", "sales"], *((m, 100 + k % 12) for k, m in enumerate(months))])
    out = tmp_path / "w.pt"
    argv = [
        "pretrain",
        "-c",
        str(tmp_path / "config.yaml"),
        "--pipeline",
        "sales",
        "--file",
        str(tmp_path / "sales.csv"),
    ]
    assert main([*argv, "--map", "time=month", "--map", "temp=sales", "--out", str(out)]) == 0
    pipeline = config_module.load(tmp_path / "config.yaml").pipeline("sales")
    model, _ = load_model(out, expected=model_spec(pipeline))
    assert model_spec(pipeline).input_size == 1 + 4  # the value, and two sine/cosine pairs
    assert capsys.readouterr().out.startswith(f"wrote {out}: 3 steps")


def test_missing_values_in_the_file_are_left_out_of_training_not_learnt_as_nan(setup, capsys):
    data = setup / "hours.csv"
    lines = data.read_text().splitlines()
    for i in (20, 150, 151):  # empty cells: null readings
        lines[i] = lines[i].split(",")[0] + ","
    data.write_text("\n".join(lines) + "\n")
    out = setup / "w.pt"
    assert pretrain_file(setup, "--out", str(out)) == 0
    model, _ = load_model(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "nan" not in capsys.readouterr().out
