"""benchmarks/throughput.py runs and reports every field the issue asks for (tiny sizes; no timings asserted)."""

import pytest
import torch

from forecaster.stages import STAGES

from support import benchmark

throughput = benchmark("throughput")

ENGINE_FIELDS = {"cell", "n_series", "device", "batched_steps_per_s", "naive_steps_per_s"}


def test_help_names_the_quick_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        throughput.main(["--help"])
    assert exit_.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_an_unknown_section_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        throughput.main(["--sections", "engine,gpu"])
    assert exit_.value.code == 2
    assert "got gpu" in capsys.readouterr().err


def test_the_retrain_section_reports_training_speed_and_what_a_round_costs_the_forecasts(device):
    result = throughput.retrain.measure(
        quick=True, log=lambda line: None, series=300, phase_seconds=0.5, device=torch.device(device)
    )
    assert result["n_series"] == 300 and result["device"] == device
    assert result["tbptt_windows_per_s"] > 0 and result["inference_ratio_while_training"] > 0
    assert result["steps_per_s_alone"] > 0 and result["resync_seconds"] > 0


def test_engine_rows_for_every_cell_and_size_and_memory_at_the_largest(monkeypatch):
    monkeypatch.setattr(throughput, "SIZES", (50, 300))
    monkeypatch.setattr(throughput, "MEMORY_AT", ("gru", 300))
    monkeypatch.setattr(throughput, "repetitions", lambda n, quick: (2, 1))
    rows, memory = throughput.engine_section(quick=True)
    cpu_rows = [r for r in rows if r["device"] == "cpu"]
    assert [(r["cell"], r["n_series"]) for r in cpu_rows] == [("gru", 50), ("gru", 300), ("lstm", 50), ("lstm", 300)]
    for row in rows:
        assert ENGINE_FIELDS <= row.keys()
        assert row["batched_steps_per_s"] > 0 and row["naive_steps_per_s"] > 0
        assert set(row["stages_ms"]) == {*throughput.ENGINE_STAGES, "other", "step"}  # profiled stage by stage
        assert row["stages_ms"]["recurrent"] > 0 and row["stages_ms"]["lookup"] > 0
    assert memory["n_series"] == 300 and memory["raw_state_bytes_per_series"] == 2 * 64 * 4
    assert memory["bytes_per_series"] >= memory["raw_state_bytes_per_series"]
    assert memory["rss_bytes_at_1m_series"] > 0
    scaling = {"cell": "gru", "device": "cpu"}
    rows = [{**scaling, "n_series": 10_000, "step_ms": 10.0}, {**scaling, "n_series": 1_000_000, "step_ms": 1100.0}]
    assert throughput.engine_scaling(rows) == {
        "n_series": 1_000_000,
        "step_ms": 1100.0,
        "steps_of_10000_ms": 1000.0,
        "ratio": 1.1,
    }


def test_the_feed_gives_each_series_one_newer_record_per_batch():
    feed = throughput.Feed(5, throughput.etth1())
    first, second = feed.next(), feed.next()
    assert first.keys == second.keys and len(set(first.keys)) == 5
    assert (second.times > first.times).all()
    assert first.values.shape == (5, 1 + len(throughput.COVARIATES))


@pytest.mark.kafka
def test_daemon_ceiling_and_latency_through_the_broker(broker, tmp_path):
    bench = throughput.KafkaBench(broker.bootstrap, tmp_path, throughput.etth1(), torch.device("cpu"), max_records=10)
    daemon = bench.throughput(series=20, per_series=5, trials=1)
    assert daemon["records"] == 100
    assert (
        daemon["records_per_s"] > 0
        and daemon["ceiling_records_per_s"] > 0
        and daemon["confluent_ceiling_records_per_s"] > 0
    )
    rows = {(r["client"], r["forecasts_per_message"], r["crc"]): r for r in daemon["rows"]}
    assert set(rows) == {
        ("kafka-python", 1, "C (crc32c)"),
        ("kafka-python", throughput.PACKED, "C (crc32c)"),
        ("confluent-kafka", 1, "C (crc32c)"),
        ("confluent-kafka", throughput.PACKED, "C (crc32c)"),
        ("kafka-python", 1, "pure-Python"),
    }
    assert rows["confluent-kafka", 1, "C (crc32c)"]["ceiling"] == "confluent-kafka"
    assert daemon["rows"][0]["records_per_s"] == daemon["records_per_s"]  # the first row is the default daemon
    assert set(daemon["stages"]) == {*STAGES, "batch"}  # where the default daemon's loop spends its time
    latency = bench.latency(0.5, max_rate=100.0, seconds=1.0)
    assert latency["load_fraction"] == 0.5 and latency["records"] == 50
    assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert set(latency["stages"]) == {*STAGES, "batch"} and latency["records_per_batch"]["max"] >= 1
    assert latency["gc"]["collections"] >= 0


def test_a_latency_row_is_the_median_of_its_runs_with_their_range():
    stages = lambda ms: {"step": {"p50_ms": ms, "p99_ms": ms, "max_ms": ms, "share": 0.5}}  # noqa: E731
    runs = [
        {"offered_records_per_s": 10, "records": 80, "p50_ms": p50, "p99_ms": p99, "max_ms": p99 + 1,
         "stages": stages(p50), "records_per_batch": {"p50": 1.0, "p99": 2.0, "max": 3},
         "gc": {"collections": 4, "total_ms": 1.0, "p99_ms": 0.5, "max_ms": 0.5}, "method": "m"}
        for p50, p99 in ((5.0, 50.0), (7.0, 90.0), (6.0, 30.0))
    ]  # fmt: skip
    row = throughput.median_row(0.5, runs)
    assert (row["p50_ms"], row["p99_ms"], row["p99_ms_min"], row["p99_ms_max"]) == (6.0, 50.0, 30.0, 90.0)
    assert row["runs"] == 3 and row["stages"]["step"]["p50_ms"] == 6.0 and len(row["trials"]) == 3


def test_the_checkpoint_benchmark_times_every_write_of_the_same_file():
    checkpoint = benchmark("checkpoint")
    found = checkpoint.measure(200, ["before", "thread", "fork"], steps=2, repeat=1)
    assert [r["mode"] for r in found["rows"]] == ["before", "thread", "fork"]
    assert len({r["bytes"] for r in found["rows"]}) == 1 and found["rows"][0]["bytes"] > found["state_bytes"] / 2
    for row in found["rows"]:
        assert 0 < row["pause_s"] <= row["total_s"] and row["peak_extra_bytes"] >= 0
