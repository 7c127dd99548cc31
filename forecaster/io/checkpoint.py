"""Model weights and pipeline checkpoints on disk: written atomically, read without executing code.

A weights file holds a model's spec (as plain values), the state dict and a little
metadata. A checkpoint holds everything a pipeline needs to resume exactly: weights and
version, every series' state, and the input offsets that state reflects; it carries a
SHA-256 of its body, so a torn or corrupted file is detected and skipped for the previous
one. Both are loaded with `torch.load(weights_only=True)`, so a tampered file is an
error, never code that runs.

A changelog cache (`save_changelog_cache`) is a member's local copy of one changelog
partition as it stood up to a position: each key's newest record, raw bytes, with a CRC-32.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from forecaster.errors import ForecasterError, StateInUse

FORMAT = "forecaster.weights/1"
CHECKPOINT_MAGIC = b"forecaster.checkpoint/1 sha256="
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d{12})\.pt")
LOCK_NAME = "lock"
_FAILURE_REASONS = {
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_full",
    errno.EROFS: "not_writable",
    errno.EACCES: "not_writable",
    errno.EPERM: "not_writable",
}
CACHE_MAGIC = b"forecaster.changelog-cache/1"
_CACHE_HEADER = struct.Struct("<28sIqI")  # magic, CRC-32 of what follows, changelog position, records
_CACHE_RECORD = struct.Struct("<II")  # key and value lengths

log = logging.getLogger(__name__)


def save_weights(path: str | Path, spec: dict, state_dict: dict, metadata: dict | None = None) -> Path:
    """Write a model's spec (plain values) and weights atomically: temporary file, fsync, rename; owner-only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, weights_bytes(spec, state_dict, metadata))


def weights_bytes(spec: dict, state_dict: dict, metadata: dict | None = None) -> bytes:
    """A weights file's bytes: what `save_weights` writes, and what a model topic's record holds."""
    payload = {"format": FORMAT, "spec": dict(spec), "state_dict": dict(state_dict), "metadata": dict(metadata or {})}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes | Callable[[BinaryIO], None], durable: bool = True) -> Path:
    """Temporary file, fsync, rename, fsync of the folder: a crash leaves the old file or the new, never half.

    `data` is the content, or a function that writes it to the open file. Not `durable`: no fsyncs, for a file
    whose loss or damage after a crash costs time only (it is checked).
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o600)  # owner only: checkpoints hold the model and every series' state
        with os.fdopen(handle, "wb") as file:
            if callable(data):
                data(file)
            else:
                file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not durable:
        return path
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def read_weights(path: str | Path) -> tuple[dict, dict, dict]:
    """A weights file's spec (plain values), state dict and metadata; a ForecasterError for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ForecasterError(f"{path}: weights file not found") from None
    return parse_weights(data, str(path))


def parse_weights(data: bytes, where: str) -> tuple[dict, dict, dict]:
    """`read_weights` of bytes read from `where` (a file, a topic), loaded without executing code."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused, truncated file, not a torch file
        raise ForecasterError(f"{where}: not a readable forecaster weights file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ForecasterError(f"{where}: not a forecaster weights file (expected format {FORMAT})")
    return payload["spec"], payload["state_dict"], payload.get("metadata", {})


def save_checkpoint(folder: str | Path, payload: dict, keep: int = 3) -> Path:
    """Write the next numbered checkpoint in `folder` (checksummed, atomic), keeping the newest `keep`."""
    path = write_checkpoint(next_checkpoint(folder), payload)
    prune(path.parent, keep)
    return path


def next_checkpoint(folder: str | Path) -> Path:
    """The path the next checkpoint in `folder` takes (the folder made, owner-only, if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = _checkpoints(folder)
    number = int(_CHECKPOINT_NAME.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
    return folder / f"checkpoint-{number:012d}.pt"


def write_checkpoint(path: Path, payload: dict) -> Path:
    """Stream `payload` to `path` atomically, checksum header first: the bytes pass through once, never held whole.

    The header's place is kept while the body streams through SHA-256, then filled in: the file is
    byte for byte what pickling into memory and writing header + body would make, without the two
    extra copies of the whole state that would take.
    """

    def stream(file) -> None:
        file.write(_header(hashlib.sha256()))  # a placeholder of the header's length
        digest = hashlib.sha256()
        torch.save(payload, _Hashing(file, digest))
        file.seek(0)
        file.write(_header(digest))

    return write_atomically(path, stream)


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and what a write that died half way left behind."""
    for old in _checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    for torn in folder.glob(".checkpoint-*.tmp"):
        torn.unlink(missing_ok=True)


def _header(digest) -> bytes:
    return CHECKPOINT_MAGIC + digest.hexdigest().encode() + b"\n"


class _Hashing:
    """A file that hashes what is written through it (torch.save writes its zip archive front to back)."""

    def __init__(self, file, digest):
        self.file, self.digest = file, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def load_latest_checkpoint(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest checkpoint that verifies, or None; each bad one is reported and skipped."""
    for path in reversed(_checkpoints(Path(folder))):
        try:
            return read_checkpoint(path), path
        except ForecasterError as error:
            log.error("skipping checkpoint %s: %s", path, error)
    return None


def read_checkpoint(path: Path) -> dict:
    """One checkpoint, verified against its checksum, loaded without executing code."""
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    if not header.startswith(CHECKPOINT_MAGIC):
        raise ForecasterError("not a forecaster checkpoint")
    if hashlib.sha256(body).hexdigest().encode() != header[len(CHECKPOINT_MAGIC) :]:
        raise ForecasterError("checksum mismatch (torn or corrupted)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused: not plain tensors and containers
        raise ForecasterError(f"refused to load: {error}") from None


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name))


def failure_reason(error: OSError) -> str:
    """A failed write's reason as a metric label: disk_full, not_writable, or io_error for anything else."""
    return _FAILURE_REASONS.get(error.errno, "io_error")


def lock_folder(folder: str | Path) -> int | None:
    """Take `folder` for this process: an exclusive lock on its lock file, held while the returned descriptor is open
    (the kernel drops it when the process ends, however it ends), with this process's pid written in it.

    A StateInUse names the folder and the holder's pid when another process has it. The lock is held through a
    read-only descriptor, so the daemon keeps no file open for writing there (a file system can still be remounted
    read-only). A folder where no lock file exists or can be created (read-only, full) is logged and left unlocked:
    nothing can write checkpoints there anyway.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    with contextlib.suppress(OSError):  # read-only or full: a lock file made before still serves
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError as error:
        log.error("cannot lock %s (%s): two processes could share it", folder, error)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise StateInUse(
            f"{folder} is in use by another forecaster process (pid {holder}): two processes cannot share a "
            "pipeline's state; stop that one, or give this one its own state_dir"
        ) from None
    with contextlib.suppress(OSError):  # a read-only folder: locked all the same, the pid left unsaid
        path.write_text(f"{os.getpid()}\n")
    return handle


def save_changelog_cache(path: Path, position: int, records: list[tuple[bytes, bytes]]) -> Path:
    """Write `records` (key, value), what a changelog partition's log up to offset `position` comes to, atomically."""
    body = [struct.pack("<qI", position, len(records))]
    for key, value in records:
        body += [_CACHE_RECORD.pack(len(key), len(value)), key, value]
    data = b"".join(body)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(file) -> None:  # the header, then the body as joined: no second copy of it in memory
        file.write(CACHE_MAGIC + struct.pack("<I", zlib.crc32(data)))
        file.write(data)

    # A cache: after a crash its CRC tells a damaged copy, and the changelog is read instead, so no fsync
    return write_atomically(path, write, durable=False)


def load_changelog_cache(path: Path) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """The position and records `save_changelog_cache` wrote; None for a missing, foreign or damaged file."""
    try:
        data = memoryview(path.read_bytes())
    except FileNotFoundError:
        return None
    if len(data) < _CACHE_HEADER.size:
        return None
    magic, crc, position, count = _CACHE_HEADER.unpack_from(data)
    if magic != CACHE_MAGIC or zlib.crc32(data[len(CACHE_MAGIC) + 4 :]) != crc:
        log.warning("%s: not a changelog cache, or damaged; reading the changelog from its start", path)
        return None
    records, at = [], _CACHE_HEADER.size
    for _ in range(count):
        key_length, value_length = _CACHE_RECORD.unpack_from(data, at)
        at += _CACHE_RECORD.size
        records.append(
            (bytes(data[at : at + key_length]), bytes(data[at + key_length : at + key_length + value_length]))
        )
        at += key_length + value_length
    return position, records
