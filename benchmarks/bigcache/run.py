"""One data set, measured: build it, then the maintenance commands, ``serve``, eviction.

In this order, so that nothing measured runs on what an earlier step changed:

1. build the data set (files on the volume, rows through ``Index.import_rows``);
   the index's size on disk;
2. ``cache du --json``, ``cache ls --json``, ``cache ls`` (the table), ``cache gc
   --dry-run --json`` and ``cache verify --json``: wall time, CPU, peak RSS (verify
   changes nothing on a sound data set; gc is a dry run);
3. ``serve``, uncapped: start-up time (spawn to the first ``/healthz`` 200) and RSS;
   one probe per kind (a manifest by tag, a blob HEAD, a small blob GET), each
   request a different sampled object; three rounds, each on a new server, the
   median round reported; SIGTERM when idle;
4. ``serve --max-size`` 90 % of the content: the pass that starts with it, its
   duration (from its log line), the server's CPU meanwhile (less what the probe's
   requests cost, from step 3) and peak RSS; a paced probe (mixed kinds) runs
   until the pass has finished; failed access-time flushes are counted;
5. ``serve --max-size`` 90 % of what is left: SIGTERM while that pass runs, and
   the time to exit against ``--shutdown-grace``;
6. ``serve``, uncapped, and beside it one maintenance command after another
   (``BESIDE``: ``cache gc --dry-run``, ``cache gc``, ``cache prune --older-than``,
   ``cache verify``; last, since gc and prune change the data set): a paced probe
   (mixed kinds, recently used objects) runs from just before each command starts
   until it ended; its hits' p50/p99/max and the command's wall time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .processes import Measured, Serve, product_env, run_measured, stop_child
from .sample import UPSTREAMS, Sample

REPO_ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_GRACE = 2.0
PROBE_RATE = 200.0  # requests per second while a pass runs
HIT_ROUNDS = 3
EVICTED = re.compile(
    r"evicted (\d+) object\(s\), (\d+) bytes \(wanted (\d+)\)(?: in ([0-9.]+) ?s)?"
)
ACCESS_FAILURES = re.compile(
    r"could not record access times|database is locked|index write skipped"
)
SIZES = {"10k": 10_000, "200k": 200_000, "1M": 1_000_000}
# Run beside serve (step 6), in this order. prune: what no one used for 30 days (the
# data set's access times span 60); --grace 0s for gc, as after a long quiet spell.
BESIDE = (
    ("gc --dry-run", ["gc", "--dry-run", "--grace", "0s", "--json"]),
    ("gc", ["gc", "--grace", "0s", "--json"]),
    ("prune", ["prune", "--older-than", "30d", "--json"]),
    ("verify", ["verify", "--json"]),
)


def parse_size(text: str) -> int:
    if text in SIZES:
        return SIZES[text]
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("kM")) * scale)


def _stamp(line: str) -> float:
    """The time of a text log line (``2026-12-01 09:57:24,032 INFO …``)."""
    when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return when.timestamp()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Options:
    work: Path  # where data sets, configs and logs go
    src: Path  # the registry_cache sources measured (PYTHONPATH of every process)
    src_label: str = "current"
    cli_timeout: float = 300.0
    pass_timeout: float = 300.0
    deadline: float = float("inf")  # time.monotonic() at which to give up


@dataclass
class Result:
    size: str
    index: str
    src: str  # the label of the measured sources
    built: dict[str, Any] = field(default_factory=dict)
    index_bytes: int = 0
    disk_bytes: int = 0
    cli: dict[str, dict[str, Any]] = field(default_factory=dict)
    serve: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, Any] = field(default_factory=dict)
    eviction: dict[str, Any] = field(default_factory=dict)
    sigterm: dict[str, Any] = field(default_factory=dict)
    beside: dict[str, Any] = field(default_factory=dict)  # per command: its run, the probe
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class IndexTarget:
    """Where a data set's rows go: SQLite in its data directory, or a PostgreSQL database."""

    kind = "sqlite"

    def config(self) -> dict[str, Any]:
        return {}

    def url(self) -> str | None:
        return None

    def size_on_disk(self, data_dir: Path) -> int:
        return sum(p.stat().st_size for p in data_dir.glob("index.sqlite3*"))

    def settle(self) -> None:
        """After the bulk load, before measuring: nothing to do for SQLite."""


class Dataset:
    """``root``: its configuration, sample and logs; ``scratch``: its data directory and
    the commands' (large) output, on the data set's own volume."""

    def __init__(
        self, label: str, objects: int, target: IndexTarget, root: Path, scratch: Path
    ) -> None:
        self.label = label
        self.objects = objects
        self.target = target
        self.root = root
        self.scratch = scratch
        self.data = scratch / "data"
        self.port = free_port()
        self.advertise = f"http://127.0.0.1:{self.port}"
        self.config_path = root / "registry-cache.yaml"
        self.sample_path = root / "sample.json"
        self.hot_path = root / "hot.json"
        self.disk_bytes: Callable[[], int] | None = None  # what its volume takes on disk

    def write_config(self) -> None:
        dead = free_port()  # nothing listens there: an upstream that refuses at once
        secret = self.root / "cluster-secret"
        secret.write_text(secrets.token_hex(16) + "\n")
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"data_dir: {self.data}",
            "default_upstream: null",
            "tag_ttl: 30d",
            "log_level: info",
            f"shutdown_grace: {SHUTDOWN_GRACE:g}s",
            "upstreams:",
            "  docker.io: null",
            "  ghcr.io: null",
            "  quay.io: null",
            *(f'  {name}: "http://127.0.0.1:{dead}"' for name in UPSTREAMS),
        ]
        for key, value in self.target.config().items():
            lines.append(f"{key}: {value}")
        if self.target.config():
            lines += [f"advertise: {self.advertise}", f"cluster_secret_file: {secret}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _generate(self, src: Path, *args: str, timeout: float) -> str:
        argv = [sys.executable, "-m", "benchmarks.bigcache.generate", "--data", str(self.data)]
        argv += ["--replica", self.advertise]
        url = self.target.url()
        if url is not None:
            argv += ["--index-url", url]
        env = product_env(src)
        env["PYTHONPATH"] = f"{REPO_ROOT}:{src}"
        done = subprocess.run(
            [*argv, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"generate {' '.join(args)} failed: {done.stderr[-3000:]}")
        return done.stdout

    def build(self, src: Path, timeout: float) -> dict[str, Any]:
        """Build with the measured sources' own Index; the summary, sample and time."""
        out = self.root / "built.json"
        self._generate(src, "--objects", str(self.objects), "--out", str(out), timeout=timeout)
        built: dict[str, Any] = json.loads(out.read_text())
        self.sample_path.write_text(json.dumps(built["sample"]))
        self.hot_path.write_text(json.dumps(built["hot"]))
        return built

    def total_size(self, src: Path) -> int:
        return int(self._generate(src, "--total", timeout=120))


def measure(ds: Dataset, opts: Options) -> Result:
    result = Result(ds.label, ds.target.kind, opts.src_label)
    ds.root.mkdir(parents=True, exist_ok=True)
    ds.write_config()
    built = ds.build(opts.src, timeout=max(60.0, opts.deadline - time.monotonic()))
    result.built = {**built["summary"], "seconds": built["seconds"]}
    # What a bulk load leaves behind is not measured: the page cache's dirty pages are
    # written out, and PostgreSQL's tables vacuumed and analyzed, before anything runs.
    began = time.monotonic()
    ds.target.settle()
    os.sync()
    result.built["settle_seconds"] = time.monotonic() - began
    result.index_bytes = ds.target.size_on_disk(ds.data)
    if ds.disk_bytes is not None:
        result.disk_bytes = ds.disk_bytes()
    env = product_env(opts.src)
    cli_steps = [
        ("du --json", ["du", "--json"]),
        ("ls --json", ["ls", "--json"]),
        ("ls", ["ls"]),
        ("gc --dry-run", ["gc", "--dry-run", "--json"]),
        ("verify", ["verify", "--json"]),
    ]
    for label, args in cli_steps:
        if time.monotonic() > opts.deadline:
            result.notes.append(f"out of time before cache {label}")
            break
        measured = cli(ds, env, args, label, opts)
        result.cli[label] = asdict(measured)
    if time.monotonic() < opts.deadline:
        serve_and_hit(ds, env, result, opts)
    total = ds.total_size(opts.src)
    if time.monotonic() < opts.deadline:
        evict(ds, env, result, opts, cap=int(total * 0.9))
    if time.monotonic() < opts.deadline:
        left = ds.total_size(opts.src)
        sigterm_during_pass(ds, env, result, opts, cap=int(left * 0.9))
    if time.monotonic() < opts.deadline:
        beside_serve(ds, env, result, opts)
    return result


def cli(ds: Dataset, env: dict[str, str], args: list[str], label: str, opts: Options) -> Measured:
    argv = [sys.executable, "-m", "registry_cache", "cache", *args, "--config", str(ds.config_path)]
    name = label.replace(" ", "_").replace("-", "")
    return run_measured(
        argv,
        env=env,
        cwd=ds.root,
        stdout=ds.scratch / f"cli-{name}.out",
        timeout=min(opts.cli_timeout, max(1.0, opts.deadline - time.monotonic())),
        label=f"cache {label}",
    )


def probe(
    ds: Dataset, kind: str, *, count: int | None = None, until: Path | None = None,
    rate: float | None = None, max_seconds: float = 120.0, hot: bool = False,
    ready: Path | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    argv = [
        sys.executable, "-m", "benchmarks.bigcache.probe", "--port", str(ds.port),
        "--sample", str(ds.hot_path if hot else ds.sample_path), "--kind", kind,
        "--max-seconds", str(max_seconds),
    ]  # fmt: skip
    if count is not None:
        argv += ["--count", str(count)]
    if until is not None:
        argv += ["--until-file", str(until)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    if ready is not None:
        argv += ["--ready-file", str(ready)]
    env = product_env(REPO_ROOT)  # the probe needs only the benchmarks package
    return subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT)


def probe_result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {}
    except BaseException:  # stopped by a signal: the probe too
        stop_child(proc)
        raise
    parsed: dict[str, Any] = json.loads(out or b"{}")
    return parsed


def serve_and_hit(ds: Dataset, env: dict[str, str], result: Result, opts: Options) -> None:
    """HIT_ROUNDS rounds, each on a new server (cold memos, as after a restart): the
    median round's figures (by p99) per kind, so one scheduling hiccup of a shared
    machine does not make the figure."""
    sample = Sample.from_json(json.loads(ds.sample_path.read_text()))
    sizes = {"tag": len(sample.tags), "head": len(sample.layers), "get": len(sample.configs)}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in sizes}
    cpu = 0.0
    requests = 0
    for number in range(HIT_ROUNDS):
        server = Serve(ds.config_path, ds.port, env=env, log=ds.root / "serve.log")
        try:
            startup = server.start()
            if number == 0:
                result.serve["startup_s"] = startup
                result.serve["rss_after_startup"] = server.rss().get("VmRSS", 0)
            cpu_before = server.cpu()
            for kind, count in sizes.items():
                found = probe_result(probe(ds, kind, count=count), timeout=300).get(kind)
                if found:
                    rounds[kind].append(found)
                    requests += int(found["count"])
            cpu += server.cpu() - cpu_before
            result.serve["rss_after_hits"] = server.rss().get("VmRSS", 0)
            result.serve.setdefault("startup_rounds_s", []).append(startup)
            if number == HIT_ROUNDS - 1:
                result.serve["sigterm_idle_s"] = server.terminate(wait=SHUTDOWN_GRACE + 10)
        finally:
            server.kill()
    for kind, found in rounds.items():
        if found:
            ordered = sorted(found, key=lambda r: r["p99_ms"] or 0.0)
            result.hits[kind] = {
                **ordered[len(ordered) // 2],
                "rounds_p99_ms": [r["p99_ms"] for r in found],
            }
    result.hits["cpu_per_request_ms"] = cpu / max(1, requests) * 1000


def evict(ds: Dataset, env: dict[str, str], result: Result, opts: Options, *, cap: int) -> None:
    log = ds.root / "serve-evict.log"
    server = Serve(ds.config_path, ds.port, env=env, log=log)
    done = ds.root / "pass-done"
    done.unlink(missing_ok=True)
    ev = result.eviction
    ev["cap"] = cap
    runner: subprocess.Popen[bytes] | None = None
    try:
        server.start(extra=["--max-size", str(cap)])
        started = time.monotonic()
        cpu_before = server.cpu()
        runner = probe(
            ds, "mixed", until=done, rate=PROBE_RATE, max_seconds=opts.pass_timeout, hot=True
        )
        line = None
        while time.monotonic() - started < opts.pass_timeout and time.monotonic() < opts.deadline:
            lines = server.log_lines(EVICTED.pattern)
            if lines:
                line = lines[0]
                break
            time.sleep(0.05)
        seen = time.monotonic()
        cpu = server.cpu() - cpu_before
        done.touch()
        found = probe_result(runner, timeout=60)
        ev["rss_peak"] = server.rss().get("VmHWM", 0)
        if line is None:
            ev["finished"] = False
            ev["duration_s"] = seen - started
            result.notes.append(
                f"{ds.label}/{ds.target.kind}: the pass did not finish in {seen - started:.0f} s"
            )
        else:
            match = EVICTED.search(line)
            assert match is not None
            ev["finished"] = True
            ev["objects"], ev["bytes"], ev["wanted"] = (int(match[i]) for i in (1, 2, 3))
            # The server's own figure when it gives one; else from its "listening" line
            # to this one (the pass starts just before the server listens).
            listening = server.log_lines(r"registry_cache\.server: listening on")
            ev["duration_s"] = float(match[4]) if match[4] else _stamp(line) - _stamp(listening[0])
        count = sum(int(v.get("count", 0)) for v in found.values())
        ev["cpu_s"] = cpu - count * result.hits.get("cpu_per_request_ms", 0.0) / 1000
        ev["probe"] = found
        ev["access_time_failures"] = len(server.log_lines(ACCESS_FAILURES.pattern))
        ev["sigterm_after_pass_s"] = server.terminate(wait=SHUTDOWN_GRACE + 10)
    finally:
        if runner is not None:
            stop_child(runner)  # reaped already, unless a signal stopped the run
        server.kill()


def beside_serve(ds: Dataset, env: dict[str, str], result: Result, opts: Options) -> None:
    """Each ``BESIDE`` command while a paced probe hits the server (see step 6)."""
    server = Serve(ds.config_path, ds.port, env=env, log=ds.root / "serve-beside.log")
    done, ready = ds.root / "command-done", ds.root / "probe-ready"
    try:
        server.start()
        for label, args in BESIDE:
            if time.monotonic() > opts.deadline:
                result.notes.append(f"out of time before cache {label} beside serve")
                break
            done.unlink(missing_ok=True)
            ready.unlink(missing_ok=True)
            runner = probe(
                ds, "mixed", until=done, rate=PROBE_RATE, max_seconds=opts.cli_timeout + 60,
                hot=True, ready=ready,
            )  # fmt: skip
            try:
                waited = time.monotonic() + 60
                while not ready.exists() and runner.poll() is None and time.monotonic() < waited:
                    time.sleep(0.01)  # the command starts once hits are flowing
                measured = cli(ds, env, args, f"{label} beside serve", opts)
            finally:
                done.touch()
                found = probe_result(runner, timeout=60)
            result.beside[label] = {"run": asdict(measured), "probe": found}
        server.terminate(wait=SHUTDOWN_GRACE + 10)
    finally:
        server.kill()


def sigterm_during_pass(
    ds: Dataset, env: dict[str, str], result: Result, opts: Options, *, cap: int
) -> None:
    log = ds.root / "serve-sigterm.log"
    server = Serve(ds.config_path, ds.port, env=env, log=log)
    st = result.sigterm
    st["grace_s"] = SHUTDOWN_GRACE
    try:
        server.start(extra=["--max-size", str(cap)])
        time.sleep(1.0)  # well into the pass (for the data sets where a pass lasts that long)
        st["pass_running"] = not server.log_lines(EVICTED.pattern)
        st["exit_s"] = server.terminate(wait=SHUTDOWN_GRACE + 10)
        st["within_grace"] = st["exit_s"] is not None and st["exit_s"] <= SHUTDOWN_GRACE + 0.5
    finally:
        server.kill()
