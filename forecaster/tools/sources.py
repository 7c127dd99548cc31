"""Where the data of `forecaster pretrain`, `replay` and `backtest` comes from: a bundled dataset, a file of
one's own (io/files.py) or the records a topic retains, as the JSON records the daemon would read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from forecaster.config import Config, Pipeline
from forecaster.errors import ConfigError, RecordError
from forecaster.io import datasets, files
from forecaster.learning.pretrain import dataset_payloads
from forecaster.serving.records import field, parse_time


def parse_map(pairs: Sequence[str] | None) -> dict[str, str]:
    """`--map field=column` options as {field: column}."""
    mapping = {}
    for pair in pairs or ():
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise ConfigError(f"--map: expected FIELD=COLUMN, got {pair!r}")
        mapping[field] = column
    return mapping


def parse_moment(text: str | None, option: str) -> float | None:
    """An option's ISO-8601 time (UTC without an offset) or epoch seconds, as epoch seconds."""
    if text is None:
        return None
    try:
        return parse_time(float(text) if text.replace(".", "", 1).isdigit() else text, option)[0]
    except RecordError:
        raise ConfigError(f"{option}: expected an ISO-8601 time or epoch seconds, got {text!r}") from None


def file_records(path: Path, pipeline: Pipeline, mapping: dict[str, str] | None = None) -> list[dict]:
    """A file's observations as records in the pipeline's field names."""
    return files.read_records(path, pipeline.record, mapping)


def payloads(
    config: Config,
    pipeline: Pipeline,
    *,
    dataset: str | None = None,
    file: Path | None = None,
    mapping: dict[str, str] | None = None,
    topic: str | None = None,
    since: float | None = None,
) -> tuple[list[bytes], str]:
    """The JSON records of one source, and its name in words: the file, the topic, else the bundled dataset
    (default: the pipeline's training.dataset)."""
    if file is not None:
        return [json.dumps(r).encode() for r in file_records(file, pipeline, mapping)], str(file)
    if topic is not None:
        from forecaster.io.clients import read_retained

        retained = read_retained(config.settings.kafka, topic)
        return retained if since is None else observed_since(retained, pipeline, since), f"topic {topic}"
    name = dataset or pipeline.training.dataset
    if name not in datasets.NAMES:
        raise ConfigError(
            f"expected --file, --topic or a dataset (one of {', '.join(datasets.NAMES)}); "
            f"pipeline {pipeline.name}'s training.dataset is {name!r}"
        )
    return dataset_payloads(name), f"dataset {name}"


def topic_records(config: Config, pipeline: Pipeline, topic: str, since: float | None = None) -> tuple[list[dict], int]:
    """The records `topic` retains as JSON objects (a batch message's elements one by one), observed since `since`
    when given, and how many retained records were skipped for holding no JSON object with the pipeline's key."""
    retained, _ = payloads(config, pipeline, topic=topic, since=since)
    records, skipped = [], 0
    for payload in retained:
        try:
            document = json.loads(payload)
        except ValueError:
            skipped += 1
            continue
        for element in document if isinstance(document, list) else [document]:
            if _keyed(element, pipeline):
                records.append(element)
            else:
                skipped += 1
    return records, skipped


def _keyed(record, pipeline: Pipeline) -> bool:
    try:
        return isinstance(record, dict) and field(record, pipeline.record.key) is not None
    except RecordError:
        return False


def observed_since(payloads: Sequence[bytes], pipeline: Pipeline, since: float) -> list[bytes]:
    """The records observed at or after `since` (epoch seconds), by the pipeline's timestamp field.

    By observation time, not the Kafka timestamp: a history "since March" means the observations', and a topic
    replayed in one go has one Kafka time for all. A record that cannot be read is kept, for the decoder to refuse
    with its reason; a batch message keeps its elements observed since.
    """
    kept = []
    for payload in payloads:
        try:
            document = json.loads(payload)
        except ValueError:
            kept.append(payload)
            continue
        elements = [e for e in (document if isinstance(document, list) else [document]) if _since(e, pipeline, since)]
        if isinstance(document, list) and elements:
            kept.append(json.dumps(elements).encode())
        elif elements:
            kept.append(payload)
    return kept


def _since(record, pipeline: Pipeline, since: float) -> bool:
    try:
        return parse_time(field(record, pipeline.record.timestamp), pipeline.record.timestamp)[0] >= since
    except (TypeError, RecordError):
        return True
