"""Nobody in who does not belong: Kafka TLS and SASL from the config, secrets from the environment
and never printed, owner-only HTTP by default and HTTPS on request, YAML read safely.

Checkpoints and weights (owner-only, loaded without running code) are in test_checkpoint.py;
spilled state's permissions in test_spill.py.
"""

import http.client
import json
import logging
import shlex
import socket
import ssl
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from forecaster import app, config
from forecaster.config import Kafka, MetricsServer
from forecaster.errors import ConfigError
from forecaster.io.http import StatusServer
from forecaster.io.kafka import client_settings

SECRET = "p@ss: #w0rd 'q' 123"  # YAML would read this as a mapping, cut at '#', or strip the quotes

PIPELINE = textwrap.dedent("""\
    name: weather
    input_topic: weather.in
    output_topic: weather.out
    dead_letter_topic: weather.dead
    record: {key: station, timestamp: time, target: temp}
    cadence: 1h
    horizon: 4
    """)


def write_config(root: Path, settings: str) -> Path:
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines" / "weather.yaml").write_text(PIPELINE)
    path = root / "config.yaml"
    path.write_text(textwrap.dedent(settings) + "pipelines: [pipelines/weather.yaml]\n")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    return str(raised.value)


SASL_SSL = """\
    kafka:
      security_protocol: SASL_SSL
      sasl_mechanism: SCRAM-SHA-512
      sasl_plain_username: forecaster
      sasl_plain_password: ${FC_TEST_KAFKA_PASSWORD}
      ssl_cafile: tls/ca.pem
      ssl_certfile: tls/client.pem
      ssl_keyfile: tls/client.key
      consumer:
        ssl_password: ${FC_TEST_KEY_PASSWORD}
    """


@pytest.fixture
def secure_config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FC_TEST_KAFKA_PASSWORD", SECRET)
    monkeypatch.setenv("FC_TEST_KEY_PASSWORD", "0123")  # YAML would make it the integer 123
    (tmp_path / "tls").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "tls" / name).write_text("PEM\n")
    return write_config(tmp_path, SASL_SSL)


# --- Kafka TLS and SASL --------------------------------------------------------------------------


def test_tls_and_sasl_settings_reach_every_kafka_client(secure_config, tmp_path):
    kafka = config.load(secure_config).settings.kafka
    settings = client_settings(kafka)
    assert settings["security_protocol"] == "SASL_SSL" and settings["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings["sasl_plain_username"] == "forecaster"
    assert settings["sasl_plain_password"] == SECRET  # from the environment, exactly as set
    # relative to config.yaml, not the working directory
    assert settings["ssl_cafile"] == str(tmp_path / "tls" / "ca.pem")
    assert settings["ssl_certfile"] == str(tmp_path / "tls" / "client.pem")
    assert settings["ssl_keyfile"] == str(tmp_path / "tls" / "client.key")
    assert kafka.consumer["ssl_password"] == "0123"
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):  # names kafka-python knows, not typos
        assert set(settings) <= set(client.DEFAULT_CONFIG), client.__name__


def test_unset_security_settings_are_left_to_kafka_python():
    assert set(client_settings(Kafka())) == {"bootstrap_servers", "client_id", "security_protocol"}


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            "kafka:\n  sasl_mechanism: PLAIN\n  sasl_plain_username: u\n  sasl_plain_password: pw\n",
            "kafka.sasl_mechanism: expected security_protocol SASL_SSL or SASL_PLAINTEXT with SASL settings, got "
            "security_protocol PLAINTEXT",
        ),
        (
            "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  sasl_plain_username: u\n",
            "kafka.sasl_plain_password: expected a value with sasl_mechanism PLAIN, got nothing",
        ),
        (
            "kafka:\n  security_protocol: SASL_PLAINTEXT\n  ssl_cafile: ca.pem\n",
            "kafka.ssl_cafile: expected security_protocol SSL or SASL_SSL with TLS files, got security_protocol "
            "SASL_PLAINTEXT",
        ),
        (
            "kafka:\n  security_protocol: SSL\n  ssl_cafile: missing.pem\n",
            "kafka.ssl_cafile: expected an existing file, got 'missing.pem'",
        ),
        (
            "kafka:\n  sasl_mechanism: OAUTHBEARER\n",
            "kafka.sasl_mechanism: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI, got 'OAUTHBEARER'",
        ),
    ],
)
def test_inconsistent_security_settings_are_refused_at_load(tmp_path, settings, message):
    path = write_config(tmp_path, settings)
    assert load_error(path) == f"{path}: {message}"


# --- secrets are never printed ---------------------------------------------------------------------


def test_the_configuration_repr_masks_every_password(secure_config):
    loaded = config.load(secure_config)
    for shown in (repr(loaded), str(loaded.settings), repr(loaded.settings.kafka)):
        assert SECRET not in shown and "0123" not in shown
        assert "sasl_plain_password=***" in shown and "'ssl_password': '***'" in shown
        assert "sasl_plain_username='forecaster'" in shown  # only secrets are hidden


def test_a_logged_configuration_does_not_contain_the_password(secure_config, caplog):
    loaded = config.load(secure_config)
    with caplog.at_level(logging.INFO):
        logging.getLogger("forecaster").info("loaded %s; kafka %r", loaded, loaded.settings.kafka)
    assert "SCRAM-SHA-512" in caplog.text and SECRET not in caplog.text and "0123" not in caplog.text


@pytest.mark.parametrize(
    "settings, where",
    [
        (
            "kafka:\n  sasl_plain_password: [hunter2]\n",
            "kafka.sasl_plain_password: expected a non-empty string, got a list",
        ),
        (
            "kafka:\n  consumer:\n    ssl_password: {x: hunter2}\n",
            "kafka.consumer.ssl_password: expected a scalar or a list of scalars, got a dict",
        ),
        ("kafka:\n  sasl_plain_password: ${FC_TEST_SECRET}\n", "kafka.sasl_plain_password: expected security_protocol"),
        (
            "kafka: {producer: [{sasl_plain_password: hunter2}]}\n",
            "kafka.producer: expected a mapping, got a list [{'sasl_plain_password': '***'}]",
        ),
    ],
)
def test_a_configuration_error_about_a_secret_does_not_echo_it(tmp_path, monkeypatch, settings, where):
    monkeypatch.setenv("FC_TEST_SECRET", "hunter2")
    message = load_error(write_config(tmp_path, settings))
    assert where in message and "hunter2" not in message


# --- the HTTP endpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid for a day, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def get(url: str, cafile: Path | None = None, verify: bool = False) -> tuple[int, bytes]:
    """GET `url`; https is verified against `cafile` (or, with `verify`, the system's CAs)."""
    context = (
        ssl.create_default_context(cafile=str(cafile)) if cafile else ssl.create_default_context() if verify else None
    )
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return response.status, response.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(**tls) -> StatusServer:
    defaults = MetricsServer()
    return StatusServer(defaults.host, 0, CollectorRegistry(), lambda: (True, "ready"), **tls).start()


def test_the_endpoints_are_private_to_the_machine_unless_configured(tmp_path):
    assert config.load(write_config(tmp_path, "")).settings.metrics.host == "127.0.0.1"
    server = serve()
    try:
        assert server.address.startswith("http://127.0.0.1:")
        assert get(server.address + "/healthz") == (200, b"ok\n")
    finally:
        server.close()


def test_with_a_certificate_the_endpoints_serve_https_only(certificate):
    cert, key = certificate
    server = serve(certfile=str(cert), keyfile=str(key))
    try:
        assert server.address.startswith("https://127.0.0.1:")
        assert get(server.address + "/healthz", cafile=cert) == (200, b"ok\n")
        plain = server.address.replace("https://", "http://")
        with pytest.raises((OSError, http.client.HTTPException)):  # refused at the handshake, not answered in clear
            get(plain + "/healthz")
        with pytest.raises(urllib.error.URLError) as untrusted:  # it is that certificate: untrusted without it
            get(server.address + "/healthz", cafile=None, verify=True)
        assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
        assert get(server.address + "/readyz", cafile=cert) == (200, b"ready\n")  # and it serves on after both
    finally:
        server.close()


def test_the_daemon_serves_https_when_the_config_names_a_certificate(tmp_path, certificate, monkeypatch):
    cert, key = certificate
    path = write_config(
        tmp_path, f"device: cpu\nmetrics:\n  port: {free_port()}\n  tls_certfile: {cert}\n  tls_keyfile: {key}\n"
    )
    seen = {}

    def first_worker(daemon, pipeline, device):  # the server is up before the pipelines start
        seen["address"] = daemon.server.address
        seen["healthz"] = get(daemon.server.address + "/healthz", cafile=cert)
        raise RuntimeError("stop after the server check")

    monkeypatch.setattr(app, "missing_topics", lambda kafka, names: [])
    monkeypatch.setattr(app.Daemon, "_worker", first_worker)
    with pytest.raises(RuntimeError, match="stop after the server check"):
        app.Daemon(config.load(path)).run()
    assert seen["address"].startswith("https://127.0.0.1:") and seen["healthz"] == (200, b"ok\n")


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            "metrics:\n  tls_certfile: missing.pem\n",
            "metrics.tls_certfile: expected an existing file, got 'missing.pem'",
        ),
        (
            "metrics:\n  tls_keyfile: key.pem\n",
            "metrics.tls_keyfile: expected tls_certfile too (the certificate the key belongs to), got no tls_certfile",
        ),
    ],
)
def test_tls_settings_for_the_endpoints_are_checked_at_load(tmp_path, settings, message):
    path = write_config(tmp_path, settings)
    assert load_error(path) == f"{path}: {message}"


# --- YAML ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["config.yaml", "pipelines/weather.yaml"])
def test_yaml_that_would_run_code_is_a_config_error_and_runs_nothing(tmp_path, file):
    marker = tmp_path / "pwned"
    path = write_config(tmp_path, "")
    target = tmp_path / file
    command = json.dumps(f"touch {shlex.quote(str(marker))}")
    target.write_text(f"device: !!python/object/apply:os.system [{command}]\n" + target.read_text())
    message = load_error(path)
    assert message.startswith(f"{target}: not valid YAML") and "python/object/apply:os.system" in message
    assert not marker.exists()
    yaml.unsafe_load(target.read_text())  # the same text loaded unsafely does run the command: the attack is live
    assert marker.exists()
