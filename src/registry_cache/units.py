"""Human-friendly durations (``90s``, ``5m``, ``30d``) and sizes (``50GiB``, ``500MB``)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: a number (seconds) or a sequence like ``1h30m``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative duration: {text}")
        return float(text)
    value = str(text).strip().lower()
    if not value:
        raise ValueError("empty duration")
    total = 0.0
    pos = 0
    while pos < len(value):
        match = _DURATION.match(value, pos)
        if not match or match.end() == pos:
            raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 5m, 1h30m, 30d)")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        pos = match.end()
    return total


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: ``1024``, ``500MB`` (decimal), ``50GiB`` (binary)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"invalid size {text!r} (use e.g. 500MB, 50GiB)")
    unit = (match.group(2) or "").lower()
    binary = "i" in unit
    prefix = unit.rstrip("b").rstrip("i")
    if prefix not in _SIZE_POWERS:
        raise ValueError(f"invalid size unit in {text!r}")
    base = 1024 if binary else 1000
    return int(float(match.group(1)) * base ** _SIZE_POWERS[prefix])


def format_size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num) < 1024 or unit == "TiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} TiB"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
