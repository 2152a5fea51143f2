"""A shaped WAN link inside a private network namespace (no netem in this kernel).

The WAN scenarios run in a child process started as ``unshare -n``: a network
namespace of its own, which vanishes with its last process, so nothing outlives
the run. Inside it, ``route_far`` sends every packet to and from the far address
(127.0.0.2, where the upstream listens) through the tun device ``wan0``, served by
``native/wanlink.c``: a serializer at the link's rate behind a bounded queue, then
a fixed delay each way, then back into the kernel for local delivery. Clients,
caches and proxies listen on 127.0.0.1 next to each other, unshaped. Only loopback
addresses exist in the namespace; the host's interfaces, routes and /etc/hosts are
never touched, and ``route_far`` refuses to run in the host's own namespace.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .servers import LOOPBACK, find_binary, spawn, terminate

FAR = "127.0.0.2"
TUN = "wan0"
MTU = 9000  # fewer, bigger packets: the forwarder stays under a fraction of a core
TABLE = "100"


class NetnsError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    rtt_ms: float
    rate_mbit: float

    @property
    def queue_bytes(self) -> int:
        """One bandwidth-delay product (at least 256 KiB): a router's usual buffer."""
        bdp = self.rate_mbit * 1e6 / 8 * self.rtt_ms / 1e3
        return max(256 << 10, int(bdp))

    def describe(self) -> str:
        return f"{self.rtt_ms:g} ms RTT, {self.rate_mbit:g} Mbit/s"


PROFILES = {
    # A registry in another region or on another continent (issue 14's example).
    "far": Profile("far", 40.0, 400.0),
    # A registry in the same cloud region: short RTT, fast link, where the cache's own
    # speed matters more than the link's.
    "near": Profile("near", 10.0, 1000.0),
}


def netns_id() -> int:
    """This process's network namespace (the inode of /proc/self/ns/net)."""
    return os.stat("/proc/self/ns/net").st_ino


def in_private_netns(outer: int) -> bool:
    """True when this process is in a network namespace other than ``outer`` (the
    suite's, i.e. the host's) holding nothing but a loopback device: a new one."""
    if netns_id() == outer:
        return False
    ip = find_binary("ip") or "ip"
    argv = [ip, "-o", "link"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    links = [line.split(":")[1].strip() for line in done.stdout.splitlines() if ":" in line]
    return done.returncode == 0 and links == ["lo"]


def _ip(*args: str) -> None:
    ip = find_binary("ip") or "ip"
    done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys/net/ipv4", path).write_text(value)


def route_far(outer: int) -> None:
    """Loopback up; 127.0.0.2's traffic (both ways) through ``wan0``. Only in a new
    network namespace, not ``outer`` (the suite's own)."""
    if not in_private_netns(outer):
        raise NetnsError("refusing to change routes outside a new private network namespace")
    _ip("link", "set", "lo", "up")
    _ip("tuntap", "add", "dev", TUN, "mode", "tun")
    _ip("link", "set", TUN, "mtu", str(MTU), "up")
    # Packets with loopback addresses arriving on a non-loopback device are martians
    # unless route_localnet and accept_local say otherwise (this namespace only).
    for conf in ("all", "default", "lo", TUN):
        _sysctl(f"conf/{conf}/rp_filter", "0")
        _sysctl(f"conf/{conf}/accept_local", "1")
        _sysctl(f"conf/{conf}/route_localnet", "1")
    # Local delivery is looked up after our rules, not first: locally sent packets to or
    # from the far address (iif lo) go out through the tun; what the forwarder writes
    # back arrives on the tun (iif wan0) and is delivered locally as usual.
    _ip("rule", "add", "pref", "100", "lookup", "local")
    _ip("rule", "del", "pref", "0")
    _ip("rule", "add", "pref", "10", "iif", "lo", "to", FAR, "lookup", TABLE)
    _ip("rule", "add", "pref", "11", "iif", "lo", "from", FAR, "lookup", TABLE)
    _ip("route", "add", "127.0.0.0/8", "dev", TUN, "src", LOOPBACK, "table", TABLE)


@dataclass(frozen=True, slots=True)
class LinkStats:
    to_far: int
    from_far: int
    dropped_loss: int
    dropped_queue: int
    dropped_stall: int
    dropped_dead: int
    killed: int


class Link:
    """The ``wanlink`` forwarder on ``wan0``, controlled line by line on its stdin."""

    def __init__(self, binary: Path, log: Path, profile: Profile, *, seed: int = 1) -> None:
        self.binary = binary
        self.log = log
        self.profile = profile
        self.seed = seed
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, shaped: bool = True) -> Link:
        """Start forwarding; ``shaped=False``: no delay and ~100 Gbit/s (for setup)."""
        self.stop()
        delay_us = int(self.profile.rtt_ms * 1000 / 2) if shaped else 0
        rate_kbit = int(self.profile.rate_mbit * 1000) if shaped else 100_000_000
        queue = self.profile.queue_bytes if shaped else 64 << 20
        argv = [str(self.binary), TUN, FAR, str(delay_us), str(rate_kbit), str(queue)]
        argv.append(str(self.seed))
        proc = spawn(argv, log=self.log, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proc = proc
        if self._readline() != "ready":
            self.stop()
            raise NetnsError(f"wanlink did not start: {self.log.read_text()[-500:]}")
        return self

    def _readline(self) -> str:
        if self._proc is None or self._proc.stdout is None:
            raise NetnsError("wanlink is not running")
        return self._proc.stdout.readline().decode().strip()

    def command(self, line: str) -> str:
        if self._proc is None or self._proc.stdin is None:
            raise NetnsError("wanlink is not running")
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()
        answer = self._readline()
        if answer.startswith("error") or not answer:
            raise NetnsError(f"wanlink {line!r}: {answer or 'no answer'}")
        return answer

    def loss(self, fraction: float) -> None:
        self.command(f"loss {round(fraction * 1e6)}")

    def stall(self, seconds: float, after_bytes: int) -> None:
        self.command(f"stall {round(seconds * 1000)} {after_bytes}")

    def kill(self, after_bytes: int) -> None:
        self.command(f"kill {after_bytes}")

    def reset(self) -> None:
        self.command("reset")

    def stats(self) -> LinkStats:
        return LinkStats(*(int(x) for x in self.command("stats").split()))

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise NetnsError("wanlink is not running")
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()  # wanlink exits when its stdin closes
            terminate(self._proc, grace=3.0)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
