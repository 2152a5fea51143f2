"""Bounded fuzzing of the HTTP surface against a real cache and a real upstream.

Hypothesis builds requests from the registry API's pieces, mangled: names with
bad characters, traversal and extreme lengths, references that are almost tags
or almost digests, odd query parameters (``ns=``, ``n=``, ``last=``), Range and
Host headers, every method. Whatever comes in, the cache must answer with a
complete response, never a 500, and (for a GET under ``/v2/`` that fails) an OCI
JSON error body; it must log no traceback and keep serving real pulls.

Bounded and repeatable: a fixed number of examples, derandomized, no example
database written into the repository.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry

EXAMPLES = 1500
REPO = "library/fuzz"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

HEX = "0123456789abcdef"
# Printable ASCII without space, '?' and '#' (they would end the path), plus escapes.
PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.headers}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def names(pushed: str) -> st.SearchStrategy[str]:
    component = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*", fullmatch=True)
    return st.one_of(
        st.just(pushed),
        st.sampled_from(["ghcr.io/" + pushed, "docker.io/" + pushed, "fuzz", "library/nope"]),
        st.lists(component, min_size=1, max_size=4).map("/".join),
        st.text(PATH_CHARS, min_size=1, max_size=40),
        st.sampled_from(["..", "a/../../etc", "%2e%2e/x", "A/B", "a//b", "a" * 300, "_catalog"]),
        st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=8).map(
            lambda text: quote(text, safe="")
        ),
    )


def digests() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(HEX, min_size=64, max_size=64).map("sha256:".__add__),
        st.text(HEX, min_size=0, max_size=70).map("sha256:".__add__),
        st.text(HEX, min_size=128, max_size=128).map("sha512:".__add__),
        st.text(PATH_CHARS, min_size=1, max_size=20).map(lambda t: f"sha256:{t}"),
        st.sampled_from(["sha256:", "SHA256:" + "a" * 64, "md5:" + "a" * 32, ":"]),
    )


def references(pushed: PushResult) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["1", "latest", pushed.digest, ".INVALID", "-x", "a" * 129]),
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True),
        st.text(PATH_CHARS, min_size=1, max_size=30),
        digests(),
    )


def paths(pushed: PushResult) -> st.SearchStrategy[str]:
    name = names(REPO)
    layer = st.sampled_from(pushed.layer_digests)
    return st.one_of(
        st.tuples(name, references(pushed)).map(lambda p: f"/v2/{p[0]}/manifests/{p[1]}"),
        st.tuples(name, st.one_of(layer, digests())).map(lambda p: f"/v2/{p[0]}/blobs/{p[1]}"),
        st.tuples(name, digests()).map(lambda p: f"/v2/{p[0]}/referrers/{p[1]}"),
        name.map(lambda n: f"/v2/{n}/tags/list"),
        name.map(lambda n: f"/v2/{n}/blobs/uploads/"),
        st.sampled_from(["/v2/", "/v2", "/v2/_catalog", "/", "/metrics", "/registries.yaml"]),
        st.text(PATH_CHARS, max_size=60).map("/".__add__),
        st.text(PATH_CHARS, max_size=60).map("/v2/".__add__),
    )


def queries() -> st.SearchStrategy[str]:
    value = st.one_of(
        st.sampled_from(["docker.io", "ghcr.io", "quay.io", "", "0", "-1", "99999999999"]),
        st.text(PATH_CHARS.filter(lambda c: c not in "&="), max_size=20),
    )
    key = st.sampled_from(["ns", "n", "last", "artifactType", "x"])
    pairs = st.lists(st.tuples(key, value), max_size=3)
    return pairs.map(lambda kv: "?" + "&".join(f"{k}={v}" for k, v in kv) if kv else "")


def header_sets(cache_host: str) -> st.SearchStrategy[dict[str, str]]:
    byte = st.integers(min_value=-5, max_value=1 << 40)
    ranges = st.one_of(
        st.tuples(byte, byte).map(lambda r: f"bytes={r[0]}-{r[1]}"),
        byte.map(lambda b: f"bytes={b}-"),
        byte.map(lambda b: f"bytes=-{b}"),
        st.sampled_from(["bytes=0-0,5-9", "items=0-1", "bytes=", "bytes=a-b", "garbage"]),
    )
    hosts = st.sampled_from(
        [cache_host, "docker.io.test:5000", "ghcr.io.test", "nope.test", "", "[::1]", "a" * 300]
    )
    accept = st.sampled_from([OCI_MANIFEST, OCI_INDEX, "*/*", "text/html", "", ";;;"])
    return st.fixed_dictionaries(
        {"Host": hosts},
        optional={"Range": ranges, "Accept": accept, "Authorization": st.just("Bearer x")},
    )


def requests(pushed: PushResult, cache_host: str) -> st.SearchStrategy[Request]:
    method = st.sampled_from(["GET"] * 6 + ["HEAD"] * 2 + ["PUT", "POST", "DELETE", "OPTIONS"])
    path = st.tuples(paths(pushed), queries()).map("".join)
    return st.builds(Request, method, path, header_sets(cache_host))


def send(cache: CacheServer, request: Request) -> Answer:
    host, port = cache.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(request.method, request.path, skip_host=True, skip_accept_encoding=True)
        for key, value in request.headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        # read() raises IncompleteRead when the body is shorter than Content-Length.
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def check(request: Request, answer: Answer) -> None:
    assert answer.status != 500, (str(request), answer.body[:300])
    assert answer.status < 500 or answer.status in (502, 503, 504), str(request)
    failed_api_get = (
        request.method == "GET" and request.path.startswith("/v2/") and answer.status >= 400
    )
    if failed_api_get:
        assert answer.headers.get_content_type() == "application/json", str(request)
        errors = json.loads(answer.body)["errors"]
        assert errors and all(isinstance(e["code"], str) for e in errors), str(request)


@pytest.fixture
def fuzz_target(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> tuple[CacheServer, PushResult]:
    pushed = push(upstream.url, REPO, "1", build_image("fuzz", layers=2))
    cache = make_cache(
        "--upstream", f"docker.io={upstream.url}", "--upstream", f"ghcr.io={upstream.url}",
        "--domain", "test",
    )  # fmt: skip
    return cache, pushed


def test_fuzzed_requests_get_clean_answers(fuzz_target: tuple[CacheServer, PushResult]) -> None:
    cache, pushed = fuzz_target
    cache_host = cache.url.removeprefix("http://")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests(pushed, cache_host))
    def one(request: Request) -> None:
        check(request, send(cache, request))

    one()
    assert cache.running
    assert "Traceback" not in cache.log_text()
    # Still serving real content correctly after all that.
    manifest = send(
        cache,
        Request("GET", f"/v2/{REPO}/manifests/1", {"Host": cache_host, "Accept": OCI_MANIFEST}),
    )
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest
