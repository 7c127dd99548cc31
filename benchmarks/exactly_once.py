"""What exactly-once mode costs: records/s of one member with `checkpoint.exactly_once` off and on, same backlog.

One embedded broker and the scale-out benchmark's pipeline (6 partitions, ETTh1's channels under
20 keys each, state in the changelog, a checkpoint every 300 records or second). One backlog is
published once; then members, each its own consumer group, consume it in turn, off and on
alternately (`--rounds` of each), and each one's records/s is taken over a window once it has its
partitions, as `benchmarks/scaleout.py` takes its throughput.

    python benchmarks/exactly_once.py            # prints the figures; writes benchmarks/results/exactly_once.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import scaleout  # benchmarks/scaleout.py, beside this script
import yaml

from forecaster.io.broker import EmbeddedBroker
from forecaster.io.kafka import Sink
from forecaster.io.messages import Message

REPO = Path(__file__).resolve().parents[1]


def records_per_s(group: scaleout.Group, exactly_once: bool, window_s: float) -> float:
    """Start one member of `group`, with exactly-once mode as asked; its records/s over `window_s`."""
    member = group.member("A")
    pipeline_file = member.config.path.parent / "pipelines" / "scaleout.yaml"
    pipeline = yaml.safe_load(pipeline_file.read_text())
    pipeline["checkpoint"]["exactly_once"] = exactly_once
    pipeline_file.write_text(yaml.safe_dump(pipeline))
    group.add("A")
    time.sleep(2.0)  # past the rebalance
    before, t0 = member.consumed(), time.monotonic()
    time.sleep(window_s)
    after, t1 = member.consumed(), time.monotonic()
    codes = group.stop_all()
    if codes != [0]:
        raise RuntimeError(f"the member exited with {codes}: see {member.log_path}")
    return (after - before) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="members per setting, off and on alternately")
    parser.add_argument("--window", type=float, default=15.0, help="seconds each member is timed over")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/exactly_once.json")
    args = parser.parse_args(argv)
    plan = {"retraining": False, "copies": 20, "session_timeout_ms": 6000}
    tag = uuid.uuid4().hex[:8]
    backlog = scaleout.stream(plan["copies"], 1500)
    rates: dict[bool, list[float]] = {False: [], True: []}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="exactly-once-") as scratch:
        for round_ in range(args.rounds):
            for exactly_once in (False, True):
                name = f"{'on' if exactly_once else 'off'}{round_}"
                group = scaleout.Group(Path(scratch) / name, broker.bootstrap, tag, f"{name}-{tag}", plan)
                config = group.member("A").config
                scaleout.create(config)  # the output and changelog of its group; the input once
                if not rates[False]:
                    topic = config.pipelines[0].input_topic
                    messages = [Message(topic, m.key, m.value) for m in backlog]
                    Sink(config.settings.kafka).deliver(messages, threading.Event())
                rates[exactly_once].append(records_per_s(group, exactly_once, args.window))
                print(f"  exactly_once {exactly_once}: {rates[exactly_once][-1]:,.0f} records/s", flush=True)
    off, on = (sum(rates[k]) / len(rates[k]) for k in (False, True))
    result = {
        "records_per_s_off": [round(r) for r in rates[False]],
        "records_per_s_on": [round(r) for r in rates[True]],
        "on_over_off": round(on / off, 3),
        "backlog_records": len(backlog),
        "window_s": args.window,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
