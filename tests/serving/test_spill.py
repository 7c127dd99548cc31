"""Spilled state: an evicted series' state waits in host memory or a SQLite file and comes back exactly.

The StateStore's side (evict into a spill, bring back, snapshot) is in test_state.py.
"""

import dataclasses
import stat

import numpy as np
import pytest

from forecaster import build
from forecaster.build import seeded_model
from forecaster.serving.engine import Engine
from forecaster.serving.spill import DiskSpill, MemorySpill

from support import make_pipeline, observations

LAYERS, WIDTH, FEATURES = 2, 3, 2
WIDE = LAYERS * WIDTH + 2 * FEATURES + 1  # state, mean, var, count


def rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, WIDE)).astype(np.float32), rng.standard_normal((n, 3))


def make_spill(kind: str, tmp_path):
    return {
        "memory": lambda: MemorySpill(WIDE, 3),
        "disk": lambda: DiskSpill(tmp_path / "spill.sqlite", WIDE, 3),
        "none": lambda: None,
    }[kind]()


# --- the spills on their own ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_take_returns_exactly_the_rows_put_for_the_keys_asked(tmp_path, kind):
    spill = make_spill(kind, tmp_path)
    wide, exact = rows(4)
    spill.put(["a", "b", "c", "d"], wide, exact)
    found, got_wide, got_exact = spill.take(["d", "x", "b"])  # "x" was never spilled
    assert sorted(found) == ["b", "d"]
    for key, w, e in zip(found, got_wide, got_exact):
        i = "abcd".index(key)
        assert w.dtype == np.float32 and e.dtype == np.float64
        np.testing.assert_array_equal(w, wide[i])
        np.testing.assert_array_equal(e, exact[i])


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_putting_a_key_again_replaces_its_row(tmp_path, kind):
    spill = make_spill(kind, tmp_path)
    first, second = rows(1, seed=1), rows(1, seed=2)
    spill.put(["a"], *first)
    spill.put(["a"], *second)
    found, wide, exact = spill.take(["a"])
    assert found == ["a"]
    np.testing.assert_array_equal(wide, second[0])
    np.testing.assert_array_equal(exact, second[1])


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_taking_nothing_that_was_spilled_gives_empty_rows_of_the_right_width(tmp_path, kind):
    found, wide, exact = make_spill(kind, tmp_path).take(["nobody"])
    assert found == [] and wide.shape == (0, WIDE) and exact.shape == (0, 3)


def test_memory_spill_forgets_what_was_taken_and_reuses_its_rows():
    spill = MemorySpill(WIDE, 3)
    wide, exact = rows(3000)  # past the first allocation of 1024 rows: growth keeps every row
    keys = [f"k{i}" for i in range(3000)]
    spill.put(keys, wide, exact)
    assert len(spill) == 3000
    found, got, _ = spill.take(keys[::7])
    np.testing.assert_array_equal(got, wide[::7])
    assert len(spill) == 3000 - len(found) and spill.take(keys[:1])[0] == []
    size = spill.nbytes
    spill.put(found, wide[::7], exact[::7])  # rows freed by take are reused: no growth
    assert spill.nbytes == size and len(spill) == 3000


def test_disk_spill_keeps_rows_on_disk_across_a_restart(tmp_path):
    wide, exact = rows(2)
    spill = DiskSpill(tmp_path / "spill.sqlite", WIDE, 3)
    spill.put(["a", "b"], wide, exact)
    spill.take(["a"])  # a returning series keeps its row until evicted again (a crash must not lose it)
    assert len(spill) == 2
    spill.close()
    reopened = DiskSpill(tmp_path / "spill.sqlite", WIDE, 3)
    found, got_wide, got_exact = reopened.take(["a", "b"])
    assert sorted(found) == ["a", "b"]
    order = [found.index("a"), found.index("b")]
    np.testing.assert_array_equal(got_wide[order], wide)
    np.testing.assert_array_equal(got_exact[order], exact)


def test_disk_spill_files_are_owner_only(tmp_path):
    folder = tmp_path / "state" / "pipeline"
    spill = DiskSpill(folder / "spill.sqlite", WIDE, 3)
    spill.put(["a"], *rows(1))
    written = sorted(folder.iterdir())
    assert [p.name for p in written] == ["spill.sqlite", "spill.sqlite-shm", "spill.sqlite-wal"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# --- the engine under a flood of new keys ------------------------------------------------------------


HOUR = 3600.0


def forecasts_of_a(engine: Engine, hours: range) -> np.ndarray:
    times = [1.7e9 + HOUR * h for h in hours]
    forecasts, rejected = engine.step(
        observations(["a"] * len(times), times, [10.0 + np.sin(h) for h in hours]), now=0.0
    )
    assert rejected == []
    return forecasts.values


def run(spill: str, flood: bool, device, tmp_path) -> tuple[np.ndarray, Engine]:
    """Series "a" before and after an optional flood of 10 x max_series new keys."""
    max_series = 8
    pipeline = dataclasses.replace(make_pipeline(max_series=max_series), spill=spill)
    engine = build.engine(
        pipeline, seeded_model(pipeline), device, spill_path=tmp_path / f"{spill}-{flood}" / "spill.sqlite"
    )
    before = forecasts_of_a(engine, range(0, 6))
    if flood:
        for batch in range(10):
            keys = [f"flood-{batch}-{i}" for i in range(max_series)]
            forecasts, rejected = engine.step(
                observations(keys, [1.7e9 + 5 * HOUR] * max_series, np.linspace(-1e6, 1e6, max_series)), now=0.0
            )
            assert rejected == [] and len(forecasts) == max_series
        # the first batch fills the 7 free slots and evicts "a"; each later one evicts the batch before it
        assert "a" not in engine.store and engine.store.evictions == 1 + 9 * max_series
    return np.concatenate([before, forecasts_of_a(engine, range(6, 12))]), engine


@pytest.mark.parametrize("spill", ["memory", "disk"])
def test_a_flood_of_new_keys_leaves_an_existing_series_forecasts_unchanged(tmp_path, device, spill):
    undisturbed, _ = run(spill, flood=False, device=device, tmp_path=tmp_path)
    flooded, engine = run(spill, flood=True, device=device, tmp_path=tmp_path)
    np.testing.assert_array_equal(flooded, undisturbed)
    assert engine.store.restored >= 1 and len(engine.store) == 8


def test_without_a_spill_the_flood_costs_an_existing_series_its_state(tmp_path, device):
    undisturbed, _ = run("none", flood=False, device=device, tmp_path=tmp_path)
    flooded, _ = run("none", flood=True, device=device, tmp_path=tmp_path)
    np.testing.assert_array_equal(flooded[:6], undisturbed[:6])
    assert not np.allclose(flooded[6:], undisturbed[6:])  # what the spill tests above would see if restoring failed
