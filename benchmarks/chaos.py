"""Kill the daemon over and over during a replay of real data; prove nothing is lost and state is exact.

A paced replay of ETTh1 (7 series, hourly) feeds the input topic while `forecaster run`
(a real subprocess) is stopped by a schedule: SIGTERM and SIGINT rounds (clean stops),
then SIGKILLs at random gaps of 0.1 to 1 s after each restart starts consuming, each
followed by a restart. Then:
  - lost: input records with no forecast in the output topic (must be 0);
  - duplicates: forecasts beyond one per input record, against the bound of what can be
    in flight since the last checkpoint at each kill;
  - max_rel_diff_vs_shadow: the largest relative difference (norm-wise: largest absolute
    difference over the largest magnitude of the reference forecast) between the forecasts
    made after the final restart and those of an uninterrupted daemon over the same input;
    float rounding between differently batched runs stays far below 1e-5, a state restored
    wrongly does not.

    python benchmarks/chaos.py                # 2 TERM, 2 INT, 30 KILL; writes benchmarks/results/chaos.json
    python benchmarks/chaos.py --quick        # 1 TERM, 1 INT, 3 KILL on fewer records (what the suite runs)
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import yaml

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.io import datasets
from forecaster.io.broker import EmbeddedBroker, free_port
from forecaster.io.kafka import Sink, create_topics
from forecaster.tools.replay import messages, replay

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]

CHECKPOINT_EVERY_RECORDS = 400
MAX_BATCH = 200
HELD_BACK_SPLIT = 0.8  # the last 20% of the input is published only once the final run is consuming


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 SIGTERM, 1 SIGINT, 3 SIGKILLs on 3,000 records")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs (default 30, quick 3)")
    parser.add_argument("--records", type=int, default=None, help="input records (default 30,000, quick 3,000)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="replay rate, records/s (default: paced so the input lasts through the schedule)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill gaps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/chaos.json")
    args = parser.parse_args(argv)
    plan = {
        "terms": 1 if args.quick else 2,
        "ints": 1 if args.quick else 2,
        "kills": args.kills if args.kills is not None else (3 if args.quick else 30),
        "records": args.records or (3000 if args.quick else 30_000),
    }
    # About 5 s per clean stop and 12 s per kill (a killed member's session must expire before
    # its partitions are reassigned): pace the first 80% of the input to last that long.
    expected_s = 5 * (plan["terms"] + plan["ints"]) + 12 * plan["kills"]
    plan["rate"] = args.rate or max(20.0, HELD_BACK_SPLIT * plan["records"] / expected_s)
    result = run(plan, random.Random(args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    ok = (
        result["lost"] == 0
        and result["duplicates"] <= result["max_duplicates_allowed"]
        and result["max_rel_diff_vs_shadow"] <= 1e-5
        and result["clean_stop_exit_codes"] == [0] * (plan["terms"] + plan["ints"])
    )
    print(f"wrote {args.out}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def run(plan: dict, rng: random.Random) -> dict:
    started = time.monotonic()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        scratch = Path(scratch)
        tag = uuid.uuid4().hex[:8]
        chaos = write_config(scratch / "chaos", broker.bootstrap, tag, "out", f"chaos-{tag}")
        shadow = write_config(scratch / "shadow", broker.bootstrap, tag, "shadow", f"shadow-{tag}")
        kafka = chaos.settings.kafka
        pipeline = chaos.pipelines[0]
        create_topics(
            kafka,
            [
                (t, 3)
                for t in (
                    pipeline.input_topic,
                    pipeline.output_topic,
                    pipeline.dead_letter_topic,
                    shadow.pipelines[0].output_topic,
                    shadow.pipelines[0].dead_letter_topic,
                )
            ],
        )
        first_part = int(HELD_BACK_SPLIT * plan["records"])
        feeding = threading.Thread(
            target=replay,
            args=(kafka, "etth1", pipeline.input_topic),
            kwargs={"rate": plan["rate"], "limit": first_part},
        )
        feeding.start()
        daemon = Subprocess(chaos, scratch / "chaos" / "daemon.log")
        codes, final_start = torture(daemon, plan, rng, feeding)
        feeding.join()
        tail = messages(datasets.load("etth1"), pipeline.input_topic, plan["records"])[first_part:]
        Sink(kafka).deliver(tail, threading.Event())
        daemon.wait_until_consuming()
        forecasts = wait_for_all(broker.bootstrap, pipeline.output_topic, plan["records"])
        codes_final = daemon.stop(signal.SIGTERM)
        shadow_forecasts = run_shadow(shadow, broker.bootstrap, plan["records"])
    return summarise(plan, forecasts, shadow_forecasts, final_start, codes, codes_final, time.monotonic() - started)


def write_config(folder: Path, bootstrap: str, tag: str, output: str, group: str) -> config_module.Config:
    """A one-pipeline deployment over ETTh1 with frequent checkpoints; chaos and shadow differ in output and group."""
    (folder / "pipelines").mkdir(parents=True)
    pipeline = {
        "name": "chaos",
        "input_topic": f"{tag}.in",
        "output_topic": f"{tag}.{output}",
        "dead_letter_topic": f"{tag}.{output}.dead",
        "record": {"key": "series", "timestamp": "time", "target": "value"},
        "cadence": "1h",
        "horizon": 24,
        "calendar": {"hour_of_day": True, "day_of_week": True},
        "model": {"cell": "gru", "hidden_size": 32, "num_layers": 2, "weights": None, "seed": 0},
        "checkpoint": {"every_records": CHECKPOINT_EVERY_RECORDS, "every_seconds": 1.0},
        "batching": {"max_records": MAX_BATCH, "poll_timeout_ms": 100},
    }
    (folder / "pipelines" / "chaos.yaml").write_text(yaml.safe_dump(pipeline))
    settings = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        },
        "device": "cpu",
        "metrics": {"port": free_port()},
        "state_dir": str(folder / "state"),
        "pipelines": ["pipelines/chaos.yaml"],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return config_module.load(folder / "config.yaml")


class Subprocess:
    """`forecaster run` as a child process, restartable, with its log appended to one file."""

    def __init__(self, config: config_module.Config, log_path: Path):
        self.config, self.log_path = config, log_path
        self.metrics_url = f"http://127.0.0.1:{config.settings.metrics.port}/metrics"
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "forecaster.cli", "run", "-c", str(self.config.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.restarts += 1

    def wait_until_consuming(self, timeout_s: float = 60.0) -> bool:
        """Until this process has consumed a record (its own counter: a fresh process starts at 0)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if consumed(self.metrics_url) > 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, signum: int, timeout_s: float = 60.0) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout_s)


def consumed(url: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("forecaster_records_consumed_total{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return 0.0


def torture(daemon: Subprocess, plan: dict, rng: random.Random, feeding: threading.Thread) -> tuple[list[int], float]:
    """Run the signal schedule; returns the exit codes of the clean stops and when the final run started.

    Each signal comes 0.1 to 1 s after the restarted daemon consumes its first record (once
    the paced input has run out there may be nothing left to consume: it then comes anyway).
    """
    schedule = [signal.SIGTERM] * plan["terms"] + [signal.SIGINT] * plan["ints"] + [signal.SIGKILL] * plan["kills"]
    codes = []
    for number, signum in enumerate(schedule, 1):
        daemon.start()
        if not daemon.wait_until_consuming(60.0 if feeding.is_alive() else 15.0) and feeding.is_alive():
            raise RuntimeError(f"daemon did not start consuming (see {daemon.log_path})")
        time.sleep(rng.uniform(0.1, 1.0))
        code = daemon.stop(signum)
        if signum != signal.SIGKILL:
            codes.append(code)
        print(f"  {number}/{len(schedule)}: {signal.Signals(signum).name} -> exit {code}", flush=True)
    final_start = time.time()
    daemon.start()
    return codes, final_start


def wait_for_all(bootstrap: str, topic: str, records: int, timeout_s: float = 300.0) -> list[dict]:
    """Read the output topic until every input record has a forecast (or the deadline passes)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
        consumer.seek_to_beginning()
        forecasts, distinct = [], set()
        deadline = time.monotonic() + timeout_s
        while len(distinct) < records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    body = json.loads(record.value)
                    forecasts.append(body)
                    distinct.add((body["series"], body["time"]))
        return forecasts
    finally:
        consumer.close()


def run_shadow(config: config_module.Config, bootstrap: str, records: int) -> list[dict]:
    """An uninterrupted daemon over the same input, for reference."""
    daemon = Daemon(config)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        return wait_for_all(bootstrap, config.pipelines[0].output_topic, records)
    finally:
        daemon.stop()
        runner.join(60)


def summarise(plan, forecasts, shadow, final_start, codes, final_code, seconds) -> dict:
    from datetime import datetime

    from forecaster.io import datasets
    from forecaster.serving.records import format_time, parse_time

    inputs = {
        (r["series"], format_time(parse_time(r["time"], "time")[0]))
        for r in datasets.load("etth1").records[: plan["records"]]
    }
    reference = {(f["series"], f["time"]): np.array(f["values"]) for f in shadow}
    counts: dict[tuple, int] = {}
    for f in forecasts:
        counts[(f["series"], f["time"])] = counts.get((f["series"], f["time"]), 0) + 1
    lost = len(inputs - set(counts))
    after_final = [f for f in forecasts if datetime.fromisoformat(f["issued_at"]).timestamp() >= final_start]

    # Norm-wise relative error of each forecast vector: element-wise, a step forecast near zero
    # (ETT channels cross it) turns float rounding between differently batched runs into noise.
    def relative(f):
        ref = reference[(f["series"], f["time"])]
        return float(np.max(np.abs(np.array(f["values"]) - ref)) / max(float(np.max(np.abs(ref))), 1e-6))

    absolute = lambda f: float(np.max(np.abs(np.array(f["values"]) - reference[(f["series"], f["time"])])))
    return {
        "records": plan["records"],
        "kills": plan["kills"],
        "terms": plan["terms"] + plan["ints"],
        "lost": int(lost),
        "duplicates": int(sum(c - 1 for c in counts.values())),
        # at most the records taken since the last checkpoint, plus the batch in flight, per kill
        "max_duplicates_allowed": plan["kills"] * (CHECKPOINT_EVERY_RECORDS + MAX_BATCH),
        "max_rel_diff_vs_shadow": max((relative(f) for f in after_final), default=0.0),
        "forecasts_after_final_restart": len(after_final),
        "max_rel_diff_all_vs_shadow": max(
            (relative(f) for f in forecasts if (f["series"], f["time"]) in reference), default=0.0
        ),
        "max_abs_diff_vs_shadow": max((absolute(f) for f in after_final), default=0.0),
        "clean_stop_exit_codes": codes,
        "final_exit_code": final_code,
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
