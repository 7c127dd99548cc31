"""Every metric the alert rules and the dashboard use exists in the exporter."""

from deploy_support import alert_rules, dashboard_queries, exported_sample_names, metric_names


def used_in_rules() -> set[str]:
    return set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))


def used_in_dashboard() -> set[str]:
    return set().union(*(metric_names(expr) for _, expr in dashboard_queries()))


def test_the_exporter_lists_histogram_samples_and_counter_totals():
    names = exported_sample_names()
    for suffix in ("_bucket", "_sum", "_count"):
        assert f"forecaster_end_to_end_latency_seconds{suffix}" in names
    assert "forecaster_records_consumed_total" in names and "forecaster_records_consumed" not in names
    assert "forecaster_one_step_mae" in names


def test_rules_and_dashboard_use_only_exported_metrics():
    used = used_in_rules() | used_in_dashboard()
    assert used - exported_sample_names() == set(), "used but not exported"


def test_retraining_rounds_are_exported_and_watched_by_the_rules_and_the_dashboard():
    assert "forecaster_retrains_total" in exported_sample_names()
    assert "forecaster_retrains_total" in used_in_rules() and "forecaster_retrains_total" in used_in_dashboard()


def test_the_rules_use_the_metrics_of_their_alerts():
    by_alert = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}
    assert by_alert["ForecasterNoForecasts"] >= {
        "forecaster_forecasts_produced_total",
        "forecaster_records_consumed_total",
    }
    assert by_alert["ForecasterConsumerLagGrowing"] == {"forecaster_consumer_lag_records"}
    assert by_alert["ForecasterModelWorseThanNaive"] == {"forecaster_one_step_mae"}
    assert by_alert["ForecasterRetrainFailing"] == {"forecaster_retrains_total"}
    assert by_alert["ForecasterCheckpointsFailing"] == {
        "forecaster_checkpoint_failures_total",
        "forecaster_checkpoints_total",
    }
    assert by_alert["ForecasterDown"] == set()  # up{job="forecaster"}: Prometheus' own series
