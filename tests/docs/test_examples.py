"""Examples in the README and the docs name series the shipped data has, so they work as written."""

import re
from pathlib import Path

from forecaster.io import datasets

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `--series KEY` in a command, and the key field of a JSON record: "series", or a shipped dataset's own key field.
EXAMPLES = (
    re.compile(r"--series\s+([^\s\]`]+)"),
    re.compile(r'"(?:series|symbol|region|station)": "([^"]+)"'),
)
PLACEHOLDER = "KEY"


def shipped_keys() -> set[str]:
    keys = set()
    for name in datasets.NAMES:
        dataset = datasets.load(name)
        keys |= {str(record[dataset.key_field]) for record in dataset.records}
    return keys


def test_every_series_an_example_names_is_one_the_shipped_data_has():
    named = [
        (page.name, key)
        for page in PAGES
        for pattern in EXAMPLES
        for key in pattern.findall(page.read_text())
        if key != PLACEHOLDER
    ]
    assert {page for page, _ in named} >= {"README.md", "operations.md", "records.md"}
    keys = shipped_keys()
    assert [(page, key) for page, key in named if key not in keys] == []
