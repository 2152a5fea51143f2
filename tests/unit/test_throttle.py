"""LoginThrottle with an injected clock: back-off per address, bounded memory."""

from __future__ import annotations

import pytest

from registry_cache.web.throttle import LoginThrottle, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **kwargs: float) -> LoginThrottle:
    return LoginThrottle(clock=clock, free=3, base_delay=1.0, max_delay=8.0, **kwargs)  # type: ignore[arg-type]


def fail(limiter: LoginThrottle, remote: str) -> float | None:
    """One failed check (a reservation that never succeeds)."""
    return limiter.begin(remote)


def test_failures_beyond_the_free_ones_back_off_exponentially() -> None:
    clock = Clock()
    limiter = throttle(clock)
    assert [fail(limiter, "10.0.0.1") for _ in range(3)] == [None, None, None]
    assert fail(limiter, "10.0.0.1") == pytest.approx(1.0)  # the 3rd failure blocks 1 s
    clock.now += 1.0
    assert fail(limiter, "10.0.0.1") is None  # one more check allowed...
    assert fail(limiter, "10.0.0.1") == pytest.approx(2.0)  # ...then 2 s
    delays: list[float] = []
    for _ in range(5):
        clock.now += 100.0 if not delays else delays[-1]
        assert fail(limiter, "10.0.0.1") is None
        wait = fail(limiter, "10.0.0.1")
        assert wait is not None
        delays.append(wait)
    assert delays == pytest.approx([4.0, 8.0, 8.0, 8.0, 8.0])  # capped at max_delay


def test_addresses_are_independent_and_a_success_costs_nothing() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(3):
        fail(limiter, "10.0.0.1")
    assert fail(limiter, "10.0.0.1") is not None
    assert limiter.begin("10.0.0.2") is None  # another client is not affected
    limiter.succeeded("10.0.0.2")
    assert len(limiter) == 1 and limiter.failures("10.0.0.2") == 0
    # A success undoes its own reservation, block included.
    for _ in range(2):
        fail(limiter, "10.0.0.3")
    assert limiter.begin("10.0.0.3") is None  # the 3rd check: would block if it failed
    limiter.succeeded("10.0.0.3")
    assert limiter.begin("10.0.0.3") is None and limiter.failures("10.0.0.3") == 3


def test_checks_in_flight_count_so_parallel_guesses_cannot_slip_past() -> None:
    limiter = throttle(Clock())
    started = [limiter.begin("10.0.0.9") for _ in range(50)]  # none has finished yet
    assert started.count(None) == 3


def test_quiet_addresses_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    limiter = throttle(clock, forget_after=60.0, max_addresses=100)
    for _ in range(3):
        fail(limiter, "10.0.0.1")
    assert fail(limiter, "10.0.0.1") is not None
    clock.now += 61.0
    assert fail(limiter, "10.0.0.1") is None and limiter.failures("10.0.0.1") == 1
    for n in range(1000):
        fail(limiter, f"10.1.{n // 256}.{n % 256}")
    assert len(limiter) == 100


def test_an_ipv6_host_is_one_client_across_its_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1" == client_key("10.0.0.1")
    assert client_key(None) == "-" and client_key("unix-socket") == "unix-socket"
    limiter = throttle(Clock())
    for host in range(3):
        fail(limiter, f"2001:db8::{host + 1}")
    assert fail(limiter, "2001:db8::ffff") is not None
