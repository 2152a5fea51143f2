"""``cache ls`` prints as it goes: the same JSON document ``json.dumps`` would make,
and one aligned table per upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from registry_cache.cli.cache import (
    _bucket_json,
    _key,
    _ls_json,
    _ls_tables,
    image_json,
    ls_table,
)
from registry_cache.store.inventory import Image


def _image(repo: str, tag: str | None, size: int, upstream: str = "reg.test") -> Image:
    return Image(upstream, repo, tag, "sha256:" + "ab" * 32, None, size, 3, 0, 0, 0, 1e9)


async def _each(items: Sequence[Image]) -> AsyncIterator[Image]:
    for item in items:
        yield item


@pytest.mark.parametrize("count", [0, 1, 3])
def test_streamed_json_is_what_json_dumps_writes(
    count: int, capsys: pytest.CaptureFixture[str]
) -> None:
    found = [_image(f"r{i}", "1" if i % 2 else None, i * 1000) for i in range(count)]
    asyncio.run(_ls_json('/data "x"', _each(found)))
    doc = {"data_dir": '/data "x"', "images": [image_json(i) for i in found]}
    assert capsys.readouterr().out == json.dumps(doc, indent=2) + "\n"


def test_streamed_json_with_the_buckets_side_and_any_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Written without the encoder: what it would write of odd text, a media type, an
    index's platforms, whole and fractional times, and the bucket's side."""
    media = "application/vnd.oci.image.index.v1+json"
    found = [
        Image("reg.test", 'r/"q"\\é\n', "t\u2603", "sha256:" + "cd" * 32, media, 5, 2, 1, 2, 1, 7),
        Image("reg.test", "r", None, "sha256:" + "ef" * 32, None, 0, 0, 0, 0, 0, 1e9 + 0.125),
    ]
    held = {_key(found[0]): found[0]}
    asyncio.run(_ls_json("/data", _each(found), held))
    entries = [image_json(i) for i in found]
    entries[0]["bucket"] = _bucket_json(found[0])
    entries[1]["bucket"] = _bucket_json(None)
    doc = {"data_dir": "/data", "images": entries}
    assert capsys.readouterr().out == json.dumps(doc, indent=2) + "\n"


def test_a_long_table_is_written_whole_and_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    found = [_image(f"r{i:05d}", "1", i) for i in range(5000)]  # more than one write
    asyncio.run(_ls_tables("/data", _each(found)))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "reg.test" and lines[-1] == "" and len(lines) == 1 + 1 + 5000 + 1
    rows = lines[2:-1]
    assert [r.split()[0] for r in rows] == [f"r{i:05d}:1" for i in range(5000)]
    assert len({r.index("sha256:") for r in rows}) == 1


def test_table_columns_line_up_and_sizes_align_right() -> None:
    rows = [
        ("a:1", "sha256:aaa", "1.0 kB", "complete", "1m ago"),
        ("longer/name:2", "sha256:bbb", "10.5 MB", "x", "2d ago"),
    ]
    lines = ls_table("reg.test", rows)
    assert lines[0] == "reg.test" and lines[-1] == ""
    header, first, second = lines[1:4]
    assert header.split() == ["IMAGE", "DIGEST", "SIZE", "CACHED", "LAST", "PULL"]
    assert first.index("sha256:aaa") == second.index("sha256:bbb") == header.index("DIGEST")
    assert first.index("1.0 kB") + len("1.0 kB") == second.index("10.5 MB") + len("10.5 MB")


def test_tables_per_upstream_and_an_empty_cache(capsys: pytest.CaptureFixture[str]) -> None:
    found = [_image("a", "1", 10), _image("b", "2", 20), _image("c", "3", 30, "other.test")]
    asyncio.run(_ls_tables("/data", _each(found)))
    out = capsys.readouterr().out
    assert out.index("reg.test\n") < out.index("a:1") < out.index("b:2") < out.index("other.test")
    assert "c:3" in out.split("other.test", 1)[1]
    asyncio.run(_ls_tables("/data", _each([])))
    assert capsys.readouterr().out == "no images cached in /data\n"
