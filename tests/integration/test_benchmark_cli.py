"""``registry-cache benchmark`` and ``compare-paths`` end to end, all on 127.0.0.1.

Upstream: a real docker-registry; cache: registry-cache in front of it, reached by
path prefix (the default ``--cache-path-style prefix``); one test also drives
distribution's proxy mode (``--cache-path-style plain``), the other cache a user may
have. compare-paths runs against a local ``iperf3 -s`` and
a local nginx playing the CDN. Every server is started and stopped by its fixture;
no test uses a public registry or the default CDN URL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import proc as procs
from tests.harness.cache import CacheServer
from tests.harness.images import build_index
from tests.harness.netns import run_in_hosts_namespace
from tests.harness.ports import free_port, port_is_open, wait_http
from tests.harness.push import PushResult, push_image
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs, require_tools
from tests.harness.wait import wait_for_log, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DROP_ENV = (
    "REGISTRY_",
    "DOCKERHUB_",
    "GHCR_",
    "QUAY_",
    "CACHE_HOST",
    "REPO",
    "TAG",
    "PULLS",
    "PRUNE_BETWEEN",
    "RUNS",
    "SKIP_IPERF",
    "CDN_URL",
    "PYTHONPATH",
)
SCENARIOS = [
    "tag-upstream",
    "tag-cache",
    "digest-upstream",
    "digest-cache",
    "blob-upstream",
    "blob-cache",
]
SUMMARY_ROW = re.compile(
    r"^(?P<name>[a-z-]+)\s+n=(?P<n>\d+)\s+avg=(?P<avg>[\d.]+)(?P<unit>s|MB/s)\s+"
    r"median=[\d.]+(?P=unit)\s+p95=[\d.]+(?P=unit)\s+min=[\d.]+(?P=unit)\s+max=[\d.]+(?P=unit)$"
)


def run(
    argv: list[str], *, env: dict[str, str] | None = None, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = procs.clean_env(env, drop_prefixes=DROP_ENV)
    full_env["PYTHONPATH"] = str(REPO_ROOT / "src")
    if path is not None:
        full_env["PATH"] = path
    return subprocess.run(
        argv, capture_output=True, text=True, env=full_env, timeout=180, cwd=REPO_ROOT, check=False
    )


def cli(
    *args: str, env: dict[str, str] | None = None, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "registry_cache", *args], env=env, path=path)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("registry-cache: ")
    return lines[0]


@dataclass
class Setup:
    upstream: UpstreamRegistry
    cache: CacheServer
    pushed: PushResult

    def args(self, *extra: str) -> list[str]:
        return [
            "benchmark",
            "--upstream",
            self.upstream.url,
            "--cache-host",
            self.cache.host_port,
            "--repo",
            "bench",
            "--tag",
            "1.0",
            *extra,
        ]


@pytest.fixture
def setup(
    make_upstream: Callable[..., UpstreamRegistry], make_cache: Callable[..., CacheServer]
) -> Setup:
    upstream = make_upstream("none")
    image = build_index("bench", layers=3, layer_size=1_500_000)
    pushed = push_image(upstream.url, "library/bench", "1.0", image)
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    return Setup(upstream, cache, pushed)


# -- benchmark -------------------------------------------------------------------


def test_benchmark_runs_every_scenario_and_summarises(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    result = cli(*setup.args("--pulls", "2", "--output", str(out)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    runs = [line.split()[1] for line in lines if line.startswith("[run] ")]
    assert runs == [name for name in SCENARIOS for _ in range(2)]
    start = next(i for i, line in enumerate(lines) if line.startswith("[summary]"))
    assert "nearest-rank" in lines[start]
    rows = {m["name"]: m for m in map(SUMMARY_ROW.match, lines[start + 1 :]) if m}
    assert list(rows) == SCENARIOS
    assert {rows[n]["unit"] for n in SCENARIOS[:4]} == {"s"}
    assert rows["blob-cache"]["unit"] == "MB/s"
    assert all(rows[n]["n"] == "2" for n in SCENARIOS)
    speedups = [line for line in lines[start:] if line.startswith("speedup-")]
    assert [line.split()[0] for line in speedups] == [
        "speedup-tag",
        "speedup-digest",
        "speedup-blob",
    ]
    assert all(re.search(r"\d+\.\d+x", line) for line in speedups)
    # The index resolved to linux/amd64 and by-digest pulls really used the digest.
    assert f"digest={setup.pushed.digest} (linux/amd64)" in result.stdout
    assert setup.upstream.count("GET", f"/manifests/{setup.pushed.digest}") >= 2
    line = f'"GET /v2/docker.io/library/bench/manifests/{setup.pushed.digest}'
    wait_until(lambda: setup.cache.log_text().count(line) >= 2)
    amd64 = setup.pushed.images[0]
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == amd64.digest
    for blob in amd64.blobs:
        assert (out / "blobs" / "sha256" / blob.digest.split(":")[1]).stat().st_size == blob.size


def test_benchmark_json(setup: Setup) -> None:
    result = cli(*setup.args("--pulls", "1", "--json", "--platform", "linux/arm64"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["platform"] == "linux/arm64/v8"
    assert doc["digest"] == setup.pushed.digest
    assert list(doc["summary"]) == SCENARIOS
    for summary in doc["summary"].values():
        assert {"avg", "median", "p95", "min", "max", "count", "unit"} <= set(summary)
    assert set(doc["speedup"]) == {"tag", "digest", "blob"}
    assert [r["scenario"] for r in doc["runs"]] == SCENARIOS
    arm64 = setup.pushed.images[1]
    largest = max(arm64.layers, key=lambda layer: layer.size)
    assert doc["largest_layer"] == {"digest": largest.digest, "size": largest.size}
    assert doc["image_bytes"] == sum(b.size for b in arm64.blobs)


def test_wrapper_and_environment_overrides(setup: Setup) -> None:
    env = {
        "CACHE_HOST": setup.cache.host_port,
        "REPO": "library/bench",
        "TAG": "1.0",
        "PULLS": "1",
        "PRUNE_BETWEEN": "1",
    }
    result = run(
        [
            str(REPO_ROOT / "benchmark-cache.sh"),
            "--upstream",
            setup.upstream.url,
            "--json",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["cache"] == setup.cache.url
    assert (doc["pulls"], doc["prune_between"]) == (1, True)
    assert any("no effect with --client builtin" in note for note in doc["notes"])


def test_benchmark_against_distribution_proxy_mode(
    setup: Setup, make_upstream: Callable[..., UpstreamRegistry]
) -> None:
    """``--cache-path-style plain`` for a cache that serves one upstream (distribution)."""
    proxy = make_upstream("none", proxy_remote=setup.upstream.url)
    result = cli(
        "benchmark",
        "--upstream",
        setup.upstream.url,
        "--cache-host",
        proxy.host_port,
        "--cache-path-style",
        "plain",
        "--repo",
        "bench:1.0",
        "--pulls",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["cache_path_style"], doc["digest"]) == ("plain", setup.pushed.digest)
    assert list(doc["summary"]) == SCENARIOS
    assert proxy.count("GET", f"/manifests/{setup.pushed.digest}") >= 1


def test_cache_unreachable(setup: Setup) -> None:
    port = free_port()
    args = setup.args("--pulls", "1")
    args[args.index("--cache-host") + 1] = f"127.0.0.1:{port}"
    line = one_line_error(cli(*args))
    assert f"cache 127.0.0.1:{port} unreachable" in line


def test_image_missing(setup: Setup) -> None:
    line = one_line_error(cli(*setup.args("--pulls", "1", "--tag", "no-such-tag")))
    assert "upstream" in line and "MANIFEST_UNKNOWN" in line
    line = one_line_error(cli(*setup.args("--pulls", "1", "--json", "--repo", "nothere")))
    assert "library/nothere" in line


def test_platform_missing(setup: Setup) -> None:
    line = one_line_error(cli(*setup.args("--pulls", "1", "--platform", "linux/s390x")))
    assert "no manifest for platform linux/s390x" in line


def test_token_auth_upstream_and_auth_failure(
    make_upstream: Callable[..., UpstreamRegistry], make_cache: Callable[..., CacheServer]
) -> None:
    upstream = make_upstream("token")
    push_image(
        upstream.url,
        "library/bench",
        "1.0",
        build_index("tok", layers=1),
        auth=("alice", "alice-pw"),
    )
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    base = [
        "benchmark",
        "--upstream",
        upstream.url,
        "--cache-host",
        cache.host_port,
        "--repo",
        "bench:1.0",
        "--pulls",
        "1",
    ]
    # The cache pulls anonymously (the issuer allows it); the upstream wants Bearer tokens.
    ok = cli(*base, "--json", "--username", "bob", "--password", "bob-pw")
    assert ok.returncode == 0, ok.stderr
    assert upstream.token_issuer is not None
    assert upstream.token_issuer.count("library/bench") >= 1
    line = one_line_error(cli(*base, "--username", "bob", "--password", "wrong"))
    assert "token service" in line and "HTTP 401" in line
    assert "wrong" not in line


@pytest.mark.clients
@needs(shutil.which("skopeo") is not None, "skopeo is not installed")
def test_skopeo_client(setup: Setup) -> None:
    result = cli(*setup.args("--pulls", "1", "--client", "skopeo", "--prune-between", "--json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["scenario"] for r in doc["runs"]] == SCENARIOS
    assert doc["notes"] == []


def test_external_client_missing(setup: Setup, tmp_path: Path) -> None:
    line = one_line_error(cli(*setup.args("--pulls", "1", "--client", "ctr"), path=str(tmp_path)))
    assert "ctr not found on PATH" in line


# -- compare-paths ----------------------------------------------------------------


@pytest.fixture
def iperf_port(tmp_path: Path) -> Iterator[int]:
    require_tools("iperf3", hint="apt-get install iperf3")
    port = free_port()
    server = procs.spawn(
        ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], stdout=tmp_path / "iperf3.log"
    )
    try:
        for _ in range(100):
            if port_is_open(port):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield port
    finally:
        procs.terminate(server)


@pytest.fixture
def cdn_url(tmp_path: Path) -> Iterator[str]:
    require_tools("nginx", hint="apt-get install nginx")
    root = tmp_path / "cdn"
    root.mkdir()
    (root / "100Mb.dat").write_bytes(b"\x5a" * 4_000_000)
    (root / "6Mb.dat").write_bytes(b"\x5b" * 6_000_000)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        # master_process off: as root, workers would run as nobody and could not read
        # pytest's 0700 tmp dirs.
        f"daemon off; master_process off; pid {root}/nginx.pid; error_log {root}/err.log;\n"
        "events {}\n"
        f"http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{port}; "
        f"root {root}; }} }}\n"
    )
    server = procs.spawn(["nginx", "-c", str(conf), "-p", str(root)], stdout=root / "out.log")
    try:
        url = f"http://127.0.0.1:{port}/100Mb.dat"
        wait_http(url, 10, proc=server)
        yield url
    finally:
        procs.terminate(server)


def paths_args(setup: Setup, cdn: str, *extra: str) -> list[str]:
    return [
        "compare-paths",
        "--cache-host",
        setup.cache.host_port,
        "--repo",
        "bench:1.0",
        "--cdn-url",
        cdn,
        "--runs",
        "1",
        *extra,
    ]


def test_compare_paths_full(setup: Setup, iperf_port: int, cdn_url: str) -> None:
    result = cli(*paths_args(setup, cdn_url, "--iperf-port", str(iperf_port), "--duration", "1"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for mode in ("single", "-P 4", "-R -P 4"):
        assert re.search(rf"^\[iperf3\] {re.escape(mode)}\s+run 1/1\s+[\d.]+ Mbit/s$", out, re.M)
    assert re.search(r"^\[http\] cache\s+run 1/1 .* Mbit/s$", out, re.M)
    # Both sides timed over the smaller file: the 1.5 MB layer, not the 4 MB CDN file.
    assert "[paths] sizes: cache blob 1.5 MB, CDN file 4.0 MB; every transfer" in out
    assert re.search(r"^\[http\] cdn\s+run 1/1\s+1\.5 MB .* Mbit/s$", out, re.M), out
    assert re.search(r"^iperf3 -R -P 4\s+avg=[\d.]+ Mbit/s", out, re.M)
    assert re.search(r"^http cache\s+avg=", out, re.M)
    assert "[verdict] thresholds: cache >= 80% of iperf3" in out
    assert "(iperf3 reference: -R -P 4)" in out
    verdicts = [v for v in re.findall(r"^\[verdict\] ([a-z-]+): ", out, re.M) if v != "thresholds"]
    assert len(verdicts) == 2
    assert verdicts[0] in {"network-limit", "in-between", "cache-host"}
    assert verdicts[1] in {"path-bottleneck", "cache-not-slower", "cdn-faster"}
    # Never two places blamed: a cache-host verdict is not followed by path-bottleneck.
    assert not (verdicts[0] == "cache-host" and verdicts[1] == "path-bottleneck"), out


def test_compare_paths_skip_iperf_json(setup: Setup, cdn_url: str) -> None:
    blob = max(setup.pushed.images[0].layers, key=lambda layer: layer.size)
    blob_url = f"{setup.cache.url}/v2/docker.io/library/bench/blobs/{blob.digest}"
    result = cli(
        *paths_args(
            setup, cdn_url, "--skip-iperf", "--json", "--runs", "2", "--cache-blob-url", blob_url
        )
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["iperf3"] == {}
    assert doc["cache_blob_url"] == blob_url
    assert [r["bytes"] for r in doc["http"]["cache"]["runs"]] == [blob.size, blob.size]
    assert [r["bytes"] for r in doc["http"]["cdn"]["runs"]] == [blob.size, blob.size]
    assert doc["sizes"] == {"cache": blob.size, "cdn": 4_000_000, "compared": blob.size}
    assert [v["key"] for v in doc["verdicts"]] in (["path-bottleneck"], ["cache-not-slower"])


def test_compare_paths_stops_the_larger_side_at_the_smaller_size(
    setup: Setup, cdn_url: str
) -> None:
    """A cache blob larger than the CDN file is timed over the CDN file's size."""
    big = cdn_url.replace("100Mb.dat", "6Mb.dat")
    args = paths_args(setup, cdn_url, "--skip-iperf", "--json", "--cache-blob-url", big)
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["sizes"] == {"cache": 6_000_000, "cdn": 4_000_000, "compared": 4_000_000}
    assert [r["bytes"] for r in doc["http"]["cache"]["runs"]] == [4_000_000]
    assert [r["bytes"] for r in doc["http"]["cdn"]["runs"]] == [4_000_000]
    assert doc["thresholds"] == {"network_limit": 0.8, "cache_host": 0.5, "cdn_faster": 1.5}


def test_compare_paths_without_iperf3_binary(setup: Setup, cdn_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = cli(*paths_args(setup, cdn_url), path=str(empty))
    assert result.returncode == 0, result.stderr
    assert "[iperf3] iperf3 not found on PATH: iperf3 part skipped" in result.stdout
    assert "[http] cache    run 1/1" in result.stdout
    assert "[http] cdn      run 1/1" in result.stdout


def test_compare_paths_without_iperf3_server(setup: Setup, cdn_url: str) -> None:
    require_tools("iperf3", hint="apt-get install iperf3")
    port = free_port()
    result = cli(*paths_args(setup, cdn_url, "--iperf-port", str(port), "--duration", "1"))
    assert result.returncode == 0, result.stderr
    assert f"[iperf3] no iperf3 server at 127.0.0.1:{port}" in result.stdout
    assert "[http] cdn      run 1/1" in result.stdout


def test_compare_paths_cache_unreachable(setup: Setup, cdn_url: str) -> None:
    args = paths_args(setup, cdn_url, "--skip-iperf")
    args[args.index("--cache-host") + 1] = f"127.0.0.1:{free_port()}"
    assert "unreachable" in one_line_error(cli(*args))


def test_compare_paths_wrapper_cdn_down(setup: Setup) -> None:
    dead = f"http://127.0.0.1:{free_port()}/100Mb.dat"
    result = run(
        [str(REPO_ROOT / "compare-paths.sh"), *paths_args(setup, dead)[1:], "--skip-iperf"]
    )
    assert result.returncode == 0, result.stderr
    assert "[http] cdn      failed:" in result.stdout
    assert "[verdict] none: not enough measurements" in result.stdout


# -- the seed's invocations, against a virtual host ---------------------------------

DOMAIN = "cache.test"


def run_seed(argv: list[str], hosts: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` under a private /etc/hosts naming the cache's virtual hosts."""
    env = procs.clean_env(drop_prefixes=DROP_ENV)
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    return run_in_hosts_namespace(argv, hosts, env, timeout=180, cwd=REPO_ROOT)


@pytest.fixture
def vhost(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    hosts_file: Callable[..., Path],
) -> tuple[UpstreamRegistry, CacheServer, Path, PushResult]:
    upstream = make_upstream("none")
    pushed = push_image(
        upstream.url, "library/nginx", "latest", build_index("nginx", layers=2, layer_size=600_000)
    )
    push_image(upstream.url, "library/alpine", "latest", build_index("alpine", layers=1))
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--domain", DOMAIN)
    return upstream, cache, hosts_file([f"docker.io.{DOMAIN}", f"ghcr.io.{DOMAIN}"]), pushed


def test_seed_benchmark_invocation_on_a_virtual_host(
    vhost: tuple[UpstreamRegistry, CacheServer, Path, PushResult],
) -> None:
    """``./benchmark-cache.sh --cache-host docker.io.<domain>:5000 --repo library/nginx
    --tag latest --pulls 3``: the Host names the upstream, so paths carry no prefix."""
    upstream, cache, hosts, pushed = vhost
    cache_host = f"docker.io.{DOMAIN}:{cache.port}"
    seed = ["--cache-host", cache_host, "--repo", "library/nginx", "--tag", "latest"]
    # --upstream: the seed's Docker Hub is played by the local registry.
    argv = [str(REPO_ROOT / "benchmark-cache.sh"), *seed, "--pulls", "3"]
    result = run_seed([*argv, "--upstream", upstream.url], hosts)
    assert result.returncode == 0, result.stderr
    assert f"cache=http://{cache_host} (path style host)" in result.stdout
    rows = [line.split()[0] for line in result.stdout.splitlines() if " n=3 " in line]
    assert rows == SCENARIOS
    log = wait_for_log(cache, f'"GET /v2/library/nginx/manifests/{pushed.digest}')
    assert "/v2/docker.io/library/nginx" not in log
    # A virtual host of another registry cannot reach this image: one line, exit 2.
    wrong = run_seed(
        [*argv[:2], f"ghcr.io.{DOMAIN}:{cache.port}", *argv[3:], "--upstream", upstream.url],
        hosts,
    )
    assert wrong.returncode == 2, wrong.stderr
    assert "virtual host of ghcr.io, but docker.io/library/nginx is on docker.io" in wrong.stderr


def test_seed_compare_paths_invocation_on_a_virtual_host(
    vhost: tuple[UpstreamRegistry, CacheServer, Path, PushResult], iperf_port: int, cdn_url: str
) -> None:
    """``./compare-paths.sh --cache-host docker.io.<domain>:5000 --runs 3`` (alpine)."""
    _, cache, hosts, _ = vhost
    cache_host = f"docker.io.{DOMAIN}:{cache.port}"
    argv = [str(REPO_ROOT / "compare-paths.sh"), "--cache-host", cache_host, "--runs", "3"]
    # Local stand-ins for the seed's iperf3 server and public CDN.
    local = ["--cdn-url", cdn_url, "--iperf-port", str(iperf_port), "--duration", "1"]
    result = run_seed([*argv, *local], hosts)
    assert result.returncode == 0, result.stderr
    assert f"cache blob URL: http://{cache_host}/v2/library/alpine/blobs/sha256:" in result.stdout
    assert len(re.findall(r"^\[http\] cache\s+run \d/3 ", result.stdout, re.M)) == 3
    log = wait_for_log(cache, '"GET /v2/library/alpine/blobs/sha256:')
    assert "/v2/docker.io/library/alpine" not in log
