"""StateStore: series keys to slots of one device tensor; growth, eviction, snapshot and restore."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.io.checkpoint import load_latest_checkpoint, save_checkpoint
from forecaster.serving.scaling import Moments
from forecaster.serving.spill import DiskSpill, MemorySpill
from forecaster.serving.state import REFUSED, StateStore


def store(device="cpu", max_series=100, initial_capacity=2, layers=2, width=3, features=2):
    return StateStore(
        layers=layers,
        width=width,
        features=features,
        max_series=max_series,
        device=device,
        initial_capacity=initial_capacity,
    )


def write(s: StateStore, keys, value):
    """Give each key's slot a recognisable state and moments."""
    slots = torch.as_tensor(s.slots(keys), device=s.device)
    state, moments = s.gather(slots)
    s.scatter(
        slots, torch.full_like(state, value), Moments(moments.mean + value, moments.var + value, moments.count + 1)
    )


def read(s: StateStore, key):
    slot = torch.as_tensor(s.slots([key]), device=s.device)
    state, moments = s.gather(slot)
    return state.cpu(), moments.mean.cpu()


def test_a_new_series_gets_a_slot_on_first_sight_and_keeps_it(device):
    s = store(device)
    first = s.slots(["a", "b", "a"])
    assert first[0] == first[2] != first[1]
    assert s.slots(["b"])[0] == first[1]
    assert len(s) == 2 and "a" in s and "c" not in s


def test_new_series_start_from_zero_state(device):
    s = store(device)
    state, mean = read(s, "fresh")
    assert torch.count_nonzero(state) == 0 and torch.count_nonzero(mean) == 0


def test_capacity_grows_and_keeps_every_series_state(device):
    s = store(device, initial_capacity=2)
    write(s, ["a", "b"], 7.0)
    s.slots([f"k{i}" for i in range(10)])
    assert s.capacity >= 12
    state, mean = read(s, "a")
    assert torch.all(state == 7.0) and torch.all(mean == 7.0)


def test_growth_stops_at_max_series_and_evicts_the_least_recently_seen(device):
    s = store(device, max_series=3, initial_capacity=1)
    write(s, ["old"], 1.0)
    write(s, ["mid"], 2.0)
    write(s, ["new"], 3.0)
    s.slots(["old"])  # "old" is seen again: "mid" is now the least recent
    s.slots(["newest"])
    assert s.capacity == 3 and len(s) == 3
    assert "mid" not in s and {"old", "new", "newest"} <= {s.key(i) for i in range(3)}
    assert s.evictions == 1
    state, _ = read(s, "newest")
    assert torch.count_nonzero(state) == 0  # the evicted series' state did not leak into the new one


def test_an_evicted_series_that_returns_starts_fresh(device):
    s = store(device, max_series=1)
    write(s, ["a"], 5.0)
    s.slots(["b"])
    state, _ = read(s, "a")
    assert torch.count_nonzero(state) == 0


def test_series_of_the_current_batch_are_never_evicted_for_each_other(device):
    s = store(device, max_series=2)
    slots = s.slots(["a", "b", "c"])
    assert list(slots[:2]) != [REFUSED, REFUSED] and slots[2] == REFUSED
    assert len(s) == 2


def test_snapshot_then_restore_round_trips_exactly(device):
    s = store(device)
    write(s, ["a", "b", "c"], 1.5)
    write(s, ["b"], 2.0)
    s.last_time[s.slots(["b"])] = 123.0
    s.last_value[s.slots(["b"])] = 9.5
    snapshot = s.snapshot()
    other = store(device)
    other.restore(snapshot)
    for key in ("a", "b", "c"):
        assert torch.equal(read(other, key)[0], read(s, key)[0])
        assert torch.equal(read(other, key)[1], read(s, key)[1])
    b = other.slots(["b"])[0]
    assert other.last_time[b] == 123.0 and other.last_value[b] == 9.5
    assert sorted(other.snapshot()["keys"]) == ["a", "b", "c"]


def test_a_store_without_series_snapshots_and_restores_empty(device):
    """A checkpoint can come before any series is admitted (every record so far dead-lettered)."""
    other = store(device)
    other.restore(store(device).snapshot())
    assert len(other) == 0 and other.snapshot()["keys"] == []


def test_restored_series_keep_their_slots_when_new_series_arrive(device):
    s = store(device)
    write(s, ["a", "b"], 3.0)
    other = store(device)
    other.restore(s.snapshot())
    other.slots([f"new{i}" for i in range(50)])  # within max_series: nothing is evicted
    assert torch.all(read(other, "a")[0] == 3.0) and torch.all(read(other, "b")[0] == 3.0)


def test_restore_refuses_more_series_than_max_series():
    s = store(max_series=10)
    s.slots([str(i) for i in range(5)])
    with pytest.raises(ValueError, match="more than max_series 2"):
        store(max_series=2).restore(s.snapshot())


def test_memory_is_the_tensor_bytes_plus_bookkeeping():
    s = store(initial_capacity=4, layers=2, width=3, features=2)
    # fp32 state, mean, var, count; six 8-byte host arrays and a touched flag
    per_slot = 4 * (2 * 3 + 2 + 2 + 1) + 8 * 6 + 1
    assert s.nbytes == 4 * per_slot


# --- spill: evicted series come back exactly ----------------------------------------------------------


LAYERS, WIDTH, FEATURES = 2, 3, 2
WIDE = LAYERS * WIDTH + 2 * FEATURES + 1  # a spilled row: state, mean, var, count


def make_spill(kind: str, tmp_path):
    return {"memory": lambda: MemorySpill(WIDE, 3), "disk": lambda: DiskSpill(tmp_path / "spill.sqlite", WIDE, 3)}[
        kind
    ]()


def make_store(spill, device="cpu", max_series=2) -> StateStore:
    return StateStore(
        layers=LAYERS,
        width=WIDTH,
        features=FEATURES,
        max_series=max_series,
        device=device,
        initial_capacity=1,
        spill=spill,
    )


def fill(store: StateStore, key: str, seed: int) -> None:
    """Give `key` a distinctive state: random tensors, moments and host values."""
    slot = torch.as_tensor(store.slots([key]), device=store.device)
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(LAYERS, 1, WIDTH, generator=g)
    moments = Moments(
        torch.randn(1, FEATURES, generator=g), torch.rand(1, FEATURES, generator=g), torch.tensor([seed + 3.0])
    )
    store.scatter(slot, state.to(store.device), Moments(*(t.to(store.device) for t in dataclasses.astuple(moments))))
    s = int(slot)
    store.last_time[s], store.last_value[s], store.last_forecast[s] = 1.7e9 + seed, np.pi * seed, -np.e * seed


def state_of(store: StateStore, key: str) -> dict:
    """Everything the store holds for `key` (admitting it if absent, as a returning record would)."""
    slot = store.slots([key])
    state, moments = store.gather(torch.as_tensor(slot, device=store.device))
    s = int(slot[0])
    return {
        "state": state.cpu(),
        "mean": moments.mean.cpu(),
        "var": moments.var.cpu(),
        "count": moments.count.cpu(),
        "host": (store.last_time[s], store.last_value[s], store.last_forecast[s]),
    }


def assert_state_equal(got: dict, expected: dict) -> None:
    for name in ("state", "mean", "var", "count"):
        assert torch.equal(got[name], expected[name]), name
    np.testing.assert_array_equal(got["host"], expected["host"])


def evict_a_and_b(store: StateStore) -> tuple[dict, dict]:
    fill(store, "a", seed=1)
    fill(store, "b", seed=2)
    a, b = state_of(store, "a"), state_of(store, "b")
    store.slots(["c"])
    store.slots(["d"])
    assert "a" not in store and "b" not in store and store.evictions == 2
    return a, b


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_an_evicted_series_that_returns_gets_back_exactly_its_state(tmp_path, device, kind):
    store = make_store(make_spill(kind, tmp_path), device)
    a, b = evict_a_and_b(store)
    assert_state_equal(state_of(store, "a"), a)
    assert_state_equal(state_of(store, "b"), b)
    assert store.restored == 2


def test_without_a_spill_a_returning_series_starts_fresh(device):
    store = make_store(None, device)
    evict_a_and_b(store)
    got = state_of(store, "a")
    assert all(torch.count_nonzero(got[name]) == 0 for name in ("state", "mean", "var", "count"))
    assert got["host"][0] == -np.inf and np.isnan(got["host"][1:]).all()
    assert store.restored == 0


def test_the_memory_spill_travels_in_the_snapshot_through_a_checkpoint(tmp_path, device):
    store = make_store(MemorySpill(WIDE, 3), device)
    a, b = evict_a_and_b(store)
    save_checkpoint(tmp_path, {"store": store.snapshot()})  # weights_only loading must accept the spilled rows
    snapshot, _ = load_latest_checkpoint(tmp_path)
    assert sorted(snapshot["store"]["spilled"]["keys"]) == ["a", "b"]
    restored = make_store(MemorySpill(WIDE, 3), device)
    restored.restore(snapshot["store"])
    assert_state_equal(state_of(restored, "b"), b)
    assert_state_equal(state_of(restored, "a"), a)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_snapshot_of_another_model_comes_back_with_its_moments_and_zero_states(tmp_path, device, kind):
    # A store of the old model, with series held and series spilled; then one of another state width
    # restores it without states (a migration, learning/migration.py).
    old = make_store(make_spill(kind, tmp_path), device)
    a, b = evict_a_and_b(old)  # "a" and "b" spilled, "c" and "d" held
    fill(old, "c", seed=3)
    c = state_of(old, "c")
    snapshot = old.snapshot()
    wider = 5
    spill = {
        "memory": lambda: MemorySpill(LAYERS * wider + 2 * FEATURES + 1, 3),
        "disk": lambda: DiskSpill(tmp_path / "spill.sqlite", LAYERS * wider + 2 * FEATURES + 1, 3),
    }[kind]()
    new = StateStore(layers=LAYERS, width=wider, features=FEATURES, max_series=2, device=device, spill=spill)

    new.restore(snapshot, states=False)

    for key, before in (("c", c), ("a", a), ("b", b)):  # held, then back from the spill
        got = state_of(new, key)
        assert torch.count_nonzero(got["state"]) == 0 and got["state"].shape == (LAYERS, 1, wider)
        for name in ("mean", "var", "count"):
            assert torch.equal(got[name], before[name]), (key, name)
        np.testing.assert_array_equal(got["host"], before["host"])


def test_a_restore_can_leave_parts_out_to_start_afresh():
    from forecaster.serving.damping import Damping

    old = store()
    old.attach("damping", Damping())
    old.attach("other", Damping())
    slots = old.slots(["a"])
    old.parts["damping"].set(slots, torch.tensor([0.5]))
    old.parts["other"].set(slots, torch.tensor([0.25]))
    new = store()
    new.attach("damping", Damping())
    new.attach("other", Damping())

    new.restore(old.snapshot(), parts=("other",))

    assert new.parts["damping"].factors[new.slots(["a"])].tolist() == [1.0]
    assert new.parts["other"].factors[new.slots(["a"])].tolist() == [0.25]
