"""The Grafana dashboard is well formed and shows what an operator looks for first."""

import re

from deploy_support import dashboard, dashboard_queries


def test_the_dashboard_is_provisionable_json():
    board = dashboard()
    assert board["uid"] == "forecaster" and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["pipeline"]["includeAll"] and variables["pipeline"]["allValue"] == ".*"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_is_filtered_by_the_pipeline_variable():
    for title, expr in dashboard_queries():
        if "forecaster_" in expr and not title.startswith("variable"):
            assert expr.count("forecaster_") == expr.count('{pipeline=~"$pipeline"}'), title


def panel_exprs(title: str) -> list[str]:
    matches = [p for p in dashboard()["panels"] if p["title"] == title]
    assert len(matches) == 1, f"no single panel titled {title!r}"
    return [target["expr"] for target in matches[0]["targets"]]


def test_it_shows_throughput_latency_quantiles_lag_series_skill_rejects_and_model_version():
    throughput = " ".join(panel_exprs("Throughput"))
    assert (
        "rate(forecaster_records_consumed_total" in throughput
        and "rate(forecaster_forecasts_produced_total" in throughput
    )
    quantiles = [
        re.match(
            r"histogram_quantile\((0\.\d+), sum by \(pipeline, le\) "
            r"\(rate\(forecaster_end_to_end_latency_seconds_bucket",
            e,
        )
        for e in panel_exprs("End-to-end latency")
    ]
    assert [float(m.group(1)) for m in quantiles] == [0.5, 0.9, 0.99]
    assert "forecaster_consumer_lag_records" in panel_exprs("Consumer lag")[0]
    assert "forecaster_active_series" in panel_exprs("Active series")[0]
    assert "by (pipeline, forecaster) (forecaster_one_step_mae" in panel_exprs("One-step MAE: model vs naive")[0]
    assert (
        "by (pipeline, reason) (rate(forecaster_records_rejected_total" in panel_exprs("Rejected records by reason")[0]
    )
    assert "forecaster_model_version" in panel_exprs("Model version")[0]
    assert "by (pipeline, outcome) (increase(forecaster_retrains_total" in panel_exprs("Retrains by outcome")[0]


def test_it_shows_checkpoint_age_and_failures_event_time_lag_and_the_process_resources():
    age = panel_exprs("Checkpoint age")[0]
    assert "time() - max by (pipeline) (forecaster_last_checkpoint_timestamp_seconds" in age
    failures = panel_exprs("Checkpoint failures by reason")[0]
    assert "by (pipeline, reason) (increase(forecaster_checkpoint_failures_total" in failures
    assert "forecaster_event_time_lag_seconds" in panel_exprs("Event-time lag")[0]
    assert panel_exprs("Process resident memory") == ['process_resident_memory_bytes{job="forecaster"}']
    assert 'rate(process_cpu_seconds_total{job="forecaster"}' in panel_exprs("Process CPU")[0]
