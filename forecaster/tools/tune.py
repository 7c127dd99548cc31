"""`forecaster tune`: a search over a pipeline's model, training and retraining settings, scored as a backtest.

Each trial is `forecaster backtest` (tools/backtest.py, evaluation/panel.py) of the pipeline
with the trial's settings, on the validation part of the history: the grid's leading
`validation` share (default 60%). The rest, the test part, is cut off before any trial
runs, so no trial reads it. Within the validation part the backtest scores its second half,
as a backtest does; the objective is the forecaster's MASE over the horizon.

Every trial starts from seeded weights (model.weights: null) and learns online only, on the
daemon's retraining schedule: a trial's network may have another shape than the pipeline's
weights file. The pipeline's own settings, trial 0, start the same way, so the comparison
is like for like; the best settings need their weights refit with `forecaster pretrain`.

Optuna's TPE sampler (seeded) proposes settings; its median pruner stops a trial whose
interim MASE (at a quarter, a half and three quarters of the origins) is worse than the
median of the earlier trials' there. Trials run one after another, so a seed gives the
same trials; settings drawn again are not run again, their score is the earlier run's. Optuna is the
`tune` extra, imported only here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from forecaster.config import Config, Pipeline
from forecaster.errors import ConfigError, ForecasterError
from forecaster.serving.records import Observations
from forecaster.tools.backtest import backtest, grid_steps, mean_mase


@dataclass(frozen=True)
class Knob:
    """One searched setting: its YAML path in a pipeline file and the values tried."""

    path: str
    values: tuple


# The search space: every value is one a pipeline may take, on coarse grids (a grid's values
# print as they were scored). A pipeline's own value joins its knob's values, so trial 0 can
# be the pipeline as configured. training.learning_rate and training.steps are pretraining's,
# which trials do not run; retraining uses training's optimiser otherwise.
SPACE: tuple[Knob, ...] = (
    Knob("model.cell", ("gru", "lstm")),  # the gated cells (the plain rnn trails both)
    Knob("model.hidden_size", (16, 32, 64, 128)),
    Knob("model.num_layers", (1, 2, 3)),
    Knob("model.dropout", (0.0, 0.1, 0.2, 0.3)),  # between stacked layers, while training
    Knob("training.weight_decay", (0.0, 1e-5, 1e-4, 1e-3, 1e-2)),  # AdamW's, in every round
    Knob("training.window", (96, 192, 336)),  # TBPTT window of a round; at most buffer - holdout
    Knob("retraining.learning_rate", (3e-4, 1e-3, 3e-3, 1e-2)),
    Knob("retraining.steps", (20, 40, 80, 160)),  # per round after the young ones
    Knob("retraining.young_steps", (50, 100, 200, 400)),  # per young round: all a seeded start learns first
    Knob("retraining.every_records", (500, 1000, 2000, 4000)),
)
VALIDATION = 0.6  # the grid's leading share that trials see


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # complete, pruned or fail
    mase: float | None  # mean over the horizon; None unless complete
    settings: dict[str, object]
    seconds: float


@dataclass(frozen=True)
class Search:
    pipeline: str
    source: str
    trials: list[Trial]
    validation_rows: int  # grid rows trials saw
    test_rows: int  # grid rows after them, never read

    @property
    def best(self) -> Trial | None:
        complete = [t for t in self.trials if t.state == "complete" and t.mase is not None and np.isfinite(t.mase)]
        return min(complete, key=lambda t: t.mase) if complete else None

    @property
    def baseline(self) -> Trial | None:
        """Trial 0: the pipeline's own settings."""
        return self.trials[0] if self.trials else None


def optuna_module():
    """Optuna, quietened (the command reports each trial itself); a clear error without the extra."""
    try:
        import optuna
    except ImportError:
        raise ForecasterError(
            "forecaster tune needs Optuna: pip install 'forecaster-daemon[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def with_settings(pipeline: Pipeline, settings: dict[str, object]) -> Pipeline:
    """The pipeline with `settings` ({"model.hidden_size": 32, ...}) in place and seeded weights (no weights file).
    A ValueError where they contradict its other settings, as loading them from its file would."""
    sections = by_section(settings)
    sections.setdefault("model", {})["weights"] = None
    return dataclasses.replace(
        pipeline, **{s: dataclasses.replace(getattr(pipeline, s), **values) for s, values in sections.items()}
    )


def by_section(settings: dict[str, object]) -> dict[str, dict[str, object]]:
    """{"model.hidden_size": 32, ...} as a pipeline file's sections: {"model": {"hidden_size": 32}, ...}."""
    sections: dict[str, dict[str, object]] = {}
    for path, value in settings.items():
        section, name = path.split(".")
        sections.setdefault(section, {})[name] = value
    return sections


def own_settings(pipeline: Pipeline, space: tuple[Knob, ...] = SPACE) -> dict[str, object]:
    """The pipeline's values of the searched settings."""
    return {k.path: getattr(getattr(pipeline, section), name) for k in space for section, name in [k.path.split(".")]}


def space_for(pipeline: Pipeline, space: tuple[Knob, ...] = SPACE) -> tuple[Knob, ...]:
    """Each knob's values that fit the pipeline's other settings (a window longer than its buffer leaves room for
    would not load), with the pipeline's own value among them, in order."""
    own = own_settings(pipeline, space)
    fitted = []
    for knob in space:
        values = [v for v in dict.fromkeys((*knob.values, own[knob.path])) if _fits(pipeline, knob.path, v)]
        fitted.append(Knob(knob.path, tuple(sorted(values) if not isinstance(values[0], str) else values)))
    return tuple(fitted)


def _fits(pipeline: Pipeline, path: str, value) -> bool:
    try:
        with_settings(pipeline, {path: value})
    except ValueError:
        return False
    return True


def validation_part(
    pipeline: Pipeline, observations: Observations, share: float, name: str
) -> tuple[Observations, int, int]:
    """The observations on the grid's leading `share` of rows, what trials see, with the rows kept and the rows
    cut (the test part, dropped here before any trial runs)."""
    if not 0 < share < 1:
        raise ConfigError(f"--validation: expected a share of the history in (0, 1), got {share}")
    if not len(observations):
        raise ForecasterError(f"{name}: no observations")
    steps = grid_steps(pipeline, observations)
    rows = steps - steps.min()
    total = int(rows.max()) + 1
    cut = int(total * share)
    return observations.take(rows < cut), cut, total - cut


def search(
    config: Config,
    pipeline: Pipeline,
    observations: Observations,
    name: str,
    *,
    trials: int,
    seed: int = 0,
    timeout: float | None = None,
    validation: float = VALIDATION,
    space: tuple[Knob, ...] = SPACE,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, int], None] | None = None,
    finished: Callable[[Trial], None] | None = None,
) -> Search:
    """`trials` trials (fewer if `timeout` seconds pass first; a trial under way finishes), trial 0 the pipeline's
    own settings. `progress(trial, rows done, rows)` as a trial steps; `finished(trial)` after each."""
    optuna = optuna_module()
    if trials < 1:
        raise ConfigError(f"--trials: expected a positive integer, got {trials}")
    if not pipeline.retraining.enabled:
        raise ConfigError(
            f"pipeline {pipeline.name}: retraining.enabled: expected true to tune (every trial starts from seeded "
            "weights and learns online), got false"
        )
    part, kept, cut = validation_part(pipeline, observations, validation, name)
    space = space_for(pipeline, space)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.enqueue_trial(own_settings(pipeline, space))
    run = functools.partial(
        _objective, config=config, pipeline=pipeline, part=part, name=name, seed=seed, device=device
    )
    scored: dict[tuple, float] = {}  # settings run to the end, and their score: a run is deterministic

    def objective(trial) -> float:
        settings = {k.path: trial.suggest_categorical(k.path, k.values) for k in space}
        key = tuple(settings.items())
        if key not in scored:
            rows = None if progress is None else functools.partial(progress, trial.number)
            scored[key] = run(trial, settings, rows)
        return scored[key]

    def report(_study, frozen) -> None:
        if finished is not None:
            finished(_trial(frozen))

    study.optimize(objective, n_trials=trials, timeout=timeout, n_jobs=1, callbacks=[report])
    return Search(pipeline.name, name, [_trial(t) for t in study.trials], kept, cut)


def _objective(
    trial,
    settings: dict[str, object],
    rows: Callable[[int, int], None] | None,
    *,
    config: Config,
    pipeline: Pipeline,
    part: Observations,
    name: str,
    seed: int,
    device: str | torch.device,
) -> float:
    """One trial: the backtest of the pipeline with `settings` on the validation part, its interim scores reported
    to the pruner (which may stop it), its mean MASE returned."""
    optuna = optuna_module()

    def interim(step: int, mase: float) -> None:
        trial.report(mase, step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    torch.manual_seed(seed)  # what the model's and training's own seeds leave to the global generator
    tuned = with_settings(pipeline, settings)
    return mean_mase(backtest(config, tuned, part, name, device=device, progress=rows, interim=interim).rows)


def _trial(frozen) -> Trial:
    """An Optuna FrozenTrial in our words."""
    state = frozen.state.name.lower()
    seconds = (frozen.datetime_complete - frozen.datetime_start).total_seconds() if frozen.datetime_complete else 0.0
    mase = frozen.value if state == "complete" else None
    return Trial(frozen.number, state, mase, dict(frozen.params), seconds)


def table(found: Search) -> str:
    """One line per trial: number, state, validation MASE and the settings tried (by their last name)."""
    paths = list(dict.fromkeys(p for t in found.trials for p in t.settings))
    heads = ["trial", "state", "MASE", *(p.split(".")[1] for p in paths), "seconds"]
    rows = [
        [
            f"{t.number}{' (own)' if t.number == 0 else ''}",
            t.state,
            "-" if t.mase is None else f"{t.mase:.4f}",
            *(_text(t.settings.get(p, "-")) for p in paths),
            f"{t.seconds:.0f}",
        ]
        for t in found.trials
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(heads, *rows)]
    return "\n".join(" ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in [heads, *rows])


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def fragment(found: Search, pipeline_file: str, config_path: str) -> str:
    """The best trial's settings as YAML to set in the pipeline's file, with what they scored in comments."""
    best, own = found.best, found.baseline
    if best is None:
        return "# forecaster tune: no trial completed\n"
    own_score = "not complete" if own is None or own.mase is None else f"{own.mase:.4f}"
    lines = [
        f"# forecaster tune: best of {len(found.trials)} trials on {found.source}: trial {best.number}, validation "
        f"MASE {best.mase:.4f}; the pipeline's own settings (trial 0): {own_score}"
    ]
    if best.number == 0:
        lines.append(f"# the settings of {pipeline_file} scored best: nothing to change")
    elif own is not None and any(v != own.settings.get(p) for p, v in best.settings.items() if p.startswith("model.")):
        lines.append(
            f"# set these in {pipeline_file}; the network changes, so its model.weights must be refit: "
            f"forecaster pretrain -c {config_path} --pipeline {found.pipeline}"
        )
    else:
        lines.append(f"# set these in {pipeline_file}")
    sections = by_section(best.settings)
    return "\n".join(lines) + "\n" + yaml.safe_dump(sections, sort_keys=False, default_flow_style=False)


def as_json(found: Search) -> dict:
    """The search for machines: the best settings and every trial."""
    best = found.best
    return {
        "pipeline": found.pipeline,
        "source": found.source,
        "validation_rows": found.validation_rows,
        "test_rows": found.test_rows,
        "best": None if best is None else {"trial": best.number, "mase": best.mase, "settings": best.settings},
        "trials": [dataclasses.asdict(t) for t in found.trials],
    }
