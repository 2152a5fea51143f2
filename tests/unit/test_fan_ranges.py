"""``fan_ranges``: the digest key space cut at fan-out directories, one query each."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_cache.store.layout import Layout
from registry_cache.store.maintenance import FanRange, fan_names, fan_ranges


def _holder(ranges: list[FanRange], digest: str) -> list[FanRange]:
    return [r for r in ranges if r.lo <= digest and (r.hi is None or digest < r.hi)]


@pytest.mark.parametrize("rows", [0, 100, 10_000_000])
def test_every_digest_in_exactly_one_range_with_its_directory(tmp_path: Path, rows: int) -> None:
    layout = Layout(tmp_path)
    for fan in ("00", "3f", "a0", "ff"):
        (layout.blobs / "sha256" / fan).mkdir(parents=True)
    (layout.blobs / "sha512" / "00").mkdir(parents=True)
    ranges = fan_ranges(layout, rows=rows, per_range=50)
    assert sorted(p.name for r in ranges for p in r.paths) == ["00", "00", "3f", "a0", "ff"]
    probes = ["", "md5:x", f"sha256:{'0' * 64}", f"sha256:{'1' * 64}", f"sha256:{'a' * 64}"]
    probes += [f"sha256:{'f' * 64}", f"sha512:{'0' * 128}", "zzz"]
    for digest in probes:
        assert len(_holder(ranges, digest)) == 1, digest
    for r in ranges:
        for path in r.paths:
            name = f"{path.parent.name}:{path.name}{'0' * 62}"
            assert _holder(ranges, name) == [r]
    if rows == 0:
        assert all(len(r.paths) <= 1 for r in ranges)  # one directory per range
    if rows == 100:  # 20 rows per directory, 50 per range wanted: two directories a range
        assert [len(r.paths) for r in ranges] == [0, 2, 2, 1]


def test_a_file_in_the_wrong_directory_is_not_listed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fan = layout.blobs / "sha256" / "ab"
    fan.mkdir(parents=True)
    (fan / ("ab" + "0" * 62)).write_bytes(b"")
    (fan / ("cd" + "0" * 62)).write_bytes(b"")  # belongs in cd/
    (fan / "not-a-digest").write_bytes(b"")
    (part,) = [r for r in fan_ranges(layout) if r.paths]
    assert fan_names(part) == [f"sha256:ab{'0' * 62}"]
