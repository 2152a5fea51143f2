"""The big-cache benchmark runs end to end at a tiny size (2,000 objects), over both
indexes, so it cannot rot: every figure of its tables is measured and sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cache import REPO_ROOT, cli_env
from tests.harness.postgres import postgres_available
from tests.harness.require import needs

pytestmark = [
    pytest.mark.integration,
    needs(postgres_available(), "PostgreSQL 15 is not installed: apt-get install postgresql-15"),
]


def test_bigcache_benchmark_at_2k_objects(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = cli_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}:{REPO_ROOT / 'src'}"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.bigcache", "--sizes", "2k",
            "--index", "sqlite,postgresql", "--out", str(out), "--work", str(tmp_path / "w"),
            "--max-minutes", "8", "--cli-timeout", "120", "--pass-timeout", "60",
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["size"], r["index"]) for r in results] == [("2k", "sqlite"), ("2k", "postgresql")]
    for r in results:
        assert 2000 <= r["built"]["objects"] < 2200 and r["built"]["files"] > r["built"]["objects"]
        assert r["index_bytes"] > 0 and not r["notes"]
        assert 0 < r["serve"]["startup_s"] < 20 and r["serve"]["rss_after_startup"] > 10e6
        for kind in ("tag", "head", "get"):
            hit = r["hits"][kind]
            assert hit["count"] >= 100 and set(hit["statuses"]) == {"200"}, (kind, hit)
            assert 0 < hit["p50_ms"] <= hit["p99_ms"]
        ev = r["eviction"]
        assert ev["finished"] and ev["objects"] > 0 and ev["bytes"] >= ev["wanted"] > 0
        assert ev["access_time_failures"] == 0
        for name, run in r["cli"].items():
            assert run["returncode"] == 0 and run["peak_rss"] > 10e6, (name, run["stderr_tail"])
        assert r["sigterm"]["exit_s"] is not None and r["sigterm"]["within_grace"]
        # Each command ran beside serve with hits flowing (at 2k the passes may have
        # evicted the probe's objects: their status is not checked here).
        assert list(r["beside"]) == ["gc --dry-run", "gc", "prune", "verify"]
        for name, step in r["beside"].items():
            assert step["run"]["returncode"] == 0, (name, step["run"]["stderr_tail"])
            assert step["probe"]["all"]["count"] > 0, (name, step["probe"])
    table = (out / "results.md").read_text()
    assert "## SQLite index" in table and "## PostgreSQL index" in table
    assert "| eviction pass (cap 90 %) |" in table and "| `cache ls`: wall, peak RSS |" in table
    assert "| hits beside `cache gc`: p50 / p99 / max (ms) | p99 ≤ 10 ms |" in table
    assert "| `cache prune` beside serve: wall, peak RSS |  |" in table
