"""docs/operations.md's service and runbook sections, and docs/scaling.md, match what deploy/ ships."""

import re

import yaml

from deploy_support import DEPLOY, REPO, alert_rules

OPERATIONS = (REPO / "docs" / "operations.md").read_text()


def section(title: str) -> str:
    return OPERATIONS.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_runbook_has_a_section_for_every_alert_in_rule_order():
    assert re.findall(r"^### (\w+)$", section("Alert runbook"), flags=re.M) == [rule["alert"] for rule in alert_rules()]


def test_the_runbook_follows_the_service_section_which_names_files_that_exist():
    order = re.findall(r"^## (.+)$", OPERATIONS, flags=re.M)
    assert order[order.index("Running as a service") + 1] == "Alert runbook"
    paths = set(re.findall(r"\bdeploy/[\w./-]+[\w]", section("Running as a service") + section("Alert runbook")))
    assert paths, "no deploy/ paths named"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []


SCALING = (REPO / "docs" / "scaling.md").read_text()


def test_the_scaling_commands_name_the_statefulset_and_the_compose_service_that_deploy_ships():
    statefulset = yaml.safe_load((DEPLOY / "kubernetes" / "statefulset.yaml").read_text())["metadata"]["name"]
    scaled_compose = yaml.safe_load((DEPLOY / "docker-compose.scaled.yaml").read_text())["services"]
    for text in (OPERATIONS, SCALING):
        assert set(re.findall(r"kubectl (?:-n \w+ )?scale statefulset/([\w-]+)", text)) == {statefulset}
        assert set(re.findall(r"--scale ([\w-]+)=", text)) == {"forecaster"} <= set(scaled_compose)


def test_the_scaling_page_names_files_that_exist():
    paths = set(re.findall(r"\bdeploy/[\w./-]+[\w]", SCALING))
    assert {"deploy/kubernetes-scaled", "deploy/docker-compose.scaled.yaml"} <= paths
    assert sorted(p for p in paths if not (REPO / p).exists()) == []
