from __future__ import annotations

import pytest

from registry_cache.errors import RangeInvalid
from registry_cache.web.responses import ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-", ByteRange(100, 1000)),
        ("bytes=-100", ByteRange(900, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        ("bytes=990-5000", ByteRange(990, 1000)),
        ("bytes=0-0", ByteRange(0, 1)),
        ("bytes=5-2", None),  # syntactically invalid: ignored, 200
        ("bytes=0-1,5-6", None),  # multiple ranges: ignored, 200
        ("items=0-5", None),
        ("bytes=abc", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeInvalid) as info:
        parse_range(header, 1000)
    assert info.value.headers() == {"Content-Range": "bytes */1000"}
    assert info.value.status == 416
