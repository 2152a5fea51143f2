"""Which clients get hits copied (same host) and which get sendfile (another host)."""

from __future__ import annotations

import pytest

from registry_cache.web.responses import same_host

LOCAL_V4 = ("10.1.2.3", 5000)


@pytest.mark.parametrize(
    "peer",
    [
        ("127.0.0.1", 40000),
        ("127.0.0.2", 40000),  # all of 127/8 is loopback
        ("::1", 40000, 0, 0),
        ("::ffff:127.0.0.1", 40000, 0, 0),  # IPv4 through a dual-stack socket
        ("10.1.2.3", 40000),  # connected to this host's own address
    ],
)
def test_clients_on_this_host(peer: tuple[object, ...]) -> None:
    assert same_host(peer, LOCAL_V4)


@pytest.mark.parametrize(
    "peer",
    [
        ("10.1.2.4", 40000),  # another node
        ("192.0.2.7", 40000),
        ("fe80::1%eth0", 40000, 0, 2),
        None,  # unknown
        "/run/registry-cache.sock",  # a unix socket's peername
        ("not-an-address", 1),
    ],
)
def test_clients_elsewhere_or_unknown(peer: object) -> None:
    assert not same_host(peer, LOCAL_V4)
