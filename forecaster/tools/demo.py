"""`make demo`: the main job on the embedded default, end to end, on one machine.

Starts the embedded Kafka-protocol broker on a free loopback port, creates the topics,
runs the daemon (`forecaster run -c config.yaml`, a real subprocess), replays the real
datasets of each pipeline into its input topic at an accelerated rate, and shows
progress read from the daemon's own /metrics. Ctrl-C (or --duration) stops it all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from forecaster import config as config_module
from forecaster.io.broker import EmbeddedBroker, die_with_parent
from forecaster.io.clients import create_topics
from forecaster.tools.replay import replay

_COLUMNS = (
    "pipeline",
    "replayed",
    "consumed",
    "rec/s",
    "forecasts",
    "rejected",
    "series",
    "MAE model",
    "MAE naive",
    "version",
    "retrains +/-",
    "cover80",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecaster.tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-c", "--config", type=Path, default=Path("config.yaml"), help="config file (default: config.yaml)"
    )
    parser.add_argument(
        "--rate", type=float, default=250.0, help="records per second replayed into each pipeline (default 250)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)"
    )
    args = parser.parse_args(argv)
    workdir = Path("state/demo")
    workdir.mkdir(parents=True, exist_ok=True)
    # The embedded broker starts empty every time, so the daemon's checkpoints must too:
    # offsets and series state from a previous demo would point into topics that no longer exist.
    checkpoints = workdir / "checkpoints"
    shutil.rmtree(checkpoints, ignore_errors=True)
    os.environ["FORECASTER_STATE_DIR"] = str(checkpoints.resolve())
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        os.environ["KAFKA_BOOTSTRAP"] = broker.bootstrap
        config = config_module.load(args.config)
        print(f"broker: {broker.bootstrap} (memory only; log {workdir / 'broker.log'})")
        _create_topics(config)
        return _run(config, args, workdir)


def _create_topics(config: config_module.Config) -> None:
    topics = [(t, p.partitions) for p in config.pipelines for t in (p.input_topic, p.output_topic, p.dead_letter_topic)]
    create_topics(config.settings.kafka, topics)
    print(f"topics: {len(topics)} created")


def _run(config: config_module.Config, args, workdir: Path) -> int:
    log_path = workdir / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forecaster.cli", "run", "-c", str(args.config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Ctrl-C reaches the demo alone, which stops the daemon cleanly; a demo killed outright takes the
            # daemon with it (as it does the broker) rather than leave it serving
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    metrics = config.settings.metrics
    url = f"http://{metrics.host}:{metrics.port}/metrics"
    print(f"daemon: pid {daemon.pid}, log {log_path}, metrics {url}")
    stop = threading.Event()
    replayed = {p.name: 0 for p in config.pipelines}
    threads = [_start_replay(config, p, args.rate, stop, replayed) for p in config.pipelines if p.training.dataset]
    print("press Ctrl-C to stop" + (f" (or wait {args.duration:.0f} s)" if args.duration else ""))
    try:
        _monitor(url, daemon, replayed, args.duration)
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        code = _stop_daemon(daemon)
    print(f"daemon exited with {code}; its log is {log_path}")
    return 0 if code == 0 else 1


def _start_replay(config, pipeline, rate: float, stop: threading.Event, replayed: dict) -> threading.Thread:
    def work():
        replay(
            config.settings.kafka,
            pipeline.training.dataset,
            pipeline.input_topic,
            rate=rate,
            stop=stop,
            progress=lambda done, total: replayed.__setitem__(pipeline.name, done),
        )

    thread = threading.Thread(target=work, name=f"replay-{pipeline.name}", daemon=True)
    thread.start()
    return thread


def _stop_daemon(daemon: subprocess.Popen) -> int:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            return daemon.wait(40)
        except subprocess.TimeoutExpired:
            daemon.kill()
    return daemon.wait()


def _monitor(url: str, daemon: subprocess.Popen, replayed: dict, duration: float | None) -> None:
    """Print the progress table from the daemon's /metrics until the deadline or the daemon exits."""
    deadline = time.monotonic() + duration if duration else float("inf")
    interactive = sys.stdout.isatty()
    previous, previous_at, lines_drawn, printed_at = {}, time.monotonic(), 0, 0.0
    while time.monotonic() < deadline and daemon.poll() is None:
        time.sleep(2.0)
        samples = scrape(url)
        now = time.monotonic()
        rows = _rows(samples, replayed, previous, now - previous_at)
        previous, previous_at = samples, now
        if interactive:
            if lines_drawn:
                sys.stdout.write(f"\x1b[{lines_drawn}F")
            lines_drawn = _print_table(rows)
        elif now - printed_at >= 10:
            _print_table(rows)
            printed_at = now
    if daemon.poll() is not None:
        print(f"daemon exited early with {daemon.returncode}")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Samples of the /metrics page as {(name, sorted labels): value}; empty if it is not up yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _rows(samples: dict, replayed: dict, previous: dict, elapsed: float) -> list[tuple]:
    """One table row per pipeline; a metric not exported yet reads as 0 (or NaN for an error)."""

    def get(source, name, pipeline, default=0.0, **labels):
        return source.get((name, tuple(sorted({"pipeline": pipeline, **labels}.items()))), default)

    rows = []
    for name, done in replayed.items():
        consumed = get(samples, "forecaster_records_consumed_total", name)
        rate = (consumed - get(previous, "forecaster_records_consumed_total", name)) / max(elapsed, 1e-9)
        rejected = sum(
            v
            for (n, labels), v in samples.items()
            if n == "forecaster_records_rejected_total" and ("pipeline", name) in labels
        )
        rows.append(
            (
                name,
                done,
                int(consumed),
                rate,
                int(get(samples, "forecaster_forecasts_produced_total", name)),
                int(rejected),
                int(get(samples, "forecaster_active_series", name)),
                get(samples, "forecaster_one_step_mae", name, float("nan"), forecaster="model"),
                get(samples, "forecaster_one_step_mae", name, float("nan"), forecaster="naive"),
                int(get(samples, "forecaster_model_version", name)),
                f"{get(samples, 'forecaster_retrains_total', name, outcome='promoted'):.0f}"
                f"/{get(samples, 'forecaster_retrains_total', name, outcome='rejected'):.0f}",
                get(samples, "forecaster_interval_coverage", name, float("nan"), nominal="0.8"),
            )
        )
    return rows


def _print_table(rows: list[tuple]) -> int:
    line = "{:<11} {:>9} {:>9} {:>8} {:>10} {:>9} {:>7} {:>10} {:>10} {:>8} {:>13} {:>8}"
    print(line.format(*_COLUMNS))
    for (
        name,
        replayed,
        consumed,
        rate,
        forecasts,
        rejected,
        series,
        mae_model,
        mae_naive,
        version,
        retrains,
        cover,
    ) in rows:
        print(
            line.format(
                name,
                replayed,
                consumed,
                f"{rate:,.0f}",
                forecasts,
                rejected,
                series,
                _number(mae_model),
                _number(mae_naive),
                version,
                retrains,
                _number(cover),
            )
        )
    sys.stdout.flush()
    return len(rows) + 1


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"


if __name__ == "__main__":
    sys.exit(main())
