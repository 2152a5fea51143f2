"""Several cache replicas sharing one PostgreSQL index (cluster mode), for tests.

``Cluster(make_cache, workdir, upstream_url, index_url, replicas=3)`` starts that
many ``CacheServer``s on 127.0.0.1, each with its own data directory, the same
``--index``, its own ``--advertise http://127.0.0.1:PORT`` and one shared
``--cluster-secret-file`` (``extra`` args and ``env`` for every replica; ``add()``
starts one more, configured the same). Stopping is the ``make_cache`` fixture's (by PID).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from .cache import CacheServer, cli_env, run_cli
from .ports import free_port


class Cluster:
    def __init__(
        self,
        make_cache: Callable[..., CacheServer],
        workdir: Path,
        upstream_url: str,
        index_url: str,
        *,
        replicas: int = 3,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.secret_file = workdir / "cluster-secret"
        self.secret = secrets.token_hex(24)
        self.secret_file.write_text(self.secret + "\n")
        self.index_url = index_url
        self._make = make_cache
        self._upstream_url = upstream_url
        self._extra = list(extra)
        self.env = dict(env or {})
        self.replicas: list[CacheServer] = []
        for _ in range(replicas):
            self.add()

    def add(self) -> CacheServer:
        """One more replica (its own empty data directory), started."""
        port = free_port()
        args = [
            "--upstream",
            f"docker.io={self._upstream_url}",
            "--index",
            self.index_url,
            "--advertise",
            f"http://127.0.0.1:{port}",
            "--cluster-secret-file",
            str(self.secret_file),
            *self._extra,
        ]
        replica = self._make(*args, port=port, env=self.env)
        self.replicas.append(replica)
        return replica

    def __getitem__(self, i: int) -> CacheServer:
        return self.replicas[i]

    def __len__(self) -> int:
        return len(self.replicas)

    def cli(self, replica: CacheServer, *args: str) -> subprocess.CompletedProcess[str]:
        """``registry-cache *args`` configured as ``replica`` is (its data, index, name)."""
        env = cli_env()
        env.update(self.env)
        env.update(
            REGISTRY_CACHE_DATA_DIR=str(replica.data_dir),
            REGISTRY_CACHE_INDEX=self.index_url,
            REGISTRY_CACHE_ADVERTISE=f"http://127.0.0.1:{replica.port}",
            REGISTRY_CACHE_CLUSTER_SECRET_FILE=str(self.secret_file),
        )
        return run_cli(*args, cwd=replica.cwd, timeout=120, env=env)

    def wait_indexed(self, digest: str, timeout: float = 10.0) -> bool:
        """Whether the shared catalog lists ``digest`` within ``timeout`` s (a replica
        records a fill a moment after its client got the last byte)."""

        async def poll() -> bool:
            conn = await asyncpg.connect(self.index_url)
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    found = await conn.fetchval(
                        "SELECT 1 FROM registry_cache.objects WHERE digest = $1", digest
                    )
                    if found:
                        return True
                    await asyncio.sleep(0.05)
                return False
            finally:
                await conn.close()

        return asyncio.run(poll())

    def logs(self) -> str:
        return "\n".join(r.log_text() for r in self.replicas)
