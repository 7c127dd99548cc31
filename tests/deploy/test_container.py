"""The Dockerfile and the compose file agree with the code: command, port, health probe, state, Kafka wiring.

Docker itself is not needed: both files are parsed, and what can run without Docker
(the HEALTHCHECK command, config.yaml under the image's environment) is run.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from forecaster.config import MetricsServer
from forecaster.io.broker import free_port
from forecaster.io.http import StatusServer

from deploy_support import (
    DEPLOY,
    DOCKERFILE,
    REPO,
    SCRAPE_CONFIG,
    final_stage,
    http_get,
    image_command,
    image_env,
    instructions,
    load_config_with_env,
    stage_value,
)

COMPOSE = DEPLOY / "docker-compose.yaml"
SCALED_COMPOSE = DEPLOY / "docker-compose.scaled.yaml"
METRICS_PORT = MetricsServer().port


def healthcheck_command() -> str:
    _, _, command = stage_value("HEALTHCHECK").partition(" CMD ")
    assert command, "HEALTHCHECK has no CMD"
    return command


# -- Dockerfile ------------------------------------------------------------------------------


def test_the_image_runs_forecaster_run_on_the_shipped_config():
    command = image_command()
    assert command[:2] == ["forecaster", "run"]
    assert command[command.index("-c") + 1] == "/opt/forecaster/config.yaml"
    copied = [rest.split() for keyword, rest in final_stage() if keyword == "COPY" and "--from" not in rest]
    assert ["config.yaml", "./"] in copied and stage_value("WORKDIR") == "/opt/forecaster"


def test_the_image_runs_as_a_non_root_user():
    user = stage_value("USER").split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_the_image_exposes_the_metrics_port_and_serves_it_on_every_interface(monkeypatch):
    assert stage_value("EXPOSE").split() == [str(METRICS_PORT)]
    config = load_config_with_env(monkeypatch, image_env())
    assert config.settings.metrics.port == METRICS_PORT
    assert config.settings.metrics.host == "0.0.0.0"


def test_the_image_keeps_state_in_its_volume(monkeypatch):
    config = load_config_with_env(monkeypatch, image_env())
    assert json.loads(stage_value("VOLUME")) == [config.settings.state_dir] == ["/var/lib/forecaster"]
    assert config.settings.log_format == "json"


def test_the_image_pins_the_same_torch_as_the_makefile_and_has_a_cuda_variant():
    dockerfile, makefile = DOCKERFILE.read_text(), (REPO / "Makefile").read_text()
    assert re.findall(r"torch==[\d.]+", dockerfile) == ["torch==2.13.0"]
    assert re.findall(r"torch==[\d.]+", makefile) == ["torch==2.13.0"]
    args = [rest for keyword, rest in instructions(dockerfile) if keyword == "ARG"]
    assert "VARIANT=cpu" in args
    install = next(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN" and "torch==" in rest)
    assert "cpu)" in install and "cuda)" in install and "download.pytorch.org/whl/cpu" in install


def test_the_image_installs_the_lock_with_its_hashes_then_torch_then_the_project_alone():
    """The dependencies come from deploy/requirements.lock (`make lock`), not from a resolver run at build time."""
    runs = [
        rest for keyword, rest in instructions(DOCKERFILE.read_text()) if keyword == "RUN" and "pip install" in rest
    ]
    lock, torch, project = (next(i for i, run in enumerate(runs) if key in run) for key in ("-r ", "torch==", " ."))
    assert lock < torch < project
    assert {"--require-hashes", "--no-deps", "requirements.lock"} <= set(runs[lock].split())
    assert "--no-deps" in runs[project].split() and "pip check" in runs[project]
    copied = [rest.split() for keyword, rest in instructions(DOCKERFILE.read_text()) if keyword == "COPY"]
    assert ["deploy/requirements.lock", "./"] in copied
    assert "deploy/requirements.lock" in (REPO / "Makefile").read_text(), "`make lock` refreshes it"


def test_everything_the_image_copies_exists_and_is_in_the_build_context():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context should be an allow-list"
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "COPY" and "--from" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in included, f"{source} is excluded by .dockerignore"


@pytest.fixture
def status_server():
    """The daemon's real HTTP endpoints on a free port, not ready (as while waiting for partitions)."""
    server = StatusServer("127.0.0.1", free_port(), CollectorRegistry(), lambda: (False, "not ready: starting")).start()
    yield server
    server.close()


def run_healthcheck(port: int) -> int:
    """The image's HEALTHCHECK command with this venv's python standing in for the image's."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "FORECASTER_METRICS_PORT": str(port)}
    return subprocess.run(["sh", "-c", healthcheck_command()], env=env, capture_output=True, timeout=30).returncode


def test_the_healthcheck_passes_while_the_daemon_answers_even_before_it_is_ready(status_server):
    assert "/healthz" in healthcheck_command()
    port = int(status_server.address.rsplit(":", 1)[1])
    assert http_get(status_server.address + "/readyz")[0] == 503
    assert run_healthcheck(port) == 0


def test_the_healthcheck_fails_when_nothing_answers():
    assert run_healthcheck(free_port()) != 0


# -- docker-compose.yaml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_kafka_topics_daemon_prometheus_and_grafana(compose):
    assert set(compose["services"]) == {"kafka", "topics", "forecaster", "prometheus", "grafana"}


def test_compose_kafka_is_a_single_kraft_node_without_zookeeper(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert not [key for key in env if "ZOOKEEPER" in key]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "forecaster creates its topics with the right partitions"
    assert kafka["healthcheck"]["test"]
    assert [v.split(":")[1] for v in kafka["volumes"]] == [env["KAFKA_LOG_DIRS"]], "broker data on its volume"


def test_compose_creates_the_topics_once_before_the_daemon_starts(compose):
    topics, daemon = compose["services"]["topics"], compose["services"]["forecaster"]
    assert topics["image"] == daemon["image"] and topics["build"] == daemon["build"]
    assert topics["command"][0] == "topics" and topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert daemon["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert ["forecaster"] + daemon["command"][:1] == image_command()[:2] == ["forecaster", "run"]


def test_compose_points_the_daemon_at_the_kafka_service(compose):
    advertised = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    listeners = {entry.split("://")[1] for entry in advertised.split(",")}
    assert compose["services"]["forecaster"]["environment"]["KAFKA_BOOTSTRAP"] in listeners


def test_compose_builds_the_image_from_the_dockerfile(compose):
    build = compose["services"]["forecaster"]["build"]
    assert ((COMPOSE.parent / build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE.resolve()


def test_compose_publishes_the_metrics_port_and_mounts_the_state_dir(compose, monkeypatch):
    daemon = compose["services"]["forecaster"]
    config = load_config_with_env(monkeypatch, {**image_env(), **daemon["environment"]})
    assert config.settings.metrics.port == METRICS_PORT
    assert [p.rsplit(":", 1)[1] for p in daemon["ports"]] == [str(METRICS_PORT)]
    assert [v.split(":")[1] for v in daemon["volumes"]] == [config.settings.state_dir]
    assert config.settings.kafka.bootstrap_servers == "kafka:9092"


def host_mounts(service: dict) -> dict[str, Path]:
    """{path in the container: file on the host} of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def test_compose_prometheus_loads_the_shipped_scrape_config_and_rules(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = host_mounts(prometheus)
    config_path = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert mounts[config_path] == SCRAPE_CONFIG.resolve()
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    for rule_file in scrape["rule_files"]:
        assert mounts[str(Path(config_path).parent / rule_file)] == (SCRAPE_CONFIG.parent / rule_file).resolve()
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "forecaster")
    (members,) = job["dns_sd_configs"]  # every container of the service, however many it is scaled to
    assert members["names"] == ["forecaster"] and "forecaster" in compose["services"]
    assert members["type"] == "A" and members["port"] == METRICS_PORT
    assert "static_configs" not in job


def test_compose_grafana_is_provisioned_with_the_datasource_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = host_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"] and any(
        p.endswith(":9090") for p in compose["services"]["prometheus"]["ports"]
    )
    provider = yaml.safe_load((provisioning / "dashboards" / "forecaster.yaml").read_text())["providers"][0]
    dashboards = [
        target for target, source in mounts.items() if source == (DEPLOY / "grafana" / "forecaster.json").resolve()
    ]
    assert [str(Path(d).parent) for d in dashboards] == [provider["options"]["path"]]


# -- docker-compose.scaled.yaml ------------------------------------------------------------


@pytest.fixture(scope="module")
def scaled():
    return yaml.safe_load(SCALED_COMPOSE.read_text())


def test_compose_scaled_runs_several_members_each_on_a_host_port_of_its_own(compose, scaled):
    assert set(scaled["services"]) == {"topics", "forecaster"}
    replicas = scaled["services"]["forecaster"]["deploy"]["replicas"]
    (published,) = compose["services"]["forecaster"]["ports"]  # "127.0.0.1:9108-9110:9108"
    first, last = map(int, published.split(":")[1].split("-"))
    assert first == METRICS_PORT and last - first + 1 >= replicas > 1


def test_compose_scaled_members_load_pipelines_that_keep_their_state_in_the_changelog(
    compose, scaled, monkeypatch, tmp_path
):
    """The image's config.yaml with the mounted pipeline files, as a member's environment expands it; `forecaster
    topics` reads the same files, so it creates the changelog topics the members need."""
    workdir = Path(stage_value("WORKDIR"))
    mounts = host_mounts(scaled["services"]["forecaster"])
    assert host_mounts(scaled["services"]["topics"]) == mounts
    assert list(mounts) == [str(workdir / "pipelines")], "the mount replaces the image's pipelines/"
    root = tmp_path / workdir.relative_to("/")
    shutil.copytree(mounts[str(workdir / "pipelines")], root / "pipelines")
    shutil.copy(REPO / "config.yaml", root / "config.yaml")  # COPY config.yaml ./ in the image
    (root / "models").symlink_to(REPO / "models")
    env = {**image_env(), **compose["services"]["forecaster"]["environment"]}
    config = load_config_with_env(monkeypatch, env, root / "config.yaml")
    replicas = scaled["services"]["forecaster"]["deploy"]["replicas"]
    for pipeline in config.pipelines:
        assert pipeline.checkpoint.changelog and pipeline.spill == "none" and pipeline.retraining.enabled
        assert replicas <= pipeline.partitions, f"{pipeline.name}: a member beyond the partitions has nothing to do"
