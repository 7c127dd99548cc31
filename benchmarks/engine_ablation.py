"""What each optimisation of the engine's hot path gains, measured side by side in one run.

    python benchmarks/engine_ablation.py [--sizes 100,10000,100000] [--cells gru,lstm] [--compile]

Every variant steps its own engine on the same poll batches (one record of each series, ETTh1's
values, as benchmarks/throughput.py), interleaved round by round so that a noisy neighbour
slows them alike; the figure is each variant's best round (its median round is kept too). Variants:

  reference       the engine before this work: `model.step` then `model.head` per wave, MKL matmuls,
                  and every batch permuted into wave order and back
  fast, addmm     fused_step.FusedStep with oneDNN switched off: tanh as 2 sigmoid(2a) - 1 with the 2 folded
                  into the weights, gates worked in place, waves cut into pieces of 16,384 rows and
                  stepped in blocks of 2,048, one wave unpermuted
  fast, unblocked fused_step.FusedStep with oneDNN, every wave whole: no pieces, no blocks
  fast            what the engine runs: oneDNN matmuls, pieces and blocks
  compiled        (--compile) the reference with torch.compile(model.step, dynamic=True); its compile
                  time (first step minus the reference's first step) is reported apart, not in the figure

Writes benchmarks/results/engine_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.serving import engine as engine_module
from forecaster.serving import fused_step, scaling
from forecaster.serving.cadence import calendar_features
from forecaster.serving.engine import Engine

from throughput import Feed, bench_pipeline, etth1, machine

REPO = Path(__file__).resolve().parents[1]

SHIPPED_ROWS_PER_STEP = engine_module._ROWS_PER_STEP


class ReferenceEngine(Engine):
    """The engine's hot path as it was before fused_step.py: kept here verbatim as the baseline."""

    def _run_waves(self, slots, observations, order, waves, filling=None):
        """As `Engine._run_waves` returns them: the deltas, each row's scale, and no values of its own making
        (the benchmark's batches have no gaps and no null readings)."""
        n, outputs = len(order), self.model.spec.outputs
        if n == 0:
            return np.zeros((0, outputs)), np.zeros(0), None
        by_wave = np.argsort(waves, kind="stable")
        bounds = np.searchsorted(waves[by_wave], np.arange(waves.max() + 2))
        rows = order[by_wave]
        dtype = self.store.dtype
        x = torch.as_tensor(observations.values[rows], device=self.device, dtype=dtype)
        cal = torch.as_tensor(
            calendar_features(observations.local_times[rows], self.pipeline.calendar), device=self.device, dtype=dtype
        )
        device_slots = torch.as_tensor(slots[by_wave], device=self.device)
        deltas = torch.empty(n, outputs, device=self.device, dtype=dtype)
        scales = torch.empty(n, device=self.device, dtype=dtype)
        for a, b in zip(bounds[:-1], bounds[1:]):
            deltas[a:b], scales[a:b] = self._reference_wave(device_slots[a:b], x[a:b], cal[a:b])
        result, scale = np.empty((n, outputs)), np.empty(n)
        result[by_wave], scale[by_wave] = deltas.cpu().numpy(), scales.cpu().numpy()
        return result, scale, None

    def _reference_wave(self, slots, x, cal):
        state, moments = self.store.gather(slots)
        moments = scaling.update(moments, x, self._alpha)
        inputs = torch.cat([scaling.scale(moments, x, self.pipeline.scaling.clip), cal], dim=1)
        out, state = self.model.step(inputs, state)
        self.store.scatter(slots, state, moments)
        std = scaling.std(moments)[:, :1]
        return std * self.model.head(out, inputs), std[:, 0]


class CompiledEngine(ReferenceEngine):
    """The reference with its model step handed to torch.compile, afresh (compiled on its first step)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        torch._dynamo.reset()
        self.model.step = torch.compile(self.model.step, dynamic=True)


UNBLOCKED = 1 << 40


def variants(cell: str, n: int, compile_: bool) -> dict[str, tuple[Engine, int]]:
    """name -> (engine, rows per step: how the engine cuts waves into pieces while it runs)."""
    pipeline = bench_pipeline(cell, n)
    made = {"reference": (ReferenceEngine(pipeline, seeded_model(pipeline)), UNBLOCKED)}
    for name, onednn, rows in (
        ("fast, addmm", False, engine_module._ROWS_PER_STEP),
        ("fast, unblocked", True, UNBLOCKED),
        ("fast", True, engine_module._ROWS_PER_STEP),
    ):
        engine = Engine(pipeline, seeded_model(pipeline))
        engine._fast = fused_step.FusedStep(engine.model, block_rows=min(rows, fused_step.BLOCK_ROWS), onednn=onednn)
        made[name] = (engine, rows)
    if compile_:
        made["compiled"] = (CompiledEngine(pipeline, seeded_model(pipeline)), UNBLOCKED)
    return made


def measure(cell: str, n: int, rounds: int, steps: int, compile_: bool, values) -> dict:
    """Each variant's mean step in its best of `rounds` interleaved rounds of `steps` batches (and in its median
    round)."""
    engines, feed = variants(cell, n, compile_), Feed(n, values)
    warm_up, first = [feed.next() for _ in range(2)], {}
    for name, (engine, rows) in engines.items():
        engine_module._ROWS_PER_STEP = rows
        for batch in warm_up:  # the first admits every series (and compiles, for `compiled`)
            started = time.perf_counter()
            engine.step(batch, now=time.time())
            first.setdefault(name, time.perf_counter() - started)
    seconds = {name: [] for name in engines}
    for _ in range(rounds):
        batches = [feed.next() for _ in range(steps)]
        for name, (engine, rows) in engines.items():
            engine_module._ROWS_PER_STEP = rows
            started = time.perf_counter()
            for batch in batches:
                engine.step(batch, now=time.time())
            seconds[name].append((time.perf_counter() - started) / steps)
    engine_module._ROWS_PER_STEP = SHIPPED_ROWS_PER_STEP
    row = {
        "cell": cell,
        "n_series": n,
        "steps_per_s": {name: round(n / min(s)) for name, s in seconds.items()},
        "steps_per_s_median_round": {name: round(n / statistics.median(s)) for name, s in seconds.items()},
    }
    if compile_:
        row["compile_s"] = round(first["compiled"] - first["reference"], 1)
    return row


def tanh_micro(rows: int = 2048, hidden: int = 64, repeats: int = 500) -> dict:
    """torch.tanh against 2 sigmoid(2a) - 1 (the 2 already in the weights) on one block of gates."""
    a = torch.randn(rows, hidden)
    timings = {}
    for name, fn in (
        ("torch.tanh", lambda: torch.tanh(a)),
        ("sigmoid form", lambda: a.clone().sigmoid_().mul_(2.0).sub_(1.0)),
        ("clone alone", lambda: a.clone()),
    ):
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings[name] = (time.perf_counter() - started) / repeats * 1e6
    return {
        "rows": rows,
        "hidden": hidden,
        "torch_tanh_us": round(timings["torch.tanh"], 1),
        "sigmoid_form_us": round(timings["sigmoid form"] - timings["clone alone"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,10000,100000", help="series counts (default 100,10000,100000)")
    parser.add_argument("--cells", default="gru,lstm", help="cells (default gru,lstm)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (compiles for a while)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/engine_ablation.json")
    args = parser.parse_args()
    values, rows = etth1(), []
    with torch.no_grad():
        for cell in args.cells.split(","):
            for n in map(int, args.sizes.split(",")):
                row = measure(cell, n, args.rounds, max(1, 20_000 // n), args.compile, values)
                rows.append(row)
                figures = "  ".join(f"{k} {v:,}" for k, v in row["steps_per_s"].items())
                print(
                    f"{cell:<4} {n:>9,}  {figures}"
                    + (f"  (compile {row['compile_s']} s)" if "compile_s" in row else ""),
                    flush=True,
                )
    micro = tanh_micro()
    print(
        f"tanh on {micro['rows']} x {micro['hidden']}: torch.tanh {micro['torch_tanh_us']} us, "
        f"sigmoid form {micro['sigmoid_form_us']} us"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows, "tanh": micro}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
