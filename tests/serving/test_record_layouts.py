"""The output formats: nested (the default, tested in test_records*.py), long and wide (docs/records.md)."""

import json

import numpy as np
import pytest
from test_records_batched import NOON, finite, forecasts

from forecaster.serving import records
from forecaster.serving.engine import Forecasts

HEAD = ["series", "pipeline", "target", "time", "issued_at", "model_version"]


def two_forecasts(quantiles=True) -> Forecasts:
    """Series "a" and "b", three half-hour steps, "b" with a NaN step."""
    times = np.array([NOON, NOON + 1800.0])
    values = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], dtype=np.float32)
    return Forecasts(
        keys=("a", "b"),
        times=times,
        horizon_times=times[:, None] + 1800.0 * np.arange(1, 4),
        values=values,
        positions=np.arange(2),
        issued_at=NOON + 5.0,
        model_version=7,
        quantiles={0.1: values - 1, 0.9: values + 1} if quantiles else None,
    )


def decoded(layout: str, batch: Forecasts) -> list[dict]:
    encoded = records.encode_many(batch, "weather", "temp", layout)
    return [json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}")) for text in encoded]


def test_long_writes_one_flat_record_per_horizon_step_in_order():
    rows = decoded("long", two_forecasts())
    assert len(rows) == 2 * 3 == 2 * records.records_per_forecast("long", 3)
    assert list(rows[0]) == [*HEAD, "step", "target_time", "value", "p10", "p90"]
    assert [(r["series"], r["step"]) for r in rows] == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    assert rows[4] == {
        "series": "b",
        "pipeline": "weather",
        "target": "temp",
        "time": "2024-03-10T13:00:00+00:00",
        "issued_at": "2024-03-10T12:30:05+00:00",
        "model_version": 7,
        "step": 2,
        "target_time": "2024-03-10T14:00:00+00:00",
        "value": None,
        "p10": None,
        "p90": None,
    }


def test_wide_writes_one_record_per_forecast_with_flat_fields_per_step():
    rows = decoded("wide", two_forecasts())
    assert records.records_per_forecast("wide", 3) == 1 and len(rows) == 2
    steps = [f"{name}_{k}" for k in (1, 2, 3) for name in ("time", "value", "p10", "p90")]
    assert list(rows[0]) == [*HEAD, "horizon", *steps]
    assert rows[1]["horizon"] == 3
    assert [rows[1][f"value_{k}"] for k in (1, 2, 3)] == [4.0, None, 6.0]
    assert [rows[0][f"p90_{k}"] for k in (1, 2, 3)] == [2.0, 3.0, 4.0]
    assert rows[0]["time_3"] == "2024-03-10T14:00:00+00:00"


def test_flat_layouts_carry_what_the_nested_record_carries():
    batch = forecasts(np.random.default_rng(4), 50, 6, quantiles=True)
    longs = decoded("long", batch)
    for nested, wide, start in zip(decoded("nested", batch), decoded("wide", batch), range(0, 300, 6)):
        long = longs[start : start + 6]
        assert {k: wide[k] for k in [*HEAD, "horizon"]} == {k: nested[k] for k in [*HEAD, "horizon"]}
        assert [wide[f"value_{k}"] for k in range(1, 7)] == nested["values"] == [r["value"] for r in long]
        assert [wide[f"time_{k}"] for k in range(1, 7)] == nested["times"] == [r["target_time"] for r in long]
        assert [r["p10"] for r in long] == nested["quantiles"]["0.1"] == [wide[f"p10_{k}"] for k in range(1, 7)]
        assert all({k: r[k] for k in HEAD} == {k: nested[k] for k in HEAD} for r in long)


def test_points_without_quantiles_have_no_quantile_fields():
    assert list(decoded("long", two_forecasts(quantiles=False))[0])[-2:] == ["target_time", "value"]
    assert list(decoded("wide", two_forecasts(quantiles=False))[0])[-2:] == ["time_3", "value_3"]


@pytest.mark.parametrize(
    ("level", "field"), [(0.1, "p10"), (0.5, "p50"), (0.9, "p90"), (0.025, "p2_5"), (0.975, "p97_5"), (0.07, "p7")]
)
def test_a_quantile_field_is_named_by_its_percentile(level, field):
    assert records.quantile_field(level) == field


def test_nested_is_one_record_per_forecast():
    assert records.records_per_forecast("nested", 48) == 1
    assert [finite(v) for v in two_forecasts().values[1]] == decoded("nested", two_forecasts())[1]["values"]
