"""Deployment files: docker-compose.yml, Dockerfile, systemd unit, .env.example."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from registry_cache.config import build_settings
from tests.harness.require import needs

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_structure() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert list(doc["services"]) == ["registry-cache"]
    svc = doc["services"]["registry-cache"]
    assert svc["ports"] == ["5000:5000"]
    assert svc["env_file"] == ".env"
    assert svc["restart"] == "unless-stopped"
    assert svc["container_name"] == "registry-cache"
    assert svc["networks"] == ["registry-cache"]
    volume, _, target = svc["volumes"][0].partition(":")
    assert target == "/data" and volume in doc["volumes"]
    assert doc["networks"]["registry-cache"]["name"] == "registry-cache"


@needs(shutil.which("docker-compose") is not None, "docker-compose not installed")
def test_compose_file_validates(tmp_path: Path) -> None:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    proc = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def healthcheck_argv() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (run for real in test_health.py and test_image.py)."""
    check = dict(_instructions((ROOT / "Dockerfile").read_text()))["HEALTHCHECK"]
    argv: list[str] = json.loads(check[check.index("CMD") + 3 :])
    return argv


def test_dockerfile() -> None:
    steps = _instructions((ROOT / "Dockerfile").read_text())
    froms = [arg for word, arg in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in steps
    # pip's own variables, so a build can use a mirror or pre-built wheels (test_image.py).
    pip_args = "PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST"
    assert ("ARG", pip_args) in steps
    values = dict(steps)  # the last of each instruction
    assert values["USER"] == "10001:10001"  # numeric: Kubernetes' runAsNonRoot checks it
    assert values["VOLUME"] == "/data" and values["EXPOSE"] == "5000"
    assert json.loads(values["ENTRYPOINT"]) == ["registry-cache"]
    assert json.loads(values["CMD"]) == ["serve", "--data-dir", "/data"]
    assert healthcheck_argv() == ["python", "-m", "registry_cache.healthcheck"]
    assert "PYTHONDONTWRITEBYTECODE=1" in values["ENV"]  # the root may be read-only
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    assert "pip wheel" in runs and "python3 -m venv" in runs and "--no-index" in runs


def test_dockerignore_keeps_secrets_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # allow-list: .env, .git, .venv, data never reach the context
    assert {"!pyproject.toml", "!src", "!wheelhouse"} <= set(lines)
    assert not any(line.startswith("!.env") for line in lines)


def test_systemd_unit() -> None:
    entries: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "registry-cache.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.setdefault(key, []).append(value)
    assert entries["User"] == ["registry-cache"]
    assert entries["StateDirectory"] == ["registry-cache"]
    assert entries["EnvironmentFile"] == ["-/etc/registry-cache/env"]
    assert "--data-dir /var/lib/registry-cache" in entries["ExecStart"][0]
    assert entries["NoNewPrivileges"] == ["yes"]
    assert entries["ProtectSystem"] == ["strict"]
    assert entries["ReadWritePaths"] == ["/var/lib/registry-cache"]


@needs(shutil.which("systemd-analyze") is not None, "no systemd-analyze (apt-get install systemd)")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "registry-cache.service"
    shutil.copy(ROOT / "deploy" / "registry-cache.service", unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The only acceptable complaint: the binary is not installed on this machine.
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert problems == []


def test_env_example_is_the_seed_env_and_loads(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text()
    keys = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert set(keys) == {
        "REGISTRY_DOMAIN",
        "DOCKERHUB_USERNAME",
        "DOCKERHUB_PASSWORD",
        "GHCR_USERNAME",
        "GHCR_PASSWORD",
        "QUAY_USERNAME",
        "QUAY_PASSWORD",
    }
    assert set(keys.values()) == {""}
    dotenv = tmp_path / ".env"
    dotenv.write_text(text)
    settings = build_settings(environ={}, dotenv=dotenv)
    assert settings.domain is None
    assert not any(u.has_credentials for u in settings.upstreams.values())
