"""``python -m benchmarks``: the side-by-side performance suite's command line.

The suite lives outside the product package (``registry_cache`` never imports it);
it drives the product as a black box, next to nginx, docker-registry, wrk and the
real clients. This module is the one place where its exceptions become exit codes:
0 ok, 1 a scenario could not be measured or the run failed, 2 bad usage.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

from . import SCENARIOS, SuiteError, SuiteOptions, run_suite

PROG = "python -m benchmarks"
ARGV0 = ["python", "-m", "benchmarks"]


class CliError(Exception):
    """The run failed; printed as one line, exit 1."""


class SuiteTimeout(Exception):
    pass


@click.command("benchmarks", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--reps",
    type=click.IntRange(1, 50),
    default=None,
    help="Repetitions of every measurement [5; 1 with --quick].",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Small blobs (64/16 MiB), short load runs: a smoke test, not a measurement.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Directory for results.md and results.json.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(list(SCENARIOS)),
    help="Run only this scenario (repeatable) [all].",
)
@click.option(
    "--wan-reps",
    type=click.IntRange(1, 20),
    default=None,
    help="Repetitions of each WAN scenario (a minute or two each) [2; 1 with --quick].",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directories (data, logs).")
@click.option(
    "--load-seconds",
    type=click.FloatRange(1, 120),
    default=None,
    help="Length of each manifest load run [5; 2 with --quick].",
)
@click.option(
    "--load-tool",
    type=click.Choice(["auto", "wrk", "builtin"]),
    default="auto",
    show_default=True,
    help="Manifest load generator (auto: wrk when installed).",
)
@click.option(
    "--pull-client",
    type=click.Choice(["auto", "skopeo", "ctr", "builtin"]),
    default="auto",
    show_default=True,
    help="Clients of the whole-image pull (auto: skopeo dir: and oci:, ctr content fetch "
    "and ctr pull, each where installed; builtin: the project's own pull client).",
)
@click.option(
    "--drop-caches",
    is_flag=True,
    help="Drop the page cache before each cold GET (root; upstream then reads its disk).",
)
@click.option(
    "--max-noise",
    type=click.FloatRange(0, 64),
    default=0.25,
    show_default=True,
    metavar="CORES",
    help="Redo a repetition during which other processes kept more cores busy than this.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 10),
    default=2,
    show_default=True,
    help="How often a noisy repetition is redone before it is kept (and flagged).",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(1, 600),
    default=60.0,
    show_default=True,
    help="Stop everything and fail after this long.",
)
@click.option("--tmpdir", type=click.Path(file_okay=False, path_type=Path), help="Where to work.")
def bench_suite(  # noqa: PLR0917 - one parameter per click option
    reps: int | None,
    quick: bool,
    out: Path,
    scenarios: tuple[str, ...],
    wan_reps: int | None,
    keep: bool,
    load_seconds: float | None,
    load_tool: str,
    pull_client: str,
    drop_caches: bool,
    max_noise: float,
    retries: int,
    max_minutes: float,
    tmpdir: Path | None,
) -> None:
    """Measure registry-cache against distribution's proxy, the upstream and nginx.

    Starts everything on 127.0.0.1 (docker-registry as the upstream, distribution
    in proxy mode, registry-cache, nginx with sendfile), pushes the test content,
    runs the scenarios, stops everything, and writes OUT/results.md and
    OUT/results.json: every figure as median [min-max], every target pass/fail.
    Exit status 1 when a scenario could not be measured (failed targets are
    reported, not an error).
    """
    options = SuiteOptions(
        reps=reps or (1 if quick else 5),
        quick=quick,
        scenarios=scenarios or tuple(SCENARIOS),
        out=out,
        keep=keep,
        wan_reps=wan_reps or (1 if quick else 2),
        load_seconds=load_seconds or (2.0 if quick else 5.0),
        load_tool=load_tool,
        pull_client=pull_client,
        drop_caches=drop_caches,
        max_noise=max_noise,
        retries=retries,
        command=shlex.join([*ARGV0, *sys.argv[1:]]),
        tmpdir=tmpdir,
    )
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {message}", err=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise SuiteTimeout
        raise KeyboardInterrupt  # SIGTERM: unwind, stopping every server

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGALRM)}
    signal.alarm(int(max_minutes * 60))
    try:
        run = run_suite(options, progress)
    except SuiteError as exc:
        raise CliError(str(exc)) from None
    except SuiteTimeout:
        raise CliError(f"the suite took longer than {max_minutes:g} minutes; stopped") from None
    finally:
        signal.alarm(0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(run.markdown())
    click.echo(f"results: {out / 'results.md'}, {out / 'results.json'}", err=True)
    if run.failed_targets:
        click.echo(f"targets not met: {'; '.join(run.failed_targets)}", err=True)
    if run.failed_scenarios:
        raise CliError(f"not measured: {', '.join(run.failed_scenarios)} (see {out}/results.md)")


def main(argv: list[str] | None = None) -> None:
    try:
        bench_suite.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{PROG}: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CliError as exc:
        click.echo(f"{PROG}: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
