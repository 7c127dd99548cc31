"""Smaller served networks, by distillation and by structured pruning: validation accuracy against engine speed.

    python benchmarks/compress.py            # greensboro_temp and etth2: about 20 minutes on 2 shared cores
    python benchmarks/compress.py --quick    # a smoke run: 20 training steps, every 24th origin, 2 speed rounds
    python benchmarks/compress.py --datasets greensboro_temp

Writes benchmarks/results/compress.json and the tables of docs/compression.md. Two sections:

accuracy  On each dataset's validation protocol (benchmarks/accuracy.py --validation: the rows before
          its test part, never the test part; pretraining on the leading part of those, the rest
          scored), with the protocol's own network, training settings (its pretraining steps: 150
          on greensboro_temp, 300 on etth2) and features, at these sizes (layers x hidden units):
            from its seed        trained as the accuracy benchmark's network is: 2 x 128 (the
                                 teacher), 2 x 96, 2 x 64 (the protocol's own), 2 x 32, 1 x 64, 1 x 32;
                                 and 2 x 64 for twice the steps, as many as a pruned network has had
            distilled            1 x 64 and 1 x 32 from their seeds, on the targets and the teacher's
                                 forecasts and quantiles (learning/distill.py, training.teacher_weight 0.5)
            pruned               the teacher with each layer's weakest units by weight magnitude removed
                                 (learning/prune.py), keeping 75%, 50% and 25% of them (2 x 96, 2 x 64,
                                 2 x 32), then fine-tuned with the same settings as from the seed
            pruned, not tuned    the same before fine-tuning
            pruned by activation at 50%: the units ranked by their mean output times the weights
                                 reading them
            pruned + distilled   at 25%: fine-tuned on the teacher's forecasts too
          Each is then served frozen by the engine (`EngineMethod`, the network alone, without the
          online combination and without retraining: what differs between rows is the network) and
          scored at every origin of the validation part as accuracy.py scores it: MAE per horizon
          label, coverage of the 80% interval, MAE relative to persistence at the same origins.
speed     `Engine.step` on throughput.py's benchmark pipeline (input 4, horizon 24, three quantiles)
          with a GRU of each size, one record of each of 10,000 series a step (the engine's cost per
          series is flat from there: throughput.json), every size in interleaved rounds
          (throughput.step_seconds: each size's best round's median step). On one torch thread, timed
          in the process's CPU seconds rather than wall-clock ones: on a 2-core machine shared with
          other work, a step's wall time measured the neighbours as much as the step, its CPU time
          far less. So the figure is series-steps per CPU-second of one core; the ratios between
          sizes are what to read (throughput.py's engine rows use every core: higher figures). Speed
          depends on the shape alone, so a pruned and a scratch network of one size run alike.
          Unstructured pruning: the teacher with 50% and 90% of each weight matrix zeroed (the
          smallest magnitudes), timed beside it: the dense kernels gain nothing from zeros, which is
          why the project does not offer it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from forecaster.build import model_spec, seeded_model
from forecaster.config import Pipeline
from forecaster.evaluation import prequential
from forecaster.evaluation.network import EngineMethod, Lags, observations
from forecaster.learning import distill, prune, tbptt
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster

import accuracy  # benchmarks/accuracy.py, beside this script: protocols, streams, scoring
import tables  # benchmarks/tables.py
import throughput  # benchmarks/throughput.py: the engine's timing

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("greensboro_temp", "etth2")
TEACHER = (2, 128)
SCRATCH = ((2, 128), (2, 96), (2, 64), (2, 32), (1, 64), (1, 32))
STUDENTS = ((1, 64), (1, 32))
KEEP = (0.75, 0.5, 0.25)
ACTIVATION_KEEP = 0.5  # pruning by activation measured at this ratio alone (no better than magnitude at the others)
LONGER = (2, 64)  # the size trained from its seed for as many steps as a pruned network has had
TEACHER_WEIGHT = 0.5
SPEED_SERIES = 10_000
ZEROED = (0.5, 0.9)  # the unstructured pruning timed: this share of each weight matrix zeroed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--quick", action="store_true", help="20 training steps, every 24th origin, 2 speed rounds")
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated (default {','.join(DATASETS)})"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/compress.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in accuracy.PROTOCOLS or n in accuracy.PUBLISHED]
    if unknown or not names:
        parser.error(f"--datasets: expected names from {', '.join(accuracy.DEFAULT_DATASETS)}, got {args.datasets!r}")
    began = time.perf_counter()
    # One thread throughout: accuracy.py's engine steps a handful of series at a time, the speed section
    # counts CPU seconds (see the docstring), and on a shared 2-core machine a second OpenMP thread made
    # the engine's steps 3x slower, not faster.
    torch.set_num_threads(1)
    speed = speed_section(args.quick)
    rows = [row for name in names for row in accuracy_section(name, args.quick)]
    result = {
        "machine": throughput.machine(),
        "quick": args.quick,
        "teacher_weight": TEACHER_WEIGHT,
        "seconds": round(time.perf_counter() - began),
        "accuracy": rows,
        "speed": speed,
    }
    tables.write_results(args.out, result)
    print(f"wrote {args.out} in {result['seconds']} s")
    return 0


# -- speed ------------------------------------------------------------------------------------------


def speed_section(quick: bool) -> list[dict]:
    """Series-steps per CPU-second of every size, and of the teacher with weights zeroed."""
    n, engines = SPEED_SERIES, {}
    for layers, hidden in SCRATCH:
        engines[layers, hidden, 0.0] = speed_engine(n, layers, hidden)
    for share in ZEROED:
        engines[(*TEACHER, share)] = speed_engine(n, *TEACHER, zeroed=share)
    rounds, steps = (2, 3) if quick else (12, 10)
    best = throughput.step_seconds(engines, n, rounds, steps, clock=time.process_time)
    rows = []
    for (layers, hidden, share), seconds in best.items():
        rows.append(
            {
                "n_series": n,
                "layers": layers,
                "hidden": hidden,
                "zeroed": share,
                "parameters": parameters(engines[layers, hidden, share].model),
                "steps_per_cpu_s": round(n / seconds),
                "step_cpu_ms": round(1e3 * seconds, 3),
            }
        )
        print(
            f"  speed {layers} x {hidden:<3} zeroed {share:.0%}: {n / seconds:>10,.0f} series-steps/CPU-s", flush=True
        )
    return rows


def speed_engine(n: int, layers: int, hidden: int, zeroed: float = 0.0) -> Engine:
    """An engine on throughput.py's pipeline with a GRU of this size, `zeroed` of each weight matrix zero."""
    pipeline = throughput.bench_pipeline("gru", n, hidden_size=hidden, num_layers=layers)
    model = seeded_model(pipeline)
    if zeroed:
        with torch.no_grad():
            for weight in model.parameters():
                if weight.dim() == 2:
                    weight.masked_fill_(weight.abs() <= weight.abs().flatten().quantile(zeroed), 0.0)
    return Engine(pipeline, model)


def parameters(model: Forecaster) -> int:
    return sum(p.numel() for p in model.parameters())


# -- accuracy ---------------------------------------------------------------------------------------


class Bench:
    """One dataset's validation protocol: its stream, the leading part prepared for training, its pipeline, the
    origins scored and persistence's forecasts from them."""

    def __init__(self, name: str, quick: bool):
        self.name = name
        self.protocol = accuracy.protocol_of(f"{self.name}_validation")
        self.stream = accuracy.load_stream(self.protocol.name)
        self.pipeline = accuracy.pipeline(self.protocol, self.protocol.horizon, self.stream, combine=False)
        if quick:
            training = replace(self.pipeline.training, steps=20, warmup_steps=5)
            self.pipeline = replace(self.pipeline, training=training)
        net, leading = self.protocol.network, self.stream[: accuracy.split(self.protocol, len(self.stream))[0]]
        lags = Lags(net.lags, len(self.stream.channels), net.season)(leading.y) if net.lags else None
        self.series = tbptt.prepare(self.pipeline, observations(leading, net.covariates, lags))
        stride = self.protocol.stride * (24 if quick else 1)
        self.at = accuracy.origin_set(self.protocol, len(self.stream), stride)
        self.stride = stride
        self.persistence = prequential.run(
            accuracy.make_method("persistence", self.protocol, accuracy.FULL),
            self.stream,
            self.at,
            self.protocol.horizon,
        )

    def sized(self, layers: int, hidden: int) -> Pipeline:
        model = replace(self.pipeline.model, num_layers=layers, hidden_size=hidden)
        return replace(self.pipeline, model=model)

    def trained(
        self, model: Forecaster, series=None, teacher_weight: float = 0.0, longer: int = 1
    ) -> tuple[Forecaster, float]:
        """`model` fitted in place on the leading part (with soft targets in `series`, distilled) for `longer`
        times the protocol's steps; the seconds it took."""
        training = self.pipeline.training
        training = replace(training, teacher_weight=teacher_weight, steps=longer * training.steps)
        began = time.perf_counter()
        tbptt.fit(model, series or self.series, training)
        return model, time.perf_counter() - began

    def scored(self, label: str, how: str, model: Forecaster, seconds: float) -> list[dict]:
        """The model served frozen by the engine over the validation stream, scored at every origin."""
        net = self.protocol.network
        lags = Lags(net.lags, len(self.stream.channels), net.season) if net.lags else None
        spec = model.spec
        method = EngineMethod(
            label, self.sized(spec.num_layers, spec.hidden_size), model, self.stream.channels, net.covariates, lags
        )
        forecasts = prequential.run(method, self.stream, self.at, self.protocol.horizon)
        rows = accuracy.score(
            self.protocol,
            self.stream,
            self.at,
            forecasts,
            self.persistence,
            label,
            self.stride,
            seconds,
            np.array(method.intervals),
        )
        for row in rows:
            row.update(how=how, layers=spec.num_layers, hidden=spec.hidden_size, parameters=parameters(model))
        headline = rows[-1]
        print(
            f"  {self.name:<16} {label:<28} MAE {headline['mae']:.4f} (x{headline['relative_mae']:.3f} persistence) "
            f"coverage {headline['coverage80']:.2f}  trained in {seconds:.0f} s",
            flush=True,
        )
        return rows


def accuracy_section(name: str, quick: bool) -> list[dict]:
    """Every model of the docstring on one dataset's validation protocol; one row per (model, horizon label)."""
    bench = Bench(name, quick)
    rows, trained = [], {}
    for layers, hidden in SCRATCH:
        trained[layers, hidden], seconds = bench.trained(seeded_model(bench.sized(layers, hidden)))
        rows += bench.scored(f"{layers} x {hidden}", "scratch", trained[layers, hidden], seconds)
    teacher = trained[TEACHER]
    # the control of pruning's fine-tuning: a network of the pruned size given as many steps as teacher + fine-tuning
    model, seconds = bench.trained(seeded_model(bench.sized(*LONGER)), longer=2)
    rows += bench.scored(f"{LONGER[0]} x {LONGER[1]}, twice the steps", "scratch_longer", model, seconds)
    taught = distill.taught(teacher, bench.series)
    for layers, hidden in STUDENTS:
        model, seconds = bench.trained(seeded_model(bench.sized(layers, hidden)), taught, TEACHER_WEIGHT)
        rows += bench.scored(f"{layers} x {hidden} distilled", "distilled", model, seconds)
    for keep in KEEP:
        spec = model_spec(bench.sized(TEACHER[0], round(keep * TEACHER[1])))
        label = f"{spec.num_layers} x {spec.hidden_size} pruned"
        rows += bench.scored(f"{label}, not tuned", "pruned_not_tuned", prune.pruned(teacher, spec), 0.0)
        model, seconds = bench.trained(prune.pruned(teacher, spec))
        rows += bench.scored(label, "pruned", model, seconds)
        if keep == ACTIVATION_KEEP:
            model, seconds = bench.trained(prune.pruned(teacher, spec, "activation", bench.series))
            rows += bench.scored(f"{label} by activation", "pruned_activation", model, seconds)
        if keep == KEEP[-1]:
            model, seconds = bench.trained(prune.pruned(teacher, spec), taught, TEACHER_WEIGHT)
            rows += bench.scored(f"{label} + distilled", "pruned_distilled", model, seconds)
    return [{k: accuracy._clean(v) for k, v in row.items()} for row in rows]


if __name__ == "__main__":
    sys.exit(main())
