"""Render the kustomizations under deploy/kubernetes without kustomize (not installed here).

Only the subset those files use, and loudly nothing else: an unknown kustomization
field, a patch that matches no resource, or a patch construct whose strategic-merge
meaning is not modelled here raises ``KustomizeError`` instead of rendering
something kustomize would render differently.

Contract:
- ``render(dir)`` → the resources ``kustomize build dir`` would output (as dicts, in
  the order listed), supporting:
  - ``resources``: YAML files (several documents each) and directories holding a
    ``kustomization.yaml`` (rendered recursively; a resource listed twice raises);
  - ``namespace``: set on every namespaced resource (not on a Namespace);
  - ``configMapGenerator``: ``name`` + ``files`` (``KEY=PATH`` or ``PATH``) and/or
    ``literals``, with ``options.disableNameSuffixHash: true`` only (the hash suffix
    and the name references it rewrites are not modelled);
  - ``patches``: ``path`` to a strategic-merge patch naming its target by
    ``kind`` + ``metadata.name``. Maps merge recursively, ``null`` deletes a key,
    lists of containers, initContainers, env, volumes (by ``name``) and volumeMounts
    (by ``mountPath``) merge by key; any other list in a patch raises, as do
    ``$patch`` directives.
- ``KustomizeError``: what is not supported, or not consistent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_FIELDS = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
# Strategic-merge keys of the lists a patch may touch (k8s.io/api patchMergeKey tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not model, or is inconsistent."""


def render(directory: Path) -> list[Resource]:
    kustomization = _load_kustomization(directory)
    unknown = set(kustomization) - _FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources") or []:
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator") or []:
        resources.append(_config_map(directory, generator))
    for patch in kustomization.get("patches") or []:
        _apply_patch(directory, patch, resources)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = namespace
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        ident = _ident(resource)
        if ident in seen:
            raise KustomizeError(f"{directory}: {ident} is listed twice")
        seen.add(ident)
    return resources


def _load_kustomization(directory: Path) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text())
            if not isinstance(data, dict):
                raise KustomizeError(f"{path}: not a mapping")
            return data
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _ident(resource: Resource) -> tuple[str, str, str]:
    meta = resource.get("metadata") or {}
    return (resource["kind"], meta.get("namespace", ""), meta["name"])


def _config_map(directory: Path, generator: dict[str, Any]) -> Resource:
    unknown = set(generator) - {"name", "files", "literals", "options"}
    if unknown:
        raise KustomizeError(f"configMapGenerator: unsupported fields {sorted(unknown)}")
    if (generator.get("options") or {}) != {"disableNameSuffixHash": True}:
        raise KustomizeError("configMapGenerator: only options.disableNameSuffixHash: true")
    data: dict[str, str] = {}
    for spec in generator.get("files") or []:
        key, sep, rel = str(spec).partition("=")
        if not sep:
            key, rel = Path(spec).name, spec
        data[key] = (directory / rel).read_text()
    for literal in generator.get("literals") or []:
        key, _, value = str(literal).partition("=")
        data[key] = value
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


def _apply_patch(directory: Path, entry: dict[str, Any], resources: list[Resource]) -> None:
    if set(entry) != {"path"}:
        raise KustomizeError(f"patches: only `path` is supported, not {sorted(entry)}")
    patch = yaml.safe_load((directory / entry["path"]).read_text())
    kind, name = patch["kind"], patch["metadata"]["name"]
    targets = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(targets) != 1:
        raise KustomizeError(f"patch {entry['path']}: {len(targets)} resources are {kind}/{name}")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    merged = _merge(targets[0], body, field="")
    targets[0].clear()
    targets[0].update(merged)


def _merge(base: Any, patch: Any, *, field: str) -> Any:
    if isinstance(patch, dict):
        if "$patch" in patch or any(str(k).startswith("$") for k in patch):
            raise KustomizeError(f"{field}: $patch directives are not supported")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _merge(out[key], value, field=key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list):
        merge_key = _MERGE_KEYS.get(field)
        if merge_key is None or not isinstance(base, list):
            raise KustomizeError(f"{field}: patching this list is not modelled")
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = [i for i, old in enumerate(out_list) if old.get(merge_key) == item[merge_key]]
            if match:
                out_list[match[0]] = _merge(out_list[match[0]], item, field=field)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return patch
