"""``registry-cache serve``."""

from __future__ import annotations

from typing import Any

import click

from ..logs import setup_logging
from ..server import ServeError
from ..server import serve as run_server
from .main import CliError
from .options import settings_from, settings_options


@click.command()
@settings_options
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes sharing the port and data directory [1].",
)
def serve(workers: int | None, **params: Any) -> None:
    """Run the pull-through cache server (read-only registry API on one port)."""
    settings = settings_from(params, workers=workers)
    setup_logging(settings)
    try:
        code = run_server(settings)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    raise SystemExit(code)
