"""One suite run: start the lab, run the chosen scenarios, write results.md/.json.

Everything runs on 127.0.0.1 in a temporary directory that is removed at the end
(unless ``keep``); every server is stopped on the way out, also on Ctrl-C and
errors. A scenario that fails is reported as "not measured" with its error and
the run goes on.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import registry_cache

from . import calibration
from .lab import Lab, Sizes
from .load import wrk_available
from .report import memory_summary, to_json, to_markdown, verdicts
from .results import ScenarioResult
from .scenarios import MEMORY_PAUSE, SCENARIOS, Plan
from .servers import find_binary, stop_all

MIB = 1 << 20
FULL = Sizes(
    big=1024 * MIB,
    herd=256 * MIB,
    image_layers=tuple(s * MIB for s in (128, 64, 64, 32, 16, 8, 4, 1)),
)
QUICK = Sizes(big=64 * MIB, herd=16 * MIB, image_layers=tuple(s * MIB for s in (8, 4, 2, 1)))


class SuiteError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    reps: int = 5
    quick: bool = False
    scenarios: Sequence[str] = tuple(SCENARIOS)
    out: Path | None = None
    keep: bool = False
    load_seconds: float = 5.0
    load_tool: str = "auto"
    pull_client: str = "auto"
    drop_caches: bool = False
    herd_clients: int = 16
    max_noise: float = 0.25
    retries: int = 2
    wan_reps: int = 2
    command: str = "python -m benchmarks"
    tmpdir: Path | None = None


@dataclass(slots=True)
class SuiteRun:
    meta: dict[str, Any]
    results: dict[str, ScenarioResult] = field(default_factory=dict)

    @property
    def failed_scenarios(self) -> list[str]:
        return [name for name, result in self.results.items() if result.error]

    @property
    def failed_targets(self) -> list[str]:
        return [v.target.label for v in verdicts(self.results) if v.passed is False]

    def json(self) -> dict[str, Any]:
        return to_json(self.meta, self.results)

    def markdown(self) -> str:
        return to_markdown(self.meta, self.results)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.json(), indent=2) + "\n")
        (out / "results.md").write_text(self.markdown())


def run_suite(options: SuiteOptions, progress: Callable[[str], None]) -> SuiteRun:
    if find_binary("docker-registry") is None:
        raise SuiteError(
            "docker-registry (CNCF distribution) is not installed: run scripts/bench.sh"
        )
    unknown = [s for s in options.scenarios if s not in SCENARIOS]
    if unknown:
        raise SuiteError(f"unknown scenario(s): {', '.join(unknown)}")
    sizes = QUICK if options.quick else FULL
    plan = Plan(
        reps=options.reps,
        herd_clients=options.herd_clients,
        load_seconds=options.load_seconds,
        load_tool=options.load_tool,
        pull_client=options.pull_client,
        drop_caches=options.drop_caches,
        max_noise=options.max_noise,
        retries=options.retries,
        memory_pause=0.0 if options.quick else MEMORY_PAUSE,
        wan_reps=options.wan_reps,
        quick=options.quick,
        progress=progress,
    )
    started = time.monotonic()
    stolen = calibration.steal_mark()
    run = SuiteRun(_meta(options, sizes))
    run.meta["machine"]["calibration"] = calibration.measure()
    workdir = Path(tempfile.mkdtemp(prefix="registry-cache-bench-", dir=options.tmpdir))
    lab = Lab(workdir, sizes, keep=options.keep)
    timings: dict[str, float] = {}
    try:
        try:
            lab.start(progress)
        except (OSError, RuntimeError) as exc:  # StartError, PushError, HttpError
            raise SuiteError(f"could not set up the servers and content: {exc}") from exc
        for name in options.scenarios:
            begun = time.monotonic()
            progress(f"{name}: starting")
            try:
                run.results[name] = SCENARIOS[name](lab, plan)
            except Exception as exc:  # reported as "not measured"; the run goes on
                run.results[name] = ScenarioResult(name, name, error=f"{type(exc).__name__}: {exc}")
            timings[name] = round(time.monotonic() - begun, 1)
        memory = memory_summary(run.results)
        if memory is not None:
            run.results["memory"] = memory
    finally:
        lab.close()
        stop_all()
        if options.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    run.meta["seconds"] = round(time.monotonic() - started, 1)
    run.meta["scenario_seconds"] = timings
    run.meta["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    run.meta["machine"]["steal"] = calibration.steal_since(stolen)
    if options.out is not None:
        run.write(options.out)
    return run


def _meta(options: SuiteOptions, sizes: Sizes) -> dict[str, Any]:
    return {
        "suite": "python -m benchmarks",
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": options.command,
        "revision": revision(),
        "core_fingerprint": core_fingerprint(),
        "machine": machine(),
        "tools": tool_versions(options),
        "config": {
            "reps": options.reps,
            "quick": options.quick,
            "big_blob_bytes": sizes.big,
            "herd_blob_bytes": sizes.herd,
            "herd_clients": options.herd_clients,
            "image_layer_bytes": list(sizes.image_layers),
            "load_seconds": options.load_seconds,
            "load_tool": "wrk"
            if options.load_tool == "auto" and wrk_available()
            else ("builtin" if options.load_tool == "auto" else options.load_tool),
            "drop_caches": options.drop_caches,
            "max_noise_cores": options.max_noise,
            "retries": options.retries,
            "wan_reps": options.wan_reps,
        },
        "seconds": 0.0,
    }


def machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0))
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_kib = int(first.split()[1])
    distro = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    ram = mem_kib / (1 << 20)
    return {
        "nproc": cpus,
        "cpu": model,
        "ram_gib": round(ram, 1),
        "os": distro,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "description": f"{cpus} x {model}, {ram:.0f} GiB RAM, {distro}, "
        f"Linux {platform.release()}, Python {platform.python_version()}, loopback",
    }


def core_fingerprint() -> str:
    """sha256 (12 hex) of the cache's own sources, benchmark tools excluded: runs with the
    same fingerprint measured the same server code, whatever the commit says."""
    package = Path(registry_cache.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith(("bench/", "cli/bench")):
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def revision() -> str | None:
    """The checkout measured: commit, plus "+dirty" when the working tree has changes."""
    root = Path(__file__).resolve().parents[1]  # benchmarks/ sits at the repository's root

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def tool_versions(options: SuiteOptions) -> dict[str, str]:
    probes = {
        "docker-registry": ["--version"],
        "nginx": ["-v"],
        "wrk": ["-v"],
        "skopeo": ["--version"],
        "containerd": ["--version"],
        "curl": ["--version"],
        "gcc": ["--version"],
    }
    versions: dict[str, str] = {}
    for name, args in probes.items():
        binary = find_binary(name)
        if binary is None:
            continue
        try:
            done = subprocess.run(
                [binary, *args], capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            continue
        text = (done.stdout + done.stderr).strip().splitlines()
        versions[name] = _version(text[0] if text else "?")
    return versions


def _version(line: str) -> str:
    for word in line.replace("/", " ").split():
        if word[:1].isdigit():
            return word.rstrip(",)")
    return line[:40]
