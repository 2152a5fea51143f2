"""What a node's container runtimes are configured to do with each registry.

Each reader turns one runtime's files into ``Mirror`` routes — the exact URL and
path style that runtime's pulls take — plus the ``Problem`` s visible in the files
alone (no network). ``doctor.probe`` then tries every route.

- k3s ``registries.yaml``: ``mirrors.<registry>.endpoint`` (k3s's normalisation:
  no scheme means https, or http for localhost; ``/v2`` appended unless the
  endpoint has its own path), ``configs.<endpoint host>.auth`` / ``.tls``. k3s
  renders hosts.toml from it, so requests carry ``?ns=<registry>``.
- containerd ``config.toml`` (CRI ``config_path``; CRI ``registry.configs.<host>.auth``)
  and ``<config_path>/<registry>/hosts.toml``: ``[host."URL"]`` tables in order,
  ``?ns=<registry>`` on every request to a host.
- Docker ``daemon.json``: ``registry-mirrors`` (Docker Hub only, no ``ns=``, no
  prefix), CA from ``/etc/docker/certs.d/<host:port>/ca.crt``; dockerd never sends
  credentials to a mirror.
- containers ``registries.conf`` (+ ``registries.conf.d/*.conf``): ``[[registry]]``
  with ``[[registry.mirror]]`` locations ``host[:port][/path]`` (the path is the
  prefix), ``insecure`` allowing plain http; logins from an ``auth.json``.
"""

from __future__ import annotations

import base64
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

Style = Literal["ns", "plain", "prefix"]
CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_V3_IMAGES = "io.containerd.cri.v1.images"
DOCKER_HUB = "docker.io"


@dataclass(frozen=True, slots=True)
class Problem:
    title: str  # what is wrong, in a few words
    detail: str  # where, and what it does
    fix: str


@dataclass(frozen=True, slots=True)
class Mirror:
    """One way a runtime pulls ``registry`` through an endpoint."""

    runtime: str
    registry: str
    base: str  # scheme://host[:port][/path]: requests go to base + "/<repo>/manifests/<tag>"
    style: Style
    source: str  # the file it came from
    login: tuple[str, str] | None = None
    ca_file: str | None = None
    skip_verify: bool = False
    http_fallback: bool = False  # containers' insecure: https first, then plain http

    @property
    def host(self) -> str:
        return urlsplit(self.base).hostname or ""

    @property
    def authority(self) -> str:
        return urlsplit(self.base).netloc

    def manifest_url(self, repo: str, tag: str, scheme: str | None = None) -> str:
        base = self.base
        if scheme is not None:
            base = scheme + base[base.index("://") :]
        url = f"{base}/{repo}/manifests/{tag}"
        return url + (f"?ns={self.registry}" if self.style == "ns" else "")

    def ping_url(self) -> str:
        """``/v2/`` of the endpoint (where a registry answers its login challenge)."""
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}/v2/"


@dataclass
class Runtime:
    name: str
    files: list[str]
    present: bool
    mirrors: list[Mirror] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Registries this runtime can never mirror (Docker: anything but Docker Hub).
    unmirrorable: str | None = None


def _is_local(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


# ---------------------------------------------------------------- k3s


def k3s_endpoint(endpoint: str) -> tuple[str, str]:
    """k3s's normalizeEndpointAddress: → (base URL for requests, host[:port])."""
    text = endpoint.strip()
    if "://" not in text:
        host = text.split("/", 1)[0]
        scheme = "http" if _is_local(host.rsplit(":", 1)[0].strip("[]")) else "https"
        text = f"{scheme}://{text}"
    parts = urlsplit(text)
    path = parts.path.rstrip("/")
    if path in ("", "/v2"):
        path = "/v2"
    return f"{parts.scheme}://{parts.netloc}{path}", parts.netloc


def read_k3s(path: Path) -> Runtime:
    runtime = Runtime("k3s", [str(path)], path.is_file())
    if not runtime.present:
        return runtime
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        runtime.problems.append(
            Problem(
                "registries.yaml does not parse",
                f"{path}: {exc}",
                "fix the YAML (k3s ignores the whole file), e.g. regenerate it with "
                "`registry-cache registries`",
            )
        )
        return runtime
    configs: dict[str, Any] = doc.get("configs") or {}
    for host, config in configs.items():
        tls = (config or {}).get("tls") or {}
        if "insecure" in tls:
            runtime.problems.append(
                Problem(
                    "tls.insecure where k3s reads insecure_skip_verify",
                    f'{path}: configs."{host}".tls.insecure is not a k3s setting and is '
                    "silently ignored",
                    f'rename it: configs."{host}".tls.insecure_skip_verify: true '
                    "(then restart k3s)",
                )
            )
    for registry, spec in (doc.get("mirrors") or {}).items():
        for endpoint in (spec or {}).get("endpoint") or []:
            base, authority = k3s_endpoint(str(endpoint))
            config = configs.get(authority) or {}
            auth = config.get("auth") or {}
            tls = config.get("tls") or {}
            login = (
                (str(auth["username"]), str(auth.get("password", "")))
                if auth.get("username")
                else None
            )
            runtime.mirrors.append(
                Mirror(
                    "k3s",
                    str(registry),
                    base,
                    "ns",
                    str(path),
                    login=login,
                    ca_file=tls.get("ca_file"),
                    skip_verify=bool(tls.get("insecure_skip_verify")),
                )
            )
    return runtime


# ---------------------------------------------------------------- containerd


def _cri_registry(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    plugins = doc.get("plugins") or {}
    if int(doc.get("version", 1) or 1) >= 3:
        return (plugins.get(CRI_V3_IMAGES) or {}).get("registry"), CRI_V3_IMAGES
    return (plugins.get(CRI_V2) or {}).get("registry"), CRI_V2


def read_containerd(config: Path, certs_dir: Path | None) -> Runtime:
    """``certs_dir`` overrides the CRI ``config_path`` (as ``ctr --hosts-dir`` does)."""
    runtime = Runtime("containerd", [str(config)], config.is_file())
    logins: dict[str, tuple[str, str]] = {}
    config_path: str | None = None
    if runtime.present:
        try:
            doc = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            runtime.problems.append(
                Problem("config.toml does not parse", f"{config}: {exc}", "fix the TOML")
            )
            return runtime
        registry, plugin = _cri_registry(doc)
        disabled = plugin in (doc.get("disabled_plugins") or []) or CRI_V2 in (
            doc.get("disabled_plugins") or []
        )
        config_path = (registry or {}).get("config_path")
        if disabled:
            runtime.notes.append(
                f"{config}: the CRI plugin is disabled (only ctr --hosts-dir reads hosts.toml)"
            )
        elif not config_path:
            runtime.problems.append(
                Problem(
                    "CRI config_path not set",
                    f"{config}: without it the CRI plugin (the kubelet's pulls) ignores every "
                    "certs.d/<registry>/hosts.toml and pulls straight from the registries",
                    f'add [plugins."{plugin}".registry] config_path = "/etc/containerd/certs.d" '
                    "to config.toml, then restart containerd",
                )
            )
        for host, spec in ((registry or {}).get("configs") or {}).items():
            auth = (spec or {}).get("auth") or {}
            if auth.get("username"):
                logins[str(host)] = (str(auth["username"]), str(auth.get("password", "")))
    hosts_dir = certs_dir or (Path(config_path) if config_path else None)
    if hosts_dir is None:
        return runtime
    runtime.files.append(str(hosts_dir))
    runtime.present = runtime.present or hosts_dir.is_dir()
    for hosts_toml in sorted(hosts_dir.glob("*/hosts.toml")):
        _read_hosts_toml(runtime, hosts_toml, logins)
    return runtime


def _read_hosts_toml(runtime: Runtime, path: Path, logins: dict[str, tuple[str, str]]) -> None:
    registry = path.parent.name
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        runtime.problems.append(
            Problem(
                "hosts.toml does not parse",
                f"{path}: {exc}; containerd then pulls {registry} straight from upstream",
                "regenerate it with `registry-cache containerd-hosts --out DIR`",
            )
        )
        return
    hosts = doc.get("host") or {}
    if not hosts:
        runtime.problems.append(
            Problem(
                "hosts.toml without a [host] table",
                f'{path} has no [host."…"] table: containerd 1.6 rejects the file, later '
                f"versions use only server = {doc.get('server', '(none)')!r}: {registry} is "
                "not mirrored",
                'add [host."http://<cache>:5000"] with capabilities = ["pull", "resolve"] '
                "(`registry-cache containerd-hosts` writes it)",
            )
        )
        return
    for url, spec in hosts.items():
        spec = spec or {}  # noqa: PLW2901 - a bare [host."…"] table
        capabilities = spec.get("capabilities", ["pull", "resolve", "push"])
        if "pull" not in capabilities and "resolve" not in capabilities:
            continue
        text = url if "://" in url else f"https://{url}"
        base = text.rstrip("/") if spec.get("override_path") else text.rstrip("/") + "/v2"
        ca = spec.get("ca")
        runtime.mirrors.append(
            Mirror(
                "containerd",
                registry,
                base,
                "ns",
                str(path),
                login=logins.get(urlsplit(text).netloc),
                ca_file=str(ca[0] if isinstance(ca, list) else ca) if ca else None,
                skip_verify=bool(spec.get("skip_verify")),
            )
        )


# ---------------------------------------------------------------- Docker


def read_docker(path: Path, certs_dir: Path) -> Runtime:
    runtime = Runtime("Docker", [str(path)], path.is_file(), unmirrorable=DOCKER_HUB)
    if not runtime.present:
        return runtime
    try:
        doc = json.loads(path.read_text() or "{}")
    except (OSError, ValueError) as exc:
        runtime.problems.append(
            Problem("daemon.json does not parse", f"{path}: {exc}", "fix the JSON")
        )
        return runtime
    for mirror in doc.get("registry-mirrors") or []:
        parts = urlsplit(str(mirror))
        if parts.path not in ("", "/") or parts.query:
            runtime.problems.append(
                Problem(
                    "a Docker mirror with a path",
                    f"{path}: {mirror!r}: dockerd refuses to start with a mirror URL that has "
                    "a path (mirrors apply to Docker Hub only, so there is no registry to name)",
                    "use the bare scheme://host:port of the cache (its default upstream must "
                    "be docker.io) or its docker.io virtual host",
                )
            )
            continue
        ca = certs_dir / parts.netloc / "ca.crt"
        runtime.mirrors.append(
            Mirror(
                "Docker",
                DOCKER_HUB,
                f"{parts.scheme}://{parts.netloc}/v2",
                "plain",
                str(path),
                ca_file=str(ca) if ca.is_file() else None,
            )
        )
    if not runtime.mirrors and not runtime.problems:
        runtime.notes.append(f"{path}: no registry-mirrors: Docker Hub pulls go straight out")
    return runtime


# ---------------------------------------------------------------- podman / CRI-O


def _auth_file_logins(auth_file: Path | None) -> dict[str, tuple[str, str]]:
    if auth_file is None or not auth_file.is_file():
        return {}
    try:
        auths = json.loads(auth_file.read_text()).get("auths") or {}
    except (OSError, ValueError):
        return {}
    logins = {}
    for key, entry in auths.items():
        try:
            user, _, password = base64.b64decode(entry.get("auth", "")).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            continue
        if user:
            logins[key.split("/", 1)[0]] = (user, password)
    return logins


def read_registries_conf(path: Path, auth_file: Path | None) -> Runtime:
    files = [path, *sorted((path.parent / "registries.conf.d").glob("*.conf"))]
    present = [f for f in files if f.is_file()]
    runtime = Runtime("podman/CRI-O", [str(f) for f in present] or [str(path)], bool(present))
    logins = _auth_file_logins(auth_file)
    for conf in present:
        try:
            doc = tomllib.loads(conf.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            runtime.problems.append(
                Problem("registries.conf does not parse", f"{conf}: {exc}", "fix the TOML")
            )
            continue
        for reg in doc.get("registry") or []:
            registry = str(reg.get("prefix") or reg.get("location") or "")
            for mirror in reg.get("mirror") or []:
                location = str(mirror.get("location", "")).rstrip("/")
                if not location:
                    continue
                authority, _, prefix = location.partition("/")
                insecure = bool(mirror.get("insecure") or reg.get("insecure"))
                base = f"https://{authority}/v2" + (f"/{prefix}" if prefix else "")
                runtime.mirrors.append(
                    Mirror(
                        "podman/CRI-O",
                        registry,
                        base,
                        "prefix",
                        str(conf),
                        login=logins.get(authority),
                        skip_verify=insecure,
                        http_fallback=insecure,
                    )
                )
    return runtime
