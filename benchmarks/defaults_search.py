"""The project's global defaults, searched on the validation parts of several data sets at once.

    python benchmarks/defaults_search.py --trials 40 --timeout 3900   # writes results/defaults_search.json
    python benchmarks/defaults_search.py --datasets births --trials 2 --rows 240   # a smoke run

`forecaster tune` searches one pipeline on one history. The defaults of forecaster/config.py
serve every pipeline that does not set a key, on data nobody has seen, so they are searched
here on several data sets together: the held-out sets of benchmarks/generalisation.py, each
configured as a user would (field names, cadence, horizon; every other setting the default),
cold (seeded weights, nothing pretrained), run by the engine's own online path with
retraining on the daemon's schedule, as generalisation.py's `--validation` runs them:
scored on the second quarter of each series, the first half's end. The second half, where
generalisation.py judges the defaults, is never read.

A trial sets the same values of tools/tune.py's search space (`SPACE`) on every data set;
`retraining.every_records` is searched on its own grid here, as the panels hold tens of
series and the defaults' 20,000 records are about a day of them. The objective is the
geometric mean over the data sets of the forecaster's MASE over the horizon, so that each
set counts alike whatever its scale: a trial 1% better on every set scores 1% better.
Trial 0 is the defaults. Optuna's TPE (seeded) proposes the settings and the median pruner
stops a trial whose geometric mean over the sets scored so far is worse than the earlier
trials' median there; trials run one after another (each set of a trial in its own process,
two at a time), so a seed gives the same trials. After the search, the best trial's changes
are split into its network's and its training's, each scored alone on the defaults
(`ablations`): a larger network costs every step of every series, training settings do not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import generalisation  # benchmarks/generalisation.py, beside this script
import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Pipeline
from forecaster.evaluation import panel as panel_module
from forecaster.evaluation.panel import Panel
from forecaster.serving.engine import Engine
from forecaster.tools import tune

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("nyc_weather", "nyc_weather_gaps", "births", "chicago", "vic_elec")
EVERY_RECORDS = (5_000, 10_000, 20_000, 40_000)


def space(defaults: Pipeline) -> tuple[tune.Knob, ...]:
    """tune.SPACE, with retraining.every_records on the panels' scale, each knob holding the `defaults`' value."""
    knobs = tuple(
        dataclasses.replace(k, values=EVERY_RECORDS) if k.path == "retraining.every_records" else k for k in tune.SPACE
    )
    return tune.space_for(defaults, knobs)


def validation_mase(
    name: str, settings: dict[str, object], quick: bool, rows: int | None = None
) -> tuple[str, float, float]:
    """The forecaster's MASE over the horizon on `name`'s validation quarter with `settings`, and the seconds it
    took: generalisation.py's `--validation` run of one set (every 4th of its origins with `quick`; with `rows`,
    of the set's first `rows` rows only)."""
    torch.set_num_threads(1)
    began = time.perf_counter()
    panel = leading(generalisation.LOADERS[name](), rows)
    half = len(panel.times) // 2
    origins = np.arange(half // 2, half - panel.horizon, panel.stride * (4 if quick else 1))
    pipeline = tune.with_settings(generalisation.pipeline(panel), settings)
    engine = Engine(pipeline, seeded_model(pipeline))
    forecasts, intervals, _ = panel_module.engine_forecasts(engine, panel, origins)
    scored = panel_module.score(panel, origins, {"forecaster": forecasts}, {"forecaster": intervals})
    mase = next(r["mase"] for r in scored if r["horizon"] == "mean")
    return name, mase, time.perf_counter() - began


def leading(panel: Panel, rows: int | None) -> Panel:
    """The panel's first `rows` rows (None: all of it)."""
    if rows is None:
        return panel
    fields = ("times", "truth", "inputs", "covariates", "local_times")
    return dataclasses.replace(panel, **{f: getattr(panel, f)[:rows] for f in fields if getattr(panel, f) is not None})


def geometric_mean(values: list[float]) -> float:
    return float(math.exp(np.mean(np.log(values))))


def submitted(pool, settings: dict[str, object], names, quick: bool, rows: int | None) -> list:
    """Each set's `validation_mase` with `settings`, handed to the pool's processes, in `names` order."""
    return [pool.submit(validation_mase, name, settings, quick, rows) for name in names]


def run_trial(trial, settings, names, quick, rows, pool, optuna) -> dict[str, float]:
    """Every set's MASE for `settings`, two sets at a time; after each set in `names` order, the geometric mean so
    far goes to the pruner, which may stop the trial (optuna.TrialPruned)."""
    futures = submitted(pool, settings, names, quick, rows)
    scores: dict[str, float] = {}
    try:
        for step, future in enumerate(futures):
            name, mase, seconds = future.result()
            scores[name] = mase
            print(f"  {name:<17} MASE {mase:.4f}  {seconds:5.0f} s", file=sys.stderr)
            trial.report(geometric_mean(list(scores.values())), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    finally:
        for future in futures:
            future.cancel()
    return scores


def search(
    names, trials: int, seed: int, timeout: float | None, quick: bool, workers: int, rows: int | None = None
) -> dict:
    """Up to `trials` trials (none started after `timeout` seconds), trial 0 the defaults: the results as written
    to defaults_search.json."""
    optuna = tune.optuna_module()
    pipeline = generalisation.pipeline(generalisation.LOADERS["births"]())  # the defaults, as any set configures them
    knobs = space(pipeline)
    defaults = tune.own_settings(pipeline, knobs)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.enqueue_trial(defaults)
    began, found, scored = time.monotonic(), [], {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        while len(found) < trials and (timeout is None or time.monotonic() - began < timeout):
            trial = study.ask()
            settings = {k.path: trial.suggest_categorical(k.path, k.values) for k in knobs}
            print(f"trial {trial.number}: {settings}", file=sys.stderr)
            started, key = time.monotonic(), tuple(settings.items())
            try:
                scores = scored.get(key) or run_trial(trial, settings, names, quick, rows, pool, optuna)
                scored[key] = scores
                value = geometric_mean([scores[n] for n in names])
                study.tell(trial, value)
                state = "complete"
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                scores, value, state = {}, None, "pruned"
            seconds = time.monotonic() - started
            print(f"trial {trial.number}: {state} {value}  {seconds:.0f} s", file=sys.stderr)
            found.append(
                {
                    "trial": trial.number,
                    "state": state,
                    "score": value,
                    "mase": scores,
                    "settings": settings,
                    "seconds": round(seconds, 1),
                }
            )
    complete = [t for t in found if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["score"])
    return {
        "datasets": list(names),
        "quick": quick,
        "rows": rows,
        "seed": seed,
        "defaults": defaults,
        "best": best["trial"],
        "trials": found,
    }


def ablations(result: dict, workers: int) -> dict[str, dict]:
    """The best trial's changes split in two, each on top of the defaults and scored as a trial is: its network's
    settings (`model.*`) alone, and its training's and retraining's alone. Which part carries the gain, and at
    what cost: a larger network costs every step of every series, its training settings cost nothing served."""
    trials = {t["trial"]: t for t in result["trials"]}
    defaults, best = result["defaults"], trials[result["best"]]["settings"]
    changed = {p: v for p, v in best.items() if v != defaults[p]}
    parts = {
        "network": {p: v for p, v in changed.items() if p.startswith("model.")},
        "training": {p: v for p, v in changed.items() if not p.startswith("model.")},
    }
    found = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for part, change in parts.items():
            if not change:
                continue
            names, settings = result["datasets"], {**defaults, **change}
            futures = submitted(pool, settings, names, result["quick"], result["rows"])
            scores = {name: mase for name, mase, _ in (f.result() for f in futures)}
            found[part] = {"settings": change, "mase": scores, "score": geometric_mean([scores[n] for n in names])}
            print(f"ablation {part}: {change} -> {found[part]['score']:.4f}", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from generalisation.py's")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes, each scoring one data set at a time")
    parser.add_argument("--quick", action="store_true", help="every 4th origin of the full run's")
    parser.add_argument("--rows", type=int, default=None, help="each set's first ROWS rows only (a smoke run)")
    parser.add_argument(
        "--ablate", type=Path, default=None, help="add the ablations of the best trial to an earlier run's results"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    unknown = sorted(set(names) - set(generalisation.LOADERS))
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}; known: {', '.join(generalisation.LOADERS)}")
    if args.ablate is not None:
        result = json.loads(args.ablate.read_text())
    else:
        result = search(names, args.trials, args.seed, args.timeout, args.quick, args.workers, args.rows)
    if result["best"] != 0:
        result["ablations"] = ablations(result, args.workers)
    out = args.out or args.ablate or RESULTS / ("defaults_search" + ("_quick" if args.quick else "") + ".json")
    tables.write_results(out, result)
    print(tables.defaults_search(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
