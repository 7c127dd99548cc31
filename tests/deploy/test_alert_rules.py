"""The alerting rules pass Prometheus' own checker and unit tests, and those tests cover every alert both ways."""

import shutil
import subprocess

import yaml

from deploy_support import ALERTS, ALERTS_TEST, SCRAPE_CONFIG, alert_rules, tool

EXPECTED_ALERTS = {
    "ForecasterDown",
    "ForecasterPipelineDown",
    "ForecasterNoForecasts",
    "ForecasterConsumerLagGrowing",
    "ForecasterModelWorseThanNaive",
    "ForecasterRetrainFailing",
    "ForecasterCheckpointsFailing",
}


def promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_promtool_check_rules_accepts_every_alert():
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_the_rules_are_the_alerts_the_runbook_documents():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#alert-runbook, {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_unit_tests_of_the_rules_pass():
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_show_each_alert_firing_and_not_firing():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == EXPECTED_ALERTS, f"never shown firing: {EXPECTED_ALERTS - firing}"
    assert quiet == EXPECTED_ALERTS, f"never shown quiet: {EXPECTED_ALERTS - quiet}"


def test_the_unit_tests_catch_a_weakened_rule(tmp_path):
    """Shortening 'model worse than naive for 30m' to 5m must make promtool's unit tests fail."""
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    rules = yaml.safe_load(ALERTS.read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == "ForecasterModelWorseThanNaive":
            assert rule["for"] == "30m"
            rule["for"] = "5m"
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(rules))
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "ForecasterModelWorseThanNaive" in result.stdout + result.stderr


def test_promtool_check_config_accepts_the_scrape_config_and_its_rule_file():
    result = promtool("check", "config", SCRAPE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_the_scrape_job_is_the_job_the_rules_select():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "forecaster" in jobs
    assert jobs["forecaster"].get("metrics_path", "/metrics") == "/metrics"
    for rule in alert_rules():
        if "job=" in rule["expr"]:
            assert 'job="forecaster"' in rule["expr"], rule["alert"]
