"""Room for concurrent fills: what live fills announced and have not written yet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registry_cache.digest import Digest
from registry_cache.errors import InsufficientStorage
from registry_cache.store import evict, fill
from registry_cache.store.inflight import Incoming, incoming
from registry_cache.store.layout import Layout
from tests.harness.fills import live_fill

A, B, C = (Digest.of(name) for name in (b"a", b"b", b"c"))


def test_counts_live_fills_minus_what_they_wrote(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert incoming(layout) == Incoming(0, 0)  # no fills/ directory yet
    with live_fill(layout, A, 1000, written=b"x" * 300), live_fill(layout, B, 50):
        assert incoming(layout) == Incoming(1050, 750)
        assert incoming(layout, besides=A) == Incoming(50, 50)


def test_dead_fills_and_half_written_notes_count_for_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with live_fill(layout, A, 1000):
        pass  # the lock is gone: the fill died and left its note and partial
    with live_fill(layout, B, 400):
        layout.size_note(C).write_text("12")  # a note without a partial
        (layout.fills / f"{B.algorithm}-{B.hex}.size.123.tmp").write_text("999")
        assert incoming(layout) == Incoming(400, 400)


def test_room_check_counts_the_other_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    layout.create()
    st = os.statvfs(layout.fills)
    free = st.f_bavail * st.f_frsize
    fill._check_room(layout, free // 2, A)  # fits alone
    # Another download has been promised most of the free space: now it does not.
    with live_fill(layout, B, free - free // 4), pytest.raises(InsufficientStorage) as caught:
        fill._check_room(layout, free // 2, A)
    assert "promised to other downloads" in str(caught.value)
    with live_fill(layout, A, free // 2):  # our own note is not counted twice
        fill._check_room(layout, free // 2, A)


def test_disk_shortfall_counts_the_other_fills(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    st = os.statvfs(layout.root)
    free = st.f_bavail * st.f_frsize
    assert evict.disk_shortfall(layout, free // 2, headroom=0, besides=A) == 0
    with live_fill(layout, B, free - free // 4):
        short = evict.disk_shortfall(layout, free // 2, headroom=0, besides=A)
        assert short > 0
        assert evict.disk_shortfall(layout, free // 2, headroom=0, besides=B) == 0
