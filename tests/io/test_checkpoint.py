"""Checkpoints and weights files: atomic, checksummed, owner-only, and never a way to run code."""

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import shlex
import stat

import pytest
import torch

from forecaster.build import load_model, save_model
from forecaster.errors import ForecasterError
from forecaster.io import checkpoint
from forecaster.io.checkpoint import (
    CHECKPOINT_MAGIC,
    load_latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from forecaster.serving.model import Forecaster, ModelSpec


def payload(n: int) -> dict:
    """What a pipeline checkpoint holds: plain containers, numbers, strings and tensors."""
    return {
        "format": "test",
        "offsets": {0: n, 2: 7 * n},
        "written_at": 1.5 * n,
        "engine": {
            "keys": [f"s{i}" for i in range(n)],
            "wide": torch.arange(3.0 * n).reshape(n, 3),
            "exact": torch.full((n, 3), float(n), dtype=torch.float64),
        },
    }


def assert_same(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    assert loaded["offsets"] == expected["offsets"] and loaded["written_at"] == expected["written_at"]
    assert loaded["engine"]["keys"] == expected["engine"]["keys"]
    for name in ("wide", "exact"):
        assert loaded["engine"][name].dtype == expected["engine"][name].dtype
        assert torch.equal(loaded["engine"][name], expected["engine"][name])


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class RunsCommand:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def touching(marker) -> RunsCommand:
    return RunsCommand(f"touch {shlex.quote(str(marker))}")


def with_valid_header(body: bytes) -> bytes:
    """A checkpoint whose checksum is right: only the loader's refusal to run code stands in the way."""
    return CHECKPOINT_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def torch_file(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --- round trip and retention ---------------------------------------------------------------


def test_a_saved_checkpoint_loads_back_equal(tmp_path):
    path = save_checkpoint(tmp_path, payload(3))
    loaded, found = load_latest_checkpoint(tmp_path)
    assert found == path and path.name == "checkpoint-000000000001.pt"
    assert_same(loaded, payload(3))


def test_the_newest_checkpoint_is_loaded(tmp_path):
    for n in (1, 2, 3):
        save_checkpoint(tmp_path, payload(n))
    loaded, path = load_latest_checkpoint(tmp_path)
    assert path.name == "checkpoint-000000000003.pt"
    assert_same(loaded, payload(3))


def test_keep_prunes_all_but_the_newest_and_numbering_goes_on(tmp_path):
    for n in range(1, 6):
        save_checkpoint(tmp_path, payload(n), keep=2)
    assert files(tmp_path) == ["checkpoint-000000000004.pt", "checkpoint-000000000005.pt"]
    save_checkpoint(tmp_path, payload(6), keep=2)
    assert files(tmp_path) == ["checkpoint-000000000005.pt", "checkpoint-000000000006.pt"]


def test_an_empty_or_missing_folder_has_no_checkpoint(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None
    assert load_latest_checkpoint(tmp_path / "never-created") is None


# --- corruption ----------------------------------------------------------------------------


def flip_a_body_byte(data: bytes) -> bytes:
    middle = len(data) - len(data) // 3  # well inside the body, after the header line
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (flip_a_body_byte, "checksum mismatch"),
        (lambda data: data[: len(data) // 2], "checksum mismatch"),  # torn: a crash half way through a copy
        (lambda data: b"\x00garbage\xff" * 100, "not a forecaster checkpoint"),
        (lambda data: b"", "not a forecaster checkpoint"),
    ],
)
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_loaded(tmp_path, caplog, damage, reason):
    save_checkpoint(tmp_path, payload(1))
    newest = save_checkpoint(tmp_path, payload(2))
    newest.write_bytes(damage(newest.read_bytes()))
    with caplog.at_level(logging.ERROR, logger="forecaster.io.checkpoint"):
        loaded, path = load_latest_checkpoint(tmp_path)
    assert path.name == "checkpoint-000000000001.pt"
    assert_same(loaded, payload(1))
    [report] = caplog.records
    assert report.levelno == logging.ERROR and str(newest) in report.getMessage() and reason in report.getMessage()


def test_when_every_checkpoint_is_damaged_there_is_none_and_each_is_reported(tmp_path, caplog):
    for n in (1, 2):
        save_checkpoint(tmp_path, payload(n)).write_bytes(b"junk")
    with caplog.at_level(logging.ERROR, logger="forecaster.io.checkpoint"):
        assert load_latest_checkpoint(tmp_path) is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"skipping checkpoint {tmp_path / 'checkpoint-000000000002.pt'}",
        f"skipping checkpoint {tmp_path / 'checkpoint-000000000001.pt'}",
    ]


# --- tampering: code in the pickle is refused, never run ----------------------------------------


@pytest.mark.parametrize(
    "serialise, unsafe_load",
    [
        (torch_file, lambda body: torch.load(io.BytesIO(body), weights_only=False)),
        (lambda obj: pickle.dumps(obj, protocol=2), pickle.loads),
    ],
    ids=["torch-zip", "bare-pickle"],
)
def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, caplog, serialise, unsafe_load):
    marker = tmp_path / "pwned"
    body = serialise({"format": "test", "offsets": {0: 1}, "engine": touching(marker)})
    save_checkpoint(tmp_path / "ckpt", payload(1))
    evil = tmp_path / "ckpt" / "checkpoint-000000000002.pt"
    evil.write_bytes(with_valid_header(body))

    with pytest.raises(ForecasterError, match="refused to load"):
        read_checkpoint(evil)
    with caplog.at_level(logging.ERROR, logger="forecaster.io.checkpoint"):
        loaded, path = load_latest_checkpoint(tmp_path / "ckpt")
    assert path.name == "checkpoint-000000000001.pt" and "refused to load" in caplog.text
    assert not marker.exists()

    unsafe_load(body)  # the same bytes, loaded the unsafe way, do run the command: the test payload is live
    assert marker.exists()


def test_a_weights_file_that_would_run_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    spec = ModelSpec(cell="gru", input_size=1, hidden_size=4, num_layers=1, horizon=2)
    path = tmp_path / "model.pt"
    path.write_bytes(
        torch_file(
            {
                "format": checkpoint.FORMAT,
                "spec": dataclasses.asdict(spec),
                "state_dict": touching(marker),
                "metadata": {},
            }
        )
    )
    with pytest.raises(ForecasterError, match="not a readable forecaster weights file"):
        load_model(path)
    assert not marker.exists()


def test_weights_round_trip_and_are_owner_only(tmp_path):
    torch.manual_seed(0)
    model = Forecaster(ModelSpec(cell="lstm", input_size=3, hidden_size=5, num_layers=2, horizon=4))
    path = save_model(tmp_path / "models" / "m.pt", model, {"version": 7})
    loaded, metadata = load_model(path, expected=model.spec)
    assert metadata == {"version": 7} and loaded.spec == model.spec
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- permissions and atomicity -------------------------------------------------------------------


def test_checkpoints_are_owner_only_in_an_owner_only_folder(tmp_path):
    folder = tmp_path / "state" / "pipeline"
    path = save_checkpoint(folder, payload(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


class DiskFull:
    """A file that takes half the bytes, then fails like a full disk."""

    def __init__(self, handle):
        self.file = open(handle, "wb")

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fail(*args, **kwargs):
    raise OSError(5, "Input/output error")


@pytest.mark.parametrize(
    "target, replacement",
    [
        ("torch.save", fail),  # serialising
        ("os.fdopen", lambda handle, mode: DiskFull(handle)),  # half the bytes written
        ("os.fsync", fail),  # written, not yet durable
        ("os.replace", fail),  # durable, not yet renamed into place
    ],
    ids=["serialise", "disk-full", "fsync", "rename"],
)
def test_a_failed_write_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch, target, replacement):
    save_checkpoint(tmp_path, payload(1))
    before = files(tmp_path)
    module, name = target.split(".")
    monkeypatch.setattr({"torch": torch, "os": checkpoint.os}[module], name, replacement)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, payload(2))
    monkeypatch.undo()
    assert files(tmp_path) == before  # no checkpoint-2, no .tmp left behind
    loaded, _ = load_latest_checkpoint(tmp_path)
    assert_same(loaded, payload(1))


def test_a_changelog_cache_gives_back_its_position_and_records_and_a_damaged_one_nothing(tmp_path):
    path = tmp_path / "changelog" / "topic.0.cache"
    records = [(b"s0", b"\x00" * 10), (b"s1", b""), (b"\x00partition", bytes(range(256)))]
    checkpoint.save_changelog_cache(path, 42, records)

    assert checkpoint.load_changelog_cache(path) == (42, records)
    assert checkpoint.load_changelog_cache(tmp_path / "absent.cache") is None
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert checkpoint.load_changelog_cache(path) is None
