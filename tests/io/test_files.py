"""Reading a user's file into records: each format, gzip, --map, one-series files, and errors that say where."""

import gzip
import json

import pytest

from forecaster.config import RecordFormat
from forecaster.errors import DataFileError
from forecaster.io.files import read_records

FMT = RecordFormat(key="station", timestamp="time", target="temp", covariates=("wind",))
EXPECTED = [
    {"station": "a", "time": "2024-01-01T00:00:00Z", "temp": 1.5, "wind": 3.0},
    {"station": "a", "time": "2024-01-01T01:00:00Z", "temp": None, "wind": 4.0},
    {"station": "b", "time": "2024-01-01T00:00:00Z", "temp": -2.0, "wind": 5.0},
]
CSV = "station,time,temp,wind\na,2024-01-01T00:00:00Z,1.5,3\na,2024-01-01T01:00:00Z,,4\nb,2024-01-01T00:00:00Z,-2,5\n"


def test_a_csv_gives_records_in_the_pipelines_field_names_with_empty_cells_missing(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text(CSV)
    assert read_records(path, FMT) == EXPECTED


def test_a_gzipped_csv_reads_as_the_csv(tmp_path):
    path = tmp_path / "obs.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    assert read_records(path, FMT) == EXPECTED


@pytest.mark.parametrize("name", ["obs.jsonl", "obs.ndjson.gz"])
def test_json_lines_plain_or_gzipped_give_the_same_records(tmp_path, name):
    text = "\n".join(json.dumps(r) for r in EXPECTED) + "\n\n"  # a trailing blank line is no record
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    assert read_records(path, FMT) == EXPECTED


def test_parquet_with_timestamp_columns_gives_iso_times(tmp_path):
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "station": ["a", "a"],
            "time": [datetime(2024, 1, 1, 0, tzinfo=UTC), datetime(2024, 1, 1, 1, tzinfo=UTC)],
            "temp": [1.5, None],
            "wind": [3.0, 4.0],
        }
    )
    pq.write_table(table, tmp_path / "obs.parquet")
    records = read_records(tmp_path / "obs.parquet", FMT)
    assert records == [
        {"station": "a", "time": "2024-01-01T00:00:00+00:00", "temp": 1.5, "wind": 3.0},
        {"station": "a", "time": "2024-01-01T01:00:00+00:00", "temp": None, "wind": 4.0},
    ]


def test_map_reads_a_field_from_a_column_of_another_name(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text(CSV.replace("station,time,temp", "site,date,temperature", 1))
    mapping = {"station": "site", "time": "date", "temp": "temperature"}
    assert read_records(path, FMT, mapping) == EXPECTED


def test_a_file_without_the_key_column_is_one_series_named_after_the_file(tmp_path):
    path = tmp_path / "greensboro.csv.gz"
    path.write_bytes(gzip.compress(b"time,temp,wind\n2024-01-01T00:00:00Z,1,2\n"))
    assert read_records(path, FMT) == [
        {"station": "greensboro", "time": "2024-01-01T00:00:00Z", "temp": 1.0, "wind": 2.0}
    ]


def test_epoch_seconds_are_times_too(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("time,temp,wind\n1704067200,1,2\n")
    assert read_records(path, FMT)[0]["time"] == 1704067200.0


def test_a_missing_column_is_named_with_the_map_that_would_fix_it(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("station,date,temp,wind\na,2024-01-01T00:00:00Z,1,2\n")
    with pytest.raises(DataFileError) as error:
        read_records(path, FMT)
    assert str(error.value) == (
        f"{path}:line 2: expected a column 'time' (the pipeline's 'time' field; name another column with "
        "--map time=COLUMN), got columns station, date, temp, wind"
    )


def test_a_bad_number_names_the_file_the_line_the_column_and_what_was_expected(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text(CSV.replace("-2,5", "cold,5"))
    with pytest.raises(DataFileError, match=rf"^{path}:line 4: temp: expected a number, got 'cold'$"):
        read_records(path, FMT)


def test_a_bad_time_names_the_line(tmp_path):
    path = tmp_path / "obs.jsonl"
    path.write_text(json.dumps(EXPECTED[0]) + "\n" + json.dumps({**EXPECTED[1], "time": "yesterday"}) + "\n")
    with pytest.raises(DataFileError, match=rf"^{path}:line 2: time: expected an ISO-8601 time or epoch seconds"):
        read_records(path, FMT)


def test_a_line_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "obs.jsonl"
    path.write_text(json.dumps(EXPECTED[0]) + "\n{oops\n")
    with pytest.raises(DataFileError, match=rf"^{path}:line 2: expected a JSON object"):
        read_records(path, FMT)


def test_an_unknown_kind_of_file_a_missing_file_and_an_empty_one_are_errors(tmp_path):
    with pytest.raises(DataFileError, match="expected a name ending in .csv"):
        (tmp_path / "obs.xlsx").write_text("x")
        read_records(tmp_path / "obs.xlsx", FMT)
    with pytest.raises(DataFileError, match="no such file"):
        read_records(tmp_path / "absent.csv", FMT)
    (tmp_path / "empty.csv").write_text("station,time,temp,wind\n")
    with pytest.raises(DataFileError, match="expected at least one row of observations, got none"):
        read_records(tmp_path / "empty.csv", FMT)


def test_map_of_a_field_the_pipeline_does_not_have_is_an_error(tmp_path):
    (tmp_path / "obs.csv").write_text(CSV)
    with pytest.raises(DataFileError, match=r"--map: expected fields of the pipeline's record .*, got tmp$"):
        read_records(tmp_path / "obs.csv", FMT, {"tmp": "temp"})
