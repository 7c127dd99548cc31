"""Several daemons share one pipeline while members come and go; prove nothing is lost and every forecast is exact.

One embedded broker, an input topic of 6 partitions and 140 real series (ETTh1's 7 channels
under 20 keys each), replayed at a steady rate while `forecaster run` members (real
subprocesses, one consumer group, state in the changelog) come and go:
    start A; add B, then C; SIGKILL B; SIGTERM C; add D; SIGSTOP A beyond the session timeout,
    then SIGCONT it (a stale owner); SIGKILL A and restart it; SIGKILL D, add B; SIGTERM A.
Then:
  - lost: input records with no forecast (must be 0);
  - duplicates: forecasts beyond one per record, against the bound of what a member can have
    taken since its last checkpoint at each abrupt loss (`allowed_duplicates`);
  - max_rel_diff_vs_shadow: the largest norm-wise relative difference between any forecast's
    values, duplicates included, and those of an uninterrupted single member over the same input.
Also, unless --quick: the records/s of 1 and of 2 members on one backlog, and the handover
pause (a partition's assignment to its first forecast) at 10,000 series per partition.

    python benchmarks/scaleout.py               # writes benchmarks/results/scaleout.json and docs/scaling.md's table
    python benchmarks/scaleout.py --quick       # A; add B; SIGKILL B; add C; stale A; SIGTERM A (what the suite runs)
    python benchmarks/scaleout.py --retraining  # retraining on: model versions, not exactness, are checked
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import chaos  # benchmarks/chaos.py, beside this script: the daemon as a subprocess, an uninterrupted shadow
import numpy as np
import yaml

from forecaster import config as config_module
from forecaster.build import build_engine, changelog_topic, compacted_topics, topics_of
from forecaster.io import datasets
from forecaster.io.broker import EmbeddedBroker, free_port
from forecaster.io.clients import ChangelogTopic
from forecaster.io.kafka import Sink, create_topics, read_partition, read_topic
from forecaster.io.messages import Message
from forecaster.serving import handover
from forecaster.serving.records import Observations, format_time, parse_time

import tables  # benchmarks/tables.py

REPO = Path(__file__).resolve().parents[1]

PARTITIONS = 6
CHANNELS = 7  # ETTh1's
CHECKPOINT_EVERY_RECORDS = 300
MAX_BATCH = 200
BIG_PARTITION_BATCH = 2000  # the handover pause's member takes bigger polls: 10,000 series report each hour


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short schedule on fewer series; no throughput")
    parser.add_argument("--retraining", action="store_true", help="retraining on: check versions, not exactness")
    parser.add_argument("--copies", type=int, default=None, help="keys per ETTh1 channel (default 20, quick 6)")
    parser.add_argument("--rate", type=float, default=None, help="replay records/s (default 300, quick 150)")
    parser.add_argument("--per-partition", type=int, default=10_000, help="series per partition of the pause")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/scaleout.json")
    args = parser.parse_args(argv)
    plan = {
        "quick": args.quick,
        "retraining": args.retraining,
        "copies": args.copies or (6 if args.quick else 20),
        "rate": args.rate or (150.0 if args.quick else 300.0),
        "hours": 1000 if args.quick else 3000,  # more than the schedule takes: the feed stops when it ends
        "session_timeout_ms": 3000 if args.quick else 6000,
    }
    started = time.monotonic()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="scaleout-") as scratch:
        result = come_and_go(broker, Path(scratch), plan)
        if not args.quick:
            result["throughput"] = throughput(broker, Path(scratch), plan)
            result["two_members_over_one"] = result["throughput"]["two_members_over_one"]
            result["handover"] = handover_pause(broker, Path(scratch), args.per_partition)
            result["handover_pause_s"] = result["handover"]["pause_s"]
            result["checkpoint"] = checkpoint_cost(broker, Path(scratch))
            result["checkpoint_s_touched_1pct"] = result["checkpoint"]["seconds_touched"]["1000"]
            result["checkpoint_s_touched_all"] = result["checkpoint"]["seconds_touched"]["100000"]
    result["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    tables.follow(args.out)
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    print(f"wrote {args.out}: {'PASS' if passed(result) else 'FAIL'}")
    return 0 if passed(result) else 1


def passed(result: dict) -> bool:
    """The targets of the membership schedule: nothing lost, duplicates in bound, exact (retraining off), clean
    stops that exit 0, versions that never go back (retraining on)."""
    ok = (
        result["lost"] == 0
        and result["duplicates"] <= result["max_duplicates_allowed"]
        and all(code == 0 for code in result["clean_stop_exit_codes"] + result["final_exit_codes"])
    )
    if result["retraining"]:
        return ok and result["version_regressions"] == 0
    return ok and result["max_rel_diff_vs_shadow"] <= 1e-5


# --- the input: ETTh1's channels under distinct keys -----------------------------------------------


def stream(copies: int, hours: int | None = None) -> list[Message]:
    """ETTh1 hour by hour, each channel under `copies` keys ("HUFL#3"), keyed by series (Kafka's default hash)."""
    rows = datasets.load("etth1").records
    rows = rows if hours is None else rows[: CHANNELS * hours]
    return [
        Message("", key.encode(), json.dumps({**r, "series": key}, separators=(",", ":")).encode())
        for r in rows
        for key in (f"{r['series']}#{copy}" for copy in range(copies))
    ]


class Feed:
    """Publishes a stream to a topic at a steady rate, on its own thread, until stopped; `sent` records are out."""

    def __init__(self, kafka, topic: str, messages: list[Message], rate: float):
        self.kafka, self.topic, self.messages, self.rate = kafka, topic, messages, rate
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feed")

    def start(self) -> Feed:
        self.thread.start()
        return self

    def finish(self) -> int:
        self.stopping.set()
        self.thread.join()
        return self.sent

    def _run(self) -> None:
        sink, chunk = Sink(self.kafka), max(1, int(self.rate / 10))  # about ten deliveries a second
        started = time.monotonic()
        try:
            while self.sent < len(self.messages) and not self.stopping.is_set():
                piece = self.messages[self.sent : self.sent + chunk]
                sink.deliver(
                    [Message(self.topic, m.key, m.value, partition=m.partition) for m in piece], threading.Event()
                )
                self.sent += len(piece)
                self.stopping.wait(max(0.0, started + self.sent / self.rate - time.monotonic()))
        finally:
            sink.close()


# --- a deployment of several members --------------------------------------------------------------


def write_config(folder: Path, bootstrap: str, tag: str, group: str, plan: dict, **changes) -> config_module.Config:
    """One member's config: the shared pipeline (changelog on, spill none), its own metrics port and state_dir."""
    (folder / "pipelines").mkdir(parents=True, exist_ok=True)
    pipeline = {
        "name": "scaleout",
        "input_topic": f"{tag}.in",
        "output_topic": f"{tag}.{group}.out",
        "dead_letter_topic": f"{tag}.{group}.dead",
        "partitions": changes.get("partitions", PARTITIONS),
        "record": {"key": "series", "timestamp": "time", "target": "value"},
        "cadence": "1h",
        "horizon": 24,
        "calendar": {"hour_of_day": True, "day_of_week": True},
        "model": {"cell": "gru", "hidden_size": 32, "num_layers": 2, "weights": None, "seed": 0},
        "max_series": changes.get("max_series", 10_000),
        "spill": "none",
        "retraining": {"enabled": plan["retraining"], "every_records": 2000, "steps": 10},
        "checkpoint": (
            {"changelog": True, "every_records": CHECKPOINT_EVERY_RECORDS, "every_seconds": 1.0}
            if changes.get("changelog", True)
            else {"every_records": 100_000, "every_seconds": 600.0}  # the shadow: uninterrupted, no changelog
        ),
        "batching": {"max_records": changes.get("max_batch", MAX_BATCH), "poll_timeout_ms": 100},
    }
    (folder / "pipelines" / "scaleout.yaml").write_text(yaml.safe_dump(pipeline))
    session = plan["session_timeout_ms"]
    settings = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "consumer": {"session_timeout_ms": session, "heartbeat_interval_ms": session // 6},
        },
        "device": "cpu",
        "metrics": {"port": free_port()},
        "log_format": "json",
        "state_dir": str(folder / "state"),
        "pipelines": ["pipelines/scaleout.yaml"],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return config_module.load(folder / "config.yaml")


def create(config: config_module.Config) -> None:
    """The pipeline's topics, as `forecaster topics` makes them: its changelog and model topic compacted."""
    pipeline = config.pipelines[0]
    create_topics(config.settings.kafka, topics_of(config, pipeline), compacted_topics(config, pipeline))


class Member(chaos.Subprocess):
    """One `forecaster run` of the group, by name, with what its /metrics says."""

    def __init__(self, name: str, config: config_module.Config, log_path: Path):
        super().__init__(config, log_path)
        self.name = name

    def sample(self, metric: str) -> float:
        """A metric's value (its first sample), 0 while the process is down or starting."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=1) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith(metric + "{"):
                        return float(line.rsplit(" ", 1)[1])
        except OSError:
            pass
        return 0.0

    def consumed(self) -> float:
        return self.sample("forecaster_records_consumed_total")

    def handovers(self) -> float:
        return self.sample("forecaster_handover_seconds_count")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


def wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


class Group:
    """The members of one consumer group and the membership events done to them, with what they caused."""

    def __init__(self, folder: Path, bootstrap: str, tag: str, group: str, plan: dict):
        self.folder, self.bootstrap, self.tag, self.group, self.plan = folder, bootstrap, tag, group, plan
        self.members: dict[str, Member] = {}
        self.live: list[Member] = []
        self.events: list[str] = []
        self.kills = self.terms = self.stale_owner_episodes = 0
        self.exit_codes: list[int] = []
        self.rng = random.Random(0)  # when, between two checkpoints, a member is killed or stopped

    def member(self, name: str) -> Member:
        if name not in self.members:
            config = write_config(self.folder / name, self.bootstrap, self.tag, self.group, self.plan)
            self.members[name] = Member(name, config, self.folder / f"{name}.log")
        return self.members[name]

    def add(self, name: str) -> None:
        """Start a member and wait until the group has given it partitions and it has stepped records."""
        member = self.member(name)
        member.start()
        self.live.append(member)
        wait_until(lambda: member.consumed() > 0, 90, f"member {name} to consume (see {member.log_path})")
        self._log(f"add {name}")

    def kill(self, name: str) -> None:
        """SIGKILL: the group moves the member's partitions once its session times out."""
        member = self.members[name]
        others = self._others(member)
        time.sleep(self.rng.uniform(0.2, 1.0))  # anywhere between two checkpoints
        member.stop(signal.SIGKILL)
        self.live.remove(member)
        self.kills += 1
        self._await_takeover(others, f"the partitions of killed {name} to move")
        self._log(f"SIGKILL {name}")

    def term(self, name: str) -> None:
        """SIGTERM: the member writes its state and leaves; the group moves its partitions at once."""
        member = self.members[name]
        others = self._others(member)
        self.exit_codes.append(member.stop(signal.SIGTERM))
        self.live.remove(member)
        self.terms += 1
        self._await_takeover(others, f"the partitions of stopped {name} to move")
        self._log(f"SIGTERM {name} -> exit {self.exit_codes[-1]}")

    def stale(self, name: str) -> None:
        """SIGSTOP beyond the session timeout, until the others have taken the member's partitions; then SIGCONT:
        it wakes up believing it owns them, and must not corrupt their state."""
        member = self.members[name]
        others = self._others(member)
        time.sleep(self.rng.uniform(0.2, 1.0))
        member.signal(signal.SIGSTOP)
        try:
            self._await_takeover(others, f"the partitions of stopped {name} to move")
            time.sleep(1.0)  # the new owners step and checkpoint the moved partitions meanwhile
        finally:
            member.signal(signal.SIGCONT)
        self.stale_owner_episodes += 1
        own = member.handovers()
        wait_until(lambda: member.handovers() > own, 60, f"member {name} to rejoin after SIGCONT")
        self._log(f"SIGSTOP {name} beyond the session, SIGCONT")

    def stop_all(self) -> list[int]:
        """SIGTERM the members still running; their exit codes."""
        codes = [m.stop(signal.SIGTERM) for m in self.live]
        self.live = []
        return codes

    def _others(self, member: Member) -> dict[Member, float]:
        return {m: m.handovers() for m in self.live if m is not member}

    def _await_takeover(self, others: dict[Member, float], what: str) -> None:
        if others:  # without other members, nobody takes over
            timeout_s = 10 + 4 * self.plan["session_timeout_ms"] / 1000
            wait_until(lambda: any(m.handovers() > n for m, n in others.items()), timeout_s, what)

    def _log(self, event: str) -> None:
        self.events.append(event)
        print(f"  {len(self.events)}: {event}", flush=True)


def schedule(group: Group, quick: bool) -> None:
    """The membership events of the issue (quick: one of each kind)."""
    if quick:  # A wakes up a stale owner of B's partitions, then takes B's back when B is killed
        for step, name in (("add", "A"), ("add", "B"), ("stale", "A"), ("kill", "B")):
            getattr(group, step)(name)
        return
    group.add("A")
    group.add("B")
    group.add("C")
    group.kill("B")
    group.term("C")
    group.add("D")
    group.stale("A")
    group.kill("A")
    group.add("A")  # the killed member restarts
    group.kill("D")
    group.add("B")
    group.term("A")


# --- the schedule, checked against an uninterrupted member -----------------------------------------


def come_and_go(broker, scratch: Path, plan: dict) -> dict:
    """Replay at a steady rate through the membership schedule; then compare with one uninterrupted member."""
    tag = uuid.uuid4().hex[:8]
    group = Group(scratch / "members", broker.bootstrap, tag, f"members-{tag}", plan)
    pipeline_config = group.member("A").config
    # the reference: one member alone, uninterrupted, in its own group, on the same input as it arrives
    shadow = write_config(
        scratch / "shadow", broker.bootstrap, tag, f"shadow-{tag}", plan, changelog=False, max_batch=2000
    )
    create(pipeline_config)
    create(shadow)
    messages = stream(plan["copies"], plan["hours"])
    feed = Feed(pipeline_config.settings.kafka, pipeline_config.pipelines[0].input_topic, messages, plan["rate"])
    alone = Member("shadow", shadow, scratch / "shadow.log")
    alone.start()
    feed.start()
    started = time.monotonic()
    print(f"  feeding {len(messages):,} records at most, {plan['rate']:g}/s", flush=True)
    try:
        schedule(group, plan["quick"])
    finally:
        records = feed.finish()
    schedule_s = time.monotonic() - started
    output = pipeline_config.pipelines[0].output_topic
    chaos.wait_for_all(broker.bootstrap, output, records)
    drain_s = time.monotonic() - started - schedule_s
    reference = chaos.wait_for_all(broker.bootstrap, shadow.pipelines[0].output_topic, records)
    final_codes = group.stop_all() + [alone.stop(signal.SIGTERM)]
    forecasts = [json.loads(r.value) for r in read_topic(broker.bootstrap, output, records, linger_s=1.0)]
    summary = compare(messages[:records], forecasts, reference, plan)
    summary.update(
        {
            "kills": group.kills,
            "terms": group.terms,
            "stale_owner_episodes": group.stale_owner_episodes,
            # each abrupt loss repeats what its member took since its last checkpoint: fewer than every_records
            # plus a batch; a stale owner may finish one more batch when it wakes up
            "max_duplicates_allowed": group.kills * (CHECKPOINT_EVERY_RECORDS + MAX_BATCH)
            + group.stale_owner_episodes * (CHECKPOINT_EVERY_RECORDS + 2 * MAX_BATCH),
            "events": group.events,
            "clean_stop_exit_codes": group.exit_codes,
            "final_exit_codes": final_codes,
            "series": plan["copies"] * CHANNELS,
            "partitions": PARTITIONS,
            "rate": plan["rate"],
            "schedule_seconds": round(schedule_s, 1),
            "drain_seconds": round(drain_s, 1),  # from the input's end to the members' last forecast
            "retraining": plan["retraining"],
        }
    )
    return summary


def compare(inputs: list[Message], forecasts: list[dict], reference: list[dict], plan: dict) -> dict:
    """Lost, duplicates, and the largest difference of any forecast from the uninterrupted member's."""
    keys = set()
    for message in inputs:
        body = json.loads(message.value)
        keys.add((body["series"], format_time(parse_time(body["time"], "time")[0])))
    counts = defaultdict(int)
    for f in forecasts:
        counts[f["series"], f["time"]] += 1
    expected = {(f["series"], f["time"]): np.array(f["values"]) for f in reference}

    def relative(f):  # norm-wise, as chaos.py: element-wise, a step forecast near zero turns rounding into noise
        ref = expected[f["series"], f["time"]]
        return float(np.max(np.abs(np.array(f["values"]) - ref)) / max(float(np.max(np.abs(ref))), 1e-6))

    summary = {
        "records": len(inputs),
        "forecasts": len(forecasts),
        "lost": len(keys - set(counts)),
        "duplicates": int(sum(c - 1 for c in counts.values())),
        "max_rel_diff_vs_shadow": max(
            (relative(f) for f in forecasts if (f["series"], f["time"]) in expected), default=0.0
        ),
        "compared": sum((f["series"], f["time"]) in expected for f in forecasts),
    }
    if plan["retraining"]:
        summary.update(versions(forecasts))
    return summary


def versions(forecasts: list[dict]) -> dict:
    """With retraining: the model versions served, and how often a series' forecast came from an older version
    than one before it (in the output's order, which is per series the order of issue)."""
    newest, regressions = {}, 0
    for f in sorted(forecasts, key=lambda f: datetime.fromisoformat(f["issued_at"])):
        regressions += f["model_version"] < newest.get(f["series"], 0)
        newest[f["series"]] = max(newest.get(f["series"], 0), f["model_version"])
    return {
        "model_versions_served": sorted({f["model_version"] for f in forecasts}),
        "version_regressions": regressions,
    }


# --- records/s of one member and of two, on one backlog -------------------------------------------


def throughput(broker, scratch: Path, plan: dict, hours: int = 1500, window_s: float = 15.0) -> dict:
    """Publish a backlog, then let 1 and then 2 members (each its own group) consume it: summed records/s over a
    window once every member has its partitions."""
    tag = uuid.uuid4().hex[:8]
    backlog = stream(plan["copies"], hours)
    rates = {}
    for n in (1, 2):
        group = Group(scratch / f"throughput{n}", broker.bootstrap, tag, f"throughput{n}-{tag}", plan)
        create(group.member("A").config)
        if n == 1:
            kafka, topic = group.member("A").config.settings.kafka, group.member("A").config.pipelines[0].input_topic
            Sink(kafka).deliver([Message(topic, m.key, m.value) for m in backlog], threading.Event())
        for name in "AB"[:n]:
            group.add(name)
        time.sleep(2.0)  # past the last rebalance
        members = list(group.members.values())
        before, t0 = sum(m.consumed() for m in members), time.monotonic()
        time.sleep(window_s)
        after, t1 = sum(m.consumed() for m in members), time.monotonic()
        if after >= len(backlog):
            raise RuntimeError(f"the backlog of {len(backlog)} records ran out during the window: make it longer")
        rates[n] = (after - before) / (t1 - t0)
        group.stop_all()
        print(f"  {n} member(s): {rates[n]:,.0f} records/s", flush=True)
    return {
        "records_per_s_one_member": round(rates[1]),
        "records_per_s_two_members": round(rates[2]),
        "two_members_over_one": round(rates[2] / rates[1], 3),
        "backlog_records": len(backlog),
        "window_s": window_s,
    }


# --- the handover pause of a big partition --------------------------------------------------------


def handover_pause(broker, scratch: Path, per_partition: int, warm_hours: int = 3) -> dict:
    """Member A serves 2 partitions of `per_partition` series each; B joins while records flow and takes one: the
    pause is from B's assignment to its first forecast of that partition's series."""
    tag = uuid.uuid4().hex[:8]
    plan = {"retraining": False, "session_timeout_ms": 6000}
    group = Group(scratch / "handover", broker.bootstrap, tag, f"handover-{tag}", plan)
    for name in "AB":  # two partitions, room for all the series on either member
        config = write_config(
            scratch / "handover" / name,
            broker.bootstrap,
            tag,
            group.group,
            plan,
            partitions=2,
            max_series=3 * per_partition,
            max_batch=BIG_PARTITION_BATCH,
        )
        group.members[name] = Member(name, config, scratch / "handover" / f"{name}.log")
    config = group.members["A"].config
    create(config)
    hours = big_partitions(per_partition, warm_hours + 8, config.pipelines[0].input_topic)
    warm = 2 * per_partition * warm_hours
    Sink(config.settings.kafka).deliver(hours[:warm], threading.Event())
    group.add("A")
    wait_until(lambda: group.members["A"].consumed() >= warm, 300, "member A to step the warm-up")
    time.sleep(2.0)  # a checkpoint: every series' state is in the changelog
    feed = Feed(config.settings.kafka, config.pipelines[0].input_topic, hours[warm:], rate=2000.0)
    feed.start()
    joined = time.time()
    try:
        group.add("B")
        time.sleep(3.0)
    finally:
        feed.finish()
    restore = group.members["B"].sample("forecaster_handover_seconds_sum")
    group.stop_all()
    assigned, moved = assignment(group.members["B"].log_path, joined)
    output = config.pipelines[0].output_topic
    issued = (r for p in range(2) for r in read_partition(config.settings.kafka, output, p))  # to the end: all
    first = min(
        datetime.fromisoformat(body["issued_at"]).timestamp()
        for body in (json.loads(r.value) for r in issued)
        if int(body["series"][1:]) % 2 in moved and datetime.fromisoformat(body["issued_at"]).timestamp() >= assigned
    )
    return {
        "series_per_partition": per_partition,
        "pause_s": round(first - assigned, 3),
        "restore_s": round(restore, 3),
        "warm_hours": warm_hours,
    }


def big_partitions(per_partition: int, hours: int, topic: str) -> list[Message]:
    """`per_partition` series on each of 2 partitions (series i on partition i % 2), ETTh1's values, hour by hour."""
    rows = datasets.load("etth1").records
    out = []
    for hour in range(hours):
        for i in range(2 * per_partition):
            row = rows[CHANNELS * hour + i % CHANNELS]
            body = {**row, "series": f"s{i}"}
            out.append(Message(topic, body["series"].encode(), json.dumps(body).encode(), partition=i % 2))
    return out


# --- a checkpoint's cost: the series touched, not the series held ----------------------------------


def checkpoint_cost(
    broker, scratch: Path, held: int = 100_000, touched: tuple[int, ...] = (1_000, 10_000, 100_000)
) -> dict:
    """The changelog write of a checkpoint (encoding the touched series and waiting for Kafka's acknowledgements)
    in a member holding `held` series of one partition, `touched` of which were stepped since the last one."""
    tag = uuid.uuid4().hex[:8]
    plan = {"retraining": False, "session_timeout_ms": 6000}
    config = write_config(scratch / "checkpoint", broker.bootstrap, tag, f"checkpoint-{tag}", plan, max_series=held)
    create(config)
    pipeline = config.pipelines[0]
    engine = build_engine(config, pipeline, "cpu")
    topic = ChangelogTopic(config.settings.kafka, changelog_topic(config, pipeline))
    keys = tuple(f"s{i}" for i in range(held))
    rng = np.random.default_rng(0)

    def step(hour: int, n: int) -> None:
        times = np.full(n, 1_467_331_200.0 + 3600.0 * hour)  # hourly from 2016-07-01
        offsets = np.arange(n, dtype=np.int64) + hour * held
        rows = Observations(keys[:n], times, times, rng.normal(10, 1, (n, 1)), np.arange(n), np.zeros(n, int), offsets)
        engine.step(rows, now=time.time())

    def write() -> float:
        started = time.perf_counter()
        records, slots = handover.series_records(engine, [0])
        topic.write(records, threading.Event())
        engine.store.touched[slots] = False
        return time.perf_counter() - started

    step(0, held)
    write()  # every series in the changelog once
    seconds = {}
    for hour, n in enumerate(touched, start=1):
        step(hour, n)
        seconds[str(n)] = round(write(), 3)
    topic.close()
    return {"series_held": held, "seconds_touched": seconds}


def assignment(log_path: Path, since: float) -> tuple[float, set[int]]:
    """When the member's consumer was first given partitions after `since`, and which (from its JSON log)."""
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if "assigned partitions" in entry["message"]:
            when = datetime.fromisoformat(entry["time"]).timestamp()
            partitions = json.loads(entry["message"].rsplit("assigned partitions ", 1)[1])
            if when >= since and partitions:
                return when, set(partitions)
    raise RuntimeError(f"{log_path}: no assignment logged")


if __name__ == "__main__":
    sys.exit(main())
