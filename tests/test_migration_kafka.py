"""A shipped pipeline's horizon changed between two runs against the embedded broker: the daemon migrates its
checkpoint instead of failing, says so, keeps every series' scaling and forecasts the new horizon; a change that
cannot migrate is refused in one line."""

import json
import logging
import threading

import pytest
import yaml

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.errors import ConfigError
from forecaster.io import datasets
from forecaster.io.checkpoint import load_latest_checkpoint
from forecaster.io.kafka import Sink
from forecaster.tools.replay import messages

from kafka_support import deploy, read_topic, serving, wait_for

pytestmark = pytest.mark.kafka

FIRST, MORE = 300, 20  # MSFT's business days before and after the change
FEATURES = 2  # close and volume, each with a running mean and variance, then a count: a row's last columns


def changed(directory, **sections) -> config_module.Config:
    """The deployed config with the stock pipeline's file changed, as an operator edits it between runs."""
    path = directory / "pipelines" / "stock.yaml"
    spec = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        spec[section] = {**spec[section], **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(spec))
    return config_module.load(directory / "config.yaml")


def scaling(store: dict) -> dict:
    """Each series' scaling moments (mean, variance, count) in a store snapshot."""
    return {key: row[-(2 * FEATURES + 1) :].tolist() for key, row in zip(store["keys"], store["wide"])}


def test_a_new_horizon_migrates_the_checkpoint_keeping_every_series_scaling(broker, tmp_path, caplog):
    config = deploy(broker, tmp_path, pipelines=("stock",), changes={"stock": {"retraining": {"young_rounds": 0}}})
    pipeline = config.pipeline("stock")
    replayed = messages(datasets.load("msft"), pipeline.input_topic, limit=FIRST + MORE)
    Sink(config.settings.kafka).deliver(replayed[:FIRST], threading.Event())
    with serving(config):
        read_topic(broker.bootstrap, pipeline.output_topic, FIRST)
    before, _ = load_latest_checkpoint(tmp_path / "state" / "stock")
    version = before["engine"]["model"]["version"]

    caplog.set_level(logging.INFO, logger="forecaster.learning.migration")
    config = changed(tmp_path, horizon=10)
    with serving(config) as daemon:
        wait_for(lambda: daemon.ready()[0], 60, "the migrated pipeline to be ready")
        migrated = daemon.workers[0].engine.store.snapshot()  # nothing new consumed yet
        Sink(config.settings.kafka).deliver(replayed[FIRST:], threading.Event())
        bodies = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, FIRST + MORE)]

    assert scaling(migrated) == scaling(before["engine"]["store"]) and len(migrated["keys"]) >= 1
    (said,) = [r.getMessage() for r in caplog.records if r.name == "forecaster.learning.migration"]
    assert said.startswith(
        "pipeline stock: the model changed since the checkpoint (horizon 5 -> 10): migrated 1 series to model "
        f"version {version + 1} on the checkpoint's weights, head resized; kept: scaling, newest values, buffered steps"
    )
    new = [body for body in bodies if body["horizon"] == 10]
    assert len(new) == MORE and len(bodies) == FIRST + MORE
    assert all(len(body["values"]) == 10 and body["model_version"] == version + 1 for body in new)
    after, _ = load_latest_checkpoint(tmp_path / "state" / "stock")
    assert after["engine"]["model"]["spec"]["horizon"] == 10

    config = changed(tmp_path, record={"covariates": []})  # the scaling of volume would have no input to scale
    with pytest.raises(ConfigError) as refused:
        Daemon(config).run()
    assert str(refused.value).startswith("pipeline stock: the record's features changed")
    assert f"`forecaster reset -c {tmp_path / 'config.yaml'} --pipeline stock`" in str(refused.value)
