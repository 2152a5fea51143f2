"""The cache's upstream credentials, its caps on upstream bodies, and upstream digests,
end to end: the cache process against real docker-registry upstreams.

Credentials: the registries serve HTTPS under host names that only the cache's own
mount namespace resolves (a private hosts file, tests/harness/netns.py), and name
token realms on other hosts, each a real token issuer over HTTPS:

- the Docker Hub shape: registry ``registry.hub.test``, realm ``auth.hub.test`` (the
  same registrable domain): the credentials go there, and only they get a token;
- a foreign realm ``tokens.elsewhere.test``: a token is asked for anonymously, and the
  issuer's own request log shows no ``Authorization`` ever arrived; listed in the
  upstream's ``token_realms``, the same realm gets the credentials;
- a plain-http realm for an https upstream: refused with a 502 naming the upstream,
  and the issuer is never asked.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
import yaml

from tests.harness.cache import CacheServer
from tests.harness.certs import TlsFiles, make_tls
from tests.harness.credentials import PULLER, PUSHER
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.netns import namespace_command, write_hosts_file
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.token_issuer import TokenIssuer

HUB = "registry.hub.test"
HUB_AUTH = "auth.hub.test"
FOREIGN_AUTH = "tokens.elsewhere.test"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls", ["*.hub.test", "*.elsewhere.test"])


def tls_registry(
    make_upstream: Callable[..., UpstreamRegistry], issuer: TokenIssuer, tls: TlsFiles, seed: str
) -> tuple[UpstreamRegistry, PushResult]:
    """A registry with one image, then restarted to serve HTTPS with token auth."""
    registry = make_upstream("none")
    pushed = push(registry.url, "library/app", "1", build_image(seed, layers=1))
    registry.token_issuer = issuer
    registry.extra_config = {"http": {"tls": {"certificate": str(tls.cert), "key": str(tls.key)}}}
    registry.restart()
    return registry, pushed


def namespaced_cache(
    make_cache: Callable[..., CacheServer], tmp_path: Path, tls: TlsFiles, config: dict[str, object]
) -> CacheServer:
    """The cache under a private /etc/hosts naming every test host 127.0.0.1, trusting the CA."""
    hosts = write_hosts_file(tmp_path / "hosts", [HUB, HUB_AUTH, FOREIGN_AUTH])
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(config))
    return make_cache(
        "--config",
        str(path),
        safe=False,  # every upstream is in the config file, none of them public
        command=namespace_command([sys.executable, "-m", "registry_cache"], hosts),
        env={"SSL_CERT_FILE": str(tls.ca_cert)},
    )


def pull(cache: CacheServer, upstream: str, pushed: PushResult) -> None:
    base = f"{cache.url}/v2/{upstream}/library/app"
    manifest = http.request("GET", f"{base}/manifests/1", headers=ACCEPT)
    assert manifest.status == 200, manifest.data[:300]
    assert manifest.data == pushed.artifact.manifest.read()
    blob = http.request("GET", f"{base}/blobs/{pushed.layer_digests[0]}")
    assert blob.status == 200 and len(blob.data) > 0


def test_credentials_go_only_to_the_upstreams_own_or_listed_token_realms(
    make_upstream: Callable[..., UpstreamRegistry],
    make_token_issuer: Callable[..., TokenIssuer],
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
    tls: TlsFiles,
) -> None:
    # Docker Hub's shape: no anonymous pulls, so a token proves the credentials arrived.
    hub_issuer = make_token_issuer(anonymous_actions=frozenset(), tls=tls, realm_host=HUB_AUTH)
    hub, hub_image = tls_registry(make_upstream, hub_issuer, tls, "hub")
    foreign_issuer = make_token_issuer(tls=tls, realm_host=FOREIGN_AUTH)  # anonymous may pull
    other, other_image = tls_registry(make_upstream, foreign_issuer, tls, "other")
    plain_issuer = make_token_issuer(realm_host=HUB_AUTH)  # http:// on the hub's own domain
    insecure, _ = tls_registry(make_upstream, plain_issuer, tls, "insecure")
    creds = {"username": PULLER[0], "password": PULLER[1]}
    cache = namespaced_cache(
        make_cache,
        tmp_path,
        tls,
        {
            "upstreams": {
                "docker.io": {"url": f"https://{HUB}:{hub.port}", **creds},
                "ghcr.io": {"url": f"https://{HUB}:{other.port}", **creds},
                "quay.io": {
                    "url": f"https://{HUB}:{other.port}",
                    "token_realms": [FOREIGN_AUTH],
                    **creds,
                },
                "insecure.test": {"url": f"https://{HUB}:{insecure.port}", **creds},
            }
        },
    )

    pull(cache, "docker.io", hub_image)
    assert hub_issuer.requests
    assert {(r.user, r.authorization, r.status) for r in hub_issuer.requests} == {
        (PULLER[0], True, 200)
    }

    pull(cache, "ghcr.io", other_image)
    assert foreign_issuer.requests
    assert not any(r.authorization for r in foreign_issuer.requests)
    assert {r.user for r in foreign_issuer.requests} == {None}

    foreign_issuer.reset_counters()
    pull(cache, "quay.io", other_image)
    assert {(r.user, r.authorization) for r in foreign_issuer.requests} == {(PULLER[0], True)}

    refused = http.request(
        "GET", f"{cache.url}/v2/insecure.test/library/app/manifests/1", headers=ACCEPT
    )
    assert refused.status == 502
    (error,) = json.loads(refused.data)["errors"]
    assert error["message"] == (
        f"upstream insecure.test named a plain-http token realm (host {HUB_AUTH}); refused"
    )
    assert plain_issuer.requests == []
    assert PULLER[1] not in cache.log_text()


def test_concurrent_cold_requests_for_one_repository_fetch_one_token(
    token_upstream: UpstreamRegistry,
    token_issuer: TokenIssuer,
    make_cache: Callable[..., CacheServer],
) -> None:
    tags = [f"t{i}" for i in range(8)]
    for tag in tags:
        push(token_upstream.url, "library/app", tag, build_image(f"sf-{tag}", layers=1), PUSHER)
    cache = make_cache("--upstream", f"docker.io={token_upstream.url}")
    token_issuer.reset_counters()
    statuses: list[int] = []
    start = threading.Barrier(len(tags))

    def get(tag: str) -> None:
        start.wait(timeout=10)
        url = f"{cache.url}/v2/library/app/manifests/{tag}"
        statuses.append(http.request("GET", url, headers=ACCEPT).status)

    threads = [threading.Thread(target=get, args=(tag,)) for tag in tags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * len(tags)
    assert token_issuer.count("repository:library/app:pull") == 1


def test_oversized_upstream_bodies_are_a_502(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("caps", layers=1)
    push(upstream.url, "library/app", "1", image)
    manifest = image.manifest.read()
    put = urllib3.PoolManager()
    for i in range(100):  # ~1.9 KB of tag names
        answer = put.request(
            "PUT",
            f"{upstream.url}/v2/library/app/manifests/version-{i:07d}",
            body=manifest,
            headers={"Content-Type": image.media_type},
        )
        assert answer.status == 201
    proxy.add(
        Rule(
            path="/manifests/huge",
            status=200,
            headers={"Content-Type": OCI_MANIFEST},
            body=b"{" + b" " * (5 << 20) + b"}",
        )
    )
    config = tmp_path / "caps.yaml"
    config.write_text("upstreams:\n  docker.io:\n    tag_list_max_bytes: 1KiB\n")
    cache = make_cache("--config", str(config), "--upstream", f"docker.io={proxy.url}")

    huge = http.request("GET", f"{cache.url}/v2/library/app/manifests/huge", headers=ACCEPT)
    assert huge.status == 502
    (error,) = json.loads(huge.data)["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"] == (
        "upstream docker.io sent a manifest for library/app:huge larger than 4.0 MiB"
    )

    tags = http.request("GET", f"{cache.url}/v2/library/app/tags/list")
    assert tags.status == 502
    (error,) = json.loads(tags.data)["errors"]
    assert error["message"] == (
        "upstream docker.io sent a tags list for library/app larger than 1.0 KiB"
    )
    roomy = make_cache("--upstream", f"docker.io={upstream.url}")  # the default 4 MiB
    listed = http.request("GET", f"{roomy.url}/v2/library/app/tags/list")
    assert listed.status == 200 and len(json.loads(listed.data)["tags"]) == 101


def test_an_invalid_child_digest_in_an_upstream_index_is_a_502_and_never_fetched(
    upstream: UpstreamRegistry, proxy: FaultProxy, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("child", layers=1)
    push(upstream.url, "library/app", "1", image)
    child = "../../../../v2/library/app/manifests/1"
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": child,
                "size": 10,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    proxy.add(
        Rule(
            path="/manifests/evil",
            status=200,
            headers={"Content-Type": OCI_INDEX},
            body=json.dumps(index).encode(),
        )
    )
    cache = make_cache("--upstream", f"docker.io={proxy.url}")
    # A client that cannot read an index gets the linux/amd64 child, as distribution does.
    old_client = {"Accept": OCI_MANIFEST}
    answer = http.request("GET", f"{cache.url}/v2/library/app/manifests/evil", headers=old_client)
    assert answer.status == 502
    (error,) = json.loads(answer.data)["errors"]
    assert error["message"] == "upstream docker.io sent an index with an invalid child digest"
    assert any(seen.path.endswith("/manifests/evil") for seen in proxy.log)
    assert not any(".." in seen.path for seen in proxy.log)
