"""This replica's presence in the cluster: a heartbeat and the lease renewals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from .. import __version__
from ..errors import IndexUnavailable
from .directory import HEARTBEAT, ClusterDirectory
from .leases import LeaseKeeper

log = logging.getLogger("registry_cache.cluster")


class ClusterNode:
    def __init__(
        self, directory: ClusterDirectory, leases: LeaseKeeper, *, max_size: int | None = None
    ) -> None:
        self.directory = directory
        self.leases = leases
        self.max_size = max_size
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.leases.start()
        self._task = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")

    def info(self) -> dict[str, Any]:
        """What the other replicas (and their dashboards) learn of this one."""
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "max_size": self.max_size,
        }

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
