"""What a test does when a real engine it needs is not installed.

Contract: ``missing_tool(message)`` fails the test when ``CI`` is ``true`` (CI must
run every engine, so a missing one is a broken install, never a silent pass) and
skips it elsewhere (a developer without Ceph can still run the rest). It never
returns.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool(message: str) -> NoReturn:
    """Fail under CI=true, else skip, with ``message`` (say how to install it)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing engine fails the test)", pytrace=False)
    pytest.skip(message)
