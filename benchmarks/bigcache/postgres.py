"""The PostgreSQL index of a data set: one database per data set on a server of our own.

The server is the suite's (``benchmarks/postgres.py``, not the tests' harness: the
suite does not depend on the tests): Debian's PostgreSQL 15 on 127.0.0.1 and a
free port, ``fsync=off``, run as the ``postgres`` user when we are root, stopped
by PID.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..postgres import Postgres, postgres_missing
from .run import IndexTarget

__all__ = ["Postgres", "PostgresTarget", "postgres_missing"]
SETTLE_TIMEOUT = 1800.0  # VACUUM (ANALYZE) of a million-object database


class PostgresTarget(IndexTarget):
    kind = "postgresql"

    def __init__(self, server: Postgres, database: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
            raise ValueError(f"not a plain database name: {database!r}")
        self.server = server
        self.database = database
        server.create_database(database)

    def url(self) -> str:
        return self.server.url(self.database)

    def config(self) -> dict[str, Any]:
        return {"index": self.url()}

    def settle(self) -> None:
        """As after a bulk load (and as autovacuum would, later): vacuumed and analyzed."""
        self.server.psql("VACUUM (ANALYZE)", self.database, timeout=SETTLE_TIMEOUT)

    def size_on_disk(self, data_dir: Path) -> int:
        self.server.psql("CHECKPOINT")
        return int(self.server.psql(f"SELECT pg_database_size('{self.database}')").strip())

    def drop(self) -> None:
        self.server.psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
