"""Every Prometheus metric forecaster exports, on an injected registry.

Tests build `Metrics(CollectorRegistry())` and read `registry.get_sample_value(...)`.
All metrics carry a `pipeline` label, except the process's own: `process_*` and `python_info` (the
prometheus_client collectors, on the injected registry), `forecaster_build_info` and the GPU's memory.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# finer than _LATENCY_BUCKETS below 10 ms, where most stages of a batch fall
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RETRAIN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        # resident memory, CPU seconds, open files: the daemon's registry is its own, without the default collectors
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        p = ["pipeline"]
        self.build = Info(
            "forecaster_build",
            "Versions this process runs: forecaster, python, torch; its device and Kafka client.",
            registry=registry,
        )
        self.gpu_memory = Gauge(
            "forecaster_gpu_memory_bytes",
            "Memory torch holds on the GPU (only on CUDA); kind=allocated (now) or max_allocated (the peak so far).",
            ["device", "kind"],
            registry=registry,
        )
        self.records_consumed = Counter(
            "forecaster_records_consumed_total", "Input records polled from Kafka.", p, registry=registry
        )
        self.forecasts_produced = Counter(
            "forecaster_forecasts_produced_total", "Forecast records acknowledged by Kafka.", p, registry=registry
        )
        self.records_rejected = Counter(
            "forecaster_records_rejected_total",
            "Input records rejected and dead-lettered, by reason.",
            p + ["reason"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "forecaster_delivery_failures_total",
            "Output records Kafka refused for good (a non-retriable produce error), by reason: message_too_large, "
            "not_authorized, unknown_topic or refused.",
            p + ["reason"],
            registry=registry,
        )
        self.missing_values = Counter(
            "forecaster_missing_values_total",
            "Input records whose field (target or covariate) was null, a missing value, by the field's name.",
            p + ["field"],
            registry=registry,
        )
        self.key_mismatches = Counter(
            "forecaster_key_mismatches_total",
            "Input records used under their series key field although their Kafka message key differed (or was null).",
            p,
            registry=registry,
        )
        self.latency = Histogram(
            "forecaster_end_to_end_latency_seconds",
            "From a poll batch received to its forecasts handed to the Kafka client (all its records share it).",
            p,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "forecaster_batch_records", "Records per poll batch.", p, buckets=_BATCH_BUCKETS, registry=registry
        )
        self.active_series = Gauge("forecaster_active_series", "Series with state held.", p, registry=registry)
        self.series_evicted = Counter(
            "forecaster_series_evicted_total",
            "Series whose state was dropped to make room (max_series).",
            p,
            registry=registry,
        )
        self.state_bytes = Gauge(
            "forecaster_state_memory_bytes",
            "Bytes of per-series state: recurrent state, normaliser, bookkeeping.",
            p,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "forecaster_consumer_lag_records",
            "Records in the input topic not yet consumed, summed over assigned partitions.",
            p,
            registry=registry,
        )
        self.model_version = Gauge(
            "forecaster_model_version",
            "Version of the serving weights, carried in every forecast.",
            p,
            registry=registry,
        )
        self.one_step_mae = Gauge(
            "forecaster_one_step_mae",
            "Rolling MAE of one-step forecasts against the actuals that arrived, in original units; "
            "forecaster=model|naive.",
            p + ["forecaster"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "forecaster_step_seconds",
            "Time in the engine's batched step per poll batch.",
            p,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "forecaster_stage_seconds",
            "Time per poll batch in each stage of the run loop: poll (waiting for records included), decode, step, "
            "encode, produce, acknowledge, checkpoint, retrain; and wait, how long its oldest record waited, from its "
            "Kafka timestamp to the poll that returned it.",
            p + ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.spilled_series = Gauge(
            "forecaster_spilled_series",
            "Evicted series whose state waits in the spill (memory or disk).",
            p,
            registry=registry,
        )
        self.spill_dropped = Counter(
            "forecaster_spill_dropped",
            "Spilled series forgotten to keep the memory spill within spill_max_bytes (the oldest spilled first).",
            p,
            registry=registry,
        )
        self.checkpoints = Counter(
            "forecaster_checkpoints_total",
            "Checkpoints written (state with the offsets it reflects).",
            p,
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "forecaster_checkpoint_seconds",
            "Time to write one checkpoint durably.",
            p,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "forecaster_checkpoint_failures_total",
            "Checkpoints that could not be written, by reason: disk_full, not_writable or io_error; the pipeline "
            "serves on and its offsets stay at the last good checkpoint.",
            p + ["reason"],
            registry=registry,
        )
        self.last_checkpoint = Gauge(
            "forecaster_last_checkpoint_timestamp_seconds",
            "When the newest durable checkpoint (file or changelog) was written, in Unix seconds; its age is "
            "time() minus this.",
            p,
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "forecaster_event_time_lag_seconds",
            "Now minus the newest timestamp among the observations the pipeline has stepped: how far behind the "
            "real world its forecasts start.",
            p,
            registry=registry,
        )
        self.handover_seconds = Histogram(
            "forecaster_handover_seconds",
            "With the changelog: time to restore input partitions given to this member, from their changelog.",
            p,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retrains = Counter(
            "forecaster_retrains_total",
            "Retraining rounds by outcome: started, then promoted, rejected or failed.",
            p + ["outcome"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "forecaster_rollbacks_total",
            "Promoted models rolled back automatically: their live one-step skill fell below the configured threshold.",
            p,
            registry=registry,
        )
        self.training_loss = Gauge(
            "forecaster_training_loss",
            "Mean training loss over the last steps of the latest retraining round (normalised units).",
            p,
            registry=registry,
        )
        self.heldout_loss = Gauge(
            "forecaster_heldout_loss",
            "Loss on the held-out newest buffered steps in the latest round; model=champion|challenger.",
            p + ["model"],
            registry=registry,
        )
        self.retrain_seconds = Histogram(
            "forecaster_retrain_seconds",
            "Duration of a retraining round, in the background.",
            p,
            buckets=_RETRAIN_BUCKETS,
            registry=registry,
        )
        self.resync_seconds = Histogram(
            "forecaster_resync_seconds",
            "Time the loop spent installing promoted weights and re-synchronising every state.",
            p,
            buckets=_RETRAIN_BUCKETS,
            registry=registry,
        )
        self.damping = Gauge(
            "forecaster_damping_mean",
            "Mean over held series of how much of the model's move away from the last value is served (1: the model as "
            "it is, 0: the last value); set by each retraining round.",
            p,
            registry=registry,
        )
        self.interval_coverage = Gauge(
            "forecaster_interval_coverage",
            "Rolling share of one-step actuals inside the outermost quantile interval issued for them; nominal=its "
            "nominal coverage.",
            p + ["nominal"],
            registry=registry,
        )
        self.interval_shift = Gauge(
            "forecaster_interval_shift_scales",
            "How far the outermost quantiles are moved out (negative: in), in series scales, averaged over the horizon "
            "steps; source=conformal (the latest rounds' widening) or tracking (quantile tracking's offsets).",
            p + ["source"],
            registry=registry,
        )
        self.combination_weight = Gauge(
            "forecaster_combination_weight",
            "The weight of each expert in the forecasts served (the online combination), averaged over the horizon "
            "steps; expert=network for the recurrent network.",
            p + ["expert"],
            registry=registry,
        )
        self.up = Gauge(
            "forecaster_pipeline_up",
            "1 while the pipeline is assigned partitions and in contact with Kafka.",
            p,
            registry=registry,
        )
