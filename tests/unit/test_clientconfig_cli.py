"""CLI commands registries / containerd-hosts / docker-daemon / registries-conf."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from registry_cache.cli.main import CliError, cli, main
from registry_cache.errors import ConfigError

DOMAIN = "registry.example.com"
NAMES = ["docker.io", "ghcr.io", "quay.io"]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No settings from the developer's environment or a stray .env."""
    for key in list(os.environ):
        if key.startswith(("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def test_registries_vhost_default() -> None:
    result = invoke("registries", "--domain", DOMAIN)
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    assert doc["mirrors"]["quay.io"]["endpoint"] == [f"http://quay.io.{DOMAIN}:5000"]
    assert f"docker.io.{DOMAIN}:5000" in doc["configs"]


def test_registries_domain_from_dotenv_like_serve(clean_env: Path) -> None:
    (clean_env / ".env").write_text(f"REGISTRY_DOMAIN={DOMAIN}\n")
    result = invoke("registries", "--listen", "0.0.0.0:5001")
    doc = yaml.safe_load(result.output)
    assert doc["mirrors"]["ghcr.io"]["endpoint"] == [f"http://ghcr.io.{DOMAIN}:5001"]


def test_a_cache_serving_tls_is_advertised_with_https(clean_env: Path) -> None:
    """The generators read the same settings as serve: tls_cert set → clients use https."""
    (clean_env / ".env").write_text(
        f"REGISTRY_DOMAIN={DOMAIN}\nREGISTRY_CACHE_TLS_CERT=/etc/c.pem\n"
        "REGISTRY_CACHE_TLS_KEY=/etc/k.pem\n"
    )
    doc = yaml.safe_load(invoke("registries").output)
    assert doc["mirrors"]["ghcr.io"]["endpoint"] == [f"https://ghcr.io.{DOMAIN}:5000"]


def test_registries_with_a_login_for_a_cache_with_htpasswd(clean_env: Path) -> None:
    (clean_env / "pw").write_text("s3cret\n")
    result = invoke(
        "registries", "--domain", DOMAIN, "--login", "node", "--password-file", "pw", "--https"
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    for name in NAMES:  # one configs entry per endpoint, with the login beside the TLS part
        entry = doc["configs"][f"{name}.{DOMAIN}:5000"]
        assert entry["auth"] == {"username": "node", "password": "s3cret"}
    empty = clean_env / "empty"
    empty.write_text("\n")
    refused = invoke("registries", "--domain", DOMAIN, "--login", "n", "--password-file", "empty")
    assert refused.exit_code == 2 and "--password-file is empty" in refused.output


def test_registries_without_domain_is_a_clear_error() -> None:
    result = invoke("registries")
    assert isinstance(result.exception, ConfigError)
    assert "needs a domain" in str(result.exception)


def test_registries_without_domain_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["registries"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "REGISTRY_DOMAIN" in err


def test_registries_single_and_host_implies_single() -> None:
    explicit = invoke("registries", "--style", "single", "--host", "cache.lan", "--port", "5002")
    implied = invoke("registries", "--host", "cache.lan", "--port", "5002")
    assert explicit.output == implied.output
    doc = yaml.safe_load(explicit.output)
    assert {m["endpoint"][0] for m in doc["mirrors"].values()} == {"http://cache.lan:5002"}


def test_registries_single_falls_back_to_listen_host() -> None:
    result = invoke("registries", "--style", "single", "--listen", "10.1.2.3:5000")
    doc = yaml.safe_load(result.output)
    assert doc["mirrors"]["docker.io"]["endpoint"] == ["http://10.1.2.3:5000"]


def test_registries_https_with_ca() -> None:
    result = invoke("registries", "--host", "cache.lan", "--https", "--ca-file", "/etc/ca.pem")
    doc = yaml.safe_load(result.output)
    assert doc["configs"] == {"cache.lan:5000": {"tls": {"ca_file": "/etc/ca.pem"}}}
    bad = invoke("registries", "--host", "cache.lan", "--ca-file", "/etc/ca.pem")
    assert isinstance(bad.exception, ConfigError) and "https" in str(bad.exception)


def test_containerd_hosts_writes_every_registry(tmp_path: Path) -> None:
    out = tmp_path / "certs.d"
    result = invoke("containerd-hosts", "--out", str(out), "--domain", DOMAIN)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"wrote {out / n / 'hosts.toml'}" for n in NAMES]
    for name in NAMES:
        doc = tomllib.loads((out / name / "hosts.toml").read_text())
        assert list(doc["host"]) == [f"http://{name}.{DOMAIN}:5000"]
        assert doc["host"][f"http://{name}.{DOMAIN}:5000"]["capabilities"] == ["pull", "resolve"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_containerd_hosts_requires_out() -> None:
    result = invoke("containerd-hosts")
    assert result.exit_code == 2 and "--out" in result.output


def test_docker_daemon_prints_json() -> None:
    result = invoke("docker-daemon", "--host", "cache.lan")
    assert json.loads(result.output) == {
        "registry-mirrors": ["http://cache.lan:5000"],
        "insecure-registries": ["cache.lan:5000"],
    }


def test_docker_daemon_merge_keeps_other_keys(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    target.write_text('{"log-driver": "local", "registry-mirrors": ["https://m.example"]}\n')
    target.chmod(0o600)
    result = invoke("docker-daemon", "--merge", str(target), "--host", "cache.lan")
    assert result.exit_code == 0, result.output
    assert "updated" in result.output
    assert json.loads(target.read_text()) == {
        "log-driver": "local",
        "registry-mirrors": ["http://cache.lan:5000", "https://m.example"],
        "insecure-registries": ["cache.lan:5000"],
    }
    assert target.stat().st_mode & 0o777 == 0o600
    again = invoke("docker-daemon", "--merge", str(target), "--host", "cache.lan")
    assert "already up to date" in again.output


def test_docker_daemon_merge_creates_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    result = invoke("docker-daemon", "--merge", str(target), "--host", "cache.lan")
    assert result.exit_code == 0
    assert json.loads(target.read_text())["registry-mirrors"] == ["http://cache.lan:5000"]


def test_docker_daemon_merge_invalid_json_leaves_file_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "daemon.json"
    original = '{"log-driver": "local",,}\n'
    target.write_text(original)
    result = invoke("docker-daemon", "--merge", str(target), "--host", "cache.lan")
    assert isinstance(result.exception, CliError)
    with pytest.raises(SystemExit) as exc:
        main(["docker-daemon", "--merge", str(target), "--host", "cache.lan"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid JSON" in err and "unchanged" in err
    assert target.read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json"]


def test_registries_conf() -> None:
    result = invoke("registries-conf", "--host", "cache.lan")
    doc = tomllib.loads(result.output)
    assert [r["mirror"][0]["location"] for r in doc["registry"]] == [
        f"cache.lan:5000/{n}" for n in NAMES
    ]


def test_commands_are_listed() -> None:
    result = invoke("--help")
    for name in ("registries", "containerd-hosts", "docker-daemon", "registries-conf", "k3d"):
        assert name in result.output
