"""The dashboard's numbers: per-worker recording, shared history, the API documents."""

from .history import StatsDB
from .recorder import Recorder
from .service import StatsService

__all__ = ["Recorder", "StatsDB", "StatsService"]
