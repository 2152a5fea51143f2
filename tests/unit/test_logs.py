"""logs: escaping, the text and JSON formatters, redaction in both, request ids."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from registry_cache import requestid
from registry_cache.logs import (
    AccessEntry,
    JsonFormatter,
    MalformedRequests,
    RedactSecrets,
    TextFormatter,
    escape,
    line_safe,
)

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] ")
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def entry(**changes: object) -> AccessEntry:
    fields: dict[str, object] = {
        "remote": "127.0.0.1", "method": "GET", "path": "/v2/library/a/manifests/1",
        "status": 200, "upstream": "docker.io", "repo": "library/a", "ref": "1",
        "cache": "HIT", "bytes": 10, "duration_ms": 1.25, "error": None, "user": None,
        "request_id": "r1", "user_agent": None,
    }  # fmt: skip
    fields.update(changes)
    return AccessEntry(**fields)  # type: ignore[arg-type]


def record(msg: str, *args: object, name: str = "t", **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def access_record(item: AccessEntry) -> logging.LogRecord:
    return record("%s", item, name="registry_cache.access", access=item)


def test_escape_keeps_utf8_and_escapes_what_could_end_a_line_or_field() -> None:
    assert escape("café/ünïcode-日本") == "café/ünïcode-日本"
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("a b") == "a\\x20b" and escape("a b", quoted=True) == "a b"
    assert escape('a"b\\c') == 'a\\"b\\\\c'
    assert escape("\x00\x1b\x7f\x85\u2028\U000e0001\udcff") == (
        "\\x00\\x1b\\x7f\\x85\\u2028\\U000e0001\\udcff"
    )
    for char in LINE_BREAKS:
        assert len(escape(f"a{char}b").splitlines()) == 1
        assert len(line_safe(f"a{char}b").splitlines()) == 1
    assert line_safe('keeps "quotes" \\ and spaces') == 'keeps "quotes" \\ and spaces'


def test_text_access_line_cannot_be_forged() -> None:
    forged = entry(
        path='/v2/x/manifests/1" 200 upstream=evil\n2026-01-01 00:00:00,000 INFO [1] x: y',
        ref="1\u2028z y",
        user="mallory cache=MISS",
        user_agent='ua" user=root',
    )
    line = TextFormatter().format(access_record(forged))
    assert len(line.splitlines()) == 1 and RECORD.match(line)
    assert '"GET /v2/x/manifests/1\\" 200 upstream=evil\\n2026' in line
    assert " ref=1\\u2028z\\x20y " in line and " user=mallory\\x20cache=MISS " in line
    assert line.endswith(' request_id=r1 agent="ua\\" user=root"')
    # Exactly one status and one value per key: nothing was injected.
    assert re.findall(r" (\w+)=", line.split('" 200 ', 1)[1])[:6] == [
        "upstream", "repo", "ref", "cache", "bytes", "duration",
    ]  # fmt: skip


def test_text_messages_and_tracebacks_stay_line_safe() -> None:
    formatter = TextFormatter()
    plain = formatter.format(record("bad tag %s", "x\n2026-01-01 00:00:00,000 INFO [1] fake"))
    assert len(plain.splitlines()) == 1
    try:
        raise ValueError("boom\n2026-01-01 00:00:00,000 INFO [1] fake\x85more")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    text = formatter.format(failed)
    lines = text.splitlines()
    assert RECORD.match(lines[0]) and lines[1] == "  Traceback (most recent call last):"
    assert all(line.startswith("  ") for line in lines[1:])  # no line but the first is a record
    assert lines[-1] == "  2026-01-01 00:00:00,000 INFO [1] fake\\x85more"


def test_json_lines_hold_the_access_fields() -> None:
    formatter = JsonFormatter()
    item = entry(error="MANIFEST_UNKNOWN", user="alice", ref="1\u2028\x85é", user_agent="ua")
    line = formatter.format(access_record(item))
    assert len(line.splitlines()) == 1 and "\u2028" not in line and "\x85" not in line
    parsed = json.loads(line)
    assert parsed["time"].endswith("Z") and parsed["level"] == "INFO"
    assert parsed["logger"] == "registry_cache.access" and isinstance(parsed["pid"], int)
    assert parsed["ref"] == "1\u2028\x85é" and "é" in line  # readable, yet one line
    assert {k: parsed[k] for k in ("status", "bytes", "duration_ms", "cache", "user")} == {
        "status": 200, "bytes": 10, "duration_ms": 1.2, "cache": "HIT", "user": "alice",
    }  # fmt: skip
    assert parsed["request_id"] == "r1" and "message" not in parsed


def test_json_other_lines_carry_message_exception_and_the_current_request_id() -> None:
    formatter = JsonFormatter()
    token = requestid.CURRENT.set("req-7")
    try:
        try:
            raise RuntimeError("x")
        except RuntimeError:
            failed = record("oops %d", 3)
            failed.exc_info = sys.exc_info()
        parsed = json.loads(formatter.format(failed))
    finally:
        requestid.CURRENT.reset(token)
    assert parsed["message"] == "oops 3" and parsed["request_id"] == "req-7"
    assert "RuntimeError: x" in parsed["exception"]
    assert "request_id" not in json.loads(formatter.format(record("idle")))


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_secrets_are_redacted_in_both_formats(formatter: logging.Formatter) -> None:
    redact = RedactSecrets(["hunter2-pw"])
    item = entry(path="/v2/x?token=hunter2-pw", user_agent="ua hunter2-pw")
    records = [access_record(item), record("login with %s", "hunter2-pw")]
    try:
        raise ValueError("hunter2-pw leaked")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
        records.append(failed)
    for made in records:
        assert redact.filter(made)
        out = formatter.format(made)
        assert "hunter2-pw" not in out and "***" in out


def test_malformed_requests_become_one_info_line() -> None:
    error = BadHttpMessage("Invalid header value char:\n\n  b'X: \\x01'\n      ^")
    made = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
        ("10.0.0.1",), (type(error), error, None),
    )  # fmt: skip
    assert MalformedRequests().filter(made)
    line = TextFormatter().format(made)
    assert len(line.splitlines()) == 1 and " INFO " in line
    assert line.endswith(
        "rejected a malformed request from 10.0.0.1 (400): Invalid header value char:"
    )


def test_request_ids_are_accepted_only_when_sane() -> None:
    assert requestid.accept("abc-123_x.y:z+/=") == "abc-123_x.y:z+/="
    for bad in (None, "", "a b", "a\nb", 'a"b', "x" * 129, "é"):
        assert requestid.accept(bad) is None
    made = requestid.new()
    assert re.fullmatch(r"[0-9a-f]{32}", made) and made != requestid.new()
