"""Tag freshness and stale-if-error decisions."""

from __future__ import annotations

from registry_cache.errors import (
    BadGateway,
    Denied,
    ManifestUnknown,
    NameUnknown,
    TooManyRequests,
    Unavailable,
)
from registry_cache.index.base import TagRow
from registry_cache.proxy.policy import TagDecision, serve_stale_on, tag_decision


def row(checked_at: float) -> TagRow:
    return TagRow(digest="sha256:" + "a" * 64, checked_at=checked_at, last_pulled=checked_at)


def test_unknown_tag_is_fetched() -> None:
    assert tag_decision(None, 100.0, 300) is TagDecision.FETCH


def test_fresh_within_ttl_then_revalidate() -> None:
    assert tag_decision(row(100.0), 399.9, 300) is TagDecision.FRESH
    assert tag_decision(row(100.0), 400.0, 300) is TagDecision.REVALIDATE


def test_zero_ttl_always_revalidates() -> None:
    assert tag_decision(row(100.0), 100.0, 0) is TagDecision.REVALIDATE


def test_clock_going_backwards_is_not_fresh_forever() -> None:
    assert tag_decision(row(1000.0), 10.0, 300) is TagDecision.REVALIDATE


def test_stale_if_error() -> None:
    for error in (Unavailable(), BadGateway(), TooManyRequests(), Denied(), NameUnknown()):
        assert serve_stale_on(error), error
    assert serve_stale_on(TimeoutError())
    assert not serve_stale_on(ManifestUnknown())
    assert not serve_stale_on(ValueError())
