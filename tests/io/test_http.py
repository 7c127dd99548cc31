"""The status server: a port another process holds is a configuration error a person can act on."""

import socket

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
