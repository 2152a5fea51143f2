"""This replica's presence in the cluster: a heartbeat and the lease renewals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from .. import __version__
from ..errors import IndexUnavailable
from .directory import HEARTBEAT, ClusterDirectory
from .leases import LeaseKeeper

log = logging.getLogger("registry_cache.cluster")


class ClusterNode:
    def __init__(self, directory: ClusterDirectory, leases: LeaseKeeper) -> None:
        self.directory = directory
        self.leases = leases
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.leases.start()
        self._task = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")

    def info(self) -> dict[str, Any]:
        return {"version": __version__, "pid": os.getpid()}

    async def _beat_forever(self) -> None:
        reachable = True
        while True:
            try:
                await self.directory.heartbeat(self.info())
                if not reachable:
                    log.info("cluster directory reachable again")
                reachable = True
            except IndexUnavailable as exc:
                if reachable:
                    log.warning("cluster heartbeat failed: %s", exc.message)
                reachable = False
            await asyncio.sleep(HEARTBEAT)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.leases.stop()
