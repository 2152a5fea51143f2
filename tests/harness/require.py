"""A test whose tool or permission is missing: skipped on a developer's machine,
FAILED under ``CI=true`` (CI installs everything: a missing tool there is a broken
install step, never a reason to pass).

Contract:
- ``missing(reason)``: raise the skip, or under CI the failure, with ``reason``.
- ``require(available, reason)``: ``missing(reason)`` unless ``available``; for fixtures
  and test bodies.
- ``require_tools(*names)``: each name must be on PATH (or in /usr/sbin, /sbin).
- ``needs(available, reason)``: the same as a mark (``pytestmark = [needs(...)]`` or
  ``@needs(...)``), checked before the test's fixtures start anything
  (``tests/conftest.py`` runs it first in setup).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

MARK = "needs"
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool or permission fails)", pytrace=False)
    pytest.skip(reason)


def require(available: bool, reason: str) -> None:
    if not available:
        missing(reason)


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=_SBIN)


def require_tools(*names: str, hint: str = "scripts/install-test-deps.sh") -> None:
    absent = [name for name in names if which(name) is None]
    require(not absent, f"{', '.join(absent)} not installed ({hint})")


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    mark: pytest.MarkDecorator = getattr(pytest.mark, MARK)(available, reason)
    return mark


def check_marks(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARK):
        available, reason = mark.args
        require(bool(available), str(reason))
