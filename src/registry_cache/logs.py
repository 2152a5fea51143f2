"""Logging set-up: one line per event on stderr, text or JSON, secrets redacted.

No log line can be forged by a client. Request-controlled values (path, query,
reference, repository, user, user agent) are escaped field by field in the access
line (``escape``): backslash escapes for control and other non-printable
characters, for quotes and backslashes, and for spaces outside quotes, while
printable UTF-8 stays as it is. Every other message is made line-safe as a
backstop, and traceback lines are indented, so a line that starts with a
timestamp is always a real record. In JSON (``--log-format json``) each record is
one object per line; the access line's fields are its keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import requestid
from .config import Settings

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
ACCESS_LOGGER = "registry_cache.access"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"', " ": "\\x20"}
# Characters JSON leaves raw that some readers still take as line breaks (or worse).
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)}
_JSON_UNSAFE.update({c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)})  # lone surrogates


def _escape_char(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(value: str, *, quoted: bool = False) -> str:
    """``value`` safe for one field of a log line.

    Non-printable characters (controls, line and paragraph separators, lone
    surrogates), backslashes and quotes become backslash escapes; so do spaces
    unless the field is ``quoted`` (they would start a new ``key=value``).
    """
    plain = value.isprintable() and '"' not in value and "\\" not in value
    if plain and (quoted or " " not in value):
        return value  # the common case, checked in C (this runs ~10 times a request)
    specials = '\\"' if quoted else '\\" '
    return "".join(c if c.isprintable() and c not in specials else _escape_char(c) for c in value)


def line_safe(text: str) -> str:
    """``text`` without anything that could end the line (only non-printables escaped)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


class AccessEntry(NamedTuple):
    """One answered request: the access line's fields (None: unset). A named tuple:
    one is made per request, and it is the cheapest immutable record."""

    remote: str
    method: str
    path: str  # path and query, decoded, as the client sent them
    status: int
    upstream: str | None
    repo: str | None
    ref: str | None
    cache: str | None
    bytes: int
    duration_ms: float
    error: str | None
    user: str | None
    request_id: str
    user_agent: str | None

    def __str__(self) -> str:
        """The text access line (after ``registry_cache.access: ``)."""
        line = (
            f'{escape(self.remote)} "{escape(self.method)} {escape(self.path, quoted=True)}" '
            f"{self.status} upstream={_field(self.upstream)} repo={_field(self.repo)} "
            f"ref={_field(self.ref)} cache={_field(self.cache)} bytes={self.bytes} "
            f"duration={self.duration_ms:.1f}ms"
        )
        if self.error is not None:
            line += f" error={escape(self.error)}"
        if self.user is not None:
            line += f" user={escape(self.user)}"
        line += f" request_id={escape(self.request_id)}"
        if self.user_agent is not None:
            line += f' agent="{escape(self.user_agent, quoted=True)}"'
        return line

    def as_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["duration_ms"] = round(self.duration_ms, 1)
        return out

    def redacted(self, redact: Callable[[str], str]) -> AccessEntry:
        """A copy with ``redact(text)`` applied to every text field."""
        changes: dict[str, Any] = {}
        for name, value in self._asdict().items():
            if isinstance(value, str):
                clean = redact(value)
                if clean != value:
                    changes[name] = clean
        return self._replace(**changes) if changes else self


def _field(value: str | None) -> str:
    return "-" if value is None else escape(value)


class RedactSecrets(logging.Filter):
    """Defence in depth: no configured password may reach a log line, whatever the code."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 3]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        entry = getattr(record, "access", None)
        if isinstance(entry, AccessEntry):
            clean = entry.redacted(self._redact)
            if clean is not entry:
                record.access, record.msg, record.args = clean, "%s", (clean,)
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


class MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser rejects (answered 400) as an error with a
    traceback; it is the client's fault, so it becomes one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            reason = str(error.message).strip().splitlines()[0] if error.message else "invalid"
            record.msg = "rejected a malformed request from %s (%d): %s"
            record.args = (remote, error.code, reason)
            record.exc_info = record.exc_text = None
            if record.levelno > logging.INFO:  # aiohttp's debug ones stay debug
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text] if record.exc_text else []
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


class TextFormatter(logging.Formatter):
    """``FORMAT``, with the message line-safe and traceback lines indented."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = line_safe(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        more = _exception_text(self, record)
        if more:
            line += "".join(f"\n  {line_safe(part)}" for part in more.split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, pid, logger, then the access fields
    (access lines) or the message; ``request_id`` whenever a request is being served."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
        }
        entry = getattr(record, "access", None)
        if isinstance(entry, AccessEntry):
            out.update(entry.as_json())
        else:
            out["message"] = record.getMessage()
            current = requestid.current()
            if current is not None:
                out["request_id"] = current
        more = _exception_text(self, record)
        if more:
            out["exception"] = more
        line = json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)
        return line if line.isascii() else line.translate(_JSON_UNSAFE)


class BatchedStderr(logging.Handler):
    """Writes log lines to stderr, batching those made on the event loop.

    Lines emitted on the loop thread are written once per loop turn, in one
    ``write(2)``: under load many requests finish per turn, and a write per access
    line cost ~28% of manifest throughput. When idle a turn is immediate, so lines
    still appear at once. Lines from other threads (fills, CLI) are written now.
    """

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self._fd = fd
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)
            return
        self._pending.append(line)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self._scheduled = False
            lines, self._pending = self._pending, []
        if lines:
            self._write("".join(lines))

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # stderr gone (closed pipe): logging must never take the server down


# The bucket's credentials come from the AWS chain; these are the ones a log line could
# ever carry (the access key id is not secret: it names the key, as in every request).
AWS_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def secrets_of(settings: Settings, environ: Mapping[str, str] = os.environ) -> list[str]:
    found = [
        u.password.get_secret_value() for u in settings.upstreams.values() if u.password is not None
    ]
    if settings.storage is not None:
        found += [environ[name] for name in AWS_SECRET_ENV if environ.get(name)]
    for secret in (settings.index_secret, settings.cluster_key):
        try:
            value = secret()
        except Exception:  # unreadable or unset: reported where it is used
            continue
        if value:
            found.append(value)
    return found


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup_logging(settings: Settings) -> None:
    handler: logging.Handler
    try:
        handler = BatchedStderr(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # stderr replaced by a non-file
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(settings.log_format))
    handler.addFilter(RedactSecrets(secrets_of(settings)))
    # Neither format names the caller's file, line or function, the thread or the
    # multiprocessing process name: the logging HOWTO's "Optimization" switches stop
    # collecting them for every record (finding the caller walked the stack for each
    # access line: 1 µs of a warm hit's ~100).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Library chatter (urllib3 connection pool notes) stays out unless debugging.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    for sdk in ("botocore", "aiobotocore"):  # its debug lines list every request's headers
        logging.getLogger(sdk).setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").disabled = True
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [MalformedRequests()]
