"""The JSON Schemas of the forecast records name exactly the fields encode_many writes, in each layout."""

import dataclasses
import json

import numpy as np
import pytest

from forecaster.config import Batching, Output
from forecaster.serving import records, schemas
from forecaster.serving.engine import Forecasts

from support import make_pipeline


def pipeline(layout: str, per_message: int = 1):
    base = make_pipeline(horizon=3, quantiles=(0.1, 0.5, 0.9))
    return dataclasses.replace(base, output=Output(format=layout), batching=Batching(forecasts_per_message=per_message))


def written(p) -> dict:
    """The first record encode_many writes for a forecast of `p`, with a NaN step."""
    levels = p.model.quantiles
    values = np.array([[1.0, np.nan, 3.0]])
    batch = Forecasts(
        keys=("a",),
        times=np.array([0.0]),
        horizon_times=np.array([[3600.0, 7200.0, 10800.0]]),
        values=values,
        positions=np.arange(1),
        issued_at=0.0,
        model_version=2,
        quantiles={level: values for level in levels},
    )
    return json.loads(records.encode_many(batch, p.name, p.record.target, p.output.format)[0])


@pytest.mark.parametrize("layout", ["nested", "long", "wide"])
def test_a_schema_requires_exactly_the_fields_a_record_has(layout):
    schema = schemas.forecast_schema(pipeline(layout))
    record = written(pipeline(layout))
    assert schema["required"] == list(record) == list(schema["properties"])
    assert schema["additionalProperties"] is False
    assert schema["properties"]["pipeline"] == {"const": "test"} and schema["properties"]["target"] == {"const": "y"}


def test_numbers_may_be_null_and_nested_lists_hold_one_per_step():
    nested = schemas.forecast_schema(pipeline("nested"))["properties"]
    assert nested["values"] == {"type": "array", "items": {"type": ["number", "null"]}, "minItems": 3, "maxItems": 3}
    assert nested["quantiles"]["required"] == ["0.1", "0.5", "0.9"]
    assert schemas.forecast_schema(pipeline("long"))["properties"]["p90"] == {"type": ["number", "null"]}


def test_the_topic_schema_wraps_a_record_or_a_packed_list_as_the_message_value():
    assert schemas.topic_schema(pipeline("long"))["properties"]["value"] == schemas.forecast_schema(pipeline("long"))
    packed = schemas.topic_schema(pipeline("wide", per_message=8))["properties"]["value"]
    assert packed == {"type": "array", "items": schemas.forecast_schema(pipeline("wide"))}
