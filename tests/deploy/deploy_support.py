"""Helpers for the tests of deploy/: the files, the real Prometheus tools, metric names in PromQL."""

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from forecaster import config as config_module
from forecaster.metrics import Metrics

from kafka_support import wait_for  # noqa: F401 - the deploy tests wait through it too

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yaml"
DASHBOARD = DEPLOY / "grafana" / "forecaster.json"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "kubernetes"

# The samples a metric family exposes, by type (the text exposition format's suffixes).
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
_METRIC_NAME = re.compile(r"\bforecaster_[a-z0-9_]+\b")


def tool(name: str) -> str:
    """The path of a Prometheus tool; a missing one fails the test (make test installs it)."""
    path = shutil.which(name)
    assert path, (
        f"{name} is not on PATH: install Debian's prometheus package (`make test` does: apt-get install prometheus)"
    )
    return path


def exported_sample_names() -> set[str]:
    """Every sample name the exporter can expose, histogram _bucket/_sum/_count included."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name + suffix for family in registry.collect() for suffix in _SAMPLE_SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """forecaster_* metric names a PromQL expression selects (label names never start with forecaster_)."""
    return set(_METRIC_NAME.findall(expr))


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and query variable."""
    board = dashboard()
    queries = [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((f"variable {variable['name']}", variable["definition"]))
    return queries


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def stage_value(keyword: str) -> str:
    values = [rest for k, rest in final_stage() if k == keyword]
    assert values, f"no {keyword} in the final stage"
    return values[-1]


def image_env() -> dict[str, str]:
    env = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def image_command() -> list[str]:
    return json.loads(stage_value("ENTRYPOINT")) + json.loads(stage_value("CMD"))


def load_config_with_env(monkeypatch, env: dict[str, str], path: Path = REPO / "config.yaml") -> config_module.Config:
    """config.yaml as a deployment sees it: with exactly that deployment's FORECASTER_* and KAFKA_* environment."""
    for name in list(os.environ):
        if name.startswith(("FORECASTER_", "KAFKA_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return config_module.load(path)


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; connection failures and HTTP errors alike come back as a status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


@contextlib.contextmanager
def prometheus_server(config: Path, directory: Path, port: int):
    """A real Prometheus on 127.0.0.1:port with its own data directory; yields its base URL."""
    log = open(directory / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: process.poll() is not None or http_get(url + "/-/ready")[0] == 200, 20, "Prometheus to be ready"
        )
        assert process.poll() is None, f"prometheus exited: {(directory / 'prometheus.log').read_text()}"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(url: str, promql: str) -> dict:
    """The `data` of an instant query through Prometheus' HTTP API; a failed query fails the test."""
    status, body = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    answer = json.loads(body or b"{}")
    assert status == 200 and answer.get("status") == "success", f"query {promql!r} failed: {status} {answer}"
    return answer["data"]


def manifests(folder: Path) -> dict[str, dict]:
    """{kind: object} of every manifest the folder's kustomization.yaml lists as a file."""
    found = {}
    for name in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]:
        for document in yaml.safe_load_all((folder / name).read_text()):
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def materialise(pod: dict, container: dict, configmap: dict, root: Path) -> Path:
    """Lay out the pod's ConfigMap mounts under `root`, the image's other files beside them; return the config path."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        source = volumes.get(mount["name"], {}).get("configMap")
        if source is None:
            continue
        assert source["name"] == configmap["metadata"]["name"]
        target = root / mount["mountPath"].lstrip("/")
        for item in source["items"]:
            if mount.get("subPath") and item["path"] != mount["subPath"]:
                continue
            path = target if mount.get("subPath") else target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(configmap["data"][item["key"]])
    (root / "opt/forecaster/models").symlink_to(REPO / "models")  # COPY models ./models in the image
    args = container["args"]
    return root / args[args.index("-c") + 1].lstrip("/")
