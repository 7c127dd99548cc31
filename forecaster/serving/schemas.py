"""JSON Schemas of the forecast records a pipeline writes, in its output format (docs/records.md).

A schema registry, or a broker that validates records against one (tansu, from a folder of
`<topic>.json` files), can then refuse a record that is not what a downstream table expects.
The schemas are exact: every field required, no other field allowed, a number that may be null.
"""

from __future__ import annotations

from forecaster.config import Pipeline
from forecaster.serving.records import quantile_field

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TIME = {"type": "string", "format": "date-time"}
_NUMBER = {"type": ["number", "null"]}  # null where a forecast is NaN or infinite


def forecast_schema(pipeline: Pipeline) -> dict:
    """The JSON Schema of one record of `pipeline`'s output topic (one element of a packed message)."""
    properties = {
        "series": {"type": "string"},
        "pipeline": {"const": pipeline.name},
        "target": {"const": pipeline.record.target},
        "time": _TIME,
        "issued_at": _TIME,
        "model_version": {"type": "integer", "minimum": 0},
        **_LAYOUTS[pipeline.output.format](pipeline.horizon, pipeline.model.quantiles),
    }
    return {
        "$schema": DIALECT,
        "title": f"{pipeline.name} forecast ({pipeline.output.format})",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def topic_schema(pipeline: Pipeline) -> dict:
    """The schema of the output topic's message values as tansu's registry reads it (`<topic>.json`: the message's
    `value` under properties): one record, or with `batching.forecasts_per_message` above 1 a list of them."""
    record = forecast_schema(pipeline)
    value = record if pipeline.batching.forecasts_per_message == 1 else {"type": "array", "items": record}
    return {"title": pipeline.output_topic, "type": "object", "properties": {"value": value}, "required": ["value"]}


def _nested(horizon: int, levels: tuple[float, ...]) -> dict:
    steps = {"minItems": horizon, "maxItems": horizon}
    numbers = {"type": "array", "items": _NUMBER, **steps}
    fields = {"horizon": {"const": horizon}, "times": {"type": "array", "items": _TIME, **steps}, "values": numbers}
    if levels:
        names = [f"{level:g}" for level in levels]
        fields["quantiles"] = {
            "type": "object",
            "properties": {name: numbers for name in names},
            "required": names,
            "additionalProperties": False,
        }
    return fields


def _long(horizon: int, levels: tuple[float, ...]) -> dict:
    step = {"type": "integer", "minimum": 1, "maximum": horizon}
    return {"step": step, "target_time": _TIME, "value": _NUMBER, **{quantile_field(q): _NUMBER for q in levels}}


def _wide(horizon: int, levels: tuple[float, ...]) -> dict:
    fields: dict = {"horizon": {"const": horizon}}
    for k in range(1, horizon + 1):
        fields |= {f"time_{k}": _TIME, f"value_{k}": _NUMBER, **{f"{quantile_field(q)}_{k}": _NUMBER for q in levels}}
    return fields


_LAYOUTS = {"nested": _nested, "long": _long, "wide": _wide}
