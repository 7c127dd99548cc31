"""The Kubernetes manifests fit together and fit the code: labels, ports, probes, config, state volume."""

import json
import shlex
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from forecaster.config import MetricsServer
from forecaster.io.broker import free_port
from forecaster.io.http import StatusServer

from deploy_support import (
    K8S,
    REPO,
    alert_rules,
    env_of,
    http_get,
    load_config_with_env,
    manifests,
    materialise,
    stage_value,
)

METRICS_PORT = MetricsServer().port


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return manifests(K8S)


@pytest.fixture(scope="module")
def pod(objects) -> dict:
    return objects["StatefulSet"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_kustomization_lists_every_manifest_of_the_folder(objects):
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(objects) == {"ConfigMap", "Service", "StatefulSet", "ServiceMonitor", "PodDisruptionBudget"}


def test_selectors_match_the_pods_and_the_service(objects, pod):
    labels = pod["metadata"]["labels"]
    assert selects(objects["StatefulSet"]["spec"]["selector"]["matchLabels"], labels)
    assert selects(objects["Service"]["spec"]["selector"], labels)
    assert selects(objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert selects(
        objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"], objects["Service"]["metadata"]["labels"]
    )


def test_the_service_governs_the_statefulset_and_exposes_the_metrics_port(objects, container):
    service = objects["Service"]
    assert objects["StatefulSet"]["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    (port,) = service["spec"]["ports"]
    (container_port,) = container["ports"]
    assert port["port"] == container_port["containerPort"] == METRICS_PORT
    assert port["targetPort"] == container_port["name"] == "metrics"
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def test_prometheus_names_the_job_as_the_alert_rules_expect(objects):
    """A ServiceMonitor without jobLabel names the job after the Service."""
    assert "jobLabel" not in objects["ServiceMonitor"]["spec"]
    assert objects["Service"]["metadata"]["name"] == "forecaster"
    assert any('job="forecaster"' in rule["expr"] for rule in alert_rules())


def test_the_pdb_never_blocks_a_drain_of_a_single_replica(objects):
    spec = objects["PodDisruptionBudget"]["spec"]
    assert spec.get("maxUnavailable", 0) >= 1 and "minAvailable" not in spec
    assert objects["PodDisruptionBudget"]["apiVersion"] == "policy/v1"


def test_the_daemon_runs_forecaster_run_and_the_init_container_creates_topics(pod, container):
    entrypoint = json.loads(stage_value("ENTRYPOINT"))  # args replace the image's CMD, not its ENTRYPOINT
    assert entrypoint + container["args"][:1] == ["forecaster", "run"]
    assert "command" not in container
    (init,) = pod["spec"]["initContainers"]
    assert init["args"][0] == "topics" and init["image"] == container["image"]
    assert init["env"] == container["env"] and init["volumeMounts"] == container["volumeMounts"]


def test_probes_hit_the_daemons_health_and_readiness_endpoints(container):
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ready = {"now": False}
    server = StatusServer(
        "127.0.0.1", free_port(), CollectorRegistry(), lambda: (ready["now"], "ready" if ready["now"] else "not ready")
    ).start()
    try:
        liveness = server.address + container["livenessProbe"]["httpGet"]["path"]
        readiness = server.address + container["readinessProbe"]["httpGet"]["path"]
        # alive, not restarted, kept out of service
        assert http_get(liveness)[0] == 200 and http_get(readiness)[0] == 503
        ready["now"] = True
        assert http_get(liveness)[0] == 200 and http_get(readiness)[0] == 200
    finally:
        server.close()


def test_the_grace_period_outlasts_the_shutdown_timeout(pod, container):
    timeout = float(container["args"][container["args"].index("--shutdown-timeout") + 1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > timeout


def test_the_pod_runs_as_the_images_non_root_user(pod, container):
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == stage_value("USER").split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"], "a read-only root needs a writable /tmp"


def test_checkpoints_live_on_the_claimed_volume(objects, container, monkeypatch):
    (claim,) = objects["StatefulSet"]["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config = load_config_with_env(monkeypatch, env_of(container))
    assert config.settings.state_dir == "/var/lib/forecaster"
    assert mounts[config.settings.state_dir] == claim["metadata"]["name"]


def test_the_configmap_holds_the_repositorys_config_and_pipelines(objects):
    data = objects["ConfigMap"]["data"]
    settings = yaml.safe_load((REPO / "config.yaml").read_text())
    hint = "regenerate deploy/kubernetes/configmap.yaml (see its header)"
    assert data["config.yaml"] == (REPO / "config.yaml").read_text(), hint
    for pipeline in settings["pipelines"]:
        assert data[Path(pipeline).name] == (REPO / pipeline).read_text(), hint
    assert set(data) == {"config.yaml"} | {Path(p).name for p in settings["pipelines"]}


def test_the_pod_loads_its_config_with_every_pipeline_and_serves_metrics_on_the_container_port(
    objects, pod, container, monkeypatch, tmp_path
):
    config_path = materialise(pod, container, objects["ConfigMap"], tmp_path)
    config = load_config_with_env(monkeypatch, env_of(container), config_path)
    names = [Path(p).stem for p in yaml.safe_load((REPO / "config.yaml").read_text())["pipelines"]]
    assert [p.name for p in config.pipelines] == names
    assert config.settings.metrics.host == "0.0.0.0"
    assert config.settings.metrics.port == container["ports"][0]["containerPort"]
    assert config.settings.log_format == "json"
    assert shlex.join(container["args"][:3]) == f"run -c /{config_path.relative_to(tmp_path)}"
