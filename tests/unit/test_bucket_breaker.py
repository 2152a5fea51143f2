"""The bucket's circuit breaker: fail fast after a failure, one log line per outage."""

from __future__ import annotations

import logging

import pytest

from registry_cache.bucket.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_pauses_requests_then_the_next_one_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    breaker = Breaker("s3://b", retry_after=2.0, clock=clock, wall=clock)
    assert breaker.allow() and breaker.health().ok
    with caplog.at_level(logging.INFO, logger="registry_cache.bucket"):
        breaker.failed("get", "connection refused")
        assert not breaker.allow() and breaker.down
        health = breaker.health()
        assert (health.ok, health.error, health.since) == (False, "connection refused", 100.0)
        clock.now += 2.0
        assert breaker.allow()  # time to try again; still down until something works
        breaker.failed("get", "timed out")  # the retry failed too: same outage
        assert not breaker.allow()
        clock.now += 5.0
        breaker.worked()
        assert breaker.allow() and not breaker.down
        breaker.worked()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1  # once per outage
    assert sum("reachable again after 7.0s" in m for m in messages) == 1
