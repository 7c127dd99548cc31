"""`forecaster` command line: run | check | replay | pretrain | backtest | tune | inspect | reset | models |
bench | topics.

Exit codes: 0 success, 1 failure at run time, 2 bad configuration or usage, or a state folder another process holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from datetime import UTC
from pathlib import Path

from forecaster import __version__, logs
from forecaster import config as config_module
from forecaster.errors import ConfigError, ForecasterError, StateInUse
from forecaster.words import counted

log = logging.getLogger("forecaster")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "bench":
        args.arguments = unknown  # everything else is the benchmark's own (see `forecaster bench -- --help`)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"forecaster: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except StateInUse as error:  # like a bad configuration, restarting cannot fix it
        print(f"forecaster: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except ForecasterError as error:
        print(f"forecaster: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("forecaster: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster",
        description="Streaming time-series forecasting daemon: "
        "Kafka in, per-series recurrent state, multi-step forecasts out.",
    )
    parser.add_argument("--version", action="version", version=f"forecaster {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _command(commands, "run", cmd_run, "serve every pipeline of the config until SIGTERM or Ctrl-C")
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to finish batches in flight on stop (default 30)",
    )

    _command(commands, "check", cmd_check, "validate the config and every pipeline file without starting anything")

    replay = _command(
        commands, "replay", cmd_replay, "publish a bundled dataset or a file of your own to a topic as JSON records"
    )
    replay.add_argument("dataset", nargs="?", default=None, help="one of: msft, taylor, greensboro, etth1, etth2")
    replay.add_argument("--topic", required=True, help="topic to publish to")
    _file_options(replay, "publish this file's observations instead of a bundled dataset")
    replay.add_argument(
        "--from-topic",
        default=None,
        metavar="SRC",
        help="publish the records topic SRC retains instead (JSON records in the pipeline's format, from the "
        "beginning, partition by partition), for example a backup of the input or another cluster's copy",
    )
    replay.add_argument(
        "--since",
        default=None,
        metavar="TIME",
        help="with --from-topic: only the records observed at or after TIME (ISO-8601 or epoch seconds)",
    )
    replay.add_argument(
        "--pipeline",
        default=None,
        help="with --file or --from-topic: the pipeline whose record fields the records take (default: the one "
        "reading --topic)",
    )
    replay.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="records per second (default: as fast as possible)"
    )
    replay.add_argument("--limit", type=int, default=None, metavar="N", help="publish only the first N records")
    _bootstrap_option(replay)

    pretrain = _command(
        commands, "pretrain", cmd_pretrain, "fit a pipeline's model offline on a dataset with truncated BPTT"
    )
    pretrain.add_argument("--pipeline", required=True, help="pipeline name from the config")
    _source_options(pretrain, "pretrain on")
    pretrain.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="WEIGHTS",
        help="start from this weights file (e.g. `forecaster models export`; it must fit the pipeline's model) "
        "instead of the seeded model",
    )
    pretrain.add_argument(
        "--prune",
        type=Path,
        default=None,
        metavar="WEIGHTS",
        help="start from this weights file of a wider network (the pipeline's model but for hidden_size), with each "
        "layer's weakest hidden units removed down to the pipeline's model.hidden_size, and fine-tune it",
    )
    pretrain.add_argument(
        "--prune-by",
        choices=("magnitude", "activation"),
        default="magnitude",
        help="with --prune: rank units by the norm of their weights (magnitude, the default) or by their mean output "
        "on the training data times the weights that read it (activation)",
    )
    pretrain.add_argument(
        "--teacher",
        type=Path,
        default=None,
        metavar="WEIGHTS",
        help="also learn this weights file's forecasts and quantiles (knowledge distillation; training.teacher_weight "
        "of the loss): any network with the pipeline's inputs, horizon, quantiles and season, e.g. a larger one",
    )
    pretrain.add_argument(
        "--out", type=Path, default=None, help="weights file to write (default: the pipeline's model.weights)"
    )
    pretrain.add_argument(
        "--steps", type=int, default=None, help="optimisation steps (default: the pipeline's training.steps)"
    )
    backtest = _command(
        commands,
        "backtest",
        cmd_backtest,
        "run a pipeline's engine over a history as the daemon would (forecast, learn, retrain on its schedule) and "
        "score it per horizon step against persistence and the seasonal naive",
    )
    backtest.add_argument("--pipeline", required=True, help="pipeline name from the config")
    _source_options(backtest, "backtest on")
    backtest.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="TIME",
        help="score the forecasts made from this time on (ISO-8601 or epoch seconds; default: the history's "
        "second half); the errors are scaled by the seasonal naive's before it",
    )
    backtest.add_argument(
        "--json",
        action="store_true",
        help='print the rows as JSON: a list of {"method", "horizon", "mae", "mase", "coverage80"}',
    )
    backtest.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the MAE by horizon step of the forecaster and the baselines to this PNG (matplotlib: the "
        "plot extra)",
    )
    _plot_parser(commands)
    _tune_parser(commands)

    inspect = _command(
        commands,
        "inspect",
        cmd_inspect,
        "show the state a pipeline's daemon keeps: its changelog topic with checkpoint.changelog, else its newest "
        "checkpoint",
    )
    inspect.add_argument("--pipeline", default=None, help="only this pipeline (default: all)")
    inspect.add_argument("--series", default=None, help="show this series' state and latest forecast")
    inspect.add_argument("--limit", type=int, default=10, help="series keys listed per pipeline (default 10)")
    inspect.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="read the checkpoints here instead of the config's state_dir (the demo keeps them in "
        "state/demo/checkpoints)",
    )
    inspect.add_argument(
        "--partition",
        type=int,
        default=None,
        metavar="P",
        help="with checkpoint.changelog: read only this partition of the changelog (default: all)",
    )
    _bootstrap_option(inspect)

    schema = _command(
        commands,
        "schema",
        cmd_schema,
        "print the JSON Schema of a pipeline's forecast records in its output.format, or write each output topic's "
        "for a schema registry",
    )
    schema.add_argument("--pipeline", default=None, help="print this pipeline's (default: the only one)")
    schema.add_argument(
        "--write",
        type=Path,
        default=None,
        metavar="DIR",
        help="write <output_topic>.json for every pipeline to DIR instead, as tansu's --schema-registry file://DIR "
        "reads them",
    )

    reset = _command(
        commands, "reset", cmd_reset, "move a pipeline's checkpoints aside: its series start afresh at the next start"
    )
    reset.add_argument("--pipeline", required=True, help="pipeline name from the config")
    _models_parser(commands)

    bench = commands.add_parser(
        "bench",
        help="measure throughput, latency and memory on this machine",
        description="Run benchmarks/throughput.py (engine vs the naive loop, the daemon vs a bare "
        "Kafka client, latency, memory); further arguments go to it, e.g. `forecaster bench --quick`; "
        "its own options: `forecaster bench -- --help`.",
    )
    bench.set_defaults(handler=cmd_bench, arguments=[])

    topics = _command(commands, "topics", cmd_topics, "create the pipelines' input, output and dead-letter topics")
    _bootstrap_option(topics)
    return parser


def _plot_parser(commands) -> None:
    plot = _command(
        commands,
        "plot",
        cmd_plot,
        "draw a series' recent actuals with a forecast and its interval (the outermost quantiles) to a PNG: from a "
        "backtest of a history (--file, --dataset), or from the forecasts of an output topic (--topic) with the "
        "actuals of the input topic",
    )
    plot.add_argument("--pipeline", required=True, help="pipeline name from the config")
    plot.add_argument("--dataset", default=None, help="backtest this bundled dataset (msft, taylor, greensboro, ...)")
    _file_options(plot, "backtest this file")
    plot.add_argument(
        "--topic",
        default=None,
        metavar="T",
        help="read the forecasts topic T retains (the pipeline's output, nested format) and the actuals its input "
        "topic retains",
    )
    plot.add_argument("--series", default=None, metavar="KEY", help="the series to draw (needed with several)")
    plot.add_argument("--out", type=Path, required=True, metavar="PNG", help="the picture to write")
    plot.add_argument(
        "--at",
        default=None,
        metavar="TIME",
        help="the forecast made from the last observation at or before TIME (default: the newest, or with a "
        "backtest the last origin scored)",
    )
    plot.add_argument(
        "--last", type=int, default=168, metavar="N", help="actuals shown up to the forecast's origin (default 168)"
    )
    _bootstrap_option(plot)


def _tune_parser(commands) -> None:
    tune = _command(
        commands,
        "tune",
        cmd_tune,
        "search a pipeline's model, training and retraining settings (Optuna: TPE, median pruning) by backtests on a "
        "validation part of a history; print the trials and the best settings as YAML (the tune extra)",
    )
    tune.add_argument("--pipeline", required=True, help="pipeline name from the config")
    _source_options(tune, "tune on")
    tune.add_argument("--trials", type=int, default=20, metavar="N", help="trials to run (default 20)")
    tune.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sampler and of torch (default 0)")
    tune.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no trial after this many seconds (one under way finishes)",
    )
    tune.add_argument(
        "--validation",
        type=float,
        default=0.6,
        metavar="SHARE",
        help="the leading share of the history's grid that trials see (default 0.6), scored on its second half; the "
        "rest, the test part, is never read",
    )
    tune.add_argument("--json", action="store_true", help="print the search as JSON: the best settings and every trial")


def _models_parser(commands) -> None:
    models = commands.add_parser(
        "models",
        help="list the model versions a pipeline keeps, roll back to one, export one",
        description="The model versions each pipeline keeps (retraining.keep_versions) in its state folder: "
        "`models list`, `models rollback`, `models export`, each reading the config given with -c.",
    )
    models.set_defaults(handler=lambda args: (models.print_help(), EXIT_CONFIG)[1])
    actions = models.add_subparsers(dest="action", metavar="ACTION")
    listed = _command(actions, "list", cmd_models_list, "the versions kept, with time, origin and held-out loss")
    listed.add_argument("--pipeline", default=None, help="only this pipeline (default: all)")
    rollback = _command(
        actions, "rollback", cmd_models_rollback, "serve a kept version again (as the next version), between batches"
    )
    rollback.add_argument("--pipeline", required=True, help="pipeline name from the config")
    rollback.add_argument("--version", required=True, type=int, help="a kept version (see `models list`)")
    export = _command(actions, "export", cmd_models_export, "write a version as a weights file another daemon loads")
    export.add_argument("--pipeline", required=True, help="pipeline name from the config")
    export.add_argument("--version", type=int, default=None, help="a kept version (default: the one serving)")
    export.add_argument("--out", type=Path, required=True, help="weights file to write")


def _file_options(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument(
        "--file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"{what}: CSV, JSON lines or Parquet, optionally gzipped (.csv, .csv.gz, .jsonl, .parquet), one "
        "observation a row with the pipeline's record fields as columns; without the key column the file is one "
        "series",
    )
    command.add_argument(
        "--map",
        action="append",
        default=None,
        metavar="FIELD=COLUMN",
        help="with --file: read the pipeline's record field FIELD from column COLUMN (repeatable)",
    )


def _source_options(command: argparse.ArgumentParser, verb: str) -> None:
    """--dataset, --file (--map) and --topic (--since, --bootstrap): where a command's history comes from."""
    command.add_argument(
        "--dataset",
        default=None,
        help="bundled dataset name: msft, taylor, greensboro, etth1, etth2 (default: the pipeline's training.dataset)",
    )
    _file_options(command, f"the file to {verb}")
    command.add_argument(
        "--topic",
        default=None,
        metavar="T",
        help=f"{verb} the records topic T retains (JSON records in the pipeline's format), from the beginning",
    )
    command.add_argument(
        "--since",
        default=None,
        metavar="TIME",
        help="with --topic: only the records observed at or after TIME (ISO-8601 or epoch seconds)",
    )
    _bootstrap_option(command)


def _bootstrap_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--bootstrap", default=None, metavar="HOST:PORT", help="override kafka.bootstrap_servers of the config"
    )


def _command(commands, name: str, handler, summary: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=summary)
    command.add_argument(
        "-c", "--config", type=Path, default=Path("config.yaml"), help="config file (default: config.yaml)"
    )
    command.set_defaults(handler=handler)
    return command


def _with_bootstrap(config: config_module.Config, bootstrap: str | None) -> config_module.Config:
    if bootstrap is None:
        return config
    kafka = dataclasses.replace(config.settings.kafka, bootstrap_servers=bootstrap)
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, kafka=kafka))


def cmd_run(args) -> int:
    from forecaster.app import Daemon

    config = config_module.load(args.config)
    logs.setup(config.settings.log_level, config.settings.log_format, kafka_level=config.settings.kafka_log_level)
    _set_up_memory(config)
    daemon = Daemon(config, shutdown_timeout_s=args.shutdown_timeout)

    def request_stop(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
        daemon.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return daemon.run()


def _set_up_memory(config: config_module.Config) -> None:
    """For a command that steps or trains networks, before it starts threads: glibc keeps what it frees
    (settings.keep_freed_memory, process.py)."""
    from forecaster import process

    if config.settings.keep_freed_memory:
        kept = process.keep_freed_memory()
        log.debug("freed memory kept for reuse" if kept else "freed memory: the C library's own ways (not glibc)")


def cmd_check(args) -> int:
    from forecaster.app import Checkpoints
    from forecaster.build import build_engine, pipeline_dir
    from forecaster.learning import migration
    from forecaster.learning.pretrain import check_dataset

    config = config_module.load(args.config)
    for pipeline in config.pipelines:
        folder = pipeline_dir(config, pipeline)
        newest = Checkpoints(folder, pipeline).newest()
        if newest is None:
            build_engine(config, pipeline, device="cpu")  # the starting weights load against the configured model
        check_dataset(config, pipeline)
        print(_summary(pipeline))
        if newest is not None:  # what a restart does with the checkpoint; a ConfigError where it cannot
            payload, path = newest
            print(f"  {path.name} in {folder}: {migration.restart(config, pipeline, payload)}")
    print(f"{args.config}: ok ({counted(len(config.pipelines), 'pipeline')})")
    return EXIT_OK


def _summary(pipeline: config_module.Pipeline) -> str:
    """A pipeline's topics, model, horizon, weights and retraining, in one line."""
    m = pipeline.model
    r = pipeline.retraining
    season = f", season {m.season}" if m.season else ""
    quantiles = f", quantiles {'/'.join(f'{q:g}' for q in m.quantiles)}" if m.quantiles else ""
    if pipeline.intervals.tracking_rate:
        quantiles += f" tracked at {pipeline.intervals.tracking_rate:g}"
    retraining = f", retraining every {counted(r.every_records, 'record')}" if r.enabled else ", no retraining"
    return (
        f"{pipeline.name}: {pipeline.input_topic} -> {pipeline.output_topic}, {m.cell} "
        f"{m.num_layers}x{m.hidden_size}, "
        f"horizon {pipeline.horizon} x {pipeline.cadence}{season}{quantiles}, "
        f"weights {m.weights or 'seeded'}{retraining}"
    )


def cmd_replay(args) -> int:
    from forecaster.io import datasets
    from forecaster.tools.progress import Progress
    from forecaster.tools.replay import replay

    chosen = [v for v in (args.dataset, args.file, args.from_topic) if v is not None]
    if len(chosen) != 1:
        raise ConfigError("replay: expected one of a dataset name, --file PATH and --from-topic SRC")
    if args.since is not None and args.from_topic is None:
        raise ConfigError("replay: --since reads only with --from-topic SRC")
    if args.dataset is not None and args.dataset not in datasets.NAMES:
        raise ConfigError(f"unknown dataset {args.dataset!r} (expected one of: {', '.join(datasets.NAMES)})")
    config = _with_bootstrap(config_module.load(args.config, require_weights=False), args.bootstrap)
    source, fmt = args.dataset, None
    if args.file is not None or args.from_topic is not None:
        from forecaster.tools.sources import file_records, parse_map, parse_moment, topic_records

        pipeline = _replayed_pipeline(config, args.pipeline, args.topic)
        fmt = pipeline.record
        if args.file is not None:
            source = file_records(args.file, pipeline, parse_map(args.map))
        else:
            source, skipped = topic_records(config, pipeline, args.from_topic, parse_moment(args.since, "--since"))
            if skipped:
                print(f"skipped {counted(skipped, 'record')} of {args.from_topic} without a JSON {fmt.key} field")
    bar = Progress(f"replay {chosen[0]} -> {args.topic}", None)
    sent = replay(
        config.settings.kafka,
        source,
        args.topic,
        rate=args.rate,
        limit=args.limit,
        progress=lambda done, total: (setattr(bar, "total", total), bar.update(done)),
        key_field=None if fmt is None else fmt.key,
    )
    bar.close()
    print(f"published {counted(sent, 'record')} to {args.topic}")
    return EXIT_OK


def _replayed_pipeline(config: config_module.Config, name: str | None, topic: str) -> config_module.Pipeline:
    """The pipeline named, else the one reading `topic`: its record fields are the replayed records'."""
    if name is not None:
        return config.pipeline(name)
    readers = [p for p in config.pipelines if p.input_topic == topic]
    if len(readers) != 1:
        raise ConfigError(f"replay: expected --pipeline, since {len(readers)} pipelines of {config.path} read {topic}")
    return readers[0]


def _check_source(args) -> None:
    """At most one of --dataset, --file and --topic, and a dataset that is bundled."""
    from forecaster.io import datasets

    chosen = [o for o, v in (("--dataset", args.dataset), ("--file", args.file), ("--topic", args.topic)) if v]
    if len(chosen) > 1:
        raise ConfigError(f"expected one of --dataset, --file and --topic, got {' and '.join(chosen)}")
    if args.dataset is not None and args.dataset not in datasets.NAMES:
        raise ConfigError(f"--dataset: expected one of {', '.join(datasets.NAMES)}, got {args.dataset!r}")


def _history(args, config: config_module.Config, pipeline: config_module.Pipeline) -> tuple[list[bytes], str]:
    """The JSON records of the source the options name (--file, --topic, else a dataset; `_check_source` first), and
    its name."""
    from forecaster.tools.sources import parse_map, parse_moment, payloads

    return payloads(
        config,
        pipeline,
        dataset=args.dataset,
        file=args.file,
        mapping=parse_map(args.map),
        topic=args.topic,
        since=parse_moment(args.since, "--since"),
    )


def cmd_pretrain(args) -> int:
    from forecaster.build import resolve_device
    from forecaster.learning.pretrain import pretrain
    from forecaster.tools.progress import Progress

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps: expected a positive integer, got {args.steps}")
    config = _with_bootstrap(config_module.load(args.config, require_weights=False), args.bootstrap)
    logs.setup(config.settings.log_level, config.settings.log_format, kafka_level=config.settings.kafka_log_level)
    _set_up_memory(config)
    pipeline = config.pipeline(args.pipeline)
    for option, path in (("--init", args.init), ("--prune", args.prune), ("--teacher", args.teacher)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{option}: expected an existing weights file, got {path}")
    if args.init is not None and args.prune is not None:
        raise ConfigError("expected one of --init and --prune (where training starts), got both")
    _check_source(args)
    history = {"dataset": args.dataset}  # by name: a bundled dataset's name goes into the weights' metadata
    if args.file is not None or args.topic is not None:
        payloads, source = _history(args, config, pipeline)
        history = {"payloads": payloads, "source": source}
    steps = args.steps or pipeline.training.steps
    bar = Progress(f"pretrain {pipeline.name}", steps)
    report = pretrain(
        config,
        pipeline,
        **history,
        init=args.init,
        prune_from=args.prune,
        prune_by=args.prune_by,
        teacher=args.teacher,
        out=args.out,
        steps=args.steps,
        progress=lambda step, loss: bar.update(step),
        device=resolve_device(config.settings.device),
    )
    bar.close()
    compared = f"last value {report['last_value_mae']:.4g}"
    if pipeline.model.season:  # what a zero output forecasts there, besides the last value it must also beat
        compared = f"last season at today's level {report['naive_mae']:.4g}, {compared}"
    print(
        f"wrote {report['path']}: {counted(report['steps'], 'step')} in {report['seconds']:.0f} s, final loss "
        f"{report['final_loss']:.4f}; held-out one-step MAE model {report['model_mae']:.4g} vs {compared}"
    )
    return EXIT_OK


def cmd_backtest(args) -> int:
    import json

    from forecaster.tools.backtest import table
    from forecaster.tools.sources import parse_moment

    config = _with_bootstrap(config_module.load(args.config), args.bootstrap)
    _set_up_memory(config)
    pipeline = config.pipeline(args.pipeline)
    _check_source(args)
    payloads, source = _history(args, config, pipeline)
    result = _backtested(config, pipeline, payloads, source, parse_moment(args.start, "--from"))
    if args.plot is not None:
        from forecaster.tools import plot

        title = f"{pipeline.name} on {source}: MAE by horizon step"
        plot.save(plot.draw_errors(result.rows, "mae", title), args.plot)
    if args.json:
        from forecaster.serving.records import nulled

        print(json.dumps(nulled(result.rows), allow_nan=False))
        return EXIT_OK
    from forecaster.serving.records import format_time

    print(
        f"{pipeline.name} on {source}: {counted(result.origins, 'origin')} from {format_time(result.first_origin)}, "
        f"{counted(result.rounds, 'retraining round')} ({result.promotions} promoted)"
    )
    print(table(result.rows))
    return EXIT_OK


def cmd_tune(args) -> int:
    """A search of the pipeline's settings on the history's validation part (tools/tune.py), each trial's rows
    and outcome on stderr; the table and the best settings as YAML (or JSON) on stdout."""
    import json

    from forecaster.build import resolve_device
    from forecaster.tools import tune
    from forecaster.tools.progress import Progress

    tune.optuna_module()  # the missing extra is said before the history is read
    config = _with_bootstrap(config_module.load(args.config, require_weights=False), args.bootstrap)
    _set_up_memory(config)
    pipeline = config.pipeline(args.pipeline)
    _check_source(args)
    payloads, source = _history(args, config, pipeline)
    bars: dict[int, Progress] = {}

    def rows(number: int, done: int, total: int) -> None:
        if number not in bars:
            bars[number] = Progress(f"trial {number + 1}/{args.trials}", total)
        bars[number].update(done)

    def finished(trial: tune.Trial) -> None:
        if trial.number in bars:
            bars.pop(trial.number).close()
        score = "" if trial.mase is None else f", MASE {trial.mase:.4f}"
        print(f"trial {trial.number + 1}/{args.trials}: {trial.state}{score} ({trial.seconds:.0f} s)", file=sys.stderr)

    found = tune.search(
        config,
        pipeline,
        _decoded(payloads, source, pipeline),
        source,
        trials=args.trials,
        seed=args.seed,
        timeout=args.timeout,
        validation=args.validation,
        device=resolve_device(config.settings.device),
        progress=rows,
        finished=finished,
    )
    if args.json:
        from forecaster.serving.records import nulled

        print(json.dumps(nulled(tune.as_json(found)), allow_nan=False))
        return EXIT_OK
    print(
        f"{pipeline.name} on {source}: {counted(len(found.trials), 'trial')} on the first "
        f"{counted(found.validation_rows, 'step')} (validation part, scored on its second half); the last "
        f"{counted(found.test_rows, 'step')} (test part) were not read"
    )
    print(tune.table(found))
    print()
    print(tune.fragment(found, config.pipeline_file(pipeline), str(args.config)), end="")
    return EXIT_OK


def cmd_plot(args) -> int:
    """A backtest's forecast from the last origin (or --at), or the output topic's newest forecast, drawn with the
    series' actuals."""
    from forecaster.tools import plot
    from forecaster.tools.sources import parse_map, parse_moment, payloads

    if sum(x is not None for x in (args.dataset, args.file, args.topic)) != 1:
        raise ConfigError("plot: expected one of --dataset NAME, --file PATH or --topic T")
    if args.last < 1:
        raise ConfigError(f"--last: expected a positive integer, got {args.last}")
    config = _with_bootstrap(config_module.load(args.config), args.bootstrap)
    pipeline = config.pipeline(args.pipeline)
    at = parse_moment(args.at, "--at")
    if args.topic is not None:
        from forecaster.io.clients import read_retained

        kafka = config.settings.kafka
        forecasts, inputs = read_retained(kafka, args.topic), read_retained(kafka, pipeline.input_topic)
        if args.series is None:
            raise ConfigError("plot: --topic needs --series KEY")
        view = plot.topic_view(forecasts, inputs, pipeline, args.series, at, args.last)
    else:
        mapping = parse_map(args.map)
        records, source = payloads(config, pipeline, dataset=args.dataset, file=args.file, mapping=mapping)
        view = plot.backtest_view(_backtested(config, pipeline, records, source), args.series, at, args.last)
    path = plot.save(plot.draw_forecast(view), args.out)
    print(f"wrote {path}: {view.series}, {counted(len(view.actuals), 'actual')} and a forecast of {pipeline.horizon}")
    return EXIT_OK


def _backtested(
    config: config_module.Config,
    pipeline: config_module.Pipeline,
    payloads: list[bytes],
    source: str,
    start: float | None = None,
):
    """The backtest of a history's records (tools/backtest.py), with a progress bar."""
    from forecaster.build import resolve_device
    from forecaster.tools.backtest import backtest
    from forecaster.tools.progress import Progress

    observations = _decoded(payloads, source, pipeline)
    bar = Progress(f"backtest {pipeline.name} on {source}", None)
    result = backtest(
        config,
        pipeline,
        observations,
        source,
        start=start,
        device=resolve_device(config.settings.device),
        progress=lambda done, total: (setattr(bar, "total", total), bar.update(done)),
    )
    bar.close()
    return result


def _decoded(payloads: list[bytes], source: str, pipeline: config_module.Pipeline):
    """A history's records as observations; one that does not fit the pipeline's record format stops the command."""
    from forecaster.serving.records import decode

    observations, rejected = decode(payloads, pipeline.record)
    if rejected:
        first = rejected[0]
        raise ForecasterError(
            f"{source}: {len(rejected)} of {len(payloads)} records do not fit pipeline {pipeline.name}'s record "
            f"format (first, record {first.position + 1}: {first.reason}: {first.detail})"
        )
    return observations


def cmd_inspect(args) -> int:
    """Each pipeline's state where its daemon keeps it: the changelog topic with checkpoint.changelog, else the
    newest local checkpoint; restored into an engine as a start would serve it."""
    config = _with_bootstrap(config_module.load(args.config, require_weights=False), args.bootstrap)
    if args.state_dir is not None:
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, state_dir=str(args.state_dir))
        )
    pipelines = [config.pipeline(args.pipeline)] if args.pipeline else list(config.pipelines)
    if args.partition is not None and not any(p.checkpoint.changelog for p in pipelines):
        raise ConfigError("--partition: only pipelines with checkpoint.changelog keep state by partition")
    found_series, missing = args.series is None, []
    for pipeline in pipelines:
        if pipeline.checkpoint.changelog:
            held = _inspect_changelog(config, pipeline, args.partition)
        else:
            held = _inspect_checkpoint(config, pipeline)
        if isinstance(held, str):  # where it looked, in vain
            missing.append(held)
            continue
        _show_state(pipeline, held, args.limit)
        if args.series is not None and args.series in held.store:
            found_series = True
            _show_series(pipeline, held, args.series)
    if len(missing) == len(pipelines):
        print(f"forecaster: {'; '.join(dict.fromkeys(missing))}", file=sys.stderr)
        return EXIT_FAILED
    if not found_series:
        print(f"forecaster: series {args.series!r} is in no checkpoint or changelog", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _inspect_checkpoint(config: config_module.Config, pipeline: config_module.Pipeline):
    """The engine of the pipeline's newest local checkpoint, as a restart would serve it, its heading printed; or
    where it looked, in words."""
    from datetime import datetime

    from forecaster.app import Checkpoints
    from forecaster.build import pipeline_dir
    from forecaster.learning import migration
    from forecaster.serving.model import changes

    folder = pipeline_dir(config, pipeline)
    payload = Checkpoints(folder, pipeline).load()
    if payload is None:
        print(f"{pipeline.name}: no checkpoint in {folder}")
        return (
            f"no checkpoint under {config.resolve(config.settings.state_dir)}; point --state-dir at the folder "
            "the daemon wrote (the demo's is state/demo/checkpoints)"
        )
    engine = migration.resume(config, pipeline, "cpu", payload)
    written = datetime.fromtimestamp(payload["written_at"], UTC).isoformat(timespec="seconds")
    spilled = len(engine.store.spill) if engine.store.spill is not None else 0
    print(
        f"{pipeline.name}: checkpoint of {written}, model version {engine.model_version}, "
        f"{len(engine.store)} series ({spilled} spilled), "
        f"offsets {dict(sorted(payload['offsets'].items()))}"
    )
    written_under = migration.checkpoint_spec(payload["engine"])
    if written_under != engine.model.spec:
        print(f"  shown migrated, as a restart serves it: {changes(written_under, engine.model.spec)}")
    return engine


def _inspect_changelog(config: config_module.Config, pipeline: config_module.Pipeline, partition: int | None):
    """The engine holding the series of the pipeline's changelog (all partitions, or `partition`), as a member
    taking them over would serve them, its heading printed; or where it looked, in words."""
    from forecaster.build import changelog_topic
    from forecaster.io.clients import partition_count
    from forecaster.tools.inspection import changelog_state

    kafka = config.settings.kafka
    topic = changelog_topic(config, pipeline)
    count = partition_count(kafka, topic)
    where = f"changelog {topic} at {kafka.bootstrap_servers}"
    if not count:  # None, or no partitions: a broker may answer either for a topic it does not have
        print(f"{pipeline.name}: no {where} (`forecaster topics` creates it)")
        return f"no {where}"
    if partition is not None and not 0 <= partition < count:
        raise ConfigError(f"--partition: expected 0 .. {count - 1} ({topic} has {count} partitions), got {partition}")
    partitions = list(range(count)) if partition is None else [partition]
    engine, restored = changelog_state(config, pipeline, partitions)
    read = f"partition {partition}" if partition is not None else f"partitions 0 .. {count - 1}"
    offsets = {p: r.offset for p, r in restored.items() if r.offset is not None}
    if not len(engine.store) and not offsets:
        print(f"{pipeline.name}: nothing in {where}, {read}")
        return f"nothing in {where}, {read}"
    versions = sorted(set().union(*(r.versions.values() for r in restored.values())))  # series -> version
    print(
        f"{pipeline.name}: {where}, {read}: {len(engine.store)} series of model version "
        f"{', '.join(map(str, versions)) or '-'}, input offsets {offsets}"
    )
    if versions != [engine.model_version]:
        print(f"  shown with the starting weights (version {engine.model_version}), as a member taking over serves it")
    return engine


def _show_state(pipeline: config_module.Pipeline, engine, limit: int) -> None:
    """The series held, how far the intervals moved, and the combination's weights."""
    keys = list(engine.store.keys_of(engine.store.active))
    print(f"  series: {', '.join(keys[:limit])}{' ...' if len(keys) > limit else ''}")
    if engine.model.spec.quantiles and pipeline.checkpoint.changelog:
        print("  intervals: calibration and tracking are each member's own, not kept in the changelog")
    elif engine.model.spec.quantiles:
        widening = 0.0 if engine.widening is None else float(engine.widening.mean())
        print(
            f"  intervals moved out by {widening:.3g} scales (conformal widening, mean over steps) "
            f"and {engine.tracked[0]:.3g} .. {engine.tracked[-1]:.3g} (tracking, step 1 .. {pipeline.horizon})"
        )
    if engine.combination is not None:
        weights = engine.combination.mean_weights()
        partitions = counted(len(engine.combination.learners), "partition")
        print(
            f"  combination weights over {partitions} (mean over steps; step 1 / last): "
            + ", ".join(
                f"{name} {w:.2f} ({first:.2f} / {last:.2f})"
                for name, w, first, last in zip(engine.combination.names, weights.mean(0), weights[0], weights[-1])
            )
        )


def _show_series(pipeline: config_module.Pipeline, engine, key: str) -> None:
    """One series' newest value, scaling and state, and the forecast its newest observation produced."""
    from forecaster.serving.records import format_time
    from forecaster.tools.inspection import series_view

    partition = None
    if pipeline.checkpoint.changelog:  # a changelog knows each series' input partition
        partition = int(engine.store.partition[engine.store.slots([key])[0]])
    view = series_view(engine, key, partition)
    print(
        f"  {view.key}: newest {format_time(view.last_time)} = {view.last_value:.6g}; "
        f"running mean {view.mean:.6g}, std {view.std:.6g}; state norms per layer "
        + ", ".join(f"{n:.4g}" for n in view.state_norms)
    )
    if not view.forecast_values:
        print(
            "  latest forecast: not rebuilt (model.highway reads the newest inputs, kept only with retraining on; "
            "with several input partitions, the series' combination weights are not known here)"
        )
    else:
        print(f"  latest forecast ({pipeline.horizon} x {pipeline.cadence}):")
    for t, value in zip(view.forecast_times, view.forecast_values):
        print(f"    {format_time(t)}  {value:.6g}")


def cmd_reset(args) -> int:
    """Move the pipeline's folder in state_dir (checkpoints and spill) aside, never delete it: a reset is undone by
    moving it back. The daemon must be stopped: while it holds the folder, this refuses."""
    import os
    from datetime import datetime

    from forecaster.build import pipeline_dir
    from forecaster.io.checkpoint import lock_folder

    config = config_module.load(args.config, require_weights=False)
    folder = pipeline_dir(config, config.pipeline(args.pipeline))
    if not folder.exists():
        print(f"{args.pipeline}: nothing to reset, {folder} does not exist")
        return EXIT_OK
    aside = folder.with_name(f"{folder.name}.reset-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    held = lock_folder(folder)  # a StateInUse while a daemon serves from it
    try:
        folder.rename(aside)
    finally:
        if held is not None:
            os.close(held)
    print(
        f"{args.pipeline}: moved {folder} to {aside}; at the next start every series starts afresh from the "
        "starting weights, at the consumer group's committed offsets"
    )
    return EXIT_OK


def cmd_models_list(args) -> int:
    from forecaster.tools.models import listing

    config = config_module.load(args.config, require_weights=False)
    for pipeline in [config.pipeline(args.pipeline)] if args.pipeline else config.pipelines:
        print("\n".join(listing(config, pipeline)))
    return EXIT_OK


def cmd_models_rollback(args) -> int:
    from forecaster.tools.models import request_rollback

    config = config_module.load(args.config, require_weights=False)
    print(request_rollback(config, config.pipeline(args.pipeline), args.version))
    return EXIT_OK


def cmd_models_export(args) -> int:
    from forecaster.tools.models import export

    config = config_module.load(args.config, require_weights=False)
    print(export(config, config.pipeline(args.pipeline), args.out, args.version))
    return EXIT_OK


def cmd_bench(args) -> int:
    """The benchmark lives with the sources (it reads the shipped data): run it from the checkout."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    if not script.is_file():
        raise ForecasterError(f"{script} not found: `forecaster bench` runs from a source checkout of forecaster")
    sys.argv = [str(script), *[a for a in args.arguments if a != "--"]]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/throughput.py` has it: its siblings import
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.path.remove(str(script.parent))
    return EXIT_OK


def cmd_schema(args) -> int:
    import json

    from forecaster.serving import schemas

    config = config_module.load(args.config, require_weights=False)
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        for pipeline in config.pipelines:
            path = args.write / f"{pipeline.output_topic}.json"
            path.write_text(json.dumps(schemas.topic_schema(pipeline), indent=1) + "\n")
            print(f"{pipeline.name}: {path}")
        return EXIT_OK
    if args.pipeline is None and len(config.pipelines) > 1:
        raise ConfigError(f"--pipeline: expected one of {[p.name for p in config.pipelines]} with several pipelines")
    pipeline = config.pipeline(args.pipeline) if args.pipeline else config.pipelines[0]
    print(json.dumps(schemas.forecast_schema(pipeline), indent=1))
    return EXIT_OK


def cmd_topics(args) -> int:
    from forecaster.build import compacted_topics, topics_of
    from forecaster.io.clients import create_topics

    config = _with_bootstrap(config_module.load(args.config, require_weights=False), args.bootstrap)
    wanted = [topic for p in config.pipelines for topic in topics_of(config, p)]
    # a changelog keeps each series' newest record only, a model topic the newest version: compacted
    compacted = {name for p in config.pipelines for name in compacted_topics(config, p)}
    created = create_topics(config.settings.kafka, wanted, compacted)
    for name, partitions in wanted:
        kind = ", compacted" if name in compacted else ""
        print(
            f"{name}: created with {counted(partitions, 'partition')}{kind}" if name in created else f"{name}: exists"
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
