"""String quoting for hand-written YAML and TOML (JSON uses the json module).

The renderers write their documents by hand so the bytes are stable and readable;
every value that is not a validated host name or number goes through these.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _needs_code(char: str) -> bool:
    code = ord(char)
    # C0/C1 controls, DEL, BOM and line separators are not printable in YAML and
    # not allowed raw in TOML basic strings.
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029\ufeff"


def quote(value: str) -> str:
    """A double-quoted string valid as both a YAML and a TOML basic string."""
    out: list[str] = []
    for char in value:
        if char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("\\ufffd")  # a lone surrogate has no valid escape in TOML
        elif _needs_code(char):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
