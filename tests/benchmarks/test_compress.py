"""benchmarks/compress.py scores on validation parts only and times every size (tiny sizes; no timings asserted)."""

from support import benchmark

compress = benchmark("compress")
accuracy = benchmark("accuracy")


def test_the_networks_are_scored_before_the_test_part_never_in_it():
    bench = compress.Bench("greensboro_temp", quick=True)
    whole = accuracy.load_stream("greensboro_temp")
    _, first_test_row = accuracy.split(accuracy.PROTOCOLS["greensboro_temp"], len(whole))
    assert bench.protocol.name == "greensboro_temp_validation"
    assert len(bench.stream) <= first_test_row  # the validation stream ends where the test part begins
    assert bench.at.max() + bench.protocol.horizon < first_test_row
    training_rows = accuracy.split(bench.protocol, len(bench.stream))[0]
    assert sum(len(s) for s in bench.series) == training_rows and bench.at.min() >= training_rows - 1


def test_the_speed_section_times_every_size_and_the_zeroed_teacher(monkeypatch):
    monkeypatch.setattr(compress, "SPEED_SERIES", 50)
    monkeypatch.setattr(compress, "SCRATCH", ((2, 8), (1, 4)))
    monkeypatch.setattr(compress, "TEACHER", (2, 8))
    monkeypatch.setattr(compress, "ZEROED", (0.5,))
    rows = compress.speed_section(quick=True)
    assert [(r["layers"], r["hidden"], r["zeroed"]) for r in rows] == [(2, 8, 0.0), (1, 4, 0.0), (2, 8, 0.5)]
    assert all(r["steps_per_cpu_s"] > 0 and r["n_series"] == 50 for r in rows)
    assert rows[0]["parameters"] == rows[2]["parameters"] > rows[1]["parameters"]


def test_zeroing_leaves_that_share_of_each_weight_matrix_at_zero():
    engine = compress.speed_engine(10, 2, 16, zeroed=0.5)
    for weight in engine.model.parameters():
        if weight.dim() == 2:
            assert abs((weight == 0).float().mean().item() - 0.5) < 0.05
