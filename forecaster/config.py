"""Typed, frozen configuration: `config.yaml` (global) naming one YAML file per pipeline.

`load(path)` validates everything once; after it, no code reads raw dicts. Every error
names the file, the YAML path and what was expected, e.g.
`pipelines/weather.yaml: model.hidden_size: expected a positive integer, got -3`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forecaster.errors import ConfigError
from forecaster.schema import (
    Builder,
    masked_repr,
    non_negative,
    port,
    positive,
    positive_int,
    probability,
    read_yaml,
    setting,
)

_TOPIC = (
    lambda v: re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v) is not None,
    "a Kafka topic name (letters, digits, '.', '_', '-')",
)
_CADENCE = (
    lambda v: re.fullmatch(r"[1-9][0-9]*[smhdbwMQ]", v) is not None,
    "a cadence such as 30m, 1h, 1d, 1b (business day), 1w, 1M (month) or 1Q (quarter)",
)


def _is_zone(name: str) -> bool:
    """Whether zoneinfo knows the name ("UTC", "Europe/London"); a path, a folder or an empty name is no zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


_ZONE = (
    _is_zone,
    "an IANA time zone name such as Europe/London or America/New_York (from the system's tz database, or the "
    "tzdata package where it has none)",
)
_EMPTY: Mapping[str, object] = MappingProxyType({})

# With checkpoint.exactly_once a transaction is open from a checkpoint to the next: at most this long (plus a batch),
# half the transaction timeout its producers ask for (io/transactions.py), so a broker never aborts one for age.
MAX_TRANSACTION_S = 30.0


@dataclass(frozen=True, kw_only=True)
class RecordFormat:
    """How an input record's JSON fields map onto a series observation. A field name with dots that a record does
    not hold as such is a path into nested JSON objects: `payload.temp` reads {"payload": {"temp": 21.5}}."""

    key: str = setting(
        doc="record field holding the series key (also the forecasts' Kafka record key); it names the series even "
        "when the input's Kafka key differs, which is counted in forecaster_key_mismatches_total"
    )
    timestamp: str = setting(doc="record field holding the observation time: ISO-8601 string or epoch seconds")
    target: str = setting(doc="record field holding the value to forecast")
    covariates: tuple[str, ...] = setting((), doc="record fields fed to the model as extra inputs (scaled per series)")
    format: Literal["json"] = setting("json", doc="payload encoding of the input records")

    def __post_init__(self):
        names = [self.key, self.timestamp, self.target, *self.covariates]
        for name in names:
            if "" in name.split("."):
                raise ValueError(f"record fields: expected names or dotted paths such as payload.temp, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(
                f"covariates: expected fields distinct from each other and from key, timestamp and target, got {names}"
            )


@dataclass(frozen=True, kw_only=True)
class Calendar:
    """Calendar features derived from the timestamp, each encoded as a sine/cosine pair."""

    hour_of_day: bool = setting(False, doc="add hour-of-day features (for sub-daily cadences)")
    day_of_week: bool = setting(False, doc="add day-of-week features")
    month_of_year: bool = setting(False, doc="add month-of-year features")
    week_of_year: bool = setting(False, doc="add week-of-year features (the ISO week)")

    @property
    def width(self) -> int:
        return 2 * (self.hour_of_day + self.day_of_week + self.month_of_year + self.week_of_year)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The recurrent network shared by every series of a pipeline."""

    cell: Literal["gru", "lstm", "rnn"] = setting("gru", doc="recurrent cell")
    hidden_size: int = setting(64, doc="hidden units per layer", check=positive_int)
    num_layers: int = setting(2, doc="stacked recurrent layers", check=positive_int)
    dropout: float = setting(0.0, doc="dropout between layers during training", check=probability)
    layer_norm: bool = setting(False, doc="layer normalisation inside each cell")
    residual: bool = setting(False, doc="residual connections between stacked layers")
    nonlinearity: Literal["tanh", "relu"] = setting("tanh", doc="activation of the plain rnn cell")
    quantiles: tuple[float, ...] = setting(
        (0.1, 0.5, 0.9),
        doc="quantile levels forecast next to the point forecast, trained with the pinball loss and served through "
        "the combination, which calibrates them on the forecasts' own errors; the outermost two are the interval "
        "(the default's covers 80%); empty: point forecasts only",
    )
    highway: bool = setting(
        False,
        doc="add a linear map of each step's inputs (scaled value, covariates, calendar) to the forecast: the linear "
        "autoregression that the gated cells learn only approximately (LSTNet's highway)",
    )
    season: int | None = setting(
        None,
        doc="seasonal differencing: the network models the change from one season ago, y[t] - y[t - season], and each "
        "step h is forecast from last season's value y[t + h - season] moved to today's level (e.g. 336 for a week of "
        "half-hours; at least the horizon); null: off",
        check=positive_int,
    )
    attention: int = setting(
        0,
        doc="K: the top layer's output also attends over its own last K outputs (one head, added as a residual that "
        "starts at zero), which each series keeps in its state (K x hidden_size more numbers); 0: off. Measured in "
        "docs/accuracy.md (Attention over recent states): not a default",
        check=(lambda v: v >= 0, "an integer >= 0"),
    )
    weights: str | None = setting(
        None,
        doc="starting weights written by `forecaster pretrain` (path relative to config.yaml); null: seeded "
        "initialisation",
    )
    seed: int = setting(0, doc="seed of the initial weights when no weights file is given")
    weights_policy: Literal["configured", "checkpoint"] = setting(
        "configured",
        doc="on a restart from a checkpoint of the same model: configured: a model.weights file whose content changed "
        "since the pipeline last adopted it, and whose weights differ from the checkpoint's, serves as the next model "
        "version, every series' state re-synchronised; checkpoint: the checkpoint's weights always serve",
    )

    def __post_init__(self):
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ValueError(
                f"nonlinearity: expected tanh unless cell is rnn, got {self.nonlinearity} with cell {self.cell}"
            )
        levels = list(self.quantiles)
        if any(not 0 < q < 1 for q in levels) or levels != sorted(set(levels)):
            raise ValueError(f"quantiles: expected distinct levels in (0, 1), increasing, got {levels}")


@dataclass(frozen=True, kw_only=True)
class Scaling:
    """Per-series online normalisation, so series of different scales share one model."""

    halflife: float | None = setting(
        200.0,
        doc="half-life in records of the running mean and variance; null: all history weighs equally",
        check=positive,
    )
    clip: float = setting(8.0, doc="scaled inputs are clipped to +-clip standard deviations", check=positive)


@dataclass(frozen=True, kw_only=True)
class Batching:
    """How much the consumer takes per poll, and how many forecasts go in one output message."""

    max_records: int = setting(
        2000,
        doc="most messages handled per poll batch (a batch message's elements all count as one)",
        check=positive_int,
    )
    poll_timeout_ms: int = setting(200, doc="how long one poll waits for records", check=positive_int)
    slice_records: int = setting(
        10_000,
        doc="most records (each element of a batch message counting as one) decoded, stepped and delivered at once: "
        "a poll batch holding more is handled in slices of whole messages, and one message holding more is stepped "
        "and delivered this many records at a time, so the memory a poll batch takes, and the forecasts it turns "
        "into (about 70 times the bytes of its observations), stay bounded",
        check=positive_int,
    )
    forecasts_per_message: int = setting(
        1,
        doc="1: each forecast is one output message keyed by its series; N > 1: up to N forecasts packed into one "
        "message as a JSON list (see docs/records.md)",
        check=positive_int,
    )


@dataclass(frozen=True, kw_only=True)
class Checkpointing:
    """When a pipeline writes its state with the input offsets it reflects (then commits those offsets)."""

    every_records: int = setting(
        10_000, doc="checkpoint after this many records since the last one", check=positive_int
    )
    every_seconds: float = setting(30.0, doc="checkpoint at least this often while records flow", check=positive)
    keep: int = setting(
        3, doc="checkpoints kept; an unreadable newest one falls back to the one before", check=positive_int
    )
    changelog: bool = setting(
        False,
        doc="keep every series' state in a compacted Kafka topic, <group_id>.<pipeline>.changelog, instead of local "
        "files: several daemons in one consumer group then share the pipeline, each series' state following its "
        "input partition when the group moves it, and every member serves the model versions the owner of input "
        "partition 0 trains and publishes to <group_id>.<pipeline>.model (docs/scaling.md); needs spill: none",
    )
    exactly_once: bool = setting(
        False,
        doc="with the changelog: each checkpoint is one Kafka transaction per input partition, holding the forecasts "
        "and dead letters since the last one, the changelog records and the input offsets, so a consumer of the "
        "output with isolation.level read_committed sees every forecast once; they see them at each checkpoint, "
        "so keep every_seconds short (docs/scaling.md#exactly-once-mode)",
    )


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What an acceptable record looks like, beyond its format; the rest is dead-lettered."""

    max_abs_value: float = setting(
        1e15, doc="a target or covariate larger in magnitude is rejected as out_of_range", check=positive
    )
    max_future_seconds: float = setting(
        7 * 86_400.0, doc="a timestamp further ahead of the wall clock is rejected as future_timestamp", check=positive
    )
    max_key_bytes: int = setting(
        256,
        doc="a series key longer than this in UTF-8 is rejected as key_too_long: every series held keeps its key",
        check=positive_int,
    )
    max_future_steps: float = setting(
        2.0,
        doc="a timestamp more than this many steps of the cadence ahead of the wall clock is rejected as "
        "future_timestamp too (the tighter bound wins): an accepted one would make its series' later records "
        "out_of_order until the clock catches up",
        check=positive,
    )


@dataclass(frozen=True, kw_only=True)
class Training:
    """Offline fitting by `forecaster pretrain` with truncated backpropagation through time."""

    dataset: str | None = setting(None, doc="dataset name pretrain reads by default (see `forecaster replay --help`)")
    train_fraction: float = setting(
        0.5, doc="leading fraction of each series used for fitting", check=(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )
    window: int = setting(256, doc="length of each training window in steps", check=positive_int)
    chunk: int = setting(
        32,
        doc="TBPTT k1: steps between optimisation steps; each chunk's losses are learnt from together",
        check=positive_int,
    )
    backprop: int | None = setting(
        None,
        doc="TBPTT k2: steps gradients flow back from the end of a chunk, a multiple of chunk; null: chunk (gradients "
        "stop at chunk boundaries)",
        check=positive_int,
    )
    batch_size: int = setting(32, doc="windows per optimisation step", check=positive_int)
    steps: int = setting(300, doc="optimisation steps", check=positive_int)
    learning_rate: float = setting(3e-3, doc="peak AdamW learning rate", check=positive)
    weight_decay: float = setting(1e-4, doc="AdamW weight decay", check=non_negative)
    loss: Literal["mse", "relative_mse"] = setting(
        "mse",
        doc="the point forecast's loss: mse weighs every horizon step's squared error alike, so the long steps' larger "
        "moves dominate; relative_mse divides each step's by the last-value forecast's on the same targets, so the "
        "short steps count as much (the quantiles' pinball loss is unchanged)",
    )
    teacher_weight: float = setting(
        0.5,
        doc="with `forecaster pretrain --teacher`: the share of the loss spent on matching the teacher's forecasts and "
        "quantiles, the rest on the targets (knowledge distillation); 0: the teacher is ignored, 1: only it is learnt",
        check=(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    grad_clip: float = setting(1.0, doc="gradient clipping by global norm", check=positive)
    warmup_steps: int = setting(
        20, doc="linear learning-rate warm-up before cosine decay", check=(lambda v: v >= 0, "an integer >= 0")
    )
    seed: int = setting(0, doc="seed for window sampling and dropout (initial weights use model.seed)")

    def __post_init__(self):
        if self.chunk >= self.window:  # the first chunk of a window is burn-in: nothing would be left to learn from
            raise ValueError(f"chunk: expected fewer steps than training.window ({self.window}), got {self.chunk}")
        if self.backprop is not None and (self.backprop % self.chunk or self.backprop >= self.window):
            raise ValueError(
                f"backprop: expected a multiple of chunk ({self.chunk}) below window ({self.window}), got "
                f"{self.backprop}"
            )

    @property
    def backprop_steps(self) -> int:
        return self.chunk if self.backprop is None else self.backprop


@dataclass(frozen=True, kw_only=True)
class Retraining:
    """Online retraining while serving: fine-tune a copy on buffered windows, promote it only if it wins.

    The optimiser, TBPTT chunks, batch size, clipping and warm-up come from `training`.
    """

    enabled: bool = setting(
        True,
        doc="retrain in the background while forecasting (a promoted challenger must beat the serving model and "
        "the simple forecasts on the newest steps); false: serve the weights as loaded",
    )
    every_records: int = setting(20_000, doc="start a retrain after this many new records", check=positive_int)
    every_seconds: float | None = setting(
        None, doc="also start one after this many seconds, if records arrived; null: by records only", check=positive
    )
    buffer: int = setting(
        512,
        doc="steps kept per series for retraining (a ring buffer next to its state, of buffer x (4 x model inputs + "
        "12) bytes; an evicted series' buffer is dropped, not spilled)",
        check=positive_int,
    )
    holdout: int = setting(
        48,
        doc="newest steps of each buffer held out: the challenger is trained without their targets and must beat the "
        "champion on them",
        check=positive_int,
    )
    steps: int = setting(60, doc="optimisation steps per retrain", check=positive_int)
    max_seconds: float = setting(
        900.0,
        doc="time budget of a round: one still running after it is abandoned and counted as failed (a hung round "
        "blocks the next until it ends), and the serving weights stay",
        check=positive,
    )
    young_rounds: int = setting(
        4,
        doc="a young network learns sooner and longer: the first young_rounds rounds start as soon as the longest "
        "buffered series holds holdout + 2 x training.chunk steps (or training.window, if shorter), then each time "
        "it has doubled that (up to buffer), whichever comes before every_records; they train young_steps steps on "
        "windows as long as the buffer allows; 0: rounds by every_records and every_seconds only",
        check=(lambda v: v >= 0, "an integer >= 0"),
    )
    young_steps: int = setting(200, doc="optimisation steps of each young round", check=positive_int)
    learning_rate: float = setting(1e-3, doc="peak AdamW learning rate of a retrain", check=positive)
    max_series: int = setting(
        2048, doc="series sampled per retrain (those with the most buffered steps first)", check=positive_int
    )
    min_improvement: float = setting(
        0.0, doc="relative held-out loss improvement a challenger needs to be promoted", check=non_negative
    )
    damping: bool = setting(
        False,
        doc="for series prone to level shifts: each round also measures, per series, how much of the model's move away "
        "from the last value its held-out steps support (least squares, between 0: the last value, and 1: the model as "
        "it is), and the series' forecasts are damped by it from then on",
    )
    calibration_rounds: int = setting(
        1,
        doc="with quantiles, the outermost ones are widened by the conformal widening measured on the held-out steps "
        "(of whichever model serves), averaged over this many latest rounds: one day's held-out steps estimate it "
        "noisily, and a too narrow interval loses more coverage than a too wide one gains",
        check=positive_int,
    )
    resync_steps: int = setting(
        64,
        doc="after a promotion, every series' state is recomputed by replaying its last resync_steps buffered steps "
        "through the new weights; 0: keep the old states",
        check=(lambda v: v >= 0, "an integer >= 0"),
    )
    keep_versions: int = setting(
        5,
        doc="promoted weights kept in <state_dir>/<pipeline>/models with their version, time and held-out losses, "
        "for `forecaster models` (list, rollback, export); 0: none kept, no rollback",
        check=(lambda v: v >= 0, "an integer >= 0"),
    )
    rollback_below_skill: float | None = setting(
        -0.1,
        doc="after a promotion, roll back to the model it replaced (kept in memory) when the live one-step skill "
        "against the naive forecast, 1 - MAE / naive MAE over rollback_after_records scored forecasts, falls below "
        "this; null: never",
        check=(lambda v: v < 1, "a number below 1"),
    )
    rollback_after_records: int = setting(
        5000,
        doc="scored one-step forecasts each judgement of rollback_below_skill spans, from the promotion on",
        check=positive_int,
    )

    def __post_init__(self):
        if self.holdout >= self.buffer:
            raise ValueError(f"holdout: expected fewer steps than buffer ({self.buffer}), got {self.holdout}")
        if self.resync_steps > self.buffer:
            raise ValueError(f"resync_steps: expected at most buffer ({self.buffer}) steps, got {self.resync_steps}")


@dataclass(frozen=True, kw_only=True)
class Intervals:
    """How the forecast intervals (the outermost quantiles) are kept calibrated while serving (intervals.py)."""

    tracking_rate: float = setting(
        0.0,
        doc="quantile tracking: after every batch, each horizon step's outermost quantiles move out (or in) by "
        "tracking_rate series scales times the share of that step's newly arrived actuals outside their interval less "
        "the nominal share (0.2 for 0.1 and 0.9), so the coverage holds when the series drift away from what "
        "retraining calibrated on; keeps the last horizon intervals per series (8 x horizon^2 bytes); 0: off",
        check=non_negative,
    )


@dataclass(frozen=True, kw_only=True)
class Combination:
    """The forecast served: the network combined online with simple experts, per horizon step (combination.py)."""

    enabled: bool = setting(
        True,
        doc="serve, per horizon step, a weighted mean of the network, the last value, the seasonal naive and its "
        "today's-level form for each season of the cadence (day, week), and an online linear model, with weights "
        "learnt online from matured targets (ML-Poly); false: the network alone",
    )
    scored_series: int = setting(
        256,
        doc="the pipeline's weights are learnt from the matured targets of this many series (the first slots), "
        "each keeping its last horizon forecasts of every expert until scored (4 x (experts + features + 1) x "
        "horizon^2 bytes a series: 44 KB at a horizon of 24 with a day and a week)",
        check=positive_int,
    )
    loss: Literal["absolute", "squared"] = setting(
        "absolute",
        doc="the error the weights minimise (in units of each series' scale): absolute, for forecasts judged by "
        "their absolute error (MAE, MASE), robust to a wild value; squared, for forecasts judged by MSE",
    )
    discount: float = setting(
        0.9999,
        doc="per round (about one step of every series), how much of the weights' and the linear expert's past "
        "evidence is kept, so they follow a network that improves (0.9999: a memory of about 10,000 rounds)",
        check=probability,
    )


@dataclass(frozen=True, kw_only=True)
class Gaps:
    """What the engine does over steps a series did not report (gaps.py)."""

    fill: bool = setting(
        True,
        doc="step the network over each missing cadence step (up to horizon of them per gap) with the value it "
        "forecast for that step, so its state, season and buffer stay aligned by time; a filled step is never "
        "scored or learnt from; keeps each series' last forecast (4 x horizon bytes); false: step straight from "
        "the last observation to the next, as if nothing were missing. A null reading (a record whose target is null) "
        "is stepped over as a missing step either way, with the series' last value where no forecast is kept",
    )


@dataclass(frozen=True, kw_only=True)
class Output:
    """The forecast records: their layout, and the Kafka timestamp they carry (docs/records.md)."""

    format: Literal["nested", "long", "wide"] = setting(
        "nested",
        doc="nested: one record per forecast, its steps as JSON lists; long: one record per horizon step (step, "
        "target_time, value, a field per quantile such as p10), keyed by its series; wide: one record per forecast, "
        "flat fields per step (time_1, value_1, p10_1, ...): the layouts a JDBC sink or a table takes",
    )
    timestamp: Literal["observation", "now"] = setting(
        "observation",
        doc="the Kafka timestamp of a forecast record: the time of the observation it follows, so that consumers "
        "and stream joins see event time; now: the producer's clock. Replayed history keeps its old times, so a "
        "topic retained by time (retention.ms) may delete such forecasts at once: use now there",
    )


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """One input topic of observations, one model, one output topic of forecasts."""

    name: str = setting(
        doc="pipeline name, used in metrics labels and consumer group ids",
        check=(lambda v: re.fullmatch(r"[a-z][a-z0-9_]*", v) is not None, "a lower-case identifier"),
    )
    input_topic: str = setting(doc="topic of observations", check=_TOPIC)
    output_topic: str = setting(doc="topic of forecasts", check=_TOPIC)
    dead_letter_topic: str = setting(
        doc="topic receiving rejected records with their reason and original bytes", check=_TOPIC
    )
    record: RecordFormat = setting(
        doc="field mapping of the input records; a name with dots that a record does not hold as such is a path "
        "into nested objects (payload.temp)"
    )
    cadence: str = setting(
        doc="time between observations of a series: Ns, Nm, Nh, Nd, Nb (business days), Nw (weeks, Monday to "
        "Sunday), NM (months) or NQ (quarters); days and longer follow the local calendar (docs/records.md)",
        check=_CADENCE,
    )
    cadence_tz: str | None = setting(
        None,
        doc="the time zone whose calendar and clock the cadence follows (an IANA name): a day is a local date, 23 "
        "or 25 hours long across a DST change, and calendar features read the local clock; null: each record's own "
        "UTC offset, and days of 24 hours",
        check=_ZONE,
    )
    holidays: tuple[date, ...] = setting(
        (), doc="dates (YYYY-MM-DD) that are not business days, for an Nb cadence: its steps skip them"
    )
    horizon: int = setting(doc="forecast steps emitted per forecast", check=positive_int)
    partitions: int = setting(3, doc="partitions when forecaster creates the topics", check=positive_int)
    calendar: Calendar = setting(Calendar(), doc="calendar features")
    model: ModelConfig = setting(ModelConfig(), doc="the recurrent network")
    scaling: Scaling = setting(Scaling(), doc="per-series online normalisation")
    emit: Literal["per_record", "latest_per_series"] = setting(
        "per_record", doc="a forecast for every input record, or only each series' latest in a batch"
    )
    max_series: int = setting(
        100_000,
        doc="series held on the device at once; the least recently seen is evicted beyond it",
        check=positive_int,
    )
    spill: Literal["memory", "disk", "none"] = setting(
        "memory",
        doc="where an evicted series' state goes, to be restored if it returns: host memory, a file in state_dir, or "
        "nowhere",
    )
    spill_max_bytes: int | None = setting(
        256 * 2**20,
        doc="host memory the memory spill may take, counted as (packed state row + 256) bytes a series (about 800 "
        "bytes at hidden_size 64 and 2 layers: 256 MiB holds some 330,000 series); beyond it the series spilled "
        "longest ago are dropped (forecaster_spill_dropped_total) and start afresh if they return; null: no bound",
        check=positive_int,
    )
    checkpoint: Checkpointing = setting(Checkpointing(), doc="state checkpoints tied to input offsets")
    limits: Limits = setting(Limits(), doc="bounds on record values and timestamps")
    skill_window: int = setting(
        1000, doc="one-step errors in the rolling MAE of model and naive forecasts", check=positive_int
    )
    batching: Batching = setting(Batching(), doc="poll batch size and output packing")
    training: Training = setting(Training(), doc="offline pretraining, and the optimiser of online retraining")
    retraining: Retraining = setting(Retraining(), doc="online retraining while serving")
    intervals: Intervals = setting(Intervals(), doc="calibration of the forecast intervals while serving")
    combination: Combination = setting(Combination(), doc="the network combined online with simple experts")
    gaps: Gaps = setting(Gaps(), doc="missing observations")
    output: Output = setting(Output(), doc="the forecast records' layout and Kafka timestamp")

    def __post_init__(self):
        if self.output_topic == self.input_topic:
            raise ValueError(f"output_topic: expected a topic other than input_topic, got {self.output_topic!r}")
        if self.dead_letter_topic in (self.input_topic, self.output_topic):
            raise ValueError(
                f"dead_letter_topic: expected a topic other than input_topic and output_topic, got "
                f"{self.dead_letter_topic!r}"
            )
        trainable = self.retraining.buffer - self.retraining.holdout
        if self.retraining.enabled and self.training.window > trainable:
            raise ValueError(
                f"retraining.buffer: expected room for a training.window ({self.training.window} steps) "
                f"besides the holdout ({self.retraining.holdout}), got {self.retraining.buffer}"
            )
        if self.checkpoint.changelog and self.spill != "none":
            raise ValueError(
                f"spill: expected none with checkpoint.changelog (an evicted series' state is not kept apart from "
                f"the changelog), got {self.spill}"
            )
        if self.checkpoint.exactly_once and not self.checkpoint.changelog:
            raise ValueError(
                "checkpoint.exactly_once: expected false without checkpoint.changelog (a transaction commits the "
                "changelog's records with the forecasts and offsets), got true"
            )
        if self.checkpoint.exactly_once and self.batching.forecasts_per_message != 1:
            raise ValueError(
                "batching.forecasts_per_message: expected 1 with checkpoint.exactly_once (each forecast goes into the "
                f"transaction of its series' input partition), got {self.batching.forecasts_per_message}"
            )
        if self.checkpoint.exactly_once and self.checkpoint.every_seconds > MAX_TRANSACTION_S:
            raise ValueError(
                f"checkpoint.every_seconds: expected at most {MAX_TRANSACTION_S:g} with exactly_once (a transaction "
                f"stays open until the checkpoint, and brokers abort one older than that), got "
                f"{self.checkpoint.every_seconds:g}"
            )
        if self.intervals.tracking_rate and len(self.model.quantiles) < 2:
            raise ValueError(
                f"intervals.tracking_rate: expected 0 unless model.quantiles has at least two levels "
                f"(an interval to track), got {self.intervals.tracking_rate} with {list(self.model.quantiles)}"
            )
        if self.holidays and self.cadence[-1] != "b":
            raise ValueError(
                f"holidays: expected none unless the cadence is in business days (Nb), got {len(self.holidays)} "
                f"with cadence {self.cadence}"
            )
        if self.model.season is not None and self.model.season < self.horizon:
            raise ValueError(
                f"model.season: expected at least the horizon ({self.horizon} steps): a step further ahead "
                f"than a season has no value one season before it yet, got {self.model.season}"
            )

    @property
    def input_size(self) -> int:
        """Model inputs per step: scaled target, scaled covariates, calendar features."""
        return 1 + len(self.record.covariates) + self.calendar.width


@dataclass(frozen=True, kw_only=True)
class Kafka:
    """Connection to the user's Kafka cluster."""

    bootstrap_servers: str = setting("127.0.0.1:9092", doc="comma-separated host:port list")
    client: Literal["kafka-python", "confluent-kafka"] = setting(
        "kafka-python",
        doc="Kafka client library: kafka-python, or confluent-kafka "
        "(librdkafka; `pip install forecaster-daemon[confluent]`), faster at high volume",
    )
    client_id: str = setting("forecaster", doc="client id shown in broker logs")
    group_id: str = setting("forecaster", doc="consumer group prefix: pipeline P joins group '<group_id>.P'")
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "earliest",
        doc="where a consumer group without a committed offset (or past a topic's end) starts: earliest, every "
        "record kept; latest, only records produced from then on",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = setting(
        "PLAINTEXT", doc="transport security"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"] | None = setting(
        None, doc="SASL authentication, with security_protocol SASL_SSL or SASL_PLAINTEXT"
    )
    sasl_plain_username: str | None = setting(None, doc="user name for SASL PLAIN or SCRAM")
    sasl_plain_password: str | None = setting(
        None, doc="password for SASL PLAIN or SCRAM: write ${VAR} to read it from the environment; never logged"
    )
    ssl_cafile: str | None = setting(
        None,
        doc="CA certificates (PEM) to verify the brokers, with SSL or SASL_SSL (relative to config.yaml); null: the "
        "system's",
    )
    ssl_certfile: str | None = setting(None, doc="client certificate (PEM) for mutual TLS (relative to config.yaml)")
    ssl_keyfile: str | None = setting(None, doc="private key (PEM) of ssl_certfile (relative to config.yaml)")
    consumer: dict[str, object] = setting(
        _EMPTY,
        doc="extra consumer settings, passed through: kafka-python KafkaConsumer arguments, or librdkafka properties "
        "(underscores read as dots); with kafka-python, fetch_max_wait_ms is 25 unless set here (a broker that holds "
        "an empty fetch for the whole wait, as the embedded one does, then delays records by no more)",
    )
    producer: dict[str, object] = setting(
        _EMPTY,
        doc="extra producer settings, passed through: kafka-python KafkaProducer arguments, or librdkafka properties",
    )
    admin: dict[str, object] = setting(
        _EMPTY,
        doc="extra admin client settings, passed through: kafka-python KafkaAdminClient arguments, or librdkafka "
        "properties",
    )

    __repr__ = masked_repr  # the password (and any secret-named pass-through key) never reaches a log

    def __post_init__(self):
        sasl = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
        }
        ssl = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        for name, value in sasl.items():
            if value is not None and not self.security_protocol.startswith("SASL_"):
                raise ValueError(
                    f"{name}: expected security_protocol SASL_SSL or SASL_PLAINTEXT with SASL settings, "
                    f"got security_protocol {self.security_protocol}"
                )
        for name, value in ssl.items():
            if value is not None and not self.security_protocol.endswith("SSL"):
                raise ValueError(
                    f"{name}: expected security_protocol SSL or SASL_SSL with TLS files, "
                    f"got security_protocol {self.security_protocol}"
                )
        if self.sasl_mechanism not in (None, "GSSAPI") and None in (self.sasl_plain_username, self.sasl_plain_password):
            missing = "sasl_plain_username" if self.sasl_plain_username is None else "sasl_plain_password"
            raise ValueError(f"{missing}: expected a value with sasl_mechanism {self.sasl_mechanism}, got nothing")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError(
                "ssl_keyfile: expected ssl_certfile too (the certificate the key belongs to), got no ssl_certfile"
            )
        for key in self.consumer:  # one typed setting both clients honour, not a pass-through one of them ignores
            if key.replace(".", "_") == "auto_offset_reset":
                raise ValueError(
                    f"consumer: expected kafka.auto_offset_reset instead of consumer.{key}, got "
                    f"consumer.{key}: {self.consumer[key]}"
                )


@dataclass(frozen=True, kw_only=True)
class MetricsServer:
    """Where Prometheus scrapes /metrics."""

    host: str = setting("127.0.0.1", doc="address to bind; 127.0.0.1 keeps it private to the machine")
    port: int = setting(9108, doc="TCP port of /metrics", check=port)
    tls_certfile: str | None = setting(
        None, doc="serve HTTPS with this certificate chain (PEM, relative to config.yaml); null: plain HTTP"
    )
    tls_keyfile: str | None = setting(
        None, doc="private key (PEM) of tls_certfile, when not inside it (relative to config.yaml)"
    )

    def __post_init__(self):
        if self.tls_keyfile is not None and self.tls_certfile is None:
            raise ValueError(
                "tls_keyfile: expected tls_certfile too (the certificate the key belongs to), got no tls_certfile"
            )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The global part of config.yaml."""

    kafka: Kafka = setting(Kafka(), doc="Kafka connection")
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", doc="where states and model live: auto picks CUDA when present"
    )
    metrics: MetricsServer = setting(MetricsServer(), doc="Prometheus endpoint")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("INFO", doc="logging threshold")
    log_format: Literal["text", "json"] = setting(
        "text",
        doc="log lines: text for people, or json: one object per line with time, level, logger, message and the "
        "event's fields",
    )
    kafka_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        "ERROR",
        doc="logging threshold of kafka-python's own loggers (kafka.conn, kafka.client, kafka.coordinator, ...), "
        "whatever log_level says: their connection warnings repeat on every poll while a broker is away, and the "
        "daemon reports an outage itself; lower it to debug a connection",
    )
    state_dir: str = setting("state", doc="directory for state and checkpoints (relative to config.yaml)")
    keep_freed_memory: bool = setting(
        True,
        doc="on glibc (most Linux), the daemon, backtest, tune and pretrain keep the memory they free for their next "
        "allocations rather than hand large blocks back to the kernel: at a million series every step's arrays "
        "otherwise fault in fresh zeroed pages, kernel time that exceeded the step's arithmetic; the process then "
        "holds on to the most memory it ever used; false: the C library's defaults",
    )
    pipelines: tuple[str, ...] = setting(doc="pipeline files, relative to config.yaml")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the daemon runs with: global settings plus the loaded pipelines."""

    path: Path
    settings: Settings
    pipelines: tuple[Pipeline, ...]

    def resolve(self, relative: str) -> Path:
        """A path from the configuration, taken relative to config.yaml's folder."""
        return (self.path.parent / relative).resolve()

    def pipeline(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        known = ", ".join(p.name for p in self.pipelines)
        raise ConfigError(f"{self.path}: no pipeline named {name!r} (known: {known})")

    def pipeline_file(self, pipeline: Pipeline) -> str:
        """The file `pipeline` was loaded from, named as `load`'s errors name it."""
        for loaded, name in zip(self.pipelines, self.settings.pipelines):
            if loaded.name == pipeline.name:
                return _display(self.path, name)
        return f"pipeline {pipeline.name}"


def load(path: str | Path, require_weights: bool = True) -> Config:
    """Read and validate config.yaml and every pipeline file it names.

    `require_weights=False` is for `forecaster pretrain`, which writes the weights files.
    """
    path = Path(path)
    settings = _resolve_files(Builder(str(path)).build(Settings, read_yaml(str(path), str(path))), path)
    pipelines = tuple(_load_pipeline(path, name) for name in settings.pipelines)
    config = Config(path=path, settings=settings, pipelines=pipelines)
    _check_unique(config)
    for pipeline, name in zip(pipelines, settings.pipelines if require_weights else ()):
        _check_weights_exist(config, pipeline, _display(path, name))
    return config


def _resolve_files(settings: Settings, config_path: Path) -> Settings:
    """TLS files, named relative to config.yaml, made absolute; a missing one is an error now, not at the first
    connection."""

    def resolved(section: str, name: str) -> str | None:
        value = getattr(getattr(settings, section), name)
        if value is None:
            return None
        file = (config_path.parent / value).resolve()
        if not file.is_file():
            raise ConfigError(f"{config_path}: {section}.{name}: expected an existing file, got {value!r}")
        return str(file)

    kafka = {name: resolved("kafka", name) for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
    metrics = {name: resolved("metrics", name) for name in ("tls_certfile", "tls_keyfile")}
    return dataclasses.replace(
        settings,
        kafka=dataclasses.replace(settings.kafka, **kafka),
        metrics=dataclasses.replace(settings.metrics, **metrics),
    )


def _display(config_path: Path, name: str) -> str:
    """How a pipeline file is named in messages: as written in config.yaml, beside it."""
    return str(config_path.parent / name) if config_path.parent != Path(".") else name


def _load_pipeline(config_path: Path, name: str) -> Pipeline:
    display = _display(config_path, name)
    return Builder(display).build(Pipeline, read_yaml(str(config_path.parent / name), display))


def _check_unique(config: Config) -> None:
    seen_names: dict[str, str] = {}
    seen_topics: dict[str, str] = {}
    files = [_display(config.path, name) for name in config.settings.pipelines]
    for pipeline, file in zip(config.pipelines, files):
        if pipeline.name in seen_names:
            raise ConfigError(
                f"{file}: name: pipeline name {pipeline.name!r} is already used by {seen_names[pipeline.name]}"
            )
        seen_names[pipeline.name] = file
        for key in ("input_topic", "output_topic", "dead_letter_topic"):
            topic = getattr(pipeline, key)
            if topic in seen_topics:
                raise ConfigError(f"{file}: {key}: topic {topic!r} is already used by {seen_topics[topic]}")
            seen_topics[topic] = file


def _check_weights_exist(config: Config, pipeline: Pipeline, display: str) -> None:
    weights = pipeline.model.weights
    if weights is not None and not config.resolve(weights).is_file():
        raise ConfigError(
            f"{display}: model.weights: expected an existing weights file, got {weights!r} (run `forecaster pretrain "
            f"-c {config.path} --pipeline {pipeline.name}`)"
        )
