"""tests/harness/require.py: a missing tool skips locally and FAILS under CI=true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import proc as procs

REPO_ROOT = Path(__file__).resolve().parents[2]

SAMPLE = """
import pytest
from tests.harness.require import needs, require_tools

started = []

@pytest.fixture
def expensive():
    started.append(1)
    yield

@needs(False, "frobnicator not installed")
def test_marked(expensive):
    pass

def test_in_body():
    require_tools("no-such-tool-anywhere")

def test_fixture_never_started():
    assert started == []
"""
CONFTEST = "from tests.conftest import pytest_configure, pytest_runtest_setup  # noqa: F401\n"


def run_sample(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    env = procs.clean_env(drop_prefixes=("CI", "PYTEST_"))
    env["PYTHONPATH"] = str(REPO_ROOT)
    if ci is not None:
        env["CI"] = ci
    argv = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "--rootdir", str(tmp_path), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_tools_skip_outside_ci(tmp_path: Path) -> None:
    result = run_sample(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout
    assert "frobnicator not installed" in result.stdout
    assert "no-such-tool-anywhere not installed" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_tools_fail_under_ci(tmp_path: Path, ci: str) -> None:
    result = run_sample(tmp_path, ci)
    assert result.returncode == 1, result.stdout
    # The mark fails in setup (before the fixture started), the body call fails.
    assert "1 failed, 1 passed, 1 error" in result.stdout, result.stdout
    assert "CI=true: a missing tool or permission fails" in result.stdout
    assert "skipped" not in result.stdout
