"""``cache verify/gc/prune`` run at a low priority unless told otherwise (cli.priority):
beside a serving cache they get the CPU its requests leave."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry_cache.cli.priority import LOW
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.layout import Layout

# Runs the real command on an empty data directory in a child, then prints the
# niceness of the process and of a thread started after the command ran.
CHILD = """
import os, sys, threading
from registry_cache.cli.main import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code or 0
seen = []
thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
thread.start()
thread.join()
print(code, os.getpriority(os.PRIO_PROCESS, 0), seen[0])
"""


async def _create_index(layout: Layout) -> None:
    index = await SqliteIndex.open(layout.index)
    await index.close()


def _run(tmp_path: Path, *args: str) -> tuple[int, int, int]:
    layout = Layout(tmp_path / "data")
    if not layout.index.exists():
        layout.create()
        asyncio.run(_create_index(layout))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.stdout.split(), done.stderr
    code, process, thread = (int(word) for word in done.stdout.split()[-3:])
    return code, process, thread


@pytest.mark.parametrize(
    "command",
    [["verify", "--json"], ["gc", "--dry-run", "--json"], ["prune", "--older-than", "30d"]],
)
def test_maintenance_commands_run_at_low_priority(tmp_path: Path, command: list[str]) -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)
    code, process, thread = _run(tmp_path, "cache", *command)
    assert code == 0
    assert process == thread == max(start, LOW)


def test_priority_normal_leaves_it_as_started(tmp_path: Path) -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)
    assert _run(tmp_path, "cache", "verify", "--json", "--priority", "normal") == (0, start, start)


def test_read_only_listings_keep_their_priority(tmp_path: Path) -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)
    assert _run(tmp_path, "cache", "du", "--json") == (0, start, start)
