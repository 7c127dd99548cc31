"""Where an evicted series' state waits until the series returns: host memory or a SQLite file.

A spilled series is two packed rows: float32 (recurrent state and normaliser moments) and
float64 (newest time, newest value, last one-step forecast). The StateStore packs and
unpacks them; a spill only keeps rows by key.

The memory spill holds at most a byte budget: beyond it the series spilled longest ago are
dropped (counted in `dropped`), so a flood of distinct keys costs bounded memory; a dropped
series that returns starts afresh, as it would with no spill.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

# What a spilled key costs the memory spill beside its rows, as measured with a million keys of 14 characters: the
# str (62 B), its row number (32 B), its share of the index's table under churn and of the allocator's slack
_KEY_BYTES = 256


class Spill(Protocol):
    dropped: int  # series forgotten to keep within a budget, ever

    def put(self, keys: Sequence[str], wide: np.ndarray, exact: np.ndarray) -> None: ...
    def take(self, keys: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def keys(self) -> list[str]: ...
    def __len__(self) -> int: ...


class MemorySpill:
    """Rows in two growing arrays and a key index (in spilling order): about row bytes + 256 bytes per series.

    With `max_bytes`, at most `max_bytes // (row bytes + 256)` series are held: the arrays never grow
    past that, and putting more drops the series spilled longest ago.
    """

    def __init__(self, wide_width: int, exact_width: int, max_bytes: int | None = None):
        self._index: dict[str, int] = {}  # insertion order is spilling order: the oldest first
        self._free: list[int] = []
        self._wide = np.zeros((0, wide_width), np.float32)
        self._exact = np.zeros((0, exact_width), np.float64)
        # what the budget counts a series at: its two rows and its key's entry in the index
        self.nbytes_per_series = self._wide.itemsize * wide_width + self._exact.itemsize * exact_width + _KEY_BYTES
        self.max_series = None if max_bytes is None else max_bytes // self.nbytes_per_series
        self.dropped = 0

    def put(self, keys: Sequence[str], wide: np.ndarray, exact: np.ndarray) -> None:
        """Keep the rows of `keys` (distinct), as the newest spilled; beyond the budget, drop the oldest."""
        self._release([k for k in keys if k in self._index])  # a key put again counts as newly spilled
        if self.max_series is not None:
            beyond = len(keys) - self.max_series
            if beyond > 0:  # more than the budget at once: the first of them are the oldest
                keys, wide, exact = keys[beyond:], wide[beyond:], exact[beyond:]
                self.dropped += beyond
            self._drop_oldest(len(self._index) + len(keys) - self.max_series)
        rows = [self._row(key) for key in keys]
        self._wide[rows] = wide
        self._exact[rows] = exact

    def take(self, keys: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Remove and return the rows of those `keys` that were spilled."""
        found = [k for k in keys if k in self._index]
        rows = self._release(found)
        return found, self._wide[rows].copy(), self._exact[rows].copy()

    def keys(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return self._wide.nbytes + self._exact.nbytes

    def snapshot(self) -> dict:
        keys = list(self._index)
        rows = [self._index[k] for k in keys]
        return {"keys": keys, "wide": self._wide[rows].copy(), "exact": self._exact[rows].copy()}

    def restore(self, snapshot: dict) -> None:
        self._index, self._free = {}, []
        self._wide = self._wide[:0]
        self._exact = self._exact[:0]
        if snapshot["keys"]:
            self.put(snapshot["keys"], np.asarray(snapshot["wide"]), np.asarray(snapshot["exact"]))

    def _release(self, keys: Sequence[str]) -> list[int]:
        """Forget `keys` (all held); their rows, now free."""
        rows = [self._index.pop(k) for k in keys]
        self._free.extend(rows)
        return rows

    def _drop_oldest(self, n: int) -> None:
        """Forget the `n` series spilled longest ago (one pass from the front of the index)."""
        if n > 0:
            self._release(list(itertools.islice(self._index, n)))
            self.dropped += n

    def _row(self, key: str) -> int:
        if not self._free:
            grown = max(1024, 2 * len(self._wide))
            if self.max_series is not None:
                grown = min(grown, self.max_series)
            self._free = list(range(len(self._wide), grown))[::-1]
            self._wide, self._exact = _grown(self._wide, grown), _grown(self._exact, grown)
        self._index[key] = row = self._free.pop()
        return row


def _grown(rows: np.ndarray, n: int) -> np.ndarray:
    """`rows` in a new array of `n` rows (np.resize would keep a larger array of repeated copies behind its view)."""
    grown = np.zeros((n, rows.shape[1]), rows.dtype)
    grown[: len(rows)] = rows
    return grown


class DiskSpill:
    """Rows in a SQLite file: memory stays bounded however many series come and go.

    `take` leaves rows in place (a returning series' row is overwritten when it is evicted
    again): deleting them would lose the state if the process died before the next
    checkpoint, which still counts the series as spilled.
    """

    dropped = 0  # the file holds every spilled series: memory is bounded, the disk is not

    def __init__(self, path: str | Path, wide_width: int, exact_width: int):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Spilled state is as private as a checkpoint: owner-only, and SQLite gives its -wal and -shm files
        # the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS spill (key TEXT PRIMARY KEY, wide BLOB, exact BLOB)")
        self._widths = (wide_width, exact_width)

    def put(self, keys: Sequence[str], wide: np.ndarray, exact: np.ndarray) -> None:
        rows = [
            (k, w.astype(np.float32).tobytes(), e.astype(np.float64).tobytes()) for k, w, e in zip(keys, wide, exact)
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO spill VALUES (?, ?, ?)", rows)

    def take(self, keys: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        found, wide, exact = [], [], []
        for start in range(0, len(keys), 500):  # SQLite limits the parameters of one statement
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, w, e in self._db.execute(f"SELECT key, wide, exact FROM spill WHERE key IN ({marks})", chunk):
                found.append(key)
                wide.append(np.frombuffer(w, np.float32))
                exact.append(np.frombuffer(e, np.float64))
        shape = lambda rows, width, dtype: np.stack(rows) if rows else np.zeros((0, width), dtype)
        return found, shape(wide, self._widths[0], np.float32), shape(exact, self._widths[1], np.float64)

    def keys(self) -> list[str]:
        return [key for (key,) in self._db.execute("SELECT key FROM spill")]

    def __len__(self) -> int:
        """Rows on disk (series that returned keep their row until evicted again)."""
        return self._db.execute("SELECT COUNT(*) FROM spill").fetchone()[0]

    def close(self) -> None:
        self._db.close()
