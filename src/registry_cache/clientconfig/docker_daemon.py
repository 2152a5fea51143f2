"""Docker ``/etc/docker/daemon.json``: ``registry-mirrors`` (+ ``insecure-registries``).

Docker's mirrors apply to Docker Hub pulls only, and the daemon sends neither
``ns=`` nor a path prefix: the cache routes them by Host. So the mirror is
``docker.io.<domain>`` (vhost), or a single host that the cache routes to its
default upstream, which must then be docker.io; anything else is refused here
rather than producing a file that silently pulls from the wrong registry.

``insecure-registries`` is written for plain http and for https with
``skip_verify``. A private CA is not a daemon.json setting: Docker reads
``/etc/docker/certs.d/<host:port>/ca.crt``.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import Settings
from .endpoints import Advertise, ClientConfigError, Endpoint, endpoint_for, host_route

DOCKER_HUB = "docker.io"
MIRRORS = "registry-mirrors"
INSECURE = "insecure-registries"


class DaemonJsonError(ValueError):
    """The existing daemon.json cannot be merged (invalid JSON, wrong types)."""


def docker_hub_endpoint(settings: Settings, adv: Advertise) -> Endpoint:
    if DOCKER_HUB not in settings.upstreams:
        raise ClientConfigError(
            "Docker's registry-mirrors serve Docker Hub only, and docker.io is not a "
            "configured upstream"
        )
    ep = endpoint_for(settings, adv, DOCKER_HUB)
    if not ep.vhost:
        reached = host_route(settings, ep.authority)
        if reached != DOCKER_HUB:
            raise ClientConfigError(
                f"the Docker daemon sends no registry name, and requests to {ep.authority} "
                f"reach {reached or 'no upstream'}, not docker.io: set a domain (style vhost) "
                "or --default-upstream docker.io"
            )
    return ep


def daemon_settings(settings: Settings, adv: Advertise) -> dict[str, list[str]]:
    ep = docker_hub_endpoint(settings, adv)
    result = {MIRRORS: [ep.url]}
    if adv.insecure:
        result[INSECURE] = [ep.authority]
    return result


def render_daemon_json(settings: Settings, adv: Advertise) -> str:
    return _dump(daemon_settings(settings, adv))


def merge_daemon_json(existing_text: str, settings: Settings, adv: Advertise) -> str:
    """``existing_text`` with our mirror (first) and insecure entry added.

    Every other key is kept in its place; list entries are de-duplicated, keeping
    the first occurrence. Empty text counts as ``{}``. Raises ``DaemonJsonError``
    for invalid JSON, a non-object, or a list key holding something else.
    """
    ours = daemon_settings(settings, adv)
    if existing_text.strip():
        try:
            data: Any = json.loads(existing_text)
        except json.JSONDecodeError as exc:
            raise DaemonJsonError(
                f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise DaemonJsonError(f"top level must be a JSON object, not {type(data).__name__}")
    merged = dict(data)
    for key, values in ours.items():
        current = merged.get(key, [])
        if not isinstance(current, list) or not all(isinstance(v, str) for v in current):
            raise DaemonJsonError(f'"{key}" must be a list of strings')
        merged[key] = list(dict.fromkeys([*values, *current]))
    return _dump(merged)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
