"""The systemd unit runs `forecaster run` with the shipped environment file, stops cleanly and keeps its state."""

import configparser
import shlex

import pytest

from forecaster.cli import EXIT_CONFIG
from forecaster.config import MetricsServer
from forecaster.schema import is_secret

from deploy_support import DEPLOY, REPO, load_config_with_env

UNIT = DEPLOY / "systemd" / "forecaster.service"
ENV_FILE = DEPLOY / "systemd" / "forecaster.env"
OPERATIONS = REPO / "docs" / "operations.md"


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def environment_file() -> dict[str, str]:
    pairs = [
        line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    return {key: value for key, value in pairs}


def test_the_unit_runs_forecaster_run_after_checking_the_config(unit):
    service = unit["Service"]
    run, check = shlex.split(service["ExecStart"]), shlex.split(service["ExecStartPre"])
    assert run[0].endswith("/.venv/bin/forecaster") and run[1] == "run"
    assert check[0] == run[0] and check[1] == "check"
    assert run[run.index("-c") + 1] == check[check.index("-c") + 1] == f"{service['WorkingDirectory']}/config.yaml"


def test_the_unit_stops_with_sigterm_and_waits_longer_than_the_daemon_needs(unit):
    service = unit["Service"]
    run = shlex.split(service["ExecStart"])
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > float(run[run.index("--shutdown-timeout") + 1])


def test_the_unit_restarts_on_failure_but_not_on_a_bad_configuration(unit):
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)


def test_the_environment_file_puts_state_in_the_units_state_directory(unit, monkeypatch):
    service = unit["Service"]
    assert service["EnvironmentFile"] == f"/etc/forecaster/{ENV_FILE.name}"
    config = load_config_with_env(monkeypatch, environment_file())
    assert config.settings.state_dir == f"/var/lib/{service['StateDirectory']}"
    assert config.settings.state_dir in service["ReadWritePaths"].split()
    assert config.settings.metrics.port == MetricsServer().port
    assert config.settings.kafka.bootstrap_servers == environment_file()["KAFKA_BOOTSTRAP"]


def test_the_unit_runs_as_an_unprivileged_user(unit):
    service = unit["Service"]
    assert service["User"] == "forecaster" and service["NoNewPrivileges"] == "true"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_secrets_never_reach_a_command_line_or_the_world_readable_unit(unit):
    service = unit["Service"]
    for key in ("ExecStartPre", "ExecStart"):  # anyone on the machine can read a process's arguments
        words = shlex.split(service[key])
        assert not [w for w in words if "$" in w or is_secret(w)], f"{key} expands the environment or names a secret"
    assert "Environment" not in service, "a unit file is world-readable: settings go to the environment file"


def test_the_environment_file_is_installed_for_root_alone_and_ships_no_secret(unit):
    installs = [
        line
        for text in (UNIT.read_text(), OPERATIONS.read_text())
        for line in text.splitlines()
        if "install " in line and ENV_FILE.name in line
    ]
    assert len(installs) == 2 and all("-m 0600 -o root -g root" in line for line in installs)
    assert {key for key, value in environment_file().items() if is_secret(key) and value} == set()
    assert "# KAFKA_PASSWORD=" in ENV_FILE.read_text().splitlines()  # where it goes, unset


def test_what_the_daemon_writes_is_private_to_its_user(unit):
    service = unit["Service"]
    assert service["UMask"] == "0077" and service["StateDirectoryMode"] == "0700"
