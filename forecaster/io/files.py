"""Observation records from a user's own file: CSV, JSON lines or Parquet, each optionally gzipped.

The file is in long format: one row per observation, with the pipeline's field names as
columns (its record.key, record.timestamp, record.target and covariates), or other names
given by a mapping field -> column. Reading is pure: a file in, JSON-ready records out, in
the pipeline's field names and in file order, so the same records can be published
(`forecaster replay --file`), decoded as the daemon decodes them (`records.decode`) for
pretraining and backtesting, or checked. A file without the key column holds one series,
keyed by the file's name.

CSV and JSON lines are read with the standard library; Parquet needs pyarrow (the `files`
extra), imported only when a Parquet file is read.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path

from forecaster.config import RecordFormat
from forecaster.errors import DataFileError

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MISSING = {"", "na", "nan", "null", "none"}  # CSV cells read as a missing value (JSON null)


def file_format(path: Path) -> str:
    """'csv', 'jsonl' or 'parquet', from the name (a trailing .gz is gzip around any of them)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = FORMATS.get(suffixes[-1] if suffixes else "")
    if found is None:
        raise DataFileError(
            f"{path}: expected a name ending in {', '.join(FORMATS)} (optionally .gz), got {path.name!r}"
        )
    return found


def read_records(path: str | Path, fmt: RecordFormat, mapping: Mapping[str, str] | None = None) -> list[dict]:
    """The file's observations as records with the pipeline's field names, in file order.

    `mapping` names the column of a field where it differs from the field's name. Raises a
    DataFileError naming the file, the line (CSV, JSON lines) or row (Parquet), what was
    expected and what was found.
    """
    path = Path(path)
    columns = _columns(fmt, mapping or {})
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    kind = file_format(path)
    rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind](path)
    numbers = [(field, columns[field]) for field in (fmt.target, *fmt.covariates)]
    key, stamp, alone = columns[fmt.key], columns[fmt.timestamp], path.name.split(".")[0]
    records = []
    for where, row in rows:
        if not records:
            _check_columns(path, where, row, columns, fmt.key)
        record = {fmt.key: str(row.get(key, alone)), fmt.timestamp: _time(path, where, stamp, row.get(stamp))}
        for field, column in numbers:
            record[field] = _number(path, where, column, row.get(column))
        records.append(record)
    if not records:
        raise DataFileError(f"{path}: expected at least one row of observations, got none")
    return records


def _columns(fmt: RecordFormat, mapping: Mapping[str, str]) -> dict[str, str]:
    """Field -> column: the mapping's where it names one, else the field's own name."""
    fields = (fmt.key, fmt.timestamp, fmt.target, *fmt.covariates)
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise DataFileError(
            f"--map: expected fields of the pipeline's record ({', '.join(fields)}), got {', '.join(unknown)}"
        )
    return {field: mapping.get(field, field) for field in fields}


def _check_columns(path: Path, where: str, row: dict, columns: dict[str, str], key: str) -> None:
    """Every field's column is present (the key's may be absent: one series); else say which, and how to map."""
    absent = [(field, column) for field, column in columns.items() if column not in row and field != key]
    if absent:
        field, column = absent[0]
        raise DataFileError(
            f"{path}:{where}: expected a column {column!r} (the pipeline's {field!r} field; name another column "
            f"with --map {field}=COLUMN), got columns {', '.join(map(str, row)) or 'none'}"
        )


def _open_text(path: Path):
    """The file as text, through gzip where its name ends in .gz."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """('line N', row) for each data row of a CSV with a header line."""
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                yield f"line {reader.line_num}", row
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as error:
            raise DataFileError(f"{path}:line {reader.line_num}: expected CSV text, got {error}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """('line N', object) for each non-empty line of a JSON lines file."""
    with _open_text(path) as f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFileError(f"{path}:line {number}: expected a JSON object, got {error.msg}") from None
                if not isinstance(row, dict):
                    raise DataFileError(f"{path}:line {number}: expected a JSON object, got {line.strip()[:60]!r}")
                yield f"line {number}", row
        except (UnicodeDecodeError, OSError, EOFError) as error:
            raise DataFileError(f"{path}: expected UTF-8 JSON lines, got {error}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """('row N', row) for each row of a Parquet file (pyarrow, the `files` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileError(
            f"{path}: reading Parquet needs pyarrow: pip install 'forecaster-daemon[files]' (or pip install pyarrow)"
        ) from None
    try:
        table = pq.read_table(gzip.open(path) if path.suffix.lower() == ".gz" else path)
    except Exception as error:  # pyarrow's own error types: a file that is not Parquet, or a damaged one
        raise DataFileError(f"{path}: expected a Parquet file, got {error}") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"row {number}", row


def _time(path: Path, where: str, column: str, value) -> str | float:
    """ISO-8601 text or epoch seconds, as records carry times; a date or datetime (Parquet) as ISO text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            datetime.fromisoformat(text)
            return text
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise DataFileError(f"{path}:{where}: {column}: expected an ISO-8601 time or epoch seconds, got {value!r}")


def _number(path: Path, where: str, column: str, value) -> float | None:
    """A finite number, or None for a missing value (an empty cell, NA, NaN, null)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in MISSING):
        return None
    if isinstance(value, bool):
        raise DataFileError(f"{path}:{where}: {column}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFileError(f"{path}:{where}: {column}: expected a number, got {value!r}") from None
    if math.isnan(number):
        return None
    if not math.isfinite(number):
        raise DataFileError(f"{path}:{where}: {column}: expected a finite number, got {value!r}")
    return number
