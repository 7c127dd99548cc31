"""docs/operations.md's service and runbook sections match what deploy/ ships."""

import re

from deploy_support import REPO, alert_rules

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
