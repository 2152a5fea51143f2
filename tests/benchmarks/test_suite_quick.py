"""``python -m benchmarks --quick`` end to end: a smoke test, not a measurement.

It starts docker-registry, distribution's proxy, nginx and the cache on 127.0.0.1,
runs every scenario once with small blobs (but those in ``OWN_TESTS``, which have
a quick test of their own), and checks that results.json has every scenario with
numbers and every target with a verdict. Performance targets are
not asserted here: they live in the suite's report, not in timed tests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import SCENARIOS
from tests.harness.cache import REPO_ROOT, SRC_DIR, cli_env, run_cli
from tests.harness.require import require_tools

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tools("docker-registry", "nginx")


# Scenarios with a quick test of their own (test_scenarios_quick.py), left out here.
OWN_TESTS = ("cluster", "dashboard")


@pytest.mark.timeout(720)
def test_quick_suite_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--quick", "--reps", "1"]
    argv += ["--out", str(out), "--tmpdir", str(tmp_path), "--max-minutes", "11"]
    for name in SCENARIOS:
        if name not in OWN_TESTS:
            argv += ["--scenario", name]
    result = run_suite(*argv, cwd=tmp_path, timeout=700)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("### registry-cache benchmark suite")

    assert set(SCENARIOS) - set(OWN_TESTS) <= set(report["scenarios"])
    for name, scenario in report["scenarios"].items():
        assert scenario["error"] is None, (name, scenario["error"])
        assert scenario["figures"], name
        for key, figure in scenario["figures"].items():
            assert len(figure["values"]) >= 1, (name, key)
            assert all(math.isfinite(v) for v in figure["values"]), (name, key)
            if "extra" not in key:  # differences of two timings may come out negative
                assert all(v >= 0 for v in figure["values"]), (name, key)
    herd = report["scenarios"]["herd"]["figures"]
    assert herd["registry-cache upstream bytes"]["values"] == [1.0]  # behaviour, not speed

    verdicts = {(t["scenario"], t["figure"]): t for t in report["targets"]}
    assert ("warm-blob", "vs nginx") in verdicts
    assert ("warm-blob", "vs nginx, 32 KiB reads") in verdicts  # built and ran httpget.c
    assert ("warm-blob", "vs distribution-proxy, curl") in verdicts
    assert ("cli-startup", "registry-cache --help") in verdicts
    for name in ("wan-far", "wan-near"):  # behind the shaped link: single flight holds
        rollout = report["scenarios"][name]["figures"]["rollout: registry-cache upstream bytes"]
        assert rollout["values"] == [1.0]
        assert (name, "registry-cache cold pull vs direct, every pull") in verdicts
        # Beside each cold pull: the machine's load, the cache's and the forwarder's CPU,
        # and the pull split from the upstream's log (its layers' span on the link).
        figures = report["scenarios"][name]["figures"]
        for who in ("direct", "registry-cache"):
            assert figures[f"{who} cold pull: machine cores busy"]["values"][0] > 0
            layers = figures[f"{who} cold pull: layers on the link"]["values"][0]
            assert 0 < layers < figures[f"{who} cold pull, each pull"]["values"][0]
            assert f"{who} cold pull: link forwarder CPU" in figures
        assert "registry-cache cold pull: server CPU" in figures
        # Beside each rollout through the cache: where the two cores' time went.
        for phase in ("cold", "warm"):
            rollout_cpu = f"rollout: registry-cache {phase}"
            assert figures[f"{rollout_cpu}: machine cores busy"]["values"][0] > 0
            assert figures[f"{rollout_cpu}: clients' CPU"]["values"][0] > 0  # 8 skopeo runs
            for part in ("server CPU", "link forwarder CPU", "everything else's CPU"):
                assert f"{rollout_cpu}: {part}" in figures
    for client in ("skopeo oci:", "ctr fetch", "ctr pull"):  # real clients, hermetic
        assert ("image-pull", f"speed-up vs distribution-proxy, {client}") in verdicts
    assert ("workers", "2 vs 1 workers") in verdicts
    # Every target is judged; a retired one is measured and reported, never judged.
    for t in verdicts.values():
        assert (t["met"] if t.get("retired") else t["pass"]) in (True, False), t
        assert t["pass"] is None or not t.get("retired"), t
    assert verdicts[("herd", "registry-cache wall vs single")]["retired"]
    assert report["config"]["quick"] is True
    assert report["machine"]["nproc"] >= 1

    # Everything it started is stopped, and its temporary directory removed.
    assert _processes_mentioning(str(tmp_path)) == []
    assert not [d for d in tmp_path.iterdir() if d.name.startswith("registry-cache-bench-")]


def run_suite(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks *args`` from ``cwd``, with the repository root importable
    (the suite is not installed: it lives beside the product, not in it)."""
    env = cli_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}:{SRC_DIR}"
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    result = run_suite("--scenario", "nope", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_product_cli_has_no_bench_suite(tmp_path: Path) -> None:
    result = run_cli("bench-suite", "--help", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "No such command" in result.stderr
