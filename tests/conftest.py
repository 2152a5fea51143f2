"""Suite-wide hooks: ``needs(...)`` marks are checked before any fixture runs."""

from __future__ import annotations

import pytest

from tests.harness.require import MARK, check_marks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARK}(available, reason): skip, or fail under CI=true, unless available"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    check_marks(item)
