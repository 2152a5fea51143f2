"""``registry-cache warm IMAGE... [-f FILE] [--platform P | --all-platforms] [--cache URL]``.

Seeds a cache before a cluster rollout or before going offline. With ``--cache`` the
images are pulled through a running cache (which fills itself); without, the data
directory of the configuration (``--data-dir`` etc., as for ``serve``) is filled in
this process. Progress bars while it runs, a summary table after; exit 1 if any
image failed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, TextIO

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..bench.pullclient import DEFAULT_PLATFORM, parse_platform
from ..bench.refs import ImageRef, RefError, base_url, parse_image
from ..units import format_duration, format_size
from ..warming import WarmResult, read_image_list, warm_directly, warm_through_cache
from .clientconfig import login_from, login_options
from .common import console, json_option
from .main import CliError
from .options import data_dir, settings_from, settings_options


class _Bars:
    """One progress bar per image (bytes of its configs and layers)."""

    def __init__(self, progress: Progress, images: list[ImageRef]) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {
            str(i): progress.add_task(str(i), total=None) for i in images
        }

    def expect(self, image: ImageRef, nbytes: int) -> None:
        self.progress.update(self.tasks[str(image)], total=nbytes)

    def advance(self, image: ImageRef, nbytes: int) -> None:
        self.progress.advance(self.tasks[str(image)], nbytes)

    def finish(self, result: WarmResult) -> None:
        mark = "[green]ok[/]" if result.ok else "[red]failed[/]"
        self.progress.update(self.tasks[str(result.image)], description=f"{result.image} {mark}")


@click.command()
@click.argument("images", nargs=-1)
@click.option(
    "-f",
    "--file",
    "files",
    type=click.File("r"),
    multiple=True,
    help="Read images from FILE, one per line (# comments); - for stdin.",
)
@click.option(
    "--platform",
    metavar="OS/ARCH[/VARIANT]",
    help=f"Platform to warm from a multi-platform image [{DEFAULT_PLATFORM}].",
)
@click.option("--all-platforms", is_flag=True, help="Warm every platform of an index.")
@click.option(
    "--cache",
    "cache_url",
    metavar="URL",
    help="Pull through the running cache at URL; without it, fill the data directory directly.",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trust this CA for an https --cache (a private or self-signed certificate).",
)
@login_options("Log in to --cache as this user (a cache started with --htpasswd).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 32),
    default=3,
    show_default=True,
    help="Images warmed at the same time.",
)
@json_option("Print the summary as JSON.")
@settings_options
def warm(  # noqa: PLR0917 - one parameter per click option
    images: tuple[str, ...],
    files: tuple[TextIO, ...],
    platform: str | None,
    all_platforms: bool,
    cache_url: str | None,
    ca_file: Path | None,
    concurrency: int,
    as_json: bool,
    **params: Any,
) -> None:
    """Pre-pull IMAGEs (e.g. alpine:3.19, ghcr.io/org/app:1.2) into the cache."""
    if platform and all_platforms:
        raise click.UsageError("--platform and --all-platforms exclude each other")
    if platform:
        try:
            parse_platform(platform)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--platform") from None
    names = list(images)
    for handle in files:
        names += read_image_list(handle)
    if not names:
        raise click.UsageError("no images given (arguments or -f FILE)")
    if ca_file is not None and not (cache_url or "").startswith("https://"):
        raise click.UsageError("--ca-file is for an https:// --cache")
    login = login_from(params)
    if login is not None and cache_url is None:
        raise click.UsageError("--login is for a --cache")
    try:
        refs = list(dict.fromkeys(parse_image(n) for n in names))
        url = base_url(cache_url) if cache_url else None
    except RefError as exc:
        raise click.BadParameter(str(exc)) from None
    settings = settings_from(params)
    if url is None:  # filling the data directory in this process
        data_dir(settings, write=True, create=True, need_space=True)
    chosen = None if all_platforms else platform or DEFAULT_PLATFORM
    out = console(stderr=as_json)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, disable=not out.is_terminal) as progress:
        bars = _Bars(progress, refs)
        if url is not None:
            run = warm_through_cache(
                url,
                settings,
                refs,
                platform=chosen,
                reporter=bars,
                concurrency=concurrency,
                ca_file=ca_file,
                login=login,
            )
        else:
            run = warm_directly(
                settings, refs, platform=chosen, reporter=bars, concurrency=concurrency
            )
        results = asyncio.run(run)
        for result in results:
            bars.finish(result)
    _summary(out, results, as_json, where=url or str(settings.data_dir))
    failed = [r for r in results if not r.ok]
    if failed:
        raise CliError(f"{len(failed)} of {len(results)} image(s) failed to warm")


def _summary(out: Console, results: list[WarmResult], as_json: bool, where: str) -> None:
    if as_json:
        doc = {
            "cache": where,
            "images": [
                {
                    "image": str(r.image),
                    "digest": r.digest,
                    "platforms": r.platforms,
                    "blobs": r.blobs,
                    "bytes": r.bytes,
                    "seconds": round(r.seconds, 3),
                    "ok": r.ok,
                    "error": r.error,
                }
                for r in results
            ],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"warmed into {where}", title_justify="left", box=None, pad_edge=False)
    for column in ("IMAGE", "DIGEST", "PLATFORMS", "BLOBS", "SIZE", "TIME", "RESULT"):
        table.add_column(column, justify="right" if column in ("BLOBS", "SIZE", "TIME") else "left")
    for r in results:
        table.add_row(
            str(r.image),
            (r.digest or "-")[:19],
            ", ".join(r.platforms) or "-",
            str(r.blobs),
            format_size(r.bytes),
            format_duration(r.seconds),
            "ok" if r.ok else f"[red]{escape(r.error or 'failed')}[/]",
        )
    out.print(table)
    ok = sum(r.ok for r in results)
    out.print(
        f"{ok} of {len(results)} image(s) warmed, {format_size(sum(r.bytes for r in results))}"
    )
