"""Bounded fuzzing of the HTTP surface against a real cache and a real upstream.

Hypothesis builds requests from the registry API's pieces, mangled: names with
bad characters, traversal and extreme lengths, references that are almost tags
or almost digests, odd query parameters (``ns=``, ``n=``, ``last=``), Range and
Host headers, every method. Whatever comes in, the cache must answer with a
complete response, never a 500, and (for a GET under ``/v2/`` that fails) an OCI
JSON error body; it must log no traceback and keep serving real pulls.

The whole byte range, control characters included, goes in over raw sockets
(http.client refuses most of it): every byte value, raw and percent-encoded, in
the path, the reference, the query, a header's name and value, then Hypothesis
mixing arbitrary bytes into all of them. Every line the cache logs must still
start with the log format's timestamp: no request can forge or split a line.

Bounded and repeatable: a fixed number of examples, derandomized, no example
database written into the repository.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry

EXAMPLES = 1500
RAW_EXAMPLES = 800
REPO = "library/fuzz"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

HEX = "0123456789abcdef"
# logs.FORMAT's start: "2026-12-01 08:31:42,654 INFO [19188] "
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \[\d+\] ")
HEADER_NAMES = [
    b"Host", b"User-Agent", b"Range", b"Accept", b"Authorization", b"X-Request-Id",
    b"If-None-Match", b"Content-Length", b"Transfer-Encoding", b"Connection", b"X-Fuzz",
]  # fmt: skip
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


@dataclass(frozen=True)
class RawRequest:
    """A request as bytes on the wire: anything at all in any part."""

    method: bytes
    path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    def encode(self) -> bytes:
        target = self.path + (b"?" + self.query if self.query else b"")
        lines = [self.method + b" " + target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass(frozen=True)
class RawAnswer:
    version: int  # 11; aiohttp answers what its parser rejects as HTTP/1.0 (10)
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def send_raw(cache: CacheServer, request: RawRequest) -> RawAnswer | None:
    """One raw request on its own connection; None when the cache closed it unanswered."""
    with socket.create_connection(("127.0.0.1", cache.port), timeout=30) as sock:
        try:
            sock.sendall(request.encode())
            response = http.client.HTTPResponse(sock, method=request.method.decode("latin-1"))
            response.begin()
            return RawAnswer(response.version, response.status, response.headers, response.read())
        except (http.client.RemoteDisconnected, ConnectionError):
            return None


def check_raw(request: RawRequest, answer: RawAnswer | None) -> None:
    if answer is None:
        return  # closed without an answer: bytes no parser could take as a request
    assert answer.status != 500, (request, answer.body[:300])
    assert answer.status < 500 or answer.status in (502, 503, 504), request
    from_app = answer.version == 11
    api_get = request.method == b"GET" and request.path.startswith(b"/v2/")
    if from_app and api_get and answer.status >= 400:
        assert answer.headers.get_content_type() == "application/json", request
        assert json.loads(answer.body)["errors"], request


def every_byte(host: bytes, pushed: PushResult) -> list[RawRequest]:
    """Each of the 256 byte values, raw and percent-encoded, in each part of a request."""
    base = f"/v2/{REPO}/manifests/".encode()
    out = []
    for value in range(256):
        byte = bytes([value])
        encoded = quote_from_bytes(byte, safe="").encode()
        host_header = ((b"Host", host),)
        out += [
            RawRequest(b"GET", base + b"1" + byte + b"x", b"", host_header),
            RawRequest(b"GET", base + b"1" + encoded + b"x", b"", host_header),
            RawRequest(b"GET", f"/v2/{REPO}".encode() + encoded + b"/tags/list", b"", host_header),
            RawRequest(b"GET", f"/v2/{REPO}/tags/list".encode(), b"n=1&last=" + byte, host_header),
            RawRequest(b"GET", f"/v2/{REPO}/tags/list".encode(), b"last=a" + encoded, host_header),
            RawRequest(b"GET", b"/v2/", b"", (*host_header, (b"User-Agent", b"a" + byte + b"b"))),
            RawRequest(b"GET", b"/v2/", b"", (*host_header, (b"X" + byte + b"Y", b"v"))),
            RawRequest(b"GET" + byte, b"/v2/", b"", host_header),
            RawRequest(
                b"GET",
                base + pushed.digest.encode(),
                b"",
                (*host_header, (b"Range", b"bytes=0-" + byte)),
            ),
        ]
    return out


def raw_requests(pushed: PushResult, host: bytes) -> st.SearchStrategy[RawRequest]:
    anything = st.binary(max_size=12)  # every byte value, controls included
    escaped = st.binary(max_size=8).map(lambda data: quote_from_bytes(data, safe="").encode())
    piece = st.one_of(anything, escaped)
    structured = paths(pushed).map(lambda path: path.encode("utf-8", "surrogateescape"))
    path = st.tuples(structured, piece, st.sampled_from([b"", b"/manifests/1", b"/tags/list"])).map(
        b"".join
    )
    query = st.one_of(
        st.just(b""),
        st.tuples(st.sampled_from([b"ns=", b"n=", b"last=", b""]), piece).map(b"".join),
    )
    name = st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=10))
    headers = st.lists(st.tuples(name, st.one_of(anything, escaped)), max_size=4)
    method = st.one_of(
        st.sampled_from([b"GET"] * 6 + [b"HEAD", b"PUT", b"DELETE"]),
        st.binary(min_size=1, max_size=6),
    )
    host_header = st.one_of(st.just(host), anything)
    return st.builds(
        lambda m, p, q, h, hs: RawRequest(m, p, q, ((b"Host", h), *hs)),
        method, path, query, host_header, headers,
    )  # fmt: skip


def assert_every_line_is_a_record(cache: CacheServer) -> None:
    """splitlines: any character some reader takes as a line break counts as one."""
    lines = [
        line
        for line in cache.log_text().splitlines()
        if line and not line.startswith("=== harness:")
    ]
    unescaped = [line for line in lines if not RECORD.match(line)]
    assert not unescaped, (
        f"{len(unescaped)} log lines not starting with a timestamp: {unescaped[:5]}"
    )
    assert "Traceback" not in cache.log_text()


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
    assert_every_line_is_a_record(cache)
    # Still serving real content correctly after all that.
    manifest = send(
        cache,
        Request("GET", f"/v2/{REPO}/manifests/1", {"Host": cache_host, "Accept": OCI_MANIFEST}),
    )
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest


def test_every_byte_in_every_part_of_a_request(fuzz_target: tuple[CacheServer, PushResult]) -> None:
    cache, pushed = fuzz_target
    host = cache.url.removeprefix("http://").encode()
    unanswered = 0
    for request in every_byte(host, pushed):
        answer = send_raw(cache, request)
        unanswered += answer is None
        check_raw(request, answer)
    assert unanswered == 0  # aiohttp answers a 400 to what it cannot parse
    assert cache.running
    assert_every_line_is_a_record(cache)


def test_fuzzed_raw_bytes_get_clean_answers(fuzz_target: tuple[CacheServer, PushResult]) -> None:
    cache, pushed = fuzz_target
    host = cache.url.removeprefix("http://").encode()

    @settings(
        max_examples=RAW_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(raw_requests(pushed, host))
    def one(request: RawRequest) -> None:
        check_raw(request, send_raw(cache, request))

    one()
    assert cache.running
    assert_every_line_is_a_record(cache)
    cache_host = host.decode()
    manifest = send(
        cache,
        Request("GET", f"/v2/{REPO}/manifests/1", {"Host": cache_host, "Accept": OCI_MANIFEST}),
    )
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest
