"""Helpers for integration tests against the embedded broker: private deployments, reading topics back."""

import contextlib
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.build import compacted_topics, topics_of
from forecaster.io.broker import free_port
from forecaster.io.kafka import create_topics, read_topic  # noqa: F401 - the tests' way to read a topic back

REPO = Path(__file__).resolve().parents[1]

# The stock pipeline's file made an hourly one for ETTh1, seeded, without retraining, its state in the changelog:
# deploy(..., changes={"stock": HOURLY}) serves ETTh1's records (datasets.load("etth1")) under their own keys.
HOURLY = {
    "record": {"key": "series", "timestamp": "time", "target": "value", "covariates": []},
    "cadence": "1h",
    "horizon": 24,
    "calendar": {"hour_of_day": True, "day_of_week": True},
    "model": {"weights": None},
    "retraining": {"enabled": False},
    "spill": "none",
    "checkpoint": {"changelog": True, "every_records": 300},
}


def deploy(
    broker, directory: Path, pipelines=("stock", "weather", "power_load"), create=True, changes: dict | None = None
) -> config_module.Config:
    """The shipped config.yaml and pipelines, with topics, consumer group and metrics port of this test's own.

    `changes` maps a pipeline name to sections whose keys replace the shipped file's, e.g.
    {"power_load": {"retraining": {"steps": 5}}}.
    """
    tag = uuid.uuid4().hex[:8]
    (directory / "pipelines").mkdir(parents=True, exist_ok=True)
    for name in pipelines:
        spec = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
        for key in ("input_topic", "output_topic", "dead_letter_topic"):
            spec[key] = f"{tag}.{spec[key]}"
        spec["model"]["weights"] = str(REPO / spec["model"]["weights"])
        for section, values in (changes or {}).get(name, {}).items():
            spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
        (directory / "pipelines" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    settings = yaml.safe_load((REPO / "config.yaml").read_text())
    settings["kafka"]["bootstrap_servers"] = broker.bootstrap
    settings["kafka"]["group_id"] = f"test-{tag}"
    settings["metrics"]["port"] = free_port()
    settings["state_dir"] = str(directory / "state")
    settings["pipelines"] = [f"pipelines/{name}.yaml" for name in pipelines]
    (directory / "config.yaml").write_text(yaml.safe_dump(settings))
    config = config_module.load(directory / "config.yaml")
    if create:
        create_topics(
            config.settings.kafka,
            [topic for p in config.pipelines for topic in topics_of(config, p)],
            {name for p in config.pipelines for name in compacted_topics(config, p)},
        )
    return config


def scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of a /metrics page."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metrics_url(config) -> str:
    return f"http://{config.settings.metrics.host}:{config.settings.metrics.port}"


def wait_for(check, timeout_s: float, what: str, every_s: float = 0.25):
    """Poll `check()` until it returns something truthy; fail naming `what` at the deadline."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def serving(config):
    """The daemon of `config` running in a thread until the block ends; it must then stop cleanly."""
    daemon = Daemon(config)
    exit_codes = []
    runner = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    runner.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        runner.join(120)
    assert exit_codes == [0]
