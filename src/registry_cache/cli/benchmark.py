"""``registry-cache benchmark``: pulls from upstream vs through the cache.

Replaces the seed's ``benchmark-cache.sh`` (which ``./benchmark-cache.sh`` still
runs); keeps its environment overrides CACHE_HOST, REPO, TAG, PULLS, PRUNE_BETWEEN.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click
from pydantic import SecretStr
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..bench.clients import EXTERNAL_CLIENTS
from ..bench.pullclient import DEFAULT_CONCURRENCY, DEFAULT_PLATFORM, parse_platform
from ..bench.refs import (
    ImageRef,
    RefError,
    base_url,
    default_upstream_url,
    parse_image,
    resolve_style,
)
from ..bench.registry import Credentials, PullError
from ..bench.report import BenchReport, header_lines, run_line, summary_lines
from ..bench.runner import BenchConfig, Benchmark, RunResult, Scenario
from ..config import SEED_CREDENTIALS
from .common import cache_host_option, cache_path_style_option, console, image_options, json_option
from .main import CliError


@click.command("benchmark")
@click.option(
    "--pulls",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    envvar="PULLS",
    help="Runs per scenario (env: PULLS).",
)
@click.option(
    "--prune-between",
    is_flag=True,
    envvar="PRUNE_BETWEEN",
    help="Remove the image before each pull (docker/skopeo/ctr; env: PRUNE_BETWEEN).",
)
@cache_host_option("The cache (or http(s)://HOST:PORT; env: CACHE_HOST).")
@image_options("Image repository, docker-style: alpine, ghcr.io/org/img (env: REPO).")
@click.option(
    "--upstream",
    "upstream_url",
    metavar="URL",
    help="Upstream registry URL [the real registry of --repo].",
)
@click.option(
    "--client",
    "client_name",
    type=click.Choice(["builtin", *EXTERNAL_CLIENTS]),
    default="builtin",
    show_default=True,
    help="What pulls the image.",
)
@click.option(
    "--platform",
    default=DEFAULT_PLATFORM,
    show_default=True,
    help="os/arch[/variant] to pull from a multi-platform index.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write pulled images here as an OCI layout (builtin) or dir: (skopeo).",
)
@cache_path_style_option(
    "auto: plain paths on a virtual host --cache-host <upstream>.<domain>, else prefix; "
    "prefix: /v2/<upstream>/<repo>/... (registry-cache); plain: /v2/<repo>/... "
    "(a single-upstream mirror such as distribution's proxy)."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Blobs fetched at once by the builtin client.",
)
@click.option(
    "--username",
    envvar="REGISTRY_USERNAME",
    help="Upstream user (env: REGISTRY_USERNAME, or the seed's DOCKERHUB_/GHCR_/QUAY_USERNAME).",
)
@click.option(
    "--password",
    envvar="REGISTRY_PASSWORD",
    help="Upstream password or token (env: REGISTRY_PASSWORD).",
)
@json_option()
def benchmark(  # noqa: PLR0917 - one parameter per click option
    pulls: int,
    prune_between: bool,
    cache_host: str,
    repo: str,
    tag: str | None,
    upstream_url: str | None,
    client_name: str,
    platform: str,
    output: Path | None,
    cache_path_style: str,
    concurrency: int,
    username: str | None,
    password: str | None,
    as_json: bool,
) -> None:
    """Benchmark pulls of one image: upstream vs the cache, by tag, by digest, and the
    download speed of its largest layer; ends with a [summary] of every scenario.

    The summary gives avg, median, p95, min and max per scenario (p95 is the
    nearest-rank percentile: the ceil(0.95*n)-th smallest run) and the speed-up of
    the cache over upstream.
    """
    try:
        image = parse_image(repo, tag)
        if image.digest:
            raise RefError("give --repo a name (and --tag): the benchmark resolves the digest")
        parse_platform(platform)
        cache_url = base_url(cache_host)
        config = BenchConfig(
            image=image,
            upstream_url=base_url(upstream_url or default_upstream_url(image.registry), "https"),
            cache_url=cache_url,
            cache_style=resolve_style(cache_path_style, cache_url, image),
            pulls=pulls,
            prune_between=prune_between,
            client=client_name,
            platform=platform,
            output=output,
            credentials=_credentials(image, username, password),
            concurrency=concurrency,
        )
    except (RefError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        report = asyncio.run(_run(config, as_json))
    except PullError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        out = console()
        for index, line in enumerate(summary_lines(report)):
            out.print(line, markup=False, style="bold" if index == 0 else None)


async def _run(config: BenchConfig, as_json: bool) -> BenchReport:
    bench = Benchmark(config)
    out = console(stderr=as_json)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task("checking the cache and resolving the image", total=None)
        target = await bench.prepare()
        if not as_json:
            for line in header_lines(config, target):
                progress.console.print(line, markup=False)
        planned = bench.planned()
        progress.update(task, total=len(planned) * config.pulls)

        def on_start(scenario: Scenario, index: int) -> None:
            progress.update(task, description=f"{scenario.title} ({index}/{config.pulls})")

        def on_result(scenario: Scenario, result: RunResult) -> None:
            progress.advance(task)
            if not as_json:
                progress.console.print(run_line(scenario, result, config.pulls), markup=False)

        runs = await bench.run(on_result, on_start)
    return BenchReport(config, target, runs)


def _credentials(image: ImageRef, username: str | None, password: str | None) -> Credentials | None:
    if not (username and password):
        prefix = {v: k for k, v in SEED_CREDENTIALS.items()}.get(image.registry)
        if prefix:
            username = username or os.environ.get(f"{prefix}_USERNAME")
            password = password or os.environ.get(f"{prefix}_PASSWORD")
    if username and password:
        return Credentials(username, SecretStr(password))
    return None
