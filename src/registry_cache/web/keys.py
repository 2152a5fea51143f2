"""Typed keys for what the web application keeps in ``app[...]``."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)

__all__ = ["SETTINGS_KEY"]
