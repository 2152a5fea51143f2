"""Suite-wide hooks: ``needs(...)`` marks are checked before any fixture runs; SIGTERM
unwinds the run so that every server it started is stopped."""

from __future__ import annotations

import pytest

from tests.harness.proc import stop_on_sigterm
from tests.harness.require import MARK, check_marks


def pytest_configure(config: pytest.Config) -> None:
    stop_on_sigterm()  # a run stopped by SIGTERM still stops its servers (harness.proc)
    config.addinivalue_line(
        "markers", f"{MARK}(available, reason): skip, or fail under CI=true, unless available"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    check_marks(item)
