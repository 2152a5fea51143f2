"""Maintenance commands yield the CPU to the server they run beside.

``cache verify`` hashes every object on every core, ``gc`` and ``prune`` walk the
index and the tree: background work beside a cache whose requests want the same cores.
At a lower priority they get what the server leaves, and still the whole machine when
it is idle. (On an idle 2-core machine the big-cache suite's "hits beside …" rows moved
within their noise either way; what the server's hits suffer is other load on the cores.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

LOW = 10  # nice(1)'s default: a busy server gets ~9 parts of 10 of a contended core
F = TypeVar("F", bound=Callable[..., Any])


def lower(niceness: int = LOW) -> None:
    """Run this process at ``niceness`` at least (never raised back: that needs root).

    Linux applies it to the calling thread and the threads it starts later: call it
    before any worker thread exists (the commands' first step)."""
    if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)


def priority_option(command: F) -> F:
    """``--priority low|normal`` (low by default), applied before the command runs."""

    def apply(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        if value == "low":
            lower()
        return value

    return click.option(
        "--priority",
        type=click.Choice(["low", "normal"]),
        default="low",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=apply,
        help=f"low: run at nice {LOW}, so that a cache serving beside it keeps the CPU "
        "its requests ask for; normal: as started.",
    )(command)
