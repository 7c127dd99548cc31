"""The examples of the flat output formats in docs/records.md are what encode_many writes."""

import json
import re
from pathlib import Path

import numpy as np

from forecaster.serving import records
from forecaster.serving.engine import Forecasts

PAGE = Path(__file__).resolve().parents[2] / "docs" / "records.md"


def examples() -> list[list[dict]]:
    """Each JSON block of the page's "Output formats" section, one document per line."""
    section = PAGE.read_text().split("## Output formats")[1].split("\n## ")[0]
    return [
        [json.loads(line) for line in block.splitlines()] for block in re.findall(r"```json\n(.*?)```", section, re.S)
    ]


def encoded_like(example: dict, layout: str) -> list[dict]:
    """What encode_many writes for a two-step forecast with the example's levels, as documents."""
    levels = [0.1, 0.9] if "p10" in example or "p10_1" in example else []
    times = np.array([0.0])
    batch = Forecasts(
        keys=("k",),
        times=times,
        horizon_times=np.array([[1800.0, 3600.0]]),
        values=np.ones((1, 2)),
        positions=np.arange(1),
        issued_at=0.0,
        model_version=1,
        quantiles={level: np.ones((1, 2)) for level in levels} or None,
    )
    return [json.loads(text) for text in records.encode_many(batch, "p", "y", layout)]


def test_the_long_and_wide_examples_have_exactly_the_fields_encode_many_writes():
    long, wide = examples()
    assert [list(row) for row in long] == [list(row) for row in encoded_like(long[0], "long")]
    assert [row["step"] for row in long] == [1, 2]
    assert [list(row) for row in wide] == [list(row) for row in encoded_like(wide[0], "wide")]
