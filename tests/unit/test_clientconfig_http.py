"""The generated-config pages over HTTP: same bytes as the CLI for the same inputs."""

from __future__ import annotations

import os
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from registry_cache.cli.main import cli
from registry_cache.config import Settings, build_settings
from registry_cache.web.keys import SETTINGS_KEY
from registry_cache.web.pages import add_routes

DOMAIN = "registry.example.com"
Factory = Callable[..., Any]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def make_client() -> AsyncIterator[Factory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(settings: Settings) -> TestClient[web.Request, web.Application]:
        app = web.Application()
        app[SETTINGS_KEY] = settings
        add_routes(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def cli_text(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def fetch(client: Any, path: str, host_header: str, **params: str) -> tuple[int, str, str]:
    resp = await client.get(path, params=params, headers={"Host": host_header})
    return resp.status, resp.content_type, await resp.text()


def flags(domain: str | None) -> dict[str, Any]:
    return {"domain": domain}


# (CLI args, HTTP path, HTTP query) for one input; Host header is cache.lan:5000.
CASES_SINGLE = [
    (["registries", "--style", "single"], "/registries.yaml", {"style": "single"}),
    (["docker-daemon"], "/daemon.json", {}),
    (["registries-conf"], "/registries.conf", {}),
]


@pytest.mark.parametrize(("args", "path", "query"), CASES_SINGLE)
async def test_single_host_same_bytes_as_cli(
    make_client: Factory, args: list[str], path: str, query: dict[str, str]
) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    status, _, body = await fetch(client, path, "cache.lan:5000", **query)
    assert status == 200
    assert body == cli_text(*args, "--host", "cache.lan", "--port", "5000")


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["registries"], "/registries.yaml"),
        (["docker-daemon"], "/daemon.json"),
        (["registries-conf"], "/registries.conf"),
    ],
)
async def test_vhost_same_bytes_as_cli(make_client: Factory, args: list[str], path: str) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None, flags=flags(DOMAIN)))
    # Fetched through any name: vhost answers use the domain, and the port it was reached on.
    status, _, body = await fetch(client, path, "192.168.1.5:5001")
    assert status == 200
    assert body == cli_text(*args, "--domain", DOMAIN, "--port", "5001")


async def test_hosts_toml_same_bytes_as_cli(make_client: Factory, tmp_path: Path) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    out = tmp_path / "certs.d"
    cli_text("containerd-hosts", "--out", str(out), "--host", "cache.lan", "--port", "5000")
    for name in ("docker.io", "ghcr.io", "quay.io"):
        status, ctype, body = await fetch(
            client, f"/containerd/{name}/hosts.toml", "cache.lan:5000"
        )
        assert status == 200 and ctype == "application/toml"
        assert body == (out / name / "hosts.toml").read_text()
        assert tomllib.loads(body)["host"]


async def test_https_options_same_bytes_as_cli(make_client: Factory) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    query = {"host": "cache.lan", "scheme": "https", "ca_file": "/etc/ca.pem"}
    status, _, body = await fetch(client, "/registries.yaml", "other.name:5000", **query)
    assert status == 200
    expected = cli_text("registries", "--host", "cache.lan", "--https", "--ca-file", "/etc/ca.pem")
    assert body == expected


async def test_host_header_is_advertised(make_client: Factory) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    status, ctype, body = await fetch(client, "/registries.yaml", "node-cache:5005")
    assert status == 200 and ctype == "application/yaml"
    doc = yaml.safe_load(body)
    assert doc["mirrors"]["docker.io"]["endpoint"] == ["http://node-cache:5005"]
    # ?host= and ?port= override the header
    _, _, body = await fetch(client, "/daemon.json", "node-cache:5005", host="10.0.0.9", port="80")
    assert '"http://10.0.0.9:80"' in body


async def test_unconfigured_registry_is_404_json(make_client: Factory) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    resp = await client.get("/containerd/example.org/hosts.toml")
    assert resp.status == 404
    body = await resp.json()
    assert body["errors"][0]["code"] == "NAME_UNKNOWN"


@pytest.mark.parametrize(
    "query",
    [{"style": "bogus"}, {"style": "vhost"}, {"port": "x"}, {"scheme": "ftp"}, {"ca_file": "/c"}],
)
async def test_bad_query_is_400_json(make_client: Factory, query: dict[str, str]) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))  # no domain
    status, ctype, body = await fetch(client, "/registries.yaml", "cache.lan:5000", **query)
    assert status == 400 and ctype == "application/json"
    assert "BAD_REQUEST" in body


async def test_invalid_host_header_is_400(make_client: Factory) -> None:
    client = await make_client(build_settings(environ={}, dotenv=None))
    status, _, _ = await fetch(client, "/daemon.json", "bad_host!:5000")
    assert status == 400
