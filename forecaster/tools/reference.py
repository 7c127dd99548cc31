"""The configuration reference in Markdown, generated from the schema so the docs cannot drift.

`python -m forecaster.tools.reference` prints it; `python -m forecaster.tools.reference --write docs/configuration.md`
replaces the block between the markers there; a test fails when the two differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from forecaster.config import Pipeline, Settings
from forecaster.schema import documented_fields

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def table(cls: type) -> str:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for path, kind, default, doc in documented_fields(cls):
        kind = kind.replace(" | ", " or ")  # a bare | would split the Markdown table
        shown = (
            "" if kind == "mapping" and default is None else f"`{default!r}`" if default != "(required)" else "required"
        )
        rows.append(f"| `{path}` | {kind} | {shown} | {doc} |")
    return "\n".join(rows)


def markdown() -> str:
    return "\n\n".join(
        [
            BEGIN,
            "#### `config.yaml`",
            table(Settings),
            "#### `pipelines/*.yaml`",
            table(Pipeline),
            END,
        ]
    )


def embedded(text: str) -> str:
    """The reference block as it stands in a document."""
    match = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, flags=re.S)
    if match is None:
        raise ValueError(f"no {BEGIN} ... {END} block found")
    return match.group(0)


def write(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace(embedded(text), markdown()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        write(Path(sys.argv[2]))
    else:
        sys.stdout.write(markdown() + "\n")
