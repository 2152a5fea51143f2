"""Client credentials: bcrypt entries from an htpasswd file (``htpasswd -B``).

The same format distribution's htpasswd auth reads. Only bcrypt is accepted:
the MD5, SHA1 and crypt variants are too cheap to brute-force. The file is
re-read when it changes (looked at, at most, every ``RECHECK`` seconds), so users
can be added or removed without a restart.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from pathlib import Path

import bcrypt

from .errors import ConfigError

log = logging.getLogger("registry_cache.auth")

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
RECHECK = 5.0  # seconds between looks at the file's mtime


def parse(text: str, source: str) -> dict[str, bytes]:
    """``user:hash`` lines (blank lines and ``#`` comments skipped) → {user: hash}."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise ConfigError(f"{source}:{number}: expected user:hash")
        if not hashed.startswith(BCRYPT_PREFIXES):
            raise ConfigError(
                f"{source}:{number}: user {user!r} is not a bcrypt entry (make it with htpasswd -B)"
            )
        if user in users:
            raise ConfigError(f"{source}:{number}: user {user!r} appears twice")
        users[user] = hashed.encode()
    return users


def load(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"htpasswd: cannot read {path.absolute()}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"htpasswd: {path.absolute()} is not a text file") from None
    return parse(text, str(path))


class Htpasswd:
    """The users of one file; ``check`` is slow on purpose (bcrypt): call it off the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users = load(path)
        self._stamp = self._stat()
        self._looked_at = time.monotonic()
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every reload: memoised successes are void

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Re-read the file if it changed; a broken new version keeps the old users."""
        now = time.monotonic()
        if now - self._looked_at < RECHECK:
            return
        self._looked_at = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            users = load(self.path)
        except ConfigError as exc:
            log.error("keeping the previous users: %s", exc)
            return
        with self._lock:
            self._users = users
            self.generation += 1
        log.info("htpasswd %s re-read: %d user(s)", self.path, len(users))

    def check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        if hashed is None:
            # Same work as a real check, so timing does not tell which users exist.
            bcrypt.checkpw(password.encode(), _dummy_hash())
            return False
        return bcrypt.checkpw(password.encode(), hashed)


@functools.cache
def _dummy_hash() -> bytes:
    return bcrypt.hashpw(b"registry-cache", bcrypt.gensalt(rounds=10))
