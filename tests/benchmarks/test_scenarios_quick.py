"""``python -m benchmarks --quick --scenario cluster`` and ``--scenario dashboard``: each new
scenario end to end, on its own (the all-scenario quick test leaves them out: ``OWN_TESTS``).

A smoke test, not a measurement: small blobs, one repetition, no redo of noisy
repetitions. What is asserted is behaviour the figures must show whatever the
machine's speed — one upstream fetch for the whole cluster, no failed GET, the
dashboard really off in the "off" cache — and that every figure is a number and
every target has a verdict; then that everything the run started is stopped and
its directories (PostgreSQL's too) are gone.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cluster import BUCKET_HIT, BUCKETED, CLUSTER, HIT_SOURCES, SHARED, SINGLE
from benchmarks.dashboard import (
    DASHBOARD_CPU,
    INSTRUCTIONS,
    LOOP_INSTRUCTIONS,
    NOISE_FLOOR,
    OFF,
    ON,
    POOLED,
    POOLED_NOISE,
    SHARE,
    TWIN,
)
from benchmarks.postgres import postgres_missing, state_prefix
from benchmarks.seaweed import weed_missing
from tests.benchmarks.test_suite_quick import OWN_TESTS, _processes_mentioning
from tests.harness.cache import REPO_ROOT, SRC_DIR, cli_env
from tests.harness.require import require, require_tools

pytestmark = pytest.mark.integration


def quick_run(scenario: str, tmp_path: Path, timeout: float) -> tuple[dict[str, Any], int]:
    """Run one scenario with --quick; (results.json, the suite's PID)."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--scenario", scenario]
    argv += ["--retries", "0", "--out", str(out), "--tmpdir", str(tmp_path), "--max-minutes", "4"]
    env = cli_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}:{SRC_DIR}"  # the suite lives beside the product
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as suite:
        try:
            _, stderr = suite.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            suite.kill()  # our own child, by its PID
            raise
    assert suite.returncode == 0, stderr[-3000:]
    report: dict[str, Any] = json.loads((out / "results.json").read_text())
    (result,) = report["scenarios"].values()
    assert result["error"] is None, result["error"]
    for key, figure in result["figures"].items():
        assert len(figure["values"]) == 1, key
        assert all(math.isfinite(v) for v in figure["values"]), key
        if "extra" not in key:  # a difference of two timings may come out negative
            assert all(v >= 0 for v in figure["values"]), key
    verdicts = [t for t in report["targets"] if t["scenario"] == scenario]
    assert verdicts and all(
        (t["met"] if t.get("retired") else t["pass"]) in (True, False) for t in verdicts
    )
    # Everything it started is stopped and its temporary directories are removed.
    assert _processes_mentioning(str(tmp_path)) == []
    assert not [d for d in tmp_path.iterdir() if d.name.startswith("registry-cache-bench-")]
    return report, suite.pid


def figure(report: dict[str, Any], scenario: str, key: str) -> float:
    values: list[float] = report["scenarios"][scenario]["figures"][key]["values"]
    return values[0]


def test_the_scenarios_with_their_own_quick_test_are_these() -> None:
    assert set(OWN_TESTS) == {"cluster", "dashboard"}


@pytest.mark.timeout(240)
def test_quick_cluster_scenario(tmp_path: Path) -> None:
    require_tools("docker-registry", "nginx")
    why = postgres_missing() or weed_missing()
    require(why is None, str(why))
    report, pid = quick_run("cluster", tmp_path, timeout=220)

    def got(key: str) -> float:
        return figure(report, "cluster", key)

    # Behaviour, not speed: the whole cluster fetched the herd's blob once, every client
    # got it whole, every replica stored a correct copy, and the copy from a peer and the
    # local hit added nothing upstream.
    assert got(f"{CLUSTER} upstream bytes") == 1.0
    assert got(f"{CLUSTER} upstream GETs") == 1.0
    assert got(f"{CLUSTER} failed GETs") == 0
    assert got(f"{CLUSTER} bad stored copies") == 0
    assert got(f"{CLUSTER} upstream bytes, cold fill and every hit") == 1.0
    assert got(f"{SINGLE} upstream bytes") == 1.0
    # distribution's replicas share storage but not fills: each client costs a fetch.
    assert got(f"{SHARED} upstream bytes") > 1.0
    for source in HIT_SOURCES:
        assert got(f"{CLUSTER} {source.name}") > 0
        assert f"{source.name} vs 1-node local hit" in report["scenarios"]["cluster"]["figures"]
    # With the bucket: replica 1 read the blob from it (the scenario checks the replica's
    # fill-source metric), and nothing after the cold fill went upstream.
    assert got(f"{BUCKETED} {BUCKET_HIT}") > 0
    assert got(f"{BUCKETED} upstream bytes, cold fill and every hit") == 1.0
    assert got(f"{BUCKET_HIT} vs local hit") > 0
    assert got(f"{BUCKET_HIT} vs 1-node local hit") > 0
    judged = {t["figure"] for t in report["targets"] if t["scenario"] == "cluster"}
    assert f"{CLUSTER} upstream bytes" in judged
    # PostgreSQL was started for the run (as its own user) and is gone with it.
    assert _processes_mentioning(state_prefix(pid)) == []
    assert not list(Path("/tmp").glob(state_prefix(pid) + "*"))
    assert _processes_mentioning("rc-bench-weed-") == []  # SeaweedFS too


@pytest.mark.timeout(240)
def test_quick_dashboard_scenario(tmp_path: Path) -> None:
    require_tools("docker-registry", "wrk", "valgrind", "callgrind_control")
    report, _ = quick_run("dashboard", tmp_path, timeout=220)

    def got(key: str) -> float:
        return figure(report, "dashboard", key)

    for who in (ON, OFF, TWIN):
        assert got(f"{who} requests/s") > 0
        assert got(f"{who} CPU per request") > 0
    assert got(DASHBOARD_CPU) > 0 and got(NOISE_FLOOR) > 0
    assert 0 < got("Recorder.answered per call") < 1000  # microseconds
    assert got(POOLED) > 0 and got(POOLED_NOISE) > 0
    share = got(SHARE)  # the call over the CPU per request with the dashboard off, in %
    assert share == pytest.approx(
        got("Recorder.answered per call") / got(f"{OFF} CPU per request") * 100, rel=0.01
    )
    # Counted by callgrind: both caches served the same requests through the same code but
    # for the counting, so they cannot be far apart (a broken count would be 0 or wild).
    for who in (ON, OFF):
        assert 50_000 < got(f"{who} instructions per request, event-loop thread") < 20_000_000
        assert got(f"{who} instructions per request") >= got(
            f"{who} instructions per request, event-loop thread"
        )
    assert 0.9 < got(INSTRUCTIONS) < 1.2 and 0.9 < got(LOOP_INSTRUCTIONS) < 1.2
    judged = {t["figure"] for t in report["targets"] if t["scenario"] == "dashboard"}
    assert DASHBOARD_CPU in judged and INSTRUCTIONS in judged
