"""Which sockets a process tree holds, from ``ss`` and /proc (the engines' safety checks).

Contract:
- ``descendants(pid)``: the PIDs of every live process below ``pid`` (not ``pid``
  itself), read from /proc; [] when ``pid`` is gone.
- ``tree_pids(pids)``: ``pids`` that are still alive plus all their descendants.
- ``sockets(pids)``: every TCP and UDP socket (listening or connected) those PIDs
  hold, as ``Socket``s, from ``ss -tuanpH``; needs to see other users' processes'
  sockets, which root does (a non-root caller sees only its own processes' sockets).
- ``off_loopback(socks)``: the listeners among ``socks`` not bound to 127.0.0.0/8,
  and the connected ones whose peer is outside it: what a test asserts is empty.
- ``pid_alive(pid)``: the process exists and is not a zombie.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_USERS_PID_RE = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class Socket:
    """One socket from ``ss``: protocol, state, local and peer address, owning PIDs."""

    proto: str  # "tcp" | "udp"
    state: str  # "LISTEN", "ESTAB", "UNCONN", ...
    local: str  # "127.0.0.1:8333", "[::]:80", "*:6800"
    peer: str  # "0.0.0.0:*" for a listener
    pids: frozenset[int]

    @property
    def listening(self) -> bool:
        return self.state in ("LISTEN", "UNCONN")

    @property
    def local_host(self) -> str:
        return _host(self.local)

    @property
    def peer_host(self) -> str:
        return _host(self.peer)


def _host(addr: str) -> str:
    host = addr.rsplit(":", 1)[0]
    host = host.strip("[]")
    return host.split("%", 1)[0]  # "127.0.0.1%lo" (bound to a device)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address; "*" and "0.0.0.0" are not."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has let go of everything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command, which may itself hold spaces or ")".
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Live PIDs below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return sorted(p for p in found if pid_alive(p))


def tree_pids(pids: Iterable[int]) -> set[int]:
    """The live ones among ``pids`` and everything below them."""
    result: set[int] = set()
    for pid in pids:
        if pid_alive(pid):
            result.add(pid)
            result.update(descendants(pid))
    return result


def sockets(pids: Iterable[int]) -> list[Socket]:
    """TCP and UDP sockets (any state) held by any of ``pids``."""
    wanted = set(pids)
    out = subprocess.run(
        ["ss", "-tuanpH"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local Peer Process
        if len(fields) < 7:
            continue
        owners = frozenset(int(p) for p in _USERS_PID_RE.findall(" ".join(fields[6:])))
        if owners & wanted:
            found.append(Socket(fields[0], fields[1], fields[4], fields[5], owners))
    return found


def off_loopback(socks: Iterable[Socket]) -> list[Socket]:
    """Listeners not bound to loopback, and connections to a peer off loopback."""
    bad = []
    for sock in socks:
        if sock.listening:
            if not is_loopback(sock.local_host):
                bad.append(sock)
        elif not (is_loopback(sock.local_host) and is_loopback(sock.peer_host)):
            bad.append(sock)
    return bad
