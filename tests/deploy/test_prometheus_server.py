"""A real Prometheus, configured from deploy/prometheus, scrapes a running daemon: series, rules and dashboard
queries."""

import json
import shutil
import threading

import pytest
import yaml

from forecaster.app import Daemon
from forecaster.io.broker import free_port
from forecaster.io.kafka import Sink
from forecaster.io.messages import Message
from forecaster.tools.replay import replay

from deploy_support import SCRAPE_CONFIG, alert_rules, dashboard_queries, http_get, prometheus_server, query, wait_for
from kafka_support import deploy, read_topic

pytestmark = pytest.mark.kafka

RECORDS = 300


def scrape_config_for(target: str, directory) -> str:
    """The shipped scrape config with the daemon under test as its only target, scraped and evaluated every second."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "forecaster"]
    job.pop("dns_sd_configs", None)
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    for rule_file in config["rule_files"]:
        shutil.copy(SCRAPE_CONFIG.parent / rule_file, directory / rule_file)
    path = directory / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def scraped_daemon(broker, tmp_path_factory):
    """A daemon that has forecast RECORDS real records (and dead-lettered one), scraped by a real Prometheus."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = deploy(broker, tmp_path, pipelines=("stock",))
    stock = config.pipeline("stock")
    replay(config.settings.kafka, "msft", stock.input_topic, limit=RECORDS)
    Sink(config.settings.kafka).deliver([Message(stock.input_topic, b"MSFT", b"not json")], threading.Event())
    daemon = Daemon(config)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        assert len(read_topic(broker.bootstrap, stock.output_topic, RECORDS)) == RECORDS
        target = f"{config.settings.metrics.host}:{config.settings.metrics.port}"
        with prometheus_server(scrape_config_for(target, tmp_path), tmp_path, free_port()) as url:
            yield url
    finally:
        daemon.stop()
        runner.join(60)


def value(result: dict) -> float:
    (sample,) = result["result"]
    return float(sample["value"][1])


def test_prometheus_scrapes_the_daemons_series_and_evaluates_every_alert_rule(scraped_daemon):
    url = scraped_daemon
    produced = 'forecaster_forecasts_produced_total{job="forecaster", pipeline="stock"}'
    # Two scrapes in the window, so rate() in the rules and the dashboard has something to work on.
    wait_for(lambda: query(url, f"count_over_time({produced}[1m]) >= 2")["result"], 30, "two scrapes of the daemon")
    assert value(query(url, produced)) == RECORDS
    assert value(query(url, 'forecaster_records_rejected_total{pipeline="stock", reason="malformed"}')) == 1
    assert value(query(url, 'up{job="forecaster"}')) == 1
    assert value(query(url, 'forecaster_pipeline_up{pipeline="stock"}')) == 1
    assert value(query(url, 'forecaster_build_info{job="forecaster", kafka_client="kafka-python"}')) == 1
    assert value(query(url, 'process_resident_memory_bytes{job="forecaster"}')) > 0  # the daemon's own registry
    latency_count = value(query(url, 'forecaster_end_to_end_latency_seconds_count{pipeline="stock"}'))
    assert (
        latency_count
        == value(query(url, 'forecaster_end_to_end_latency_seconds_bucket{pipeline="stock", le="+Inf"}'))
        >= 1
    )

    def evaluated_rules():
        groups = json.loads(http_get(url + "/api/v1/rules")[1])["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules) else None

    rules = wait_for(evaluated_rules, 15, "every rule to be evaluated once")
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    # The daemon is up and scraped as job "forecaster": ForecasterDown, absent() included, stays quiet.
    down = [a for r in rules if r["name"] == "ForecasterDown" for a in r["alerts"]]
    assert down == []


def test_every_dashboard_query_runs_on_prometheus_and_finds_the_daemons_series(scraped_daemon):
    url = scraped_daemon
    wait_for(
        lambda: query(url, 'count_over_time(forecaster_records_consumed_total{job="forecaster"}[1m]) >= 2')["result"],
        30,
        "two scrapes of the daemon",
    )
    empty = []
    for title, expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*")
        if promql.startswith("label_values("):  # a Grafana function: the series it reads must exist
            promql = promql[len("label_values(") :].split(",")[0]
        result = query(url, promql)["result"]
        if not result:
            empty.append(title)
    assert empty == [], f"dashboard panels with no data from a running daemon: {empty}"
    mae = query(url, 'avg by (pipeline, forecaster) (forecaster_one_step_mae{pipeline=~".*"})')["result"]
    assert {s["metric"]["forecaster"] for s in mae} == {"model", "naive"}
