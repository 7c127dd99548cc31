"""The real public datasets shipped in data/, as streams of JSON-ready records.

Each loader turns one CSV into the records the replay tool publishes to Kafka,
in stream (time) order. Loading is pure: files in, records out, nothing
downloaded. The provenance of every file is in data/README.md.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

NAMES = ("msft", "taylor", "greensboro", "etth1", "etth2")
ENV_VAR = "FORECASTER_DATA_DIR"

_ETT_CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
_TMY_FIELDS = {  # record field -> CSV column; the first is the target
    "drybulb_c": "drybulb_C",
    "dewpoint_c": "dewpoint_C",
    "rel_humidity_pct": "rel_humidity_pct",
    "pressure_mbar": "pressure_mbar",
    "wind_speed_ms": "wind_speed_ms",
    "ghi_wm2": "ghi_Wm2",
}
# TMY3 rows are hour-ending local standard time; the first ends at 01:00.
_TMY_START = datetime(2001, 1, 1, 1, tzinfo=timezone(timedelta(hours=-5)))


@dataclass(frozen=True)
class Dataset:
    """One dataset as a stream. Treat `records` as read-only: it is cached."""

    name: str
    description: str
    cadence: str  # "1b" business day, "30m", "1h"
    key_field: str
    time_field: str
    target_field: str
    covariate_fields: tuple[str, ...]
    records: tuple[dict, ...]


def data_dir() -> Path:
    """The data folder: $FORECASTER_DATA_DIR, else data/ beside the package."""
    env = os.environ.get(ENV_VAR)
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; set {ENV_VAR} to the folder holding msft/, taylor/, tmy3/ and ett/"
        )
    return root


_default_data_dir = data_dir  # load() has a parameter of the same name


def load(name: str, data_dir: Path | None = None) -> Dataset:
    """Load dataset `name` from `data_dir` (default: data_dir()), cached."""
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(NAMES)}")
    root = _default_data_dir() if data_dir is None else Path(data_dir)
    return _load_cached(name, root.resolve())


@functools.cache
def _load_cached(name: str, root: Path) -> Dataset:
    return _LOADERS[name](root)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV with a header."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist; check the data folder or set {ENV_VAR}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    """A finite float from `column`, or a ValueError naming file, line and column."""
    text = row.get(column)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: {column}: expected a finite number, got {text!r}")
    return value


def _utc(text: str) -> str:
    """'2016-07-01 00:00:00', '1986-03-13' or '...Z' as ISO-8601 with +00:00."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).isoformat()


def _msft(root: Path) -> Dataset:
    path = root / "msft" / "msft.csv"
    records = tuple(
        {
            "symbol": "MSFT",
            "time": _utc(row["Date"]),
            "close": _number(path, line, row, "Close"),
            "volume": _number(path, line, row, "Volume"),
        }
        for line, row in _rows(path)
    )
    return Dataset(
        "msft", "Microsoft daily close and volume, 1986-2017", "1b", "symbol", "time", "close", ("volume",), records
    )


def _taylor(root: Path) -> Dataset:
    path = root / "taylor" / "taylor.csv"
    records = tuple(
        {
            "region": "england_wales",
            "time": _utc(row["time"]),
            "demand_mw": _number(path, line, row, "demand_mw"),
        }
        for line, row in _rows(path)
    )
    return Dataset(
        "taylor",
        "Half-hourly electricity demand of England and Wales, summer 2000",
        "30m",
        "region",
        "time",
        "demand_mw",
        (),
        records,
    )


def _greensboro(root: Path) -> Dataset:
    path = root / "tmy3" / "greensboro_nc_tmy3.csv"
    records = tuple(
        {
            "station": "723170",
            "time": (_TMY_START + timedelta(hours=i)).isoformat(),
            **{field: _number(path, line, row, column) for field, column in _TMY_FIELDS.items()},
        }
        for i, (line, row) in enumerate(_rows(path))
    )
    return Dataset(
        "greensboro",
        "Hourly typical-year weather of Greensboro NC (TMY3)",
        "1h",
        "station",
        "time",
        "drybulb_c",
        tuple(_TMY_FIELDS)[1:],
        records,
    )


def _ett(name: str) -> Callable[[Path], Dataset]:
    """The loader of ETTh1 or ETTh2: one record per (row, channel)."""

    def load_ett(root: Path) -> Dataset:
        stem = name.replace("etth", "ETTh")
        path = root / "ett" / f"{stem}.csv"
        records = []
        for line, row in _rows(path):
            time = _utc(row["date"])
            for channel in _ETT_CHANNELS:
                value = _number(path, line, row, channel)
                records.append({"series": f"{name}.{channel}", "time": time, "value": value})
        return Dataset(
            name,
            f"{stem} electricity transformer loads and oil temperature",
            "1h",
            "series",
            "time",
            "value",
            (),
            tuple(records),
        )

    return load_ett


_LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "msft": _msft,
    "taylor": _taylor,
    "greensboro": _greensboro,
    "etth1": _ett("etth1"),
    "etth2": _ett("etth2"),
}
