"""Failed client logins, throttled per client address.

Checking credentials that are not already known good costs a bcrypt verification
and gives whoever sent them one guess. Per address (an IPv4 address, or an IPv6
/64: one host owns a whole /64), the first ``free`` failures cost nothing; after
that each further check has to wait an exponential back-off after the last one
(1 s, 2 s, 4 s … at most ``max_delay``). A check asked for sooner is refused at
once (429 ``TOOMANYREQUESTS`` with ``Retry-After``) without looking at the
password. Refusing rather than answering a slow 401: a refusal costs nothing and
tells nothing, while a delayed 401 holds a connection per guess and, as a success
would come back at once, still gives the answer to a client that stops waiting.

Successful logins are not slowed: credentials that succeeded before are
remembered by ``ClientAuth`` and never reach the throttle, from any address, and
other addresses are not affected. A first login from a throttled address waits
like any guess: that is the price of not telling a guess from a login. A check in
progress counts as a failure until it succeeds, so parallel guesses cannot slip
past. An address is forgotten after ``forget_after`` without a check, and at most
``max_addresses`` are kept (least recently used first out). State is per worker.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..lru import Lru

FREE_FAILURES = 5
BASE_DELAY = 1.0
MAX_DELAY = 60.0
FORGET_AFTER = 600.0
MAX_ADDRESSES = 16384


@dataclass(slots=True)
class _Address:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0
    before: float = 0.0  # blocked_until before the latest check (restored if it succeeds)


def client_key(remote: str | None) -> str:
    """The unit throttled: the IPv4 address, or the IPv6 /64 it belongs to."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        free: int = FREE_FAILURES,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self._free = free
        self._base = base_delay
        self._max = max_delay
        self._forget = forget_after
        self._addresses: Lru[str, _Address] = Lru(max_addresses)

    def begin(self, remote: str | None) -> float | None:
        """Reserve a credentials check for ``remote``: None when it may go ahead
        (counted as a failure until ``succeeded``), else seconds until it may."""
        now = self._clock()
        key = client_key(remote)
        state = self._addresses.get(key)
        if state is None or now - state.last > self._forget:
            state = _Address()
            self._addresses.put(key, state)
        if now < state.blocked_until:
            return state.blocked_until - now
        state.failures += 1
        state.last = now
        state.before = state.blocked_until
        if state.failures >= self._free:
            delay = self._base * 2 ** min(state.failures - self._free, 32)
            state.blocked_until = now + min(self._max, delay)
        return None

    def succeeded(self, remote: str | None) -> None:
        """The reserved check succeeded: as if it had never been made."""
        key = client_key(remote)
        state = self._addresses.get(key)
        if state is None:
            return
        state.failures -= 1
        state.blocked_until = state.before
        if state.failures <= 0:
            self._addresses.pop(key)

    def failures(self, remote: str | None) -> int:
        state = self._addresses.get(client_key(remote))
        return 0 if state is None else state.failures

    def __len__(self) -> int:
        return len(self._addresses)
