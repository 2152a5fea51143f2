"""Client credentials: htpasswd parsing and reloading, Basic header parsing, the memo."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import bcrypt
import pytest

from registry_cache import htpasswd
from registry_cache.errors import ConfigError
from registry_cache.htpasswd import Htpasswd, parse
from registry_cache.web.clientauth import AuthenticationRequired, ClientAuth, parse_basic


def entry(user: str, password: str) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_parse_takes_bcrypt_entries_and_skips_comments() -> None:
    text = f"# ops team\n\n{entry('alice', 'pw')}\n{entry('bob', 'x:y')}\n"
    users = parse(text, "f")
    assert set(users) == {"alice", "bob"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice:$apr1$abc$def\n", "f:1: user 'alice' is not a bcrypt entry"),
        ("# c\nnocolon\n", "f:2: expected user:hash"),
        (f"{entry('a', 'p')}\n{entry('a', 'q')}\n", "f:2: user 'a' appears twice"),
    ],
)
def test_parse_errors_are_one_line_with_the_line_number(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "f")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        htpasswd.load(tmp_path / "missing")


def test_check_and_reload_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(entry("alice", "pw") + "\n")
    users = Htpasswd(path)
    assert users.check("alice", "pw") and not users.check("alice", "nope")
    assert not users.check("mallory", "pw")
    monkeypatch.setattr(htpasswd, "RECHECK", 0.0)
    path.write_text(entry("bob", "pw2") + "\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    users.refresh()
    assert users.generation == 1
    assert users.check("bob", "pw2") and not users.check("alice", "pw")
    path.write_text("broken\n")  # a bad edit keeps the users we had
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    users.refresh()
    assert users.generation == 1 and users.check("bob", "pw2")


def test_parse_basic() -> None:
    assert parse_basic(basic("alice", "p:w")) == ("alice", "p:w")
    for bad in (
        "Bearer abc",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ):
        with pytest.raises(AuthenticationRequired):
            parse_basic(bad)
    assert AuthenticationRequired().headers()["WWW-Authenticate"] == 'Basic realm="registry-cache"'


async def test_client_auth_remembers_successes_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(entry("alice", "pw") + "\n")
    users = Htpasswd(path)
    auth = ClientAuth(users)
    calls: list[str] = []
    real_check = users.check

    def counting(user: str, password: str) -> bool:
        calls.append(user)
        return real_check(user, password)

    monkeypatch.setattr(users, "check", counting)
    assert await auth.user(basic("alice", "pw")) == "alice"
    assert await auth.user(basic("alice", "pw")) == "alice"
    assert calls == ["alice"]  # the second request cost no bcrypt check
    with pytest.raises(AuthenticationRequired):
        await auth.user(basic("alice", "wrong"))
    with pytest.raises(AuthenticationRequired):
        await auth.user(None)
    users.generation += 1  # what a reload does
    assert await asyncio.wait_for(auth.user(basic("alice", "pw")), 5) == "alice"
    assert calls == ["alice", "alice", "alice"]
