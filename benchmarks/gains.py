"""Each optimisation of the I/O path and of the engine's bookkeeping at scale, before and after, in one run.

    python benchmarks/gains.py          # about a minute; writes benchmarks/results/gains.json

The "before" of each is the code it replaced, kept here verbatim as the reference:
encode       the forecast records of one poll batch (2,000 ETTh1 series, horizon 24): one
             `datetime.isoformat` per timestamp and `json.dumps` of a dict per forecast, against
             `records.encode_many`; with every series at one time (as a replay) and each at its own.
decode       `records.decode` of the same 2,000 input records, each timestamp parsed per record,
             against the decode that parses each distinct timestamp once.
slots        `StateStore.slots` at 1,000,000 known series: the deduplicating lookup against one
             lookup per record.
forecasts    `Engine._forecasts` at 1,000,000 series: a generator over the keys and an argsort,
             against the in-order fast path.
crc          kafka-python's CRC-32C of a 1 MiB record batch, pure Python against the crc32c package.
Each figure is the best of several repetitions (the machine may be shared).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

import numpy as np

from forecaster.build import seeded_model
from forecaster.serving import records
from forecaster.serving.engine import Engine, Forecasts
from forecaster.serving.state import REFUSED

import throughput

REPO = Path(__file__).resolve().parents[1]


def best(function, repeats: int = 5) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def compare(name: str, before, after, repeats: int = 5, unit: str = "ms") -> dict:
    b, a = best(before, repeats), best(after, repeats)
    row = {"what": name, "before_ms": round(1e3 * b, 2), "after_ms": round(1e3 * a, 2), "speedup": round(b / a, 2)}
    print(
        f"{name:<48} before {row['before_ms']:>9.2f} ms  after {row['after_ms']:>9.2f} ms  {row['speedup']:>6.2f}x",
        flush=True,
    )
    return row


# -- the replaced code, verbatim -------------------------------------------------------------------


def encode_before(forecast: records.Forecast, pipeline: str, target: str) -> bytes:
    iso = lambda epoch: datetime.fromtimestamp(epoch, UTC).isoformat()  # noqa: E731
    return json.dumps(
        {
            "series": forecast.series,
            "pipeline": pipeline,
            "target": target,
            "time": iso(forecast.time),
            "issued_at": iso(forecast.issued_at),
            "model_version": forecast.model_version,
            "horizon": len(forecast.values),
            "times": [iso(t) for t in forecast.times],
            "values": [float(v) for v in forecast.values],
        },
        separators=(",", ":"),
    ).encode()


def slots_before(store, keys):
    store._tick += 1
    unique = list(dict.fromkeys(keys))
    known = [store._index[k] for k in unique if k in store._index]
    store.last_seen[known] = store._tick
    new = [k for k in unique if k not in store._index]
    if new:
        store._admit(new)
    return np.fromiter(map(store._index.get, keys, repeat(REFUSED)), dtype=np.int64, count=len(keys))


def forecasts_before(engine, observations, rows, values):
    from forecaster.serving.cadence import horizon_times

    arrival = np.argsort(observations.positions[rows], kind="stable")
    rows, values = rows[arrival], values[arrival]
    times = observations.times[rows]
    return Forecasts(
        keys=tuple(observations.keys[i] for i in rows),
        times=times,
        horizon_times=horizon_times(
            times, observations.local_times[rows], engine.pipeline.cadence, engine.pipeline.horizon
        ),
        values=values,
        positions=observations.positions[rows],
        issued_at=time.time(),
        model_version=engine.model_version,
    )


# -- the sections --------------------------------------------------------------------------------------


def io_rows(values: np.ndarray) -> list[dict]:
    pipeline = throughput.bench_pipeline("gru", 2000)
    engine = Engine(pipeline, seeded_model(pipeline), "cpu")
    payloads = [v for _, v in throughput.stream(values, 2000, 2)]
    forecasts, _ = engine.step(records.decode(payloads[:2000], pipeline.record)[0], now=time.time())
    own = Forecasts(
        forecasts.keys,
        forecasts.times + 60.0 * np.arange(len(forecasts)),
        forecasts.horizon_times + 60.0 * np.arange(len(forecasts))[:, None],
        forecasts.values,
        forecasts.positions,
        forecasts.issued_at,
        forecasts.model_version,
    )
    rows = []
    for label, batch in (("shared times", forecasts), ("own times", own)):
        assert [encode_before(r, "bench", "OT") for r in batch.rows()] == records.encode_many(batch, "bench", "OT")
        rows.append(
            compare(
                f"encode 2,000 forecasts ({label})",
                lambda b=batch: [encode_before(r, "bench", "OT") for r in b.rows()],
                lambda b=batch: records.encode_many(b, "bench", "OT"),
            )
        )
    later = payloads[2000:]
    parse_each = lambda: records.decode(later, pipeline.record, pipeline.limits, time.time())  # noqa: E731
    original = records._fields
    uncached = lambda record, fmt, _cache: original(record, fmt, {})  # noqa: E731

    def decode_before():
        records._fields = uncached
        try:
            parse_each()
        finally:
            records._fields = original

    rows.append(compare("decode 2,000 records", decode_before, parse_each))
    return rows


def crc_row() -> dict:
    from crc32c import crc32c
    from kafka.record._crc32c import crc as pure_python

    data = memoryview(bytes(range(256)) * 4096)
    return compare("CRC-32C of a 1 MiB record batch", lambda: pure_python(data), lambda: crc32c(data), repeats=3)


def engine_rows(values: np.ndarray, n: int = 1_000_000) -> list[dict]:
    pipeline = throughput.bench_pipeline("gru", n)
    engine = Engine(pipeline, seeded_model(pipeline), "cpu")
    feed = throughput.Feed(n, values)
    for _ in range(2):
        engine.step(feed.next(), now=time.time())
    batch = feed.next()
    rows = [
        compare(
            f"StateStore.slots, {n:,} known series",
            lambda: slots_before(engine.store, batch.keys),
            lambda: engine.store.slots(batch.keys),
            repeats=3,
        )
    ]
    ordered = np.arange(n)
    deltas = np.zeros((n, pipeline.horizon), np.float32)
    rows.append(
        compare(
            f"Engine._forecasts, {n:,} series",
            lambda: forecasts_before(engine, batch, ordered, deltas),
            lambda: engine._forecasts(batch, ordered, deltas),
            repeats=3,
        )
    )
    return rows


def main() -> int:
    values = throughput.etth1()
    result = {
        "machine": throughput.machine(),
        "command": "python benchmarks/gains.py",
        "rows": io_rows(values) + [crc_row()] + engine_rows(values),
    }
    out = REPO / "benchmarks/results/gains.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
