"""The daemon on each whole real dataset, through a real broker: records/s and one-step skill.

For every pipeline of config.yaml: the whole dataset is published to its input topic
first, then the daemon (in this process, all pipelines at once, as `forecaster run`)
consumes it. Throughput is timed from a pipeline's first consumed record to its last
acknowledged forecast, so the consumer group's join is not counted. The forecasts are
then read back from the output topic and scored: one-step MAE of the model against the
naive last-value forecast, over all records and over the held-out part (the records
after `training.train_fraction`, which pretraining never saw).

    python benchmarks/daemon_replay.py            # writes benchmarks/results/daemon_replay.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.io import datasets
from forecaster.io.broker import EmbeddedBroker, free_port
from forecaster.io.kafka import create_topics, read_topic
from forecaster.tools.replay import replay

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/daemon_replay.json")
    args = parser.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="daemon-replay-") as state:
        os.environ["KAFKA_BOOTSTRAP"] = broker.bootstrap
        os.environ["FORECASTER_STATE_DIR"] = state  # a fresh broker's topics: no checkpoint of an earlier run applies
        os.environ["FORECASTER_METRICS_PORT"] = str(free_port())
        os.environ["FORECASTER_GROUP"] = f"bench-{int(time.time())}"
        config = config_module.load(args.config)
        rows = run(config, broker.bootstrap)
    result = {"machine": machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


def run(config: config_module.Config, bootstrap: str) -> list[dict]:
    kafka = config.settings.kafka
    create_topics(
        kafka,
        [(t, p.partitions) for p in config.pipelines for t in (p.input_topic, p.output_topic, p.dead_letter_topic)],
    )
    totals = {p.name: replay(kafka, p.training.dataset, p.input_topic) for p in config.pipelines}
    registry = CollectorRegistry()
    daemon = Daemon(config, registry=registry)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        spans = time_pipelines(registry, totals)
    finally:
        daemon.stop()
        runner.join(60)
    return [score(p, totals[p.name], spans[p.name], bootstrap) for p in config.pipelines]


def time_pipelines(registry: CollectorRegistry, totals: dict[str, int], timeout_s: float = 600) -> dict[str, float]:
    """Seconds from each pipeline's first consumed record to its last acknowledged forecast."""
    first, last = {}, {}
    deadline = time.monotonic() + timeout_s
    while len(last) < len(totals) and time.monotonic() < deadline:
        now = time.monotonic()
        for name, total in totals.items():
            consumed = registry.get_sample_value("forecaster_records_consumed_total", {"pipeline": name}) or 0
            produced = registry.get_sample_value("forecaster_forecasts_produced_total", {"pipeline": name}) or 0
            if consumed and name not in first:
                first[name] = now
            if produced >= total and name not in last:
                last[name] = now
        time.sleep(0.02)
    return {name: last[name] - first[name] for name in totals}


def score(pipeline, total: int, seconds: float, bootstrap: str) -> dict:
    """One-step MAE of the forecasts read back from the output topic, against naive."""
    dataset = datasets.load(pipeline.training.dataset)
    forecasts = read_topic(bootstrap, pipeline.output_topic, total)
    first_step = {}
    for record in forecasts:
        body = json.loads(record.value)
        first_step[(body["series"], body["times"][0])] = body["values"][0]
    model_errors, naive_errors, held_out = [], [], []
    by_series: dict[str, list[dict]] = {}
    for row in dataset.records:
        by_series.setdefault(str(row[dataset.key_field]), []).append(row)
    for key, rows in by_series.items():
        times = [utc(r[dataset.time_field]) for r in rows]
        values = [r[dataset.target_field] for r in rows]
        split = int(len(rows) * pipeline.training.train_fraction)
        for t in range(1, len(rows)):
            predicted = first_step.get((key, times[t]))
            if predicted is None:  # the cadence's next step is not the next record (weekend gaps, say)
                continue
            model_errors.append(abs(values[t] - predicted))
            naive_errors.append(abs(values[t] - values[t - 1]))
            held_out.append(t >= split)
    model, naive, held = np.array(model_errors), np.array(naive_errors), np.array(held_out)
    return {
        "pipeline": pipeline.name,
        "dataset": pipeline.training.dataset,
        "records": total,
        "forecasts_read_back": len(forecasts),
        "seconds": round(seconds, 3),
        "records_per_s": round(total / seconds, 1),
        "scored": int(len(model)),
        "model_mae": float(model.mean()),
        "naive_mae": float(naive.mean()),
        "held_out_scored": int(held.sum()),
        "held_out_model_mae": float(model[held].mean()),
        "held_out_naive_mae": float(naive[held].mean()),
    }


def utc(text: str) -> str:
    """A dataset time as the daemon writes forecast times: ISO-8601 in UTC."""

    return datetime.fromisoformat(text).astimezone(UTC).isoformat()


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "when": datetime.now().isoformat(timespec="seconds"),
    }


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'pipeline':<11} {'dataset':<11} {'records':>8} {'rec/s':>8} {'MAE model':>10} {'MAE naive':>10} "
        f"{'held-out model':>15} {'held-out naive':>15}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['pipeline']:<11} {r['dataset']:<11} {r['records']:>8} {r['records_per_s']:>8,.0f} "
            f"{r['model_mae']:>10.4g} "
            f"{r['naive_mae']:>10.4g} {r['held_out_model_mae']:>15.4g} {r['held_out_naive_mae']:>15.4g}"
        )


if __name__ == "__main__":
    sys.exit(main())
