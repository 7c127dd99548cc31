"""The runbook's two ways back from a bad model, against the embedded broker: a refitted `model.weights` served at a
restart, then `forecaster models rollback` applied by the running daemon, each as the next version."""

import json
import logging
import threading

import pytest
import yaml

from forecaster import config as config_module
from forecaster.build import model_spec, save_model
from forecaster.cli import main
from forecaster.io import datasets
from forecaster.io.kafka import Sink
from forecaster.serving.model import Forecaster
from forecaster.tools.replay import messages

from kafka_support import deploy, read_topic, serving, wait_for

pytestmark = pytest.mark.kafka

FIRST, MORE = 200, 20  # MSFT's business days before the restart, and after each change


def test_a_refitted_weights_file_then_a_rollback_each_serve_as_the_next_version(broker, tmp_path, caplog):
    config = deploy(broker, tmp_path, pipelines=("stock",), changes={"stock": {"retraining": {"young_rounds": 0}}})
    pipeline = config.pipeline("stock")
    replayed = messages(datasets.load("msft"), pipeline.input_topic, limit=FIRST + 2 * MORE)
    deliver = lambda batch: Sink(config.settings.kafka).deliver(batch, threading.Event())
    deliver(replayed[:FIRST])
    with serving(config):
        first = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, FIRST)]
    shipped = first[-1]["model_version"]

    refitted = tmp_path / "refitted.pt"  # as `forecaster pretrain --out` would write it
    save_model(refitted, Forecaster(model_spec(pipeline)))
    path = tmp_path / "pipelines" / "stock.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["model"]["weights"] = str(refitted)
    path.write_text(yaml.safe_dump(spec))
    config = config_module.load(tmp_path / "config.yaml")
    caplog.set_level(logging.INFO)

    with serving(config) as daemon:
        worker = wait_for(lambda: daemon.workers and daemon.workers[0], 60, "the pipeline to start")
        assert worker.engine.model_version == shipped + 1
        deliver(replayed[FIRST : FIRST + MORE])
        adopted = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, FIRST + MORE)]

        rollback = ["models", "rollback", "-c", str(tmp_path / "config.yaml"), "--pipeline", "stock"]
        assert main([*rollback, "--version", str(shipped)]) == 0
        wait_for(lambda: worker.engine.model_version == shipped + 2, 60, "the rollback to be applied")
        deliver(replayed[FIRST + MORE :])
        rolled = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, FIRST + 2 * MORE)]

    assert {body["model_version"] for body in adopted[FIRST:]} == {shipped + 1}
    assert {body["model_version"] for body in rolled[FIRST + MORE :]} == {shipped + 2}
    assert f"model.weights {refitted} differs from the weights the checkpoint serves (version {shipped})" in caplog.text
    assert f"pipeline stock: rolled back to version {shipped} as version {shipped + 2}" in caplog.text
