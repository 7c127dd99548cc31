"""The README's service and runbook sections match what deploy/ ships."""

import re

from deploy_support import REPO, alert_rules

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_runbook_has_a_section_for_every_alert_in_rule_order():
    assert re.findall(r"^### (\w+)$", section("Alert runbook"), flags=re.M) == [rule["alert"] for rule in alert_rules()]


def test_the_service_sections_follow_metrics_and_name_files_that_exist():
    order = re.findall(r"^## (.+)$", README, flags=re.M)
    assert order[order.index("Metrics") + 1: order.index("Metrics") + 3] == ["Running as a service", "Alert runbook"]
    paths = set(re.findall(r"\bdeploy/[\w./-]+[\w]", section("Running as a service") + section("Alert runbook")))
    assert paths, "no deploy/ paths named"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []
