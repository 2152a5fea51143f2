"""Who may pull through the cache: client logins (htpasswd) and per-upstream allow/deny.

Against a real upstream, with skopeo as the client:
- ``--htpasswd`` (a file made with ``htpasswd -B``): ``/v2/`` and below answer 401
  with a Basic challenge until the client logs in; skopeo with ``--src-creds`` pulls,
  without it fails; probes, metrics and config pages stay open; the access log
  names the user and never holds the password; removing a user from the file
  locks them out within seconds, without a restart; a non-bcrypt file stops
  ``serve`` with one line.
- failed logins are throttled per client address: after 5 failures, a 429
  ``TOOMANYREQUESTS`` with ``Retry-After`` (no password looked at) while logins
  known good, and new ones from other addresses, still answer at once; every
  failure is logged with the user name escaped and never the password.
- ``deny``/``allow``: a kept-out repository is a 403 ``DENIED`` before upstream is
  asked, even when it is already cached, and ``_catalog`` does not list it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness import clients
from tests.harness.cache import CacheServer, run_cli
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import require_tools

PASSWORD = "s3cret-Pw"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def htpasswd_file(path: Path, *users: str, method: str = "-B") -> Path:
    lines = [
        subprocess.run(
            ["htpasswd", method, "-bn", user, PASSWORD],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
        for user in users
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def get(cache: CacheServer, path: str, user: str | None = None) -> urllib3.BaseHTTPResponse:
    headers = {"Accept": MANIFEST}
    if user is not None:
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return http.request("GET", cache.url + path, headers=headers)


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    return str(json.loads(response.data)["errors"][0]["code"])


def test_clients_must_log_in(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    pushed = push(upstream.url, "library/private", "1", build_image("auth", layers=2))
    users = htpasswd_file(tmp_path / "htpasswd", "alice", "bob")
    cache = make_cache(
        "--upstream", f"docker.io={upstream.url}", "--htpasswd", str(users), "--workers", "2"
    )
    anonymous = get(cache, "/v2/")
    assert anonymous.status == 401 and error_code(anonymous) == "UNAUTHORIZED"
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="registry-cache"'
    assert anonymous.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert get(cache, "/v2/library/private/manifests/1").status == 401
    assert get(cache, "/v2/", user="mallory").status == 401
    assert get(cache, "/v2/", user="alice").status == 200
    for open_path in ("/healthz", "/readyz", "/metrics", "/registries.yaml"):
        assert get(cache, open_path).status == 200, open_path
    assert upstream.count("GET", "/v2/library/private/manifests/1") == 0  # nothing leaked

    if clients.skopeo_available():
        out = tmp_path / "pulled"
        skopeo_copy(f"docker://{cache.host_port}/library/private:1", out, creds=("alice", PASSWORD))
        assert set(pushed.layer_digests) <= pulled_blobs(out)
        refused = skopeo_copy(
            f"docker://{cache.host_port}/library/private:1", tmp_path / "anon", check=False
        )
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()

    log = cache.log_text()
    assert " user=alice" in log and PASSWORD not in log
    assert "client passwords travel in clear text" in log

    # bob leaves the team: out of the file, locked out without a restart.
    assert get(cache, "/v2/", user="bob").status == 200
    htpasswd_file(users, "alice")
    deadline = time.monotonic() + 15
    while get(cache, "/v2/", user="bob").status != 401:
        assert time.monotonic() < deadline, "bob still gets in"
        time.sleep(0.5)
    assert get(cache, "/v2/", user="alice").status == 200


def from_address(source: str) -> urllib3.PoolManager:
    """A client whose connections come from ``source`` (any 127.x address is local)."""
    return urllib3.PoolManager(
        retries=False, timeout=urllib3.Timeout(connect=5, read=30), source_address=(source, 0)
    )


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def timed(
    client: urllib3.PoolManager, cache: CacheServer, headers: dict[str, str]
) -> tuple[int, float, urllib3.BaseHTTPResponse]:
    started = time.monotonic()
    response = client.request("GET", cache.url + "/v2/", headers=headers)
    return response.status, time.monotonic() - started, response


def test_failed_logins_are_throttled_per_address_without_slowing_successes(
    make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    users = htpasswd_file(tmp_path / "htpasswd", "alice", "bob", "carol")
    cache = make_cache("--htpasswd", str(users))
    attacker, neighbour = from_address("127.0.0.2"), from_address("127.0.0.3")
    assert timed(attacker, cache, basic("alice"))[0] == 200  # alice logged in before
    guesses = [f"guess-{n}" for n in range(8)]
    for guess in guesses[:5]:
        assert timed(attacker, cache, basic("alice", guess))[0] == 401
    # The address is throttled: refused at once, without a bcrypt check.
    status, took, refused = timed(attacker, cache, basic("alice", guesses[5]))
    assert status == 429 and error_code(refused) == "TOOMANYREQUESTS", refused.data
    assert int(refused.headers["Retry-After"]) >= 1 and took < 0.5
    assert timed(attacker, cache, basic("alice", PASSWORD + "x"))[0] == 429
    # ...while successes answer promptly: alice's known login from the same address,
    # and a first login (a bcrypt check) from another address.
    for _ in range(5):
        status, took, _ = timed(attacker, cache, basic("alice"))
        assert status == 200 and took < 0.5, took
    status, took, _ = timed(neighbour, cache, basic("bob"))
    assert status == 200 and took < 1.0, took
    # A first login from the throttled address waits like a guess would, then works.
    assert timed(attacker, cache, basic("carol"))[0] == 429
    deadline = time.monotonic() + 10
    while (status := timed(attacker, cache, basic("carol"))[0]) == 429:
        assert time.monotonic() < deadline, "the back-off never ended"
        time.sleep(0.2)
    assert status == 200

    log = cache.log_text()
    failed = [line for line in log.splitlines() if "client authentication failed" in line]
    assert len(failed) == 5 and all("user alice from 127.0.0.2" in line for line in failed)
    assert "client login for user alice from 127.0.0.2 refused: " in log
    assert "client login for user carol from 127.0.0.2 refused: " in log
    assert " 429 " in log and "error=TOOMANYREQUESTS" in log
    assert PASSWORD not in log and not any(guess in log for guess in guesses)


def test_warm_logs_in_to_a_cache_with_htpasswd(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    pushed = push(upstream.url, "library/seeded", "1", build_image("seeded", layers=2))
    users = htpasswd_file(tmp_path / "htpasswd", "ops")
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--htpasswd", str(users))
    warm = ["warm", "--cache", cache.url, "library/seeded:1"]
    anonymous = run_cli(*warm, cwd=tmp_path, timeout=120)
    assert anonymous.returncode == 1
    assert all(upstream.blob_gets(d) == 0 for d in pushed.layer_digests)
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    result = run_cli(
        *warm, "--login", "ops", "--password-file", str(secret), cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert all(cache.blob_path(d).is_file() for d in pushed.layer_digests)
    assert PASSWORD not in result.stdout + result.stderr


def test_a_non_bcrypt_htpasswd_stops_serve(tmp_path: Path) -> None:
    users = htpasswd_file(tmp_path / "htpasswd", "alice", method="-m")  # MD5
    result = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--htpasswd", str(users), cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a bcrypt entry (make it with htpasswd -B)" in lines[0]


def test_denied_repositories_are_never_fetched_nor_served(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    push(upstream.url, "myorg/app", "1", build_image("allowed", layers=1))
    secret = push(upstream.url, "myorg/secret-db", "1", build_image("secret", layers=1))
    open_cache = make_cache("--upstream", f"docker.io={upstream.url}")
    for repo in ("myorg/app", "myorg/secret-db"):
        assert get(open_cache, f"/v2/{repo}/manifests/1").status == 200
    open_cache.stop()

    config = tmp_path / "policy.yaml"
    config.write_text("upstreams:\n  docker.io:\n    deny: ['myorg/secret-*']\n")
    # The same data directory: the secret is on disk, and still must not come out.
    guarded = make_cache(
        "--config", str(config), "--upstream", f"docker.io={upstream.url}",
        "--data-dir", str(open_cache.data_dir),
    )  # fmt: skip
    gets_before = upstream.count("GET", "/v2/myorg/secret-db/manifests/1")
    for path in (
        "/v2/myorg/secret-db/manifests/1",
        f"/v2/myorg/secret-db/manifests/{secret.digest}",
        f"/v2/myorg/secret-db/blobs/{secret.layer_digests[0]}",
        "/v2/myorg/secret-db/tags/list",
        "/v2/docker.io/myorg/secret-db/manifests/1",  # by path prefix too
    ):
        denied = get(guarded, path)
        assert denied.status == 403 and error_code(denied) == "DENIED", path
    assert upstream.count("GET", "/v2/myorg/secret-db/manifests/1") == gets_before
    assert get(guarded, "/v2/myorg/app/manifests/1").status == 200
    catalog = json.loads(get(guarded, "/v2/_catalog").data)["repositories"]
    assert "docker.io/myorg/app" in catalog and "docker.io/myorg/secret-db" not in catalog


@pytest.fixture(autouse=True)
def _need_htpasswd_tool() -> None:
    require_tools("htpasswd", hint="apt-get install apache2-utils")
