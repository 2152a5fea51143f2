"""deploy/compose: the cluster example (3 replicas, nginx round robin, PostgreSQL,
SeaweedFS for S3) is a valid compose project (``docker-compose config``), its nginx
configuration passes ``nginx -t``, and its secrets come from files make-secrets.sh
writes, never from the committed files. It is not run here (no images to pull)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry_cache.config import ENV_PREFIX, ENV_SETTINGS, build_settings
from registry_cache.units import parse_size
from tests.harness.netns import run_in_hosts_namespace
from tests.unit.test_kubernetes_manifests import CLUSTER_ENV

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
REPLICAS = ("cache-1", "cache-2", "cache-3")


def require(tool: str, package: str) -> None:
    """Skip without ``tool`` on a developer's machine; under CI=true, fail."""
    if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"):
        return
    message = f"{tool} missing: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing tool fails the run)")
    pytest.skip(message)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of deploy/compose at the same depth under a scratch repository root."""
    copy = tmp_path / "repo" / "deploy" / "compose"
    shutil.copytree(COMPOSE, copy, ignore=shutil.ignore_patterns("secrets"))
    return copy


def compose_config(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--file", "cluster.yml", "config"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DOCKER", "COMPOSE"))},
    )


def volume_mount(volume: str | dict[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read-only) of a volume as ``config`` prints it: docker-compose
    1.29 writes ``SRC:TARGET:MODE``, compose v2 a mapping."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"], bool(volume.get("read_only"))
    source, target, *mode = volume.split(":")
    return source, target, mode == ["ro"]


def make_secrets(project: Path) -> str:
    return subprocess.run(
        ["sh", str(project / "make-secrets.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


@pytest.fixture
def config(project: Path) -> dict[str, Any]:
    require("docker-compose", "docker-compose")
    make_secrets(project)
    result = compose_config(project)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def test_config_needs_the_secrets_make_secrets_writes(project: Path) -> None:
    require("docker-compose", "docker-compose")
    missing = compose_config(project)
    assert missing.returncode != 0
    assert "secrets/" in missing.stderr  # nothing secret has a default in the file
    assert "wrote" in make_secrets(project)
    assert compose_config(project).returncode == 0
    before = {p.name: p.read_bytes() for p in (project / "secrets").iterdir()}
    assert make_secrets(project) == ""  # a second run keeps every file
    assert {p.name: p.read_bytes() for p in (project / "secrets").iterdir()} == before

    secrets = project / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in secrets.iterdir()} == {0o644}
    s3_env = dict(
        line.split("=", 1) for line in (secrets / "s3.env").read_text().splitlines() if line
    )
    (identity,) = json.loads((secrets / "seaweedfs-s3.json").read_text())["identities"]
    assert identity["credentials"] == [
        {"accessKey": s3_env["AWS_ACCESS_KEY_ID"], "secretKey": s3_env["AWS_SECRET_ACCESS_KEY"]}
    ]
    assert "Admin" in identity["actions"]  # SeaweedFS creates the bucket for admins only
    assert "/secrets/" in (COMPOSE / ".gitignore").read_text().splitlines()
    committed = (COMPOSE / "cluster.yml").read_text()
    for value in [*s3_env.values(), (secrets / "postgres-password").read_text().strip()]:
        assert value not in committed


def test_three_replicas_share_postgres_and_s3_with_the_planned_settings(
    config: dict[str, Any], project: Path
) -> None:
    services = config["services"]
    assert set(services) == {*REPLICAS, "lb", "postgres", "seaweedfs"}
    postgres = services["postgres"]["environment"]
    advertised = set()
    for name in REPLICAS:
        replica = services[name]
        env = replica["environment"]
        assert set(env) >= CLUSTER_ENV, name
        assert replica["image"] == "registry-cache:latest"
        assert Path(replica["build"]["context"]) == project.parents[1]  # the repository
        assert replica["read_only"] is True
        assert replica["depends_on"]["postgres"] == {"condition": "service_healthy"}
        advertised.add(env["REGISTRY_CACHE_ADVERTISE"])
        assert env["REGISTRY_CACHE_ADVERTISE"] == f"http://{name}:5000"
        (volume,) = replica["volumes"]
        assert volume_mount(volume)[:2] == (f"{name}-data", "/data")
        # Files from compose secrets, mounted where the settings point.
        mounted = {s["source"] for s in replica["secrets"]}
        for setting, secret in (
            ("REGISTRY_CACHE_INDEX_PASSWORD_FILE", "postgres-password"),
            ("REGISTRY_CACHE_CLUSTER_SECRET_FILE", "cluster-secret"),
        ):
            assert env[setting] == f"/run/secrets/{secret}" and secret in mounted
        index = re.fullmatch(r"postgresql://(\w+)@postgres:5432/(\w+)", env["REGISTRY_CACHE_INDEX"])
        assert index, env["REGISTRY_CACHE_INDEX"]  # no password in the URL
        assert index.groups() == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert env["REGISTRY_CACHE_STORAGE"].startswith("s3://")
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]  # from secrets/s3.env
        # What the cache reads today validates (blank upstream credentials: anonymous).
        assert {k for k in env if k.removeprefix(ENV_PREFIX).lower() in ENV_SETTINGS} >= {
            "REGISTRY_CACHE_MAX_SIZE",
            "REGISTRY_CACHE_INDEX",
            "REGISTRY_CACHE_INDEX_PASSWORD_FILE",
            "REGISTRY_CACHE_ADVERTISE",
            "REGISTRY_CACHE_CLUSTER_SECRET_FILE",
        }
        settings = build_settings(environ=env, dotenv=None)
        assert settings.max_size == parse_size(env["REGISTRY_CACHE_MAX_SIZE"])
        assert settings.clustered and settings.index == env["REGISTRY_CACHE_INDEX"]
        assert settings.advertise == env["REGISTRY_CACHE_ADVERTISE"]
        assert not any(u.has_credentials for u in settings.upstreams.values())
    assert len(advertised) == len(REPLICAS)
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"

    seaweed = services["seaweedfs"]
    assert seaweed["image"].startswith("chrislusf/seaweedfs")
    command = dict(arg.split("=", 1) for arg in seaweed["command"] if "=" in arg)
    endpoint = services["cache-1"]["environment"]["REGISTRY_CACHE_S3_ENDPOINT"]
    assert endpoint == f"http://seaweedfs:{command['-s3.port']}"
    assert command["-s3.config"] == "/run/secrets/seaweedfs-s3.json"

    lb = services["lb"]
    assert [(p["published"], p["target"]) for p in lb["ports"]] == [(5000, 5000)]
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == dict.fromkeys(
        REPLICAS, "service_healthy"
    )
    (conf,) = lb["volumes"]
    assert volume_mount(conf) == (str(project / "nginx.conf"), "/etc/nginx/nginx.conf", True)


def test_nginx_balances_over_every_replica_and_its_config_is_valid(tmp_path: Path) -> None:
    require("nginx", "nginx")
    text = (COMPOSE / "nginx.conf").read_text()
    assert set(re.findall(r"^\s*server (\S+:\d+)", text, re.M)) == {f"{r}:5000" for r in REPLICAS}
    assert re.search(r"^\s*listen 5000;", text, re.M)
    assert "proxy_buffering off;" in text  # blobs stream as they arrive
    assert "proxy_set_header Host $http_host;" in text  # vhost routing needs the client's Host
    # nginx -t resolves upstream names: give it the compose service names, privately.
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    result = run_in_hosts_namespace(
        [
            shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") or "nginx",
            "-t", "-p", str(prefix), "-e", str(prefix / "error.log"),
            "-c", str(COMPOSE / "nginx.conf"), "-g", f"pid {prefix / 'nginx.pid'};",
        ],
        list(REPLICAS),
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
