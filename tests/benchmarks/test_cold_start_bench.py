"""The cold-start benchmark: one-step errors pooled in blocks of records since each series' first."""

import json

import pytest

from support import benchmark

cold_start = benchmark("cold_start")


def test_the_first_day_of_a_new_series_is_scored_against_the_last_value(tmp_path):
    out = tmp_path / "cold_start.json"
    assert cold_start.main(["--datasets", "births", "--length", "30", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["records_from"], r["records_to"]) for r in rows] == [(1, 24), (25, 48)]
    first = rows[0]
    assert first["dataset"] == "births" and first["forecasts"] > 0
    assert first["ratio"] == pytest.approx(first["forecaster_mae"] / first["persistence_mae"], abs=1e-3)
    assert 0.0 <= first["network_weight"] <= 1.0
