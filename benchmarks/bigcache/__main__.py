"""``python -m benchmarks.bigcache --sizes 10k,200k,1M --index sqlite,postgresql --out DIR``

Builds each data set (see ``dataset.py``) and measures it (see ``run.py``); writes
``DIR/results.md`` and ``DIR/results.json`` after every data set, so a run cut
short keeps what it measured. Everything runs on 127.0.0.1 and is stopped by PID;
each data set lives on its own ext4 image (``volume.py``), removed once measured
(``--keep`` keeps the logs and configurations, never the images). ``--src
LABEL=DIR`` (repeatable) measures those ``src`` trees, each data set built and
measured once per tree, back to back (before/after side by side in one run).
``--max-minutes`` bounds the whole run: what is left is skipped and noted.
SIGTERM (or SIGINT) stops the run as a Ctrl-C does: every server it started (the
PostgreSQL, a ``serve``, a command, a probe) is stopped by PID, the images are
unmounted and what was measured so far is written (``stopping_on_signals``; the
run re-executed in a private mount namespace gets the signal passed on).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from . import report, volume
from .run import REPO_ROOT, Dataset, IndexTarget, Options, Result, measure, parse_size


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bigcache")
    parser.add_argument("--sizes", default="10k,200k,1M", help="comma-separated: 10k,200k,1M, 2k…")
    parser.add_argument("--index", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bigcache"))
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="registry_cache sources to measure (repeatable) [current=this checkout's src]",
    )
    parser.add_argument("--work", type=Path, help="scratch directory [a new one under /var/tmp]")
    parser.add_argument("--volume", choices=["auto", "loop", "plain"], default="auto")
    parser.add_argument("--max-minutes", type=float, default=120.0)
    parser.add_argument(
        "--cli-timeout", type=float, default=300.0, help="seconds per cache command"
    )
    parser.add_argument(
        "--pass-timeout", type=float, default=300.0, help="seconds for an eviction pass"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and configurations")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.index = [s.strip() for s in args.index.split(",") if s.strip()]
    for name in args.index:
        if name not in ("sqlite", "postgresql"):
            parser.error(f"--index: unknown index {name!r} (sqlite or postgresql)")
    for size in args.sizes:
        try:
            parse_size(size)
        except ValueError:
            parser.error(f"--sizes: not a size: {size!r}")
    sources: list[tuple[str, Path]] = []
    for item in args.src or [f"current={REPO_ROOT / 'src'}"]:
        label, sep, path = item.partition("=")
        if not sep or not label or not (Path(path) / "registry_cache").is_dir():
            parser.error(f"--src: want LABEL=DIR with DIR/registry_cache: {item!r}")
        sources.append((label, Path(path).resolve()))
    args.src = sources
    return args


def header(args: argparse.Namespace, argv: list[str]) -> list[str]:
    def revision(src: Path) -> str:
        done = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() or "not a git checkout"

    sources = "; ".join(f"{label}: {path} ({revision(path)})" for label, path in args.src)
    return [
        f"`python -m benchmarks.bigcache {' '.join(argv)}`",
        "",
        f"Sources measured: {sources}. {platform.machine()}, nproc {os.cpu_count()},"
        f" Python {platform.python_version()}, Linux {platform.release()}; load average at"
        f" start {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')} UTC.",
    ]


STOPPING = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt here, so every ``finally`` runs: the
    servers started are stopped by PID (a plain SIGTERM ended the interpreter without
    them, and left the PostgreSQL running). A second signal meanwhile is ignored."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        for s in STOPPING:
            signal.signal(s, signal.SIG_IGN)  # the unwinding is not cut short again
        print(f"{signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in STOPPING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str]) -> int:
    args = arguments(argv)
    use_loop = args.volume == "loop" or (args.volume == "auto" and volume.can_mount())
    if use_loop and not volume.in_namespace():
        return volume.reexec(argv)
    try:
        with stopping_on_signals():
            return measure_all(args, argv, use_loop)
    except KeyboardInterrupt:
        print("stopped by a signal; every server it started was stopped", file=sys.stderr)
        return 130


def measure_all(args: argparse.Namespace, argv: list[str], use_loop: bool) -> int:
    work = args.work or Path(tempfile.mkdtemp(prefix="bigcache-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.max_minutes * 60
    where = "private ext4 images (inline_data)" if use_loop else "the plain disk"
    top = [*header(args, argv), f"Data sets on {where}."]
    results: list[dict[str, Any]] = []
    pg = None
    try:
        if "postgresql" in args.index:
            from .postgres import Postgres, postgres_missing

            why = postgres_missing()
            if why is not None:
                print(f"{why} (scripts/install-test-deps.sh)", file=sys.stderr)
                return 2
            pg = Postgres()  # before start: a signal during it still gets it closed
            pg.start()
        for size in args.sizes:
            for kind in args.index:
                for label, src in args.src:
                    name = f"{size} {kind} {label}"
                    if time.monotonic() > deadline:
                        note = f"{name}: skipped, out of time"
                        results.append({"size": size, "index": kind, "src": label, "notes": [note]})
                        continue
                    opts = Options(
                        work=work,
                        src=src,
                        src_label=label,
                        cli_timeout=args.cli_timeout,
                        pass_timeout=args.pass_timeout,
                        deadline=deadline,
                    )
                    results.append(one(kind, size, pg, work, opts).to_json())
                    report.write(args.out, results, top)
                    print(f"measured {name}", file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.close()
        report.write(args.out, results, top)
        if not args.keep:
            made = [work] if args.work is None else list(work.glob("*-*-*"))  # ours only
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
    print(f"results in {args.out}/results.md", file=sys.stderr)
    return 0


def one(kind: str, size: str, pg: Any, work: Path, opts: Options) -> Result:
    objects = parse_size(size)
    label = f"{kind}-{size}-{opts.src_label}"
    root = work / label
    root.mkdir(parents=True, exist_ok=True)
    target: IndexTarget
    if kind == "postgresql":
        from .postgres import PostgresTarget

        target = PostgresTarget(pg, f"bigcache_{size.lower()}_{opts.src_label.lower()}")
    else:
        target = IndexTarget()
    disk: volume.Volume | None = None
    scratch = root / "scratch"
    if volume.in_namespace():
        disk = volume.Volume(work / f"{label}.img", scratch, inodes=int(objects * 1.2) + 50_000)
        disk.mount()
    try:
        ds = Dataset(size, objects, target, root, scratch)
        if disk is not None:
            ds.disk_bytes = disk.disk_bytes
        return measure(ds, opts)
    finally:
        if disk is not None:
            disk.close()
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        if kind == "postgresql":
            target.drop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
