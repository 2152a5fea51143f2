"""The engines harness's pure parts: what a missing engine does, and the socket checks."""

from __future__ import annotations

import os
import socket

import pytest

from tests.harness.require import missing
from tests.harness.sockets import Socket, is_loopback, off_loopback, pid_alive, sockets


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_a_missing_engine_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        missing("weed is not installed")


@pytest.mark.parametrize("ci", [None, "", "false", "no"])
def test_a_missing_engine_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        missing("weed is not installed")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("*", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.5", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _sock(state: str, local: str, peer: str) -> Socket:
    return Socket("tcp", state, local, peer, frozenset({1}))


def test_off_loopback_flags_wildcard_listeners_and_outside_peers() -> None:
    good = [
        _sock("LISTEN", "127.0.0.1:8333", "0.0.0.0:*"),
        _sock("ESTAB", "127.0.0.1:40000", "127.0.0.1:8333"),
        _sock("LISTEN", "[::ffff:127.0.0.1]:9000", "[::]:*"),
        _sock("LISTEN", "127.0.0.1%lo:53", "0.0.0.0:*"),
    ]
    bad = [
        _sock("LISTEN", "0.0.0.0:6800", "0.0.0.0:*"),
        _sock("LISTEN", "*:6789", "*:*"),
        _sock("LISTEN", "[::]:7480", "[::]:*"),
        _sock("ESTAB", "10.1.2.3:5555", "93.184.216.34:443"),
        _sock("UNCONN", "0.0.0.0:68", "0.0.0.0:*"),
    ]
    assert off_loopback(good + bad) == bad


def test_sockets_sees_a_real_listener_of_this_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        mine = [s for s in sockets([os.getpid()]) if s.local == f"127.0.0.1:{port}"]
        assert [s.state for s in mine] == ["LISTEN"]
        assert off_loopback(mine) == []
    assert pid_alive(os.getpid())
