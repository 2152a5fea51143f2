"""The harness checks itself against real docker-registry and skopeo, without the cache."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import clients
from tests.harness.cache import CacheServer, CacheStartError, safe_upstream_args
from tests.harness.clients import pulled_blobs, pulled_manifest, skopeo_copy
from tests.harness.credentials import BASIC_PASSWORD, BASIC_USER, PULLER, PUSHER
from tests.harness.images import (
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    ImageIndex,
    build_image,
    build_index,
    push,
)
from tests.harness.netns import hosts_entries, run_in_hosts_namespace
from tests.harness.ports import free_port, http_status, wait_http
from tests.harness.push import RegistrySession
from tests.harness.registry import AccessLogEntry, UpstreamRegistry
from tests.harness.require import needs
from tests.harness.token_issuer import TokenIssuer

needs_skopeo = needs(clients.skopeo_available(), "skopeo is not installed")
SRC = Path(__file__).resolve().parents[2] / "src"
FAKE_CACHE = Path(__file__).resolve().parents[1] / "harness" / "fake_cache.py"


def _creds(auth: str) -> tuple[str, str] | None:
    return {"none": None, "basic": (BASIC_USER, BASIC_PASSWORD), "token": PUSHER}[auth]


# -- images (pure Python) --------------------------------------------------------
def test_images_are_deterministic_and_consistent(tmp_path: Path) -> None:
    a, b = build_image("seed-1"), build_image("seed-1")
    assert a.digest == b.digest and a.layer_digests == b.layer_digests
    assert build_image("seed-2").digest != a.digest
    config = json.loads(a.config.read())
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    for layer, diff_id in zip(a.layers, config["rootfs"]["diff_ids"], strict=True):
        raw = gzip.decompress(layer.blob.read())
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id == layer.diff_id
        assert "sha256:" + hashlib.sha256(layer.blob.read()).hexdigest() == layer.digest
    manifest = json.loads(a.manifest.read())
    assert manifest["mediaType"] == a.media_type == OCI_MANIFEST
    assert [d["digest"] for d in manifest["layers"]] == a.layer_digests

    docker = build_index("seed-3", fmt="docker")
    assert docker.media_type == DOCKER_LIST
    assert {i.media_type for i in docker.images} == {DOCKER_MANIFEST}
    assert {layer.blob.media_type for i in docker.images for layer in i.layers} == {DOCKER_LAYER}
    amd, arm = docker.for_platform("linux/amd64"), docker.for_platform("linux/arm64")
    assert set(amd.layer_digests).isdisjoint(arm.layer_digests)
    assert json.loads(arm.config.read())["architecture"] == "arm64"

    big = build_image("big", layers=1, layer_size=3 << 20, workdir=tmp_path)
    path = big.layers[0].blob.path
    assert path is not None and path.stat().st_size == big.layers[0].size > 3 << 20
    assert big.layers[0].blob.data is None


# -- each upstream flavour: push, then pull with skopeo straight from it -----------
@needs_skopeo
@pytest.mark.parametrize("auth", ["none", "basic", "token"])
def test_push_and_skopeo_pull(
    auth: str, make_upstream: Callable[..., UpstreamRegistry], tmp_path: Path
) -> None:
    reg = make_upstream(auth)
    creds = _creds(auth)
    single = build_image(f"single-{auth}", fmt="docker" if auth == "basic" else "oci")
    multi = build_index(f"multi-{auth}", fmt="oci" if auth == "basic" else "docker")
    res1 = push(reg.url, "library/test", "1.0", single, auth=creds)
    res2 = push(reg.url, "library/multi", "2.0", multi, auth=creds)
    assert res2.index_digest == multi.digest and res1.manifest_digest == single.digest
    reg.clear_request_log()

    out1 = tmp_path / "single"
    skopeo_copy(f"docker://{reg.host_port}/library/test:1.0", out1, creds=creds)
    assert pulled_blobs(out1) == {single.config.digest, *single.layer_digests}
    assert pulled_manifest(out1) == single.manifest.read()  # byte-exact
    for digest in single.layer_digests:
        assert reg.count("GET", f"/v2/library/test/blobs/{digest}") == 1
    assert reg.blob_gets() == 3  # config + 2 layers
    assert reg.count("GET", "/manifests/1.0", status=200) >= 1

    out2 = tmp_path / "multi"
    skopeo_copy(
        f"docker://{reg.host_port}/library/multi:2.0", out2, creds=creds, all_platforms=True
    )
    assert pulled_blobs(out2) == {b.digest for b in multi.blobs}
    assert pulled_manifest(out2) == multi.manifest.read()
    for child in multi.images:
        assert pulled_manifest(out2, child.digest) == child.manifest.read()

    if auth != "none":
        assert http_status(f"{reg.url}/v2/library/test/manifests/1.0") == 401
    if auth == "token":
        issuer = reg.token_issuer
        assert issuer is not None and issuer.issued >= 2
        assert issuer.count("repository:library/multi:pull") >= 1


# -- token auth details --------------------------------------------------------------
def test_token_auth_rules(token_upstream: UpstreamRegistry, token_issuer: TokenIssuer) -> None:
    image = build_image("token-rules", layers=1)
    push(token_upstream.url, "team/app", "v1", image, auth=PUSHER)
    ref = f"/v2/team/app/manifests/{image.digest}"

    # No token: 401 with a Bearer challenge naming the issuer.
    assert http_status(token_upstream.url + ref) == 401
    anonymous = RegistrySession(token_upstream.url)
    assert anonymous.get_manifest("team/app", "v1").status == 200  # anonymous pull allowed
    assert anonymous.token_fetches == 1
    # Cached: the same scope does not fetch again.
    assert anonymous.get_manifest("team/app", image.digest).status == 200
    assert anonymous.token_fetches == 1

    # bob may pull but not push; a wrong password gets no token at all.
    with pytest.raises(RuntimeError, match="starting upload"):
        push(token_upstream.url, "team/app", "v2", build_image("other", layers=1), auth=PULLER)
    with pytest.raises(RuntimeError, match="token request"):
        RegistrySession(token_upstream.url, ("bob", "nope")).get_manifest("team/app", "v1")

    # Without anonymous pull, anonymous requests are refused by the issuer.
    token_issuer.anonymous_actions = frozenset()
    with pytest.raises(RuntimeError, match="token request"):
        RegistrySession(token_upstream.url).get_manifest("team/app", "v1")
    assert any(r.status == 401 and r.user is None for r in token_issuer.requests)


def test_basic_auth_rejects_wrong_password(basic_upstream: UpstreamRegistry) -> None:
    image = build_image("basic-rules", layers=1)
    push(basic_upstream.url, "library/x", "1", image, auth=basic_upstream.credentials)
    bad = RegistrySession(basic_upstream.url, (BASIC_USER, "wrong"))
    assert bad.get_manifest("library/x", "1").status == 401
    good = RegistrySession(basic_upstream.url, (BASIC_USER, BASIC_PASSWORD))
    resp = good.get_manifest("library/x", "1")
    assert resp.status == 200 and resp.data == image.manifest.read()
    assert resp.headers["Content-Type"] == OCI_MANIFEST
    statuses = [e.status for e in basic_upstream.request_log() if "/manifests/1" in e.path]
    # bad: challenge, then 401 for wrong creds; good: challenge, then 200.
    assert statuses[-4:] == [401, 401, 401, 200]


# -- registry lifecycle, storage and access log --------------------------------------
def test_restart_storage_and_tampering(upstream: UpstreamRegistry) -> None:
    image = build_image("restart", layers=1)
    push(upstream.url, "library/r", "1", image)
    port, pid = upstream.port, upstream.pid
    upstream.restart()
    assert upstream.port == port and upstream.pid != pid and upstream.running
    session = RegistrySession(upstream.url)
    layer = image.layers[0]
    path = upstream.blob_path(layer.digest)
    assert path.read_bytes() == layer.blob.read()
    assert session.get_blob("library/r", layer.digest).data == layer.blob.read()
    path.write_bytes(b"tampered")  # distribution serves what is on disk, unchecked
    assert session.get_blob("library/r", layer.digest).data == b"tampered"
    assert upstream.count("GET", f"/blobs/{layer.digest}") == 2
    upstream.clear_request_log()
    assert upstream.request_log() == []
    upstream.stop()
    assert not upstream.running and http_status(f"{upstream.url}/v2/") is None


def test_push_with_relative_upload_location(
    make_upstream: Callable[..., UpstreamRegistry],
) -> None:
    reg = make_upstream(extra_config={"http": {"relativeurls": True}})
    resp = RegistrySession(reg.url).request("POST", "/v2/library/rel/blobs/uploads/")
    assert resp.status == 202 and resp.headers["Location"].startswith("/v2/")
    index = build_index("relative", layers=1)
    push(reg.url, "library/rel", None, index)  # by digest only: no tag
    assert RegistrySession(reg.url).get_manifest("library/rel", index.digest).status == 200


def test_access_log_format() -> None:
    line = (
        '127.0.0.1 - alice [27/Nov/2026:23:28:37 +0000] "GET /v2/a/blobs/sha256:ab?x=1 HTTP/1.1" '
        '200 157 "" "containerd/1.6.20"'
    )
    assert AccessLogEntry.parse(line) == AccessLogEntry(
        "GET", "/v2/a/blobs/sha256:ab?x=1", 200, 157, "alice", "containerd/1.6.20"
    )
    assert AccessLogEntry.parse("garbage") is None


# -- virtual hosts through a private /etc/hosts --------------------------------------
@needs_skopeo
def test_hosts_namespace_virtual_host(
    upstream: UpstreamRegistry, hosts_file: Callable[..., Path], tmp_path: Path
) -> None:
    image = build_image("vhost", layers=1)
    push(upstream.url, "library/test", "1.0", image)
    name = "docker.io.example.test"
    hosts = hosts_file([name])
    before = Path("/etc/hosts").read_text()
    out = tmp_path / "out"
    skopeo_copy(f"docker://{name}:{upstream.port}/library/test:1.0", out, hosts=hosts)
    assert pulled_blobs(out) == {image.config.digest, *image.layer_digests}
    assert upstream.request_log()[-1].path.startswith("/v2/library/test/blobs/")
    resolved = run_in_hosts_namespace(["getent", "hosts", "registry-1.docker.io", name], hosts)
    assert resolved.returncode == 0, resolved.stderr
    lines = resolved.stdout.splitlines()
    assert len(lines) == 2, resolved.stdout  # both names answered: the check is not vacuous
    assert all(line.startswith("127.0.0.1") for line in lines)
    assert Path("/etc/hosts").read_text() == before  # the machine's file is untouched
    with pytest.raises(ValueError):
        hosts_entries({"quay.io": "10.0.0.1"})


# -- the cache wrapper, driven with a stand-in server ----------------------------------
def test_cache_server_lifecycle(tmp_path: Path) -> None:
    cmd = [sys.executable, str(FAKE_CACHE)]
    cache = CacheServer(tmp_path / "c", ["--extra"], command=cmd)
    with cache:
        assert http_status(f"{cache.url}/v2/") == 200
        port, pid = cache.port, cache.pid
        cache.restart()
        assert cache.port == port and cache.pid != pid
        assert cache.kill9() == -9
        assert not cache.running
        cache.start()
    assert not cache.running
    log = cache.log_text()
    assert "--log-level debug --extra" in log and "SIGTERM" in log
    assert f"--data-dir {tmp_path / 'c' / 'data'}" in log

    stubborn = CacheServer(tmp_path / "s", ["--ignore-term"], command=cmd)
    stubborn.start()
    assert stubborn.stop(grace=0.5) == -9

    with pytest.raises(CacheStartError, match="failing on purpose"):
        CacheServer(tmp_path / "f", ["--fail"], command=cmd).start()


def test_safe_upstream_args() -> None:
    args = safe_upstream_args(["--upstream", "docker.io=http://127.0.0.1:1"])
    assert args[2:] == ["--upstream", "ghcr.io=none", "--upstream", "quay.io=none"]
    args = safe_upstream_args([])
    assert args[-2:] == ["--default-upstream", "none"]
    assert "docker.io=none" in args


def test_real_cache_starts_and_stops(
    make_cache: Callable[..., CacheServer], upstream: UpstreamRegistry
) -> None:
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    assert wait_http(f"{cache.url}/v2/", 5) == 200
    assert cache.stop() is not None and not cache.running


def test_ports_and_wait_http() -> None:
    a, b = free_port(), free_port()
    assert a != b
    with pytest.raises(TimeoutError):
        wait_http(f"http://127.0.0.1:{a}/", timeout=0.3)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 4"):
        wait_http(f"http://127.0.0.1:{b}/", timeout=5, proc=proc)


def test_index_helpers() -> None:
    index = build_index("helpers")
    assert isinstance(index, ImageIndex) and index.media_type == OCI_INDEX
    child = index.for_platform("linux/arm64/v8")
    assert isinstance(child, Image) and child.platform.variant == "v8"
    listed = json.loads(index.manifest.read())["manifests"]
    assert [m["digest"] for m in listed] == [i.digest for i in index.images]
    assert listed[1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
