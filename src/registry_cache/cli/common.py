"""Options and output shared by the client-side commands (benchmark, compare-paths, warm, cache).

``--cache-host``, ``--repo`` and ``--tag`` keep the environment overrides of the seed
scripts these commands replace (CACHE_HOST, REPO, TAG). Not imported by ``serve``,
so the server does not load rich.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def cache_host_option(help: str) -> Callable[[F], F]:
    """``--cache-host HOST:PORT`` [localhost:5000] (env: CACHE_HOST)."""
    return click.option(
        "--cache-host",
        default="localhost:5000",
        show_default=True,
        envvar="CACHE_HOST",
        metavar="HOST:PORT",
        help=help,
    )


def image_options(repo_help: str) -> Callable[[F], F]:
    """``--repo`` [alpine] (env: REPO) and ``--tag`` [latest] (env: TAG)."""

    def decorate(func: F) -> F:
        func = click.option("--tag", default=None, envvar="TAG", help="Tag [latest] (env: TAG).")(
            func
        )
        return click.option(
            "--repo", default="alpine", show_default=True, envvar="REPO", help=repo_help
        )(func)

    return decorate


def cache_path_style_option(help: str) -> Callable[[F], F]:
    """``--cache-path-style auto|prefix|plain`` [auto]."""
    return click.option(
        "--cache-path-style",
        type=click.Choice(["auto", "prefix", "plain"]),
        default="auto",
        show_default=True,
        help=help,
    )


def json_option(help: str = "Print only JSON (for scripts).") -> Callable[[F], F]:
    """``--json``, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


# Piped or redirected output has no width to fit: tables keep whole names (rich would
# cut cells at 80 columns with "…"), plain columns without colour.
PIPE_WIDTH = 100_000


def console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """The commands' rich console: no soft wrapping, no highlighting; stdout unless
    ``stderr`` (with ``--json`` the document owns stdout). Not a terminal: no width
    limit and no styles, so a table is plain columns with nothing truncated."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        soft_wrap=True,
        highlight=False,
        stderr=stderr,
        quiet=quiet,
        width=None if terminal else PIPE_WIDTH,
        no_color=None if terminal else True,
    )
