"""Progress shown on long work: a bar redrawn in place on a terminal, occasional lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(done)` as work advances; `close()` prints the final line."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None, every_s: float = 0.2):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr  # looked up now, not at import: tests and callers may replace it
        self.interactive = self.stream.isatty()
        self.every_s = every_s if self.interactive else 10.0
        self.started = time.monotonic()
        self._shown_at = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._shown_at >= self.every_s:
            self._shown_at = now
            self._show(end="\r" if self.interactive else "\n")

    def close(self) -> None:
        self._show(end="\n")

    def _show(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} ({rate:,.0f}/s, {elapsed:.0f} s)"
        else:
            text = f"{self.label} {self.done} ({rate:,.0f}/s, {elapsed:.0f} s)"
        self.stream.write(text.ljust(79) + end)
        self.stream.flush()
