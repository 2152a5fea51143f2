"""The PostgreSQL index of a data set: one database per data set on a server of our own.

The server is the test harness's (``tests/harness/postgres.py``): Debian's
PostgreSQL 15 on 127.0.0.1 and a free port, ``fsync=off``, run as the
``postgres`` user when we are root, stopped by PID.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from tests.harness.postgres import PG_BIN, PostgresServer, postgres_available

from .run import IndexTarget

__all__ = ["PostgresServer", "PostgresTarget", "postgres_available"]


class PostgresTarget(IndexTarget):
    kind = "postgresql"

    def __init__(self, server: PostgresServer, database: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
            raise ValueError(f"not a plain database name: {database!r}")
        self.server = server
        self.database = database
        server.create_database(database)

    def url(self) -> str:
        return self.server.url_for(self.database)

    def config(self) -> dict[str, Any]:
        return {"index": self.url()}

    def settle(self) -> None:
        """As after a bulk load (and as autovacuum would, later): vacuumed and analyzed."""
        subprocess.run(
            [
                str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.server.socket_dir), "-p", str(self.server.port),
                "-U", self.server.user, "-d", self.database, "-c", "VACUUM (ANALYZE)",
            ],
            check=True, capture_output=True, timeout=1800, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    def size_on_disk(self, data_dir: Path) -> int:
        self.server.psql("CHECKPOINT")
        return int(self.server.psql(f"SELECT pg_database_size('{self.database}')").strip())

    def drop(self) -> None:
        self.server.drop_database(self.database)
