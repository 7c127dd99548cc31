"""benchmarks/warm_start.py cuts its parts by time, chooses on validation runs and scores test runs (a quick run;
no timings asserted)."""

import json

import numpy as np

from forecaster.io import datasets

from support import benchmark

warm_start = benchmark("warm_start")


def test_the_parts_follow_each_other_in_time_and_cover_every_row():
    dataset = datasets.load("etth1")
    parts = warm_start.parts(warm_start.pipeline(dataset), dataset)

    train, validation, test = parts["train"], parts["validation"], parts["test"]
    assert train.times.max() < validation.times.min() and validation.times.max() < test.times.min()
    assert len(train) + len(validation) + len(test) == len(dataset.records)
    hours = len(dataset.records) // 7  # ETT: 7 channels an hour
    assert len(np.unique(train.times)) == int(warm_start.PARTS[0] * hours)


def test_a_quick_run_writes_a_row_of_every_way_to_a_state(tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "WIDTHS", (8,))
    out = tmp_path / "warm_start.json"

    assert warm_start.main(["--quick", "--datasets", "etth1", "--out", str(out)]) == 0

    (row,) = json.loads(out.read_text())
    assert row["dataset"] == "etth1" and row["history"] == warm_start.HISTORIES[0] and row["width"] == 8
    assert all(row[f"{how}_mae"] > 0 for how in ("persistence", "zero", "stepped", "encoder"))
    assert row["encoder_over_stepped"] == round(row["encoder_mae"] / row["stepped_mae"], 4)
