"""The status server: a port another process holds is a configuration error a person can act on."""

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from forecaster.errors import ConfigError
from forecaster.io.http import StatusServer


def test_a_metrics_port_in_use_is_a_configuration_error_that_names_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"metrics.port: port {port} on 127.0.0.1 is in use \(another forecaster\?\)"
        ):
            StatusServer("127.0.0.1", port, CollectorRegistry(), lambda: (True, "ready"))


def test_a_free_port_serves():
    server = StatusServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ready")).start()
    try:
        assert server.address.startswith("http://127.0.0.1:")
    finally:
        server.close()


def status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_healthz_answers_503_with_the_reason_when_the_daemon_is_not_alive():
    alive = [True]
    live = lambda: (True, "ok") if alive[0] else (False, "failed or stuck for over 300 s: stock")
    server = StatusServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ready"), live=live).start()
    try:
        assert status(server.address + "/healthz") == (200, b"ok\n")
        alive[0] = False
        assert status(server.address + "/healthz") == (503, b"failed or stuck for over 300 s: stock\n")
        assert status(server.address + "/readyz") == (200, b"ready\n")  # each endpoint asks its own question
    finally:
        server.close()
