"""Client configuration: pure renderers ``render_*(settings, advertise) -> str``.

One module per client (k3s ``registries.yaml``, containerd ``hosts.toml``,
Docker ``daemon.json``, containers ``registries.conf``); ``endpoints`` decides
the URL each upstream is reached at. No I/O here: the CLI and the web pages
write or serve the text, and produce the same bytes for the same inputs.
"""

from .containerd_hosts import render_all_hosts_toml, render_hosts_toml
from .docker_daemon import DaemonJsonError, merge_daemon_json, render_daemon_json
from .endpoints import Advertise, ClientConfigError, Endpoint, endpoints, resolve_advertise
from .registries_conf import render_registries_conf
from .registries_yaml import Login, render_registries_yaml

__all__ = [
    "Advertise",
    "ClientConfigError",
    "DaemonJsonError",
    "Endpoint",
    "Login",
    "endpoints",
    "merge_daemon_json",
    "render_all_hosts_toml",
    "render_daemon_json",
    "render_hosts_toml",
    "render_registries_conf",
    "render_registries_yaml",
    "resolve_advertise",
]
