"""Typed keys for what the web application keeps in ``app[...]``."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..stats.recorder import Recorder

SETTINGS_KEY = web.AppKey("settings", Settings)
# The dashboard's per-worker counters (stats.recorder), fed by middleware.access_log.
RECORDER_KEY = web.AppKey("recorder", Recorder)
# How every /v2 answer says where its content came from (registry-cache doctor reads it).
CACHE_HEADER = "X-Registry-Cache"
UPSTREAM_HEADER = "X-Registry-Cache-Upstream"

__all__ = ["CACHE_HEADER", "RECORDER_KEY", "SETTINGS_KEY", "UPSTREAM_HEADER"]
