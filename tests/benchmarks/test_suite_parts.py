"""The suite's pure parts: wrk parsing, access logs, targets, report, content."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmarks import calibration
from benchmarks.content import write_layer
from benchmarks.load import LoadError, parse_wrk
from benchmarks.measure import UpstreamLog, requests_per_process
from benchmarks.report import (
    BLOB_SIZE_RATIO,
    RETIRED_COLD,
    Target,
    memory_summary,
    to_json,
    to_markdown,
    verdicts,
)
from benchmarks.results import Figure, ScenarioResult
from benchmarks.runner import core_fingerprint, revision
from benchmarks.scenarios import PSS, RSS, rotated
from benchmarks.servers import Balancer, Cache, ClusterMember

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:25000/v2/library/bench/manifests/v1
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.52ms    1.01ms  25.10ms   90.00%
    Req/Sec     4.50k   300.00     5.00k    70.00%
  Latency Distribution
     50%    3.38ms
     75%    3.90ms
     90%    4.50ms
     99%  850.00us
  44880 requests in 5.00s, 60.00MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   8976.00
Transfer/sec:     12.00MB
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 44880
    assert result.seconds == 5.0
    assert result.rps == 8976.0
    assert result.p50_ms == pytest.approx(3.38)
    assert result.p99_ms == pytest.approx(0.85)
    assert result.errors == 15
    result.check("ok")  # 15 of 44880 is under 1%


def test_parse_wrk_rejects_garbage_and_error_floods() -> None:
    with pytest.raises(LoadError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")
    flood = WRK_OUTPUT.replace("Non-2xx or 3xx responses: 12", "Non-2xx or 3xx responses: 44880")
    with pytest.raises(LoadError):
        parse_wrk(flood).check("404s")


def test_upstream_log_counts_blob_get_bytes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    digest = "sha256:" + "a" * 64
    log.write_text(f'127.0.0.1 - - [x] "GET /v2/r/blobs/{digest} HTTP/1.1" 200 100 "" "ua"\n')
    upstream = UpstreamLog(log)
    mark = upstream.mark()
    with log.open("a") as f:
        f.write(f'127.0.0.1 - - [x] "GET /v2/r/blobs/{digest} HTTP/1.1" 200 1000 "" "ua"\n')
        f.write(f'127.0.0.1 - - [x] "GET /v2/r/blobs/{digest} HTTP/1.1" 206 24 "" "ua"\n')
        f.write(f'127.0.0.1 - - [x] "HEAD /v2/r/blobs/{digest} HTTP/1.1" 200 0 "" "ua"\n')
        f.write('127.0.0.1 - - [x] "GET /v2/r/manifests/v1 HTTP/1.1" 200 500 "" "ua"\n')
        f.write(f'127.0.0.1 - - [x] "GET /v2/r/blobs/{digest} HTTP/1.1" 404 50 "" "ua"\n')
    traffic = upstream.blob_traffic(mark, digest)
    assert (traffic.requests, traffic.bytes) == (2, 1024)
    assert upstream.blob_traffic(0, digest).bytes == 1124


def test_requests_per_process(tmp_path: Path) -> None:
    log = tmp_path / "cache.log"
    line = '2026-01-01 00:00:00,000 INFO [{}] registry_cache.access: 127.0.0.1 "GET /v2/" 200\n'
    log.write_text(line.format(7) + line.format(8) + line.format(8) + "noise\n")
    assert requests_per_process(log, 0) == [2, 1]


def test_rotated() -> None:
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_targets_judge_the_median_or_every_repetition() -> None:
    figure = Figure("x", [0.5, 1.0, 2.0])
    assert Target("s", "f", ">=", 1.0, "l").judge(figure)
    assert not Target("s", "f", ">=", 1.0, "l", every_rep=True).judge(figure)
    assert Target("s", "f", "==", 1.0, "l", every_rep=True).judge(Figure("x", [1.0, 1.0]))
    assert Target("s", "f", "<", 20, "l").text("ms") == "< 20.0 ms"


def _results() -> dict[str, ScenarioResult]:
    warm = ScenarioResult("warm-blob", "Warm blob GET, 1 GiB")
    for cache, nginx in ((1.5, 1.6), (1.4, 1.7), (1.6, 1.6)):
        warm.add("registry-cache", "GB/s", cache)
        warm.add("vs nginx", "x", cache / nginx)
        warm.add(RSS, "MB", 60.0)
    cold = ScenarioResult("cold-blob", "Cold")
    herd = ScenarioResult("herd", "Herd")
    for big, small in ((80.0, 75.0), (82.0, 78.0)):
        cold.add(RSS, "MB", big)
        herd.add(f"{RSS}, single GET", "MB", small)
    broken = ScenarioResult("image-pull", "image-pull", error="ScenarioError: skopeo failed")
    return {"warm-blob": warm, "cold-blob": cold, "herd": herd, "image-pull": broken}


def test_a_prefork_cache_is_judged_on_its_summed_pss() -> None:
    """Summed RSS counts the pages forked workers share with their parent once per
    process; the memory target of a several-process cache is judged on summed PSS."""
    workers = ScenarioResult("workers", "Tag manifests: --workers 2 vs 1")
    workers.add(RSS, "MB", 155.0)
    workers.add(PSS, "MB", 104.0)
    judged = {(v.target.scenario, v.target.figure): v.passed for v in verdicts({"w": workers})}
    assert judged == {("w", PSS): True}
    over = ScenarioResult("workers", "over")
    over.add(RSS, "MB", 120.0)
    over.add(PSS, "MB", 151.0)
    assert [v.passed for v in verdicts({"w": over})] == [False]


def test_report_markdown_and_json() -> None:
    results = _results()
    memory = memory_summary(results)
    assert memory is not None
    assert memory.figures[BLOB_SIZE_RATIO].values == [80 / 75, 82 / 78]
    results["memory"] = memory
    meta = {
        "started": "2026-01-01 00:00 UTC",
        "command": "python -m benchmarks",
        "revision": "abc1234",
        "seconds": 300.0,
        "machine": {"description": "2 x CPU"},
        "tools": {"wrk": "4.1.0"},
        "config": {"reps": 3},
    }
    markdown = to_markdown(meta, results)
    assert "| warm blob GET vs nginx sendfile | ≥ 0.9x | 0.938x [0.824-1.00] | pass |" in markdown
    assert "**not measured:** ScenarioError: skopeo failed" in markdown
    assert "| peak RSS during warm-blob | ≤ 150 MB | 60.0 MB [60.0-60.0] | pass |" in markdown
    doc = json.loads(json.dumps(to_json(meta, results)))
    assert doc["scenarios"]["warm-blob"]["figures"]["registry-cache"]["median"] == 1.5
    judged = {(t["scenario"], t["figure"]): t["pass"] for t in doc["targets"]}
    assert judged[("warm-blob", "vs nginx")] is True
    assert judged[("memory", BLOB_SIZE_RATIO)] is True
    unmeasured = {(v.target.scenario, v.target.figure) for v in verdicts(results) if not v.figure}
    assert unmeasured == {
        ("warm-blob", "vs distribution-proxy"),
        ("warm-blob", "vs nginx, 32 KiB reads"),
        ("warm-blob", "vs distribution-proxy, 32 KiB reads"),
        ("warm-blob", "vs nginx, curl"),
        ("warm-blob", "vs distribution-proxy, curl"),
        ("image-pull", "speed-up vs distribution-proxy, skopeo oci:"),
        ("image-pull", "speed-up vs distribution-proxy, ctr fetch"),
        ("image-pull", "speed-up vs distribution-proxy, ctr pull"),
        ("cold-blob", "vs distribution-proxy"),
        ("cold-blob", "vs upstream"),
        ("herd", "registry-cache upstream bytes"),
        ("herd", "registry-cache wall vs single"),
    }
    assert "| herd: upstream bytes | = 1.00 | not measured | — |" in markdown


def test_a_retired_target_is_reported_but_never_fails() -> None:
    cold = ScenarioResult("cold-blob", "Cold")
    for ratio in (0.4, 0.5):
        cold.add("vs upstream", "x", ratio)
    (verdict,) = [v for v in verdicts({"cold-blob": cold}) if v.figure is not None]
    assert verdict.target.retired
    assert verdict.met is False
    assert verdict.passed is None
    meta = {
        "started": "2026-01-01 00:00 UTC",
        "command": "python -m benchmarks",
        "seconds": 1.0,
        "machine": {"description": "2 x CPU"},
        "tools": {},
        "config": {"reps": 2},
    }
    row = f"| cold blob GET vs direct upstream | ≥ 0.6x | 0.45x [0.4-0.5] | {RETIRED_COLD} |"
    assert row in to_markdown(meta, {"cold-blob": cold}).splitlines()
    (target,) = [t for t in to_json(meta, {"cold-blob": cold})["targets"] if t["measured"]]
    assert (target["pass"], target["met"], target["retired"]) == (None, False, RETIRED_COLD)


def test_write_layer_is_a_valid_gzip_tar(tmp_path: Path) -> None:
    layer = write_layer(tmp_path, "unit/0", 3 * (1 << 20) + 7)
    data = layer.path.read_bytes()
    assert layer.size == len(data)
    assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    raw = gzip.decompress(data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    with tarfile.open(layer.path) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.size) == ("data/random.bin", 3 * (1 << 20) + 7)
    other = write_layer(tmp_path, "unit/1", 3 * (1 << 20) + 7)
    assert other.digest != layer.digest


def test_revision_is_this_checkout() -> None:
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    measured = revision()
    assert measured is not None
    assert measured.removesuffix("+dirty") == head
    assert len(core_fingerprint()) == 12


def test_the_measured_cache_imports_this_checkouts_product(tmp_path: Path) -> None:
    env = Cache(tmp_path, "http://127.0.0.1:1").env()
    src = Path(env["PYTHONPATH"])
    assert (src / "registry_cache" / "__init__.py").is_file()
    assert src == Path(__file__).resolve().parents[2] / "src"


def test_a_replica_advertises_its_own_url_and_shares_index_and_secret(tmp_path: Path) -> None:
    member = ClusterMember("postgresql://bench@127.0.0.1:5432/bench_0", tmp_path / "secret")
    replica = Cache(tmp_path / "a", "http://127.0.0.1:1", cluster=member, extra=["--no-dashboard"])
    replica.port = 23456
    argv = replica.command()
    flags = dict(itertools.pairwise(argv))
    assert flags["--index"] == member.index
    assert flags["--advertise"] == "http://127.0.0.1:23456"
    assert flags["--cluster-secret-file"] == str(tmp_path / "secret")
    assert argv[-1] == "--no-dashboard"
    assert "--index" not in Cache(tmp_path / "b", "http://127.0.0.1:1").command()


def test_the_balancer_passes_bytes_unbuffered_round_robin(tmp_path: Path) -> None:
    balancer = Balancer(tmp_path, ["127.0.0.1:1", "127.0.0.1:2"])
    balancer.port = 23457
    balancer.prepare()
    config = balancer.config_path.read_text()
    assert "server 127.0.0.1:1 max_fails=0;" in config and "server 127.0.0.1:2" in config
    assert "proxy_buffering off;" in config and "listen 127.0.0.1:23457;" in config
    assert "least_conn" not in config and "hash " not in config  # round robin: the default


def test_error_lines_of_both_kinds_of_server(tmp_path: Path) -> None:
    from benchmarks.cluster import _errors

    cache = Cache(tmp_path, "http://127.0.0.1:1")
    cache.log_path.write_text(
        '2026-01-01 00:00:00,000 INFO [7] registry_cache.access: 127.0.0.1 "GET /v2/" 200\n'
    )
    mark = cache.log_path.stat().st_size
    with cache.log_path.open("a") as log:
        log.write("2026-01-01 00:00:01,000 ERROR [7] registry_cache.web: boom\n")
        log.write('time="2026-01-01T00:00:02Z" level=error msg="unknown blob"\n')
        log.write('time="2026-01-01T00:00:02Z" level=info msg="response completed"\n')
    assert [line.split()[-1] for line in _errors(cache, mark)] == ["boom", 'blob"']
    assert _errors(cache, 0)[0].endswith("boom")


def test_the_report_gives_the_host_speed_it_was_measured_at() -> None:
    """Absolute figures vary with the host's speed from day to day: the report says it."""
    mark = calibration.steal_mark()
    measured = calibration.measure()
    assert measured["python_mops"] > 0.1 and measured["sha256_gbps"] > 0.05
    assert measured["wakeups_k"] > 0.5
    stolen = calibration.steal_since(mark)
    assert stolen is None or 0.0 <= stolen <= 1.0
    meta = {
        "started": "2026-01-01 00:00 UTC",
        "command": "python -m benchmarks",
        "seconds": 1.0,
        "machine": {"description": "2 x CPU", "calibration": measured, "steal": 0.031},
        "tools": {},
        "config": {"reps": 1},
    }
    line = next(x for x in to_markdown(meta, {}).splitlines() if x.startswith("- host speed:"))
    assert f"pure-Python loop {measured['python_mops']:.2f} M iterations/s" in line
    assert f"SHA-256 {measured['sha256_gbps']:.2f} GB/s on one core" in line
    assert f"{measured['wakeups_k']:.1f} k process round trips/s" in line
    assert line.endswith("3.1% of CPU time stolen by the hypervisor during the run")
    meta["machine"] = {"description": "2 x CPU"}  # a run recorded before calibration
    assert "host speed" not in to_markdown(meta, {})
