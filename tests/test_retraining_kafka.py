"""The daemon retrains and promotes while serving, end to end against the embedded broker, on real data."""

import json
import math
import threading

import pytest

from forecaster.app import Daemon
from forecaster.io import datasets
from forecaster.io.checkpoint import load_latest_checkpoint
from forecaster.io.kafka import Sink
from forecaster.tools.replay import messages

from kafka_support import deploy, metrics_url, read_topic, scrape, wait_for

pytestmark = pytest.mark.kafka

FIRST, MORE = 1200, 100  # Greensboro hours replayed before and after the promotion


def promotions(config) -> float:
    samples = scrape(metrics_url(config) + "/metrics")
    return samples.get(("forecaster_retrains_total", frozenset({("pipeline", "weather"), ("outcome", "promoted")})), 0)


def test_the_daemon_retrains_on_buffered_real_data_and_serves_the_promoted_model(broker, tmp_path):
    # Seeded weights, as a new deployment without pretrained ones: a young challenger soon beats both them
    # and the simple forecasts (on Taylor's half-hours yesterday's value stays out of its reach for longer).
    config = deploy(
        broker,
        tmp_path,
        pipelines=("weather",),
        changes={
            "weather": {
                "model": {"weights": None},
                "retraining": {"every_records": 500, "steps": 20, "learning_rate": 0.003, "resync_steps": 128},
            }
        },
    )
    pipeline = config.pipeline("weather")
    replayed = messages(datasets.load("greensboro"), pipeline.input_topic)
    Sink(config.settings.kafka).deliver(replayed[:FIRST], threading.Event())

    daemon = Daemon(config)
    exit_codes = []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        assert len(read_topic(broker.bootstrap, pipeline.output_topic, FIRST)) == FIRST
        # 20 TBPTT steps, on a busy CI machine
        wait_for(lambda: promotions(config) >= 1, 240, "a promotion", every_s=1.0)
        samples = scrape(metrics_url(config) + "/metrics")
        labels = lambda **kw: frozenset({("pipeline", "weather"), *kw.items()})
        assert samples[("forecaster_retrains_total", labels(outcome="promoted"))] >= 1
        assert samples[("forecaster_retrains_total", labels(outcome="started"))] >= 1
        assert samples[("forecaster_model_version", labels())] >= 1
        assert (
            samples[("forecaster_heldout_loss", labels(model="challenger"))]
            < samples[("forecaster_heldout_loss", labels(model="champion"))]
        )
        assert 0 <= samples[("forecaster_interval_coverage", labels(nominal="0.8"))] <= 1
        # weather tracks
        assert math.isfinite(samples[("forecaster_interval_shift_scales", labels(source="tracking"))])

        Sink(config.settings.kafka).deliver(replayed[FIRST : FIRST + MORE], threading.Event())
        later = [json.loads(r.value) for r in read_topic(broker.bootstrap, pipeline.output_topic, FIRST + MORE)]
        newest = max(later, key=lambda body: body["time"])
        assert newest["model_version"] >= 1
        assert list(newest["quantiles"]) == ["0.1", "0.5", "0.9"]
        low, high = newest["quantiles"]["0.1"], newest["quantiles"]["0.9"]
        assert all(a <= b for a, b in zip(low, high))
    finally:
        daemon.stop()
        runner.join(120)
    assert exit_codes == [0]
    checkpoint, _ = load_latest_checkpoint(tmp_path / "state" / "weather")
    assert checkpoint["engine"]["model"]["version"] >= 1  # the promoted weights survive a restart
    assert "buffer" in checkpoint["engine"]["store"]["parts"]
