"""The daemon end to end against a real Kafka-protocol broker, on real replayed data."""

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime

import numpy as np
import pytest

from forecaster.app import Daemon
from forecaster.build import build_engine
from forecaster.io import datasets
from forecaster.io.checkpoint import load_latest_checkpoint
from forecaster.io.kafka import Sink
from forecaster.io.messages import Message
from forecaster.serving.cadence import step_seconds
from forecaster.tools.inspection import series_view
from forecaster.tools.replay import replay

from kafka_support import REPO, deploy, metrics_url, read_topic, scrape

pytestmark = pytest.mark.kafka

LIMITS = {"stock": 300, "weather": 400, "power_load": 1000}

BAD_RECORDS = [
    (b"\xff\xfe", "malformed"),
    (b'{"symbol": "MSFT", "time": "1986-03-13T00:00:00+00:00"}', "missing_field"),
    (b'{"symbol": "MSFT", "time": "1986-03-13T00:00:00+00:00", "close": "high", "volume": 1}', "wrong_type"),
    (b'{"symbol": "MSFT", "time": "1986-03-13T00:00:00+00:00", "close": NaN, "volume": 1}', "non_finite"),
    (b'{"symbol": "MSFT", "time": "yesterday", "close": 1.0, "volume": 1}', "bad_timestamp"),
]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def check_forecasts(pipeline, dataset, forecasts):
    """One forecast per input record, keyed by series, horizon steps at the cadence, finite, in the data's units."""
    inputs = dataset.records[: LIMITS[pipeline.name]]
    assert len(forecasts) == len(inputs)
    assert sorted(epoch(json.loads(f.value)["time"]) for f in forecasts) == sorted(epoch(r["time"]) for r in inputs)
    actual = np.array([r[dataset.target_field] for r in inputs])
    low, high = actual.min(), actual.max()
    spread = high - low
    for record in forecasts:
        body = json.loads(record.value)
        assert record.key.decode() == body["series"] == str(inputs[0][dataset.key_field])
        assert body["pipeline"] == pipeline.name and body["target"] == pipeline.record.target
        assert body["horizon"] == pipeline.horizon == len(body["values"]) == len(body["times"])
        times = np.array([epoch(body["time"])] + [epoch(t) for t in body["times"]])
        if pipeline.cadence[-1] != "b":
            np.testing.assert_allclose(np.diff(times), step_seconds(pipeline.cadence))
        else:
            assert np.all(np.diff(times) >= 86400)  # business days: at least a day apart
        values = np.array(body["values"])
        assert np.all(np.isfinite(values))
        assert np.all((values > low - spread) & (values < high + spread)), "forecasts must be in the series' units"


def test_the_daemon_forecasts_every_record_of_real_data_and_dead_letters_bad_ones(broker, tmp_path):
    config = deploy(broker, tmp_path)
    kafka = config.settings.kafka
    for pipeline in config.pipelines:
        replay(kafka, pipeline.training.dataset, pipeline.input_topic, limit=LIMITS[pipeline.name])
    stock = config.pipeline("stock")
    Sink(kafka).deliver([Message(stock.input_topic, b"MSFT", bad) for bad, _ in BAD_RECORDS], threading.Event())

    daemon = Daemon(config)
    exit_codes = []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        for pipeline in config.pipelines:
            forecasts = read_topic(broker.bootstrap, pipeline.output_topic, LIMITS[pipeline.name])
            check_forecasts(pipeline, datasets.load(pipeline.training.dataset), forecasts)
        dead = read_topic(broker.bootstrap, stock.dead_letter_topic, len(BAD_RECORDS))
        assert sorted((r.value, dict(r.headers)["forecaster.reason"].decode()) for r in dead) == sorted(BAD_RECORDS)

        samples = scrape(metrics_url(config) + "/metrics")
        value = lambda name, **labels: samples[(name, frozenset(labels.items()))]
        for pipeline in config.pipelines:
            assert value("forecaster_forecasts_produced_total", pipeline=pipeline.name) == LIMITS[pipeline.name]
            assert value("forecaster_active_series", pipeline=pipeline.name) == 1
            assert np.isfinite(value("forecaster_one_step_mae", pipeline=pipeline.name, forecaster="model"))
        for _, reason in BAD_RECORDS:
            assert value("forecaster_records_rejected_total", pipeline="stock", reason=reason) == 1
        assert value("forecaster_records_consumed_total", pipeline="stock") == LIMITS["stock"] + len(BAD_RECORDS)
    finally:
        daemon.stop()
        runner.join(60)
    assert exit_codes == [0]


def test_the_cli_creates_topics_replays_runs_and_stops_cleanly_on_sigterm(broker, tmp_path):
    config = deploy(broker, tmp_path, pipelines=("power_load",), create=False)
    cli = [sys.executable, "-m", "forecaster.cli"]
    cfg = ["-c", str(config.path)]
    created = subprocess.run(cli + ["topics"] + cfg, capture_output=True, text=True, check=True)
    assert "created with 3 partitions" in created.stdout
    pipeline = config.pipeline("power_load")
    subprocess.run(
        cli + ["replay", "taylor", "--topic", pipeline.input_topic, "--limit", "200"] + cfg,
        capture_output=True,
        check=True,
        cwd=REPO,
    )

    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(cli + ["run"] + cfg, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        forecasts = read_topic(broker.bootstrap, pipeline.output_topic, 200)
        assert len(forecasts) == 200
        url = metrics_url(config)
        assert urllib.request.urlopen(url + "/healthz").status == 200
        assert urllib.request.urlopen(url + "/readyz").status == 200
        assert scrape(url + "/metrics")[("forecaster_pipeline_up", frozenset({("pipeline", "power_load")}))] == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
    log = log_path.read_text()
    assert code == 0, log
    assert "received SIGTERM" in log and "stopped" in log
    # The stop wrote a checkpoint whose offsets cover every record consumed.
    checkpoint, _ = load_latest_checkpoint(tmp_path / "state" / "power_load")
    assert sum(checkpoint["offsets"].values()) == 200
    assert checkpoint["engine"]["store"]["keys"] == ["england_wales"]

    # `forecaster inspect` rebuilds, from the checkpoint alone, the forecast the newest record produced.
    engine = build_engine(config, pipeline, "cpu")
    engine.restore(checkpoint["engine"])
    view = series_view(engine, "england_wales")
    newest = max((json.loads(f.value) for f in forecasts), key=lambda body: epoch(body["time"]))
    np.testing.assert_allclose(view.forecast_values, newest["values"], rtol=1e-5)
    assert [epoch(t) for t in newest["times"]] == view.forecast_times
    shown = subprocess.run(
        cli + ["inspect", "--series", "england_wales"] + cfg, capture_output=True, text=True, cwd=REPO
    )
    assert shown.returncode == 0, shown.stderr
    assert "power_load: checkpoint of" in shown.stdout and "1 series" in shown.stdout
    assert "intervals moved out by" in shown.stdout and "(tracking, step 1 .. 48)" in shown.stdout
    assert f"{newest['values'][0]:.6g}" in shown.stdout


def test_run_refuses_to_start_when_its_topics_are_missing(broker, tmp_path):
    config = deploy(broker, tmp_path, pipelines=("stock",), create=False)
    result = subprocess.run(
        [sys.executable, "-m", "forecaster.cli", "run", "-c", str(config.path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "topics missing" in result.stderr and "forecaster topics" in result.stderr
