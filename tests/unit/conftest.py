"""Unit-test fixtures shared by the modules that script an HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.scripted import Scripted


@pytest.fixture
def server() -> Iterator[Scripted]:
    """A ``Scripted`` server on 127.0.0.1, closed after the test."""
    scripted = Scripted()
    yield scripted
    scripted.close()
