"""StateStore: series key -> slot in one device-resident state tensor.

Each series owns a slot: a column of the recurrent state (layers, slots, width), a row of
the normaliser's moments, and host-side bookkeeping (newest time, newest value, the last
one-step forecast, when it was last seen). The store grows by doubling up to
`max_series`, then evicts the least recently seen series. Nothing else indexes these
tensors: the engine gathers and scatters through `gather` and `scatter`.

An evicted series' state goes to a `Spill` (host memory or disk) when one is given, and
comes back when the series returns, so a flood of new keys costs memory, not state.

Other per-series storage (the retraining buffer, the season's history, damping factors)
attaches as a `Part`: the store grows, resets, snapshots and restores it slot by slot
along with the state. A part is not spilled: a returning series starts its part afresh.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import repeat
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from forecaster.serving.scaling import Moments
from forecaster.serving.spill import MemorySpill, Spill

REFUSED = -1  # slot returned for a series that cannot be held (too many new series at once)
_FREE = np.iinfo(np.int64).max  # last_seen of an empty slot: never the least recently seen
_SPILL_CHUNK = 65536  # spilled series rewritten at once when their states are forgotten: bounds the memory


class Part(Protocol):
    """Per-slot storage that lives and dies with the store's slots."""

    nbytes: int

    def allocate(self, capacity: int) -> None: ...
    def grow(self, capacity: int) -> None: ...
    def reset(self, slots: np.ndarray) -> None: ...
    def snapshot(self, slots: np.ndarray) -> dict: ...
    def restore(self, slots: np.ndarray, snapshot: dict) -> None: ...


class StateStore:
    def __init__(
        self,
        *,
        layers: int,
        width: int,
        features: int,
        max_series: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        initial_capacity: int = 64,
        spill: Spill | None = None,
    ):
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, got {max_series}")
        self.layers, self.width, self.features = layers, width, features
        self.spill = spill
        self.restored = 0  # series brought back from the spill
        self.max_series = max_series
        self.device, self.dtype = torch.device(device), dtype
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._tick = 0
        self.evictions = 0
        self.parts: dict[str, Part] = {}
        self._allocate(min(initial_capacity, max_series))

    def attach(self, name: str, part: Part) -> None:
        """Keep `part` slot for slot with the state from now on."""
        part.allocate(self.capacity)
        self.parts[name] = part

    # -- lookup -----------------------------------------------------------------------

    def slots(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of `keys` (one per record), allocating new series; REFUSED when full of this batch.

        One dict lookup per record, then numpy: at a million series a batch, the lookups are
        the cost, so known series are not deduplicated (marking a slot seen twice is harmless)
        and only the records of new series are looked at again.
        """
        self._tick += 1
        slots = np.array(list(map(self._index.get, keys, repeat(REFUSED))), dtype=np.int64)
        missing = np.flatnonzero(slots == REFUSED)
        self.last_seen[slots[slots != REFUSED] if len(missing) else slots] = self._tick  # before admitting: not evicted
        if len(missing):
            new_keys = [keys[i] for i in missing.tolist()]
            self._admit(list(dict.fromkeys(new_keys)))
            slots[missing] = np.fromiter(
                map(self._index.get, new_keys, repeat(REFUSED)), dtype=np.int64, count=len(missing)
            )
        return slots

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of `keys` held now, -1 for the others; admits nothing."""
        return np.fromiter(map(self._index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def key(self, slot: int) -> str | None:
        return self._keys[slot]

    def keys_of(self, slots: np.ndarray) -> tuple[str | None, ...]:
        """The series each of `slots` holds now (None: free)."""
        return tuple(self._keys[slot] for slot in slots.tolist())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def capacity(self) -> int:
        return self.state.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held for series state: device tensors plus host bookkeeping."""
        tensors = (self.state, *self._moment_tensors())
        return (
            sum(t.element_size() * t.nelement() for t in tensors)
            + sum(a.nbytes for a in self._host_arrays())
            + sum(part.nbytes for part in self.parts.values())
        )

    @property
    def active(self) -> np.ndarray:
        """Slots that hold a series, ascending."""
        return np.flatnonzero(self.last_seen != _FREE)

    # -- gather and scatter ---------------------------------------------------------------

    def gather(self, slots: Tensor) -> tuple[Tensor, Moments]:
        """States (layers, n, width) and moments of `slots` (n,), a device tensor of distinct slots."""
        m = self.moments
        return self.state[:, slots], Moments(m.mean[slots], m.var[slots], m.count[slots])

    def scatter(self, slots: Tensor, state: Tensor, moments: Moments) -> None:
        """Write back what `gather` returned, after the step."""
        self.state[:, slots] = state
        self.moments.mean[slots] = moments.mean
        self.moments.var[slots] = moments.var
        self.moments.count[slots] = moments.count

    def set_states(self, slots: np.ndarray, state: Tensor) -> None:
        """Replace the recurrent states (layers, n, width) of `slots` (n,), keeping everything else. They count as
        touched: the changelog writes them, with the model version they were computed under, next."""
        self.state[:, torch.as_tensor(slots, device=self.device)] = state.to(self.device, self.dtype)
        self.touched[slots] = True

    # -- what each series saw last ------------------------------------------------------------

    def newest_times(self) -> np.ndarray:
        """The newest time each slot has taken (-inf for a free one), by slot: a read-only view."""
        view = self.last_time.view()
        view.flags.writeable = False
        return view

    def remembered(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The newest value and the one-step forecast made from it, for each of `slots`."""
        return self.last_value[slots], self.last_forecast[slots]

    def remember(self, slots: np.ndarray, times: np.ndarray, values: np.ndarray, forecasts: np.ndarray) -> None:
        """Keep each of `slots`' newest time and value and the one-step forecast made from them."""
        self.last_time[slots] = times
        self.last_value[slots] = values
        self.last_forecast[slots] = forecasts

    # -- ownership: series by input partition (the changelog, app.py) --------------------------

    def note(self, slots: np.ndarray, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """`slots` stepped records of input `partitions` at input `offsets` (one row per record, a slot's rows in
        offset order): each slot belongs to its partition, reflects its newest offset, and is touched."""
        self.partition[slots] = partitions
        np.maximum.at(self.reflected, slots, offsets)
        self.touched[slots] = True

    def owned(self, partitions: Collection[int]) -> np.ndarray:
        """The slots held of series of `partitions`, ascending."""
        active = self.active
        return active[np.isin(self.partition[active], list(partitions))]

    def reflected_offsets(self, keys: Sequence[str]) -> np.ndarray:
        """The input offset each key's state reflects; -1 for a key not held or never noted."""
        slots = self.lookup(keys)
        return np.where(slots >= 0, self.reflected[np.maximum(slots, 0)], -1)

    def drop(self, slots: np.ndarray) -> None:
        """Forget the series of `slots`: another member owns them now (no spill: they are in the changelog)."""
        for slot in slots.tolist():
            del self._index[self._keys[slot]]
            self._keys[slot] = None
        self._reset(slots)

    def snapshot_series(self, slots: np.ndarray) -> dict:
        """The state of `slots` as host arrays with one row per slot (changelog.py encodes it per series):
        "wide" and "exact" as `_pack` makes them, and each part's snapshot."""
        wide, exact = self._pack(slots)
        parts = {
            name: {field: np.asarray(value) for field, value in part.snapshot(slots).items()}
            for name, part in self.parts.items()
        }
        return {"wide": wide, "exact": exact, "parts": parts}

    def admit_series(self, keys: Sequence[str], snapshot: dict, partition: int, reflected: np.ndarray) -> np.ndarray:
        """Hold `keys` with the state of `snapshot` (rows in `keys` order, as `snapshot_series` made it), as series
        of input `partition` reflecting input offsets `reflected`; returns their slots."""
        slots = self.slots(keys)
        if (slots == REFUSED).any():
            raise ValueError(f"cannot hold {len(keys)} more series: max_series is {self.max_series}")
        self._unpack(slots, snapshot["wide"], snapshot["exact"])
        for name, part in self.parts.items():
            if name in snapshot["parts"]:
                part.restore(slots, {k: torch.from_numpy(np.array(v)) for k, v in snapshot["parts"][name].items()})
        self.partition[slots] = partition
        self.reflected[slots] = reflected
        self.touched[slots] = False
        return slots

    # -- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Every series' state as CPU tensors (safe for weights_only loading), compacted."""
        keys = list(self._index)
        slots = np.asarray([self._index[k] for k in keys], dtype=np.int64)
        wide, exact = self._pack(slots)
        snapshot = {
            "keys": keys,
            "wide": torch.from_numpy(wide),
            "exact": torch.from_numpy(exact),
            "parts": {name: part.snapshot(slots) for name, part in self.parts.items()},
        }
        if isinstance(self.spill, MemorySpill):
            spilled = self.spill.snapshot()
            snapshot["spilled"] = {
                "keys": spilled["keys"],
                "wide": torch.from_numpy(spilled["wide"]),
                "exact": torch.from_numpy(spilled["exact"]),
            }
        return snapshot

    def restore(self, snapshot: dict, parts: Collection[str] | None = None, states: bool = True) -> None:
        """Replace every series with those of `snapshot`, in slots 0..n-1.

        A snapshot taken under another model (learning/migration.py) comes back in part: only the
        `parts` named (None: all), and with `states` False every recurrent state starts at zero,
        spilled series' included, while their moments and bookkeeping come back as they were.
        """
        keys = list(snapshot["keys"])
        if len(keys) > self.max_series:
            raise ValueError(f"snapshot holds {len(keys)} series, more than max_series {self.max_series}")
        self._allocate(max(len(keys), min(64, self.max_series)))
        slots = np.arange(len(keys))
        wide = snapshot["wide"].numpy()
        self._unpack(slots, wide if states else self._stateless(wide), snapshot["exact"].numpy())
        self.last_seen[slots] = self._tick
        self._index = {k: i for i, k in enumerate(keys)}
        self._keys[: len(keys)] = keys
        for name, part in self.parts.items():
            part.allocate(self.capacity)
            if name in snapshot.get("parts", {}) and (parts is None or name in parts):
                part.restore(slots, snapshot["parts"][name])
        if isinstance(self.spill, MemorySpill) and "spilled" in snapshot:
            spilled = snapshot["spilled"]
            wide = spilled["wide"].numpy()
            self.spill.restore(
                {
                    "keys": spilled["keys"],
                    "wide": wide if states else self._stateless(wide),
                    "exact": spilled["exact"].numpy(),
                }
            )
        elif self.spill is not None and not states:  # a disk spill: its rows live outside the snapshot
            self._forget_spilled_states()

    def _stateless(self, wide: np.ndarray) -> np.ndarray:
        """Rows packed under any model as this store packs them, the recurrent state zero: whatever the state's
        size, the moments and count are a row's last columns."""
        kept = wide[:, wide.shape[1] - (2 * self.features + 1) :]
        return np.concatenate([np.zeros((len(wide), self.layers * self.width), wide.dtype), kept], axis=1)

    def _forget_spilled_states(self) -> None:
        """Zero the recurrent state of every spilled series in the spill itself, a chunk of series at a time."""
        keys = self.spill.keys()
        for start in range(0, len(keys), _SPILL_CHUNK):
            found, wide, exact = self.spill.take(keys[start : start + _SPILL_CHUNK])
            self.spill.put(found, self._stateless(wide), exact)

    def _pack(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Series rows as (n, wide) float32 and (n, 3) float64 host arrays."""
        device_slots = torch.as_tensor(slots, device=self.device)
        m = self.moments
        wide = torch.cat(
            [
                self.state[:, device_slots].transpose(0, 1).reshape(len(slots), self.layers * self.width),
                m.mean[device_slots],
                m.var[device_slots],
                m.count[device_slots, None],
            ],
            dim=1,
        )
        exact = np.stack([self.last_time[slots], self.last_value[slots], self.last_forecast[slots]], axis=1)
        return wide.float().cpu().numpy(), exact

    def _unpack(self, slots: np.ndarray, wide: np.ndarray, exact: np.ndarray) -> None:
        """Write rows made by `_pack` into `slots`."""
        device_slots = torch.as_tensor(slots, device=self.device)
        wide = torch.as_tensor(wide, device=self.device, dtype=self.dtype)
        n, state_size, f = len(slots), self.layers * self.width, self.features
        self.state[:, device_slots] = wide[:, :state_size].reshape(n, self.layers, self.width).transpose(0, 1)
        self.moments.mean[device_slots] = wide[:, state_size : state_size + f]
        self.moments.var[device_slots] = wide[:, state_size + f : state_size + 2 * f]
        self.moments.count[device_slots] = wide[:, state_size + 2 * f]
        self.last_time[slots], self.last_value[slots], self.last_forecast[slots] = exact.T

    # -- internals ------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        """Fresh, empty storage for `capacity` series."""
        self.state = torch.zeros(self.layers, capacity, self.width, device=self.device, dtype=self.dtype)
        self.moments = Moments.zeros(capacity, self.features, device=self.device, dtype=self.dtype)
        self.last_time = np.full(capacity, -np.inf)
        self.last_value = np.full(capacity, np.nan)
        self.last_forecast = np.full(capacity, np.nan)
        self.last_seen = np.full(capacity, _FREE, dtype=np.int64)
        self.partition = np.zeros(capacity, np.int64)  # the input partition each series' records come from
        self.reflected = np.full(capacity, -1, np.int64)  # the newest input offset each series has stepped
        self.touched = np.zeros(capacity, bool)  # stepped since the changelog last took it
        self._index, self._keys = {}, [None] * capacity

    def _admit(self, keys: list[str]) -> None:
        """Give each new key a free slot, growing, then evicting the least recently seen."""
        free = np.flatnonzero(self.last_seen == _FREE).tolist()
        if len(free) < len(keys) and self.capacity < self.max_series:
            old = self.capacity
            self._grow(min(self.max_series, max(2 * old, len(self) + len(keys))))
            free += range(old, self.capacity)
        if len(free) < len(keys):
            free += self._evict(len(keys) - len(free))
        admitted = list(zip(keys, free))
        for key, slot in admitted:
            self._index[key] = slot
            self._keys[slot] = key
            self.last_seen[slot] = self._tick
        if self.spill is not None and admitted:
            self._bring_back([key for key, _ in admitted])

    def _bring_back(self, keys: list[str]) -> None:
        """Restore the state of returning series from the spill."""
        found, wide, exact = self.spill.take(keys)
        if found:
            self._unpack(np.asarray([self._index[k] for k in found]), wide, exact)
            self.restored += len(found)

    def _grow(self, capacity: int) -> None:
        """Reallocate for `capacity` series, keeping every series where it is."""
        old = self.capacity
        state, moments, host, index, keys = self.state, self.moments, self._host_arrays(), self._index, self._keys
        self._allocate(capacity)
        self.state[:, :old] = state
        for mine, previous in zip(self._moment_tensors(), (moments.mean, moments.var, moments.count)):
            mine[:old] = previous
        for mine, previous in zip(self._host_arrays(), host):
            mine[:old] = previous
        self._index, self._keys = index, keys + [None] * (capacity - old)
        for part in self.parts.values():
            part.grow(capacity)

    def _moment_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.moments.mean, self.moments.var, self.moments.count

    def _host_arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.last_time,
            self.last_value,
            self.last_forecast,
            self.last_seen,
            self.partition,
            self.reflected,
            self.touched,
        )

    def _evict(self, needed: int) -> list[int]:
        """Free up to `needed` slots of series not seen in the current batch, least recently seen first."""
        candidates = np.flatnonzero(self.last_seen < self._tick)
        if len(candidates) > needed:
            oldest = np.argpartition(self.last_seen[candidates], needed - 1)[:needed]
            candidates = candidates[oldest]
        if self.spill is not None and len(candidates):
            self.spill.put([self._keys[slot] for slot in candidates], *self._pack(candidates))
        for slot in candidates:
            del self._index[self._keys[slot]]
            self._keys[slot] = None
        self._reset(candidates)
        self.evictions += len(candidates)
        return candidates.tolist()

    def _reset(self, slots: np.ndarray) -> None:
        device_slots = torch.as_tensor(slots, device=self.device)
        self.state[:, device_slots] = 0
        self.moments.mean[device_slots] = 0
        self.moments.var[device_slots] = 0
        self.moments.count[device_slots] = 0
        self.last_time[slots] = -np.inf
        self.last_value[slots] = np.nan
        self.last_forecast[slots] = np.nan
        self.last_seen[slots] = _FREE
        self.partition[slots], self.reflected[slots], self.touched[slots] = 0, -1, False
        for part in self.parts.values():
            part.reset(slots)
