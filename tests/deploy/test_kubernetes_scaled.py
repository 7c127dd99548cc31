"""deploy/kubernetes-scaled: the base with several members, whose pipelines keep their state in the changelog."""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy_support import DEPLOY, K8S, REPO, env_of, load_config_with_env, manifests, materialise

SCALED = DEPLOY / "kubernetes-scaled"
KUSTOMIZATION = yaml.safe_load((SCALED / "kustomization.yaml").read_text())


def merged(base: dict, patch: dict) -> dict:
    """A strategic merge patch as kustomize applies these: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def scaled_objects() -> dict[str, dict]:
    """{kind: object} of the overlay: the base's, its pipeline files merged into the ConfigMap, its patches applied."""
    objects = manifests(K8S)
    (generator,) = KUSTOMIZATION["configMapGenerator"]
    configmap = objects["ConfigMap"]
    assert generator["name"] == configmap["metadata"]["name"] and generator["behavior"] == "merge"
    configmap["data"].update({Path(f).name: (SCALED / f).read_text() for f in generator["files"]})
    for patch in KUSTOMIZATION["patches"]:
        document = yaml.safe_load((SCALED / patch["path"]).read_text())
        target = objects[document["kind"]]
        assert document["metadata"]["name"] == target["metadata"]["name"]
        objects[document["kind"]] = merged(target, document)
    return objects


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return scaled_objects()


def test_the_overlay_builds_on_the_base_and_replaces_every_pipeline_file_only(objects):
    assert [(SCALED / r).resolve() for r in KUSTOMIZATION["resources"]] == [K8S.resolve()]
    settings = yaml.safe_load((REPO / "config.yaml").read_text())
    (generator,) = KUSTOMIZATION["configMapGenerator"]
    assert sorted(Path(f).name for f in generator["files"]) == sorted(Path(p).name for p in settings["pipelines"])
    assert objects["ConfigMap"]["data"]["config.yaml"] == (REPO / "config.yaml").read_text()


@pytest.mark.parametrize("name", ["stock", "weather", "power_load"])
def test_a_scaled_pipeline_is_the_repositorys_with_its_state_in_the_changelog(name):
    """Drift check: the overlay's file differs from pipelines/<name>.yaml in the settings several members need only."""
    expected = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
    expected["spill"] = "none"
    expected["checkpoint"] = {"changelog": True}
    hint = f"make deploy/kubernetes-scaled/pipelines/{name}.yaml pipelines/{name}.yaml with those three changes"
    assert yaml.safe_load((SCALED / "pipelines" / f"{name}.yaml").read_text()) == expected, hint


def test_several_pods_load_pipelines_that_keep_their_state_in_the_changelog(objects, monkeypatch, tmp_path):
    pod = objects["StatefulSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    config = load_config_with_env(
        monkeypatch, env_of(container), materialise(pod, container, objects["ConfigMap"], tmp_path)
    )
    replicas = objects["StatefulSet"]["spec"]["replicas"]
    assert replicas > 1
    for pipeline in config.pipelines:
        assert pipeline.checkpoint.changelog and pipeline.spill == "none" and pipeline.retraining.enabled
        assert replicas <= pipeline.partitions, f"{pipeline.name}: a member beyond the partitions has nothing to do"


def test_a_drain_takes_one_member_at_a_time_and_never_waits_on_an_unready_one(objects):
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 1 < objects["StatefulSet"]["spec"]["replicas"]
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_a_scaled_down_members_volume_goes_with_it(objects):
    """With the changelog nothing on a pod's volume is needed by the next owner of its partitions."""
    assert objects["StatefulSet"]["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"


def test_kubectl_kustomize_renders_the_overlay_as_these_tests_read_it(objects):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not on PATH: the overlay is checked as these tests read it, not as kustomize renders it"
        )
    rendered = subprocess.run([kubectl, "kustomize", str(SCALED)], capture_output=True, text=True, check=True)
    assert {d["kind"]: d for d in yaml.safe_load_all(rendered.stdout)} == objects
