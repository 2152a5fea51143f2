"""Bytes that fills in flight have announced and not written yet.

A fill writes ``fills/<digest>.size`` as soon as upstream tells the size, and
only then checks for room. Two fills that start together therefore each see the
other's note, and a room check counts what every other live fill still has to
write: without that, two blobs that each fit, but not together, would both
start and one of them would be cut short by a full disk mid-download.

A note whose partial is not locked belongs to a fill that died (``kill -9``):
its partial already occupies the disk and the rest is only needed if a later
fill resumes it, which writes its own note. Such notes count for nothing.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from ..digest import Digest
from .layout import Layout

NOTE = ".size"
PARTIAL = ".partial"


@dataclass(frozen=True, slots=True)
class Incoming:
    announced: int = 0  # sizes in the notes of live fills
    unwritten: int = 0  # of those, bytes not in their partial files yet


def incoming(layout: Layout, *, besides: Digest | None = None) -> Incoming:
    """What the live fills (in any worker) have announced; ``besides`` is left out."""
    skip = layout.size_note(besides).name if besides is not None else None
    try:
        entries = list(os.scandir(layout.fills))
    except FileNotFoundError:
        return Incoming()
    announced = unwritten = 0
    for entry in entries:
        if not entry.name.endswith(NOTE) or entry.name == skip:
            continue
        written = _live_partial_size(entry.path[: -len(NOTE)] + PARTIAL)
        if written is None:
            continue
        try:
            with open(entry.path, encoding="utf-8") as note:
                size = int(note.readline())  # the first line (store/fill.py writes more)
        except (OSError, ValueError):
            continue  # the fill ended (or is just writing its note) meanwhile
        announced += size
        unwritten += max(0, size - written)
    return Incoming(announced, unwritten)


def _live_partial_size(path: str) -> int | None:
    """The partial's size while a fill holds its lock; None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            # flock conflicts between open file descriptions, so this also sees
            # fills running in this very process.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.fstat(fd).st_size
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
