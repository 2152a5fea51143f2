"""``registry-cache doctor`` on the node configurations the client tests use, and broken ones.

The configurations are the ones the real containerd, k3s, dockerd and podman tests
run with: rendered by the cache's own generators (``containerd-hosts``,
``registries``, ``docker-daemon``, ``registries-conf``). Each gets one deliberately
broken variant that doctor must name with its fix and a non-zero exit. A real
cache in front of a real docker-registry answers every proof.

doctor runs in a mount namespace with a private /etc/hosts and an /etc/resolv.conf
naming 127.0.0.1 only, so a name that does not resolve fails here, never in DNS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cache import CacheServer, cli_env
from tests.harness.configcli import config_cli
from tests.harness.images import build_image, push
from tests.harness.netns import write_hosts_file
from tests.harness.registry import UpstreamRegistry

SHIM = (
    'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf || exit 125; '
    'shift 2; exec "$@"'
)
CRI_WITH_CONFIG_PATH = """version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{certs}"
"""
CRI_WITHOUT_CONFIG_PATH = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
"""


@pytest.fixture
def hub(make_upstream: Callable[..., UpstreamRegistry]) -> UpstreamRegistry:
    upstream = make_upstream()
    push(upstream.url, "library/test", "1.0", build_image("doctor"))
    return upstream


class Doctor:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts = write_hosts_file(tmp / "ns-hosts", [])
        self.resolv = tmp / "ns-resolv.conf"
        self.resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.missing = tmp / "not-here"

    def run(self, *args: str, **paths: Path) -> subprocess.CompletedProcess[str]:
        flags = {
            "--k3s-registries": paths.get("k3s", self.missing / "registries.yaml"),
            "--containerd-config": paths.get("containerd", self.missing / "config.toml"),
            "--docker-config": paths.get("docker", self.missing / "daemon.json"),
            "--docker-certs-dir": self.missing / "certs.d",
            "--registries-conf": paths.get("podman", self.missing / "registries.conf"),
        }
        argv = [sys.executable, "-m", "registry_cache", "doctor", *args]
        for flag, value in flags.items():
            argv += [flag, str(value)]
        if "certs" in paths:
            argv += ["--certs-dir", str(paths["certs"])]
        cmd = ["unshare", "-m", "sh", "-c", SHIM, "sh", str(self.hosts), str(self.resolv), *argv]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=cli_env(), timeout=90, check=False
        )


@pytest.fixture
def doctor(tmp_path: Path) -> Doctor:
    return Doctor(tmp_path)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No problems found." in result.stdout
    return result.stdout


def problem(result: subprocess.CompletedProcess[str], title: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"\d+\. {re.escape(title)}\n", result.stdout), result.stdout
    assert "fix: " in result.stdout
    return result.stdout


def test_containerd_config_path_and_hosts_toml(
    hub: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    doctor: Doctor,
    tmp_path: Path,
) -> None:
    cache = make_cache("--upstream", f"docker.io={hub.url}")
    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--out", str(certs))
    good = tmp_path / "config.toml"
    good.write_text(CRI_WITH_CONFIG_PATH.format(certs=certs))
    image = ["--image", "docker.io/library/test:1.0"]

    first = ok(doctor.run(*image, containerd=good))
    assert f"docker.io → {cache.url}/v2 (?ns=docker.io): mirrored; it answers" in first
    url = f"{cache.url}/v2/library/test/manifests/1.0?ns=docker.io"
    assert f"proof: GET {url} → HTTP 200, X-Registry-Cache: MISS" in first
    assert "X-Registry-Cache: HIT" in ok(doctor.run(*image, containerd=good))
    # Without --image: proven with an image the cache served lately.
    assert "X-Registry-Cache: HIT" in ok(doctor.run(containerd=good))

    broken = tmp_path / "config-broken.toml"
    broken.write_text(CRI_WITHOUT_CONFIG_PATH)
    out = problem(doctor.run(*image, containerd=broken), "CRI config_path not set")
    assert 'config_path = "/etc/containerd/certs.d"' in out

    (certs / "docker.io" / "hosts.toml").write_text(f'server = "{hub.url}"\n')
    problem(doctor.run(*image, containerd=good), "hosts.toml without a [host] table")


def test_k3s_registries_yaml_tls_key_and_login(
    hub: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    doctor: Doctor,
    tmp_path: Path,
) -> None:
    from tests.integration.test_client_auth import PASSWORD, htpasswd_file

    users = htpasswd_file(tmp_path / "htpasswd", "node")
    env = {"REGISTRY_CACHE_HTPASSWD": str(users)}  # the config commands take no --htpasswd
    cache = make_cache("--upstream", f"docker.io={hub.url}", env=env)
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    login = ["--login", "node", "--password-file", str(password)]
    good = tmp_path / "registries.yaml"
    good.write_text(config_cli(cache, "registries", "--style", "single", *login))
    image = ["--image", "docker.io/library/test:1.0"]

    out = ok(doctor.run(*image, k3s=good))
    assert "logged in as node" in out and "X-Registry-Cache: MISS" in out
    assert PASSWORD not in out

    wrong = tmp_path / "wrong-pw"
    wrong.write_text("not-the-password\n")
    refused = tmp_path / "refused.yaml"
    wrong_login = ["--login", "node", "--password-file", str(wrong)]
    refused.write_text(config_cli(cache, "registries", "--style", "single", *wrong_login))
    out = problem(doctor.run(*image, k3s=refused), "a cache that refuses the node's login")
    assert "not-the-password" not in out

    seed_style = tmp_path / "seed.yaml"  # the seed's key, which k3s silently drops
    seed_style.write_text(
        good.read_text().replace("insecure_skip_verify: true", "insecure: true")
        + f'  "{cache.host_port}x":\n    tls:\n      insecure: true\n'
    )
    problem(doctor.run(*image, k3s=seed_style), "tls.insecure where k3s reads insecure_skip_verify")


def test_docker_daemon_json_and_docker_hub_only(
    hub: UpstreamRegistry,
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    doctor: Doctor,
    tmp_path: Path,
) -> None:
    cache = make_cache("--upstream", f"docker.io={hub.url}", "--default-upstream", "docker.io")
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(config_cli(cache, "docker-daemon"))
    out = ok(doctor.run("--image", "library/test:1.0", docker=daemon_json))
    assert f"{cache.url}/v2/library/test/manifests/1.0 → HTTP 200" in out  # no ns=, no prefix

    ghcr = make_upstream()
    both = make_cache(
        "--upstream", f"docker.io={hub.url}", "--upstream", f"ghcr.io={ghcr.url}",
        "--default-upstream", "docker.io",
    )  # fmt: skip
    daemon_json.write_text(config_cli(both, "docker-daemon"))
    out = problem(
        doctor.run("--image", "library/test:1.0", docker=daemon_json),
        "Docker's mirror applying to Docker Hub only",
    )
    assert "ghcr.io: NOT mirrored" in out
    ok(doctor.run("--image", "library/test:1.0", "--registry", "docker.io", docker=daemon_json))


def test_podman_registries_conf_and_a_name_that_does_not_resolve(
    hub: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    doctor: Doctor,
    tmp_path: Path,
) -> None:
    cache = make_cache("--upstream", f"docker.io={hub.url}")
    conf = tmp_path / "registries.conf"
    conf.write_text(config_cli(cache, "registries-conf"))
    out = ok(doctor.run("--image", "docker.io/library/test:1.0", podman=conf))
    prefixed = f"{cache.url}/v2/docker.io/library/test/manifests/1.0"
    assert f"{prefixed} → HTTP 200, X-Registry-Cache: MISS" in out  # insecure: http fallback

    unknown = tmp_path / "unknown.conf"
    unknown.write_text(conf.read_text().replace(cache.host_port, f"cache.invalid:{cache.port}"))
    out = problem(
        doctor.run("--image", "docker.io/library/test:1.0", podman=unknown),
        "a name that does not resolve",
    )
    assert "'cache.invalid' does not resolve" in out


def test_nothing_to_check_and_json(doctor: Doctor) -> None:
    result = doctor.run("--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert [p["title"] for p in doc["problems"]] == ["no container runtime configuration found"]
    assert [r["present"] for r in doc["runtimes"]] == [False] * 4
