"""The cache serving HTTPS (``--tls-cert``/``--tls-key``), with a real upstream.

A throw-away CA signs a certificate for 127.0.0.1; clients verify against it:
- skopeo (TLS verification on, the CA in ``--src-cert-dir``) pulls an image;
- blobs over TLS: a cold GET (streamed from the fill), a warm GET, a Range;
  with two workers, each serving TLS;
- client configuration fetched over HTTPS points clients back with https;
- ``warm --cache https://… --ca-file`` fills the cache through TLS;
- bad TLS settings stop ``serve`` with one line and exit status 2.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness import clients
from tests.harness.cache import CacheServer, run_cli
from tests.harness.certs import TlsFiles, make_tls
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs

MiB = 1 << 20


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def tls_cache(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tls: TlsFiles
) -> CacheServer:
    return make_cache(
        "--upstream", f"docker.io={upstream.url}", "--workers", "2",
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        ca_file=tls.ca_cert,
    )  # fmt: skip


def verifying(tls: TlsFiles) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        ca_certs=str(tls.ca_cert), retries=False, timeout=urllib3.Timeout(connect=5, read=30)
    )


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_blobs_and_manifests_over_tls(
    upstream: UpstreamRegistry, tls_cache: CacheServer, tls: TlsFiles, tmp_path: Path
) -> None:
    image = build_image("tls", layers=2, layer_size=8 * MiB, workdir=tmp_path)
    pushed = push(upstream.url, "library/tls", "1", image)
    http = verifying(tls)
    manifest = http.request(
        "GET",
        f"{tls_cache.url}/v2/library/tls/manifests/1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest
    layer = pushed.layer_digests[-1]  # the 8 MiB one
    url = f"{tls_cache.url}/v2/library/tls/blobs/{layer}"
    cold = http.request("GET", url)  # streamed from the fill, through the SSL fallback
    assert cold.status == 200 and sha(cold.data) == layer
    warm = http.request("GET", url)
    assert warm.status == 200 and warm.data == cold.data
    part = http.request("GET", url, headers={"Range": "bytes=1000-1999"})
    assert part.status == 206 and part.data == cold.data[1000:2000]
    assert upstream.blob_gets(layer) == 1


@needs(clients.skopeo_available(), "skopeo missing")
def test_skopeo_pulls_over_verified_tls(
    upstream: UpstreamRegistry, tls_cache: CacheServer, tls: TlsFiles, tmp_path: Path
) -> None:
    pushed = push(upstream.url, "library/secure", "1", build_image("secure", layers=3))
    out = tmp_path / "pulled"
    trusted = tmp_path / "certs.d"  # skopeo takes every *.crt here for a CA
    trusted.mkdir()
    shutil.copy(tls.ca_cert, trusted / "ca.crt")
    skopeo_copy(
        f"docker://{tls_cache.host_port}/library/secure:1",
        out,
        extra=["--src-tls-verify=true", "--src-cert-dir", str(trusted)],
    )
    assert set(pushed.layer_digests) <= pulled_blobs(out)
    # Without the CA, verification fails: the certificate really is checked.
    refused = skopeo_copy(
        f"docker://{tls_cache.host_port}/library/secure:1",
        tmp_path / "refused",
        extra=["--src-tls-verify=true"],
        check=False,
    )
    assert refused.returncode != 0 and "certificate" in refused.stderr


def test_client_configuration_over_https_advertises_https(
    tls_cache: CacheServer, tls: TlsFiles
) -> None:
    page = verifying(tls).request("GET", f"{tls_cache.url}/registries.yaml")
    assert page.status == 200
    assert f"https://{tls_cache.host_port}" in page.data.decode()


def test_warm_through_a_tls_cache(
    upstream: UpstreamRegistry, tls_cache: CacheServer, tls: TlsFiles, tmp_path: Path
) -> None:
    pushed = push(upstream.url, "library/warmed", "1", build_image("warmed", layers=2))
    warm = ["warm", "--cache", tls_cache.url, "library/warmed:1", "--json"]
    untrusted = run_cli(*warm, cwd=tmp_path, timeout=120)
    assert untrusted.returncode == 1  # the self-signed chain is not trusted by default
    assert all(upstream.blob_gets(d) == 0 for d in pushed.layer_digests)
    result = run_cli(*warm, "--ca-file", str(tls.ca_cert), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for digest in pushed.layer_digests:
        assert tls_cache.blob_path(digest).is_file()
        assert upstream.blob_gets(digest) == 1
    misuse = run_cli(
        *warm[:1], "library/warmed:1", "--ca-file", str(tls.ca_cert), cwd=tmp_path, timeout=60
    )
    assert misuse.returncode == 2 and "--ca-file is for an https:// --cache" in misuse.stderr


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "tls_cert (--tls-cert {cert}): cannot read {cert}: No such file"),
        ("garbage", "are not a usable certificate and key"),
        ("alone", "tls_cert and tls_key go together"),
    ],
)
def test_bad_tls_settings_are_one_line_errors(
    tls: TlsFiles, tmp_path: Path, which: str, message: str
) -> None:
    cert, key = str(tls.cert), str(tls.key)
    if which == "missing":
        cert = str(tmp_path / "nope.crt")
    elif which == "garbage":
        (tmp_path / "bad.key").write_text("not a key\n")
        key = str(tmp_path / "bad.key")
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")]
    args += ["--tls-cert", cert] + (["--tls-key", key] if which != "alone" else [])
    result = run_cli(*args, cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(cert=cert) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
