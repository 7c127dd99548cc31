"""benchmarks/attention.py: each K timed with the state it carries, and accuracy runs read back by K."""

import json

from support import benchmark

attention = benchmark("attention")


def test_the_speed_section_times_no_attention_and_each_k_with_its_state(monkeypatch):
    monkeypatch.setattr(attention, "SPEED_SERIES", 50)
    monkeypatch.setattr(attention, "SPEED_K", (2, 5))
    rows = attention.speed_section()
    assert [r["attention"] for r in rows] == [0, 2, 5]
    assert all(r["steps_per_cpu_s"] > 0 and r["n_series"] == 50 for r in rows)
    # a 2 x 64 GRU: 2 x 64 floats of cell state, then K x 64 floats of past outputs
    assert [r["state_bytes_per_series"] for r in rows] == [4 * 128, 4 * (128 + 2 * 64), 4 * (128 + 5 * 64)]


def test_an_accuracy_run_left_in_the_runs_folder_is_read_and_marked_with_its_k(tmp_path):
    rows = [
        {"dataset": "taylor_validation", "method": "persistence", "horizon": 1, "mape": 1.0},
        {"dataset": "taylor_validation", "method": "forecaster", "horizon": 1, "mape": 0.5},
    ]
    (tmp_path / "taylor_k16.json").write_text(json.dumps(rows))
    assert attention.accuracy_run("taylor", 16, tmp_path) == [{**rows[1], "attention": 16}]
