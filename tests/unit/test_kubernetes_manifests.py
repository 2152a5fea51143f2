"""deploy/kubernetes: both overlays render, validate against the Kubernetes schemas
(kubernetes-validate, strict: an unknown field is an error), and have the properties
the deployment promises — probes, non-root, read-only root, requests, secrets by
reference, a PVC for one node, a PDB and anti-affinity for the cluster.

Rendering uses ``tests/harness/kustomize.py`` (kustomize is not installed here); its
output was identical to ``kubectl kustomize`` (kustomize v5.5.0) for both overlays.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from registry_cache.config import ENV_PREFIX, ENV_SETTINGS, build_settings
from registry_cache.units import parse_size
from tests.harness.kustomize import KustomizeError, Resource, render

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = {"single-node": "StatefulSet", "cluster": "Deployment"}
# The oldest release still common in long-term distributions, and the newest the
# pinned kubernetes-validate ships.
VERSIONS = ("1.29", "1.37")
POD_LABELS = {"app.kubernetes.io/name": "registry-cache"}
# The settings cluster mode reads (issue 11 / the lead's plan), by exact name.
CLUSTER_ENV = {
    "REGISTRY_CACHE_INDEX",
    "REGISTRY_CACHE_INDEX_PASSWORD_FILE",
    "REGISTRY_CACHE_ADVERTISE",
    "REGISTRY_CACHE_CLUSTER_SECRET_FILE",
    "REGISTRY_CACHE_STORAGE",
    "REGISTRY_CACHE_S3_ENDPOINT",
    "REGISTRY_CACHE_S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "REGISTRY_CACHE_SHARED_MAX_SIZE",
    "REGISTRY_CACHE_MAX_SIZE",
}
SENSITIVE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|_INDEX$|_STORAGE$")


def rendered(overlay: str) -> list[Resource]:
    return render(KUBERNETES / "overlays" / overlay)


def only(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    found = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def workload(overlay: str) -> tuple[list[Resource], Resource, dict[str, Any], dict[str, Any]]:
    """(all resources, the workload, its pod spec, its registry-cache container)."""
    resources = rendered(overlay)
    work = only(resources, OVERLAYS[overlay])
    pod = work["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "registry-cache"]
    return resources, work, pod, container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def keys_of(data: object) -> list[str]:
    """Every mapping key at any depth."""
    if isinstance(data, dict):
        return [str(k) for k in data] + [k for v in data.values() for k in keys_of(v)]
    if isinstance(data, list):
        return [k for v in data for k in keys_of(v)]
    return []


def image_uid() -> int:
    """The uid of the Dockerfile's (last) USER, which must be numeric for runAsNonRoot."""
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    return int(users[-1].split(":")[0])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_resource_validates_against_the_kubernetes_schemas(
    overlay: str, version: str
) -> None:
    resources = rendered(overlay)
    kinds = {r["kind"] for r in resources}
    assert {"Namespace", "ConfigMap", "Service", OVERLAYS[overlay]} <= kinds
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)  # raises on any problem


def test_the_validator_rejects_unknown_fields_and_wrong_types() -> None:
    _, work, _, container = workload("cluster")
    container["livenessProbe"]["httpGett"] = container["livenessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(work, VERSIONS[-1], strict=True)
    _, work, _, _ = workload("cluster")
    work["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        kubernetes_validate.validate(work, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pods_are_probed_non_root_read_only_and_sized(overlay: str) -> None:
    _, work, pod, container = workload(overlay)
    assert work["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert work["spec"]["template"]["metadata"]["labels"] == POD_LABELS
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 5000}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"

    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == image_uid() == 10001
    assert pod_security["fsGroup"] == pod_security["runAsGroup"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert env_of(container)["PYTHONDONTWRITEBYTECODE"]["value"] == "1"
    # A Service named registry-cache would inject REGISTRY_CACHE_PORT and friends into
    # the environment the cache reads its settings from.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False

    resources = container["resources"]
    assert set(resources["requests"]) >= {"cpu", "memory"}
    assert "cpu" not in resources.get("limits", {})  # throttling stalls sendfile hits
    request = parse_size(resources["requests"]["memory"])
    assert parse_size(resources["limits"]["memory"]) >= 4 * request
    # Shutdown: preStop, then shutdown_grace for in-flight transfers, inside the kill deadline.
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] >= 5 + 30


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_config_map_is_a_valid_configuration_matching_the_pod(overlay: str, tmp_path: Path) -> None:
    resources, _, pod, container = workload(overlay)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_path = Path(env_of(container)["REGISTRY_CACHE_CONFIG"]["value"])
    mount = mounts[str(config_path.parent)]
    assert mount["readOnly"] is True
    config_map_name = volumes[mount["name"]]["configMap"]["name"]
    config_map = only(resources, "ConfigMap", config_map_name)
    text = config_map["data"][config_path.name]
    assert not set(keys_of(yaml.safe_load(text))) & {"username", "password", "htpasswd"}

    config_file = tmp_path / config_path.name
    config_file.write_text(text)
    # The literal settings the pod sets are read on top of the file, as in the pod.
    literal = {
        e["name"]: e["value"]
        for e in container["env"]
        if "value" in e and e["name"].removeprefix(ENV_PREFIX).lower() in ENV_SETTINGS
    }
    settings = build_settings(config_file=config_file, environ=literal, dotenv=None)
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.host == "0.0.0.0"  # the pod's address; probes and Services reach it
    assert str(settings.data_dir) in mounts  # blobs and the index on the data volume
    assert settings.workers == 1
    assert container["args"] == ["serve"]  # no flag overrides the file's data_dir


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    resources, _, pod, container = workload(overlay)
    assert not [r for r in resources if r["kind"] == "Secret"]
    secret_mounts = {
        m["mountPath"]: v["secret"]
        for m in container["volumeMounts"]
        for v in pod.get("volumes", [])
        if v["name"] == m["name"] and "secret" in v
    }
    for name, entry in env_of(container).items():
        if not SENSITIVE.search(name):
            continue
        if name.endswith("_FILE"):  # a path into a mounted Secret, readable by the pod
            directory, _, key = entry["value"].rpartition("/")
            secret = secret_mounts[directory]
            assert key in [item["path"] for item in secret["items"]], name
        else:
            assert set(entry) == {"name", "valueFrom"}, name
            assert set(entry["valueFrom"]) == {"secretKeyRef"}, name
    (upstreams,) = container["envFrom"]
    assert upstreams == {"secretRef": {"name": "registry-cache-upstreams", "optional": True}}
    for entry in container["env"]:
        assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(entry.get("value", ""))), entry


def test_single_node_is_a_statefulset_on_its_own_volume() -> None:
    resources, work, _, container = workload("single-node")
    assert work["spec"]["replicas"] == 1
    (claim,) = work["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert parse_size(claim["spec"]["resources"]["requests"]["storage"]) > 0
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    headless = only(resources, "Service", work["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == POD_LABELS
    # The disk is the cache's own, so a share of it is the limit.
    assert 0 < int(env_of(container)["REGISTRY_CACHE_MAX_DISK_PERCENT"]["value"]) < 95
    service = only(resources, "Service", "registry-cache")
    assert service["spec"]["type"] == "NodePort"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_nodes_reach_the_cache_on_a_fixed_node_port(overlay: str) -> None:
    resources, _, _, _ = workload(overlay)
    service = only(resources, "Service", "registry-cache")
    assert service["spec"]["selector"] == POD_LABELS
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 5000, "targetPort": "http", "nodePort": 30500}
    namespace = only(resources, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }


def test_cluster_runs_replicas_spread_and_guarded_by_a_disruption_budget() -> None:
    resources, work, pod, _ = workload("cluster")
    replicas = work["spec"]["replicas"]
    assert replicas == 3
    assert work["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = only(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert pdb["spec"]["maxUnavailable"] == 1 < replicas
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == POD_LABELS
    assert only(resources, "Service", "registry-cache")["spec"]["type"] == "LoadBalancer"
    assert "StatefulSet" not in {r["kind"] for r in resources}


def test_cluster_settings_use_the_planned_names_from_secrets() -> None:
    _, _, pod, container = workload("cluster")
    env = env_of(container)
    assert set(env) >= CLUSTER_ENV
    names = [e["name"] for e in container["env"]]
    # $(POD_IP) expands only from a variable defined before it.
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert names.index("POD_IP") < names.index("REGISTRY_CACHE_ADVERTISE")
    assert env["REGISTRY_CACHE_ADVERTISE"]["value"] == "http://$(POD_IP):5000"
    refs = {
        name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name, e in env.items()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "REGISTRY_CACHE_INDEX": ("registry-cache-postgres", "url"),
        "REGISTRY_CACHE_STORAGE": ("registry-cache-s3", "storage"),
        "REGISTRY_CACHE_S3_ENDPOINT": ("registry-cache-s3", "endpoint"),
        "REGISTRY_CACHE_S3_REGION": ("registry-cache-s3", "region"),
        "AWS_ACCESS_KEY_ID": ("registry-cache-s3", "access-key-id"),
        "AWS_SECRET_ACCESS_KEY": ("registry-cache-s3", "secret-access-key"),
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for name, secret in (
        ("REGISTRY_CACHE_INDEX_PASSWORD_FILE", "registry-cache-postgres"),
        ("REGISTRY_CACHE_CLUSTER_SECRET_FILE", "registry-cache-cluster"),
    ):
        directory = env[name]["value"].rpartition("/")[0]
        assert volumes[mounts[directory]]["secret"]["secretName"] == secret, name
    # The local tier stays under the emptyDir's limit (else the kubelet evicts the pod),
    # with room for fills in flight above eviction's high-water mark.
    local = parse_size(env["REGISTRY_CACHE_MAX_SIZE"]["value"])
    size_limit = parse_size(volumes[mounts["/data"]]["emptyDir"]["sizeLimit"])
    assert local <= 0.85 * size_limit
    assert parse_size(container["resources"]["requests"]["ephemeral-storage"]) >= size_limit
    assert parse_size(env["REGISTRY_CACHE_SHARED_MAX_SIZE"]["value"]) > local


# -- the renderer itself: it must refuse what it does not model ----------------------


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def deployment(env: list[dict[str, str]]) -> dict[str, Any]:
    container = {"name": "app", "image": "app:1", "env": env, "args": ["a"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def kustomization(**fields: object) -> dict[str, object]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def test_renderer_merges_patches_by_strategic_merge_keys(tmp_path: Path) -> None:
    write(tmp_path / "base" / "app.yaml", deployment([{"name": "A", "value": "1"}]))
    write(tmp_path / "base" / "kustomization.yaml", kustomization(resources=["app.yaml"]))
    patch = deployment([{"name": "A", "value": "2"}, {"name": "B", "value": "3"}])
    del patch["spec"]["template"]["spec"]["containers"][0]["args"]
    patch["spec"]["template"]["spec"]["containers"][0]["image"] = None  # null deletes
    write(tmp_path / "over" / "patch.yaml", patch)
    write(
        tmp_path / "over" / "kustomization.yaml",
        kustomization(resources=["../base"], namespace="ns", patches=[{"path": "patch.yaml"}]),
    )
    (out,) = render(tmp_path / "over")
    (container,) = out["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "app",
        "args": ["a"],
        "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
    }
    assert out["metadata"] == {"name": "app", "namespace": "ns"}


@pytest.mark.parametrize(
    ("fields", "files", "message"),
    [
        ({"images": [{"name": "app"}]}, {}, "unsupported kustomization fields"),
        ({"patches": [{"path": "p.yaml"}]}, {"p.yaml": {"kind": "Service"}}, "p.yaml"),
        (
            {"patches": [{"path": "p.yaml"}]},
            {"p.yaml": deployment([])},  # its args: an atomic list, replaced by kustomize
            "args: patching this list is not modelled",
        ),
        (
            {"configMapGenerator": [{"name": "c", "literals": ["a=b"]}]},
            {},
            "disableNameSuffixHash",
        ),
    ],
)
def test_renderer_refuses_what_it_does_not_model(
    tmp_path: Path, fields: dict[str, object], files: dict[str, Any], message: str
) -> None:
    write(tmp_path / "app.yaml", deployment([]))
    for name, data in files.items():
        data.setdefault("metadata", {"name": "missing"})
        write(tmp_path / name, data)
    write(tmp_path / "kustomization.yaml", kustomization(resources=["app.yaml"], **fields))
    with pytest.raises(KustomizeError, match=message):
        render(tmp_path)
